//! Container volumes for real (root, private mount namespaces; skipped with a message
//! otherwise, never in CI): persistent, sandbox-path and host-path volumes with modes, nested
//! container paths, a failing volume undoing the rest, hostile container paths, recovery
//! (live, orphans, unknown, corrupt), and a crash of the process at every intent and volume
//! step of prepare and cleanup followed by `recover`. After each: nothing mounted under the
//! test roots, data intact, records agreeing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;
use std::sync::Arc;

use berth_agent::container::{
    ContainerConfig, ContainerError, HookPoint, Isolator, PersistentVolumes,
};
use berth_resources::proto;
use berth_testkit::{in_ns, mounts_below, privileged};

/// Persistent volumes at `<root>/volumes/<persistence id>`.
struct Dirs(PathBuf);

impl PersistentVolumes for Dirs {
    fn volume_path(&self, r: &proto::Resource) -> Result<PathBuf, String> {
        let id = &r.disk.as_ref().unwrap().persistence.as_ref().unwrap().id;
        Ok(self.0.join(id))
    }
}

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    sandbox: PathBuf,
    volumes: PathBuf,
    host: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let work = root.join("work");
    let sandbox = root.join("sandbox");
    let volumes = root.join("volumes");
    let host = root.join("host");
    for d in [&work, &sandbox, &volumes, &host] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::create_dir_all(volumes.join("pv-1")).unwrap();
    std::fs::create_dir_all(volumes.join("pv-2")).unwrap();
    std::fs::write(host.join("config"), b"host data").unwrap();
    Env {
        _dir: dir,
        root,
        work,
        sandbox,
        volumes,
        host,
    }
}

fn isolator(e: &Env) -> Isolator {
    Isolator::new(&e.work, Arc::new(Dirs(e.volumes.clone())), None)
}

fn config(e: &Env, id: &str) -> ContainerConfig {
    let json = serde_json::json!({
        "container_id": id,
        "sandbox": e.sandbox,
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
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
        ],
        "environment": {"A": "b"}
    });
    ContainerConfig::from_json(&json.to_string()).unwrap()
}

#[test]
fn config_errors_are_typed() {
    let e = env();
    for (json, needle) in [
        ("[]", "must be a JSON object"),
        ("{\"container_id\": \"c\"}", "sandbox is required"),
        (
            "{\"container_id\": \"../x\", \"sandbox\": \"/tmp\"}",
            "container_id",
        ),
        (
            "{\"container_id\": \"c\", \"sandbox\": \"/tmp\", \"volums\": []}",
            "unknown key",
        ),
        (
            "{\"container_id\": \"c\", \"sandbox\": \"rel\"}",
            "must be absolute",
        ),
        (
            "{\"container_id\": \"c\", \"sandbox\": \"/tmp\", \"volumes\": [{\"mode\": \"XX\", \"container_path\": \"a\"}]}",
            "volumes[0]",
        ),
        (
            "{\"container_id\": \"c\", \"sandbox\": \"/tmp\", \"environment\": {\"a\": 1}}",
            "environment.a",
        ),
    ] {
        let err = ContainerConfig::from_json(json).unwrap_err();
        assert!(err.to_string().contains(needle), "{json}: {err}");
    }
    // Plans refuse hostile container paths before any side effect.
    let iso = isolator(&e);
    for (path, needle) in [
        ("../escape", "'..'"),
        ("/abs/without/rootfs", "without a rootfs"),
        ("", "empty"),
    ] {
        let mut cfg = config(&e, "c");
        cfg.volumes[0].container_path = path.into();
        let err = iso.plan(&cfg).unwrap_err();
        assert!(err.to_string().contains(needle), "{path}: {err}");
        assert!(
            err.to_string().contains("sandbox path tmp/scratch"),
            "{err}"
        );
    }
    let mut cfg = config(&e, "c");
    cfg.volumes[1].container_path = "scratch".into();
    assert!(
        iso.plan(&cfg)
            .unwrap_err()
            .to_string()
            .contains("used by another volume")
    );
    assert!(
        !e.work.join("containers").exists(),
        "no side effect before a valid plan"
    );
}

