//! `volume_mount_group` (see `berth_csi::groups`): a gid per mount volume of a plugin that
//! advertises `VOLUME_MOUNT_GROUP`, recorded before the RPC that carries it, shared by every
//! consumer and publication, never one held by someone else, released with the record; and
//! nothing sent without the capability, without a gid source or for a block volume.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_csi::manager::{HookPoint, VolumeManager, VolumeSpec};
use berth_csi::record::{Capability, Mode, VolumeRecord};
use berth_csi::{CsiClient, CsiError};
use berth_mount::hook::Phase;
use common::{FakePlugin, RangeGroups};

fn client(socket: &Path) -> CsiClient {
    common::client(
        socket,
        Duration::from_millis(500),
        Duration::from_millis(600),
    )
}

fn spec(id: &str, block: bool) -> VolumeSpec {
    VolumeSpec {
        volume_id: id.into(),
        capability: Capability {
            block,
            fs_type: if block { String::new() } else { "ext4".into() },
            access_mode: 5,
            ..Default::default()
        },
        volume_context: BTreeMap::new(),
        stage_secrets: HashMap::new(),
        publish_secrets: HashMap::new(),
    }
}

struct Env {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    work: PathBuf,
    p: FakePlugin,
}

async fn env(advertise: bool, stage_unstage: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let work = dir.path().join("work");
    let p = FakePlugin::start(&sock).await;
    {
        let mut st = p.st();
        st.volume_mount_group = advertise;
        st.stage_unstage = stage_unstage;
    }
    Env {
        sock,
        work,
        p,
        _dir: dir,
    }
}

impl Env {
    fn manager(&self, groups: Option<Arc<RangeGroups>>) -> VolumeManager<CsiClient> {
        let cfg = common::unmanaged(&self.sock);
        match groups {
            Some(g) => common::manager_with_groups(&cfg, client(&self.sock), &self.work, "b1", g),
            None => common::manager_for(&cfg, client(&self.sock), &self.work, "b1", None),
        }
    }

    /// `(method, volume_mount_group)` of every stage and publish the plugin got.
    fn groups_sent(&self) -> Vec<(&'static str, String)> {
        self.p
            .st()
            .calls
            .iter()
            .filter(|c| matches!(c.method, "NodeStageVolume" | "NodePublishVolume"))
            .map(|c| (c.method, c.mount_group.clone()))
            .collect()
    }
}

/// The gid the record file on disk holds right now (read as raw JSON, as a restarted agent
/// would).
fn gid_on_disk(record: &Path) -> Option<u64> {
    let bytes = std::fs::read(record).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v.get("volume_mount_group")
        .and_then(serde_json::Value::as_u64)
}

/// `(intent, gid in the record file then)` at each intent point.
type Seen = Vec<(String, Option<u64>)>;

#[tokio::test]
async fn one_gid_per_volume_recorded_before_every_rpc_and_released_with_the_record() {
    for stage_unstage in [true, false] {
        let e = env(true, stage_unstage).await;
        // 7000 is a persistent volume's: never given to a CSI volume.
        let groups = RangeGroups::new(7000, 7003, [7000]);
        let mut m = e.manager(Some(Arc::clone(&groups)));
        let record = m.record_path("vol-1").unwrap();
        // At every intent point (record durable, RPC next) the record on disk holds the gid.
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (s2, r2) = (Arc::clone(&seen), record.clone());
        m.set_hook(Arc::new(move |p: HookPoint<'_>| {
            if p.phase == Phase::Intent && p.subject == ["vol-1"] {
                s2.lock()
                    .unwrap()
                    .push((p.step.to_owned(), gid_on_disk(&r2)));
            }
        }));
        let rw = m
            .publish(&spec("vol-1", false), "ctr-a", Mode::Rw)
            .await
            .unwrap();
        m.publish(&spec("vol-1", false), "ctr-b", Mode::Rw)
            .await
            .unwrap();
        m.publish(&spec("vol-1", false), "ctr-c", Mode::Ro)
            .await
            .unwrap();
        assert!(rw.join("published-by-fake").exists());
        let rec = m.load("vol-1").unwrap().unwrap();
        assert_eq!(rec.volume_mount_group, Some(7001));
        assert_eq!(groups.held(), BTreeMap::from([(record.clone(), 7001)]));
        // Every stage and publish carried it: one stage (when the plugin stages), one publish
        // per mode, all with the one gid.
        let mut expected = vec![];
        if stage_unstage {
            expected.push(("NodeStageVolume", "7001".to_owned()));
        }
        expected.push(("NodePublishVolume", "7001".to_owned()));
        expected.push(("NodePublishVolume", "7001".to_owned()));
        assert_eq!(e.groups_sent(), expected, "stage_unstage={stage_unstage}");
        let mut intents = vec![];
        if stage_unstage {
            intents.push(("NODE_STAGE".to_owned(), Some(7001)));
        }
        intents.push(("NODE_PUBLISH".to_owned(), Some(7001)));
        intents.push(("NODE_PUBLISH".to_owned(), Some(7001)));
        assert_eq!(*seen.lock().unwrap(), intents);

        // Another volume gets another gid.
        m.publish(&spec("vol-2", false), "ctr-a", Mode::Rw)
            .await
            .unwrap();
        assert_eq!(
            m.load("vol-2").unwrap().unwrap().volume_mount_group,
            Some(7002)
        );

        // The gids are found on disk by the agent's seeding at open.
        assert_eq!(
            berth_csi::groups::recorded(&e.work),
            BTreeMap::from([
                (record.clone(), 7001),
                (m.record_path("vol-2").unwrap(), 7002)
            ])
        );

        // Consumers leave: the gid stays while one is left, goes with the record.
        m.unpublish("vol-1", "ctr-a").await.unwrap();
        m.unpublish("vol-1", "ctr-c").await.unwrap();
        assert_eq!(gid_on_disk(&record), Some(7001));
        assert!(groups.held().contains_key(&record));
        m.unpublish("vol-1", "ctr-b").await.unwrap();
        assert!(!record.exists());
        assert!(!groups.held().contains_key(&record), "released");
        // Free again: the next new volume gets it.
        m.publish(&spec("vol-3", false), "ctr-a", Mode::Rw)
            .await
            .unwrap();
        assert_eq!(
            m.load("vol-3").unwrap().unwrap().volume_mount_group,
            Some(7001)
        );
        for v in ["vol-2", "vol-3"] {
            m.unpublish(v, "ctr-a").await.unwrap();
        }
        assert!(groups.held().is_empty());
        assert!(berth_csi::groups::recorded(&e.work).is_empty());
    }
}

