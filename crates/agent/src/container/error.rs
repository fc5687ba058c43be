//! What went wrong preparing, cleaning up or recovering a container, and its [`ErrorCode`].

use std::path::{Path, PathBuf};

use crate::error::ErrorCode;

/// What went wrong preparing, cleaning up or recovering a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The container config is malformed.
    #[error("container config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A volume of the container cannot be used as asked.
    #[error("container {container}: {volume}: {reason}")]
    Volume {
        /// The container id.
        container: String,
        /// The volume, as named in errors (`persistent volume <id>`, `CSI volume <plugin>/<id>` ...).
        volume: String,
        /// What is wrong.
        reason: String,
    },
    /// A mount step failed.
    #[error("container {container}: {volume}: {source}")]
    Mount {
        /// The container id.
        container: String,
        /// The volume.
        volume: String,
        /// The mount engine's error.
        source: Box<berth_mount::MountError>,
    },
    /// A Docker volume-driver step failed.
    #[error("container {container}: {volume}: {source}")]
    Dvdi {
        /// The container id.
        container: String,
        /// The volume.
        volume: String,
        /// The bridge's error.
        source: Box<berth_dvdi::DvdiError>,
    },
    /// A CSI step failed.
    #[error("container {container}: {volume}: {source}")]
    Csi {
        /// The container id.
        container: String,
        /// The volume.
        volume: String,
        /// The CSI error.
        source: Box<berth_csi::CsiError>,
    },
    /// A file-system step on berth's own records failed.
    #[error("container {container}: {step} {path}: {source}")]
    Io {
        /// The container id.
        container: String,
        /// The step.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record cannot be read; the container is quarantined.
    #[error("container {container}: record {path}: {reason}")]
    Record {
        /// The container id (its directory name when the record is unreadable).
        container: String,
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The container's record was corrupt and is quarantined: what it holds is kept until
    /// an operator releases it (`cleanup --force`).
    #[error(
        "container {container}: quarantined (its record {} was corrupt; its mounts and plugin consumers are kept): {what}; release it with `berth-isolator cleanup --container-id {container} --force`",
        .path.display()
    )]
    Quarantined {
        /// The container id.
        container: String,
        /// The quarantined record.
        path: PathBuf,
        /// What was refused and why.
        what: &'static str,
    },
    /// `prepare` for a container that has a record already.
    #[error("container {container}: already prepared (clean it up first)")]
    AlreadyPrepared {
        /// The container id.
        container: String,
    },
    /// A nested container's `PARENT` sandbox path while its parent is not prepared on this
    /// agent, or is preparing or cleaning up.
    #[error("container {container}: parent container {parent}: {reason}")]
    ParentNotReady {
        /// The nested container.
        container: String,
        /// Its parent.
        parent: String,
        /// What is wrong with the parent.
        reason: String,
    },
    /// Cleanup of a container whose sandbox nested containers still bind from (`PARENT`
    /// sandbox paths): refused until they are cleaned up.
    #[error(
        "container {container}: cleanup refused: nested container(s) {} hold PARENT sandbox path volumes in its sandbox; clean them up first",
        .children.join(", ")
    )]
    HasChildren {
        /// The parent container.
        container: String,
        /// The nested containers holding binds into its sandbox.
        children: Vec<String>,
    },
}

/// The container module's result.
pub type Result<T, E = ContainerError> = std::result::Result<T, E>;

impl ContainerError {
    /// The error's class: the caller's mistakes are [`ErrorCode::InvalidArgument`], a
    /// container prepared already [`ErrorCode::AlreadyExists`], a quarantined container, a
    /// parent not ready for its nested container or a parent with nested containers still
    /// bound to its sandbox [`ErrorCode::FailedPrecondition`], a CSI plugin nobody
    /// configured [`ErrorCode::NotFound`], the rest [`ErrorCode::Internal`].
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Config { .. } | Self::Volume { .. } => ErrorCode::InvalidArgument,
            Self::AlreadyPrepared { .. } => ErrorCode::AlreadyExists,
            Self::Quarantined { .. } | Self::ParentNotReady { .. } | Self::HasChildren { .. } => {
                ErrorCode::FailedPrecondition
            }
            Self::Csi { source, .. }
                if matches!(**source, berth_csi::CsiError::UnknownPlugin { .. }) =>
            {
                ErrorCode::NotFound
            }
            Self::Mount { .. }
            | Self::Dvdi { .. }
            | Self::Csi { .. }
            | Self::Io { .. }
            | Self::Record { .. } => ErrorCode::Internal,
        }
    }
}

