//! Volume sizes enforced for real, through the binary: a work dir on XFS and on ext4 mounted
//! `prjquota`, a persistent volume created with `apply-operation` gets a project quota of its
//! size, a task writing past it stops there (ENOSPC on XFS, EDQUOT on ext4), GROW lets it
//! write more, a SHRINK below what it holds is refused, DESTROY gives the id back, `usage`
//! reports the kernel's count; and `kill -9` at every write-ahead point of CREATE, GROW,
//! SHRINK and DESTROY leaves, after the next command's recovery, every volume with its recorded id and
//! limit and no id shared or leaked.
//!
//! This machine's kernel has no project quotas: `vm_tier` runs the cases in one boot of
//! Debian's kernel under qemu (see `crates/mount/tests/quota.rs` and `berth_testkit::vm`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_mount::quota::{LinuxQuotas, Quotas};
use berth_testkit::Ns;
use berth_testkit::vm::{
    in_vm, kernel_has_project_quotas, mount_prjquota, quota_fs, quota_required as required,
    run_in_vm,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");

/// The binary to run: in the VM, a copy on the VM's own tmpfs (the build directory is shared
/// with the host over 9p, which costs seconds per start of a debug binary there).
fn bin() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        if !in_vm() {
            return PathBuf::from(BIN);
        }
        let copy = std::env::temp_dir().join("berth-isolator-vm");
        if !copy.exists() {
            std::fs::copy(BIN, &copy).unwrap();
        }
        copy
    })
    .clone()
}
const MIB: u64 = 1 << 20;
const TASK_UID: u32 = 65534;

fn may_run(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!required(), "{test}: needs root");
        eprintln!("SKIPPED {test}: needs root");
        return false;
    }
    if in_vm() || kernel_has_project_quotas() {
        return true;
    }
    eprintln!("SKIPPED {test} here: this kernel cannot mount prjquota; vm_tier runs it in a VM");
    false
}

/// The writer child: only acts when `BERTH_QUOTA_WRITE` names a file (the parent's
/// re-execution as the task user); a no-op otherwise.
#[test]
fn writer_child() {
    berth_testkit::vm::writer_child();
}

/// A work dir on a quota filesystem, in a private mount namespace.
struct World {
    _dir: tempfile::TempDir,
    _dev: berth_mount::loopdev::LoopDevice,
    ns: Ns,
    /// The temporary directory (outside the quota filesystem).
    root: PathBuf,
    /// On the quota filesystem, which only the namespace sees.
    work: PathBuf,
}

impl World {
    fn new(fstype: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        let dev = quota_fs(&d, fstype, 160);
        let mnt = d.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let ns = Ns::new();
        let (devp, m, fs) = (dev.path().to_owned(), mnt.clone(), fstype.to_owned());
        ns.run(move || mount_prjquota(&devp, &m, &fs).unwrap());
        World {
            _dir: dir,
            _dev: dev,
            ns,
            root: d,
            work: mnt.join("work"),
        }
    }