#[test]
fn prepare_and_cleanup_persistent_sandbox_and_host_volumes() {
    if !privileged("prepare_and_cleanup_persistent_sandbox_and_host_volumes") {
        return;
    }
    in_ns(|| async {
        let e = env();
        let iso = isolator(&e);
        let prepared = iso.prepare(&config(&e, "ctr-1")).await.unwrap();
        assert_eq!(prepared.len(), 4);
        assert_eq!(
            iso.record_writes(),
            1,
            "one intent record for the whole prepare"
        );
        // Parent before nested: data, then data/ro on top of (inside) it.
        let names: Vec<&str> = prepared.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], "persistent volume pv-1");
        assert_eq!(
            names[3], "persistent volume pv-2",
            "the nested data/ro comes last"
        );
        std::fs::write(e.sandbox.join("data/file"), b"v1").unwrap();
        assert_eq!(std::fs::read(e.volumes.join("pv-1/file")).unwrap(), b"v1");
        let ro = std::fs::write(e.sandbox.join("data/ro/x"), b"x").unwrap_err();
        assert_eq!(ro.raw_os_error(), Some(nix::libc::EROFS));
        assert_eq!(
            std::fs::read(e.sandbox.join("etc-host/config")).unwrap(),
            b"host data"
        );
        std::fs::write(e.sandbox.join("scratch/s"), b"s").unwrap();
        assert!(e.sandbox.join("tmp/scratch/s").exists());
        assert_eq!(mounts_below(&e.sandbox).len(), 4);
        let status = iso.status().unwrap();
        assert_eq!(status[0].state, "prepared");
        assert!(status[0].volumes.iter().all(|v| v.mounted));
        assert_eq!(iso.users_of(&e.volumes.join("pv-1")), ["ctr-1"]);

        // A second prepare of the same container is refused.
        assert!(matches!(
            iso.prepare(&config(&e, "ctr-1")).await,
            Err(ContainerError::AlreadyPrepared { .. })
        ));

        iso.cleanup("ctr-1").await.unwrap();
        assert_eq!(
            iso.record_writes(),
            2,
            "one more intent record for the whole cleanup"
        );
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        assert!(iso.load("ctr-1").unwrap().is_none());
        assert!(iso.users_of(&e.volumes.join("pv-1")).is_empty());
        // Data survives; a second container sees it.
        let mut cfg2 = config(&e, "ctr-2");
        cfg2.volumes.clear();
        iso.prepare(&cfg2).await.unwrap();
        assert_eq!(std::fs::read(e.sandbox.join("data/file")).unwrap(), b"v1");
        iso.cleanup("ctr-2").await.unwrap();
        iso.cleanup("ctr-2").await.unwrap(); // idempotent
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        // Operations on one container contending for its lock, beside another's: each runs
        // whole, and no lock entry outlives its operation (the map does not grow with every
        // container the agent ever ran).
        let mut cfg3 = config(&e, "ctr-3");
        cfg3.volumes.clear();
        let mut cfg4 = config(&e, "ctr-4");
        cfg4.volumes.clear();
        cfg4.resources.clear();
        let live = ["ctr-4".to_owned()];
        let (a, b, c, d) = tokio::join!(
            iso.prepare(&cfg3),
            iso.cleanup("ctr-3"),
            iso.prepare(&cfg4),
            iso.recover(&live, &[]),
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        d.unwrap();
        iso.cleanup("ctr-3").await.unwrap();
        iso.cleanup("ctr-4").await.unwrap();
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        assert_eq!(iso.locks_in_use(), 0, "a lock entry outlived its operation");
    });
}

#[test]
fn a_failing_volume_undoes_everything_and_is_named() {
    if !privileged("a_failing_volume_undoes_everything_and_is_named") {
        return;
    }
    in_ns(|| async {
        let e = env();
        let iso = isolator(&e);
        // A file where the host-path volume (a directory) must be mounted: a kind mismatch
        // after the first volumes are mounted.
        std::fs::write(e.sandbox.join("etc-host"), b"in the way").unwrap();
        let err = iso.prepare(&config(&e, "ctr-1")).await.unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("host path {}", e.host.display())),
            "{err}"
        );
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        assert!(iso.load("ctr-1").unwrap().is_none());
    });
}

#[test]
fn symlinks_in_the_sandbox_cannot_lead_a_mount_outside() {
    if !privileged("symlinks_in_the_sandbox_cannot_lead_a_mount_outside") {
        return;
    }
    in_ns(|| async {
        let e = env();
        let iso = isolator(&e);
        let outside = e.root.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, e.sandbox.join("link")).unwrap();
        std::os::unix::fs::symlink("../../..", e.sandbox.join("up")).unwrap();
        for path in ["link/x", "up/x"] {
            let mut cfg = config(&e, "c");
            cfg.resources.truncate(2);
            cfg.resources.remove(0);
            cfg.volumes.clear();
            cfg.resources[0]
                .disk
                .as_mut()
                .unwrap()
                .volume
                .as_mut()
                .unwrap()
                .container_path = path.into();
            match iso.prepare(&cfg).await {
                Ok(p) => {
                    assert!(
                        p[0].target.starts_with(&e.sandbox),
                        "{path}: {:?}",
                        p[0].target
                    );
                    iso.cleanup("c").await.unwrap();
                }
                Err(err) => assert!(err.to_string().contains("persistent volume pv-1"), "{err}"),
            }
            assert!(mounts_below(&outside).is_empty());
            assert!(
                std::fs::read_dir(&outside).unwrap().next().is_none(),
                "nothing created outside"
            );
            assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        }
    });
}

