//! A quarantined container keeps everything it holds (issue 15 item 4): a container with a
//! CSI volume (berth-csi's fake CSI plugin, on a unix socket) and a Docker volume (berth-dvdi's
//! in-memory driver) whose record is corrupted keeps its binds (the recording fake's mount
//! table), its CSI publication and its Docker mount across any number of recoveries — no
//! NodeUnpublish, NodeUnstage or Unmount reaches the plugins — is shown as `quarantined`,
//! refuses a new prepare and a plain cleanup (`FAILED_PRECONDITION`), and is released by
//! `cleanup --force`. A quarantined record that can still be read is cleaned up by a plain
//! cleanup, binds and all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;
#[path = "../../csi/tests/common/mod.rs"]
mod csi_fake;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::ErrorCode;
use berth_agent::container::{
    ContainerConfig, ContainerError, DockerVolumes, Isolator, PersistentVolumes,
};
use berth_csi::{CsiPlugins, PluginsConfig};
use berth_dvdi::fake::{MemoryDriver, MemoryDrivers};
use berth_dvdi::{Endpoint, ManagerConfig, VolumeDriver as _, VolumeManager};
use berth_mount::Mounter;
use berth_mount::fake::RecordingMounter;
use berth_resources::proto;
use common::FakeKernel;
use csi_fake::FakePlugin;
use serde_json::json;

const PLUGIN: &str = "org.example.fake";
const DRIVER: &str = "memfake";

struct NoVolumes;

impl PersistentVolumes for NoVolumes {
    fn volume_path(&self, _r: &proto::Resource) -> Result<PathBuf, String> {
        Err("none".into())
    }
}

struct Env {
    _dir: common::TempDir,
    work: PathBuf,
    sandbox: PathBuf,
    kernel: Arc<FakeKernel>,
    csi_plugin: FakePlugin,
    conf: PathBuf,
    driver: MemoryDriver,
    docker: Arc<VolumeManager<MemoryDrivers>>,
}

impl Env {
    async fn new() -> Self {
        let (dir, root) = common::tempdir();
        let work = root.join("work");
        let sandbox = root.join("sandbox");
        let conf = root.join("conf");
        for d in [&work, &sandbox, &conf, &root.join("docker")] {
            std::fs::create_dir_all(d).unwrap();
        }
        let csi_plugin = FakePlugin::start(&root.join("csi.sock")).await;
        std::fs::write(
            conf.join("fake.json"),
            json!({
                "type": PLUGIN,
                "endpoints": [{"csi_service": "NODE_SERVICE",
                               "endpoint": format!("unix://{}", csi_plugin.socket.display())}],
            })
            .to_string(),
        )
        .unwrap();
        let driver = MemoryDriver::new(DRIVER, root.join("docker"));
        driver.create("dv-1", &BTreeMap::new()).await.unwrap();
        let mut cfg = ManagerConfig::new(root.join("dvdi-state"));
        cfg.mountinfo = Some(PathBuf::from("/proc/thread-self/mountinfo"));
        let docker = Arc::new(
            VolumeManager::new(MemoryDrivers::default().with(driver.clone()), cfg).unwrap(),
        );
        Self {
            _dir: dir,
            work,
            sandbox,
            kernel: Arc::new(FakeKernel(RecordingMounter::new())),
            csi_plugin,
            conf,
            driver,
            docker,
        }
    }

    /// A fresh isolator on the same work dir, kernel and plugins (a restarted process).
    async fn isolator(&self) -> Isolator {
        let mut cfg = PluginsConfig::new(&self.work, &self.conf);
        cfg.ready_timeout = Duration::from_secs(10);
        let csi = Arc::new(CsiPlugins::start(cfg).await.unwrap());
        Isolator::new(&self.work, Arc::new(NoVolumes), Some(csi))
            .with_docker(Arc::clone(&self.docker) as Arc<dyn DockerVolumes>)
            .with_mounter(Arc::clone(&self.kernel) as Arc<dyn Mounter>)
    }

    fn config(&self, id: &str) -> ContainerConfig {
        let json = json!({
            "container_id": id,
            "sandbox": self.sandbox,
            "volumes": [
                {"mode": "RW", "container_path": "csi",
                 "source": {"type": "CSI_VOLUME", "csi_volume": {
                     "plugin_name": PLUGIN,
                     "static_provisioning": {
                         "volume_id": "vol-1",
                         "volume_capability": {"mount": {}, "access_mode": {"mode": "SINGLE_NODE_WRITER"}}}}}},
                {"mode": "RW", "container_path": "dv",
                 "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": DRIVER, "name": "dv-1"}}}
            ]
        });
        ContainerConfig::from_json(&json.to_string()).unwrap()
    }

    /// Releases that reached the plugins: (NodeUnpublish, NodeUnstage, Docker Unmount).
    fn releases(&self) -> (usize, usize, usize) {
        let st = self.csi_plugin.st();
        let unmounts = self
            .driver
            .calls()
            .into_iter()
            .filter(|(ep, _, _)| matches!(ep, Endpoint::Unmount))
            .count();
        (
            st.count("NodeUnpublishVolume"),
            st.count("NodeUnstageVolume"),
            unmounts,
        )
    }

    fn binds(&self) -> Vec<PathBuf> {
        self.kernel
            .0
            .mounted()
            .into_iter()
            .filter(|m| m.starts_with(&self.sandbox))
            .collect()
    }

    fn record(&self, id: &str) -> PathBuf {
        self.work.join(format!("containers/{id}.json"))
    }
}

