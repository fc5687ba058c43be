//! Shared helpers of the privileged tier: root check (never a silent skip in CI), private
//! mount namespaces, tmpfs and loop-device filesystems.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_mount::loopdev::LoopDevice;
use berth_mount::{LinuxMounter, MountAttrs, MountTable, Mounter};

/// Whether this test may run. Not root: skip with a message, except in CI (`CI=true`), where
/// the privileged tier must run, so the test fails loudly.
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: the privileged tier needs root and CI=true: refusing to skip");
    }
    eprintln!("SKIPPED {test}: needs root (real mounts in a private mount namespace)");
    false
}

/// Runs `f` on a dedicated thread in a new private mount namespace; a panic in `f` fails the
/// test with its message.
pub fn in_ns<F: FnOnce() + Send>(f: F) {
    if let Err(e) = berth_mount::ns::in_private_mount_namespace(f) {
        panic!("{e}");
    }
}

pub fn mounter() -> LinuxMounter {
    LinuxMounter::new()
}

/// A canonical temporary directory (kept until the guard drops, after the namespace is gone).
pub fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("berth-mount-")
        .tempdir()
        .unwrap();
    let p = std::fs::canonicalize(t.path()).unwrap();
    (t, p)
}

pub fn mkdirs(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    p.to_path_buf()
}

pub fn tmpfs(at: &Path) {
    mkdirs(at);
    mounter()
        .mount_filesystem(
            Path::new("tmpfs"),
            at,
            "tmpfs",
            MountAttrs::default(),
            Some("size=8m"),
        )
        .unwrap();
}

pub fn table() -> MountTable {
    MountTable::read_current().unwrap()
}

/// Writes a file; returns the errno on failure.
pub fn write(p: &Path) -> Result<(), i32> {
    std::fs::write(p, b"x").map_err(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn assert_erofs(p: &Path) {
    assert_eq!(
        write(p),
        Err(libc::EROFS),
        "write to {} must fail with EROFS",
        p.display()
    );
}

/// A fixed mkfs program; missing is a failure (never a skip) as root or in CI.
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/install-test-deps.sh (e2fsprogs, xfsprogs)");
}

/// A filesystem image of `fstype` attached to a loop device. Images are sparse.
pub fn loop_fs(dir: &Path, fstype: &str) -> LoopDevice {
    let (program, size_mib, args): (&str, u64, &[&str]) = match fstype {
        "ext4" => ("mkfs.ext4", 16, &["-q", "-F"]),
        // mkfs.xfs refuses filesystems under 300 MiB.
        "xfs" => ("mkfs.xfs", 300, &["-q", "-f"]),
        other => panic!("no recipe for {other}"),
    };
    let image = dir.join(format!("{fstype}.img"));
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(size_mib * 1024 * 1024).unwrap();
    drop(f);
    let out = Command::new(tool(program))
        .args(args)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    LoopDevice::attach(&image, false).unwrap()
}
