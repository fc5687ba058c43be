//! Paths that cannot escape: resolution of a container path inside a root, creation of mount
//! points, and removal that never crosses a mount.
//!
//! **Resolution** ([`Resolver::open`]) treats `root` as `/`: an absolute symlink inside it is
//! resolved against `root`, a `..` that would climb above `root` stays at `root` (the kernel's
//! `RESOLVE_IN_ROOT` semantics, as `chroot` would see it), magic links (`/proc/*/fd/*`) are
//! refused, and with [`ResolveMode::NoSymlinks`] any symlink is refused. `..` components in the
//! *given* path are refused outright (a container path has no business climbing). Where
//! `openat2(2)` exists (Linux ≥ 5.6) the kernel does the confinement; otherwise a checked walk
//! opens one component at a time with `O_NOFOLLOW`, reads symlinks itself and keeps `..` on the
//! stack of directories it opened, so it can never reach above `root`.
//!
//! Everything returns `O_PATH` file descriptors, not paths: the mount engine mounts on the
//! descriptor, so a directory swapped for a symlink after resolution cannot redirect a mount.
//!
//! **Removal** ([`remove_dir_all_checked`]) refuses when mountinfo shows anything mounted at or
//! below the directory, and while walking compares each directory's `st_dev` *and* mount id
//! with the top's, so it never crosses into a mount (even a bind mount of the same
//! filesystem, which `st_dev` alone misses): the hazard of Mesos's `os::rmdir` (MESOS-7366,
//! MESOS-8830, MESOS-9352). [`rmdir`] is the non-recursive removal of staging and target
//! directories.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::{FsStep, MountError, Result};
use crate::mountinfo::MountTable;
use crate::sys::{LinuxSys, Sys};

/// How symlinks met while resolving inside a root are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolveMode {
    /// Followed, confined to the root (absolute targets are relative to the root, `..` stops
    /// at the root): container semantics.
    #[default]
    InRoot,
    /// Refused: for host-side volume directories, which berth makes and never links.
    NoSymlinks,
}

/// What a mount point must be to match its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The source is a directory.
    Dir,
    /// The source is anything else (a file, a device node, a socket).
    File,
}

/// Most symlinks followed in one resolution (the kernel's limit).
const MAX_SYMLINKS: u32 = 40;

static OPENAT2: AtomicU8 = AtomicU8::new(0);
const YES: u8 = 1;
const NO: u8 = 2;

/// Resolves paths inside a root.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolver {
    /// Symlink treatment.
    pub mode: ResolveMode,
    /// Use the component walk even where `openat2` exists (to test the fallback).
    pub force_walk: bool,
}

fn fs_err(step: FsStep, root: &Path, path: &Path, errno: Errno) -> MountError {
    MountError::Fs {
        step,
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        errno,
    }
}

fn escape(root: &Path, path: &Path, reason: &'static str) -> MountError {
    MountError::Escape {
        root: root.to_path_buf(),
        path: path.to_path_buf(),
        reason,
    }
}

/// The host path a descriptor refers to now (`readlink /proc/thread-self/fd/N`).
///
/// # Errors
/// [`MountError::Fs`] (`ReadLink`).
pub fn fd_path(fd: &impl AsRawFd) -> Result<PathBuf> {
    let link = PathBuf::from(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()));
    std::fs::read_link(&link).map_err(|e| {
        fs_err(
            FsStep::ReadLink,
            Path::new("/"),
            &link,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    })
}

/// Splits a container path into its normal components: a leading `/` is relative to the
/// root, `.` and empty components are dropped, `..` and NUL are refused, and the root itself
/// is refused (nothing may be mounted over a whole root).
///
/// # Errors
/// [`MountError::Escape`], [`MountError::InvalidPath`].
pub fn components_in_root<'a>(root: &Path, path: &'a Path) -> Result<Vec<&'a OsStr>> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(MountError::InvalidPath {
            path: path.to_path_buf(),
            reason: "contains a NUL byte",
        });
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) => {
                return Err(MountError::InvalidPath {
                    path: path.to_path_buf(),
                    reason: "has a prefix",
                });
            }
            Component::ParentDir => return Err(escape(root, path, "contains a '..' component")),
            Component::Normal(n) => {
                if n.len() > 255 {
                    return Err(MountError::InvalidPath {
                        path: path.to_path_buf(),
                        reason: "a component is longer than 255 bytes",
                    });
                }
                out.push(n);
            }
        }
    }
    if out.is_empty() {
        return Err(MountError::InvalidPath {
            path: path.to_path_buf(),
            reason: "names the root itself",
        });
    }
    Ok(out)
}

