//! Error types of `berth-resources`.
//!
//! Messages reproduce the Mesos texts where Mesos has one (schedulers and the conformance vectors
//! match on them); variants carry the offending values.

use thiserror::Error;

/// A scalar that cannot be represented in fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum ScalarError {
    /// NaN or an infinity.
    #[error("Invalid scalar resource: value {0} is not finite")]
    NotFinite(f64),
    /// Too large to be exact in milli-units.
    #[error("Invalid scalar resource: value {0} is out of range")]
    OutOfRange(f64),
}

/// A role name that Mesos's `roles::validate` refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoleError {
    /// The empty string.
    #[error("Role names cannot be the empty string")]
    Empty,
    /// `/a`.
    #[error("Role '{0}' cannot start with a slash")]
    LeadingSlash(String),
    /// `a/`.
    #[error("Role '{0}' cannot end with a slash")]
    TrailingSlash(String),
    /// `a//b`.
    #[error("Role '{0}' cannot contain two adjacent slashes")]
    AdjacentSlashes(String),
    /// A `.`, `..` or `*` component.
    #[error("Role '{role}' cannot include '{component}' as a component")]
    ReservedComponent {
        /// The role.
        role: String,
        /// The offending component.
        component: String,
    },
    /// A component starting with `-` (the component is named, as in Mesos).
    #[error("Role component '{0}' is invalid because it starts with a dash")]
    LeadingDash(String),
    /// Whitespace or DEL in a component.
    #[error("Role component '{0}' is invalid because it contains backspace or whitespace")]
    Whitespace(String),
    /// `*` where a real role is required.
    #[error("Role \"*\" is not a reservation role")]
    Star,
}

/// A persistence id (or any id that becomes a path component) that Mesos's `validateID` refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The empty string.
    #[error("ID must not be empty")]
    Empty,
    /// Longer than `NAME_MAX` (255) bytes.
    #[error("ID must not be greater than 255 characters")]
    TooLong,
    /// Exactly `.` or `..`.
    #[error("'{0}' is disallowed")]
    Dot(String),
    /// A control character, `/` or `\`.
    #[error("'{0}' contains invalid characters")]
    InvalidCharacters(String),
    /// A Marathon volume id that is not `<app>#<volume>#<uuid>`.
    #[error("'{0}' is not a Marathon persistence id of the form <app>#<volume>#<uuid>")]
    NotMarathon(String),
}

/// A single resource that fails validation (Mesos `Resources::validate(Resource)` plus the
/// master's per-resource checks).
#[derive(Debug, Clone, PartialEq, Error)]
#[allow(missing_docs)] // each variant's message is its documentation
pub enum ResourceError {
    #[error("Empty resource name")]
    EmptyName,
    #[error("Unsupported resource type")]
    UnsupportedType,
    #[error("Invalid resource type")]
    InvalidType,
    #[error("Invalid scalar resource")]
    InvalidScalar,
    #[error("Invalid scalar resource: value <= 0")]
    ScalarNotPositive,
    #[error(transparent)]
    Scalar(#[from] ScalarError),
    #[error("Invalid ranges resource")]
    InvalidRanges,
    #[error("Invalid ranges resource: begin > end")]
    RangeBeginAfterEnd,
    #[error("Invalid ranges resource: overlapping ranges")]
    OverlappingRanges,
    #[error("Invalid set resource")]
    InvalidSet,
    #[error("Invalid set resource: duplicated elements")]
    DuplicateSetItems,
    #[error("DiskInfo should not be set for {0} resource")]
    DiskInfoOnNonDisk(String),
    #[error("{field} should not be set for {kind} disk source")]
    SourceFieldNotAllowed {
        field: &'static str,
        kind: &'static str,
    },
    #[error("Unsupported 'DiskInfo.Source.Type' in '{0}'")]
    UnsupportedSourceType(String),
    #[error("Invalid role: {0}")]
    Role(RoleError),
    #[error("'Resource.ReservationInfo.{0}' must not be set for the 'Resource.reservation' field")]
    LegacyReservationField(&'static str),
    #[error("Invalid reservation: role \"*\" cannot be dynamically reserved")]
    StarDynamicallyReserved,
    #[error("Invalid reservation: 'Resource.ReservationInfo.{0}' field must be set.")]
    ReservationFieldMissing(&'static str),
    #[error("Invalid reservation: {0}")]
    ReservationRole(RoleError),
    #[error("Invalid reservation: role \"*\" cannot be reserved")]
    StarReserved,
    #[error(
        "Invalid reservation: 'Resource.ReservationInfo.Type' UNKNOWN is not supported \
         (berth refuses it anywhere in the stack)"
    )]
    UnknownReservationType,
    #[error("Invalid refined reservation: A refined reservation cannot be STATIC")]
    RefinedStatic,
    #[error("Invalid refined reservation: role '{child}' is not a refinement of '{parent}'")]
    NotARefinement { child: String, parent: String },
    #[error(
        "Invalid resource format: 'Resource.role' field with '{role}' does not match the role \
         '{stack}' in 'Resource.reservations'"
    )]
    FormatRoleMismatch { role: String, stack: String },
    #[error(
        "Invalid resource format: 'Resource.reservation' must not be set if the single \
         reservation in 'Resource.reservations' is STATIC"
    )]
    FormatStaticWithReservation,
    #[error(
        "Invalid resource format: 'Resource.role' and 'Resource.reservation' must either be both \
         set or both not set if the single reservation in 'Resource.reservations' is DYNAMIC"
    )]
    FormatDynamicPartial,
    #[error(
        "Invalid resource format: 'Resource.reservation.principal' field with '{legacy}' does not \
         match the principal '{stack}' in 'Resource.reservations'"
    )]
    FormatPrincipalMismatch { legacy: String, stack: String },
    #[error(
        "Invalid resource format: 'Resource.reservation.labels' field with '{legacy}' does not \
         match the labels '{stack}' in 'Resource.reservations'"
    )]
    FormatLabelsMismatch { legacy: String, stack: String },
    #[error("Invalid resource format: Unsupported 'Resource.ReservationInfo.Type'")]
    FormatUnknownReservationType,
    #[error(
        "Invalid resource format: '{0}' must not be set if there is more than one reservation \
         in 'Resource.reservations'"
    )]
    FormatRefinedWithLegacy(&'static str),
    #[error("Resource {0} cannot be shared")]
    SharedNonDisk(String),
    #[error("Only persistent volumes can be shared")]
    SharedNonPersistent,
    #[error("'Volume.mode' has no valid value")]
    InvalidVolumeMode,
    #[error("Invalid persistence ID: {0}")]
    PersistenceId(IdError),
    // ---- master-level checks (`resource::validate` in the master) ----
    #[error("The 'gpus' resource must be an unsigned integer")]
    GpusNotInteger,
    #[error("Persistent volumes cannot be created from revocable resources")]
    PersistentRevocable,
    #[error("Persistent volumes cannot be created from unreserved resources")]
    PersistentUnreserved,
    #[error("Expecting 'volume' to be set for persistent volume")]
    PersistentWithoutVolume,
    #[error("Expecting 'host_path' to be unset for persistent volume")]
    PersistentWithHostPath,
    #[error("Invalid persistence ID for persistent volume: {0}")]
    PersistentInvalidId(IdError),
    #[error("Non-persistent volume not supported")]
    NonPersistentVolume,
    #[error("DiskInfo is set but empty")]
    EmptyDiskInfo,
    #[error("Dynamically reserved resource {0} cannot be created from revocable resources")]
    DynamicRevocable(String),
}

