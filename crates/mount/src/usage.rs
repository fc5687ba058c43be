//! How much a directory tree or a filesystem holds, without project quotas: a `du` walk
//! ([`tree_usage`]) and `statvfs` ([`fs_usage`]).
//!
//! The walk is iterative, holds two descriptors at most whatever the depth (down by `openat`,
//! back up by `..` checked against the inode it came from, as the checked removal does),
//! never follows a symlink, never crosses into another filesystem or mount, and counts each
//! inode once (hard links) in allocated bytes (`st_blocks` × 512, as `du` does).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use crate::error::{FsStep, MountError, Result};
use crate::sys::{LinuxSys, Sys};

/// Bytes and inodes in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Allocated bytes.
    pub bytes: u64,
    /// Inodes (files, directories, symlinks, ...), each counted once.
    pub inodes: u64,
}

/// A filesystem's size and use, from `statvfs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Total bytes.
    pub total_bytes: u64,
    /// Bytes in use (total − free).
    pub used_bytes: u64,
    /// Inodes in use (total − free).
    pub used_inodes: u64,
}

fn fs_err(step: FsStep, path: &Path, errno: Errno) -> MountError {
    MountError::Fs {
        step,
        root: PathBuf::from("/"),
        path: path.to_path_buf(),
        errno,
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn allocated(st: &FileStat) -> u64 {
    u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512)
}

/// The filesystem holding `path`: its size, bytes and inodes in use.
///
/// # Errors
/// [`MountError::Fs`] (`Stat`) when `statvfs` fails.
pub fn fs_usage(path: &Path) -> Result<FsUsage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(|e| fs_err(FsStep::Stat, path, e))?;
    let frag = s.fragment_size();
    Ok(FsUsage {
        total_bytes: s.blocks().saturating_mul(frag),
        used_bytes: s
            .blocks()
            .saturating_sub(s.blocks_free())
            .saturating_mul(frag),
        used_inodes: s.files().saturating_sub(s.files_free()),
    })
}

struct Level {
    ino: u64,
    shown: PathBuf,
    pending: Vec<OsString>,
}

const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Counts the entries of `dir` (each inode once, through `seen`) and returns its
/// subdirectories on the same device.
fn count_entries(
    dir: &OwnedFd,
    shown: &Path,
    dev: u64,
    seen: &mut HashSet<u64>,
    usage: &mut Usage,
) -> Result<Vec<OsString>> {
    let fd = openat(dir, ".", DIR, Mode::empty()).map_err(|e| fs_err(FsStep::ReadDir, shown, e))?;
    let listing = nix::dir::Dir::from_fd(fd).map_err(|e| fs_err(FsStep::ReadDir, shown, e))?;
    let mut dirs = Vec::new();
    for entry in listing {
        let entry = entry.map_err(|e| fs_err(FsStep::ReadDir, shown, e))?;
        let n = entry.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        let name = OsStr::from_bytes(n).to_owned();
        let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we looked: it holds nothing now.
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(fs_err(FsStep::Stat, &shown.join(&name), e)),
        };
        if st.st_dev != dev {
            continue;
        }
        if is_dir(&st) {
            dirs.push(name);
        } else if seen.insert(st.st_ino) {
            usage.bytes = usage.bytes.saturating_add(allocated(&st));
            usage.inodes += 1;
        }
    }
    dirs.reverse();
    Ok(dirs)
}

/// What the tree at `dir` holds, counted as `du` does (module docs). Entries removed during
/// the walk are skipped; a tree moved under the walk stops it with `ESTALE`.
///
/// # Errors
/// [`MountError::Fs`] when a directory cannot be opened, listed or stat'ed.
pub fn tree_usage(dir: &Path) -> Result<Usage> {
    let top =
        nix::fcntl::open(dir, DIR, Mode::empty()).map_err(|e| fs_err(FsStep::Open, dir, e))?;
    let top_st = fstat(&top).map_err(|e| fs_err(FsStep::Stat, dir, e))?;
    let dev = top_st.st_dev;
    let mnt = LinuxSys
        .stat_mount(Some(top.as_fd()), Path::new(""))
        .ok()
        .map(|s| s.mount_id);
    let mut seen = HashSet::new();
    let mut usage = Usage {
        bytes: allocated(&top_st),
        inodes: 1,
    };
    let mut levels = vec![Level {
        ino: top_st.st_ino,
        shown: dir.to_path_buf(),
        pending: count_entries(&top, dir, dev, &mut seen, &mut usage)?,
    }];
    let mut cur: Option<OwnedFd> = None;
    while let Some(level) = levels.last_mut() {
        let here = cur.as_ref().unwrap_or(&top);
        if let Some(name) = level.pending.pop() {
            let child = level.shown.join(&name);
            let sub = match openat(here, name.as_os_str(), DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(fs_err(FsStep::Open, &child, e)),
            };
            let st = fstat(&sub).map_err(|e| fs_err(FsStep::Stat, &child, e))?;
            let sub_mnt = LinuxSys.stat_mount(Some(sub.as_fd()), Path::new("")).ok();
            if st.st_dev != dev
                || sub_mnt.is_some_and(|s| s.is_mount_root || Some(s.mount_id) != mnt)
            {
                continue; // another mount: not ours to count
            }
            usage.bytes = usage.bytes.saturating_add(allocated(&st));
            usage.inodes += 1;
            let pending = count_entries(&sub, &child, dev, &mut seen, &mut usage)?;
            levels.push(Level {
                ino: st.st_ino,
                shown: child,
                pending,
            });
            cur = Some(sub);
            continue;
        }
        levels.pop();
        let Some(parent) = levels.last() else { break };
        if levels.len() == 1 {
            cur = None;
            continue;
        }
        let fd = openat(here, "..", DIR, Mode::empty())
            .map_err(|e| fs_err(FsStep::Open, &parent.shown, e))?;
        let st = fstat(&fd).map_err(|e| fs_err(FsStep::Stat, &parent.shown, e))?;
        if st.st_ino != parent.ino || st.st_dev != dev {
            return Err(fs_err(FsStep::Open, &parent.shown, Errno::ESTALE));
        }
        cur = Some(fd);
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_inodes_once_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("a/b/c")).unwrap();
        std::fs::write(d.join("a/one"), vec![7_u8; 64 * 1024]).unwrap();
        std::fs::write(d.join("a/b/c/two"), vec![7_u8; 128 * 1024]).unwrap();
        std::fs::hard_link(d.join("a/one"), d.join("a/b/hardlink")).unwrap();
        // A symlink to a big file outside: counted as a link, its target is not.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1_u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), d.join("a/link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.join("a/dirlink")).unwrap();
        let u = tree_usage(d).unwrap();
        // top, a, b, c, one (= hardlink), two, link, dirlink
        assert_eq!(u.inodes, 8, "{u:?}");
        assert!(u.bytes >= 192 * 1024, "{u:?}");
        assert!(
            u.bytes < 192 * 1024 + (1 << 20),
            "the symlink's target is not counted: {u:?}"
        );
    }

    #[test]
    fn a_deep_chain_is_walked_without_recursion() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = dir.path().to_path_buf();
        for _ in 0..300 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("leaf"), b"x").unwrap();
        let u = tree_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 302);
    }

    #[test]
    fn missing_is_an_error_and_statvfs_reads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tree_usage(&dir.path().join("missing")).is_err());
        let f = fs_usage(dir.path()).unwrap();
        assert!(f.total_bytes > 0 && f.used_bytes <= f.total_bytes, "{f:?}");
    }
}
