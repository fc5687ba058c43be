//! CSI volumes' `volume_mount_group` through the agent (`--volume-gid-range`), as root in a
//! private mount namespace with berth-csi's fake plugin advertising `VOLUME_MOUNT_GROUP`: a
//! CSI volume gets one gid from the range the shared persistent volumes use, never one of
//! theirs; the plugin gets it at stage and publish; `supplementary_gids` of a prepared
//! container names it (beside its shared volume's); the gid is released when the last
//! consumer is cleaned up; a restarted agent sees the gid of a volume still in use as taken.
//! Without the capability the plugin gets an empty group and the container no gid.
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

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_agent::agent::{Agent, Settings};
use berth_agent::container::ContainerConfig;
use berth_agent::resources::gids::GidRange;
use berth_resources::proto;
use csi_fake::{FakePlugin, in_ns, privileged};
use serde_json::{Value, json};

const PLUGIN: &str = "org.example.fake";
const GID: u32 = 47000;

struct Env {
    _dir: common::TempDir,
    root: PathBuf,
    work: PathBuf,
    conf: PathBuf,
    plugin: FakePlugin,
}

impl Env {
    async fn new(advertise: bool) -> Self {
        let (dir, root) = common::tempdir();
        let work = root.join("work");
        let conf = root.join("conf");
        for d in [&work, &conf] {
            std::fs::create_dir_all(d).unwrap();
        }
        let plugin = FakePlugin::start(&root.join("csi.sock")).await;
        plugin.st().volume_mount_group = advertise;
        std::fs::write(
            conf.join("fake.json"),
            json!({
                "type": PLUGIN,
                "endpoints": [{"csi_service": "NODE_SERVICE",
                               "endpoint": format!("unix://{}", plugin.socket.display())}],
            })
            .to_string(),
        )
        .unwrap();
        Self {
            _dir: dir,
            root,
            work,
            conf,
            plugin,
        }
    }

    async fn agent(&self) -> Agent {
        Agent::open(Settings {
            work_dir: self.work.clone(),
            csi_plugin_config_dir: Some(self.conf.clone()),
            resources: Some("disk(db):512".into()),
            volume_gid_range: Some(GidRange::new(GID, GID + 3).unwrap()),
            lock_wait: Duration::from_secs(5),
            ..Settings::default()
        })
        .await
        .unwrap()
    }

    /// A container with CSI volume `vol` and, when given, shared persistent volume `pv`.
    fn config(&self, id: &str, vol: &str, pv: Option<&str>) -> ContainerConfig {
        let sandbox = self.root.join("sandboxes").join(id);
        std::fs::create_dir_all(&sandbox).unwrap();
        let resources: Vec<Value> = pv.map(volume).into_iter().collect();
        let json = json!({
            "container_id": id,
            "sandbox": sandbox,
            "resources": resources,
            "volumes": [
                {"mode": "RW", "container_path": "csi",
                 "source": {"type": "CSI_VOLUME", "csi_volume": {
                     "plugin_name": PLUGIN,
                     "static_provisioning": {
                         "volume_id": vol,
                         "volume_capability": {"mount": {}, "access_mode": {"mode": "MULTI_NODE_MULTI_WRITER"}}}}}}
            ]
        });
        ContainerConfig::from_json(&json.to_string()).unwrap()
    }

    /// `volume_mount_group` of every stage and publish the plugin got, in order.
    fn groups_sent(&self) -> Vec<String> {
        self.plugin
            .st()
            .calls
            .iter()
            .filter(|c| matches!(c.method, "NodeStageVolume" | "NodePublishVolume"))
            .map(|c| c.mount_group.clone())
            .collect()
    }
}

fn volume(id: &str) -> Value {
    json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
        "reservations": [{"type": "STATIC", "role": "db"}],
        "shared": {},
        "disk": {"persistence": {"id": id, "principal": "p"},
                 "volume": {"mode": "RW", "container_path": "data"}}})
}

fn create(id: &str) -> proto::offer::Operation {
    berth_resources::json::from_json_value(
        &json!({"type": "CREATE", "create": {"volumes": [volume(id)]}}),
    )
    .unwrap()
}

