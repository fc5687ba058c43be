//! The volume manager against the fake plugin doing real bind mounts, inside a private mount
//! namespace (root; skipped with a message otherwise, never in CI): read-only beside
//! read-write with real data, a plugin that answers OK but leaves mounts, a non-idempotent
//! (stacking) plugin under a crash of our process at every intent point, and stray mount
//! directories. After each scenario the mount table is checked: nothing is left mounted under
//! berth's roots, and the records agree.
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

use berth_csi::CsiClient;
use berth_csi::manager::{HookPoint, VolumeManager, VolumeSpec};
use berth_csi::record::{Capability, Mode};
use berth_mount::Mounter;
use common::{FakePlugin, in_ns, mounts_below, privileged};

fn manager(socket: &Path, work: &Path, boot: &str) -> VolumeManager<CsiClient> {
    let client = common::client(socket, Duration::from_secs(5), Duration::from_secs(10));
    common::manager_for(&common::unmanaged(socket), client, work, boot, None)
}

fn spec(id: &str) -> VolumeSpec {
    VolumeSpec {
        volume_id: id.into(),
        capability: Capability {
            fs_type: "ext4".into(),
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
    root: PathBuf,
    sock: PathBuf,
    work: PathBuf,
    volumes: PathBuf,
    p: FakePlugin,
}

/// A fake plugin with real mounts: volumes under `<tmp>/volumes`, berth's work dir `<tmp>/work`.
async fn env(stack: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let sock = root.join("p.sock");
    let work = root.join("work");
    let volumes = root.join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let p = FakePlugin::start(&sock).await;
    {
        let mut st = p.st();
        st.real_mounts = Some(volumes.clone());
        st.stack_mounts = stack;
    }
    Env {
        _dir: dir,
        root,
        sock,
        work,
        volumes,
        p,
    }
}

/// Nothing mounted under the work dir, no record, no mount directory for `id`.
fn assert_clean(e: &Env, m: &VolumeManager<CsiClient>, id: &str) {
    assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
    assert!(m.load(id).unwrap().is_none(), "record of {id} left");
    assert!(!m.mount_dir(id).unwrap().exists());
}

#[test]
fn read_write_and_read_only_consumers_share_real_data() {
    if !privileged("read_write_and_read_only_consumers_share_real_data") {
        return;
    }
    in_ns(|| async {
        let e = env(false).await;
        let m = Arc::new(manager(&e.sock, &e.work, "b1"));
        let id = "vol ü/1";
        // Three consumers at once: two RW, one RO.
        let mut tasks = Vec::new();
        for (c, mode) in [("a", Mode::Rw), ("b", Mode::Ro), ("c", Mode::Rw)] {
            let m = Arc::clone(&m);
            tasks.push(tokio::spawn(async move {
                m.publish(&spec(id), c, mode).await.unwrap()
            }));
        }
        let mut paths = Vec::new();
        for t in tasks {
            paths.push(t.await.unwrap());
        }
        let (rw, ro) = (&paths[0], &paths[1]);
        assert_eq!(
            paths[0], paths[2],
            "both RW consumers share one publication"
        );
        assert_ne!(rw, ro, "the RO consumer has its own publication");

        let table = berth_mount::MountTable::read_current().unwrap();
        let rw_mount = table.top_mount_at(rw).expect("RW target mounted");
        assert!(!rw_mount.is_read_only());
        let ro_mount = table.top_mount_at(ro).expect("RO target mounted");
        assert!(ro_mount.is_read_only());
        let staging = m.mount_dir(id).unwrap().join("staging");
        assert!(
            table.is_mount_point(&staging),
            "staged once at the staging path"
        );
        assert_eq!(mounts_below(&e.root).len(), 3, "staging + 2 targets");
        drop(table);

        std::fs::write(rw.join("data"), b"written through RW").unwrap();
        assert_eq!(
            std::fs::read(ro.join("data")).unwrap(),
            b"written through RW"
        );
        let err = std::fs::write(ro.join("other"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));

        // Concurrent cleanup of all three.
        let mut tasks = Vec::new();
        for c in ["a", "b", "c"] {
            let m = Arc::clone(&m);
            tasks.push(tokio::spawn(
                async move { m.unpublish(id, c).await.unwrap() },
            ));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_clean(&e, &m, id);
        // The data lives on in the volume.
        let vol = e
            .volumes
            .join(berth_mount::names::encode_component(id).unwrap());
        assert_eq!(
            std::fs::read(vol.join("data")).unwrap(),
            b"written through RW"
        );
        let st = e.p.st();
        assert_eq!(st.count("NodeStageVolume"), 1);
        assert_eq!(st.count("NodePublishVolume"), 2);
        assert_eq!(st.count("NodeUnpublishVolume"), 2);
        assert_eq!(st.count("NodeUnstageVolume"), 1);
    });
}

#[test]
fn plugin_answering_ok_but_leaving_mounts_is_asked_again_then_cleaned_by_berth() {
    if !privileged("plugin_answering_ok_but_leaving_mounts") {
        return;
    }
    in_ns(|| async {
        // Once: asking again is enough.
        let e = env(false).await;
        let m = manager(&e.sock, &e.work, "b1");
        m.publish(&spec("v1"), "a", Mode::Rw).await.unwrap();
        e.p.st().ignore_unpublish = 1;
        m.unpublish("v1", "a").await.unwrap();
        assert_eq!(e.p.st().count("NodeUnpublishVolume"), 2);
        assert_clean(&e, &m, "v1");

        // Always: after the repeats berth unmounts the leftovers itself.
        m.publish(&spec("v2"), "a", Mode::Rw).await.unwrap();
        e.p.st().ignore_unpublish = 100;
        m.unpublish("v2", "a").await.unwrap();
        assert_eq!(e.p.st().count("NodeUnpublishVolume"), 2 + 3);
        assert_clean(&e, &m, "v2");
    });
}

#[test]
fn stray_mount_dirs_are_unmounted_and_removed_without_deleting_data() {
    if !privileged("stray_mount_dirs_are_unmounted_and_removed") {
        return;
    }
    in_ns(|| async {
        let e = env(false).await;
        let m = manager(&e.sock, &e.work, "b1");
        // A mount directory without a record, with a volume still bound in it (a crash
        // between the plugin's mount and our first record, or an older layout).
        let dir = m.mount_dir("stray/1").unwrap();
        let target = dir.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let data = e.volumes.join("precious");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("keep"), b"keep me").unwrap();
        berth_mount::LinuxMounter::new()
            .bind(&data, &target, &berth_mount::BindOptions::default())
            .unwrap();
        // A directory that is not our encoding is not ours: left alone.
        let foreign = dir.parent().unwrap().join("foreign%zz");
        std::fs::create_dir_all(&foreign).unwrap();

        let report = m.recover(None).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.strays, 1);
        assert!(!dir.exists());
        assert!(foreign.exists());
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        assert_eq!(std::fs::read(data.join("keep")).unwrap(), b"keep me");
    });
}

// ----- crash of our process at every intent point, against a stacking plugin -----

const CRASH_ENV: &str = "BERTH_CSI_REAL_CRASH_AT";

/// Runs in a child process only: publish then unpublish one consumer, aborting at hook point
/// number `BERTH_CSI_REAL_CRASH_AT`. The child is spawned from the namespace thread, so it
/// shares the parent's private mount namespace.
#[test]
fn real_crash_child() {
    let Ok(at) = std::env::var(CRASH_ENV) else {
        return;
    };
    let at: usize = at.parse().unwrap();
    let sock = PathBuf::from(std::env::var("BERTH_CSI_SOCK").unwrap());
    let work = PathBuf::from(std::env::var("BERTH_CSI_WORK").unwrap());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut m = manager(&sock, &work, "b1");
            let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            m.set_hook(Arc::new(move |_p: HookPoint<'_>| {
                if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == at {
                    std::process::abort();
                }
            }));
            let target = m.publish(&spec("crash/1"), "ctr", Mode::Rw).await.unwrap();
            std::fs::write(target.join("before-crash"), b"data").unwrap();
            m.unpublish("crash/1", "ctr").await.unwrap();
        });
}

