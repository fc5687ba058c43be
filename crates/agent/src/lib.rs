//! berth's isolator core: what runs on every agent.
//!
//! - [`agent`]: an agent's work directory opened for use (lock, CSI and Docker wiring,
//!   start-up recovery, retry loops); binaries compose it.
//! - [`resources`]: the agent's checkpointed resources (Mesos JSON, fsync'd), replaced whole by
//!   the master's set or changed by one accepted operation, and the persistent volume
//!   directories kept in step with them (`<root>/volumes/roles/<role>/<persistence id>`).
//! - [`container`]: `prepare` / `cleanup` / `recover` / `status` of a container's volumes —
//!   persistent volumes, `CSI_VOLUME`, `DOCKER_VOLUME`, `SANDBOX_PATH`, `HOST_PATH` and the
//!   `DVDI_VOLUME_*` environment — with one fsync'd record per transition.

pub mod agent;
pub mod container;
pub mod error;
pub mod resources;

pub use error::ErrorCode;
