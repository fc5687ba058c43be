//! What berth's two gRPC servers (`berth-validator serve`, `berth-isolator serve`) share at
//! their edge, so that each trust rule is written once:
//!
//! - [`unix`]: a unix socket bound safely — created 0600 (0660 with a group) whatever the
//!   umask, its directory 0750 when missing; a stale socket file replaced, a live one or
//!   anything that is not a socket refused; the file removed at the end only if it is still
//!   the one bound.
//! - [`peer`]: who may call, from the connection's `SO_PEERCRED` (uid 0, listed uids, members
//!   of the socket's group), checked on every call as a tonic interceptor.
//! - [`shutdown`]: serving until a signal, then letting calls in flight finish for a bounded
//!   grace period.

pub mod peer;
pub mod shutdown;
pub mod unix;

pub use peer::PeerPolicy;
pub use unix::{BoundSocket, SocketError};
