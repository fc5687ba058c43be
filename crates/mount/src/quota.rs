//! Project quotas: a directory tree tagged with a project id whose blocks and inodes the kernel
//! counts and limits, on XFS (mounted `prjquota`) and ext4 (made with `-O quota,project`,
//! mounted `prjquota`), through the kernel's interfaces only — no `xfs_quota`, no `setquota`.
//!
//! - the project id and the `PROJINHERIT` flag are set on a directory (and on what it already
//!   holds) with `FS_IOC_FSSETXATTR`, read with `FS_IOC_FSGETXATTR`; new files and directories
//!   created below inherit them;
//! - limits and usage go through `quotactl_fd(2)` on a descriptor of the directory (the
//!   filesystem is the descriptor's: no device path is needed, so this works in any mount
//!   namespace): `Q_SETQUOTA` / `Q_GETQUOTA` of `PRJQUOTA`, the generic interface both
//!   filesystems implement, and `Q_XGETQSTATV` to tell whether project quotas are accounted
//!   and enforced.
//!
//! A write past the hard limit fails with `EDQUOT` on ext4 and `ENOSPC` on XFS (which reports
//! a project quota as a full filesystem, as `df` inside the directory shows).
//!
//! [`Quotas`] is the seam: [`LinuxQuotas`] makes the calls, [`FakeQuotas`] keeps them in
//! memory for callers' unit tests. Mesos's `disk/xfs` isolator does the same on XFS only.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;

/// A quota call that failed: the operation, the directory and the kernel's errno.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{op} {path}: {errno}")]
pub struct QuotaError {
    /// What was being done (`"set project id"`, `"set limits"`, ...).
    pub op: &'static str,
    /// The directory.
    pub path: PathBuf,
    /// The kernel's answer.
    pub errno: Errno,
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, QuotaError>;

/// What a filesystem does with project quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Usage is counted and limits are enforced.
    Enforced,
    /// Usage is counted, limits are not enforced (e.g. ext4 with the quota feature mounted
    /// without `prjquota`).
    AccountingOnly,
    /// No project quotas on this filesystem (tmpfs, ext4 without the feature, a kernel
    /// without quota support).
    None,
}

/// A project's limits in bytes (0 = none), as set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// The hard limit: writes past it fail.
    pub hard_bytes: u64,
    /// The soft limit (Mesos's headroom below the hard one); 0 = none.
    pub soft_bytes: u64,
}

/// A project's usage and limits as the filesystem counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Inodes in use.
    pub used_inodes: u64,
    /// The limits in force.
    pub limits: Limits,
}

/// Project quota operations on a directory's filesystem.
pub trait Quotas: Send + Sync {
    /// Whether `dir`'s filesystem accounts and enforces project quotas.
    ///
    /// # Errors
    /// `dir` cannot be opened.
    fn support(&self, dir: &Path) -> Result<Support>;

    /// The project id `dir` (a directory or a regular file) carries (0 = none).
    ///
    /// # Errors
    /// `dir` cannot be opened, or the filesystem has no project ids (`ENOTTY`, `EOPNOTSUPP`).
    fn project_of(&self, dir: &Path) -> Result<u32>;

    /// Tags `dir` and everything below it (not crossing into other filesystems, not following
    /// symlinks) with `project` and sets `PROJINHERIT` on its directories; `project` 0 clears.
    ///
    /// # Errors
    /// The first entry that cannot be opened or tagged.
    fn assign(&self, dir: &Path, project: u32) -> Result<()>;

    /// Sets `project`'s limits on `dir`'s filesystem (0 bytes = no limit).
    ///
    /// # Errors
    /// The kernel refuses (`ESRCH`: quotas off; `EPERM`).
    fn set_limits(&self, dir: &Path, project: u32, limits: Limits) -> Result<()>;

    /// `project`'s usage and limits on `dir`'s filesystem.
    ///
    /// # Errors
    /// The kernel refuses.
    fn usage(&self, dir: &Path, project: u32) -> Result<Usage>;
}

// ---------------------------------------------------------------------------------------------
// The kernel's ABI.

