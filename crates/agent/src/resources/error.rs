//! [`ResourcesError`]: every way a change of the checkpointed resources or of the volume
//! directories can fail. Each variant names the path, the persistence id or the resource, and
//! the failing step.

use std::path::PathBuf;

use thiserror::Error;

use crate::error::ErrorCode;

/// The file-system step that failed (in [`ResourcesError::Io`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// Creating the metadata directory or a volume directory (or one of its parents).
    CreateDir,
    /// Opening a directory (without following symlinks).
    OpenDir,
    /// `lstat` of a path.
    Stat,
    /// Writing a checkpoint (temp file, fsync, rename, fsync of the directory).
    WriteCheckpoint,
    /// Reading a checkpoint.
    ReadCheckpoint,
    /// Committing the target checkpoint (rename over the committed one, fsync of the directory).
    Commit,
    /// Taking the work-dir lock.
    Lock,
    /// `fsync` of a directory after one of its entries changed.
    SyncDir,
    /// Moving a destroyed volume out of `volumes/roles` (to the trash or the retained area).
    Detach,
    /// Removing an entry of a destroyed volume.
    Remove,
    /// Resolving the work dir or a disk root.
    Canonicalize,
    /// Writing or updating a leftover record (`meta/resources/leftovers`).
    WriteRecord,
    /// Giving a shared volume's directory its gid and mode (`fchown`, `fchmod`).
    Chown,
}

/// Why a change of the agent's resources or volume directories failed.
#[derive(Debug, Error)]
pub enum ResourcesError {
    /// A system call failed.
    #[error("{step:?} failed at {path}: {source}")]
    Io {
        /// The step.
        step: Step,
        /// The path it worked on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the resources lock of this work dir.
    #[error("the agent resources at {path} are locked by another process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A checkpoint file does not hold a valid Mesos resource array. It is left untouched.
    #[error("checkpoint {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An interrupted change is pending; call `recover` first.
    #[error("an interrupted change of the agent resources is pending ({target}): recover first")]
    RecoveryRequired {
        /// The pending target checkpoint.
        target: PathBuf,
    },
    /// The `--resources` text or JSON does not parse.
    #[error("invalid --resources '{input}': {reason}")]
    InvalidConfigured {
        /// The flag value.
        input: String,
        /// Why.
        reason: String,
    },
    /// A duration flag (`--retain-destroyed-data-for`) does not parse.
    #[error("invalid duration '{input}': {reason}")]
    InvalidDuration {
        /// The text.
        input: String,
        /// Why.
        reason: &'static str,
    },
    /// Resources JSON (a checkpoint set given by the caller) does not parse.
    #[error("invalid resources JSON: {reason}")]
    InvalidResources {
        /// Why.
        reason: String,
    },
    /// A resource in a checkpointed set that Mesos would not checkpoint (not dynamically
    /// reserved and not a persistent volume, or owned by a resource provider).
    #[error(
        "resource {resource} is not checkpointed by an agent (neither dynamically reserved nor a persistent volume, or from a resource provider)"
    )]
    NotCheckpointable {
        /// The resource, rendered.
        resource: String,
    },
    /// A checkpointed resource is not part of the resources configured with `--resources`
    /// (Mesos `applyCheckpointedResources`).
    #[error(
        "checkpointed resource {resource} is not compatible with the agent resources {configured}"
    )]
    Incompatible {
        /// The checkpointed resource, rendered.
        resource: String,
        /// The configured resources (with what is checkpointed before it applied), rendered.
        configured: String,
    },
    /// The operation JSON does not parse or fails the master's first step.
    #[error("invalid operation: {reason}")]
    InvalidOperation {
        /// Why.
        reason: String,
    },
    /// The operation kind does not change agent resources (LAUNCH).
    #[error("operation {operation} does not change the agent's resources")]
    UnsupportedOperation {
        /// The operation kind.
        operation: &'static str,
    },
    /// The operation fails the master's validation against the checkpointed resources.
    #[error("{operation} refused: {source}")]
    OperationRefused {
        /// The operation kind.
        operation: &'static str,
        /// Mesos's reason.
        #[source]
        source: berth_offers::OperationError,
    },
    /// The operation does not apply to the agent's total resources.
    #[error("{operation} does not apply to the agent's resources: {source}")]
    OperationNotApplicable {
        /// The operation kind.
        operation: &'static str,
        /// Mesos's reason.
        #[source]
        source: berth_offers::ApplyError,
    },
    /// Not a persistent volume (no `disk.persistence`).
    #[error("{resource} is not a persistent volume")]
    NotPersistentVolume {
        /// The resource, rendered.
        resource: String,
    },
    /// A persistent volume whose disk has no host directory here (BLOCK or RAW source, or a
    /// resource provider's volume, which the CSI path handles).
    #[error("persistent volume {id} has no agent directory: {reason}")]
    UnsupportedVolume {
        /// The persistence id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// A PATH or MOUNT disk root that is missing or not a plain path.
    #[error("persistent volume {id}: disk root '{root}' refused: {reason}")]
    InvalidRoot {
        /// The persistence id.
        id: String,
        /// The root as given.
        root: String,
        /// Why.
        reason: &'static str,
    },
    /// A role or persistence id that cannot be one path component.
    #[error("persistent volume {id}: '{component}' cannot be a path component: {reason}")]
    InvalidComponent {
        /// The persistence id.
        id: String,
        /// The offending component.
        component: String,
        /// Why.
        reason: String,
    },
    /// Two volumes of one set map to the same directory.
    #[error("persistent volumes {first} and {second} both map to {path}")]
    DuplicateVolume {
        /// The directory.
        path: PathBuf,
        /// The first volume's id.
        first: String,
        /// The second volume's id.
        second: String,
    },
    /// A component of a volume path under the disk root is a symlink or not a directory.
    #[error("{path} is a symlink or not a directory: refusing to follow it")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A volume to destroy is used by containers.
    #[error("persistent volume {id} at {path} is in use by {users:?}")]
    VolumeInUse {
        /// The persistence id.
        id: String,
        /// Its directory.
        path: PathBuf,
        /// The containers using it.
        users: Vec<String>,
    },
    /// Something is mounted inside a volume to destroy: its data is never removed across it.
    #[error(
        "persistent volume {id} at {path} has {mount_point} mounted inside: refusing to remove it"
    )]
    MountedInside {
        /// The persistence id.
        id: String,
        /// Its directory.
        path: PathBuf,
        /// The mount point found at or below it.
        mount_point: PathBuf,
    },
    /// The mount table could not be read, or the checked removal failed.
    #[error("persistent volume {id} at {path}: {source}")]
    Mount {
        /// The persistence id (empty when reading the table for several volumes).
        id: String,
        /// The directory.
        path: PathBuf,
        /// The mount engine's error.
        #[source]
        source: berth_mount::MountError,
    },
    /// Every gid of `--volume-gid-range` is given to a live shared volume.
    #[error("no free volume gid in {begin}-{end} for the shared volume at {}", .path.display())]
    GidsExhausted {
        /// The volume that needs one.
        path: PathBuf,
        /// The range's first gid.
        begin: u32,
        /// The range's last gid.
        end: u32,
    },
    /// A volume's project quota could not be given, changed, checked or released.
    #[error("persistent volume at {path}: {source}")]
    Quota {
        /// The volume directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: super::quota::QuotaFailure,
    },
    /// A SHRINK_VOLUME below what the volume already holds (measured with `du`, the volume
    /// having no project quota).
    #[error(
        "persistent volume at {path}: cannot shrink to {new_bytes} bytes: it holds {used_bytes} bytes"
    )]
    ShrinkBelowUsage {
        /// The volume directory.
        path: PathBuf,
        /// The bytes it holds.
        used_bytes: u64,
        /// The size asked for.
        new_bytes: u64,
    },
}