    fn cmd(&self, args: &[&str], kill_at: Option<usize>) -> Output {
        let mut c = Command::new(bin());
        c.arg(format!("--work-dir={}", self.work.display()))
            .arg("--resources=disk(db):120")
            .arg("--project-ids=300-309")
            .args(args);
        if let Some(n) = kill_at {
            c.env("BERTH_ISOLATOR_KILL_AT", n.to_string());
        }
        self.ns.output(c)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let out = self.cmd(args, None);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn op(&self, op: &Value) -> PathBuf {
        let p = self.root.join(format!(
            "op-{}.json",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&p, op.to_string()).unwrap();
        p
    }

    fn apply(&self, op: &Value) -> Output {
        let p = self.op(op);
        self.cmd(
            &["apply-operation", "--operation", p.to_str().unwrap()],
            None,
        )
    }

    fn usage(&self) -> Vec<Value> {
        self.ok(&["usage", "--json"])["volumes"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn project_of(&self, path: &Path) -> u32 {
        let p = path.to_owned();
        self.ns
            .run(move || LinuxQuotas::new().project_of(&p).unwrap())
    }

    fn record(&self) -> Value {
        let path = self.work.join("meta/resources/projects.json");
        let text = self.ns.run(move || std::fs::read(path).unwrap());
        serde_json::from_slice(&text).unwrap()
    }

    fn checkpoint(&self) -> Value {
        let path = self.work.join("meta/resources/resources.json");
        let text = self.ns.run(move || std::fs::read(path).unwrap());
        serde_json::from_slice(&text).unwrap()
    }

    /// Runs `f` on a path inside the namespace (where the quota filesystem is mounted).
    fn at<T: Send + 'static>(&self, path: &Path, f: impl FnOnce(&Path) -> T + Send + 'static) -> T {
        let p = path.to_owned();
        self.ns.run(move || f(&p))
    }

    /// Writes as the task user, in the namespace: (bytes written, errno).
    fn write_as_task(&self, file: &Path, bytes: u64) -> (u64, i32) {
        berth_testkit::vm::write_as_task(file, bytes, TASK_UID, |c| self.ns.output(c))
    }
}

fn volume(mb: u64, id: &str) -> Value {
    json!({"name": "disk", "type": "SCALAR", "scalar": {"value": mb},
           "reservations": [{"type": "STATIC", "role": "db"}],
           "disk": {"persistence": {"id": id, "principal": "p"},
                    "volume": {"mode": "RW", "container_path": "data"}}})
}

fn create(mb: u64, id: &str) -> Value {
    json!({"type": "CREATE", "create": {"volumes": [volume(mb, id)]}})
}

fn destroy(mb: u64, id: &str) -> Value {
    json!({"type": "DESTROY", "destroy": {"volumes": [volume(mb, id)]}})
}

fn grow(mb: u64, id: &str, by: u64) -> Value {
    json!({"type": "GROW_VOLUME", "grow_volume": {"volume": volume(mb, id),
           "addition": {"name": "disk", "type": "SCALAR", "scalar": {"value": by},
                        "reservations": [{"type": "STATIC", "role": "db"}]}}})
}

fn shrink(mb: u64, id: &str, by: u64) -> Value {
    json!({"type": "SHRINK_VOLUME", "shrink_volume": {"volume": volume(mb, id),
           "subtract": {"value": by}}})
}

fn usage_of<'a>(usage: &'a [Value], id: &str) -> &'a Value {
    usage
        .iter()
        .find(|v| v["persistence_id"] == id)
        .unwrap_or_else(|| panic!("no usage of {id}: {usage:?}"))
}

/// The whole life of one volume on `fstype`.
fn enforced_through_the_binary(fstype: &str, over_limit_errno: i32) {
    let started = std::time::Instant::now();
    let w = World::new(fstype);
    let out = w.apply(&create(16, "pv-q"));
    assert!(out.status.success(), "{out:?}");
    let vol = w.work.join("volumes/roles/db/pv-q");
    assert_eq!(
        w.project_of(&vol),
        300,
        "{fstype}: the first id of the range"
    );
    // Written ahead in the change's target, kept by the committed checkpoint.
    assert_eq!(
        w.checkpoint()["projects"][vol.to_str().unwrap()]["hard_bytes"],
        16 * MIB
    );
    let u = w.usage();
    let pv = usage_of(&u, "pv-q");
    assert_eq!(pv["enforcement"], "project-quota", "{fstype}: {pv}");
    let status = w.ok(&["status", "--json"]);
    assert_eq!(
        status["disk_isolation"],
        json!({"mode": "auto", "work_dir": "project-quota"}),
        "{fstype}: {status}"
    );
    assert_eq!(pv["limit_bytes"], 16 * MIB);

    // A container on the volume, its sandbox owned by the task user: prepare gives the fresh
    // volume to that user, and the task writes 32 MiB through the container's bind.
    let sandbox = w.root.join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    nix::unistd::chown(&sandbox, Some(TASK_UID.into()), Some(TASK_UID.into())).unwrap();
    let config = w.root.join("c1.json");
    std::fs::write(
        &config,
        json!({"container_id": "c1", "sandbox": sandbox, "resources": [volume(16, "pv-q")]})
            .to_string(),
    )
    .unwrap();
    let _ = w.ok(&[
        "prepare",
        "--container-id",
        "c1",
        "--config",
        config.to_str().unwrap(),
    ]);
    let through = sandbox.join("data/big");
    let (written, errno) = w.write_as_task(&through, 32 * MIB);
    assert_eq!(errno, over_limit_errno, "{fstype}: wrote {written}");
    assert!(
        (14 * MIB..=16 * MIB).contains(&written),
        "{fstype}: stopped after {written} bytes"
    );
    let used = usage_of(&w.usage(), "pv-q")["used_bytes"].as_u64().unwrap();
    assert!(
        (14 * MIB..=17 * MIB).contains(&used),
        "{fstype}: usage {used}"
    );

    // GROW by 32 MB (the volume is in use: a resize needs no unmount): the same write goes
    // through.
    let out = w.apply(&grow(16, "pv-q", 32));
    assert!(out.status.success(), "{out:?}");
    w.at(&through, |f| std::fs::remove_file(f).unwrap());
    let (written, errno) = w.write_as_task(&through, 32 * MIB);
    assert_eq!((written, errno), (32 * MIB, 0), "{fstype}: after GROW");
    assert_eq!(usage_of(&w.usage(), "pv-q")["limit_bytes"], 48 * MIB);
    w.at(&through, |f| std::fs::remove_file(f).unwrap());
    let (written, errno) = w.write_as_task(&through, 24 * MIB);
    assert_eq!((written, errno), (24 * MIB, 0));

    // SHRINK to 8 MB while it holds 24 MiB: refused, nothing changes.
    let out = w.apply(&shrink(48, "pv-q", 40));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot shrink"),
        "{out:?}"
    );
    assert_eq!(usage_of(&w.usage(), "pv-q")["limit_bytes"], 48 * MIB);
    // ...and to 28 MB it is fine.
    let out = w.apply(&shrink(48, "pv-q", 20));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(usage_of(&w.usage(), "pv-q")["limit_bytes"], 28 * MIB);

