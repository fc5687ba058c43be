//! The [`Mounter`] trait and [`Engine`], its implementation over the [`Sys`] system calls.
//!
//! The engine owns the *logic* (retries, fallbacks, verification, rollback); the system calls
//! stay one line each in [`crate::sys::LinuxSys`], so the logic is unit-tested against
//! [`crate::fake::FakeSys`] and the whole is tested for real in the privileged tier.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use tracing::{debug, warn};

use crate::error::{FsStep, MountError, Op, Result};
use crate::mountinfo::MountTable;
use crate::path::{Kind, ResolveMode, Resolver, RootDir};
use crate::sys::{LinuxSys, SetAttr, Sys};
use crate::{BindOptions, MountAttrs, Propagation, UnmountOptions, Unmounted, Verify};

/// Everything callers (CSI, DVDI, the agent) do with mounts. [`LinuxMounter`] does it for
/// real; [`crate::fake::RecordingMounter`] records it for their unit tests.
pub trait Mounter: Send + Sync {
    /// Bind-mounts host path `source` on host path `target` (both trusted: agent-made paths),
    /// then applies `opts` (attributes recursively when `opts.recursive`, then propagation).
    /// If a later step fails the bind is undone, so nothing is left half-made.
    ///
    /// # Errors
    /// [`MountError::Syscall`] naming the failing step.
    fn bind(&self, source: &Path, target: &Path, opts: &BindOptions) -> Result<()>;

    /// Bind-mounts host path `source` at `path_in_root` inside `root` (a sandbox or a
    /// container rootfs), never outside it: the path is resolved confined to `root`
    /// (symlinks are resolved as if `root` were `/`; `..` components are refused), missing
    /// directories are created, the mount point is created as a directory or a file to match
    /// the source, and the mount is attached to the file descriptor that resolution opened, so
    /// a path swapped afterwards cannot redirect it. Attributes (read-only ...) are applied
    /// before the tree is attached where the kernel has the new mount API, so the mount is
    /// never visible writable. Returns the host path of the mount point.
    ///
    /// # Errors
    /// [`MountError::Escape`], [`MountError::Fs`], [`MountError::KindMismatch`],
    /// [`MountError::Syscall`].
    fn bind_into(
        &self,
        source: &Path,
        root: &Path,
        path_in_root: &Path,
        opts: &BindOptions,
    ) -> Result<PathBuf>;

    /// [`Mounter::bind_into`] inside a root opened already (one open of the root for all the
    /// volumes of a container). The default goes by the root's path.
    ///
    /// # Errors
    /// As [`Mounter::bind_into`].
    fn bind_into_dir(
        &self,
        source: &Path,
        root: &RootDir,
        path_in_root: &Path,
        opts: &BindOptions,
    ) -> Result<PathBuf> {
        self.bind_into(source, root.path(), path_in_root, opts)
    }

    /// Mounts a filesystem (`tmpfs`, or `ext4`/`xfs` on a block device) with the given flags.
    /// `data` (filesystem options) never appears in errors or logs.
    ///
    /// # Errors
    /// [`MountError::InvalidFsType`], [`MountError::Syscall`].
    fn mount_filesystem(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        data: Option<&str>,
    ) -> Result<()>;

