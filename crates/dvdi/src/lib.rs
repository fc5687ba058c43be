//! berth's Docker volume driver bridge: the DVDI contract without dvdcli.
//!
//! Tasks ask for external volumes (REX-Ray or any other Docker volume plugin) through the
//! `DVDI_VOLUME_*` environment variables, Mesos `DOCKER_VOLUME` volumes or Marathon external
//! volumes; berth speaks the Docker volume plugin protocol itself instead of spawning dvdcli
//! through a shell.
//!
//! - [`discovery`]: finding a plugin by name exactly as Docker does (`.sock`, `.spec`,
//!   `.json`; configurable roots; v2 names with `/` and `:`).
//! - [`client`]: the protocol client of one plugin on hyper 1 (unix socket or TCP; cached
//!   activation; connection retries with backoff; per-call timeouts; kept-alive connections),
//!   with tolerant decoding of what real plugins answer ([`protocol`]).
//! - [`driver`]: the [`VolumeDriver`] / [`Drivers`] seam and the discovering
//!   [`PluginRegistry`]; [`fake`] has an in-memory driver for callers' unit tests.
//! - [`spec`]: the typed [`DockerVolume`] from the DVDI environment, Mesos and Marathon.
//! - [`manager`]: consumer-balanced, crash-safe Mount/Unmount with an fsync'd consumer record
//!   per (driver, volume) ([`record`]), explicit create, a per-agent compatibility mode, and
//!   recovery against the plugin and mountinfo.
//! - [`cli`]: a dvdcli-compatible command line as a library function.
//!
//! The library starts no runtime; its async functions run on the caller's tokio runtime.
//! Nothing here runs a shell or any executable.
//!
//! ```no_run
//! use berth_dvdi::{ClientConfig, ConsumerId, Discovery, ManagerConfig, PluginRegistry, VolumeManager};
//!
//! # async fn demo() -> berth_dvdi::Result<()> {
//! let registry = PluginRegistry::new(Discovery::default(), ClientConfig::default());
//! let manager = VolumeManager::new(registry, ManagerConfig::new("/var/lib/berth/dvdi"))?;
//! let env = [("DVDI_VOLUME_NAME", "pgdata"), ("DVDI_VOLUME_DRIVER", "rexray"),
//!            ("DVDI_VOLUME_OPTS", "size=5,volumetype=gp2")];
//! for volume in berth_dvdi::spec::from_env(env)?.volumes {
//!     let host_path = manager.mount(&volume, &ConsumerId::new("container-1")?).await?;
//!     println!("{}", host_path.display());
//!     manager.unmount(&volume.driver, &volume.name, &ConsumerId::new("container-1")?).await?;
//! }
//! # Ok(())
//! # }
//! ```

#![cfg(target_os = "linux")]

pub mod cli;
pub mod client;
pub mod discovery;
pub mod driver;
mod error;
pub mod fake;
pub mod manager;
pub mod names;
pub mod protocol;
pub mod record;
pub mod spec;

pub use client::{ClientConfig, PluginClient, RetryPolicy, Timeouts};
pub use discovery::{Addr, Discovery, PluginAddr};
pub use driver::{Drivers, PluginRegistry, VolumeDriver};
pub use error::{DvdiError, Result};
pub use manager::{ManagerConfig, MountMode, RecoveryReport, VolumeManager};
pub use names::{ConsumerId, DriverName, VolumeName};
pub use protocol::{Capabilities, Endpoint, Scope, VolumeInfo};
pub use spec::{DockerVolume, Mode};
