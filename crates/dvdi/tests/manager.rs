//! The consumer-balanced manager against the fake plugin: balanced identified calls, the
//! per-agent compatibility mode, explicit create, Remove never before the last Unmount,
//! records written before every call, failed unmounts kept and retried, a plugin that dies
//! between Mount and Unmount, hostile names, recovery against the plugin and mountinfo, and
//! our process killed at every intent point (a child process aborted by the hook) followed by
//! `recover`, which must unmount exactly the IDs that were mounted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_dvdi::discovery::Discovery;
use berth_dvdi::manager::{HookPoint, ManagerConfig, MountMode, VolumeManager};
use berth_dvdi::record::MountState;
use berth_dvdi::{ConsumerId, DockerVolume, DriverName, DvdiError, PluginRegistry, VolumeName};
use berth_mount::hook::Phase;
use common::{ErrStyle, FakePlugin, Fault, fast_config};

struct Env {
    dir: tempfile::TempDir,
    fake: FakePlugin,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["run", "mnt", "state"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let fake = FakePlugin::start(&dir.path().join("run/fake.sock"), &dir.path().join("mnt"));
        Self { dir, fake }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }
    fn config(&self, mode: MountMode) -> ManagerConfig {
        ManagerConfig {
            state_dir: self.p("state"),
            mode,
            create_missing: false,
            mountinfo: None,
        }
    }
    fn manager(&self, mode: MountMode) -> VolumeManager<PluginRegistry> {
        manager_at(&self.p("run"), self.config(mode))
    }
    fn volume(&self, name: &str) -> DockerVolume {
        let mut v = DockerVolume::new(
            DriverName::new("fake").unwrap(),
            VolumeName::new(name).unwrap(),
        );
        v.explicit_create = Some(false);
        v
    }
}

fn manager_at(run: &Path, config: ManagerConfig) -> VolumeManager<PluginRegistry> {
    let reg = PluginRegistry::new(
        Discovery::with_roots(vec![run.to_owned()], vec![]),
        fast_config(),
    );
    VolumeManager::new(reg, config).unwrap()
}

fn cid(s: &str) -> ConsumerId {
    ConsumerId::new(s).unwrap()
}

fn mounts_and_unmounts(fake: &FakePlugin) -> (Vec<String>, Vec<String>) {
    fake.with(|s| {
        (
            s.calls_to("/VolumeDriver.Mount")
                .iter()
                .map(common::Call::id)
                .collect(),
            s.calls_to("/VolumeDriver.Unmount")
                .iter()
                .map(common::Call::id)
                .collect(),
        )
    })
}

#[tokio::test]
async fn per_consumer_calls_are_balanced_and_identified() {
    let e = Env::new();
    let m = e.manager(MountMode::PerConsumer);
    let v = e.volume("data");
    let mp1 = m.mount(&v, &cid("c1")).await.unwrap();
    let mp2 = m.mount(&v, &cid("c2")).await.unwrap();
    assert_eq!(mp1, e.p("mnt/data"));
    assert_eq!(mp1, mp2);
    // A repeated mount of a mounted consumer makes no call.
    assert_eq!(m.mount(&v, &cid("c1")).await.unwrap(), mp1);
    assert_eq!(
        mounts_and_unmounts(&e.fake),
        (vec!["c1".into(), "c2".into()], vec![])
    );
    assert_eq!(
        e.fake.with(|s| s.ids("data")),
        BTreeSet::from(["c1".into(), "c2".into()])
    );

    // Remove never before the last Unmount.
    match m.remove(&v.driver, &v.name).await {
        Err(DvdiError::InUse { consumers, .. }) => assert_eq!(consumers, ["c1", "c2"]),
        other => panic!("{other:?}"),
    }
    m.unmount(&v.driver, &v.name, &cid("c1")).await.unwrap();
    assert_eq!(
        e.fake.with(|s| s.ids("data")),
        BTreeSet::from(["c2".into()])
    );
    assert!(matches!(
        m.remove(&v.driver, &v.name).await,
        Err(DvdiError::InUse { .. })
    ));
    m.unmount(&v.driver, &v.name, &cid("c2")).await.unwrap();
    // Unmount of an unknown consumer is a no-op.
    m.unmount(&v.driver, &v.name, &cid("c2")).await.unwrap();
    assert_eq!(mounts_and_unmounts(&e.fake).1, ["c1", "c2"]);
    assert!(
        m.load("fake", "data").unwrap().is_none(),
        "record removed with the last consumer"
    );
    m.remove(&v.driver, &v.name).await.unwrap();
    assert_eq!(e.fake.with(|s| s.count("/VolumeDriver.Remove")), 1);
    assert!(e.fake.with(|s| s.volumes.is_empty()));
}

