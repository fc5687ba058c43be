//! The crate's error type: one variant per failing step, each naming the operation, the paths
//! involved and the errno. Mount data (`-o` strings) is never put in an error: it may carry
//! secrets (CSI `mount_flags`).

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// A mount-table operation, as named in errors and in the recording fakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `mount(MS_BIND[|MS_REC])`.
    Bind,
    /// `mount(fstype)` of a filesystem (tmpfs, ext4 on a device ...).
    MountFilesystem,
    /// `mount_setattr(2)` (optionally `AT_RECURSIVE`).
    SetAttr,
    /// `mount(MS_REMOUNT|MS_BIND|flags)` of one mount (the fallback of [`Op::SetAttr`]).
    Remount,
    /// `mount(MS_PRIVATE|MS_SLAVE|MS_SHARED|MS_UNBINDABLE[|MS_REC])`.
    Propagation,
    /// `umount2(2)`.
    Unmount,
    /// `umount2(MNT_DETACH)` after `EBUSY` retries ran out.
    Detach,
    /// Reading the mount id of a path (`statx(STATX_MNT_ID)`).
    MountId,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Bind => "bind mount",
            Op::MountFilesystem => "mount filesystem",
            Op::SetAttr => "mount_setattr",
            Op::Remount => "remount",
            Op::Propagation => "set propagation",
            Op::Unmount => "unmount",
            Op::Detach => "lazy unmount (MNT_DETACH)",
            Op::MountId => "read mount id",
        })
    }
}

/// What a path-resolution or filesystem step was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsStep {
    /// Opening the root directory.
    OpenRoot,
    /// Opening one component while resolving.
    Open,
    /// Reading a symlink while resolving.
    ReadLink,
    /// `fstat` of an opened component.
    Stat,
    /// Creating a directory.
    Mkdir,
    /// Creating a file (a mount point for a file source).
    CreateFile,
    /// Listing a directory.
    ReadDir,
    /// Removing a file or a symlink.
    Unlink,
    /// Removing a directory.
    Rmdir,
}

impl std::fmt::Display for FsStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsStep::OpenRoot => "open root",
            FsStep::Open => "open",
            FsStep::ReadLink => "readlink",
            FsStep::Stat => "stat",
            FsStep::Mkdir => "mkdir",
            FsStep::CreateFile => "create file",
            FsStep::ReadDir => "read directory",
            FsStep::Unlink => "unlink",
            FsStep::Rmdir => "rmdir",
        })
    }
}

/// Every error of the mount engine.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount system call failed. `source_path` is the mount source, if the call has one
    /// (named so because thiserror reserves `source` for the underlying error).
    #[error("{op} {} -> {}: {errno}", display_opt(.source_path), .target.display())]
    Syscall {
        /// The operation.
        op: Op,
        /// The mount source (a directory, a device), if any.
        source_path: Option<PathBuf>,
        /// The mount target.
        target: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },

    /// `umount2` kept answering `EBUSY` and the `MNT_DETACH` fallback was not allowed.
    #[error("unmount {}: still busy (EBUSY) after {attempts} attempts", .target.display())]
    Busy {
        /// The mount point.
        target: PathBuf,
        /// How many `umount2` calls were made.
        attempts: u32,
    },

    /// The unmount call succeeded but mountinfo (or the mount id) still shows the mount.
    #[error("unmount {}: verification failed, still mounted (mount id {mount_id})", .target.display())]
    StillMounted {
        /// The mount point.
        target: PathBuf,
        /// The mount id still there.
        mount_id: u64,
    },

    /// Reading a mountinfo file failed.
    #[error("read {}: {source}", .path.display())]
    MountInfoRead {
        /// The file (`/proc/thread-self/mountinfo`, `/proc/<pid>/mountinfo`).
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },

    /// A mountinfo line could not be parsed.
    #[error("parse mountinfo line {line}: {reason}")]
    MountInfoParse {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
    },

    /// A path given to the engine is unusable (relative where absolute is needed, empty, NUL).
    #[error("invalid path {}: {reason}", .path.display())]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Resolving a path inside a root would leave the root, or met something the mode refuses
    /// (a `..` component, a symlink under `NoSymlinks`, a mount under `NoXdev`).
    #[error("path {} inside root {}: {reason}", .path.display(), .root.display())]
    Escape {
        /// The root (sandbox, rootfs, volume directory).
        root: PathBuf,
        /// The path to resolve inside it.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A filesystem step failed while resolving, creating or removing a path.
    #[error("{step} {} (inside {}): {errno}", .path.display(), .root.display())]
    Fs {
        /// The step.
        step: FsStep,
        /// The root the path was resolved in (`/` for host paths).
        root: PathBuf,
        /// The path (relative to `root` when resolving inside it).
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },

    /// The mount point exists but its kind differs from the source's (a directory source needs
    /// a directory, anything else a file).
    #[error("mount point {} is a {found}, the source needs a {expected}", .path.display())]
    KindMismatch {
        /// The existing mount point.
        path: PathBuf,
        /// What the source needs.
        expected: &'static str,
        /// What is there.
        found: &'static str,
    },

    /// An id or name cannot become a path component.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name (debug-escaped when displayed).
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// Refused to remove a directory with something mounted at or below it.
    #[error("refusing to remove {}: {} is mounted", .path.display(), .mount_point.display())]
    MountedBelow {
        /// The directory to remove.
        path: PathBuf,
        /// A mount point at or below it.
        mount_point: PathBuf,
    },

    /// A filesystem type name is not a plain identifier.
    #[error("invalid filesystem type {fstype:?}")]
    InvalidFsType {
        /// The refused name.
        fstype: String,
    },

    /// Entering another mount namespace failed.
    #[error("enter mount namespace of pid {pid}: {step}: {errno}")]
    Namespace {
        /// The pid (or tid) whose namespace was asked for; 0 for "a new private namespace".
        pid: i32,
        /// `open /proc/<pid>/ns/mnt`, `unshare(CLONE_FS)`, `setns`, `unshare(CLONE_NEWNS)` ...
        step: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },

    /// The closure run in another namespace panicked; the panic message when it was a string.
    #[error("the closure run in the mount namespace of pid {pid} panicked: {message}")]
    NamespaceThreadPanicked {
        /// As in [`MountError::Namespace`].
        pid: i32,
        /// The panic payload when it is a string.
        message: String,
    },

    /// A loop-device step failed.
    #[error("loop device {step} {}: {errno}", .path.display())]
    Loop {
        /// `open /dev/loop-control`, `LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE` ...
        step: &'static str,
        /// The backing file or the device.
        path: PathBuf,
        /// The kernel's answer.
        errno: Errno,
    },
}

fn display_opt(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => p.display().to_string(),
        None => "(none)".to_owned(),
    }
}

impl MountError {
    /// The errno behind this error, when there is one.
    #[must_use]
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MountError::Syscall { errno, .. }
            | MountError::Fs { errno, .. }
            | MountError::Namespace { errno, .. }
            | MountError::Loop { errno, .. } => Some(*errno),
            MountError::Busy { .. } => Some(Errno::EBUSY),
            MountError::MountInfoRead { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = MountError> = std::result::Result<T, E>;