fn open_root(root: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| fs_err(FsStep::OpenRoot, root, Path::new(""), errno))
}

/// A root opened once (`O_PATH`), for resolving several paths inside it: one open of the
/// root per operation instead of one per path. Resolution through it is confined to the
/// directory opened, even if `path` is renamed or replaced afterwards; hold it for one
/// operation only (a prepare, a cleanup), so a root recreated at the same path is seen.
#[derive(Debug)]
pub struct RootDir {
    path: PathBuf,
    fd: OwnedFd,
    /// (st_dev, st_ino) of the root, read on first need.
    id: std::sync::OnceLock<(u64, u64)>,
    /// Where the root's descriptor leads (symlinks in `path` resolved), read on first need.
    host: std::sync::OnceLock<PathBuf>,
}

impl AsFd for RootDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl RootDir {
    /// Opens `path` as a root.
    ///
    /// # Errors
    /// [`MountError::Fs`] (`OpenRoot`).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            fd: open_root(path)?,
            id: std::sync::OnceLock::new(),
            host: std::sync::OnceLock::new(),
        })
    }

    /// The path the root was opened at.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path the root's descriptor leads to (its path with symlinks resolved).
    ///
    /// # Errors
    /// As [`fd_path`].
    pub fn host_path(&self) -> Result<&Path> {
        if let Some(p) = self.host.get() {
            return Ok(p);
        }
        let p = fd_path(&self.fd)?;
        Ok(self.host.get_or_init(|| p))
    }

    fn id(&self) -> Result<(u64, u64)> {
        if let Some(id) = self.id.get() {
            return Ok(*id);
        }
        let st = fstat(&self.fd)
            .map_err(|errno| fs_err(FsStep::Stat, &self.path, Path::new(""), errno))?;
        #[allow(clippy::useless_conversion)] // st_dev and st_ino are u64 on x86_64, not everywhere
        let id = (u64::from(st.st_dev), u64::from(st.st_ino));
        Ok(*self.id.get_or_init(|| id))
    }
}

