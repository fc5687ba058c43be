//! berth's mount engine: safe, verified Linux mounts.
//!
//! Every volume kind ends as a mount into a container. This crate owns that last step, and the
//! ground truth behind it:
//!
//! - [`mountinfo`]: a parser of `/proc/<pid>/mountinfo` (all fields, optional fields, octal
//!   escapes decoded) and an indexed [`MountTable`] answering "is `P` a mount point" and "what
//!   is mounted at or below `P`" in O(log n).
//! - [`Mounter`]: the operations callers need — recursive bind, **recursive** read-only
//!   (`mount_setattr(AT_RECURSIVE)`, or a remount of every submount), `nosuid`/`nodev`/`noexec`,
//!   propagation, unmount with `EBUSY` retries, an optional `MNT_DETACH` fallback and
//!   verification, unmount of a whole subtree deepest first, and a bind into a container root
//!   that cannot be redirected out of it. [`LinuxMounter`] is the real implementation (over the
//!   [`sys::Sys`] system-call trait); [`fake::RecordingMounter`] records calls for callers'
//!   unit tests and [`fake::FakeSys`] scripts the kernel's answers for this crate's own logic.
//! - [`path`]: resolution of a container path inside a root without ever leaving it
//!   (`openat2(RESOLVE_IN_ROOT)`, or a checked component walk), creation of the mount point as
//!   a directory or a file, and safe removal that never crosses a mount.
//! - [`names`]: validation of ids and names before they become path components, and a
//!   reversible encoder for ids that may contain `/`.
//! - [`ns`]: running a closure inside the mount namespace of a pid (or a new private one) on a
//!   dedicated thread.
//! - [`durable`], [`store`], [`hook`]: the write-ahead machinery every manager above shares —
//!   durable writes, the one record store (load, fsync'd persist, remove, list, per-key
//!   locks, write counters) and the one crash-hook type with its [`hook::Failpoint`].
//! - [`retry`]: the one retry policy of the plugin clients (backoff, full jitter, budget).
//! - [`loopdev`]: loop devices through the kernel's ioctls (tests and benchmarks make real
//!   ext4/xfs filesystems with them).
//!
//! Nothing here runs a shell or the `mount(8)` binary. Mount data strings (which may carry
//! secrets) never appear in errors or logs.
//!
//! ```no_run
//! use std::path::Path;
//! use berth_mount::{BindOptions, LinuxMounter, Mounter, UnmountOptions};
//!
//! # fn main() -> Result<(), berth_mount::MountError> {
//! let m = LinuxMounter::new();
//! let host_target = m.bind_into(
//!     Path::new("/var/lib/berth/volumes/roles/web/pv-1"),
//!     Path::new("/var/lib/berth/sandboxes/c1/rootfs"),
//!     Path::new("data/db"),
//!     &BindOptions::read_only(),
//! )?;
//! m.unmount(&host_target, &UnmountOptions::default())?;
//! # Ok(())
//! # }
//! ```

#![cfg(target_os = "linux")]

pub mod durable;
mod engine;
mod error;
pub mod fake;
pub mod hook;
pub mod loopdev;
pub mod mountinfo;
pub mod names;
pub mod ns;
pub mod path;
pub mod quota;
pub mod retry;
pub mod store;
pub mod sys;
pub mod usage;

pub use engine::{Engine, LinuxMounter, Mounter};
pub use error::{FsStep, MountError, Op, Result};
pub use mountinfo::{MountEntry, MountTable, OptionalField};

use std::time::Duration;

use nix::mount::MsFlags;

/// Mount propagation type (mount_namespaces(7)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Propagation {
    /// Neither receives nor sends mount events.
    Private,
    /// Receives events from its master peer group, sends none (`rslave` for container binds).
    Slave,
    /// Sends and receives events within its peer group. Do not use for container binds: this
    /// is how rexray #1130's 65 536 duplicated mounts happened.
    Shared,
    /// Private and cannot be the source of a bind mount.
    Unbindable,
}

impl Propagation {
    /// The `mount(2)` flag.
    #[must_use]
    pub fn ms_flag(self) -> MsFlags {
        match self {
            Propagation::Private => MsFlags::MS_PRIVATE,
            Propagation::Slave => MsFlags::MS_SLAVE,
            Propagation::Shared => MsFlags::MS_SHARED,
            Propagation::Unbindable => MsFlags::MS_UNBINDABLE,
        }
    }
}

