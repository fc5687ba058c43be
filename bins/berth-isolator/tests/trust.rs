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
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    assert_eq!(
        berth_testkit::status_parts(&status),
        json!({"containers": [], "leftovers": []}),
        "{status}"
    );

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

fn wait_for(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

/// Over gRPC, the same refusals carry their codes: an unknown volume, a sandbox of `/` and an
/// invalid `CheckpointResources` are `INVALID_ARGUMENT`; a quarantined container is shown as
/// `quarantined`, and its prepare and cleanup are `FAILED_PRECONDITION`.
#[test]
fn grpc_refusals_carry_their_codes() {
    if !privileged("grpc_refusals_carry_their_codes") {
        return;
    }
    let mut w = World::new(&["--resources=disk(db):256".to_owned()]);
    let sock = w.root.join("isolator.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let quarantined_gauge = move || {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut conn, &mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("berth_isolator_quarantined_containers "))
            .unwrap_or_else(|| panic!("no quarantine gauge: {text}"))
            .to_owned()
    };
    let mut cmd = Command::new(BIN);
    cmd.args(&w.global)
        .args([
            "serve".to_owned(),
            format!("--listen=unix:{}", sock.display()),
            format!("--metrics={port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _pid = w.ns.spawn(cmd);
    wait_for(&sock);
    let sandbox = w.root.join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    let record = w.record("g1");
    let (sb, s2) = (sandbox.clone(), sock.clone());
    w.ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use berth_proto::berth::v1 as pb;
                use tonic::Code;
                let path = s2.clone();
                let channel = berth_testkit::unix_channel(path.clone()).await;
                let mut c = pb::isolator_client::IsolatorClient::new(channel);
                let pv: berth_resources::proto::Resource =
                    berth_resources::json::from_json_value(&json!({
                        "name": "disk", "type": "SCALAR", "scalar": {"value": 64},
                        "reservations": [{"type": "STATIC", "role": "db"}],
                        "disk": {"persistence": {"id": "pv-g", "principal": "p"},
                                 "volume": {"mode": "RW", "container_path": "data"}}
                    }))
                    .unwrap();
                let prepare = |sandbox: &Path| pb::PrepareRequest {
                    container_id: "g1".into(),
                    sandbox: sandbox.display().to_string(),
                    resources: vec![pv.clone()],
                    ..Default::default()
                };
                let e = c.prepare(prepare(&sb)).await.unwrap_err();
                assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
                assert!(e.message().contains("persistent volume pv-g"), "{e:?}");
                let e = c.prepare(prepare(Path::new("/"))).await.unwrap_err();
                assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
                let mut bad = pv.clone();
                bad.name = String::new();
                let e = c
                    .checkpoint_resources(pb::CheckpointResourcesRequest {
                        resources: vec![bad],
                    })
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
                assert!(!record.exists());
                assert!(berth_testkit::mounts_below(&sb).is_empty());

                c.checkpoint_resources(pb::CheckpointResourcesRequest {
                    resources: vec![pv.clone()],
                })
                .await
                .unwrap();
                c.prepare(prepare(&sb)).await.unwrap();
                assert_eq!(berth_testkit::mounts_below(&sb), [sb.join("data")]);

                // Quarantined: kept, shown, refused.
                std::fs::write(&record, b"{ garbled").unwrap();
                let r = c
                    .recover(pb::RecoverRequest {
                        live: vec!["g1".into()],
                        orphans: Vec::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.quarantined, ["g1"]);
                let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
                assert_eq!(st.containers.len(), 1);
                assert_eq!(st.containers[0].state, "quarantined");
                let e = c
                    .cleanup(pb::CleanupRequest {
                        container_id: "g1".into(),
                        force: false,
                    })
                    .await
                    .unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert!(e.message().contains("--force"), "{e:?}");
                let e = c.prepare(prepare(&sb)).await.unwrap_err();
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                assert_eq!(berth_testkit::mounts_below(&sb), [sb.join("data")]);
                let r = c
                    .recover(pb::RecoverRequest {
                        live: Vec::new(),
                        orphans: Vec::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.quarantine_kept, ["g1"]);
                assert_eq!(berth_testkit::mounts_below(&sb), [sb.join("data")]);
                assert_eq!(quarantined_gauge(), "1");
                // The operator's --force, without stopping the server.
                c.cleanup(pb::CleanupRequest {
                    container_id: "g1".into(),
                    force: true,
                })
                .await
                .unwrap();
                let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
                assert!(st.containers.is_empty(), "{st:?}");
                assert_eq!(quarantined_gauge(), "0");
            });
    });
}
