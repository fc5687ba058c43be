//! The system calls the engine makes, behind the [`Sys`] trait: [`LinuxSys`] makes them for
//! real; [`crate::fake::FakeSys`] scripts the answers so the retry and verification logic can be
//! unit-tested without root.
//!
//! `mount_setattr(2)`, `open_tree(2)`, `move_mount(2)` and `statx(2)` have no nix wrapper, so
//! this module calls them through `libc`; it is one of the two modules of the workspace that
//! allow `unsafe` (with the loop-device ioctls), each block with its `// SAFETY:` reason.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::error::Result;
use crate::mountinfo::MountTable;

/// `statx`'s "this path is the root of a mount" attribute (Linux ≥ 5.8).
const STATX_ATTR_MOUNT_ROOT: u64 = 0x0000_2000;

/// What `statx` says about a path's mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountStat {
    /// The id of the mount the path is on (mountinfo's column 1).
    pub mount_id: u64,
    /// Whether the path is the root of that mount (i.e. a mount point).
    pub is_mount_root: bool,
}

/// `mount_setattr(2)`'s `struct mount_attr`, without the user-namespace field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// `MOUNT_ATTR_*` bits to set.
    pub set: u64,
    /// `MOUNT_ATTR_*` bits to clear.
    pub clear: u64,
    /// `MS_PRIVATE`, `MS_SLAVE`, `MS_SHARED`, `MS_UNBINDABLE` or 0.
    pub propagation: u64,
}

/// The mount system calls, one method each. Errors are the raw errno; the engine adds the
/// operation and the paths.
pub trait Sys: Send + Sync {
    /// `mount(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;

    /// `umount2(2)`.
    ///
    /// # Errors
    /// The kernel's errno.
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;

    /// `mount_setattr(dirfd or AT_FDCWD, path, flags, attr)`; `flags` are `AT_*` bits.
    ///
    /// # Errors
    /// The kernel's errno (`ENOSYS` before Linux 5.12).
    fn mount_setattr(
        &self,
        dirfd: Option<BorrowedFd<'_>>,
        path: &Path,
        flags: libc::c_uint,
        attr: SetAttr,
    ) -> nix::Result<()>;

    /// `open_tree(AT_FDCWD, path, OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC[|AT_RECURSIVE])`: a detached
    /// copy of the mount tree at `path`.
    ///
    /// # Errors
    /// The kernel's errno (`ENOSYS` before Linux 5.2).
    fn open_tree_clone(&self, path: &Path, recursive: bool) -> nix::Result<OwnedFd>;

    /// `move_mount(from, "", to, "", MOVE_MOUNT_F_EMPTY_PATH|MOVE_MOUNT_T_EMPTY_PATH)`:
    /// attaches the detached tree `from` on the file `to` refers to.
    ///
    /// # Errors
    /// The kernel's errno.
    fn move_mount(&self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()>;

    /// `statx(dirfd or AT_FDCWD, path, AT_SYMLINK_NOFOLLOW|AT_NO_AUTOMOUNT[|AT_EMPTY_PATH],
    /// STATX_MNT_ID)`. An empty `path` with a `dirfd` describes the fd itself.
    ///
    /// # Errors
    /// The kernel's errno; `ENOSYS` when mount ids are not reported (Linux < 5.8).
    fn stat_mount(&self, dirfd: Option<BorrowedFd<'_>>, path: &Path) -> nix::Result<MountStat>;

    /// The calling thread's mount table.
    ///
    /// # Errors
    /// As [`MountTable::read_current`].
    fn mount_table(&self) -> Result<MountTable>;

    /// Pauses between `EBUSY` retries (the fake records instead of sleeping).
    fn sleep(&self, pause: Duration);
}

/// The real system calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSys;

fn cpath(p: &Path) -> nix::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn raw_dirfd(dirfd: Option<BorrowedFd<'_>>) -> libc::c_int {
    dirfd.map_or(libc::AT_FDCWD, |fd| fd.as_raw_fd())
}

impl Sys for LinuxSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn mount_setattr(
        &self,
        dirfd: Option<BorrowedFd<'_>>,
        path: &Path,
        flags: libc::c_uint,
        attr: SetAttr,
    ) -> nix::Result<()> {
        let c = cpath(path)?;
        let mut ma = libc::mount_attr {
            attr_set: attr.set,
            attr_clr: attr.clear,
            propagation: attr.propagation,
            userns_fd: 0,
        };
        // SAFETY: `c` is a NUL-terminated string alive for the call, `ma` is a properly
        // initialised `struct mount_attr` whose size we pass, and the fd (if any) is borrowed
        // for the duration of the call. The kernel does not retain any of the pointers.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                raw_dirfd(dirfd),
                c.as_ptr(),
                flags,
                &raw mut ma,
                std::mem::size_of::<libc::mount_attr>(),
            )
        };
        Errno::result(r).map(drop)
    }

    fn open_tree_clone(&self, path: &Path, recursive: bool) -> nix::Result<OwnedFd> {
        let c = cpath(path)?;
        let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: `c` is a NUL-terminated string alive for the call; open_tree returns a new
        // file descriptor or -1, and nothing else is written.
        let r = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
        let fd = Errno::result(r)?;
        let fd = libc::c_int::try_from(fd).map_err(|_| Errno::EOVERFLOW)?;
        // SAFETY: on success open_tree returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn move_mount(&self, from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> nix::Result<()> {
        let empty = c"";
        // SAFETY: both descriptors are borrowed and valid for the call; the path arguments are
        // static empty C strings (the *_EMPTY_PATH flags make the kernel use the fds).
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                from.as_raw_fd(),
                empty.as_ptr(),
                to.as_raw_fd(),
                empty.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
            )
        };
        Errno::result(r).map(drop)
    }

    fn stat_mount(&self, dirfd: Option<BorrowedFd<'_>>, path: &Path) -> nix::Result<MountStat> {
        let c = cpath(path)?;
        let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT;
        if dirfd.is_some() && path.as_os_str().is_empty() {
            flags |= libc::AT_EMPTY_PATH;
        }
        let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
        // SAFETY: `c` is NUL-terminated and alive, `stx` points to writable memory of the size
        // of `struct statx` (zeroed, so any field the kernel does not fill reads as 0).
        let r = unsafe {
            libc::statx(
                raw_dirfd(dirfd),
                c.as_ptr(),
                flags,
                libc::STATX_MNT_ID,
                stx.as_mut_ptr(),
            )
        };
        Errno::result(r)?;
        // SAFETY: statx succeeded and filled the buffer, which was zero-initialised anyway.
        let stx = unsafe { stx.assume_init() };
        if stx.stx_mask & libc::STATX_MNT_ID == 0 {
            return Err(Errno::ENOSYS);
        }
        let root_known = stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT != 0;
        if !root_known {
            return Err(Errno::ENOSYS);
        }
        Ok(MountStat {
            mount_id: stx.stx_mnt_id,
            is_mount_root: stx.stx_attributes & STATX_ATTR_MOUNT_ROOT != 0,
        })
    }

    fn mount_table(&self) -> Result<MountTable> {
        MountTable::read_current()
    }

    fn sleep(&self, pause: Duration) {
        std::thread::sleep(pause);
    }
}