/// Per-mount flags that can be added to a mount (never removed by this engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MountAttrs {
    /// `ro`.
    pub read_only: bool,
    /// `nosuid`.
    pub nosuid: bool,
    /// `nodev`.
    pub nodev: bool,
    /// `noexec`.
    pub noexec: bool,
}

impl MountAttrs {
    /// No flag set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !(self.read_only || self.nosuid || self.nodev || self.noexec)
    }

    /// The `MOUNT_ATTR_*` bits for `mount_setattr(2)`.
    #[must_use]
    pub fn mount_attr_bits(&self) -> u64 {
        let mut b = 0;
        if self.read_only {
            b |= libc::MOUNT_ATTR_RDONLY;
        }
        if self.nosuid {
            b |= libc::MOUNT_ATTR_NOSUID;
        }
        if self.nodev {
            b |= libc::MOUNT_ATTR_NODEV;
        }
        if self.noexec {
            b |= libc::MOUNT_ATTR_NOEXEC;
        }
        b
    }

    /// The `MS_*` flags for `mount(2)`.
    #[must_use]
    pub fn ms_flags(&self) -> MsFlags {
        let mut f = MsFlags::empty();
        f.set(MsFlags::MS_RDONLY, self.read_only);
        f.set(MsFlags::MS_NOSUID, self.nosuid);
        f.set(MsFlags::MS_NODEV, self.nodev);
        f.set(MsFlags::MS_NOEXEC, self.noexec);
        f
    }
}

/// How to bind-mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    /// `MS_REC`: bring the submounts of the source along (default: yes). Attributes are then
    /// applied to every submount too.
    pub recursive: bool,
    /// Flags to add after the bind (read-only is recursive when `recursive` is).
    pub attrs: MountAttrs,
    /// Propagation of the new mount (recursive when `recursive` is); `None` keeps what the
    /// kernel gives (a copy of the parent's).
    pub propagation: Option<Propagation>,
}

impl Default for BindOptions {
    fn default() -> Self {
        BindOptions {
            recursive: true,
            attrs: MountAttrs::default(),
            propagation: None,
        }
    }
}

impl BindOptions {
    /// A recursive, recursively read-only bind.
    #[must_use]
    pub fn read_only() -> Self {
        BindOptions {
            attrs: MountAttrs {
                read_only: true,
                ..MountAttrs::default()
            },
            ..BindOptions::default()
        }
    }

    /// The defaults berth uses for external volumes: recursive, `nosuid`, `nodev`, `rslave`.
    #[must_use]
    pub fn external_volume(read_only: bool) -> Self {
        BindOptions {
            recursive: true,
            attrs: MountAttrs {
                read_only,
                nosuid: true,
                nodev: true,
                noexec: false,
            },
            propagation: Some(Propagation::Slave),
        }
    }
}

/// How the engine confirms an unmount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// `statx(STATX_MNT_ID)` of the target: the unmounted mount id must no longer be the one
    /// at the target (the same ids mountinfo shows; ~1 µs instead of a table read). Falls back
    /// to [`Verify::MountInfo`] where `statx` lacks mount ids.
    MountId,
    /// Re-read mountinfo: the unmounted mount id must be gone from the table.
    MountInfo,
}

/// How to unmount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnmountOptions {
    /// How many times `EBUSY` is retried after the first attempt.
    pub busy_retries: u32,
    /// First pause after `EBUSY`; doubled after each retry.
    pub initial_backoff: Duration,
    /// Upper bound of the pause.
    pub max_backoff: Duration,
    /// After the retries, detach lazily (`MNT_DETACH`) instead of failing with
    /// [`MountError::Busy`]. The mount disappears from the namespace at once; the filesystem
    /// lives on until its last user closes it.
    pub detach_fallback: bool,
    /// How to confirm.
    pub verify: Verify,
}

impl Default for UnmountOptions {
    fn default() -> Self {
        UnmountOptions {
            busy_retries: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            detach_fallback: false,
            verify: Verify::MountId,
        }
    }
}

/// What an unmount did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// `umount2` succeeded after `attempts` calls and the mount is gone.
    Unmounted {
        /// Calls made (1 when not busy).
        attempts: u32,
    },
    /// `EBUSY` persisted; the mount was detached lazily after `attempts` plain calls.
    Detached {
        /// Plain calls made before detaching.
        attempts: u32,
    },
    /// Nothing was mounted there (already unmounted: unmount is idempotent).
    NotMounted,
}
