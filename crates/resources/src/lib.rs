//! The Mesos resource model for Rust schedulers, masters and agents.
//!
//! `berth-resources` reads and writes exactly what Mesos reads and writes — its JSON (stout
//! style, both reservation formats) and its protobuf wire format — and does resource arithmetic
//! with Mesos's semantics: fixed-point scalars, coalescing ranges, sets, reservation stacks
//! (static, dynamic, refined), disks (ROOT/PATH/MOUNT/BLOCK/RAW), persistent and shared
//! volumes. It is pure and synchronous: no I/O, no runtime.
//!
//! ```
//! use berth_resources::{Resources, Scalar};
//!
//! let offer = Resources::parse("cpus:4;mem:4096;disk(db):10000", "*").unwrap();
//! let task = Resources::parse("cpus:1;mem:512", "*").unwrap();
//! assert!(offer.contains(&task));
//! let left = &offer - &task;
//! assert_eq!(left.cpus(), Some(Scalar::from_units(3)));
//! ```
//!
//! Module map: [`scalar`] (fixed point), [`role`], [`persistence`] (ids, Marathon form),
//! [`value`] (ranges, sets), [`resource`] (the model), [`resources`] (collections and
//! arithmetic), [`validate`] (Mesos's rules, in Mesos's order), [`format`](mod@format) (reservation formats),
//! [`json`] (stout-compatible JSON for any message of the schema), [`text`] (agent
//! `--resources` syntax), [`convert`] (model ↔ wire form, no validation), [`codec`] (the
//! validating JSON and protobuf entry points).

pub mod codec;
pub mod convert;
pub mod error;
pub mod format;
mod hash;
mod intern;
pub mod json;
pub mod persistence;
pub mod resource;
pub mod resources;
pub mod role;
pub mod scalar;
pub mod text;
pub mod validate;
pub mod value;

pub use berth_proto::mesos::v1 as proto;
pub use error::{
    IdError, InputError, JsonError, ResourceError, RoleError, ScalarError, ValidationError,
};
pub use persistence::{MarathonVolumeId, PersistenceId};
pub use resource::{
    AllocationInfo, DiskInfo, DiskSource, DiskSourceType, Label, Labels, Persistence,
    ReservationInfo, ReservationStack, ReservationType, Resource, SourceRoot, Volume, VolumeMode,
};
pub use resources::Resources;
pub use role::Role;
pub use scalar::Scalar;
pub use value::{Range, Ranges, Set, Value, ValueType};