    // DESTROY (after the container's cleanup) gives the id back: the next volume gets it.
    let _ = w.ok(&["cleanup", "--container-id", "c1"]);
    let out = w.apply(&destroy(28, "pv-q"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.record()["volumes"], json!({}));
    let out = w.apply(&create(8, "pv-r"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(w.project_of(&w.work.join("volumes/roles/db/pv-r")), 300);
    println!("{fstype} volume life: {:.0?}", started.elapsed());
}

#[test]
fn xfs_volumes_are_limited_through_the_binary() {
    if may_run("xfs_volumes_are_limited_through_the_binary") {
        enforced_through_the_binary("xfs", nix::errno::Errno::ENOSPC as i32);
    }
}

#[test]
fn ext4_volumes_are_limited_through_the_binary() {
    if may_run("ext4_volumes_are_limited_through_the_binary") {
        enforced_through_the_binary("ext4", nix::errno::Errno::EDQUOT as i32);
    }
}

/// A container's non-persistent `disk` becomes its sandbox's quota (Mesos's `disk/xfs`):
/// the task stops there; cleanup gives the id back and untags the sandbox; a prepare killed
/// after its record leaves a quota that the next `recover` releases with the container.
#[test]
fn a_sandbox_gets_the_containers_disk_as_its_quota() {
    if !may_run("a_sandbox_gets_the_containers_disk_as_its_quota") {
        return;
    }
    let started = std::time::Instant::now();
    let w = World::new("xfs");
    let sandbox = w.work.parent().unwrap().join("sandboxes/c1");
    w.at(&sandbox, |s| {
        std::fs::create_dir_all(s).unwrap();
        nix::unistd::chown(s, Some(TASK_UID.into()), Some(TASK_UID.into())).unwrap();
    });
    let config = |id: &str| {
        let p = w.root.join(format!("{id}.json"));
        std::fs::write(
            &p,
            json!({"container_id": id, "sandbox": sandbox,
                   "resources": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 8}}]})
            .to_string(),
        )
        .unwrap();
        p
    };
    let c1 = config("c1");
    let _ = w.ok(&[
        "prepare",
        "--container-id",
        "c1",
        "--config",
        c1.to_str().unwrap(),
    ]);
    let entry = w.record()["volumes"][sandbox.to_str().unwrap()].clone();
    assert_eq!(entry["container"], "c1", "{entry}");
    assert_eq!(entry["hard_bytes"], 8 * MIB);
    let (written, errno) = w.write_as_task(&sandbox.join("out"), 16 * MIB);
    assert_eq!(errno, nix::errno::Errno::ENOSPC as i32, "wrote {written}");
    assert!(
        (6 * MIB..=8 * MIB).contains(&written),
        "stopped after {written}"
    );
    let _ = w.ok(&["cleanup", "--container-id", "c1"]);
    assert_eq!(w.record()["volumes"], json!({}));
    assert_eq!(w.project_of(&sandbox), 0, "the sandbox is untagged");
    assert_eq!(w.project_of(&sandbox.join("out")), 0);

    // Killed right after the record: the next recover cleans the container and its quota.
    let c2 = config("c2");
    let out = w.cmd(
        &[
            "prepare",
            "--container-id",
            "c2",
            "--config",
            c2.to_str().unwrap(),
        ],
        Some(1),
    );
    assert!(!out.status.success(), "killed: {out:?}");
    assert_eq!(
        w.record()["volumes"][sandbox.to_str().unwrap()]["container"],
        "c2"
    );
    let _ = w.ok(&["recover"]);
    assert_eq!(
        w.record()["volumes"],
        json!({}),
        "released with its container"
    );
    assert_eq!(w.project_of(&sandbox), 0);
    println!("sandbox quota: {:.0?}", started.elapsed());
}