#[test]
fn recover_keeps_live_and_orphans_cleans_the_rest_and_quarantines_corrupt_records() {
    if !privileged("recover_keeps_live_and_orphans") {
        return;
    }
    in_ns(|| async {
        let e = env();
        let iso = isolator(&e);
        let mut sandboxes = Vec::new();
        for id in ["live", "orphan", "dead"] {
            let sb = e.root.join(format!("sb-{id}"));
            std::fs::create_dir_all(&sb).unwrap();
            let mut cfg = config(&e, id);
            cfg.sandbox = sb.clone();
            cfg.volumes.clear();
            iso.prepare(&cfg).await.unwrap();
            sandboxes.push(sb);
        }
        let corrupt = e.work.join("containers/bad.json");
        std::fs::write(&corrupt, b"{ nope").unwrap();

        let iso = isolator(&e); // a restarted process
        let report = iso
            .recover(&["live".to_owned()], &["orphan".to_owned()])
            .await
            .unwrap();
        assert_eq!(report.kept, ["live"]);
        assert_eq!(report.orphans_kept, ["orphan"]);
        assert_eq!(report.cleaned, ["dead"]);
        assert_eq!(report.quarantined, ["bad"]);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(mounts_below(&sandboxes[0]).len(), 2);
        assert_eq!(mounts_below(&sandboxes[1]).len(), 2);
        assert!(mounts_below(&sandboxes[2]).is_empty());
        assert!(!corrupt.exists());
        assert_eq!(
            std::fs::read_dir(e.work.join("containers-quarantine"))
                .unwrap()
                .count(),
            1
        );
        iso.cleanup("live").await.unwrap();
        iso.cleanup("orphan").await.unwrap();
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
    });
}

// ----- crash of the process at every step, then recover -----

const CRASH_ENV: &str = "BERTH_AGENT_CRASH_AT";

#[test]
fn crash_child() {
    let Ok(at) = std::env::var(CRASH_ENV) else {
        return;
    };
    let at: usize = at.parse().unwrap();
    let root = PathBuf::from(std::env::var("BERTH_AGENT_ROOT").unwrap());
    let e = Env {
        _dir: tempfile::tempdir().unwrap(),
        work: root.join("work"),
        sandbox: root.join("sandbox"),
        volumes: root.join("volumes"),
        host: root.join("host"),
        root,
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut iso = isolator(&e);
            let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            iso.set_hook(Arc::new(move |_p: HookPoint<'_>| {
                if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == at {
                    std::process::abort();
                }
            }));
            iso.prepare(&config(&e, "ctr")).await.unwrap();
            std::fs::write(e.sandbox.join("data/written"), b"before").unwrap();
            iso.cleanup("ctr").await.unwrap();
        });
}

#[test]
fn crash_at_every_step_then_recover_leaves_no_mount_and_keeps_data() {
    if !privileged("crash_at_every_step_then_recover") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    // Hook points: prepare intent + 4 × (source, mounted) = 9; cleanup intent + 4 ×
    // (unmounted, released) = 9; 19 = no crash.
    for at in 1..=19usize {
        for alive in [false, true] {
            let exe = exe.clone();
            in_ns(move || async move {
                let e = env();
                let out = tokio::process::Command::new(&exe)
                    .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                    .env(CRASH_ENV, at.to_string())
                    .env("BERTH_AGENT_ROOT", &e.root)
                    .output()
                    .await
                    .unwrap();
                assert_eq!(out.status.success(), at == 19, "at {at}: {out:?}");
                let iso = isolator(&e);
                let live: Vec<String> = if alive { vec!["ctr".into()] } else { vec![] };
                let report = iso.recover(&live, &[]).await.unwrap();
                assert!(report.errors.is_empty(), "at {at}: {:?}", report.errors);
                if alive && at < 19 {
                    // A live container is never torn down by recovery; one whose prepare was
                    // cut short is reported incomplete, and its own cleanup finishes it.
                    assert_eq!(report.kept, ["ctr"], "at {at}");
                    assert_eq!(report.incomplete.is_empty(), at == 9, "at {at}: {report:?}");
                    if at == 9 {
                        assert_eq!(mounts_below(&e.sandbox).len(), 4);
                    }
                    iso.cleanup("ctr").await.unwrap();
                } else {
                    assert!(report.kept.is_empty(), "at {at}");
                }
                assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new(), "at {at}");
                assert!(iso.load("ctr").unwrap().is_none(), "at {at}");
                if at > 9 {
                    assert_eq!(
                        std::fs::read(e.volumes.join("pv-1/written")).unwrap(),
                        b"before",
                        "at {at}"
                    );
                }
            });
        }
    }
}