/// A config error.
pub(crate) fn cfg_err(reason: impl Into<String>) -> ContainerError {
    ContainerError::Config {
        reason: reason.into(),
    }
}

/// A volume that cannot be used as asked.
pub(crate) fn vol_err(container: &str, volume: &str, reason: impl Into<String>) -> ContainerError {
    ContainerError::Volume {
        container: container.to_owned(),
        volume: volume.to_owned(),
        reason: reason.into(),
    }
}

/// A mount engine error of a volume.
pub(crate) fn mount_err(
    container: &str,
    volume: &str,
    source: berth_mount::MountError,
) -> ContainerError {
    ContainerError::Mount {
        container: container.to_owned(),
        volume: volume.to_owned(),
        source: Box::new(source),
    }
}

/// A CSI error of a volume.
pub(crate) fn csi_err(
    container: &str,
    volume: &str,
    source: berth_csi::CsiError,
) -> ContainerError {
    ContainerError::Csi {
        container: container.to_owned(),
        volume: volume.to_owned(),
        source: Box::new(source),
    }
}

/// A Docker volume-driver error of a volume.
pub(crate) fn dvdi_err(
    container: &str,
    volume: &str,
    source: berth_dvdi::DvdiError,
) -> ContainerError {
    ContainerError::Dvdi {
        container: container.to_owned(),
        volume: volume.to_owned(),
        source: Box::new(source),
    }
}

/// An I/O error of a step on berth's own files.
pub(crate) fn io_err(
    container: &str,
    step: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ContainerError {
    let container = container.to_owned();
    let path = path.to_owned();
    move |source| ContainerError::Io {
        container,
        step,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_kind_of_failure() {
        assert_eq!(cfg_err("x").code(), ErrorCode::InvalidArgument);
        assert_eq!(vol_err("c", "v", "x").code(), ErrorCode::InvalidArgument);
        assert_eq!(
            ContainerError::AlreadyPrepared {
                container: "c".into()
            }
            .code(),
            ErrorCode::AlreadyExists
        );
        let quarantined = ContainerError::Quarantined {
            container: "c".into(),
            path: PathBuf::from("/w/containers-quarantine/c.1"),
            what: "prepare refused",
        };
        assert_eq!(quarantined.code(), ErrorCode::FailedPrecondition);
        assert!(
            quarantined
                .to_string()
                .contains("cleanup --container-id c --force")
        );
        let family = ContainerError::HasChildren {
            container: "pod".into(),
            children: vec!["task-a".into(), "task-b".into()],
        };
        assert_eq!(family.code(), ErrorCode::FailedPrecondition);
        assert!(family.to_string().contains("task-a, task-b"), "{family}");
        let parent = ContainerError::ParentNotReady {
            container: "task-a".into(),
            parent: "pod".into(),
            reason: "not prepared on this agent".into(),
        };
        assert_eq!(parent.code(), ErrorCode::FailedPrecondition);
        let unknown = berth_csi::CsiError::UnknownPlugin {
            plugin: "p".into(),
            reason: String::new(),
        };
        assert_eq!(csi_err("c", "v", unknown).code(), ErrorCode::NotFound);
        let io = io_err("c", "write record", Path::new("/x"))(std::io::Error::other("disk"));
        assert_eq!(io.code(), ErrorCode::Internal);
        let mount = mount_err(
            "c",
            "v",
            berth_mount::MountError::StillMounted {
                target: PathBuf::from("/x"),
                mount_id: 1,
            },
        );
        assert_eq!(mount.code(), ErrorCode::Internal);
    }
}