/// A list of resources that fails validation; names the element.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ValidationError {
    /// Common validation of one element failed (Mesos `Resources::validate(list)`).
    #[error("Resource '{resource}' is invalid: {error}")]
    Resource {
        /// Position in the list.
        index: usize,
        /// The element, rendered.
        resource: String,
        /// What is wrong with it.
        error: ResourceError,
    },
    /// The master's gpus check.
    #[error("Invalid 'gpus' resource: {0}")]
    Gpus(ResourceError),
    /// The master's DiskInfo checks.
    #[error("Invalid DiskInfo: {0}")]
    Disk(ResourceError),
    /// The master's ReservationInfo checks.
    #[error("Invalid ReservationInfo: {0}")]
    Reservation(ResourceError),
}

impl ValidationError {
    /// The underlying per-resource error.
    #[must_use]
    pub fn resource_error(&self) -> &ResourceError {
        match self {
            ValidationError::Resource { error, .. } => error,
            ValidationError::Gpus(e)
            | ValidationError::Disk(e)
            | ValidationError::Reservation(e) => e,
        }
    }
}

/// Mesos JSON that cannot be read (stout `protobuf::parse` failures and berth's stricter checks).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JsonError {
    /// Not JSON at all.
    #[error("Invalid JSON: {0}")]
    Syntax(String),
    /// A message field that is not a JSON object.
    #[error("Expecting a JSON object for '{0}'")]
    NotObject(String),
    /// A repeated field that is not a JSON array.
    #[error("Expecting a JSON array for field '{0}'")]
    NotArray(String),
    /// A field of the wrong JSON type (stout's text, with the path).
    #[error(
        "Not expecting a JSON {found} for field '{}' (at {field})",
        last_segment(field)
    )]
    WrongType {
        /// Dotted path of the field.
        field: String,
        /// The JSON type found.
        found: &'static str,
    },
    /// A number that does not fit the field.
    #[error("Invalid number '{value}' for field '{field}'")]
    BadNumber {
        /// Dotted path of the field.
        field: String,
        /// The value found.
        value: String,
    },
    /// Base64 of a bytes field that does not decode.
    #[error("Invalid base64 for field '{0}'")]
    BadBytes(String),
    /// An unknown name in a required enum field.
    #[error("Failed to find enum for '{name}' in field '{field}'")]
    UnknownEnum {
        /// Dotted path of the field.
        field: String,
        /// The name given.
        name: String,
    },
    /// Required fields (proto2) missing after parsing.
    #[error("Missing required fields: {}", .0.join(", "))]
    MissingRequired(Vec<String>),
    /// The bytes do not decode as the protobuf message.
    #[error("Failed to decode protobuf: {0}")]
    Decode(String),
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Any failure to turn input into berth resources: the JSON/protobuf cannot be read (stage
/// `parse`), or it reads but is not a valid resource (stage `validate`).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InputError {
    /// Could not be parsed.
    #[error(transparent)]
    Json(#[from] JsonError),
    /// A single resource is invalid.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// A list is invalid.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The Mesos text format (`cpus:1;mem(role):128`) could not be parsed.
    #[error("Failed to parse resources '{input}': {reason}")]
    Text {
        /// The input.
        input: String,
        /// Why.
        reason: String,
    },
    /// A resource with refined reservations cannot be written in the legacy format.
    #[error("Cannot downgrade resources containing refined reservations")]
    Downgrade,
}

impl InputError {
    /// `"parse"` or `"validate"`: the stage that failed, as the conformance vectors name it.
    #[must_use]
    pub fn stage(&self) -> &'static str {
        match self {
            InputError::Json(_) | InputError::Text { .. } => "parse",
            InputError::Resource(_) | InputError::Validation(_) | InputError::Downgrade => {
                "validate"
            }
        }
    }
}
