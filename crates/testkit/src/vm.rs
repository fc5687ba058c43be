//! Running a test or benchmark binary inside a VM whose kernel has what this one lacks
//! (project quotas: `CONFIG_XFS_QUOTA`, `CONFIG_QFMT_V2`), and making quota-enabled test
//! filesystems.
//!
//! The VM boots Debian's `linux-image-amd64` under qemu with virtme-ng
//! (`scripts/install-vm.sh` installs both, under `BERTH_VM_DIR`, default `/opt/berth-vm`),
//! without KVM, sharing the host's filesystem read-only except one writable directory. The
//! binary runs there as root with `BERTH_IN_VM=1`, after `modprobe loop xfs ext4 quota_v2`;
//! its output and exit status come back through the writable directory. One boot takes about
//! 35–70 s on two cores, so a binary batches all its cases into one boot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_mount::loopdev::LoopDevice;

const MIB: u64 = 1 << 20;

/// Whether this process runs inside the test VM.
#[must_use]
pub fn in_vm() -> bool {
    std::env::var_os("BERTH_IN_VM").is_some()
}

/// Whether a missing kernel feature or VM tool must fail instead of skipping: under
/// `CI=true` or `BERTH_REQUIRE_QUOTA=1`.
#[must_use]
pub fn quota_required() -> bool {
    std::env::var("BERTH_REQUIRE_QUOTA").is_ok_and(|v| v == "1")
        || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A fixed program from the system directories.
///
/// # Panics
/// Not found (run `scripts/install-test-deps.sh`).
#[must_use]
pub fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/install-test-deps.sh (e2fsprogs, xfsprogs)");
}

/// A sparse filesystem image of `fstype` (`xfs` or `ext4`) made for project quotas (ext4:
/// `-O quota,project -I 256`), attached to a loop device.
///
/// # Panics
/// mkfs or the loop device fails.
#[must_use]
pub fn quota_fs(dir: &Path, fstype: &str, size_mib: u64) -> LoopDevice {
    let (program, args): (&str, &[&str]) = match fstype {
        "ext4" => (
            "mkfs.ext4",
            &["-q", "-F", "-I", "256", "-O", "quota,project"],
        ),
        // mkfs.xfs refuses filesystems under 300 MiB.
        "xfs" => ("mkfs.xfs", &["-q", "-f"]),
        other => panic!("no recipe for {other}"),
    };
    let size = if fstype == "xfs" {
        size_mib.max(300)
    } else {
        size_mib
    };
    let image = dir.join(format!("{fstype}-quota.img"));
    std::fs::File::create(&image)
        .unwrap()
        .set_len(size * MIB)
        .unwrap();
    let out = Command::new(tool(program))
        .args(args)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    LoopDevice::attach(&image, false).unwrap()
}

/// Mounts `dev` at `target` with `prjquota`.
///
/// # Errors
/// The kernel's errno (`EINVAL` when it has no project quotas for `fstype`).
pub fn mount_prjquota(dev: &Path, target: &Path, fstype: &str) -> nix::Result<()> {
    nix::mount::mount(
        Some(dev),
        target,
        Some(fstype),
        nix::mount::MsFlags::empty(),
        Some("prjquota"),
    )
}

/// Whether this kernel mounts XFS and ext4 with `prjquota` (tried on loop devices in a
/// private mount namespace). `false` when not root.
#[must_use]
pub fn kernel_has_project_quotas() -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    ["xfs", "ext4"].iter().all(|fstype| {
        let dev = quota_fs(&d, fstype, 64);
        let target = d.join(format!("mnt-{fstype}"));
        std::fs::create_dir_all(&target).unwrap();
        let devp = dev.path().to_owned();
        let fs = (*fstype).to_owned();
        berth_mount::ns::in_private_mount_namespace(move || {
            mount_prjquota(&devp, &target, &fs).is_ok()
        })
        .unwrap()
    })
}

/// The newest Debian kernel image in `/boot`.
#[must_use]
pub fn kernel() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
        })
        .collect();
    found.sort();
    found.pop()
}

/// virtme-ng's `vng`, when installed.
#[must_use]
pub fn vng() -> Option<PathBuf> {
    let dir = std::env::var_os("BERTH_VM_DIR")
        .map_or_else(|| PathBuf::from("/opt/berth-vm"), PathBuf::from);
    let p = dir.join("bin/vng");
    p.is_file().then_some(p)
}

