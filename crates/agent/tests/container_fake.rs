//! The container lifecycle against `berth-mount`'s recording fake, as a normal user: the
//! fake-mounter variants of the privileged tests in `container.rs` (which keep proving the
//! real syscalls). What is checked here is the isolator's own logic: the plan's order and
//! bind options, one intent record per transition, unmounts nested first, the refusal of a
//! second prepare, and recovery's verdicts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use berth_agent::container::{ContainerConfig, ContainerError, Isolator, PersistentVolumes};
use berth_mount::fake::{Recorded, RecordingMounter};
use berth_mount::{Mounter, Propagation};
use berth_resources::proto;
use common::FakeKernel;

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
    volumes: PathBuf,
    host: PathBuf,
    kernel: Arc<FakeKernel>,
}

fn env() -> Env {
    let (dir, root) = common::tempdir();
    let work = root.join("work");
    let sandbox = root.join("sandbox");
    let volumes = root.join("volumes");
    let host = root.join("host");
    for d in [&work, &sandbox, &volumes, &host] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(volumes.join("pv-1")).unwrap();
    std::fs::create_dir_all(volumes.join("pv-2")).unwrap();
    Env {
        _dir: dir,
        root,
        work,
        sandbox,
        volumes,
        host,
        kernel: Arc::new(FakeKernel(RecordingMounter::new())),
    }
}

fn isolator(e: &Env) -> Isolator {
    Isolator::new(&e.work, Arc::new(Dirs(e.volumes.clone())), None)
        .with_mounter(Arc::clone(&e.kernel) as Arc<dyn Mounter>)
}

fn config(e: &Env, id: &str) -> ContainerConfig {
    let json = serde_json::json!({
        "container_id": id,
        "sandbox": e.sandbox,
        "resources": [
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
             "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
             "disk": {"persistence": {"id": "pv-1"}, "volume": {"mode": "RW", "container_path": "data"}}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
             "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
             "disk": {"persistence": {"id": "pv-2"}, "volume": {"mode": "RO", "container_path": "data/ro"}}}
        ],
        "volumes": [
            {"mode": "RW", "container_path": "scratch",
             "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "tmp/scratch"}}},
            {"mode": "RO", "container_path": "etc-host",
             "source": {"type": "HOST_PATH", "host_path": {"path": e.host.display().to_string()}}}
        ]
    });
    ContainerConfig::from_json(&json.to_string()).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn prepare_and_cleanup_with_the_fake_mounter() {
    let e = env();
    let iso = isolator(&e);
    rt().block_on(async {
        let prepared = iso.prepare(&config(&e, "ctr-1")).await.unwrap();
        assert_eq!(iso.record_writes(), 1, "one intent record for the prepare");
        // Parents first: depth 1 by path, then the nested data/ro.
        let targets: Vec<PathBuf> = prepared.iter().map(|p| p.target.clone()).collect();
        assert_eq!(
            targets,
            ["data", "etc-host", "scratch", "data/ro"].map(|p| e.sandbox.join(p))
        );
        let binds: Vec<(PathBuf, PathBuf, bool, Option<Propagation>)> = e
            .kernel
            .0
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Recorded::BindInto {
                    source,
                    path_in_root,
                    opts,
                    ..
                } => Some((source, path_in_root, opts.attrs.read_only, opts.propagation)),
                _ => None,
            })
            .collect();
        let slave = Some(Propagation::Slave);
        assert_eq!(
            binds,
            vec![
                (e.volumes.join("pv-1"), "data".into(), false, slave),
                (e.host.clone(), "etc-host".into(), true, slave),
                (
                    e.sandbox.join("tmp/scratch"),
                    "scratch".into(),
                    false,
                    slave
                ),
                (e.volumes.join("pv-2"), "data/ro".into(), true, slave),
            ]
        );
        assert!(e.sandbox.join("tmp/scratch").is_dir(), "sandbox path made");
        let status = iso.status().unwrap();
        assert_eq!(status[0].state, "prepared");
        assert!(status[0].volumes.iter().all(|v| v.mounted), "{status:?}");
        assert_eq!(iso.users_of(&e.volumes.join("pv-1")), ["ctr-1"]);
        assert!(matches!(
            iso.prepare(&config(&e, "ctr-1")).await,
            Err(ContainerError::AlreadyPrepared { .. })
        ));

        iso.cleanup("ctr-1").await.unwrap();
        assert_eq!(iso.record_writes(), 2, "one intent record for the cleanup");
        assert_eq!(e.kernel.0.mounted(), Vec::<PathBuf>::new());
        let unmounts: Vec<PathBuf> = e
            .kernel
            .0
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Recorded::Unmount { target } => Some(target),
                _ => None,
            })
            .collect();
        assert_eq!(
            unmounts,
            ["data/ro", "scratch", "etc-host", "data"].map(|p| e.sandbox.join(p)),
            "nested first"
        );
        assert!(iso.load("ctr-1").unwrap().is_none());
        assert!(iso.users_of(&e.volumes.join("pv-1")).is_empty());
        iso.cleanup("ctr-1").await.unwrap(); // idempotent
        assert_eq!(iso.locks_in_use(), 0);
    });
}

#[test]
fn recover_keeps_live_and_orphans_cleans_the_rest_and_quarantines_with_the_fake_mounter() {
    let e = env();
    let iso = isolator(&e);
    let rt = rt();
    let mut sandboxes = Vec::new();
    for id in ["live", "orphan", "dead"] {
        let sb = e.root.join(format!("sb-{id}"));
        std::fs::create_dir_all(&sb).unwrap();
        let mut cfg = config(&e, id);
        cfg.sandbox = sb.clone();
        cfg.volumes.clear();
        rt.block_on(iso.prepare(&cfg)).unwrap();
        sandboxes.push(sb);
    }
    let corrupt = e.work.join("containers/bad.json");
    std::fs::write(&corrupt, b"{ nope").unwrap();

    let iso = isolator(&e); // a restarted process, the same kernel
    let report = rt
        .block_on(iso.recover(&["live".to_owned()], &["orphan".to_owned()]))
        .unwrap();
    assert_eq!(report.kept, ["live"]);
    assert!(report.incomplete.is_empty());
    assert_eq!(report.orphans_kept, ["orphan"]);
    assert_eq!(report.cleaned, ["dead"]);
    assert_eq!(report.quarantined, ["bad"]);
    assert_eq!(report.errors.len(), 1);
    let below = |sb: &PathBuf| {
        e.kernel
            .0
            .mounted()
            .into_iter()
            .filter(|m| m.starts_with(sb))
            .count()
    };
    assert_eq!(below(&sandboxes[0]), 2);
    assert_eq!(below(&sandboxes[1]), 2);
    assert_eq!(below(&sandboxes[2]), 0);
    assert!(!corrupt.exists());
    rt.block_on(iso.cleanup("live")).unwrap();
    rt.block_on(iso.cleanup("orphan")).unwrap();
    assert_eq!(e.kernel.0.mounted(), Vec::<PathBuf>::new());
}