    /// Adds flags to the mount at `target` and, when `recursive`, to every mount below it.
    ///
    /// # Errors
    /// [`MountError::Syscall`] (`SetAttr`, or `Remount` naming the submount that failed).
    fn set_attrs(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> Result<()>;

    /// Changes the propagation type of the mount at `target` (and below it when `recursive`).
    ///
    /// # Errors
    /// [`MountError::Syscall`].
    fn set_propagation(
        &self,
        target: &Path,
        propagation: Propagation,
        recursive: bool,
    ) -> Result<()>;

    /// Unmounts the top mount at `target`: `umount2` (never following a symlink at
    /// `target`), `EBUSY` retried with backoff, then `MNT_DETACH` if allowed; verified
    /// afterwards. Not mounted is success ([`Unmounted::NotMounted`]).
    ///
    /// # Errors
    /// [`MountError::Busy`], [`MountError::StillMounted`], [`MountError::Syscall`].
    fn unmount(&self, target: &Path, opts: &UnmountOptions) -> Result<Unmounted>;

    /// [`Mounter::unmount`] of the mount point at `path_in_root` inside `root` (a sandbox or
    /// rootfs that untrusted processes can change), with every mount stacked there (top first;
    /// the outcome is the top one's), never through a path they can redirect:
    /// the parent directory is opened confined to `root` with every symlink refused, and
    /// `umount2` goes through `/proc/thread-self/fd/<parent>/<name>` with `UMOUNT_NOFOLLOW`,
    /// so the kernel reaches the very directory opened, and a parent swapped for a symlink
    /// afterwards changes nothing. A parent that is a symlink now is refused
    /// ([`MountError::Escape`]); a missing parent means nothing is mounted. Errors name the
    /// host path. The default goes by the joined path (for fakes).
    ///
    /// # Errors
    /// As [`Mounter::unmount`], plus [`MountError::Escape`] and resolution errors.
    fn unmount_in_root(
        &self,
        root: &RootDir,
        path_in_root: &Path,
        opts: &UnmountOptions,
    ) -> Result<Unmounted> {
        self.unmount(&root.path().join(path_in_root), opts)
    }

    /// Unmounts everything at or below `path`, deepest first (the top of a stack first), then
    /// checks mountinfo that nothing is left. Returns the mount points unmounted.
    ///
    /// # Errors
    /// As [`Mounter::unmount`]; [`MountError::StillMounted`] if mountinfo still shows a mount.
    fn unmount_all_at_or_below(&self, path: &Path, opts: &UnmountOptions) -> Result<Vec<PathBuf>>;

    /// Detaches every mount strictly below `root` (deepest first) without trusting any path
    /// component under `root`: each mount point from mountinfo is re-opened confined to `root`
    /// with symlinks refused, its mount id must be the one mountinfo listed, and the detach
    /// (`MNT_DETACH`) goes through that descriptor, so a concurrent rename or symlink swap by a
    /// process still running in the container can never redirect it to another mount. Paths
    /// that moved are picked up again from a fresh mountinfo read (a bounded number of rounds).
    ///
    /// [`Mounter::unmount`] and [`Mounter::unmount_all_at_or_below`] take host paths the
    /// caller controls: `umount2` never follows a symlink in the last component, but does in
    /// the ones before it. Use this method for trees that untrusted processes can modify.
    ///
    /// # Errors
    /// [`MountError::StillMounted`] when mounts remain after the last round, resolution and
    /// [`MountError::Syscall`] errors.
    fn detach_all_in_root(&self, root: &Path) -> Result<Vec<PathBuf>>;

    /// The current mount table (of the calling thread's namespace).
    ///
    /// # Errors
    /// [`MountError::MountInfoRead`], [`MountError::MountInfoParse`].
    fn mount_table(&self) -> Result<MountTable>;
}

/// Most mounts stacked at one mount point that `unmount_in_root` takes down.
const MAX_STACK: usize = 16;

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// The mount engine over a [`Sys`].
#[derive(Debug)]
pub struct Engine<S: Sys = LinuxSys> {
    sys: S,
    /// Whether `mount_setattr` works (probed on first use).
    setattr: AtomicU8,
    /// Whether `open_tree`/`move_mount` work (probed on first use).
    new_api: AtomicU8,
    resolver: Resolver,
}

/// The real mount engine.
pub type LinuxMounter = Engine<LinuxSys>;

/// Where an unmount acts: `target` for `umount2`, `stat_path` (relative to `dirfd` when set)
/// for mount ids, `shown` (the host path) for errors, logs and mountinfo.
struct At<'a> {
    target: &'a Path,
    dirfd: Option<std::os::fd::BorrowedFd<'a>>,
    stat_path: &'a Path,
    shown: &'a Path,
}

impl Default for Engine<LinuxSys> {
    fn default() -> Self {
        Self::with_sys(LinuxSys)
    }
}