#[tokio::test]
async fn without_the_capability_a_gid_source_or_for_a_block_volume_nothing_is_sent() {
    // The plugin does not advertise VOLUME_MOUNT_GROUP: no gid taken, none sent.
    let e = env(false, true).await;
    let groups = RangeGroups::new(7000, 7003, []);
    let m = e.manager(Some(Arc::clone(&groups)));
    m.publish(&spec("vol-1", false), "ctr-a", Mode::Rw)
        .await
        .unwrap();
    assert_eq!(m.load("vol-1").unwrap().unwrap().volume_mount_group, None);
    assert!(groups.held().is_empty());
    assert!(e.groups_sent().iter().all(|(_, g)| g.is_empty()));
    // The record has no such key at all (the format older agents read).
    let raw = std::fs::read_to_string(m.record_path("vol-1").unwrap()).unwrap();
    assert!(!raw.contains("volume_mount_group"), "{raw}");
    m.unpublish("vol-1", "ctr-a").await.unwrap();

    // The capability, but no gid source (no --volume-gid-range): nothing.
    let e = env(true, true).await;
    let m = e.manager(None);
    m.publish(&spec("vol-1", false), "ctr-a", Mode::Rw)
        .await
        .unwrap();
    assert_eq!(m.load("vol-1").unwrap().unwrap().volume_mount_group, None);
    assert!(e.groups_sent().iter().all(|(_, g)| g.is_empty()));
    m.unpublish("vol-1", "ctr-a").await.unwrap();

    // A block volume: volume_mount_group is a MountVolume field only.
    let e = env(true, true).await;
    let m = e.manager(Some(Arc::clone(&groups)));
    m.publish(&spec("blk", true), "ctr-a", Mode::Rw)
        .await
        .unwrap();
    assert_eq!(m.load("blk").unwrap().unwrap().volume_mount_group, None);
    assert!(groups.held().is_empty());
    m.unpublish("blk", "ctr-a").await.unwrap();
}

#[tokio::test]
async fn a_volume_already_in_use_without_a_gid_keeps_none() {
    // Published by an agent without a range; the range is set later: the running consumers
    // have no such group, so the volume gets none until it is staged again.
    let e = env(true, true).await;
    let m = e.manager(None);
    m.publish(&spec("vol-1", false), "ctr-a", Mode::Rw)
        .await
        .unwrap();
    drop(m);
    let groups = RangeGroups::new(7000, 7003, []);
    let m = e.manager(Some(Arc::clone(&groups)));
    m.publish(&spec("vol-1", false), "ctr-b", Mode::Ro)
        .await
        .unwrap();
    assert_eq!(m.load("vol-1").unwrap().unwrap().volume_mount_group, None);
    assert!(groups.held().is_empty());
    for c in ["ctr-a", "ctr-b"] {
        m.unpublish("vol-1", c).await.unwrap();
    }
    // Used again from scratch: now it gets one.
    m.publish(&spec("vol-1", false), "ctr-a", Mode::Rw)
        .await
        .unwrap();
    assert_eq!(
        m.load("vol-1").unwrap().unwrap().volume_mount_group,
        Some(7000)
    );
    m.unpublish("vol-1", "ctr-a").await.unwrap();
    assert!(groups.held().is_empty());
}

#[tokio::test]
async fn exhausted_range_refuses_before_any_rpc() {
    let e = env(true, true).await;
    let groups = RangeGroups::new(7000, 7000, [7000]);
    let m = e.manager(Some(Arc::clone(&groups)));
    let err = m
        .publish(&spec("vol-1", false), "ctr-a", Mode::Rw)
        .await
        .unwrap_err();
    assert!(matches!(err, CsiError::MountGroup { .. }), "{err}");
    assert!(err.to_string().contains("7000-7000"), "{err}");
    assert_eq!(e.p.st().count("NodeStageVolume"), 0);
    assert_eq!(e.p.st().count("NodePublishVolume"), 0);
    assert!(m.load("vol-1").unwrap().is_none());
    assert!(groups.held().is_empty());
}

#[test]
fn records_of_older_agents_load_without_a_gid() {
    let json = serde_json::json!({
        "schema_version": 1,
        "plugin_type": "t",
        "plugin_name": "n",
        "volume_id": "v",
        "stage": "VOL_READY",
        "boot_id": "b",
        "staging_path": null,
        "capability": {"block": false, "fs_type": "", "mount_flags": [], "access_mode": 1},
        "volume_context": {},
        "stage_secrets": {},
        "publish_secrets": {},
        "publications": {},
        "consumers": {"c": "rw"}
    });
    let rec: VolumeRecord = serde_json::from_value(json).unwrap();
    assert_eq!(rec.volume_mount_group, None);
}
