//! The volume manager against the fake plugin: consumers, RO beside RW, plugin restarts,
//! failed unpublish retry queue, hostile ids, secrets, reboot, and a crash of our process at
//! every intent point (a child process aborted by the hook, then `recover`).
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
use std::sync::Arc;
use std::time::Duration;

use berth_csi::config::PluginConfig;
use berth_csi::manager::{HookPoint, VolumeManager, VolumeSpec};
use berth_csi::record::{Capability, Mode};
use berth_csi::{CsiClient, CsiError};
use berth_resources::proto::{Secret, secret};
use common::FakePlugin;
use tonic::Code;

fn plugin(socket: &Path) -> PluginConfig {
    common::unmanaged(socket)
}

fn client(socket: &Path) -> CsiClient {
    common::client(
        socket,
        Duration::from_millis(500),
        Duration::from_millis(600),
    )
}

fn manager(socket: &Path, work: &Path, boot: &str) -> VolumeManager<CsiClient> {
    manager_with(plugin(socket), socket, work, boot, None)
}

fn manager_with(
    cfg: PluginConfig,
    socket: &Path,
    work: &Path,
    boot: &str,
    secrets_dir: Option<PathBuf>,
) -> VolumeManager<CsiClient> {
    common::manager_for(&cfg, client(socket), work, boot, secrets_dir)
}

fn spec(id: &str) -> VolumeSpec {
    VolumeSpec {
        volume_id: id.into(),
        capability: Capability {
            fs_type: "ext4".into(),
            access_mode: 5,
            ..Default::default()
        },
        volume_context: BTreeMap::from([("k".into(), "v".into())]),
        stage_secrets: HashMap::new(),
        publish_secrets: HashMap::new(),
    }
}

/// Nothing staged or published at the plugin, no record, no directory left for `id`.
fn assert_clean(p: &FakePlugin, m: &VolumeManager<CsiClient>, id: &str) {
    let st = p.st();
    assert!(st.published.is_empty(), "published: {:?}", st.published);
    assert!(st.staged.is_empty(), "staged: {:?}", st.staged);
    drop(st);
    assert!(m.load(id).unwrap().is_none());
    assert!(!m.record_path(id).unwrap().exists());
    assert!(
        !m.mount_dir(id).unwrap().exists(),
        "{}",
        m.mount_dir(id).unwrap().display()
    );
}