impl Engine<LinuxSys> {
    /// The real engine, probing the kernel's features on first use.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

fn syscall(op: Op, source: Option<&Path>, target: &Path, errno: Errno) -> MountError {
    MountError::Syscall {
        op,
        source_path: source.map(Path::to_path_buf),
        target: target.to_path_buf(),
        errno,
    }
}

/// `MS_*` flags for the per-mount options an entry already has, so a bind remount keeps them.
fn existing_flags(e: &crate::MountEntry<'_>) -> MsFlags {
    let mut f = MsFlags::empty();
    for (opt, flag) in [
        ("ro", MsFlags::MS_RDONLY),
        ("nosuid", MsFlags::MS_NOSUID),
        ("nodev", MsFlags::MS_NODEV),
        ("noexec", MsFlags::MS_NOEXEC),
        ("noatime", MsFlags::MS_NOATIME),
        ("nodiratime", MsFlags::MS_NODIRATIME),
        ("relatime", MsFlags::MS_RELATIME),
        ("strictatime", MsFlags::MS_STRICTATIME),
    ] {
        if e.has_mount_option(opt) {
            f |= flag;
        }
    }
    f
}

fn valid_fstype(fstype: &str) -> bool {
    !fstype.is_empty()
        && fstype.len() <= 64
        && fstype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl<S: Sys> Engine<S> {
    /// An engine over any [`Sys`] (the fake in unit tests).
    pub fn with_sys(sys: S) -> Self {
        Engine {
            sys,
            setattr: AtomicU8::new(UNKNOWN),
            new_api: AtomicU8::new(UNKNOWN),
            resolver: Resolver::default(),
        }
    }

    /// Uses only the pre-5.2 code paths: no `mount_setattr` (read-only by remounting every
    /// submount), no `open_tree`/`move_mount` (bind on the resolved fd through
    /// `/proc/thread-self/fd`, then re-resolution and a mount-id check), no `openat2` (a
    /// checked component walk). For tests of those fallbacks on new kernels.
    #[must_use]
    pub fn legacy_only(mut self) -> Self {
        self.setattr = AtomicU8::new(NO);
        self.new_api = AtomicU8::new(NO);
        self.resolver.force_walk = true;
        self
    }

    /// How container paths are resolved (default: symlinks confined to the root).
    #[must_use]
    pub fn with_resolve_mode(mut self, mode: ResolveMode) -> Self {
        self.resolver.mode = mode;
        self
    }

    /// The system calls.
    pub fn sys(&self) -> &S {
        &self.sys
    }

    /// Remounts each mount at (and below, when `recursive`) `target` with `attrs` added: the
    /// fallback of `mount_setattr(AT_RECURSIVE)`.
    fn remount_each(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> Result<()> {
        let table = self.sys.mount_table()?;
        let mut points: Vec<(PathBuf, MsFlags)> = Vec::new();
        let entries: Vec<_> = if recursive {
            table.mounts_at_or_below(target).collect()
        } else {
            table.top_mount_at(target).into_iter().collect()
        };
        for e in entries {
            let flags = existing_flags(&e);
            // Only the top of a stack is reachable by path; it comes last in path order.
            if let Some(last) = points.last_mut()
                && last.0 == e.mount_point()
            {
                *last = (e.mount_point().to_path_buf(), flags);
                continue;
            }
            points.push((e.mount_point().to_path_buf(), flags));
        }
        if points.is_empty() {
            return Err(syscall(Op::Remount, None, target, Errno::EINVAL));
        }
        for (mp, flags) in points {
            let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags | attrs.ms_flags();
            self.sys
                .mount(None, &mp, None, flags, None)
                .map_err(|errno| syscall(Op::Remount, None, &mp, errno))?;
        }
        Ok(())
    }

    /// The attributes and propagation steps of a bind, on a path.
    fn finish_by_path(&self, target: &Path, opts: &BindOptions) -> Result<()> {
        self.set_attrs(target, opts.attrs, opts.recursive)?;
        if let Some(p) = opts.propagation {
            self.set_propagation(target, p, opts.recursive)?;
        }
        Ok(())
    }

    fn rollback(&self, target: &Path) {
        if let Err(errno) = self
            .sys
            .umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
        {
            warn!(target = %target.display(), %errno, "rollback of a failed bind mount failed");
        }
    }

    /// `umount2` with `EBUSY` retries and the detach fallback; no verification.
    fn umount_retrying(&self, target: &Path, opts: &UnmountOptions) -> Result<Unmounted> {
        self.umount_retrying_as(target, target, opts)
    }

    /// [`Engine::umount_retrying`] on `target`, with `shown` (the mount point's host path) in
    /// errors, logs and mountinfo lookups: `target` may be a `/proc/thread-self/fd/N/name`
    /// path.
    fn umount_retrying_as(
        &self,
        target: &Path,
        shown: &Path,
        opts: &UnmountOptions,
    ) -> Result<Unmounted> {
        let mut attempts = 0u32;
        let mut pause = opts.initial_backoff;
        loop {
            attempts += 1;
            match self.sys.umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => return Ok(Unmounted::Unmounted { attempts }),
                Err(errno @ (Errno::EINVAL | Errno::ENOENT)) => {
                    // EINVAL: "not a mount point" (or a bad flag); mountinfo decides.
                    let table = self.sys.mount_table()?;
                    if table.is_mount_point(shown) {
                        return Err(syscall(Op::Unmount, None, shown, errno));
                    }
                    return Ok(Unmounted::NotMounted);
                }
                Err(Errno::EBUSY) if attempts <= opts.busy_retries => {
                    debug!(target = %shown.display(), attempts, ?pause, "unmount: EBUSY, retrying");
                    self.sys.sleep(pause);
                    pause = (pause * 2).min(opts.max_backoff);
                }
                Err(Errno::EBUSY) if opts.detach_fallback => {
                    warn!(target = %shown.display(), attempts, "unmount: still busy, detaching lazily");
                    return self
                        .sys
                        .umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                        .map(|()| Unmounted::Detached { attempts })
                        .map_err(|errno| syscall(Op::Detach, None, shown, errno));
                }
                Err(Errno::EBUSY) => {
                    return Err(MountError::Busy {
                        target: shown.to_path_buf(),
                        attempts,
                    });
                }
                Err(errno) => return Err(syscall(Op::Unmount, None, shown, errno)),
            }
        }
    }

    fn verify_gone_as(&self, at: &At<'_>, mount_id: u64, verify: Verify) -> Result<()> {
        let still = |mount_id| MountError::StillMounted {
            target: at.shown.to_path_buf(),
            mount_id,
        };
        if verify == Verify::MountId {
            match self.sys.stat_mount(at.dirfd, at.stat_path) {
                Ok(st) if st.is_mount_root && st.mount_id == mount_id => {
                    return Err(still(mount_id));
                }
                Ok(_) | Err(Errno::ENOENT) => return Ok(()),
                Err(Errno::ENOSYS) => {}
                Err(errno) => return Err(syscall(Op::MountId, None, at.shown, errno)),
            }
        }
        let table = self.sys.mount_table()?;
        if table.by_mount_id(mount_id).is_some() {
            return Err(still(mount_id));
        }
        Ok(())
    }

    /// Unmounts the top mount at `at` (verified by mount id), naming `at.shown` in errors.
    fn unmount_as(&self, at: &At<'_>, opts: &UnmountOptions) -> Result<Unmounted> {
        let before = match self.sys.stat_mount(at.dirfd, at.stat_path) {
            Ok(st) if !st.is_mount_root => return Ok(Unmounted::NotMounted),
            Ok(st) => st.mount_id,
            Err(Errno::ENOENT) => return Ok(Unmounted::NotMounted),
            Err(Errno::ENOSYS) => match self.sys.mount_table()?.top_mount_at(at.shown) {
                Some(e) => e.mount_id(),
                None => return Ok(Unmounted::NotMounted),
            },
            Err(errno) => return Err(syscall(Op::MountId, None, at.shown, errno)),
        };
        let outcome = self.umount_retrying_as(at.target, at.shown, opts)?;
        if outcome != Unmounted::NotMounted {
            self.verify_gone_as(at, before, opts.verify)?;
        }
        Ok(outcome)
    }

    fn bind_into_legacy(
        &self,
        source: &Path,
        root: &RootDir,
        path_in_root: &Path,
        target: &std::os::fd::OwnedFd,
        host: &Path,
        opts: &BindOptions,
    ) -> Result<PathBuf> {
        let fd_path = PathBuf::from(format!("/proc/thread-self/fd/{}", target.as_raw_fd()));
        let mut flags = MsFlags::MS_BIND;
        flags.set(MsFlags::MS_REC, opts.recursive);
        self.sys
            .mount(Some(source), &fd_path, None, flags, None)
            .map_err(|errno| syscall(Op::Bind, Some(source), host, errno))?;
        // The mount sits on the inode `target` refers to. Reopen the path (confined) and check
        // it leads to the new mount before touching anything by path.
        let lower = self
            .sys
            .stat_mount(Some(target.as_fd()), Path::new(""))
            .map_err(|errno| syscall(Op::MountId, None, host, errno))?;
        let now_host = crate::path::fd_path(target).unwrap_or_else(|_| host.to_path_buf());
        let reopened = match self.resolver.open_in(root, path_in_root) {
            Ok(fd) => fd,
            Err(e) => {
                self.rollback(&now_host);
                return Err(e);
            }
        };
        let top = self
            .sys
            .stat_mount(Some(reopened.as_fd()), Path::new(""))
            .map_err(|errno| syscall(Op::MountId, None, host, errno))?;
        let here = crate::path::fd_path(&reopened).unwrap_or_else(|_| host.to_path_buf());
        if !top.is_mount_root || top.mount_id == lower.mount_id || here != now_host {
            self.rollback(&now_host);
            return Err(MountError::Escape {
                root: root.path().to_path_buf(),
                path: path_in_root.to_path_buf(),
                reason: "the mount point was replaced while mounting",
            });
        }
        if let Err(e) = self.finish_by_path(&here, opts) {
            self.rollback(&here);
            return Err(e);
        }
        Ok(here)
    }
}

impl<S: Sys> Mounter for Engine<S> {
    fn bind(&self, source: &Path, target: &Path, opts: &BindOptions) -> Result<()> {
        let mut flags = MsFlags::MS_BIND;
        flags.set(MsFlags::MS_REC, opts.recursive);
        self.sys
            .mount(Some(source), target, None, flags, None)
            .map_err(|errno| syscall(Op::Bind, Some(source), target, errno))?;
        if let Err(e) = self.finish_by_path(target, opts) {
            self.rollback(target);
            return Err(e);
        }
        Ok(())
    }

    fn bind_into(
        &self,
        source: &Path,
        root: &Path,
        path_in_root: &Path,
        opts: &BindOptions,
    ) -> Result<PathBuf> {
        self.bind_into_dir(source, &RootDir::open(root)?, path_in_root, opts)
    }

    fn bind_into_dir(
        &self,
        source: &Path,
        root: &RootDir,
        path_in_root: &Path,
        opts: &BindOptions,
    ) -> Result<PathBuf> {
        let kind_of = |st: &nix::sys::stat::FileStat| {
            if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
                == nix::sys::stat::SFlag::S_IFDIR
            {
                Kind::Dir
            } else {
                Kind::File
            }
        };
        let stat_err = |errno| MountError::Fs {
            step: FsStep::Stat,
            root: PathBuf::from("/"),
            path: source.to_path_buf(),
            errno,
        };
        if self.new_api.load(Ordering::Relaxed) != NO {
            // The detached copy of the source first: its descriptor tells the source's kind
            // (no separate stat of the source by path), and dropping it on any error below
            // dissolves it.
            match self.sys.open_tree_clone(source, opts.recursive) {
                Ok(tree) => {
                    self.new_api.store(YES, Ordering::Relaxed);
                    let kind = kind_of(&nix::sys::stat::fstat(&tree).map_err(stat_err)?);
                    let (target, host) =
                        self.resolver
                            .prepare_mount_point_in_with_path(root, path_in_root, kind)?;
                    let attr = SetAttr {
                        set: opts.attrs.mount_attr_bits(),
                        clear: 0,
                        propagation: opts.propagation.map_or(0, |p| p.ms_flag().bits()),
                    };
                    if attr != SetAttr::default() {
                        let mut at = libc::AT_EMPTY_PATH as libc::c_uint;
                        if opts.recursive {
                            at |= libc::AT_RECURSIVE as libc::c_uint;
                        }
                        self.sys
                            .mount_setattr(Some(tree.as_fd()), Path::new(""), at, attr)
                            .map_err(|errno| syscall(Op::SetAttr, Some(source), &host, errno))?;
                    }
                    self.sys
                        .move_mount(tree.as_fd(), target.as_fd())
                        .map_err(|errno| syscall(Op::Bind, Some(source), &host, errno))?;
                    return Ok(host);
                }
                Err(Errno::ENOSYS) => self.new_api.store(NO, Ordering::Relaxed),
                // The source is missing or unreadable: the same error the stat gives below.
                Err(errno @ (Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES | Errno::ELOOP)) => {
                    return Err(stat_err(errno));
                }
                Err(errno) => {
                    return Err(syscall(
                        Op::Bind,
                        Some(source),
                        &root.path().join(path_in_root),
                        errno,
                    ));
                }
            }
        }
        let meta = std::fs::metadata(source)
            .map_err(|e| stat_err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
        let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
        let (target, host) =
            self.resolver
                .prepare_mount_point_in_with_path(root, path_in_root, kind)?;
        self.bind_into_legacy(source, root, path_in_root, &target, &host, opts)
    }

    fn mount_filesystem(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        data: Option<&str>,
    ) -> Result<()> {
        if !valid_fstype(fstype) {
            return Err(MountError::InvalidFsType {
                fstype: fstype.to_owned(),
            });
        }
        self.sys
            .mount(Some(source), target, Some(fstype), attrs.ms_flags(), data)
            .map_err(|errno| syscall(Op::MountFilesystem, Some(source), target, errno))
    }

    fn set_attrs(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> Result<()> {
        if attrs.is_empty() {
            return Ok(());
        }
        if self.setattr.load(Ordering::Relaxed) != NO {
            let mut at = libc::AT_SYMLINK_NOFOLLOW as libc::c_uint;
            if recursive {
                at |= libc::AT_RECURSIVE as libc::c_uint;
            }
            let attr = SetAttr {
                set: attrs.mount_attr_bits(),
                ..SetAttr::default()
            };
            match self.sys.mount_setattr(None, target, at, attr) {
                Ok(()) => {
                    self.setattr.store(YES, Ordering::Relaxed);
                    return Ok(());
                }
                Err(Errno::ENOSYS) => self.setattr.store(NO, Ordering::Relaxed),
                Err(errno) => return Err(syscall(Op::SetAttr, None, target, errno)),
            }
        }
        self.remount_each(target, attrs, recursive)
    }

    fn set_propagation(
        &self,
        target: &Path,
        propagation: Propagation,
        recursive: bool,
    ) -> Result<()> {
        let mut flags = propagation.ms_flag();
        flags.set(MsFlags::MS_REC, recursive);
        self.sys
            .mount(None, target, None, flags, None)
            .map_err(|errno| syscall(Op::Propagation, None, target, errno))
    }

    fn unmount(&self, target: &Path, opts: &UnmountOptions) -> Result<Unmounted> {
        self.unmount_as(
            &At {
                target,
                dirfd: None,
                stat_path: target,
                shown: target,
            },
            opts,
        )
    }

    fn unmount_in_root(
        &self,
        root: &RootDir,
        path_in_root: &Path,
        opts: &UnmountOptions,
    ) -> Result<Unmounted> {
        let comps = crate::path::components_in_root(root.path(), path_in_root)?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(Unmounted::NotMounted);
        };
        let mut shown = root.host_path()?.to_path_buf();
        shown.extend(&comps);
        // The parent, opened confined with every symlink refused; the root is its own parent.
        let parent = if parents.is_empty() {
            None
        } else {
            let plain = Resolver {
                mode: ResolveMode::NoSymlinks,
                force_walk: self.resolver.force_walk,
            };
            match plain.open_in(root, &parents.iter().collect::<PathBuf>()) {
                Ok(fd) => Some(fd),
                // No parent, no mount point.
                Err(MountError::Fs {
                    errno: Errno::ENOENT,
                    ..
                }) => return Ok(Unmounted::NotMounted),
                Err(e) => return Err(e),
            }
        };
        let dir = parent.as_ref().map_or(root.as_fd(), AsFd::as_fd);
        // The kernel follows the magic link to the very directory opened, then `name` with
        // UMOUNT_NOFOLLOW: nothing a process in the root does to the path can redirect it.
        let mut target = PathBuf::from(format!("/proc/thread-self/fd/{}", dir.as_raw_fd()));
        target.push(name);
        // Mount ids are read relative to the directory's descriptor (no walk through /proc).
        let at = At {
            target: &target,
            dirfd: Some(dir),
            stat_path: Path::new(name),
            shown: &shown,
        };
        // A stack at the mount point goes whole, top first (bounded).
        let mut outcome = Unmounted::NotMounted;
        for _ in 0..MAX_STACK {
            match self.unmount_as(&at, opts)? {
                Unmounted::NotMounted => return Ok(outcome),
                done => {
                    if outcome == Unmounted::NotMounted {
                        outcome = done;
                    }
                }
            }
        }
        Err(MountError::StillMounted {
            target: shown,
            mount_id: 0,
        })
    }

    fn unmount_all_at_or_below(&self, path: &Path, opts: &UnmountOptions) -> Result<Vec<PathBuf>> {
        let table = self.sys.mount_table()?;
        let order: Vec<PathBuf> = table
            .unmount_order(path)
            .iter()
            .map(|e| e.mount_point().to_path_buf())
            .collect();
        drop(table);
        let mut done = Vec::with_capacity(order.len());
        for mp in order {
            if self.umount_retrying(&mp, opts)? != Unmounted::NotMounted {
                done.push(mp);
            }
        }
        let after = self.sys.mount_table()?;
        if let Some(e) = after.mounts_at_or_below(path).next() {
            return Err(MountError::StillMounted {
                target: e.mount_point().to_path_buf(),
                mount_id: e.mount_id(),
            });
        }
        Ok(done)
    }

    fn detach_all_in_root(&self, root: &Path) -> Result<Vec<PathBuf>> {
        const ROUNDS: usize = 16;
        let resolver = Resolver {
            mode: ResolveMode::NoSymlinks,
            force_walk: self.resolver.force_walk,
        };
        let mut done = Vec::new();
        for _ in 0..ROUNDS {
            let table = self.sys.mount_table()?;
            let todo: Vec<(PathBuf, u64)> = table
                .unmount_order(root)
                .iter()
                .filter(|e| e.mount_point() != root)
                .map(|e| (e.mount_point().to_path_buf(), e.mount_id()))
                .collect();
            drop(table);
            if todo.is_empty() {
                return Ok(done);
            }
            for (mp, id) in todo {
                let Ok(rel) = mp.strip_prefix(root) else {
                    continue;
                };
                // Moved or swapped since the table was read: the next round sees where it is.
                let Ok(fd) = resolver.open(root, rel) else {
                    continue;
                };
                match self.sys.stat_mount(Some(fd.as_fd()), Path::new("")) {
                    Ok(st) if st.is_mount_root && st.mount_id == id => {}
                    Ok(_) => continue,
                    Err(errno) => return Err(syscall(Op::MountId, None, &mp, errno)),
                }
                let fd_path = PathBuf::from(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()));
                match self.sys.umount2(&fd_path, MntFlags::MNT_DETACH) {
                    Ok(()) => done.push(mp),
                    Err(Errno::EINVAL) => {}
                    Err(errno) => return Err(syscall(Op::Detach, None, &mp, errno)),
                }
            }
        }
        let table = self.sys.mount_table()?;
        match table
            .mounts_at_or_below(root)
            .find(|e| e.mount_point() != root)
        {
            Some(e) => Err(MountError::StillMounted {
                target: e.mount_point().to_path_buf(),
                mount_id: e.mount_id(),
            }),
            None => Ok(done),
        }
    }

    fn mount_table(&self) -> Result<MountTable> {
        self.sys.mount_table()
    }
}