fn dup_dir(fd: &OwnedFd) -> nix::Result<OwnedFd> {
    openat(
        fd,
        ".",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_symlink(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

impl Resolver {
    /// Opens (`O_PATH`) `path` inside `root`, following symlinks per the mode.
    ///
    /// # Errors
    /// [`MountError::Escape`] for `..` components or a refused symlink, [`MountError::Fs`]
    /// otherwise (`ENOENT` when something is missing, `ELOOP` for symlink loops).
    pub fn open(&self, root: &Path, path: &Path) -> Result<OwnedFd> {
        self.open_in(&RootDir::open(root)?, path)
    }

    /// [`Resolver::open`] inside a root opened already.
    ///
    /// # Errors
    /// As [`Resolver::open`].
    pub fn open_in(&self, root: &RootDir, path: &Path) -> Result<OwnedFd> {
        let comps = components_in_root(&root.path, path)?;
        self.open_components(&root.fd, &comps)
            .map_err(|errno| self.map_errno(&root.path, path, errno))
    }

    fn map_errno(&self, root: &Path, path: &Path, errno: Errno) -> MountError {
        match (self.mode, errno) {
            (ResolveMode::NoSymlinks, Errno::ELOOP) => {
                escape(root, path, "a component is a symlink")
            }
            (_, Errno::EXDEV) => escape(root, path, "resolution left the root"),
            _ => fs_err(FsStep::Open, root, path, errno),
        }
    }

    fn open_components(&self, root_fd: &OwnedFd, comps: &[&OsStr]) -> nix::Result<OwnedFd> {
        self.open_components_as(root_fd, comps, self.mode)
    }

    fn open_components_as(
        &self,
        root_fd: &OwnedFd,
        comps: &[&OsStr],
        mode: ResolveMode,
    ) -> nix::Result<OwnedFd> {
        if !self.force_walk && OPENAT2.load(Ordering::Relaxed) != NO {
            let mut rel = Vec::new();
            for (i, c) in comps.iter().enumerate() {
                if i > 0 {
                    rel.push(b'/');
                }
                rel.extend_from_slice(c.as_bytes());
            }
            let rel = Path::new(OsStr::from_bytes(&rel));
            let mut resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
            if mode == ResolveMode::NoSymlinks {
                resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
            }
            let how = || {
                OpenHow::new()
                    .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                    .resolve(resolve)
            };
            // EAGAIN: a concurrent rename raced the kernel's `..` checks; retry a few times.
            let mut tries = 0;
            loop {
                match openat2(root_fd, rel, how()) {
                    Err(Errno::ENOSYS) => {
                        OPENAT2.store(NO, Ordering::Relaxed);
                        break;
                    }
                    Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                    r => {
                        OPENAT2.store(YES, Ordering::Relaxed);
                        return r;
                    }
                }
            }
        }
        walk(root_fd, comps, mode)
    }

    /// Opens `comps` with no symlink allowed on the way; on success the host path is the
    /// root's plus the components, known without asking the kernel. `None` when a symlink
    /// (or a missing component, if `missing_ok`) is in the way.
    fn open_plain(
        &self,
        root: &RootDir,
        path: &Path,
        comps: &[&OsStr],
        missing_ok: bool,
    ) -> Result<Option<(OwnedFd, PathBuf)>> {
        match self.open_components_as(&root.fd, comps, ResolveMode::NoSymlinks) {
            Ok(fd) => {
                let mut host = root.host_path()?.to_path_buf();
                host.extend(comps);
                Ok(Some((fd, host)))
            }
            Err(Errno::ELOOP) if self.mode == ResolveMode::InRoot => Ok(None),
            Err(Errno::ENOENT) if missing_ok => Ok(None),
            Err(errno) => Err(self.map_errno(&root.path, path, errno)),
        }
    }

    /// [`Resolver::open_in`], also giving the host path the descriptor leads to (as
    /// [`fd_path`] would). Without a symlink on the way (the common case) that path costs no
    /// system call: it is the root's host path plus the components.
    ///
    /// # Errors
    /// As [`Resolver::open`], plus [`fd_path`]'s.
    pub fn open_in_with_path(&self, root: &RootDir, path: &Path) -> Result<(OwnedFd, PathBuf)> {
        let comps = components_in_root(&root.path, path)?;
        if let Some(found) = self.open_plain(root, path, &comps, false)? {
            return Ok(found);
        }
        let fd = self
            .open_components(&root.fd, &comps)
            .map_err(|errno| self.map_errno(&root.path, path, errno))?;
        let host = fd_path(&fd)?;
        Ok((fd, host))
    }

    /// [`Resolver::prepare_mount_point_in`], also giving the mount point's host path (as
    /// [`Resolver::open_in_with_path`]).
    ///
    /// # Errors
    /// As [`Resolver::prepare_mount_point`], plus [`fd_path`]'s.
    pub fn prepare_mount_point_in_with_path(
        &self,
        root: &RootDir,
        path: &Path,
        kind: Kind,
    ) -> Result<(OwnedFd, PathBuf)> {
        let comps = components_in_root(&root.path, path)?;
        if let Some((fd, host)) = self.open_plain(root, path, &comps, true)? {
            let shown = comps.iter().collect::<PathBuf>();
            let st = fstat(&fd).map_err(|errno| fs_err(FsStep::Stat, &root.path, &shown, errno))?;
            return Ok((check_mount_point(root, path, &shown, fd, &st, kind)?, host));
        }
        let fd = self.prepare_mount_point_in(root, path, kind)?;
        let host = fd_path(&fd)?;
        Ok((fd, host))
    }

    /// Resolves `path` inside `root` and makes sure it exists as a mount point of `kind`:
    /// missing directories are created (mode 0755) one component at a time, each under a
    /// parent opened confined to the root; the last component is created as a directory or
    /// an empty file (0644). An existing mount point must already be of the right kind.
    ///
    /// # Errors
    /// As [`Resolver::open`], plus [`MountError::KindMismatch`] and creation errors.
    pub fn prepare_mount_point(&self, root: &Path, path: &Path, kind: Kind) -> Result<OwnedFd> {
        self.prepare_mount_point_in(&RootDir::open(root)?, path, kind)
    }

    /// [`Resolver::prepare_mount_point`] inside a root opened already.
    ///
    /// # Errors
    /// As [`Resolver::prepare_mount_point`].
    pub fn prepare_mount_point_in(
        &self,
        root_dir: &RootDir,
        path: &Path,
        kind: Kind,
    ) -> Result<OwnedFd> {
        let root = root_dir.path();
        let root_fd = &root_dir.fd;
        let comps = components_in_root(root, path)?;
        let n = comps.len();
        for i in 1..=n {
            let prefix = comps.get(..i).unwrap_or(&[]);
            let shown = || prefix.iter().collect::<PathBuf>();
            let last = i == n;
            let fd = match self.open_components(root_fd, prefix) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    // The parent, opened confined; the root itself needs no new descriptor.
                    let opened = match prefix.get(..i - 1) {
                        Some(p) if !p.is_empty() => Some(
                            self.open_components(root_fd, p)
                                .map_err(|errno| self.map_errno(root, &shown(), errno))?,
                        ),
                        _ => None,
                    };
                    let parent = opened.as_ref().map_or(root_fd.as_fd(), AsFd::as_fd);
                    let name = prefix.last().copied().unwrap_or_default();
                    let created = if last && kind == Kind::File {
                        openat(
                            parent,
                            name,
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_WRONLY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map(drop)
                        .map_err(|e| (FsStep::CreateFile, e))
                    } else {
                        mkdirat(parent, name, Mode::from_bits_truncate(0o755))
                            .map_err(|e| (FsStep::Mkdir, e))
                    };
                    match created {
                        // EEXIST: a racing creator, or a dangling symlink (re-resolution
                        // below then fails with ENOENT and is reported).
                        Ok(()) | Err((_, Errno::EEXIST)) => {}
                        Err((step, errno)) => return Err(fs_err(step, root, &shown(), errno)),
                    }
                    self.open_components(root_fd, prefix).map_err(|errno| {
                        if errno == Errno::ENOENT {
                            escape(root, &shown(), "a dangling symlink is in the way")
                        } else {
                            self.map_errno(root, &shown(), errno)
                        }
                    })?
                }
                Err(errno) => return Err(self.map_errno(root, &shown(), errno)),
            };
            let st = fstat(&fd).map_err(|errno| fs_err(FsStep::Stat, root, &shown(), errno))?;
            if !last {
                if !is_dir(&st) {
                    return Err(fs_err(FsStep::Open, root, &shown(), Errno::ENOTDIR));
                }
                continue;
            }
            return check_mount_point(root_dir, path, &shown(), fd, &st, kind);
        }
        Err(MountError::InvalidPath {
            path: path.to_path_buf(),
            reason: "names the root itself",
        })
    }
}

/// The last step of preparing a mount point: it is not the root itself, and it is of `kind`.
fn check_mount_point(
    root: &RootDir,
    path: &Path,
    shown: &Path,
    fd: OwnedFd,
    st: &FileStat,
    kind: Kind,
) -> Result<OwnedFd> {
    #[allow(clippy::useless_conversion)] // as in RootDir::id
    if (u64::from(st.st_dev), u64::from(st.st_ino)) == root.id()? {
        return Err(escape(&root.path, path, "resolves to the root itself"));
    }
    match (kind, is_dir(st)) {
        (Kind::Dir, true) | (Kind::File, false) => Ok(fd),
        (Kind::Dir, false) => Err(MountError::KindMismatch {
            path: shown.to_path_buf(),
            expected: "directory",
            found: "file",
        }),
        (Kind::File, true) => Err(MountError::KindMismatch {
            path: shown.to_path_buf(),
            expected: "file",
            found: "directory",
        }),
    }
}

/// The checked component walk: `O_NOFOLLOW` opens, symlinks read and re-rooted by hand, `..`
/// popped from the stack of directories opened (never above the root).
fn walk(root_fd: &OwnedFd, comps: &[&OsStr], mode: ResolveMode) -> nix::Result<OwnedFd> {
    let mut todo: VecDeque<OsString> = comps.iter().map(|c| (*c).to_owned()).collect();
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut cur = dup_dir(root_fd)?;
    let mut links = 0u32;
    while let Some(c) = todo.pop_front() {
        let b = c.as_bytes();
        if b.is_empty() || b == b"." {
            continue;
        }
        if b == b".." {
            if let Some(parent) = stack.pop() {
                cur = parent;
            }
            continue;
        }
        let fd = openat(
            &cur,
            c.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(&fd)?;
        if is_symlink(&st) {
            if mode == ResolveMode::NoSymlinks {
                return Err(Errno::ELOOP);
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Errno::ELOOP);
            }
            let target = readlinkat(&fd, "")?;
            let tb = target.as_bytes();
            if tb.is_empty() {
                return Err(Errno::ENOENT);
            }
            if tb.first() == Some(&b'/') {
                stack.clear();
                cur = dup_dir(root_fd)?;
            }
            for part in tb.rsplit(|&x| x == b'/') {
                todo.push_front(OsStr::from_bytes(part).to_owned());
            }
            continue;
        }
        if todo.iter().all(|c| c.is_empty() || c.as_bytes() == b".") {
            return Ok(fd);
        }
        if !is_dir(&st) {
            return Err(Errno::ENOTDIR);
        }
        stack.push(std::mem::replace(&mut cur, fd));
    }
    Ok(cur)
}

/// Removes directory `path` and everything in it, but only if nothing is mounted at or below
/// it (checked in mountinfo first) and without ever crossing into another mount while
/// walking (each directory's `st_dev` and mount id must match the top's; symlinks are removed,
/// never followed). A missing `path` is success.
///
/// # Errors
/// [`MountError::MountedBelow`], [`MountError::Fs`], mountinfo errors.
pub fn remove_dir_all_checked(path: &Path) -> Result<()> {
    let table = MountTable::read_current()?;
    if let Some(e) = table.mounts_at_or_below(path).next() {
        return Err(MountError::MountedBelow {
            path: path.to_path_buf(),
            mount_point: e.mount_point().to_path_buf(),
        });
    }
    drop(table);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(MountError::InvalidPath {
            path: path.to_path_buf(),
            reason: "has no parent",
        });
    };
    let root = Path::new("/");
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let parent_fd = nix::fcntl::open(
        parent,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| fs_err(FsStep::Open, root, parent, errno))?;
    let top = match openat(&parent_fd, name, dir_flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(errno) => return Err(fs_err(FsStep::Open, root, path, errno)),
    };
    let st = fstat(&top).map_err(|errno| fs_err(FsStep::Stat, root, path, errno))?;
    let mnt = LinuxSys
        .stat_mount(Some(top.as_fd()), Path::new(""))
        .ok()
        .map(|s| s.mount_id);
    remove_contents(&top, path, st.st_dev, mnt)?;
    unlinkat(&parent_fd, name, UnlinkatFlags::RemoveDir)
        .map_err(|errno| fs_err(FsStep::Rmdir, root, path, errno))
}

/// A directory on the way down, while its contents are removed.
struct Level {
    /// Its inode (the device is the top's), to check that `..` leads back to it.
    ino: u64,
    /// Its name in its parent (empty for the top).
    name: OsString,
    /// Its shown path, for errors.
    shown: PathBuf,
    /// Subdirectories still to descend into.
    pending: Vec<OsString>,
}

/// Lists `dir`'s entries, unlinks every non-directory at once and returns the names of its
/// subdirectories.
fn clear_files(dir: &OwnedFd, shown: &Path) -> Result<Vec<OsString>> {
    let root = Path::new("/");
    let listing = nix::dir::Dir::from_fd(
        dup_dir_rd(dir).map_err(|errno| fs_err(FsStep::ReadDir, root, shown, errno))?,
    )
    .map_err(|errno| fs_err(FsStep::ReadDir, root, shown, errno))?;
    let mut names: Vec<OsString> = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|errno| fs_err(FsStep::ReadDir, root, shown, errno))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    let mut dirs = Vec::new();
    for name in names {
        let st = fstatat(
            dir,
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| fs_err(FsStep::Stat, root, &shown.join(&name), errno))?;
        if is_dir(&st) {
            dirs.push(name);
        } else {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|errno| fs_err(FsStep::Unlink, root, &shown.join(&name), errno))?;
        }
    }
    // Descend in listing order (the stack pops from the end).
    dirs.reverse();
    Ok(dirs)
}