/// What a run in the VM printed and how it ended.
#[derive(Debug)]
pub struct VmRun {
    /// The binary's exit status as the VM's shell saw it (`"0"` on success; empty when it
    /// never ran).
    pub status: String,
    /// Its stdout and stderr.
    pub output: String,
    /// From the VM's start to its end.
    pub elapsed: Duration,
    /// The kernel booted.
    pub kernel: PathBuf,
    /// What `vng` itself printed on stderr.
    pub vng_stderr: String,
}

fn plain(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,".contains(&b))
}

/// Runs `exe args...` as root in the VM, with `BERTH_IN_VM=1` and `env` set; `None` when the
/// VM tools are missing.
///
/// # Panics
/// A word that the VM's shell line cannot carry as it is (only letters, digits and `/._-+=:,`
/// are passed), or `vng` cannot be started.
#[must_use]
pub fn run_in_vm(exe: &Path, args: &[&str], env: &[(&str, &str)]) -> Option<VmRun> {
    let (kernel, vng) = (kernel()?, vng()?);
    let out_dir = tempfile::tempdir().unwrap();
    let out = std::fs::canonicalize(out_dir.path()).unwrap();
    let exe_s = exe.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let mut words: Vec<String> = vec!["BERTH_IN_VM=1".into(), "TMPDIR=/tmp".into()];
    words.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    words.push(exe_s.to_owned());
    words.extend(args.iter().map(|a| (*a).to_owned()));
    for w in words.iter().chain([&out_s.to_owned()]) {
        assert!(plain(w), "{w:?} cannot be passed to the VM's command line");
    }
    // The VM's init runs this line with its shell; every word was checked above.
    let script = format!(
        "modprobe loop; modprobe xfs; modprobe ext4; modprobe quota_v2; \
         {} > {out_s}/output.txt 2>&1; echo $? > {out_s}/status",
        words.join(" ")
    );
    let started = Instant::now();
    let vm = Command::new(&vng)
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                vng.parent()
                    .map_or_else(String::new, |p| p.display().to_string())
            ),
        )
        .arg("--run")
        .arg(&kernel)
        .args(["--disable-kvm", "--memory", "2G", "--rwdir"])
        .arg(&out)
        .arg("--exec")
        .arg(&script)
        .output()
        .unwrap();
    Some(VmRun {
        status: std::fs::read_to_string(out.join("status"))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        output: std::fs::read_to_string(out.join("output.txt")).unwrap_or_default(),
        elapsed: started.elapsed(),
        kernel,
        vng_stderr: String::from_utf8_lossy(&vm.stderr).into_owned(),
    })
}

/// The variable that makes a quota tier's `writer_child` test write: `<file>:<bytes>`.
const WRITE_VAR: &str = "BERTH_QUOTA_WRITE";

/// The body of a quota tier's `writer_child` test, the child half of [`write_as_task`]:
/// with `BERTH_QUOTA_WRITE=<file>:<bytes>` set, appends that many bytes to the file in 1 MiB writes (each
/// `fdatasync`'d) and prints `WROTE <bytes written> <errno of the failed write, or 0>`;
/// without it, nothing.
///
/// # Panics
/// A malformed variable, or the file cannot be opened.
pub fn writer_child() {
    use std::io::Write as _;
    let Ok(spec) = std::env::var(WRITE_VAR) else {
        return;
    };
    let (path, bytes) = spec.rsplit_once(':').unwrap();
    let bytes: u64 = bytes.parse().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0x5a_u8; 1 << 20];
    let (mut written, mut errno) = (0, 0);
    while written < bytes {
        match f.write_all(&chunk).and_then(|()| f.sync_data()) {
            Ok(()) => written += MIB,
            Err(e) => {
                errno = e.raw_os_error().unwrap_or(-1);
                break;
            }
        }
    }
    println!("WROTE {written} {errno}");
}

/// Writes `bytes` to `file` as `uid`/`gid` `uid`, in a child process: the calling test binary
/// re-executed as its `writer_child` test (which calls [`writer_child`]), started by `run`
/// (e.g. in a mount namespace). Returns (bytes written, errno of the failed write or 0).
///
/// # Panics
/// The child does not report.
pub fn write_as_task(
    file: &Path,
    bytes: u64,
    uid: u32,
    run: impl FnOnce(Command) -> std::process::Output,
) -> (u64, i32) {
    use std::os::unix::process::CommandExt as _;
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
        .env(WRITE_VAR, format!("{}:{bytes}", file.display()))
        .uid(uid)
        .gid(uid);
    let out = run(c);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.split_once("WROTE ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("writer child said nothing: {out:?}"));
    let (n, errno) = line.split_once(' ').unwrap();
    (n.parse().unwrap(), errno.parse().unwrap())
}
