//! What `prepare` trusts, through the `berth-isolator` binary as root in a private mount
//! namespace (issue 15 item 2): a "persistent volume" the agent never checkpointed — a MOUNT
//! disk whose root is a root-owned stand-in for `/etc`, in a sandbox owned by uid 1234 — is
//! refused and nothing changes (owner, mode, mount table, records); once the agent has the
//! volume checkpointed, the same prepare mounts it. `--sandbox-root` and
//! `--allowed-host-paths` refuse what lies outside them, with nothing changed either.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_testkit::{Ns, privileged};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ns: Ns,
    global: Vec<String>,
}

impl World {
    fn new(extra: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let mut global = vec![
            "--work-dir".to_owned(),
            root.join("work").display().to_string(),
        ];
        global.extend_from_slice(extra);
        Self {
            _dir: dir,
            root,
            ns: Ns::new(),
            global,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.global).args(args);
        self.ns.output(cmd)
    }

    fn write(&self, name: &str, v: &Value) -> String {
        let p = self.root.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.display().to_string()
    }

    fn record(&self, id: &str) -> PathBuf {
        self.root.join(format!("work/containers/{id}.json"))
    }
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "berth-isolator failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn refused(out: &Output, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "stderr does not say {s:?}: {stderr}");
    }
}

fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn an_unknown_mount_disk_volume_is_refused_and_mounted_once_checkpointed() {
    if !privileged("an_unknown_mount_disk_volume_is_refused_and_mounted_once_checkpointed") {
        return;
    }
    // The stand-in for /etc: root-owned, 0755, with a file.
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    let standin = base.join("etc");
    std::fs::create_dir(&standin).unwrap();
    std::fs::set_permissions(&standin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(standin.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    assert_eq!(owner_mode(&standin), (0, 0, 0o755));
    let disk = |persistence: bool| {
        let mut r = json!({
            "name": "disk", "type": "SCALAR", "scalar": {"value": 100},
            "reservations": [{"type": "STATIC", "role": "db"}],
            "disk": {"source": {"type": "MOUNT", "mount": {"root": standin}}}
        });
        if persistence {
            r["disk"]["persistence"] = json!({"id": "etc", "principal": "p"});
            r["disk"]["volume"] = json!({"mode": "RW", "container_path": "etc"});
        }
        r
    };
    let configured = json!([disk(false), {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
                            {"name": "mem", "type": "SCALAR", "scalar": {"value": 128}}]);
    let w = World::new(&["--resources".to_owned(), configured.to_string()]);
    let sandbox = w.root.join("sandbox");
    std::fs::create_dir(&sandbox).unwrap();
    nix::unistd::chown(
        &sandbox,
        Some(nix::unistd::Uid::from_raw(1234)),
        Some(nix::unistd::Gid::from_raw(1234)),
    )
    .unwrap();
    let cfg = w.write(
        "c1.json",
        &json!({"container_id": "c1", "sandbox": sandbox, "resources": [disk(true)]}),
    );

    let out = w.run(&["prepare", "--container-id", "c1", "--config", &cfg]);
    refused(&out, &["persistent volume etc", "checkpointed"]);
    assert_eq!(owner_mode(&standin), (0, 0, 0o755), "stand-in touched");
    assert_eq!(
        std::fs::read(standin.join("passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    assert!(w.ns.mounts_below(&sandbox).is_empty(), "mounted");
    assert!(w.ns.mounts_below(&standin).is_empty(), "mounted");
    assert!(!w.record("c1").exists(), "record written");
    assert_eq!(std::fs::read_dir(&sandbox).unwrap().count(), 0, "mkdir");
    let status = ok(&w.run(&["status", "--json"]));
    assert_eq!(status, json!([]), "{status}");

    // Once the agent holds it, the same prepare mounts it (and, as Mesos, gives the
    // root-owned volume to the task's user).
    let _ = ok(&w.run(&[
        "checkpoint-resources",
        "--resources",
        &w.write("checkpoint.json", &json!([disk(true)])),
    ]));
    let out = ok(&w.run(&["prepare", "--container-id", "c1", "--config", &cfg]));
    assert_eq!(
        out["mounts"][0]["target"],
        json!(sandbox.join("etc")),
        "{out}"
    );
    assert_eq!(w.ns.mounts_below(&sandbox), [sandbox.join("etc")]);
    assert!(w.record("c1").exists());
    assert_eq!(owner_mode(&standin).0, 1234);
    let _ = ok(&w.run(&["cleanup", "--container-id", "c1"]));
    assert!(w.ns.mounts_below(&sandbox).is_empty());
    assert!(!w.record("c1").exists());
}

#[test]
fn sandbox_root_and_allowed_host_paths_refuse_what_lies_outside() {
    if !privileged("sandbox_root_and_allowed_host_paths_refuse_what_lies_outside") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    for d in ["sandboxes/s1", "elsewhere", "data/ok", "database"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(base.join("database"), base.join("data/escape")).unwrap();
    let w = World::new(&[
        "--sandbox-root".to_owned(),
        base.join("sandboxes").display().to_string(),
        "--allowed-host-paths".to_owned(),
        format!("{},/nonexistent-prefix", base.join("data").display()),
    ]);
    let config = |sandbox: &Path, host: &Path| {
        json!({"container_id": "c1", "sandbox": sandbox,
               "volumes": [{"mode": "RW", "container_path": "h",
                            "source": {"type": "HOST_PATH", "host_path": {"path": host}}}]})
    };
    let cases: [(PathBuf, PathBuf, &str); 4] = [
        (
            base.join("elsewhere"),
            base.join("data/ok"),
            "--sandbox-root",
        ),
        (
            base.join("sandboxes/s1"),
            base.join("database"),
            "--allowed-host-paths",
        ),
        (
            base.join("sandboxes/s1"),
            base.join("data/escape"),
            "--allowed-host-paths",
        ),
        (
            w.root.join("work"),
            base.join("data/ok"),
            "inside the agent's work dir",
        ),
    ];
    for (sandbox, host, says) in &cases {
        std::fs::create_dir_all(sandbox).unwrap();
        let cfg = w.write("c.json", &config(sandbox, host));
        let out = w.run(&["prepare", "--container-id", "c1", "--config", &cfg]);
        refused(&out, &[says]);
        assert!(w.ns.mounts_below(sandbox).is_empty());
        assert!(!w.record("c1").exists());
    }
    assert_eq!(
        std::fs::read_dir(base.join("sandboxes/s1"))
            .unwrap()
            .count(),
        0
    );
    // Inside both: mounted.
    let sandbox = base.join("sandboxes/s1");
    let cfg = w.write("c.json", &config(&sandbox, &base.join("data/ok")));
    let _ = ok(&w.run(&["prepare", "--container-id", "c1", "--config", &cfg]));
    assert_eq!(w.ns.mounts_below(&sandbox), [sandbox.join("h")]);
    let _ = ok(&w.run(&["cleanup", "--container-id", "c1"]));
    assert!(w.ns.mounts_below(&sandbox).is_empty());
}
