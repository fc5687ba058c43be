//! The file-system side of the volume directories: durable checkpoint writes, directory
//! creation that never follows a symlink below the disk root, and removal of destroyed volumes
//! that never crosses a mount.
//!
//! A destroyed volume on a ROOT or PATH disk is first *detached*: renamed atomically out of
//! `volumes/roles` into `<root>/volumes/trash/roles/<role>/<id>.<unix seconds>` (or, with
//! `retain_destroyed_data`, into `<root>/volumes/retained/roles/<role>/<id>.<unix seconds>`),
//! so that a crash in the middle of a removal never leaves a half-deleted directory at a
//! volume's path; the trash entry is then removed with
//! [`berth_mount::path::remove_dir_all_checked`] (mountinfo checked first, `st_dev` and mount
//! id compared at every level, symlinks removed and never followed, two descriptors whatever
//! the depth). A MOUNT disk's volume is the mount root itself: its contents are moved into
//! `<root>/.berth-trash/<id>.<unix seconds>` (same filesystem, mode 0700) and removed from
//! there; the root stays, and the trash directory goes once empty. A removal that fails is a
//! leftover (see the `gc` module).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use super::error::{ResourcesError, Result, Step, errno, io};
use super::layout::{DiskKind, VolumeDir};

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Fsyncs directory `dir`.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    berth_mount::durable::fsync_dir(dir).map_err(|e| io(Step::SyncDir, dir, e))
}

/// Writes `bytes` to `path` atomically and durably ([`berth_mount::durable::write_atomic`]:
/// temp file, fsync, rename, fsync of the directory). On error `path` keeps its previous
/// content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    berth_mount::durable::write_atomic(path, bytes).map_err(|e| io(Step::WriteCheckpoint, path, e))
}

/// Creates `dir` (a trusted path: the work dir, a disk root) and its missing parents, fsyncing
/// each parent whose entries changed.
pub(crate) fn create_trusted_dir(dir: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        match std::fs::symlink_metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(d.to_owned()),
            Err(e) => return Err(io(Step::Stat, d, e)),
        }
        cur = d.parent();
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(Step::CreateDir, d, e)),
        }
        if let Some(p) = d.parent() {
            fsync_dir(p)?;
        }
    }
    Ok(())
}

fn open_trusted(dir: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| errno(Step::OpenDir, dir, e))
}

/// Walks `names` below the open directory `base` (shown as `shown`) without following
/// symlinks; missing directories are created (and their parent fsynced) when `create`,
/// otherwise `None` is returned. Returns the last directory and whether it was created.
fn walk(
    base: OwnedFd,
    shown: &Path,
    names: &[&str],
    create: bool,
) -> Result<Option<(OwnedFd, bool)>> {
    let mut cur = base;
    let mut path = shown.to_path_buf();
    let mut created = false;
    for name in names {
        path.push(name);
        created = false;
        let next = loop {
            match openat(&cur, *name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => break fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(&cur, *name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) => {
                            created = true;
                            fsync(&cur).map_err(|e| errno(Step::SyncDir, &path, e))?;
                        }
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(errno(Step::CreateDir, &path, e)),
                    }
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(ResourcesError::NotADirectory { path });
                }
                Err(e) => return Err(errno(Step::OpenDir, &path, e)),
            }
        };
        cur = next;
    }
    Ok(Some((cur, created)))
}

/// Creates a volume's directory durably (the root as a trusted path, everything below it
/// without following symlinks). Returns whether the volume directory itself was created.
pub(crate) fn create_volume_dir(dir: &VolumeDir) -> Result<bool> {
    let existed = std::fs::symlink_metadata(&dir.root).is_ok();
    create_trusted_dir(&dir.root)?;
    let rel = dir.relative();
    if rel.is_empty() {
        return Ok(!existed);
    }
    let root = open_trusted(&dir.root)?;
    Ok(walk(root, &dir.root, &rel, true)?.is_some_and(|(_, created)| created))
}

