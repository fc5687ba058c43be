//! `remove_dir_all_checked` removes a 100,000-level directory chain (and a wide tree) with a
//! descriptor limit of 32: the walk holds two descriptors, not one per level, and does not
//! recurse. Its own test binary, since it lowers the process's descriptor limit.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, openat};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, mkdirat};

fn open_dir(at: &OwnedFd, name: &str) -> OwnedFd {
    openat(
        at,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

#[test]
fn a_100000_level_chain_and_a_wide_tree_go_with_32_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("volume");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "stays").unwrap();

    // A chain 100,000 directories deep, a file at every 1,000th level, made with *at calls
    // (its path is far longer than PATH_MAX).
    let mut cur = nix::fcntl::open(
        &victim,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    for level in 0..100_000 {
        mkdirat(&cur, "d", Mode::from_bits_truncate(0o755)).unwrap();
        cur = open_dir(&cur, "d");
        if level % 1000 == 0 {
            let f = openat(
                &cur,
                "f",
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            drop(f);
        }
    }
    drop(cur);
    // And a wide part: 200 directories of 20 files and a symlink out (removed, not followed).
    for i in 0..200 {
        let d = victim.join(format!("w{i}"));
        std::fs::create_dir(&d).unwrap();
        for j in 0..20 {
            std::fs::write(d.join(format!("f{j}")), b"x").unwrap();
        }
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), d.join("out")).unwrap();
    }

    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 32, hard).unwrap();
    let result = berth_mount::path::remove_dir_all_checked(&victim);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    result.unwrap();

    assert!(!victim.exists(), "the whole tree is gone");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("outside.txt")).unwrap(),
        "stays",
        "nothing outside the tree is touched"
    );
}
