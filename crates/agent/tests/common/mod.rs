//! Shared helpers of berth-agent's integration tests: root check (never a silent skip in CI),
//! private mount namespaces, canonical temporary directories and directory-tree snapshots.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use berth_testkit::privileged;

/// Runs `f` on a dedicated thread in a new private mount namespace; a panic in `f` fails the
/// test with its message.
pub fn in_ns<F: FnOnce() + Send>(f: F) {
    if let Err(e) = berth_mount::ns::in_private_mount_namespace(f) {
        panic!("{e}");
    }
}

/// A canonical temporary directory (kept until the guard drops).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("berth-agent-")
        .tempdir()
        .unwrap();
    let p = std::fs::canonicalize(t.path()).unwrap();
    (t, p)
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