/// Gives the volume directory `dir` the group `gid` and mode `2770` (group rwx, setgid), without
/// following a symlink anywhere below the root; the owner is kept.
pub(crate) fn set_volume_group(dir: &VolumeDir, gid: u32) -> Result<()> {
    let rel = dir.relative();
    let fd = if rel.is_empty() {
        open_trusted(&dir.root)?
    } else {
        let root = open_trusted(&dir.root)?;
        walk(root, &dir.root, &rel, false)?
            .map(|(fd, _)| fd)
            .ok_or_else(|| {
                io(
                    Step::OpenDir,
                    &dir.path,
                    std::io::ErrorKind::NotFound.into(),
                )
            })?
    };
    nix::unistd::fchown(&fd, None, Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(|e| errno(Step::Chown, &dir.path, e))?;
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o2770))
        .map_err(|e| errno(Step::Chown, &dir.path, e))
}

/// Refuses, before anything is written, a volume path whose existing components below the
/// root include a symlink or a non-directory.
pub(crate) fn check_creatable(dir: &VolumeDir) -> Result<()> {
    let rel = dir.relative();
    if rel.is_empty() {
        return Ok(());
    }
    let Ok(root) = open_trusted(&dir.root) else {
        // A missing root is created by the sync.
        return Ok(());
    };
    walk(root, &dir.root, &rel, false).map(drop)
}

/// The root with symlinks resolved (mountinfo shows real paths), when it exists.
fn real_root(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// The volume directory as mountinfo would show it.
pub(crate) fn real_path(dir: &VolumeDir) -> PathBuf {
    let mut p = real_root(&dir.root);
    for c in dir.relative() {
        p.push(c);
    }
    p
}

/// Refuses when anything is mounted inside the volume (for a MOUNT disk: strictly below its
/// root, which is itself usually a mount point).
pub(crate) fn check_no_mounts(dir: &VolumeDir, table: &berth_mount::MountTable) -> Result<()> {
    let real = real_path(dir);
    let found = table
        .mounts_at_or_below(&real)
        .find(|m| dir.kind != DiskKind::Mount || m.mount_point() != real.as_path());
    match found {
        Some(m) => Err(ResourcesError::MountedInside {
            id: dir.id.clone(),
            path: dir.path.clone(),
            mount_point: m.mount_point().to_path_buf(),
        }),
        None => Ok(()),
    }
}

fn read_table(dir: &VolumeDir) -> Result<berth_mount::MountTable> {
    berth_mount::MountTable::read_current().map_err(|source| ResourcesError::Mount {
        id: dir.id.clone(),
        path: dir.path.clone(),
        source,
    })
}

fn is_dir(st: &nix::sys::stat::FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn removal(id: &str, path: &Path, source: berth_mount::MountError) -> ResourcesError {
    match source {
        berth_mount::MountError::MountedBelow { mount_point, .. } => {
            ResourcesError::MountedInside {
                id: id.to_owned(),
                path: path.to_path_buf(),
                mount_point,
            }
        }
        source => ResourcesError::Mount {
            id: id.to_owned(),
            path: path.to_path_buf(),
            source,
        },
    }
}

/// Removes the entry `name` of the open directory `parent` (shown as `shown`): a directory
/// with the checked removal, anything else (a symlink included) with `unlink`. Missing is
/// success. Returns whether something was removed.
fn remove_entry(id: &str, parent: &OwnedFd, shown: &Path, name: &OsStr) -> Result<bool> {
    let path = shown.join(name);
    let st = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(errno(Step::Stat, &path, e)),
    };
    if is_dir(&st) {
        berth_mount::path::remove_dir_all_checked(&path).map_err(|e| removal(id, &path, e))?;
    } else {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno(Step::Remove, &path, e))?;
    }
    fsync(parent).map_err(|e| errno(Step::SyncDir, shown, e))?;
    Ok(true)
}

/// The trash components of a ROOT/PATH volume's parent directory.
fn trash_parent(dir: &VolumeDir) -> [&str; 4] {
    ["volumes", "trash", "roles", &dir.role_component]
}

/// The directory, inside a MOUNT disk's root, that takes a destroyed volume's contents while
/// they are removed (the root itself is the disk and stays).
pub(crate) const MOUNT_TRASH: &str = ".berth-trash";