struct Env {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    work: PathBuf,
    p: FakePlugin,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let work = dir.path().join("work");
    let p = FakePlugin::start(&sock).await;
    Env {
        sock,
        work,
        p,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_concurrently_one_stage_one_publish() {
    let e = env().await;
    let m = Arc::new(manager(&e.sock, &e.work, "b1"));
    let s = spec("vol-1");
    let (a, b) = tokio::join!(
        m.publish(&s, "ctr-a", Mode::Rw),
        m.publish(&s, "ctr-b", Mode::Rw)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert!(a.ends_with("mounts/vol-1/target"), "{}", a.display());
    assert!(a.join("published-by-fake").exists());
    let counts = |a: &str, b: &str| {
        let st = e.p.st();
        (st.count(a), st.count(b))
    };
    assert_eq!(counts("NodeStageVolume", "NodePublishVolume"), (1, 1));
    let rec = m.load("vol-1").unwrap().unwrap();
    assert_eq!(rec.mesos_state(), "PUBLISHED");
    assert_eq!(rec.consumers.len(), 2);
    // Concurrent cleanup of both consumers: exactly one unpublish and one unstage.
    let (x, y) = tokio::join!(m.unpublish("vol-1", "ctr-a"), m.unpublish("vol-1", "ctr-b"));
    x.unwrap();
    y.unwrap();
    assert_eq!(counts("NodeUnpublishVolume", "NodeUnstageVolume"), (1, 1));
    assert_clean(&e.p, &m, "vol-1");
    // Idempotent: unknown consumer / volume.
    m.unpublish("vol-1", "ctr-a").await.unwrap();
}

#[tokio::test]
async fn fsyncs_per_transition() {
    let e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    m.publish(&spec("v"), "c1", Mode::Rw).await.unwrap();
    // NODE_STAGE, VOL_READY, NODE_PUBLISH, PUBLISHED.
    assert_eq!(m.record_writes(), 4);
    m.publish(&spec("v"), "c2", Mode::Rw).await.unwrap();
    assert_eq!(m.record_writes(), 5);
    m.unpublish("v", "c2").await.unwrap();
    assert_eq!(m.record_writes(), 6);
    m.unpublish("v", "c1").await.unwrap();
    // NODE_UNPUBLISH, VOL_READY, NODE_UNSTAGE, removal.
    assert_eq!(m.record_writes(), 10);
}

#[tokio::test]
async fn read_only_consumer_beside_read_write_gets_its_own_publish() {
    let e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    let rw = m.publish(&spec("v"), "a", Mode::Rw).await.unwrap();
    let ro = m.publish(&spec("v"), "b", Mode::Ro).await.unwrap();
    assert_ne!(rw, ro);
    assert!(ro.ends_with("target-ro"));
    assert_eq!(e.p.st().published.get(ro.to_str().unwrap()), Some(&true));
    assert_eq!(e.p.st().published.get(rw.to_str().unwrap()), Some(&false));
    assert_eq!(e.p.st().count("NodeStageVolume"), 1);
    m.unpublish("v", "a").await.unwrap();
    assert_eq!(e.p.st().published.len(), 1);
    assert!(!rw.exists() && ro.exists());
    m.unpublish("v", "b").await.unwrap();
    assert_clean(&e.p, &m, "v");
    // A read-only access mode refuses a read-write consumer before any side effect.
    let mut s = spec("ro-only");
    s.capability.access_mode = 3;
    let err = m.publish(&s, "a", Mode::Rw).await.unwrap_err();
    assert!(matches!(err, CsiError::Spec { .. }), "{err}");
    assert_eq!(e.p.st().count("NodeStageVolume"), 1);
}

#[tokio::test]
async fn plugin_without_stage_unstage() {
    let e = env().await;
    e.p.st().stage_unstage = false;
    let m = manager(&e.sock, &e.work, "b1");
    m.publish(&spec("v"), "a", Mode::Rw).await.unwrap();
    assert_eq!(e.p.st().count("NodeStageVolume"), 0);
    assert_eq!(e.p.st().calls.last().unwrap().staging, "");
    m.unpublish("v", "a").await.unwrap();
    assert_eq!(e.p.st().count("NodeUnstageVolume"), 0);
    assert_clean(&e.p, &m, "v");
}

#[tokio::test]
async fn plugin_restart_between_publish_and_unpublish() {
    let mut e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    m.publish(&spec("v"), "a", Mode::Rw).await.unwrap();
    e.p.restart().await;
    m.unpublish("v", "a").await.unwrap();
    assert_eq!(
        e.p.st().count("NodeGetCapabilities"),
        2,
        "caps refreshed after restart"
    );
    assert_clean(&e.p, &m, "v");
}

#[tokio::test]
async fn failed_unpublish_stays_queued_and_is_retried() {
    let e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    m.publish(&spec("v"), "a", Mode::Rw).await.unwrap();
    e.p.st().fail_next("NodeUnpublishVolume", Code::Internal, 1);
    let err = m.unpublish("v", "a").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Internal));
    let rec = m.load("v").unwrap().unwrap();
    assert_eq!(rec.mesos_state(), "NODE_UNPUBLISH");
    assert!(
        rec.consumers.is_empty(),
        "the consumer is gone, the teardown is pending"
    );
    let report = m.retry_pending().await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.removed, 1);
    assert_clean(&e.p, &m, "v");
}

#[tokio::test]
async fn not_found_on_unpublish_counts_as_done() {
    let e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    m.publish(&spec("v"), "a", Mode::Rw).await.unwrap();
    e.p.st().fail_next("NodeUnpublishVolume", Code::NotFound, 1);
    // The fake did not remove the target because the call failed: do it as the plugin would.
    let target = m.mount_dir("v").unwrap().join("target");
    std::fs::remove_dir_all(&target).unwrap();
    e.p.st().published.clear();
    m.unpublish("v", "a").await.unwrap();
    assert_clean(&e.p, &m, "v");
}

#[tokio::test]
async fn failed_publish_rolls_back() {
    let e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    e.p.st()
        .fail_next("NodePublishVolume", Code::InvalidArgument, 1);
    let err = m.publish(&spec("v"), "a", Mode::Rw).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert_eq!(e.p.st().count("NodePublishVolume"), 1, "never retried");
    assert_clean(&e.p, &m, "v");
}

