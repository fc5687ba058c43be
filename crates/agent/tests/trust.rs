//! What `prepare` trusts (issue 15 item 2), as a normal user: the isolator's sandbox and host
//! path rules against the recording fake, and the agent's persistent-volume rule (a volume is
//! planned only when the agent holds it checkpointed, by Mesos's identity). Every refusal is
//! `INVALID_ARGUMENT`, names the volume or the root, and leaves nothing behind: no record, no
//! directory, no mount call. The privileged end-to-end variant (a root-owned stand-in whose
//! owner and mode must not change) is `bins/berth-isolator/tests/trust.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_agent::ErrorCode;
use berth_agent::agent::{Agent, Settings};
use berth_agent::container::{
    ContainerConfig, ContainerError, Isolator, PersistentVolumes, PreparePolicy,
};
use berth_mount::Mounter;
use berth_mount::fake::RecordingMounter;
use berth_resources::proto;
use common::FakeKernel;
use serde_json::{Value, json};

struct Dirs(PathBuf);

impl PersistentVolumes for Dirs {
    fn volume_path(&self, r: &proto::Resource) -> Result<PathBuf, String> {
        let id = &r.disk.as_ref().unwrap().persistence.as_ref().unwrap().id;
        Ok(self.0.join(id))
    }
}

struct Env {
    _dir: common::TempDir,
    root: PathBuf,
    work: PathBuf,
    sandbox: PathBuf,
    kernel: Arc<FakeKernel>,
}

fn env() -> Env {
    let (dir, root) = common::tempdir();
    let work = root.join("work");
    let sandbox = root.join("sandboxes/s1");
    for d in [
        &work,
        &sandbox,
        &root.join("volumes"),
        &root.join("data/ok"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(root.join("database")).unwrap();
    Env {
        _dir: dir,
        root,
        work,
        sandbox,
        kernel: Arc::new(FakeKernel(RecordingMounter::new())),
    }
}

fn isolator(e: &Env, policy: PreparePolicy) -> Isolator {
    Isolator::new(&e.work, Arc::new(Dirs(e.root.join("volumes"))), None)
        .with_mounter(Arc::clone(&e.kernel) as Arc<dyn Mounter>)
        .with_policy(policy)
}

fn host_path_config(id: &str, sandbox: &Path, host: &Path) -> ContainerConfig {
    let json = json!({
        "container_id": id,
        "sandbox": "/",
        "volumes": [{"mode": "RW", "container_path": "h",
                     "source": {"type": "HOST_PATH", "host_path": {"path": host}}}]
    });
    // Any sandbox, even one the config parser itself would refuse: prepare checks again.
    let mut cfg = ContainerConfig::from_json(&json.to_string()).unwrap();
    cfg.sandbox = sandbox.to_path_buf();
    cfg
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Nothing happened: no record, no mount call, no directory made in the sandbox.
fn nothing_changed(e: &Env, id: &str) {
    assert!(
        !e.work.join(format!("containers/{id}.json")).exists(),
        "a record was written"
    );
    assert!(e.kernel.0.calls().is_empty(), "{:?}", e.kernel.0.calls());
    assert!(common::entries(&e.sandbox).is_empty(), "sandbox changed");
}

fn refused(out: Result<Vec<berth_agent::container::Prepared>, ContainerError>, says: &str) {
    let err = out.expect_err("refused");
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains(says),
        "{err} does not say {says:?}"
    );
}

#[test]
fn a_sandbox_must_be_a_real_directory_outside_the_work_dir_and_under_the_sandbox_root() {
    let e = env();
    let host = e.root.join("data/ok");
    let rt = rt();
    let iso = isolator(&e, PreparePolicy::default());
    // `/` itself, by name and through a symlink.
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", Path::new("/"), &host))),
        "root directory",
    );
    std::os::unix::fs::symlink("/", e.root.join("to-root")).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &e.root.join("to-root"), &host))),
        "root directory",
    );
    // Inside the work dir: berth's own records and volumes.
    let inside = e.work.join("containers");
    std::fs::create_dir_all(&inside).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &inside, &host))),
        "inside the agent's work dir",
    );
    // The same through a symlink outside it (compared canonicalized).
    std::os::unix::fs::symlink(&inside, e.root.join("sneaky")).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &e.root.join("sneaky"), &host))),
        "inside the agent's work dir",
    );
    assert!(common::entries(&inside).is_empty(), "work dir touched");
    // Relative, missing.
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", Path::new("rel/sb"), &host))),
        "must be absolute",
    );
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &e.root.join("nope"), &host))),
        "not a directory",
    );
    nothing_changed(&e, "c1");

    // --sandbox-root: strictly under it, canonicalized.
    let iso = isolator(
        &e,
        PreparePolicy {
            sandbox_root: Some(e.root.join("sandboxes")),
            ..PreparePolicy::default()
        },
    );
    let elsewhere = e.root.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &elsewhere, &host))),
        "--sandbox-root",
    );
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &e.root.join("sandboxes"), &host))),
        "--sandbox-root",
    );
    std::os::unix::fs::symlink(&elsewhere, e.root.join("sandboxes/link")).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config(
            "c1",
            &e.root.join("sandboxes/link"),
            &host,
        ))),
        "--sandbox-root",
    );
    // `sandboxes-2` shares a string prefix with `sandboxes`, not a component.
    let twin = e.root.join("sandboxes-2");
    std::fs::create_dir_all(&twin).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config("c1", &twin, &host))),
        "--sandbox-root",
    );
    nothing_changed(&e, "c1");
    // A sandbox under the root is fine.
    let prepared = rt
        .block_on(iso.prepare(&host_path_config("c1", &e.sandbox, &host)))
        .unwrap();
    assert_eq!(prepared[0].target, e.sandbox.join("h"));
    rt.block_on(iso.cleanup("c1")).unwrap();
}