#[test]
fn crash_at_every_intent_point_with_a_stacking_plugin_leaves_no_mount() {
    if !privileged("crash_at_every_intent_point_with_a_stacking_plugin") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for at in 1..=9usize {
        for consumer_alive in [false, true] {
            let exe = exe.clone();
            in_ns(move || async move {
                let e = env(true).await;
                let out = tokio::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "real_crash_child",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env(CRASH_ENV, at.to_string())
                    .env("BERTH_CSI_SOCK", &e.sock)
                    .env("BERTH_CSI_WORK", &e.work)
                    .output()
                    .await
                    .unwrap();
                assert_eq!(out.status.success(), at == 9, "at {at}: {out:?}");
                let m = manager(&e.sock, &e.work, "b1");
                let alive = consumer_alive && at <= 4;
                let live = move |c: &str| alive && c == "ctr";
                let report = m.recover(Some(&live)).await.unwrap();
                assert!(report.errors.is_empty(), "at {at}: {:?}", report.errors);
                if alive {
                    // The consumer still runs: recovery finished its publish (the stacking
                    // plugin may now hold two mounts at the target).
                    let rec = m.load("crash/1").unwrap().unwrap();
                    assert_eq!(rec.mesos_state(), "PUBLISHED", "at {at}");
                    let target = rec.publications.values().next().unwrap().target.clone();
                    assert!(!mounts_below(&target).is_empty(), "at {at}");
                    m.unpublish("crash/1", "ctr").await.unwrap();
                }
                assert_clean(&e, &m, "crash/1");
                if at > 4 {
                    // The write happened before the crash and survives in the volume.
                    let vol = e
                        .volumes
                        .join(berth_mount::names::encode_component("crash/1").unwrap());
                    assert_eq!(
                        std::fs::read(vol.join("before-crash")).unwrap(),
                        b"data",
                        "at {at}"
                    );
                }
            });
        }
    }
}

