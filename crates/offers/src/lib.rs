//! Mesos offer operations for schedulers and masters: typed RESERVE, UNRESERVE, CREATE,
//! DESTROY, GROW_VOLUME, SHRINK_VOLUME and LAUNCH; [`validate()`] them exactly as the Mesos master
//! does and [`apply()`] them to resources; authorize them with Mesos ACL files.
//!
//! Pure and synchronous, like `berth-resources`.
//!
//! ```
//! use berth_offers::{Context, pipeline};
//! use serde_json::json;
//!
//! let offer = json!([{"name": "disk", "type": "SCALAR", "scalar": {"value": 2048},
//!                     "role": "db", "reservation": {"principal": "ops"}}]);
//! let create = json!({"type": "CREATE", "create": {"volumes": [{
//!     "name": "disk", "type": "SCALAR", "scalar": {"value": 2048},
//!     "role": "db", "reservation": {"principal": "ops"},
//!     "disk": {"persistence": {"id": "v1"}, "volume": {"container_path": "data", "mode": "RW"}}}]}});
//! let after = pipeline::evaluate(&offer, &create, &serde_json::Value::Null, None).unwrap();
//! assert_eq!(after.persistent_volumes().len(), 1);
//! ```

pub mod acl;
pub mod apply;
pub mod batch;
pub mod context;
pub mod error;
pub mod operation;
pub mod pipeline;
pub mod plan;
pub mod validate;

pub use acl::{Acls, Action, Authorizer};
pub use apply::apply;
pub use context::{AgentCapabilities, Api, Context, Framework, FrameworkCapability};
pub use error::{ApplyError, OperationError, PersistentVolumeError};
pub use operation::{Launch, Operation};
pub use pipeline::StageError;
pub use validate::validate;