/// After recovery (the `usage` command opens the agent, which finishes a pending change and
/// reconciles the quotas): every recorded volume is checkpointed, has its id on its directory
/// and its size as its limit; no id is shared. Returns the usage.
fn assert_consistent(w: &World, what: &str) -> Vec<Value> {
    let usage = w.usage();
    let record = w.record();
    let recorded = record["volumes"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    for v in &usage {
        let path = v["path"].as_str().unwrap();
        let entry = &recorded
            .get(path)
            .unwrap_or_else(|| panic!("{what}: {path} has no recorded id: {record}"));
        assert_eq!(v["enforcement"], "project-quota", "{what}: {v}");
        assert_eq!(entry["hard_bytes"], v["limit_bytes"], "{what}: {v}");
        let id = u32::try_from(entry["project"].as_u64().unwrap()).unwrap();
        assert_eq!(w.project_of(Path::new(path)), id, "{what}: {path}");
        assert!(ids.insert(id), "{what}: id {id} shared: {record}");
    }
    assert_eq!(
        recorded.len(),
        usage.len(),
        "{what}: an id recorded for a volume that is gone: {record}"
    );
    usage
}

#[test]
fn kill_at_every_write_ahead_point_keeps_quotas_consistent() {
    if !may_run("kill_at_every_write_ahead_point_keeps_quotas_consistent") {
        return;
    }
    let started = std::time::Instant::now();
    let w = World::new("ext4");
    let run_killed = |op: &Value, n: usize| -> bool {
        let p = w.op(op);
        let out = w.cmd(
            &["apply-operation", "--operation", p.to_str().unwrap()],
            Some(n),
        );
        out.status.success()
    };
    // The points of one operation: target written, volume created or limited or detached,
    // removed, committed; a run past the last one completes.
    let mut points = 0;
    for n in 1.. {
        let id = format!("k{n}");
        let done = run_killed(&create(4, &id), n);
        // Whatever happened, the volume exists now (recovery finished the intent).
        let u = assert_consistent(&w, &format!("CREATE killed at {n}"));
        assert_eq!(usage_of(&u, &id)["limit_bytes"], 4 * MIB);
        let grown = run_killed(&grow(4, &id, 2), n);
        let u = assert_consistent(&w, &format!("GROW killed at {n}"));
        assert_eq!(usage_of(&u, &id)["limit_bytes"], 6 * MIB);
        let shrunk = run_killed(&shrink(6, &id, 1), n);
        let u = assert_consistent(&w, &format!("SHRINK killed at {n}"));
        assert_eq!(usage_of(&u, &id)["limit_bytes"], 5 * MIB);
        let destroyed = run_killed(&destroy(5, &id), n);
        let u = assert_consistent(&w, &format!("DESTROY killed at {n}"));
        assert!(
            !u.iter().any(|v| v["persistence_id"] == id.as_str()),
            "DESTROY killed at {n}: {id} still there"
        );
        points = n;
        if done && grown && shrunk && destroyed {
            break;
        }
        assert!(n < 20, "more points than expected");
    }
    assert!(points >= 4, "only {points} points were tried");
    println!("quota crash points: {points}, {:.0?}", started.elapsed());
}

/// Runs every other case of this binary inside a VM whose kernel has project quotas, when this
/// kernel has none.
#[test]
fn vm_tier() {
    if in_vm() || !nix::unistd::geteuid().is_root() || kernel_has_project_quotas() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let Some(run) = run_in_vm(
        &exe,
        &["--test-threads=1", "--nocapture", "--skip", "vm_tier"],
        &[("BERTH_REQUIRE_QUOTA", "1")],
    ) else {
        assert!(
            !required(),
            "vm_tier: this kernel has no project quotas and the VM tools are missing \
             (scripts/install-vm.sh)"
        );
        eprintln!("SKIPPED vm_tier: no VM tools (scripts/install-vm.sh)");
        return;
    };
    println!(
        "vm_tier: {} ran for {:.0?}; the cases' output:\n{}",
        run.kernel.display(),
        run.elapsed,
        run.output
    );
    assert_eq!(
        run.status, "0",
        "the quota cases failed in the VM:\n{}\nvng stderr: {}",
        run.output, run.vng_stderr
    );
    // Each case prints its marker when it got to its end (the harness runs with --nocapture).
    for marker in [
        "xfs volume life:",
        "ext4 volume life:",
        "quota crash points:",
        "sandbox quota:",
        "test result: ok. 5 passed",
    ] {
        assert!(
            run.output.contains(marker),
            "{marker:?} missing: a case did not run to its end in the VM:\n{}",
            run.output
        );
    }
    assert!(
        !run.output.contains("SKIPPED"),
        "a case skipped in the VM:\n{}",
        run.output
    );
}