/// `PRJQUOTA` (`include/uapi/linux/quota.h`).
const PRJQUOTA: u32 = 2;
/// `Q_GETQUOTA`, `Q_SETQUOTA`.
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
/// `Q_XGETQSTATV` = `XQM_CMD(8)` (`include/uapi/linux/dqblk_xfs.h`).
const Q_XGETQSTATV: u32 = (('X' as u32) << 8) + 8;
/// `fs_quota_statv` flags: project quota accounting and enforcement.
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const FS_QSTATV_VERSION1: i8 = 1;
/// `if_dqblk.dqb_valid`: block limits.
const QIF_BLIMITS: u32 = 1;
/// Quota block size of `if_dqblk`'s limits.
const QIF_DQBLKSIZE: u64 = 1024;
/// `quotactl_fd(2)` (Linux ≥ 5.14; the same number on every architecture).
const SYS_QUOTACTL_FD: libc::c_long = 443;
/// `FS_IOC_FSGETXATTR` = `_IOR('X', 31, struct fsxattr)`, `FS_IOC_FSSETXATTR` = `_IOW('X', 32, …)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// `FS_XFLAG_PROJINHERIT`.
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// `QCMD(cmd, type)`.
const fn qcmd(cmd: u32, kind: u32) -> libc::c_int {
    // The kernel's macro: the command in the high bits, the quota type in the low byte. The
    // values are fixed constants below 2^32; the cast reinterprets the bit pattern as the
    // kernel's `int` argument does.
    #[allow(clippy::cast_possible_wrap)]
    let cmd = ((cmd << 8) | (kind & 0xff)) as libc::c_int;
    cmd
}

/// `struct fsxattr`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct if_dqblk` (libc's `dqblk`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// `struct fs_qfilestatv`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FsQfilestatv {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}

/// `struct fs_quota_statv`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FsQuotaStatv {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: FsQfilestatv,
    gquota: FsQfilestatv,
    pquota: FsQfilestatv,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}

fn to_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(QIF_DQBLKSIZE)
}

fn from_blocks(blocks: u64) -> u64 {
    blocks.saturating_mul(QIF_DQBLKSIZE)
}

/// The real project quotas.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxQuotas;

impl LinuxQuotas {
    /// The real implementation.
    #[must_use]
    pub fn new() -> Self {
        LinuxQuotas
    }
}

fn open_dir(op: &'static str, path: &Path) -> Result<OwnedFd> {
    open_flags(op, path, libc::O_DIRECTORY)
}