#[tokio::test]
async fn non_compliant_plugin_that_leaves_the_target() {
    let e = env().await;
    e.p.st().leave_target = true;
    let m = manager(&e.sock, &e.work, "b1");
    m.publish(&spec("v"), "a", Mode::Rw).await.unwrap();
    let err = m.unpublish("v", "a").await.unwrap_err();
    assert!(matches!(err, CsiError::Target { .. }), "{err}");
    assert_eq!(
        m.load("v").unwrap().unwrap().mesos_state(),
        "NODE_UNPUBLISH"
    );
}

#[tokio::test]
async fn hostile_volume_ids_stay_one_component() {
    let e = env().await;
    let m = manager(&e.sock, &e.work, "b1");
    let mounts = e.work.join("csi/org.berth.fake/default/mounts");
    for id in [
        "a/b",
        "..",
        ".",
        "%2F",
        "with space",
        "ünïcödé",
        "../../etc",
    ] {
        let t = m.publish(&spec(id), "c", Mode::Rw).await.unwrap();
        assert_eq!(t.parent().unwrap().parent().unwrap(), mounts, "{id}");
        assert!(t.starts_with(&mounts));
        assert_eq!(m.load(id).unwrap().unwrap().volume_id, id);
        m.unpublish(id, "c").await.unwrap();
        assert_clean(&e.p, &m, id);
    }
    assert!(matches!(
        m.publish(&spec(""), "c", Mode::Rw).await,
        Err(CsiError::InvalidId { .. })
    ));
    assert!(matches!(
        m.publish(&spec("v"), "../x", Mode::Rw).await,
        Err(CsiError::Spec { .. })
    ));
}

#[tokio::test]
async fn secrets_are_passed_stored_as_references_and_never_in_errors() {
    let e = env().await;
    let sdir = e.work.parent().unwrap().join("secrets");
    std::fs::create_dir_all(sdir.join("db")).unwrap();
    std::fs::write(sdir.join("db/password"), "REF-SECRET-42").unwrap();
    let m = manager_with(plugin(&e.sock), &e.sock, &e.work, "b1", Some(sdir));
    let mut s = spec("v");
    s.stage_secrets.insert(
        "token".into(),
        Secret {
            r#type: Some(secret::Type::Value as i32),
            value: Some(secret::Value {
                data: b"INLINE-SECRET-7".to_vec(),
            }),
            reference: None,
        },
    );
    s.publish_secrets.insert(
        "password".into(),
        Secret {
            r#type: Some(secret::Type::Reference as i32),
            reference: Some(secret::Reference {
                name: "db".into(),
                key: Some("password".into()),
            }),
            value: None,
        },
    );
    assert!(!format!("{s:?}").contains("SECRET"));
    // A failing stage whose error echoes the secrets.
    e.p.st().echo_secrets_in_error = true;
    e.p.st()
        .fail_next("NodeStageVolume", Code::Unauthenticated, 1);
    let err = m.publish(&s, "a", Mode::Rw).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("INLINE-SECRET-7"), "{text}");
    e.p.st()
        .fail_next("NodePublishVolume", Code::PermissionDenied, 1);
    let err = m.publish(&s, "a", Mode::Rw).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("REF-SECRET-42"), "{text}");
    // Success: the plugin got the values; the record holds references only.
    m.publish(&s, "a", Mode::Rw).await.unwrap();
    {
        let st = e.p.st();
        let stage = st
            .calls
            .iter()
            .rev()
            .find(|c| c.method == "NodeStageVolume")
            .unwrap();
        assert_eq!(stage.secrets["token"], "INLINE-SECRET-7");
        let publ = st
            .calls
            .iter()
            .rev()
            .find(|c| c.method == "NodePublishVolume")
            .unwrap();
        assert_eq!(publ.secrets["password"], "REF-SECRET-42");
    }
    let on_disk = std::fs::read_to_string(m.record_path("v").unwrap()).unwrap();
    assert!(!on_disk.contains("SECRET-"), "{on_disk}");
    assert!(on_disk.contains("\"password\"") && on_disk.contains("\"db\""));
    // A missing reference: typed error naming the key, nothing started.
    let mut bad = spec("w");
    bad.publish_secrets.insert(
        "x".into(),
        Secret {
            r#type: Some(secret::Type::Reference as i32),
            reference: Some(secret::Reference {
                name: "nope".into(),
                key: None,
            }),
            value: None,
        },
    );
    let calls = e.p.st().calls.len();
    assert!(matches!(
        m.publish(&bad, "a", Mode::Rw).await,
        Err(CsiError::Secret { .. })
    ));
    assert_eq!(e.p.st().calls.len(), calls);
    assert!(m.load("w").unwrap().is_none());
}