#[tokio::test]
async fn per_agent_mode_mounts_once_per_volume() {
    let e = Env::new();
    let m = e.manager(MountMode::PerAgent {
        agent_id: "agent-7".into(),
    });
    let v = e.volume("shared");
    for c in ["c1", "c2", "c3"] {
        m.mount(&v, &cid(c)).await.unwrap();
    }
    m.unmount(&v.driver, &v.name, &cid("c2")).await.unwrap();
    m.unmount(&v.driver, &v.name, &cid("c1")).await.unwrap();
    assert_eq!(
        mounts_and_unmounts(&e.fake),
        (vec!["agent:agent-7".into()], vec![])
    );
    m.unmount(&v.driver, &v.name, &cid("c3")).await.unwrap();
    assert_eq!(
        mounts_and_unmounts(&e.fake),
        (vec!["agent:agent-7".into()], vec!["agent:agent-7".into()])
    );
    assert!(e.fake.with(|s| s.ids("shared").is_empty()));
}

#[tokio::test]
async fn explicit_create_policy() {
    let e = Env::new();
    let m = e.manager(MountMode::PerConsumer);
    let mut v = e.volume("new");
    v.options.insert("size".into(), "5".into());
    v.options.insert("label".into(), "x=y,z".into());

    // Explicit (the manager's default for a spec that does not say): Get, no Create, no Mount.
    v.explicit_create = None;
    match m.mount(&v, &cid("c1")).await {
        Err(DvdiError::NoSuchVolume { plugin, volume, .. }) => {
            assert_eq!((plugin.as_str(), volume.as_str()), ("fake", "new"))
        }
        other => panic!("{other:?}"),
    }
    e.fake.with(|s| {
        assert_eq!(
            (
                s.count("/VolumeDriver.Get"),
                s.count("/VolumeDriver.Create"),
                s.count("/VolumeDriver.Mount")
            ),
            (1, 0, 0)
        );
    });
    assert!(
        m.load("fake", "new").unwrap().is_none(),
        "a refused mount leaves no record"
    );

    // A plugin that answers Get of a missing volume with an error (buttervolume, easyfuse).
    e.fake.with(|s| s.quirks.get_null = false);
    v.explicit_create = Some(true);
    match m.mount(&v, &cid("c1")).await {
        Err(DvdiError::NoSuchVolume { cause: Some(c), .. }) => {
            assert!(c.contains("Missing option"), "{c}")
        }
        other => panic!("{other:?}"),
    }

    // Allowed: Get, then Create with the options as a map, then Mount.
    v.explicit_create = Some(false);
    m.mount(&v, &cid("c1")).await.unwrap();
    e.fake.with(|s| {
        assert_eq!(
            s.created_opts["new"],
            serde_json::json!({"label": "x=y,z", "size": "5"})
        );
        let order: Vec<&str> = s
            .calls
            .iter()
            .rev()
            .take(3)
            .map(|c| c.path.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "/VolumeDriver.Mount",
                "/VolumeDriver.Create",
                "/VolumeDriver.Get"
            ]
        );
    });
    // The volume now exists: a second consumer does not Create again.
    m.mount(&v, &cid("c2")).await.unwrap();
    assert_eq!(e.fake.with(|s| s.count("/VolumeDriver.Create")), 1);

    // The manager-wide default can allow creation.
    let mut cfg = e.config(MountMode::PerConsumer);
    cfg.create_missing = true;
    let m2 = manager_at(&e.p("run"), cfg);
    let mut w = e.volume("other");
    w.explicit_create = None;
    m2.mount(&w, &cid("c9")).await.unwrap();
    assert!(e.fake.with(|s| s.volumes.contains_key("other")));
}

