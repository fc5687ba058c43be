//! Errors of operation validation and application. Messages carry the Mesos texts (schedulers
//! and the conformance vectors match on them).

use berth_resources::{ResourceError, ValidationError};
use thiserror::Error;

/// An operation that the master refuses (stage `validate`).
#[derive(Debug, Clone, PartialEq, Error)]
#[allow(missing_docs)] // each variant's message is its documentation
pub enum OperationError {
    #[error("Unknown offer operation")]
    Unknown,
    /// The operation's body is missing (Mesos's wording differs per operation).
    #[error("{0}")]
    MissingBody(&'static str),
    #[error("Operation {0} is not supported by berth")]
    Unsupported(&'static str),
    #[error("Invalid resources: {0}")]
    InvalidResources(ValidationError),
    #[error("Invalid source: {0}")]
    InvalidSource(ValidationError),
    #[error("Invalid resource in the '{field}' field: {error}")]
    InvalidField {
        field: &'static str,
        error: ResourceError,
    },
    #[error(
        "Invalid resources: Invalid DiskInfo: Invalid persistence ID for persistent volume: {0}"
    )]
    InvalidPersistenceId(berth_resources::IdError),
    #[error("Reservation updates are not yet implemented for the scheduler API.")]
    ReservationUpdateFromFramework,
    #[error("Invalid source: Mixed reservations are not supported")]
    MixedSourceReservations,
    #[error("Invalid resources: Resource cannot be empty")]
    EmptyTarget,
    #[error("Invalid resources: Mixed reservations are not supported")]
    MixedTargetReservations,
    #[error(
        "Source and target resources should refer to identical resource quantities: {from} vs. {target}"
    )]
    SourceTargetMismatch { from: String, target: String },
    #[error("Invalid resources: Some resources have a resource provider and some do not")]
    MixedProviders,
    #[error("Invalid resources: The resources have multiple resource providers: {0}")]
    MultipleProviders(String),
    #[error("Resource {0} is not dynamically reserved")]
    NotDynamicallyReserved(String),
    #[error(
        "{noun} {resource} with reservation for hierarchical role '{role}' cannot be {verb} on an \
         agent without HIERARCHICAL_ROLE capability"
    )]
    NoHierarchicalRole {
        noun: &'static str,
        resource: String,
        role: String,
        verb: &'static str,
    },
    #[error(
        "{noun} {resource} with reservation refinement cannot be {verb} on an agent without \
         RESERVATION_REFINEMENT capability"
    )]
    NoReservationRefinement {
        noun: &'static str,
        resource: String,
        verb: &'static str,
    },
    #[error(
        "A reserve operation was attempted by principal '{0}', but there is a reserved resource in \
         the request with no principal set"
    )]
    ReserveWithoutPrincipal(String),
    #[error(
        "A reserve operation was attempted by authenticated principal '{principal}', which does not \
         match a reserved resource in the request with principal '{found}'"
    )]
    ReservePrincipalMismatch { principal: String, found: String },
    #[error(
        "A reserve operation was attempted on unallocated resource {0}, but frameworks can only \
         perform reservations on allocated resources"
    )]
    ReserveUnallocated(String),
    #[error(
        "A reserve operation was attempted for a resource with role '{role}', but the resource was \
         allocated to role '{allocated}'"
    )]
    ReserveRoleNotAllocation { role: String, allocated: String },
    #[error(
        "A reserve operation was attempted for a resource allocated to role '{allocated}', but the \
         framework only has roles '{roles}'"
    )]
    ReserveAllocationNotFrameworkRole { allocated: String, roles: String },
    #[error(
        "A reserve operation was attempted for a resource with role '{role}', but the framework can \
         only reserve resources with roles '{roles}'"
    )]
    ReserveRoleNotFrameworkRole { role: String, roles: String },
    #[error(
        "A reserve operation was attempted with an allocated resource, but the operator API only \
         allows reservations to be made to unallocated resources"
    )]
    OperatorReserveAllocated,
    #[error(
        "Invalid {what} resources: The resources have multiple allocation roles ('{a}' and '{b}') \
         but only one allocation role is allowed"
    )]
    MultipleAllocationRoles {
        what: &'static str,
        a: String,
        b: String,
    },
    #[error("Invalid {0} resources: The resources are not allocated to a role")]
    NotAllocated(&'static str),
    #[error(
        "A dynamically reserved persistent volume {0} cannot be unreserved directly. Please destroy \
         the persistent volume first then unreserve the resource"
    )]
    UnreservePersistentVolume(String),
    #[error("Not a persistent volume: {0}")]
    NotPersistentVolume(PersistentVolumeError),
    #[error("Persistence ID '{0}' is not unique")]
    DuplicatePersistenceId(String),
    #[error(
        "Create volume operation for '{volume}' has been attempted by framework '{framework}' with \
         no SHARED_RESOURCES capability"
    )]
    SharedWithoutCapability { volume: String, framework: String },
    #[error(
        "Create volume operation attempted by principal '{0}', but there is a volume in the \
         operation with no principal set in 'disk.persistence'"
    )]
    CreateWithoutPrincipal(String),
    #[error(
        "Create volume operation attempted by authenticated principal '{principal}', which does not \
         match a volume in the operation with principal '{found}' set in 'disk.persistence'"
    )]
    CreatePrincipalMismatch { principal: String, found: String },
    #[error("Persistent volumes not found")]
    VolumesNotFound,
    #[error("Persistent volumes in use")]
    VolumesInUse,
    #[error("The size of 'GrowVolume.addition' field must be greater than zero")]
    GrowAdditionNotPositive,
    #[error("Growing a volume from a resource provider is not supported")]
    GrowProvider,
    #[error("Invalid persistent volume in the '{field}' field: {error}")]
    InvalidPersistentVolumeField {
        field: &'static str,
        error: PersistentVolumeError,
    },
    #[error("Growing a shared persistent volume is not supported")]
    GrowShared,
    #[error("Incompatible resources in the 'GrowVolume.volume' and 'GrowVolume.addition' fields")]
    GrowIncompatible,
    #[error("Volume {volume} cannot be {verb} on an agent without RESIZE_VOLUME capability")]
    NoResizeVolume { volume: String, verb: &'static str },
    #[error("Value of 'ShrinkVolume.subtract' must be greater than zero")]
    ShrinkNotPositive,
    #[error(
        "Value of 'ShrinkVolume.subtract' must be smaller than the size of 'ShrinkVolume.volume'"
    )]
    ShrinkTooLarge,
    #[error("Shrinking a volume from a resource provider is not supported")]
    ShrinkProvider,
    #[error("Shrinking a volume on a MOUNT disk is not supported")]
    ShrinkMount,
    #[error("Shrinking a shared persistent volume is not supported")]
    ShrinkShared,
    #[error("Invalid scalar in '{field}': {error}")]
    Scalar {
        field: &'static str,
        error: berth_resources::ScalarError,
    },
    #[error("Not authorized: {0}")]
    Unauthorized(String),
}