#[tokio::test]
async fn reboot_restages_only_for_live_consumers() {
    let e = env().await;
    {
        let m = manager(&e.sock, &e.work, "boot-1");
        m.publish(&spec("dead"), "gone", Mode::Rw).await.unwrap();
        m.publish(&spec("live"), "alive", Mode::Rw).await.unwrap();
    }
    // Reboot: every mount is gone (the fake's stand-in for a mount is a file in the target).
    {
        let mut st = e.p.st();
        for target in st.published.keys() {
            std::fs::remove_file(Path::new(target).join("published-by-fake")).unwrap();
        }
        st.published.clear();
        st.staged.clear();
        st.calls.clear();
    }
    let m = manager(&e.sock, &e.work, "boot-2");
    let live = |c: &str| c == "alive";
    let report = m.recover(Some(&live)).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((report.records, report.rebooted, report.removed), (2, 2, 1));
    {
        let st = e.p.st();
        let ids: Vec<(&str, &str)> = st
            .calls
            .iter()
            .filter(|c| !c.volume_id.is_empty())
            .map(|c| (c.method, c.volume_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [("NodeStageVolume", "live"), ("NodePublishVolume", "live")]
        );
    }
    assert!(m.load("dead").unwrap().is_none());
    let rec = m.load("live").unwrap().unwrap();
    assert_eq!(
        (rec.mesos_state(), rec.boot_id.as_deref()),
        ("PUBLISHED", Some("boot-2"))
    );
    m.unpublish("live", "alive").await.unwrap();
    assert_clean(&e.p, &m, "live");
}

// ----- crash injection: our process dies at every hook point -----

const CRASH_ENV: &str = "BERTH_CSI_CRASH_AT";

/// Runs in a child process only (no-op otherwise): publish then unpublish one consumer,
/// aborting the process at hook point number `BERTH_CSI_CRASH_AT`.
#[test]
fn crash_child() {
    let Ok(at) = std::env::var(CRASH_ENV) else {
        return;
    };
    let at: usize = at.parse().unwrap();
    let sock = PathBuf::from(std::env::var("BERTH_CSI_SOCK").unwrap());
    let work = PathBuf::from(std::env::var("BERTH_CSI_WORK").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut m = manager(&sock, &work, "b1");
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        m.set_hook(Arc::new(move |_p: HookPoint<'_>| {
            if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == at {
                std::process::abort();
            }
        }));
        m.publish(&spec("crash vol/1"), "ctr", Mode::Rw)
            .await
            .unwrap();
        m.unpublish("crash vol/1", "ctr").await.unwrap();
    });
}

#[tokio::test]
async fn crash_at_every_intent_point_then_recover() {
    let exe = std::env::current_exe().unwrap();
    // Hook points of publish+unpublish with staging: 8 (intent and done for each RPC).
    for at in 1..=9usize {
        for consumer_alive in [false, true] {
            let e = env().await;
            let out = tokio::process::Command::new(&exe)
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CRASH_ENV, at.to_string())
                .env("BERTH_CSI_SOCK", &e.sock)
                .env("BERTH_CSI_WORK", &e.work)
                .output()
                .await
                .unwrap();
            assert_eq!(out.status.success(), at == 9, "at {at}: {out:?}");
            let m = manager(&e.sock, &e.work, "b1");
            let live = move |c: &str| consumer_alive && c == "ctr" && at <= 4;
            let report = m.recover(Some(&live)).await.unwrap();
            assert!(report.errors.is_empty(), "at {at}: {:?}", report.errors);
            if consumer_alive && at <= 4 {
                // The consumer still runs: recovery finished the publish.
                let rec = m.load("crash vol/1").unwrap().unwrap();
                assert_eq!(rec.mesos_state(), "PUBLISHED", "at {at}");
                assert_eq!(e.p.st().published.len(), 1, "at {at}");
                m.unpublish("crash vol/1", "ctr").await.unwrap();
            }
            assert_clean(&e.p, &m, "crash vol/1");
        }
    }
}