#[tokio::test]
async fn the_record_is_durable_before_every_call() {
    let e = Env::new();
    let mut m = e.manager(MountMode::PerConsumer);
    let state = e.p("state");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    m.set_hook(Arc::new(move |p| {
        let HookPoint {
            phase: Phase::Intent,
            subject: &[driver, volume, id],
            step: call,
            ..
        } = p
        else {
            return;
        };
        // Read the record from disk, as a restarted agent would.
        let reg = PluginRegistry::new(Discovery::with_roots(vec![], vec![]), fast_config());
        let probe = VolumeManager::new(
            reg,
            ManagerConfig {
                mountinfo: None,
                ..ManagerConfig::new(&state)
            },
        )
        .unwrap();
        let rec = probe
            .load(driver, volume)
            .unwrap()
            .expect("record written before the call");
        let mount = &rec.mounts[id];
        assert!(mount.in_flight);
        s2.lock()
            .unwrap()
            .push(format!("{call}:{id}:{:?}", mount.state));
    }));
    let v = e.volume("vol");
    m.mount(&v, &cid("c1")).await.unwrap();
    m.unmount(&v.driver, &v.name, &cid("c1")).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "/VolumeDriver.Mount:c1:Mounting",
            "/VolumeDriver.Unmount:c1:Unmounting"
        ]
    );
    assert!(m.record_writes() >= 4);
}

