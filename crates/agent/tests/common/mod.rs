//! Shared helpers of berth-agent's integration tests: root check (never a silent skip in CI),
//! private mount namespaces, canonical temporary directories, directory-tree snapshots, and the
//! recording fake as a kernel ([`FakeKernel`]) for the tests that need no root.

#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_mount::fake::RecordingMounter;
use berth_mount::mountinfo::MountTable;
use berth_mount::path::RootDir;
use berth_mount::{BindOptions, MountAttrs, MountError, Mounter, Op, Propagation};
use berth_mount::{UnmountOptions, Unmounted};

pub use berth_testkit::privileged;

/// Runs `f` on a dedicated thread in a new private mount namespace; a panic in `f` fails the
/// test with its message.
pub fn in_ns<F: FnOnce() + Send>(f: F) {
    if let Err(e) = berth_mount::ns::in_private_mount_namespace(f) {
        panic!("{e}");
    }
}

/// A temporary directory that lazily unmounts whatever is still mounted at or below it (in
/// the dropping thread's mount namespace), deepest first, before it is removed: a test that
/// leaves a mount behind must not leave the directory behind too.
pub struct TempDir {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let Ok(table) = berth_mount::MountTable::read_current() else {
            return;
        };
        let points: Vec<PathBuf> = table
            .mounts_at_or_below(&self.path)
            .map(|m| m.mount_point().to_owned())
            .collect();
        for p in points.iter().rev() {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// A canonical temporary directory (kept until the guard drops).
pub fn tempdir() -> (TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("berth-agent-")
        .tempdir()
        .unwrap();
    let p = std::fs::canonicalize(t.path()).unwrap();
    (
        TempDir {
            path: p.clone(),
            _dir: t,
        },
        p,
    )
}

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// Every entry below `root` (relative path → kind and content), without following symlinks.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in listing {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Symlink(std::fs::read_link(&path).unwrap()));
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                walk(root, &path, out);
            } else {
                out.insert(rel, Node::File(std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Entries of directory `dir` (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = listing
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The recording fake as a kernel: binds make their mount point (as the real engine does),
/// and a bind at a `boom` path fails.
pub struct FakeKernel(pub RecordingMounter);

impl Mounter for FakeKernel {
    fn bind(&self, source: &Path, target: &Path, opts: &BindOptions) -> berth_mount::Result<()> {
        self.0.bind(source, target, opts)
    }

    fn bind_into(
        &self,
        source: &Path,
        root: &Path,
        path_in_root: &Path,
        opts: &BindOptions,
    ) -> berth_mount::Result<PathBuf> {
        if path_in_root.ends_with("boom") {
            return Err(MountError::Syscall {
                op: Op::Bind,
                source_path: Some(source.to_path_buf()),
                target: root.join(path_in_root),
                errno: nix::errno::Errno::EIO,
            });
        }
        std::fs::create_dir_all(root.join(path_in_root)).unwrap();
        self.0.bind_into(source, root, path_in_root, opts)
    }

    fn mount_filesystem(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        data: Option<&str>,
    ) -> berth_mount::Result<()> {
        self.0.mount_filesystem(source, target, fstype, attrs, data)
    }

    fn set_attrs(
        &self,
        target: &Path,
        attrs: MountAttrs,
        recursive: bool,
    ) -> berth_mount::Result<()> {
        self.0.set_attrs(target, attrs, recursive)
    }

    fn set_propagation(
        &self,
        target: &Path,
        propagation: Propagation,
        recursive: bool,
    ) -> berth_mount::Result<()> {
        self.0.set_propagation(target, propagation, recursive)
    }

    fn unmount(&self, target: &Path, opts: &UnmountOptions) -> berth_mount::Result<Unmounted> {
        self.0.unmount(target, opts)
    }

    fn unmount_in_root(
        &self,
        root: &RootDir,
        path_in_root: &Path,
        opts: &UnmountOptions,
    ) -> berth_mount::Result<Unmounted> {
        self.0.unmount(&root.path().join(path_in_root), opts)
    }

    fn unmount_all_at_or_below(
        &self,
        path: &Path,
        opts: &UnmountOptions,
    ) -> berth_mount::Result<Vec<PathBuf>> {
        self.0.unmount_all_at_or_below(path, opts)
    }

    fn detach_all_in_root(&self, root: &Path) -> berth_mount::Result<Vec<PathBuf>> {
        self.0.detach_all_in_root(root)
    }

    fn mount_table(&self) -> berth_mount::Result<MountTable> {
        self.0.mount_table()
    }
}