/// The components below a disk root of the trash directory that takes `dir`'s data.
pub(crate) fn trash_components(dir: &VolumeDir) -> Vec<String> {
    match dir.kind {
        DiskKind::Mount => vec![MOUNT_TRASH.to_owned()],
        DiskKind::Root | DiskKind::Path => trash_parent(dir).map(str::to_owned).to_vec(),
    }
}

/// Whether `<root>/<components>/<name>` exists (not following symlinks anywhere below the
/// root).
pub(crate) fn exists_in(root: &Path, components: &[String], name: &str) -> Result<bool> {
    let real = real_root(root);
    let Ok(fd) = open_trusted(&real) else {
        return Ok(false);
    };
    let names: Vec<&str> = components.iter().map(String::as_str).collect();
    let Some((parent, _)) = walk(fd, &real, &names, false)? else {
        return Ok(false);
    };
    match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(errno(Step::Stat, real.join(name), e)),
    }
}

/// Removes the entry `<root>/<components>/<name>` (a directory with the checked removal, never
/// across a mount and never following a symlink; anything else unlinked), then, for a MOUNT
/// disk's trash, the trash directory when it is empty. Missing is success (`false`).
pub(crate) fn remove_in(root: &Path, components: &[String], name: &str, id: &str) -> Result<bool> {
    let real = real_root(root);
    let Ok(fd) = open_trusted(&real) else {
        return Ok(false);
    };
    let names: Vec<&str> = components.iter().map(String::as_str).collect();
    let Some((parent, _)) = walk(fd, &real, &names, false)? else {
        return Ok(false);
    };
    let mut shown = real.clone();
    for n in &names {
        shown.push(n);
    }
    let removed = remove_entry(id, &parent, &shown, OsStr::new(name))?;
    if names == [MOUNT_TRASH] {
        remove_if_empty(&real, MOUNT_TRASH)?;
    }
    Ok(removed)
}

/// Removes the empty directory `<real>/<name>`; a directory with entries stays.
fn remove_if_empty(real: &Path, name: &str) -> Result<()> {
    let fd = open_trusted(real)?;
    match unlinkat(&fd, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => fsync(&fd).map_err(|e| errno(Step::SyncDir, real, e)),
        Err(Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(Step::Remove, real.join(name), e)),
    }
}

/// Unlinks `<parent>/<name>` when it is there and not a directory (a symlink or file planted
/// inside a MOUNT disk's volume where its trash directory goes: never followed, and removing
/// it removes nothing but the volume's own entry).
fn unlink_non_dir(parent: &OwnedFd, shown: &Path, name: &str) -> Result<()> {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if !is_dir(&st) => {
            unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| errno(Step::Remove, shown.join(name), e))?;
            fsync(parent).map_err(|e| errno(Step::SyncDir, shown, e))
        }
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(Step::Stat, shown.join(name), e)),
    }
}

/// Creates the trash directory of `dir` (a MOUNT disk's with mode 0700) and returns a name
/// that is free in it: `<id>.<unix seconds>`, with `.<n>` appended when taken.
pub(crate) fn trash_name(dir: &VolumeDir) -> Result<String> {
    let components = trash_components(dir);
    let names: Vec<&str> = components.iter().map(String::as_str).collect();
    let real = real_root(&dir.root);
    let root = match open_trusted(&real) {
        Ok(fd) => fd,
        // No disk root: nothing to move; the name is never used.
        Err(_) => return Ok(format!("{}.0", dir.id)),
    };
    if dir.kind == DiskKind::Mount {
        unlink_non_dir(&root, &real, MOUNT_TRASH)?;
    }
    let Some((dest, created)) = walk(root, &real, &names, true)? else {
        return Err(ResourcesError::NotADirectory { path: real });
    };
    let mut shown = real;
    for n in &names {
        shown.push(n);
    }
    if created && dir.kind == DiskKind::Mount {
        nix::sys::stat::fchmod(&dest, Mode::from_bits_truncate(0o700))
            .map_err(|e| errno(Step::CreateDir, &shown, e))?;
    }
    free_name(&dest, &shown, &dir.id)
}

