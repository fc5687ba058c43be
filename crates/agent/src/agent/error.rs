//! What can go wrong opening or driving an agent's work directory, with its [`ErrorCode`].

use std::path::PathBuf;
use std::time::Duration;

use crate::container::ContainerError;
use crate::error::ErrorCode;
use crate::resources::ResourcesError;

/// An agent's error: its own steps (the work dir, its lock, the plugins' start) or the error
/// of the isolator or resources it drove. A step's text names the step; its cause is the
/// error's [`source`](std::error::Error::source) (print the chain, as `{:#}` of `anyhow` does).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A file-system step on the work directory failed.
    #[error("{step} {}", .path.display())]
    WorkDir {
        /// The step (`create work dir`, `canonicalize work dir`, `open`).
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the work dir's lock.
    #[error(
        "work dir {} is in use by another berth-isolator (lock {}: {errno}; waited {waited:?})",
        .work_dir.display(),
        .lock.display()
    )]
    Locked {
        /// The work dir.
        work_dir: PathBuf,
        /// Its lock file.
        lock: PathBuf,
        /// Why the lock was not taken.
        errno: nix::errno::Errno,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The CSI plugins of the configuration directory cannot start.
    #[error("CSI plugin config dir {}", .dir.display())]
    CsiConfig {
        /// The directory.
        dir: PathBuf,
        /// The CSI error.
        source: Box<berth_csi::CsiError>,
    },
    /// The Docker volume-driver bridge failed.
    #[error(transparent)]
    Dvdi(Box<berth_dvdi::DvdiError>),
    /// A checkpointed resource list is not a valid set of resources.
    #[error("checkpointed resources")]
    CheckpointedResources {
        /// The resources error.
        source: berth_resources::InputError,
    },
    /// The agent's resources refused or failed the change.
    #[error(transparent)]
    Resources(#[from] ResourcesError),
    /// The container isolator refused or failed the operation.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// `expand-volume` of a CSI volume failed or was refused.
    #[error("expand CSI volume {plugin}/{volume_id}")]
    Expand {
        /// The plugin type.
        plugin: String,
        /// The volume.
        volume_id: String,
        /// Why.
        source: Box<berth_csi::CsiError>,
    },
    /// `--enforce-disk-limits`: a container would use a volume that holds more than its size
    /// (measured with `du`; volumes with a project quota cannot get there).
    #[error(
        "persistent volume {persistence_id} at {} holds {used_bytes} bytes, over its {limit_bytes}: \
         no new container may use it until it is back under its size (--enforce-disk-limits)",
        .path.display()
    )]
    OverDiskLimit {
        /// The persistence id.
        persistence_id: String,
        /// Its directory.
        path: PathBuf,
        /// What it holds.
        used_bytes: u64,
        /// Its size.
        limit_bytes: u64,
    },
}

impl From<berth_dvdi::DvdiError> for AgentError {
    fn from(e: berth_dvdi::DvdiError) -> Self {
        Self::Dvdi(Box::new(e))
    }
}

impl AgentError {
    /// The error's class: the isolator's and the resources' own,
    /// [`ErrorCode::InvalidArgument`] for an invalid checkpointed list, and
    /// [`ErrorCode::Internal`] for the agent's steps.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Container(e) => e.code(),
            Self::Resources(e) => e.code(),
            Self::OverDiskLimit { .. } => ErrorCode::FailedPrecondition,
            Self::Expand { source, .. } => match **source {
                berth_csi::CsiError::UnknownPlugin { .. } => ErrorCode::NotFound,
                berth_csi::CsiError::NotCapable { .. }
                | berth_csi::CsiError::NotPublished { .. } => ErrorCode::FailedPrecondition,
                berth_csi::CsiError::Spec { .. } | berth_csi::CsiError::InvalidId { .. } => {
                    ErrorCode::InvalidArgument
                }
                _ => ErrorCode::Internal,
            },
            // The caller's list: its mistake.
            Self::CheckpointedResources { .. } => ErrorCode::InvalidArgument,
            Self::WorkDir { .. } | Self::Locked { .. } | Self::CsiConfig { .. } | Self::Dvdi(_) => {
                ErrorCode::Internal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn an_invalid_checkpointed_list_is_the_callers_mistake() {
        let bad = berth_resources::proto::Resource::default();
        let source = berth_resources::Resources::from_proto_list(&[bad]).unwrap_err();
        let e = AgentError::CheckpointedResources { source };
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        let io = AgentError::WorkDir {
            step: "open",
            path: PathBuf::from("/w"),
            source: std::io::Error::other("disk"),
        };
        assert_eq!(io.code(), ErrorCode::Internal);
    }
}