fn quarantined(err: &ContainerError) {
    assert_eq!(err.code(), ErrorCode::FailedPrecondition, "{err}");
    assert!(matches!(err, ContainerError::Quarantined { .. }), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_container_keeps_its_binds_and_consumers_until_cleanup_force() {
    let e = Env::new().await;
    let iso = e.isolator().await;
    iso.prepare(&e.config("q1")).await.unwrap();
    let binds = e.binds();
    assert_eq!(binds, [e.sandbox.join("csi"), e.sandbox.join("dv")]);
    assert_eq!(e.releases(), (0, 0, 0));
    drop(iso);

    std::fs::write(e.record("q1"), b"{ corrupt").unwrap();
    for round in 0..3 {
        let iso = e.isolator().await;
        let report = iso.recover(&[], &[]).await.unwrap();
        if round == 0 {
            assert_eq!(report.quarantined, ["q1"], "{report:?}");
            assert!(report.quarantine_kept.is_empty(), "{report:?}");
        } else {
            assert!(report.quarantined.is_empty(), "{report:?}");
            assert_eq!(report.quarantine_kept, ["q1"], "{report:?}");
        }
        assert_eq!(
            e.releases(),
            (0, 0, 0),
            "round {round}: a release reached a plugin"
        );
        assert_eq!(e.binds(), binds, "round {round}: a bind went");
        let status = iso.status().unwrap();
        assert_eq!(status.len(), 1, "{status:?}");
        assert_eq!(status[0].container_id, "q1");
        assert_eq!(status[0].state, "quarantined");
        assert!(
            status[0].last_error.as_deref().unwrap().contains("--force"),
            "{status:?}"
        );
    }
    assert!(!e.record("q1").exists());

    let iso = e.isolator().await;
    // Neither a new prepare nor the containerizer's plain cleanup touches it.
    quarantined(&iso.prepare(&e.config("q1")).await.unwrap_err());
    quarantined(&iso.cleanup("q1").await.unwrap_err());
    assert_eq!(e.releases(), (0, 0, 0));
    assert_eq!(e.binds(), binds);

    // The operator's cleanup --force releases the plugin consumers.
    iso.force_cleanup("q1").await.unwrap();
    assert_eq!(e.releases(), (1, 1, 1));
    assert!(iso.status().unwrap().is_empty());
    let left: Vec<String> = common::entries(&e.work.join("containers-quarantine"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with(".released"), "{left:?}");
    // Done once: again, and a later recovery, change nothing.
    iso.force_cleanup("q1").await.unwrap();
    let report = iso.recover(&[], &[]).await.unwrap();
    assert!(report.quarantine_kept.is_empty(), "{report:?}");
    assert_eq!(e.releases(), (1, 1, 1));
    // The id can be used again.
    iso.prepare(&e.config("q1")).await.unwrap();
    iso.cleanup("q1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readable_quarantined_record_is_cleaned_up_by_a_plain_cleanup() {
    let e = Env::new().await;
    let iso = e.isolator().await;
    iso.prepare(&e.config("q2")).await.unwrap();
    // Corrupt only the schema version: the record is quarantined, but can still be read.
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(e.record("q2")).unwrap()).unwrap();
    rec["schema_version"] = json!(99);
    std::fs::write(e.record("q2"), rec.to_string()).unwrap();
    let iso2 = e.isolator().await;
    let report = iso2.recover(&[], &[]).await.unwrap();
    assert_eq!(report.quarantined, ["q2"]);
    let report = iso2.recover(&[], &[]).await.unwrap();
    assert_eq!(report.quarantine_kept, ["q2"]);
    assert_eq!(e.releases(), (0, 0, 0));
    assert_eq!(e.binds().len(), 2);

    iso2.cleanup("q2").await.unwrap();
    assert!(e.binds().is_empty(), "binds unmounted");
    assert_eq!(e.releases(), (1, 1, 1));
    assert!(!e.record("q2").exists());
    assert!(iso2.status().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_force_of_a_corrupt_record_not_yet_quarantined_quarantines_and_releases_it() {
    let e = Env::new().await;
    let iso = e.isolator().await;
    iso.prepare(&e.config("q3")).await.unwrap();
    iso.prepare(&{
        let mut other = e.config("other");
        other.sandbox = e.sandbox.with_file_name("sandbox-other");
        std::fs::create_dir_all(&other.sandbox).unwrap();
        other
    })
    .await
    .unwrap();
    std::fs::write(e.record("q3"), b"not json").unwrap();
    // The containerizer's plain cleanup of a corrupt record fails as before (nothing done).
    let err = iso.cleanup("q3").await.unwrap_err();
    assert!(matches!(err, ContainerError::Record { .. }), "{err:?}");
    assert_eq!(e.releases(), (0, 0, 0));
    // --force: moved aside, then its consumers (and only its) released.
    iso.force_cleanup("q3").await.unwrap();
    assert!(!e.record("q3").exists());
    let left = common::entries(&e.work.join("containers-quarantine"));
    assert!(
        left.len() == 1 && left[0].starts_with("q3.") && left[0].ends_with(".released"),
        "{left:?}"
    );
    // The volumes are shared with `other`: the last consumer is not gone, so the CSI volume
    // stays published and the Docker volume mounted; only q3's Docker consumer went.
    assert_eq!(e.releases(), (0, 0, 1));
    assert!(e.docker.mountpoint(DRIVER, "dv-1", "other").is_some());
    assert_eq!(e.docker.consumers(DRIVER, "dv-1"), ["other"]);
    iso.cleanup("other").await.unwrap();
    assert_eq!(e.releases(), (1, 1, 2));
}
