//! berth's CSI node side: a client for CSI v1 node plugins over a unix socket
//! ([`client`]), the `CSIPluginInfo` configuration directory as Mesos reads it ([`config`]),
//! the supervisor that starts, restarts and stops managed plugins ([`supervisor`]), and the
//! crash-safe per-volume stage/publish manager with fsync'd intents and persisted consumers
//! ([`manager`]), and the registry that ties them together per agent ([`plugins`]).
//!
//! The library starts no runtime: its async functions run on the caller's tokio runtime.

pub mod client;
pub mod config;
mod error;
pub mod groups;
pub mod manager;
pub mod plugins;
pub mod record;
pub mod secrets;
pub mod supervisor;

pub use client::{
    ClientConfig, CsiClient, NodeCapabilities, NodeService, PluginInfo, RetryPolicy, UsageFigures,
    VolumeCondition, VolumeStats,
};
pub use error::{CsiError, Result};
pub use groups::MountGroups;
pub use plugins::{CsiPlugins, PluginsConfig};