/// The gid of the shared volume `id` in the committed checkpoint.
fn checkpoint_gid(work: &Path, id: &str) -> Option<u64> {
    let path = work.join("meta/resources/resources.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    v["gids"]
        .as_object()?
        .iter()
        .find(|(dir, _)| dir.ends_with(&format!("/{id}")))
        .and_then(|(_, g)| g.as_u64())
}

#[test]
fn a_csi_volume_gets_its_own_gid_from_the_shared_range_and_the_task_gets_it() {
    if !privileged("a_csi_volume_gets_its_own_gid_from_the_shared_range_and_the_task_gets_it") {
        return;
    }
    in_ns(|| async {
        let e = Env::new(true).await;
        let agent = e.agent().await;
        // A shared persistent volume takes the first gid.
        agent.apply_operation(create("pv-1")).await.unwrap();
        assert_eq!(checkpoint_gid(&e.work, "pv-1"), Some(u64::from(GID)));

        // Two containers on the CSI volume (one also on the shared volume): one gid for the
        // volume, the next free one, sent at stage and publish.
        let a = e.config("ctr-a", "vol-1", Some("pv-1"));
        let b = e.config("ctr-b", "vol-1", None);
        agent.prepare(&a).await.unwrap();
        agent.prepare(&b).await.unwrap();
        let csi_gid = GID + 1;
        assert_eq!(
            e.groups_sent(),
            [csi_gid.to_string(), csi_gid.to_string()],
            "one stage, one publish, both with the volume's gid"
        );
        assert_eq!(agent.supplementary_gids(&a).await, [GID, csi_gid]);
        assert_eq!(agent.supplementary_gids(&b).await, [csi_gid]);
        // Not prepared: no gid of a volume it does not use yet.
        let c = e.config("ctr-c", "vol-1", None);
        assert_eq!(agent.supplementary_gids(&c).await, Vec::<u32>::new());

        // A second shared volume skips the CSI volume's gid.
        agent.apply_operation(create("pv-2")).await.unwrap();
        assert_eq!(checkpoint_gid(&e.work, "pv-2"), Some(u64::from(GID + 2)));

        // A restarted agent (the volume still in use) holds the CSI gid from its record: a
        // new shared volume does not get it.
        agent.shutdown().await;
        drop(agent);
        let agent = e.agent().await;
        agent.recover_on_start().await.unwrap();
        assert_eq!(agent.supplementary_gids(&b).await, [csi_gid]);
        agent.apply_operation(create("pv-3")).await.unwrap();
        assert_eq!(checkpoint_gid(&e.work, "pv-3"), Some(u64::from(GID + 3)));

        // The last consumer gone: the record and the gid go; the gid serves a new volume.
        agent.cleanup("ctr-a").await.unwrap();
        assert_eq!(
            agent.supplementary_gids(&b).await,
            [csi_gid],
            "ctr-b still uses it"
        );
        agent.cleanup("ctr-b").await.unwrap();
        assert_eq!(agent.supplementary_gids(&b).await, Vec::<u32>::new());
        let d = e.config("ctr-d", "vol-2", None);
        agent.prepare(&d).await.unwrap();
        assert_eq!(
            agent.supplementary_gids(&d).await,
            [csi_gid],
            "released and given again"
        );
        agent.cleanup("ctr-d").await.unwrap();
        agent.shutdown().await;
    });
}

#[test]
fn without_the_capability_no_gid_is_sent_or_given() {
    if !privileged("without_the_capability_no_gid_is_sent_or_given") {
        return;
    }
    in_ns(|| async {
        let e = Env::new(false).await;
        let agent = e.agent().await;
        let a = e.config("ctr-a", "vol-1", None);
        agent.prepare(&a).await.unwrap();
        assert_eq!(e.groups_sent(), ["", ""]);
        assert_eq!(agent.supplementary_gids(&a).await, Vec::<u32>::new());
        agent.cleanup("ctr-a").await.unwrap();
        agent.shutdown().await;
    });
}