#[test]
fn status_shows_consumers_and_a_failed_cleanup_keeps_its_record_and_error() {
    if !privileged("status_shows_consumers_and_a_failed_cleanup") {
        return;
    }
    in_ns(|| async {
        use berth_dvdi::fake::{MemoryDriver, MemoryDrivers};
        let e = env();
        let fuse = e.root.join("driver");
        std::fs::create_dir_all(fuse.join("shared")).unwrap();
        let driver = MemoryDriver::new("memory", &fuse);
        let mut cfg = berth_dvdi::ManagerConfig::new(e.root.join("dvdi"));
        cfg.create_missing = true;
        cfg.mountinfo = Some(PathBuf::from("/proc/thread-self/mountinfo"));
        let docker =
            berth_dvdi::VolumeManager::new(MemoryDrivers::default().with(driver.clone()), cfg)
                .unwrap();
        let iso = isolator(&e).with_docker(Arc::new(docker));
        let with_docker = |id: &str| {
            let mut c = config(&e, id);
            let sb = e.root.join(format!("sb-{id}"));
            std::fs::create_dir_all(&sb).unwrap();
            c.sandbox = sb;
            c.volumes = vec![berth_resources::json::from_json_value(&serde_json::json!({
                "mode": "RW", "container_path": "shared",
                "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": "memory", "name": "shared"}}
            }))
            .unwrap()];
            c
        };
        iso.prepare(&with_docker("a")).await.unwrap();
        iso.prepare(&with_docker("b")).await.unwrap();
        let status = iso.status().unwrap();
        assert_eq!(status.len(), 2);
        for c in &status {
            assert_eq!(c.last_error, None);
            let pv = c
                .volumes
                .iter()
                .find(|v| v.name == "persistent volume pv-1")
                .unwrap();
            assert_eq!(pv.consumers, ["a", "b"]);
            let dv = c
                .volumes
                .iter()
                .find(|v| v.name == "Docker volume memory/shared")
                .unwrap();
            assert_eq!(dv.consumers, ["a", "b"]);
            assert!(dv.mounted);
        }

        // The driver refuses Unmount: cleanup of `a` fails, its record stays with the error.
        driver.fail(berth_dvdi::Endpoint::Unmount, Some("device busy"));
        let err = iso.cleanup("a").await.unwrap_err();
        assert!(
            err.to_string().contains("Docker volume memory/shared"),
            "{err}"
        );
        let a = iso
            .status()
            .unwrap()
            .into_iter()
            .find(|c| c.container_id == "a")
            .unwrap();
        assert_eq!(a.state, "cleaning");
        assert!(
            a.last_error.as_deref().unwrap().contains("device busy"),
            "{:?}",
            a.last_error
        );
        // Its bind mounts are gone already; only the driver's consumer remains, for the retry.
        assert!(a.volumes.iter().all(|v| !v.mounted), "{a:?}");

        driver.fail(berth_dvdi::Endpoint::Unmount, None);
        let report = iso.recover(&["b".to_owned()], &[]).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.cleaned, ["a"]);
        assert_eq!(report.kept, ["b"]);
        let b = &iso.status().unwrap()[0];
        let dv = b
            .volumes
            .iter()
            .find(|v| v.name == "Docker volume memory/shared")
            .unwrap();
        assert_eq!(dv.consumers, ["b"]);
        iso.cleanup("b").await.unwrap();
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
        assert!(driver.mounted_ids("shared").is_empty());
    });
}