#[test]
fn a_rootfs_must_not_be_the_host_root_nor_in_the_work_dir() {
    let e = env();
    let rt = rt();
    let iso = isolator(&e, PreparePolicy::default());
    let mut cfg = host_path_config("c1", &e.sandbox, &e.root.join("data/ok"));
    cfg.rootfs = Some(PathBuf::from("/"));
    refused(rt.block_on(iso.prepare(&cfg)), "rootfs must not be");
    cfg.rootfs = Some(e.work.clone());
    refused(
        rt.block_on(iso.prepare(&cfg)),
        "inside the agent's work dir",
    );
    nothing_changed(&e, "c1");
}

#[test]
fn allowed_host_paths_compare_canonical_components() {
    let e = env();
    let rt = rt();
    let iso = isolator(
        &e,
        PreparePolicy {
            allowed_host_paths: vec![e.root.join("data")],
            ..PreparePolicy::default()
        },
    );
    // A string prefix is not a component prefix.
    refused(
        rt.block_on(iso.prepare(&host_path_config(
            "c1",
            &e.sandbox,
            &e.root.join("database"),
        ))),
        "--allowed-host-paths",
    );
    // A symlink inside the prefix that leads out of it.
    std::os::unix::fs::symlink(e.root.join("database"), e.root.join("data/escape")).unwrap();
    refused(
        rt.block_on(iso.prepare(&host_path_config(
            "c1",
            &e.sandbox,
            &e.root.join("data/escape"),
        ))),
        "--allowed-host-paths",
    );
    // `..` out of it.
    refused(
        rt.block_on(iso.prepare(&host_path_config(
            "c1",
            &e.sandbox,
            &e.root.join("data/../database"),
        ))),
        "--allowed-host-paths",
    );
    nothing_changed(&e, "c1");
    // Inside (through a symlink that stays inside): bound from the canonical path.
    std::os::unix::fs::symlink(e.root.join("data/ok"), e.root.join("data/alias")).unwrap();
    rt.block_on(iso.prepare(&host_path_config(
        "c1",
        &e.sandbox,
        &e.root.join("data/alias"),
    )))
    .unwrap();
    let rec = iso.load("c1").unwrap().unwrap();
    assert_eq!(
        rec.volumes[0].source,
        berth_agent::container::Source::HostPath {
            path: e.root.join("data/ok")
        }
    );
    rt.block_on(iso.cleanup("c1")).unwrap();
    // The prefix itself is allowed.
    rt.block_on(iso.prepare(&host_path_config("c2", &e.sandbox, &e.root.join("data"))))
        .unwrap();
    rt.block_on(iso.cleanup("c2")).unwrap();
}

fn volume(id: &str, role: &str, size: f64, path: &str, mode: &str) -> Value {
    json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": size},
        "reservations": [{"type": "STATIC", "role": role}],
        "disk": {"persistence": {"id": id, "principal": "p"},
                 "volume": {"mode": mode, "container_path": path}}
    })
}

fn resources(list: &[Value]) -> Vec<proto::Resource> {
    list.iter()
        .map(|v| berth_resources::json::from_json_value::<proto::Resource>(v).unwrap())
        .collect()
}