/// Why a resource is not a persistent volume (Mesos `validatePersistentVolume`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PersistentVolumeError {
    /// No DiskInfo.
    #[error("Resource {0} does not have DiskInfo")]
    NoDiskInfo(String),
    /// No persistence.
    #[error("'persistence' is not set in DiskInfo")]
    NoPersistence,
    /// No volume.
    #[error("Expecting 'volume' to be set for persistent volume")]
    NoVolume,
    /// RO mode.
    #[error("Read-only persistent volume not supported")]
    ReadOnly,
}

/// An operation that validated but cannot be applied to the resources (stage `apply`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    /// The resources do not hold what the operation consumes.
    #[error("{resources} does not contain {consumed}")]
    NotContained {
        /// The resources at that step, rendered.
        resources: String,
        /// What the step consumes, rendered.
        consumed: String,
    },
    /// DESTROY of a shared volume with more copies in the offer.
    #[error("Persistent volume {0} cannot be removed due to additional shared copies")]
    SharedCopies(String),
    /// GROW/SHRINK of a resource-provider volume.
    #[error("Operation not supported for resource provider")]
    Provider,
    /// An operation kind that does not convert resources.
    #[error("Operation not supported")]
    Unsupported,
    /// Totals changed: a bug, reported rather than panicking.
    #[error("Resource totals of {0} changed by the operation")]
    NotConserved(String),
}