#[test]
fn hostile_ids_and_a_plugin_restart_between_publish_and_unpublish_with_real_mounts() {
    if !privileged("hostile_ids_and_a_plugin_restart_with_real_mounts") {
        return;
    }
    in_ns(|| async {
        let mut e = env(false).await;
        let m = manager(&e.sock, &e.work, "b1");
        let mounts = m.mount_dir("x").unwrap().parent().unwrap().to_owned();
        let ids = [
            "a/b",
            "..",
            ".",
            "%2F",
            "with space",
            "ünïcödé",
            "../../etc",
        ];
        let mut targets = Vec::new();
        for id in ids {
            let t = m.publish(&spec(id), "c", Mode::Rw).await.unwrap();
            assert_eq!(t.parent().unwrap().parent().unwrap(), mounts, "{id}");
            std::fs::write(t.join("id"), id).unwrap();
            targets.push(t);
        }
        // Every target is a mount of its own volume, all below berth's mount root.
        assert_eq!(
            mounts_below(&mounts).len(),
            2 * ids.len(),
            "staging + target each"
        );
        for (id, t) in ids.iter().zip(&targets) {
            assert_eq!(std::fs::read_to_string(t.join("id")).unwrap(), *id);
        }
        // The plugin restarts (new socket inode) between publish and unpublish.
        e.p.restart().await;
        for id in ids {
            m.unpublish(id, "c").await.unwrap();
            assert!(m.load(id).unwrap().is_none(), "{id}");
        }
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        assert_eq!(std::fs::read_dir(&mounts).unwrap().count(), 0);
    });
}

#[test]
fn reboot_with_real_mounts_restages_only_for_live_consumers() {
    if !privileged("reboot_with_real_mounts") {
        return;
    }
    in_ns(|| async {
        let e = env(false).await;
        {
            let m = manager(&e.sock, &e.work, "boot-1");
            m.publish(&spec("dead"), "gone", Mode::Rw).await.unwrap();
            let t = m.publish(&spec("live"), "alive", Mode::Rw).await.unwrap();
            std::fs::write(t.join("before-reboot"), b"data").unwrap();
        }
        // The reboot: every mount is gone, the plugin forgets its in-memory state.
        let left = mounts_below(&e.root);
        assert_eq!(left.len(), 4, "staging + target for both: {left:?}");
        for mp in left.iter().rev() {
            nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
        {
            let mut st = e.p.st();
            st.published.clear();
            st.staged.clear();
            st.calls.clear();
        }
        let m = manager(&e.sock, &e.work, "boot-2");
        let live = |c: &str| c == "alive";
        let report = m.recover(Some(&live)).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!((report.records, report.rebooted, report.removed), (2, 2, 1));
        // Only the live volume was staged and published again, for real.
        let calls: Vec<(&str, String)> =
            e.p.st()
                .calls
                .iter()
                .filter(|c| !c.volume_id.is_empty())
                .map(|c| (c.method, c.volume_id.clone()))
                .collect::<Vec<_>>()
                .into_iter()
                .collect();
        assert_eq!(
            calls,
            [
                ("NodeStageVolume", "live".to_owned()),
                ("NodePublishVolume", "live".to_owned())
            ]
        );
        let target = m.mount_dir("live").unwrap().join("target");
        assert_eq!(mounts_below(&e.root).len(), 2, "staging + target of live");
        assert_eq!(
            std::fs::read(target.join("before-reboot")).unwrap(),
            b"data"
        );
        assert!(m.load("dead").unwrap().is_none());
        assert!(!m.mount_dir("dead").unwrap().exists());
        m.unpublish("live", "alive").await.unwrap();
        assert_clean(&e, &m, "live");
    });
}