/// Removes everything inside `top` without recursion and with two descriptors at most (the
/// top and the current directory), however deep the tree: the walk goes down by `openat` of
/// a child and back up by `..`, checking that `..` is the directory it came from (same
/// inode), so a tree moved under the walk stops it with an error instead of leading it
/// elsewhere. Every directory must be on `dev` and on the top's mount (`mnt`).
fn remove_contents(top: &OwnedFd, shown: &Path, dev: u64, mnt: Option<u64>) -> Result<()> {
    let root = Path::new("/");
    let top_st = fstat(top).map_err(|errno| fs_err(FsStep::Stat, root, shown, errno))?;
    let mut levels = vec![Level {
        ino: top_st.st_ino,
        name: OsString::new(),
        shown: shown.to_path_buf(),
        pending: clear_files(top, shown)?,
    }];
    // The current directory when below the top; `None` while at the top.
    let mut cur: Option<OwnedFd> = None;
    loop {
        let depth = levels.len();
        let Some(level) = levels.last_mut() else {
            return Ok(());
        };
        let here: &OwnedFd = cur.as_ref().unwrap_or(top);
        if let Some(name) = level.pending.pop() {
            let child = level.shown.join(&name);
            let crossed = || MountError::MountedBelow {
                path: shown.to_path_buf(),
                mount_point: child.clone(),
            };
            let sub = match openat(
                here,
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Gone meanwhile: nothing to remove.
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(fs_err(FsStep::Open, root, &child, errno)),
            };
            let sub_st = fstat(&sub).map_err(|errno| fs_err(FsStep::Stat, root, &child, errno))?;
            let sub_mnt = LinuxSys.stat_mount(Some(sub.as_fd()), Path::new("")).ok();
            if sub_st.st_dev != dev
                || sub_mnt.is_some_and(|s| s.is_mount_root || Some(s.mount_id) != mnt)
            {
                return Err(crossed());
            }
            let pending = clear_files(&sub, &child)?;
            levels.push(Level {
                ino: sub_st.st_ino,
                name,
                shown: child,
                pending,
            });
            cur = Some(sub);
            continue;
        }
        // This level is empty. At the top: done (the caller removes the top itself).
        if depth == 1 {
            return Ok(());
        }
        let done = levels
            .pop()
            .ok_or_else(|| fs_err(FsStep::Rmdir, root, shown, Errno::EINVAL))?;
        let parent_ino = levels.last().map_or(top_st.st_ino, |l| l.ino);
        let parent_shown = levels
            .last()
            .map_or_else(|| shown.to_path_buf(), |l| l.shown.clone());
        let parent = if depth == 2 {
            None
        } else {
            let fd = openat(
                cur.as_ref().unwrap_or(top),
                "..",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| fs_err(FsStep::Open, root, &parent_shown, errno))?;
            let st =
                fstat(&fd).map_err(|errno| fs_err(FsStep::Stat, root, &parent_shown, errno))?;
            if st.st_ino != parent_ino || st.st_dev != dev {
                // The tree was moved while it was being removed.
                return Err(fs_err(FsStep::Open, root, &parent_shown, Errno::ESTALE));
            }
            Some(fd)
        };
        cur = parent;
        unlinkat(
            cur.as_ref().unwrap_or(top),
            done.name.as_os_str(),
            UnlinkatFlags::RemoveDir,
        )
        .map_err(|errno| fs_err(FsStep::Rmdir, root, &done.shown, errno))?;
    }
}

fn dup_dir_rd(fd: &OwnedFd) -> nix::Result<OwnedFd> {
    openat(
        fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Removes one empty directory (never recursive). Returns `false` when it did not exist.
/// A mount point fails with `EBUSY`, a non-empty directory with `ENOTEMPTY`.
///
/// # Errors
/// [`MountError::Fs`] (`Rmdir`).
pub fn rmdir(path: &Path) -> Result<bool> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fs_err(
            FsStep::Rmdir,
            Path::new("/"),
            path,
            Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )),
    }
}
