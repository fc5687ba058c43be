//! The class of an agent error, as an RPC status code: the one thing a service needs to know
//! about an error besides its text. The agent does not depend on any RPC framework; the
//! binary maps [`ErrorCode`] to its framework's codes in one place.

/// What kind of failure an error is, for a caller choosing an RPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The caller's mistake: malformed or unusable input.
    InvalidArgument,
    /// The current state forbids the operation (a volume in use, a pending change, a lock).
    FailedPrecondition,
    /// What the caller wants to create exists already (a prepared container).
    AlreadyExists,
    /// Something the caller named is not configured (an unknown CSI plugin).
    NotFound,
    /// Anything else: I/O, plugins, the kernel.
    Internal,
}