impl ResourcesError {
    /// The error's class: the caller's mistakes are [`ErrorCode::InvalidArgument`], states
    /// that forbid the change [`ErrorCode::FailedPrecondition`], the rest
    /// [`ErrorCode::Internal`].
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidConfigured { .. }
            | Self::InvalidDuration { .. }
            | Self::InvalidResources { .. }
            | Self::NotCheckpointable { .. }
            | Self::Incompatible { .. }
            | Self::InvalidOperation { .. }
            | Self::UnsupportedOperation { .. }
            | Self::OperationRefused { .. }
            | Self::OperationNotApplicable { .. }
            | Self::NotPersistentVolume { .. }
            | Self::UnsupportedVolume { .. }
            | Self::InvalidRoot { .. }
            | Self::InvalidComponent { .. }
            | Self::DuplicateVolume { .. } => ErrorCode::InvalidArgument,
            Self::VolumeInUse { .. }
            | Self::ShrinkBelowUsage { .. }
            | Self::Quota {
                source:
                    super::quota::QuotaFailure::ShrinkBelowUsage { .. }
                    | super::quota::QuotaFailure::Unsupported { .. }
                    | super::quota::QuotaFailure::Exhausted { .. },
                ..
            }
            | Self::MountedInside { .. }
            | Self::GidsExhausted { .. }
            | Self::RecoveryRequired { .. }
            | Self::Locked { .. } => ErrorCode::FailedPrecondition,
            Self::Io { .. }
            | Self::Corrupt { .. }
            | Self::NotADirectory { .. }
            | Self::Quota { .. }
            | Self::Mount { .. } => ErrorCode::Internal,
        }
    }
}

/// A `Result` with [`ResourcesError`].
pub type Result<T> = std::result::Result<T, ResourcesError>;

pub(crate) fn io(step: Step, path: impl Into<PathBuf>, source: std::io::Error) -> ResourcesError {
    ResourcesError::Io {
        step,
        path: path.into(),
        source,
    }
}

pub(crate) fn errno(step: Step, path: impl Into<PathBuf>, e: nix::errno::Errno) -> ResourcesError {
    io(step, path, std::io::Error::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_kind_of_failure() {
        let invalid = ResourcesError::InvalidOperation { reason: "x".into() };
        assert_eq!(invalid.code(), ErrorCode::InvalidArgument);
        let busy = ResourcesError::VolumeInUse {
            id: "pv".into(),
            path: PathBuf::from("/v"),
            users: vec!["c".into()],
        };
        assert_eq!(busy.code(), ErrorCode::FailedPrecondition);
        let io = io(Step::WriteCheckpoint, "/x", std::io::Error::other("disk"));
        assert_eq!(io.code(), ErrorCode::Internal);
    }
}