#[test]
fn a_nested_volume_does_not_propagate_into_the_parent_volume_or_other_containers() {
    if !privileged("a_nested_volume_does_not_propagate") {
        return;
    }
    in_ns(|| async {
        // A shared mount under everything, as `/` is on a systemd host.
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        nix::mount::mount(
            None::<&str>,
            &root,
            None::<&str>,
            nix::mount::MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        for d in [
            "work",
            "volumes/pv-1",
            "volumes/pv-2",
            "sb-a",
            "sb-b",
            "host",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let iso = Isolator::new(
            root.join("work"),
            Arc::new(Dirs(root.join("volumes"))),
            None,
        );
        let disk = |id: &str, path: &str| {
            serde_json::json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 1},
                "disk": {"persistence": {"id": id}, "volume": {"mode": "RW", "container_path": path}}})
        };
        let cfg = |id: &str, resources: Vec<serde_json::Value>| {
            ContainerConfig::from_json(
                &serde_json::json!({"container_id": id, "sandbox": root.join(format!("sb-{id}")), "resources": resources})
                    .to_string(),
            )
            .unwrap()
        };
        iso.prepare(&cfg("a", vec![disk("pv-1", "y")]))
            .await
            .unwrap();
        iso.prepare(&cfg("b", vec![disk("pv-1", "x"), disk("pv-2", "x/sub")]))
            .await
            .unwrap();
        let table = berth_mount::MountTable::read_current().unwrap();
        assert!(table.is_mount_point(&root.join("sb-b/x/sub")));
        assert!(
            !table.is_mount_point(&root.join("volumes/pv-1/sub")),
            "propagated into the volume's own directory"
        );
        assert!(
            !table.is_mount_point(&root.join("sb-a/y/sub")),
            "propagated into another container"
        );
        drop(table);
        iso.cleanup("b").await.unwrap();
        iso.cleanup("a").await.unwrap();
        assert_eq!(
            mounts_below(&root),
            vec![root.clone()],
            "only the test's own tmpfs is left"
        );
        nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH).unwrap();
    });
}

#[test]
fn a_quarantined_container_keeps_its_mounts_and_its_volume_counts_as_used() {
    if !privileged("a_quarantined_container_keeps_its_mounts") {
        return;
    }
    in_ns(|| async {
        let e = env();
        let iso = isolator(&e);
        let mut cfg = config(&e, "q");
        cfg.volumes.clear();
        iso.prepare(&cfg).await.unwrap();
        std::fs::write(e.work.join("containers/q.json"), b"{ truncated").unwrap();
        let iso = isolator(&e); // restarted
        let report = iso.recover(&[], &[]).await.unwrap();
        assert_eq!(report.quarantined, ["q"]);
        // Its volumes are unknown now: nothing of it is torn down ...
        assert_eq!(mounts_below(&e.sandbox).len(), 2);
        // ... and its persistent volume still counts as used (DESTROY must refuse).
        let users = iso.users_of(&e.volumes.join("pv-1"));
        assert_eq!(users.len(), 1, "{users:?}");
        assert!(users[0].starts_with("mount at "), "{users:?}");
        // An unreadable record counts as a user too (fail closed).
        std::fs::write(e.work.join("containers/r.json"), b"{}").unwrap();
        assert!(
            iso.users_of(&e.volumes.join("pv-2"))
                .iter()
                .any(|u| u.starts_with("r "))
        );
        for mp in mounts_below(&e.sandbox).iter().rev() {
            nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
    });
}

#[test]
fn a_fresh_volume_is_given_to_the_task_user_an_owned_one_is_left_alone() {
    if !privileged("a_fresh_volume_is_given_to_the_task_user") {
        return;
    }
    in_ns(|| async {
        use std::os::unix::fs::MetadataExt as _;
        let e = env();
        let iso = isolator(&e);
        // The task runs as 1234:1234 (its sandbox's owner). pv-1 is fresh (root's), pv-2
        // already belongs to another user.
        nix::unistd::chown(
            &e.sandbox,
            Some(nix::unistd::Uid::from_raw(1234)),
            Some(nix::unistd::Gid::from_raw(1234)),
        )
        .unwrap();
        nix::unistd::chown(
            &e.volumes.join("pv-2"),
            Some(nix::unistd::Uid::from_raw(999)),
            Some(nix::unistd::Gid::from_raw(999)),
        )
        .unwrap();
        iso.prepare(&config(&e, "c")).await.unwrap();
        let owner = |p: &std::path::Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(&e.volumes.join("pv-1")), (1234, 1234));
        assert_eq!(owner(&e.volumes.join("pv-2")), (999, 999));
        assert_eq!(
            owner(&e.sandbox.join("tmp/scratch")),
            (1234, 1234),
            "sandbox path made for the task"
        );
        iso.cleanup("c").await.unwrap();
        assert_eq!(mounts_below(&e.root), Vec::<PathBuf>::new());
    });
}