fn pv_config(id: &str, sandbox: &Path, r: &Value) -> ContainerConfig {
    let json = json!({"container_id": id, "sandbox": sandbox, "resources": [r]});
    ContainerConfig::from_json(&json.to_string()).unwrap()
}

#[test]
fn a_persistent_volume_is_planned_only_when_the_agent_holds_it() {
    let e = env();
    let rt = rt();
    rt.block_on(async {
        let agent = Agent::open(Settings {
            work_dir: e.work.clone(),
            resources: Some("cpus:1;mem:128;disk(db):1000;disk(web):1000".into()),
            ..Settings::default()
        })
        .await
        .unwrap();
        let pv = volume("pv-1", "db", 64.0, "data", "RW");
        let before = common::snapshot(&e.root);
        let err = agent
            .prepare(&pv_config("c1", &e.sandbox, &pv))
            .await
            .expect_err("not checkpointed");
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
        assert!(err.to_string().contains("persistent volume pv-1"), "{err}");
        assert!(err.to_string().contains("checkpointed"), "{err}");
        assert_eq!(common::snapshot(&e.root), before, "nothing on disk changed");

        agent
            .checkpoint_resources(resources(std::slice::from_ref(&pv)))
            .await
            .unwrap();
        let iso = agent.isolator();
        // How the container uses it (path, mode) is not its identity; the allocation neither.
        let mut used = volume("pv-1", "db", 64.0, "elsewhere", "RO");
        used["allocation_info"] = json!({"role": "db"});
        for r in [&pv, &used] {
            let plan = iso.plan(&pv_config("c1", &e.sandbox, r)).unwrap();
            assert_eq!(plan.len(), 1);
        }
        // Another role, reservation kind, size, disk source, sharedness or id is another
        // volume.
        let mut dynamic = pv.clone();
        dynamic["reservations"] = json!([{"type": "DYNAMIC", "role": "db", "principal": "p"}]);
        let mut path_disk = pv.clone();
        path_disk["disk"]["source"] = json!({"type": "PATH", "path": {"root": "/mnt/d"}});
        let mut shared = pv.clone();
        shared["shared"] = json!({});
        for (what, r) in [
            ("role", volume("pv-1", "web", 64.0, "data", "RW")),
            ("size", volume("pv-1", "db", 32.0, "data", "RW")),
            ("id", volume("pv-2", "db", 64.0, "data", "RW")),
            ("reservation", dynamic),
            ("disk source", path_disk),
            ("sharedness", shared),
        ] {
            let err = iso.plan(&pv_config("c1", &e.sandbox, &r)).expect_err(what);
            assert_eq!(err.code(), ErrorCode::InvalidArgument, "{what}: {err}");
            assert!(err.to_string().contains("checkpointed"), "{what}: {err}");
        }
        // Once DESTROYed (checkpointed away), refused again.
        agent.checkpoint_resources(Vec::new()).await.unwrap();
        let err = iso
            .plan(&pv_config("c1", &e.sandbox, &pv))
            .expect_err("destroyed");
        assert!(err.to_string().contains("persistent volume pv-1"), "{err}");
    });
}

#[test]
fn invalid_checkpointed_resources_are_invalid_argument() {
    let e = env();
    rt().block_on(async {
        let agent = Agent::open(Settings {
            work_dir: e.work.clone(),
            resources: Some("cpus:1;mem:128;disk(db):1000".into()),
            ..Settings::default()
        })
        .await
        .unwrap();
        let mut bad = resources(&[volume("pv-1", "db", 64.0, "data", "RW")]);
        bad[0].name = String::new();
        let err = agent.checkpoint_resources(bad).await.expect_err("invalid");
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err:#}");
        assert!(agent.resources().await.checkpointed.is_empty());
    });
}

#[test]
fn a_resources_change_holds_prepares_before_their_plan() {
    let e = env();
    let iso = isolator(&e, PreparePolicy::default());
    let cfg = host_path_config("c1", &e.sandbox, &e.root.join("data/ok"));
    rt().block_on(async {
        let held = iso.hold_prepares().await;
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(200), iso.prepare(&cfg)).await;
        assert!(
            waited.is_err(),
            "prepared while a resources change was under way"
        );
        nothing_changed(&e, "c1");
        drop(held);
        iso.prepare(&cfg).await.unwrap();
        assert!(e.work.join("containers/c1.json").exists());
        iso.cleanup("c1").await.unwrap();
    });
}
