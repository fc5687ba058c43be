//! Shared persistent volumes with gids (`--volume-gid-range`) through the `berth-isolator`
//! binary, as root in a private mount namespace: CREATE of a shared volume gives it the lowest
//! free gid (written ahead in the checkpoint, the directory `2770` with that group), an
//! exclusive volume gets none, `prepare` returns the gid as the task's supplementary group,
//! two tasks of different non-root users write and read each other's files through it while a
//! user without the group is refused, DESTROY releases the gid, and `kill -9` at every
//! write-ahead point of a shared CREATE ends, after recovery, with the gid recorded once and on
//! the directory. A CSI volume of a plugin advertising `VOLUME_MOUNT_GROUP` gets its own gid
//! from the same range as `volume_mount_group` (the testkit plugin applies it as kubelet's
//! `fsGroup`): both users' tasks share it, the shared volumes never get that gid, and it is
//! released when the last container is cleaned up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_testkit::csi::BlockPlugin;
use berth_testkit::{Ns, privileged};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");
const GID: u32 = 20_000;
const USER_A: u32 = 61_001;
const USER_B: u32 = 61_002;
const STRANGER: u32 = 61_003;

/// The child half of [`World::task`] ([`berth_testkit::task`]).
#[test]
fn task_child() {
    berth_testkit::task::child();
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    ns: Ns,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        // Tasks of other users walk down to their sandboxes.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let work = root.join("work");
        std::fs::create_dir_all(root.join("conf")).unwrap();
        Self {
            _dir: dir,
            root,
            work,
            ns: Ns::new(),
        }
    }

    fn cmd(&self, args: &[&str], kill_at: Option<usize>) -> Output {
        let mut c = Command::new(BIN);
        c.arg(format!("--work-dir={}", self.work.display()))
            .arg("--resources=disk(db):512")
            .arg(format!("--volume-gid-range={GID}-{}", GID + 1))
            .arg(format!(
                "--csi-plugin-config-dir={}",
                self.root.join("conf").display()
            ))
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

    fn op_file(&self, op: &Value) -> String {
        let p = self.root.join(format!(
            "op-{}.json",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&p, op.to_string()).unwrap();
        p.display().to_string()
    }

    fn apply(&self, op: &Value, kill_at: Option<usize>) -> Output {
        let p = self.op_file(op);
        self.cmd(&["apply-operation", "--operation", &p], kill_at)
    }

    fn checkpoint(&self) -> Value {
        serde_json::from_slice(
            &std::fs::read(self.work.join("meta/resources/resources.json")).unwrap(),
        )
        .unwrap()
    }

    fn vol(&self, id: &str) -> PathBuf {
        self.work.join(format!("volumes/roles/db/{id}"))
    }

    /// A container whose sandbox belongs to `uid`, using volume `id` at `data`.
    fn container(&self, cid: &str, uid: u32, id: &str) -> (PathBuf, String) {
        let sandbox = self.root.join(format!("sandbox-{cid}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        nix::unistd::chown(
            &sandbox,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .unwrap();
        let cfg = json!({"container_id": cid, "sandbox": sandbox, "resources": [volume(id, true)]});
        let p = self.root.join(format!("{cid}.json"));
        std::fs::write(&p, cfg.to_string()).unwrap();
        (sandbox, p.display().to_string())
    }

    /// The testkit plugin in mount mode (`org.berth.mnt`, `VOLUME_MOUNT_GROUP`) and the
    /// directory its volume `dir-1` binds.
    fn mount_plugin(&self) -> (BlockPlugin, PathBuf) {
        let sock = self.root.join("mnt.sock");
        let plugin = BlockPlugin::start_mount(&self.ns, &sock);
        std::fs::write(
            self.root.join("conf/mnt.json"),
            json!({"type": "org.berth.mnt", "endpoints": [{"csi_service": "NODE_SERVICE",
                "endpoint": format!("unix://{}", sock.display())}]})
            .to_string(),
        )
        .unwrap();
        let data = self.root.join("csi-data");
        std::fs::create_dir_all(&data).unwrap();
        (plugin, data)
    }

    /// A container whose sandbox belongs to `uid`, using CSI volume `dir-1` (binding `data`)
    /// at `csi`.
    fn csi_container(&self, cid: &str, uid: u32, data: &Path) -> (PathBuf, String) {
        let sandbox = self.root.join(format!("sandbox-{cid}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        nix::unistd::chown(
            &sandbox,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        )
        .unwrap();
        let cfg = json!({"container_id": cid, "sandbox": sandbox, "volumes": [
            {"mode": "RW", "container_path": "csi", "source": {"type": "CSI_VOLUME", "csi_volume": {
                "plugin_name": "org.berth.mnt",
                "static_provisioning": {"volume_id": "dir-1",
                    "volume_capability": {"mount": {}, "access_mode": {"mode": "MULTI_NODE_MULTI_WRITER"}},
                    "volume_context": {"dir": data}}}}}]});
        let p = self.root.join(format!("{cid}.json"));
        std::fs::write(&p, cfg.to_string()).unwrap();
        (sandbox, p.display().to_string())
    }

    /// The record of CSI volume `dir-1`.
    fn csi_record(&self) -> PathBuf {
        self.work
            .join("csi/org.berth.mnt/default/volumes/dir-1/volume.state")
    }

    /// Runs `op` as `uid` (primary group `uid`) with the supplementary `groups`, in the
    /// namespace: `Ok(content)` (empty for a write, which writes `from <uid>`) or the errno.
    fn task(&self, uid: u32, groups: &[u32], op: &str, path: &Path) -> Result<String, i32> {
        let user = berth_testkit::task::TaskUser {
            uid,
            gid: uid,
            groups,
        };
        berth_testkit::task::run(user, op, path, &format!("from {uid}"), |c| {
            self.ns.output(c)
        })
    }
}

fn volume(id: &str, shared: bool) -> Value {
    let mut v = json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
        "reservations": [{"type": "STATIC", "role": "db"}],
        "disk": {"persistence": {"id": id, "principal": "p"},
                 "volume": {"mode": "RW", "container_path": "data"}}});
    if shared {
        v["shared"] = json!({});
    }
    v
}

fn create(id: &str, shared: bool) -> Value {
    json!({"type": "CREATE", "create": {"volumes": [volume(id, shared)]}})
}

fn destroy(id: &str, shared: bool) -> Value {
    json!({"type": "DESTROY", "destroy": {"volumes": [volume(id, shared)]}})
}

fn group_and_mode(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.gid(), m.mode() & 0o7777)
}

#[test]
fn two_users_share_a_volume_through_its_gid() {
    if !privileged("two_users_share_a_volume_through_its_gid") {
        return;
    }
    let w = World::new();
    assert!(w.apply(&create("pv-shared", true), None).status.success());
    assert!(w.apply(&create("pv-own", false), None).status.success());
    let shared = w.vol("pv-shared");
    assert_eq!(group_and_mode(&shared), (GID, 0o2770));
    assert_eq!(
        w.checkpoint()["gids"],
        json!({shared.to_str().unwrap(): GID}),
        "written in the checkpoint; the exclusive volume has none"
    );
    assert_eq!(group_and_mode(&w.vol("pv-own")).0, 0);

    // Two containers of two users on the shared volume: prepare names the gid.
    let (sa, ca) = w.container("ca", USER_A, "pv-shared");
    let (sb, cb) = w.container("cb", USER_B, "pv-shared");
    for (cid, cfg) in [("ca", &ca), ("cb", &cb)] {
        let out = w.ok(&["prepare", "--container-id", cid, "--config", cfg]);
        assert_eq!(out["supplementary_gids"], json!([GID]), "{out}");
    }
    assert_eq!(
        group_and_mode(&shared),
        (GID, 0o2770),
        "not given to the first task's user"
    );
    let (a_file, b_file) = (sa.join("data/from-a"), sb.join("data/from-b"));
    assert_eq!(w.task(USER_A, &[GID], "write", &a_file), Ok(String::new()));
    assert_eq!(w.task(USER_B, &[GID], "write", &b_file), Ok(String::new()));
    // Each reads the other's file through its own container path.
    assert_eq!(
        w.task(USER_B, &[GID], "read", &sb.join("data/from-a")),
        Ok(format!("from {USER_A}"))
    );
    assert_eq!(
        w.task(USER_A, &[GID], "read", &sa.join("data/from-b")),
        Ok(format!("from {USER_B}"))
    );
    // ...and B may add to A's file: it has the volume's group, group-writable.
    assert_eq!(
        w.task(USER_B, &[GID], "append", &sb.join("data/from-a")),
        Ok(String::new())
    );
    assert_eq!(
        w.task(USER_A, &[GID], "read", &sa.join("data/from-a")),
        Ok(format!("from {USER_A}from {USER_B}"))
    );
    assert_eq!(
        group_and_mode(&shared.join("from-a")).0,
        GID,
        "setgid: inherited"
    );
    // Without the group: refused.
    assert_eq!(
        w.task(STRANGER, &[], "read", &sa.join("data/from-a")),
        Err(nix::errno::Errno::EACCES as i32)
    );

    // DESTROY releases the gid; the next shared volume takes it.
    w.ok(&["cleanup", "--container-id", "ca"]);
    w.ok(&["cleanup", "--container-id", "cb"]);
    assert!(w.apply(&destroy("pv-shared", true), None).status.success());
    assert!(w.checkpoint().get("gids").is_none(), "{}", w.checkpoint());
    assert!(w.apply(&create("pv-next", true), None).status.success());
    assert_eq!(group_and_mode(&w.vol("pv-next")), (GID, 0o2770));

    // The range is full after a second shared volume: a third is refused, nothing written.
    assert!(w.apply(&create("pv-2", true), None).status.success());
    assert_eq!(group_and_mode(&w.vol("pv-2")).0, GID + 1);
    let out = w.apply(&create("pv-3", true), None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no free volume gid"),
        "{out:?}"
    );
    assert!(!w.vol("pv-3").exists());
}

#[test]
fn kill_at_every_write_ahead_point_of_a_shared_create() {
    if !privileged("kill_at_every_write_ahead_point_of_a_shared_create") {
        return;
    }
    // Points of a shared CREATE: target written, volume created, volume grouped, committed.
    let mut killed_somewhere = false;
    for at in 1..=4 {
        let w = World::new();
        let out = w.apply(&create("pv-k", true), Some(at));
        if out.status.success() {
            continue;
        }
        killed_somewhere = true;
        // Any command opens the agent, which finishes the change and puts the gid right.
        w.ok(&["resources"]);
        let dir = w.vol("pv-k");
        assert_eq!(group_and_mode(&dir), (GID, 0o2770), "killed at {at}");
        assert_eq!(
            w.checkpoint()["gids"],
            json!({dir.to_str().unwrap(): GID}),
            "killed at {at}"
        );
    }
    assert!(killed_somewhere, "the failpoint never fired");
}

#[test]
fn two_users_share_a_csi_volume_through_its_volume_mount_group() {
    if !privileged("two_users_share_a_csi_volume_through_its_volume_mount_group") {
        return;
    }
    let w = World::new();
    // A shared persistent volume takes the first gid of the range.
    assert!(w.apply(&create("pv-shared", true), None).status.success());
    assert_eq!(group_and_mode(&w.vol("pv-shared")), (GID, 0o2770));

    let (plugin, data) = w.mount_plugin();
    let (sa, ca) = w.csi_container("ca", USER_A, &data);
    let (sb, cb) = w.csi_container("cb", USER_B, &data);
    let csi_gid = GID + 1;
    for (cid, cfg) in [("ca", &ca), ("cb", &cb)] {
        let out = w.ok(&["prepare", "--container-id", cid, "--config", cfg]);
        assert_eq!(out["supplementary_gids"], json!([csi_gid]), "{out}");
    }
    // One publish for both consumers, with the volume's gid, which the plugin applied.
    assert_eq!(plugin.mount_groups(), [csi_gid.to_string()]);
    assert_eq!(group_and_mode(&data), (csi_gid, 0o2770));
    let record = w.csi_record();
    let rec: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(rec["volume_mount_group"], json!(csi_gid), "{rec}");

    // Two users share it through the group; a stranger is refused.
    assert_eq!(
        w.task(USER_A, &[csi_gid], "write", &sa.join("csi/from-a")),
        Ok(String::new())
    );
    assert_eq!(
        w.task(USER_B, &[csi_gid], "read", &sb.join("csi/from-a")),
        Ok(format!("from {USER_A}"))
    );
    assert_eq!(
        w.task(USER_B, &[csi_gid], "append", &sb.join("csi/from-a")),
        Ok(String::new())
    );
    assert_eq!(
        w.task(STRANGER, &[], "read", &sa.join("csi/from-a")),
        Err(nix::errno::Errno::EACCES as i32)
    );

    // The range is full (the CSI volume holds the second gid): a shared volume is refused.
    let out = w.apply(&create("pv-2", true), None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no free volume gid"),
        "{out:?}"
    );
    // The last consumer gone, the record and its gid go: the shared volume gets it.
    w.ok(&["cleanup", "--container-id", "ca"]);
    assert!(record.exists(), "cb still uses it");
    w.ok(&["cleanup", "--container-id", "cb"]);
    assert!(!record.exists());
    assert!(w.apply(&create("pv-2", true), None).status.success());
    assert_eq!(group_and_mode(&w.vol("pv-2")), (csi_gid, 0o2770));
    drop(plugin);
}

#[test]
fn kill_at_every_write_ahead_point_of_a_csi_prepare() {
    if !privileged("kill_at_every_write_ahead_point_of_a_csi_prepare") {
        return;
    }
    let (mut killed, mut recorded) = (0, 0);
    for at in 1..=16 {
        let w = World::new();
        assert!(w.apply(&create("pv-shared", true), None).status.success());
        let (plugin, data) = w.mount_plugin();
        let (_, ca) = w.csi_container("ca", USER_A, &data);
        let out = w.cmd(
            &["prepare", "--container-id", "ca", "--config", &ca],
            Some(at),
        );
        if out.status.success() {
            break;
        }
        killed += 1;
        // The record, when written, holds the volume's gid: never the shared volume's, and
        // a restarted agent holds it (the range is full for a new shared volume).
        let record = w.csi_record();
        if record.exists() {
            recorded += 1;
            let rec: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
            assert_eq!(
                rec["volume_mount_group"],
                json!(GID + 1),
                "killed at {at}: {rec}"
            );
            assert!(
                !w.apply(&create("pv-2", true), None).status.success(),
                "killed at {at}"
            );
        }
        // Every gid the plugin was sent is the record's.
        assert!(
            plugin
                .mount_groups()
                .iter()
                .all(|g| *g == (GID + 1).to_string()),
            "killed at {at}: {:?}",
            plugin.mount_groups()
        );
        // Cleaning the container up releases the volume and its gid.
        w.ok(&["cleanup", "--container-id", "ca"]);
        assert!(!record.exists(), "killed at {at}");
        assert!(w.ns.mounts_below(&w.root.join("sandbox-ca")).is_empty());
        assert!(
            w.apply(&create("pv-2", true), None).status.success(),
            "killed at {at}"
        );
        assert_eq!(group_and_mode(&w.vol("pv-2")).0, GID + 1, "killed at {at}");
        drop(plugin);
    }
    eprintln!("killed at {killed} points, {recorded} with the CSI record written");
    assert!(
        recorded >= 2,
        "killed {killed} times, {recorded} with a record"
    );
}