#[tokio::test]
async fn a_failed_unmount_is_kept_and_retried_not_forgotten() {
    let e = Env::new();
    let m = e.manager(MountMode::PerConsumer);
    let v = e.volume("vol");
    m.mount(&v, &cid("c1")).await.unwrap();
    m.mount(&v, &cid("c2")).await.unwrap();
    e.fake.with(|s| {
        s.faults.push_back((
            "/VolumeDriver.Unmount",
            Fault::Answer(500, r#"{"Err":"device busy"}"#),
        ))
    });
    match m.unmount(&v.driver, &v.name, &cid("c1")).await {
        Err(DvdiError::Plugin {
            message,
            status: 500,
            ..
        }) => assert_eq!(message, "device busy"),
        other => panic!("{other:?}"),
    }
    let rec = m.load("fake", "vol").unwrap().unwrap();
    assert_eq!(rec.mounts["c1"].state, MountState::Unmounting);
    assert!(
        !rec.mounts["c1"].in_flight,
        "the plugin answered: the failure is certain"
    );
    assert!(rec.consumers["c1"].leaving);
    // Other consumers are not blocked (a mount retries the pending unmount first, and goes
    // on when it fails again).
    for _ in 0..2 {
        e.fake.with(|s| {
            s.faults.push_back((
                "/VolumeDriver.Unmount",
                Fault::Answer(200, r#"{"Error":"still busy"}"#),
            ))
        });
    }
    m.mount(&v, &cid("c3")).await.unwrap();
    // Remove is refused while the unmount is pending.
    assert!(matches!(
        m.remove(&v.driver, &v.name).await,
        Err(DvdiError::InUse { .. })
    ));
    // A certain failure is retried, and an error is still an error.
    let r = m.retry_pending().await.unwrap();
    assert_eq!(r.errors.len(), 1);
    assert!(
        m.load("fake", "vol")
            .unwrap()
            .unwrap()
            .mounts
            .contains_key("c1")
    );
    let r = m.retry_pending().await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.unmounted.len(), 1);
    assert_eq!(
        e.fake.with(|s| s.ids("vol")),
        BTreeSet::from(["c2".into(), "c3".into()])
    );
}

#[tokio::test]
async fn a_plugin_that_dies_between_mount_and_unmount() {
    let mut e = Env::new();
    let m = e.manager(MountMode::PerConsumer);
    let v = e.volume("vol");
    m.mount(&v, &cid("c1")).await.unwrap();
    let state = Arc::clone(&e.fake.state);
    let sock = e.fake.socket.clone();
    e.fake.kill();
    match m.unmount(&v.driver, &v.name, &cid("c1")).await {
        Err(DvdiError::Unavailable {
            plugin, endpoint, ..
        }) => {
            assert_eq!(
                (plugin.as_str(), endpoint),
                ("fake", "/VolumeDriver.Unmount")
            );
        }
        other => panic!("{other:?}"),
    }
    let rec = m.load("fake", "vol").unwrap().unwrap();
    assert_eq!(rec.mounts["c1"].state, MountState::Unmounting);
    assert!(
        rec.mounts["c1"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("unavailable")
    );
    // While it is down the retry fails and keeps the intent.
    assert_eq!(m.retry_pending().await.unwrap().errors.len(), 1);
    // The plugin comes back (its own db kept the ID): the unmount completes.
    e.fake = FakePlugin::start_with(&sock, state);
    let r = m.retry_pending().await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.unmounted.len(), 1);
    assert!(e.fake.with(|s| s.ids("vol").is_empty()));
    assert!(m.load("fake", "vol").unwrap().is_none());
}

#[tokio::test]
async fn hostile_names_stay_inside_the_state_dir() {
    let e = Env::new();
    let m = e.manager(MountMode::PerConsumer);
    for name in [
        "../../etc/passwd",
        "..x",
        "a/b/../c",
        "%2e%2e",
        "vol with space",
        "ünï",
    ] {
        let v = e.volume(name);
        m.mount(&v, &cid("../c1")).await.unwrap();
        let path = m.record_path("fake", name).unwrap();
        assert!(path.starts_with(e.p("state")), "{}", path.display());
        assert_eq!(path.parent().unwrap().parent().unwrap(), e.p("state/fake"));
        assert!(path.is_file());
        m.unmount(&v.driver, &v.name, &cid("../c1")).await.unwrap();
        assert!(!path.exists());
    }
    assert_eq!(
        e.fake.with(|s| s.calls_to("/VolumeDriver.Mount")[0].id()),
        "../c1"
    );
    // Names that cannot be names are typed errors, before any call.
    assert!(VolumeName::new("").is_err());
    assert!(VolumeName::new("..").is_err());
    assert!(ConsumerId::new("a\nb").is_err());
    assert!(
        m.record_path("fake", &"%".repeat(100)).is_err(),
        "encoded name too long"
    );
    assert!(
        std::fs::read_dir(e.p("state/fake"))
            .unwrap()
            .next()
            .is_none()
    );
}

fn mountinfo_line(mp: &Path) -> String {
    format!(
        "100 1 0:99 / {} rw,relatime - fuse bindfs rw,user_id=0\n",
        mp.display()
    )
}

#[tokio::test]
async fn recover_keeps_live_consumers_unmounts_gone_ones_and_remounts_lost_mount_points() {
    let e = Env::new();
    let mi = e.p("mountinfo");
    let root_line = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".to_owned();
    std::fs::write(&mi, format!("{root_line}{}", mountinfo_line(&e.p("mnt/a")))).unwrap();
    let mut cfg = e.config(MountMode::PerConsumer);
    cfg.mountinfo = Some(mi.clone());
    let m = manager_at(&e.p("run"), cfg.clone());
    let a = e.volume("a");
    let b = e.volume("b");
    m.mount(&a, &cid("c1")).await.unwrap();
    m.mount(&a, &cid("c2")).await.unwrap();
    m.mount(&b, &cid("c3")).await.unwrap();
    assert!(m.load("fake", "a").unwrap().unwrap().mounts["c1"].was_mount_point);
    assert!(!m.load("fake", "b").unwrap().unwrap().mounts["c3"].was_mount_point);
    drop(m);

    // After a restart: c2 is gone, a's FUSE mount vanished (reboot, crashed daemon), and b
    // was removed at the plugin behind our back.
    std::fs::write(&mi, &root_line).unwrap();
    e.fake.with(|s| {
        s.volumes.remove("b");
        s.calls.clear();
    });
    let m = manager_at(&e.p("run"), cfg);
    let keep: BTreeSet<String> = ["c1".to_owned(), "c9".to_owned()].into();
    let r = m.recover(&keep).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.records, 2);
    let ids = |v: &[berth_dvdi::manager::Action]| {
        v.iter()
            .map(|a| format!("{}:{}", a.volume, a.id))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&r.unmounted), ["a:c2"]);
    assert_eq!(ids(&r.remounted), ["a:c1"]);
    assert_eq!(ids(&r.vanished), ["b:c3"]);
    let (mounts, unmounts) = mounts_and_unmounts(&e.fake);
    assert_eq!(mounts, ["c1"]);
    let mut unmounts = unmounts;
    unmounts.sort();
    assert_eq!(
        unmounts,
        ["c1", "c2"],
        "c1 balanced before the remount; nothing for vanished b"
    );
    assert!(m.load("fake", "b").unwrap().is_none());
    assert_eq!(e.fake.with(|s| s.ids("a")), BTreeSet::from(["c1".into()]));
}

