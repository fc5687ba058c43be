//! Mount namespaces: run a closure in the mount namespace of another process (to mount a volume
//! into a running container), or in a fresh private one (tests, benchmarks, sandboxes).
//!
//! Both run the closure on a dedicated thread that leaves the caller's namespace and is then
//! discarded, so the calling thread (and any async runtime on it) never changes namespace.
//! Mounts made by the closure are visible in `/proc/thread-self/mountinfo` of that thread (use
//! [`crate::MountTable::read_current`]), not in `/proc/self/mountinfo`.

use std::fs::File;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{MountError, Result};

fn ns_err(pid: i32, step: &'static str, errno: Errno) -> MountError {
    MountError::Namespace { pid, step, errno }
}

fn join_scoped<T>(pid: i32, h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    match h.join() {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".to_owned());
            Err(MountError::NamespaceThreadPanicked { pid, message })
        }
    }
}

/// Runs `f` inside the mount namespace of process (or thread) `pid`, on a dedicated thread:
/// `unshare(CLONE_FS)` (required before `setns` into a mount namespace from a multi-threaded
/// process), then `setns(/proc/<pid>/ns/mnt, CLONE_NEWNS)`, which also moves the thread's root
/// and working directory to the namespace's root.
///
/// # Errors
/// [`MountError::Namespace`] naming the failing step; [`MountError::NamespaceThreadPanicked`]
/// if `f` panicked.
pub fn in_mount_namespace_of<T, F>(pid: i32, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let path = PathBuf::from(format!("/proc/{pid}/ns/mnt"));
    let ns = File::open(&path).map_err(|e| {
        ns_err(
            pid,
            "open /proc/<pid>/ns/mnt",
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })?;
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name(format!("berth-mntns-{pid}"))
            .spawn_scoped(s, move || {
                unshare(CloneFlags::CLONE_FS).map_err(|e| ns_err(pid, "unshare(CLONE_FS)", e))?;
                setns(&ns, CloneFlags::CLONE_NEWNS)
                    .map_err(|e| ns_err(pid, "setns(CLONE_NEWNS)", e))?;
                Ok(f())
            })
            .map_err(|e| {
                ns_err(
                    pid,
                    "spawn thread",
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
                )
            })?;
        join_scoped(pid, h)
    })
}

/// Moves the *calling thread* into a new mount namespace whose mounts are all private
/// (`unshare(CLONE_NEWNS)`, then `/` made `rprivate`), so nothing done there propagates back.
/// For a thread that is discarded afterwards (tests, benchmarks), or a process's main thread
/// before it starts others.
///
/// # Errors
/// [`MountError::Namespace`] with pid 0.
pub fn enter_private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ns_err(0, "unshare(CLONE_NEWNS)", e))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| ns_err(0, "make / rprivate", e))
}

/// Runs `f` on a dedicated thread inside a new private mount namespace (see
/// [`enter_private_mount_namespace`]); everything mounted there disappears with the thread.
///
/// # Errors
/// As [`enter_private_mount_namespace`]; [`MountError::NamespaceThreadPanicked`] if `f`
/// panicked.
pub fn in_private_mount_namespace<T, F>(f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("berth-private-mntns".to_owned())
            .spawn_scoped(s, move || {
                enter_private_mount_namespace()?;
                Ok(f())
            })
            .map_err(|e| {
                ns_err(
                    0,
                    "spawn thread",
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)),
                )
            })?;
        join_scoped(0, h)
    })
}