/// Moves `<root>/<from>/<name>` to `<root>/<to>/<dest_name>` (both directories must exist
/// and are never reached through a symlink; the destination directory is created when
/// missing): one `renameat` on the same filesystem, both directories fsynced. A directory with
/// anything mounted inside is refused ([`ResourcesError::MountedInside`]). Returns `false`
/// when nothing was at the source.
pub(crate) fn move_in(
    root: &Path,
    from: &[String],
    name: &str,
    to: &[String],
    dest_name: &str,
    id: &str,
) -> Result<bool> {
    let real = real_root(root);
    let Ok(fd) = open_trusted(&real) else {
        return Ok(false);
    };
    let from_names: Vec<&str> = from.iter().map(String::as_str).collect();
    let to_names: Vec<&str> = to.iter().map(String::as_str).collect();
    let dup = fd.try_clone().map_err(|e| io(Step::OpenDir, &real, e))?;
    let Some((parent, _)) = walk(dup, &real, &from_names, false)? else {
        return Ok(false);
    };
    let mut shown = real.clone();
    for n in &from_names {
        shown.push(n);
    }
    let path = shown.join(name);
    match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_dir(&st) => {
            let table = berth_mount::MountTable::read_current().map_err(|source| {
                ResourcesError::Mount {
                    id: id.to_owned(),
                    path: path.clone(),
                    source,
                }
            })?;
            let inside = table
                .mounts_at_or_below(&path)
                .next()
                .map(|m| m.mount_point().to_path_buf());
            if let Some(mount_point) = inside {
                return Err(ResourcesError::MountedInside {
                    id: id.to_owned(),
                    path,
                    mount_point,
                });
            }
        }
        Ok(_) => {}
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(errno(Step::Stat, &path, e)),
    }
    let Some((dest, _)) = walk(fd, &real, &to_names, true)? else {
        return Err(ResourcesError::NotADirectory { path: real });
    };
    let mut dest_shown = real;
    for n in &to_names {
        dest_shown.push(n);
    }
    renameat(&parent, name, &dest, dest_name).map_err(|e| errno(Step::Detach, &path, e))?;
    fsync(&dest).map_err(|e| errno(Step::SyncDir, &dest_shown, e))?;
    fsync(&parent).map_err(|e| errno(Step::SyncDir, &shown, e))?;
    Ok(true)
}

/// What [`detach`] did.
#[derive(Debug)]
pub(crate) enum Detached {
    /// Nothing was at the volume's path.
    Absent,
    /// A non-directory (e.g. a planted symlink) was at the path; it was unlinked.
    Unlinked,
    /// Moved to the trash (to be purged).
    Trashed,
    /// Moved to the retained area, at this path.
    Retained(PathBuf),
    /// A MOUNT disk's contents were moved into its trash directory (to be purged).
    Cleared,
    /// A MOUNT disk with `retain`: left as it is.
    KeptInPlace,
}

/// Takes a destroyed volume's directory away from its path: a rename into the trash (as
/// `trash_name`) or the retained area for ROOT/PATH disks, a move of the contents into the
/// disk's own trash directory (as `trash_name`) for MOUNT disks. Refuses when anything is
/// mounted inside.
pub(crate) fn detach(dir: &VolumeDir, retain: bool, trash_name: &str) -> Result<Detached> {
    if dir.kind == DiskKind::Mount {
        return clear_mount_root(dir, retain, trash_name);
    }
    let real = real_root(&dir.root);
    let root = match nix::fcntl::open(
        &real,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Detached::Absent),
        Err(e) => return Err(errno(Step::OpenDir, &real, e)),
    };
    let rel = dir.relative();
    let (parents, _) = rel.split_at(rel.len().saturating_sub(1));
    let mut shown = real.clone();
    for p in parents {
        shown.push(p);
    }
    let dup = root.try_clone().map_err(|e| io(Step::OpenDir, &real, e))?;
    let Some((parent, _)) = walk(dup, &real, parents, false)? else {
        return Ok(Detached::Absent);
    };
    let name = OsStr::new(&dir.id);
    let path = shown.join(name);
    let st = match fstatat(&parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Detached::Absent),
        Err(e) => return Err(errno(Step::Stat, &path, e)),
    };
    if !is_dir(&st) {
        unlinkat(&parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno(Step::Remove, &path, e))?;
        fsync(&parent).map_err(|e| errno(Step::SyncDir, &shown, e))?;
        return Ok(Detached::Unlinked);
    }
    check_no_mounts(dir, &read_table(dir)?)?;

    let (dest_names, dest_name) = if retain {
        (
            ["volumes", "retained", "roles", dir.role_component.as_str()],
            None,
        )
    } else {
        (trash_parent(dir), Some(trash_name.to_owned()))
    };
    let Some((dest, _)) = walk(root, &real, &dest_names, true)? else {
        return Err(ResourcesError::NotADirectory { path: real });
    };
    let mut dest_shown = real_root(&dir.root);
    for n in dest_names {
        dest_shown.push(n);
    }
    let dest_name = match dest_name {
        Some(n) => n,
        None => free_name(&dest, &dest_shown, &dir.id)?,
    };
    let dest_path = dest_shown.join(&dest_name);
    renameat(&parent, name, &dest, dest_name.as_str())
        .map_err(|e| errno(Step::Detach, &path, e))?;
    fsync(&dest).map_err(|e| errno(Step::SyncDir, &dest_shown, e))?;
    fsync(&parent).map_err(|e| errno(Step::SyncDir, &shown, e))?;
    Ok(if retain {
        Detached::Retained(dest_path)
    } else {
        Detached::Trashed
    })
}