// ----- crash injection: our process dies at every hook point -----

const CRASH_AT: &str = "BERTH_DVDI_CRASH_AT";
const CRASH_DIR: &str = "BERTH_DVDI_CRASH_DIR";

/// Runs in a child process only (a no-op otherwise): mount c1 and c2, unmount c1, aborting
/// the process at hook point number `BERTH_DVDI_CRASH_AT`.
#[tokio::test]
async fn crash_child() {
    let (Ok(at), Ok(dir)) = (std::env::var(CRASH_AT), std::env::var(CRASH_DIR)) else {
        return;
    };
    let at: usize = at.parse().unwrap();
    let dir = PathBuf::from(dir);
    let mut m = manager_at(
        &dir.join("run"),
        ManagerConfig {
            state_dir: dir.join("state"),
            mode: MountMode::PerConsumer,
            create_missing: true,
            mountinfo: None,
        },
    );
    let n = Arc::new(Mutex::new(0usize));
    m.set_hook(Arc::new(move |_| {
        let mut n = n.lock().unwrap();
        if *n == at {
            std::process::abort();
        }
        *n += 1;
    }));
    let v = DockerVolume::new(
        DriverName::new("fake").unwrap(),
        VolumeName::new("crash vol").unwrap(),
    );
    m.mount(&v, &cid("c1")).await.unwrap();
    m.mount(&v, &cid("c2")).await.unwrap();
    m.unmount(&v.driver, &v.name, &cid("c1")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_intent_point_then_recover_unmounts_exactly_the_mounted_ids() {
    let exe = std::env::current_exe().unwrap();
    // 6 hook points: Intent/Done of Mount c1, Mount c2, Unmount c1; 6 = no crash.
    for at in 0..=6usize {
        let e = Env::new();
        // Errors as HTTP 400 (easyfuse): a 200 Unmount is a real one.
        e.fake.with(|s| s.quirks.err = ErrStyle::Err(400));
        let status = tokio::process::Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CRASH_AT, at.to_string())
            .env(CRASH_DIR, e.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .unwrap();
        assert_eq!(status.success(), at == 6, "crash point {at}: {status:?}");
        let mounted_before = e.fake.with(|s| {
            s.calls.clear();
            s.ids("crash vol")
        });

        let m = e.manager(MountMode::PerConsumer);
        let r = m.recover(&BTreeSet::new()).await.unwrap();
        assert!(r.errors.is_empty(), "crash point {at}: {:?}", r.errors);
        let unmounted: Vec<String> = e.fake.with(|s| {
            s.calls_to("/VolumeDriver.Unmount")
                .into_iter()
                .filter(|c| c.status == 200)
                .map(|c| c.id())
                .collect()
        });
        let unmounted_set: BTreeSet<String> = unmounted.iter().cloned().collect();
        assert_eq!(
            unmounted.len(),
            unmounted_set.len(),
            "crash point {at}: one Unmount per ID"
        );
        assert_eq!(
            unmounted_set, mounted_before,
            "crash point {at}: recover unmounts exactly the mounted IDs"
        );
        e.fake.with(|s| {
            assert!(
                s.ids("crash vol").is_empty(),
                "crash point {at}: nothing left mounted"
            );
            assert_eq!(
                s.count("/VolumeDriver.Mount"),
                0,
                "crash point {at}: recovery never mounts for the dead"
            );
        });
        assert!(
            m.load("fake", "crash vol").unwrap().is_none(),
            "crash point {at}: record cleaned"
        );
        // Recovery is idempotent.
        let r = m.recover(&BTreeSet::new()).await.unwrap();
        assert_eq!((r.records, r.unmounted.len()), (0, 0));
    }
}