fn open_flags(op: &'static str, path: &Path, extra: libc::c_int) -> Result<OwnedFd> {
    let err = |errno| QuotaError {
        op,
        path: path.to_owned(),
        errno,
    };
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| err(Errno::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated path that lives across the call; `open` has no
    // other memory arguments.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | extra,
        )
    };
    if fd < 0 {
        return Err(err(Errno::last()));
    }
    // SAFETY: `fd` was just returned by `open` and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn quotactl_fd<T>(fd: &OwnedFd, cmd: libc::c_int, id: u32, data: &mut T) -> nix::Result<()> {
    // SAFETY: `fd` is an open descriptor; `data` points to a live, properly sized and aligned
    // `#[repr(C)]` struct of the layout the command expects (`if_dqblk` for Q_GET/SETQUOTA,
    // `fs_quota_statv` for Q_XGETQSTATV), valid for the kernel to read and write.
    let r = unsafe {
        libc::syscall(
            SYS_QUOTACTL_FD,
            fd.as_raw_fd(),
            cmd,
            id,
            std::ptr::from_mut::<T>(data).cast::<libc::c_void>(),
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn get_xattr(fd: &OwnedFd) -> nix::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR writes one `struct fsxattr` (28 bytes, the layout of
    // `FsXattr`) to the pointer, which points to a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &raw mut x) };
    if r < 0 { Err(Errno::last()) } else { Ok(x) }
}

fn set_xattr(fd: &OwnedFd, x: &FsXattr) -> nix::Result<()> {
    // SAFETY: FS_IOC_FSSETXATTR reads one `struct fsxattr` from the pointer, which points to a
    // live value of that layout.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, std::ptr::from_ref(x)) };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn tag(fd: &OwnedFd, project: u32, is_dir: bool) -> nix::Result<()> {
    let mut x = get_xattr(fd)?;
    x.projid = project;
    if is_dir && project != 0 {
        x.xflags |= FS_XFLAG_PROJINHERIT;
    } else {
        x.xflags &= !FS_XFLAG_PROJINHERIT;
    }
    set_xattr(fd, &x)
}

impl Quotas for LinuxQuotas {
    fn support(&self, dir: &Path) -> Result<Support> {
        let fd = open_dir("open for quota state", dir)?;
        let mut stat = FsQuotaStatv {
            version: FS_QSTATV_VERSION1,
            ..FsQuotaStatv::default()
        };
        match quotactl_fd(&fd, qcmd(Q_XGETQSTATV, PRJQUOTA), 0, &mut stat) {
            Ok(()) if stat.flags & FS_QUOTA_PDQ_ENFD != 0 => Ok(Support::Enforced),
            Ok(()) if stat.flags & FS_QUOTA_PDQ_ACCT != 0 => Ok(Support::AccountingOnly),
            // ENOSYS: no quotactl_fd or no quota support; ENOSYS/EINVAL/ENOTTY/EOPNOTSUPP:
            // the filesystem has no quota operations; ESRCH/ENOENT: project quotas are off.
            Ok(()) | Err(_) => Ok(Support::None),
        }
    }

    fn project_of(&self, dir: &Path) -> Result<u32> {
        let fd = open_flags("open for project id", dir, 0)?;
        get_xattr(&fd)
            .map(|x| x.projid)
            .map_err(|errno| QuotaError {
                op: "read project id",
                path: dir.to_owned(),
                errno,
            })
    }

    fn assign(&self, dir: &Path, project: u32) -> Result<()> {
        // Iterative, depth-first, one descriptor per pending directory path (no descriptor
        // held per level): a deep tree cannot exhaust descriptors.
        let root_fd = open_dir("open for project id", dir)?;
        let dev = nix::sys::stat::fstat(&root_fd)
            .map_err(|errno| QuotaError {
                op: "stat for project id",
                path: dir.to_owned(),
                errno,
            })?
            .st_dev;
        drop(root_fd);
        let mut pending = vec![dir.to_owned()];
        while let Some(path) = pending.pop() {
            let fd = open_dir("open for project id", &path)?;
            tag(&fd, project, true).map_err(|errno| QuotaError {
                op: "set project id",
                path: path.clone(),
                errno,
            })?;
            let entries = std::fs::read_dir(&path).map_err(|e| QuotaError {
                op: "list for project id",
                path: path.clone(),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            })?;
            for entry in entries.flatten() {
                let child = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    // Not into another filesystem mounted below.
                    let Ok(meta) = nix::sys::stat::lstat(&child) else {
                        continue;
                    };
                    if meta.st_dev == dev {
                        pending.push(child);
                    }
                } else if kind.is_file() {
                    let fd = open_flags("open for project id", &child, 0)?;
                    tag(&fd, project, false).map_err(|errno| QuotaError {
                        op: "set project id",
                        path: child.clone(),
                        errno,
                    })?;
                }
                // Symlinks, devices, sockets, fifos: their blocks are few; opening them
                // would follow or block, so they keep the project they were made with.
            }
        }
        Ok(())
    }

    fn set_limits(&self, dir: &Path, project: u32, limits: Limits) -> Result<()> {
        let fd = open_dir("open for quota limits", dir)?;
        let mut q = IfDqblk {
            bhardlimit: to_blocks(limits.hard_bytes),
            bsoftlimit: to_blocks(limits.soft_bytes),
            valid: QIF_BLIMITS,
            ..IfDqblk::default()
        };
        quotactl_fd(&fd, qcmd(Q_SETQUOTA, PRJQUOTA), project, &mut q).map_err(|errno| QuotaError {
            op: "set quota limits",
            path: dir.to_owned(),
            errno,
        })
    }

    fn usage(&self, dir: &Path, project: u32) -> Result<Usage> {
        let fd = open_dir("open for quota usage", dir)?;
        let mut q = IfDqblk::default();
        match quotactl_fd(&fd, qcmd(Q_GETQUOTA, PRJQUOTA), project, &mut q) {
            Ok(()) => {}
            // XFS has no quota record for a project with nothing used and no limits.
            Err(Errno::ENOENT) => return Ok(Usage::default()),
            Err(errno) => {
                return Err(QuotaError {
                    op: "read quota usage",
                    path: dir.to_owned(),
                    errno,
                });
            }
        }
        Ok(Usage {
            used_bytes: q.curspace,
            used_inodes: q.curinodes,
            limits: Limits {
                hard_bytes: from_blocks(q.bhardlimit),
                soft_bytes: from_blocks(q.bsoftlimit),
            },
        })
    }
}

/// In-memory project quotas for callers' unit tests: `support` answers what it was built
/// with, project ids and limits are remembered per path and per id, usage is what the test
/// sets; every call is recorded.
#[derive(Debug)]
pub struct FakeQuotas {
    support: Support,
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    projects: BTreeMap<PathBuf, u32>,
    limits: BTreeMap<u32, Limits>,
    used: BTreeMap<u32, (u64, u64)>,
    calls: Vec<String>,
}

impl FakeQuotas {
    /// A fake whose filesystems all answer `support`.
    #[must_use]
    pub fn new(support: Support) -> Self {
        FakeQuotas {
            support,
            state: Mutex::new(FakeState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets what `usage` reports for `project`.
    pub fn set_used(&self, project: u32, bytes: u64, inodes: u64) {
        self.state().used.insert(project, (bytes, inodes));
    }

    /// The calls made so far, one line each (`assign /p 7`, `limits 7 1024/0`).
    #[must_use]
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// The limits set for `project`, if any.
    #[must_use]
    pub fn limits_of(&self, project: u32) -> Option<Limits> {
        self.state().limits.get(&project).copied()
    }
}

impl Quotas for FakeQuotas {
    fn support(&self, _dir: &Path) -> Result<Support> {
        Ok(self.support)
    }

    fn project_of(&self, dir: &Path) -> Result<u32> {
        Ok(self.state().projects.get(dir).copied().unwrap_or(0))
    }

    fn assign(&self, dir: &Path, project: u32) -> Result<()> {
        let mut s = self.state();
        s.calls.push(format!("assign {} {project}", dir.display()));
        if project == 0 {
            s.projects.remove(dir);
        } else {
            s.projects.insert(dir.to_owned(), project);
        }
        Ok(())
    }

    fn set_limits(&self, dir: &Path, project: u32, limits: Limits) -> Result<()> {
        let mut s = self.state();
        if self.support == Support::None {
            return Err(QuotaError {
                op: "set quota limits",
                path: dir.to_owned(),
                errno: Errno::ESRCH,
            });
        }
        s.calls.push(format!(
            "limits {project} {}/{}",
            limits.hard_bytes, limits.soft_bytes
        ));
        if limits == Limits::default() {
            s.limits.remove(&project);
        } else {
            s.limits.insert(project, limits);
        }
        Ok(())
    }

    fn usage(&self, _dir: &Path, project: u32) -> Result<Usage> {
        let s = self.state();
        let (used_bytes, used_inodes) = s.used.get(&project).copied().unwrap_or_default();
        Ok(Usage {
            used_bytes,
            used_inodes,
            limits: s.limits.get(&project).copied().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_abi_matches_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<IfDqblk>(), 72);
        assert_eq!(
            std::mem::size_of::<IfDqblk>(),
            std::mem::size_of::<libc::dqblk>()
        );
        assert_eq!(std::mem::size_of::<FsQfilestatv>(), 24);
        assert_eq!(std::mem::size_of::<FsQuotaStatv>(), 160);
        assert_eq!(qcmd(Q_GETQUOTA, PRJQUOTA), 0x8000_0702_u32 as libc::c_int);
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA), 0x8000_0802_u32 as libc::c_int);
        assert_eq!(qcmd(Q_XGETQSTATV, PRJQUOTA), 0x0058_0802);
    }

    #[test]
    fn limits_round_up_to_whole_quota_blocks() {
        assert_eq!(to_blocks(0), 0);
        assert_eq!(to_blocks(1), 1);
        assert_eq!(to_blocks(16 << 20), 16 * 1024);
        assert_eq!(to_blocks((16 << 20) + 1), 16 * 1024 + 1);
        assert_eq!(from_blocks(16 * 1024), 16 << 20);
    }

    #[test]
    fn a_filesystem_without_project_quotas_says_so() {
        // tmpfs has no quota operations here; a missing directory is an error, not a "no".
        let dir = tempfile::tempdir().unwrap();
        let q = LinuxQuotas::new();
        let s = q.support(dir.path()).unwrap();
        assert_ne!(
            s,
            Support::Enforced,
            "no test machine's /tmp enforces project quotas"
        );
        assert!(q.support(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_fake_remembers_what_it_was_told() {
        let f = FakeQuotas::new(Support::Enforced);
        f.assign(Path::new("/v/1"), 7).unwrap();
        f.set_limits(
            Path::new("/v/1"),
            7,
            Limits {
                hard_bytes: 1024,
                soft_bytes: 0,
            },
        )
        .unwrap();
        f.set_used(7, 10, 2);
        assert_eq!(f.project_of(Path::new("/v/1")).unwrap(), 7);
        let u = f.usage(Path::new("/v/1"), 7).unwrap();
        assert_eq!(
            (u.used_bytes, u.used_inodes, u.limits.hard_bytes),
            (10, 2, 1024)
        );
        assert_eq!(f.calls(), ["assign /v/1 7", "limits 7 1024/0"]);
        let none = FakeQuotas::new(Support::None);
        assert_eq!(
            none.set_limits(Path::new("/x"), 1, Limits::default())
                .unwrap_err()
                .errno,
            Errno::ESRCH
        );
    }
}