/// `<id>.<unix seconds>`, with `.<n>` appended until the name is free in `dest`.
fn free_name(dest: &OwnedFd, shown: &Path, id: &str) -> Result<String> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{id}.{secs}");
    let mut candidate = base.clone();
    for n in 1u32.. {
        match fstatat(dest, candidate.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => return Ok(candidate),
            Ok(_) => candidate = format!("{base}.{n}"),
            Err(e) => return Err(errno(Step::Stat, shown.join(&candidate), e)),
        }
    }
    Err(errno(Step::Detach, shown.join(base), Errno::EEXIST))
}

/// A MOUNT disk's volume: move everything inside the root (never the root, never across a
/// mount, never the filesystem's `lost+found` or the trash itself) into
/// `<root>/.berth-trash/<trash_name>` on the same filesystem, each rename fsynced; with
/// `retain`, leave it as it is.
fn clear_mount_root(dir: &VolumeDir, retain: bool, trash_name: &str) -> Result<Detached> {
    if retain {
        return Ok(Detached::KeptInPlace);
    }
    let real = real_root(&dir.root);
    let root = match nix::fcntl::open(
        &real,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(Detached::Absent),
        Err(e) => return Err(errno(Step::OpenDir, &real, e)),
    };
    check_no_mounts(dir, &read_table(dir)?)?;
    let listing = std::fs::read_dir(&real).map_err(|e| io(Step::OpenDir, &real, e))?;
    let mut names = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| io(Step::OpenDir, &real, e))?;
        let name = entry.file_name();
        // ext4's lost+found belongs to the filesystem, not to the volume.
        if name.as_bytes() != b"lost+found" && name.as_bytes() != MOUNT_TRASH.as_bytes() {
            names.push(name);
        }
    }
    let trash_shown = real.join(MOUNT_TRASH);
    unlink_non_dir(&root, &real, MOUNT_TRASH)?;
    let dup = root.try_clone().map_err(|e| io(Step::OpenDir, &real, e))?;
    let Some((trash, _)) = walk(dup, &real, &[MOUNT_TRASH], true)? else {
        return Err(ResourcesError::NotADirectory { path: trash_shown });
    };
    let entry_shown = trash_shown.join(trash_name);
    match mkdirat(&trash, trash_name, Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(errno(Step::CreateDir, &entry_shown, e)),
    }
    fsync(&trash).map_err(|e| errno(Step::SyncDir, &trash_shown, e))?;
    let Some((entry, _)) = walk(trash, &trash_shown, &[trash_name], false)? else {
        return Err(ResourcesError::NotADirectory { path: entry_shown });
    };
    for name in &names {
        match renameat(&root, name.as_os_str(), &entry, name.as_os_str()) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(errno(Step::Detach, real.join(name), e)),
        }
    }
    fsync(&entry).map_err(|e| errno(Step::SyncDir, &entry_shown, e))?;
    fsync(&root).map_err(|e| errno(Step::SyncDir, &real, e))?;
    Ok(Detached::Cleared)
}
