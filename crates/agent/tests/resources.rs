//! Checkpointed agent resources and persistent-volume directories (berth-agent `resources`).

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

use berth_agent::resources::{
    AgentResources, HookPoint, NoUsers, Options, ResourcesError, parse_configured,
    parse_resources_json,
};
use berth_mount::{LinuxMounter, MountAttrs, MountTable, Mounter, UnmountOptions};
use berth_resources::{Resources, Scalar};
use common::{entries, in_ns, privileged, snapshot, tempdir};
use serde_json::{Value as Json, json};

fn reservation(role: &str) -> Json {
    json!([{"type": "DYNAMIC", "role": role, "principal": "ops"}])
}

fn disk(mb: u64, role: &str) -> Json {
    json!({"name": "disk", "type": "SCALAR", "scalar": {"value": mb},
           "reservations": reservation(role)})
}

fn cpus(n: u64, role: &str) -> Json {
    json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": n},
           "reservations": reservation(role)})
}

fn volume_on(mb: u64, reservations: Json, id: &str, source: Option<Json>) -> Json {
    let mut disk = json!({"persistence": {"id": id, "principal": "ops"},
                          "volume": {"container_path": "data", "mode": "RW"}});
    if let Some(s) = source {
        disk["source"] = s;
    }
    json!({"name": "disk", "type": "SCALAR", "scalar": {"value": mb},
           "reservations": reservations, "disk": disk})
}

fn volume(mb: u64, role: &str, id: &str) -> Json {
    volume_on(mb, reservation(role), id, None)
}

fn set(json: &Json) -> Resources {
    Resources::from_json(json).unwrap()
}

fn open(work: &Path, flag: &str, options: Options) -> AgentResources {
    AgentResources::open(work, parse_configured(flag).unwrap(), options).unwrap()
}

const FLAG: &str = "cpus:4;mem:4096;disk:10000";

fn write_data(dir: &Path) {
    std::fs::write(dir.join("data.txt"), b"precious").unwrap();
    std::fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    std::fs::write(dir.join("nested/deeper/more.txt"), b"more").unwrap();
}

fn assert_data(dir: &Path) {
    assert_eq!(std::fs::read(dir.join("data.txt")).unwrap(), b"precious");
    assert_eq!(
        std::fs::read(dir.join("nested/deeper/more.txt")).unwrap(),
        b"more"
    );
}

#[test]
fn checkpoint_replace_creates_and_destroys_directories() {
    let (_t, work) = tempdir();
    let mut ar = open(&work, FLAG, Options::default());
    let first = set(&json!([volume(1000, "db", "v1"), cpus(1, "db")]));
    let report = ar.checkpoint(&first, &NoUsers).unwrap();
    let v1 = work.join("volumes/roles/db/v1");
    assert!(v1.is_dir());
    assert_eq!(report.created, vec![v1.clone()]);
    assert!(report.removed.is_empty());
    write_data(&v1);

    // The committed file is a Mesos JSON array that reads back as the set; no intent remains.
    let text = std::fs::read_to_string(work.join("meta/resources/resources.json")).unwrap();
    assert!(text.starts_with('['), "{text}");
    assert_eq!(parse_resources_json(&text).unwrap(), first);
    assert!(!work.join("meta/resources/resources.target.json").exists());

    // Reopened, the set and the total (configured with the checkpointed substituted) are back.
    drop(ar);
    let mut ar = open(&work, FLAG, Options::default());
    assert_eq!(ar.checkpointed(), &first);
    assert_eq!(ar.total().disk(), Some(Scalar::from_units(10000)));
    assert_eq!(ar.total().cpus(), Some(Scalar::from_units(4)));
    assert_eq!(
        ar.total().unreserved().disk(),
        Some(Scalar::from_units(9000))
    );

    // Re-checkpointing the same set changes no directory and keeps the data.
    let report = ar.checkpoint(&first, &NoUsers).unwrap();
    assert!(report.created.is_empty() && report.removed.is_empty());
    assert_data(&v1);

    // Replaced by a set without v1 and with v2: v1's directory goes, v2's comes.
    let second = set(&json!([volume(500, "db", "v2")]));
    let report = ar.checkpoint(&second, &NoUsers).unwrap();
    let v2 = work.join("volumes/roles/db/v2");
    assert_eq!(report.created, vec![v2.clone()]);
    assert_eq!(report.removed, vec![v1.clone()]);
    assert!(!v1.exists());
    assert!(v2.is_dir());
    assert!(entries(&work.join("volumes/trash/roles/db")).is_empty());
    assert_eq!(ar.checkpointed(), &second);
}

#[test]
fn operations_apply_to_total_with_resources_flag() {
    let (_t, work) = tempdir();
    let mut ar = open(&work, FLAG, Options::default());
    let totals = |ar: &AgentResources| {
        assert_eq!(ar.total().disk(), Some(Scalar::from_units(10000)));
        assert_eq!(ar.total().cpus(), Some(Scalar::from_units(4)));
    };

    ar.apply_operation_json(
        &json!({"type": "RESERVE", "reserve": {"resources": [disk(2000, "db"), cpus(1, "db")]}}),
        &NoUsers,
    )
    .unwrap();
    assert_eq!(
        ar.checkpointed(),
        &set(&json!([disk(2000, "db"), cpus(1, "db")]))
    );
    assert_eq!(
        ar.total().unreserved().disk(),
        Some(Scalar::from_units(8000))
    );
    totals(&ar);

    let report = ar
        .apply_operation_json(
            &json!({"type": "CREATE", "create": {"volumes": [volume(1000, "db", "v1")]}}),
            &NoUsers,
        )
        .unwrap();
    let v1 = work.join("volumes/roles/db/v1");
    assert_eq!(report.created, vec![v1.clone()]);
    assert_eq!(
        ar.checkpointed(),
        &set(&json!([
            disk(1000, "db"),
            cpus(1, "db"),
            volume(1000, "db", "v1")
        ]))
    );
    totals(&ar);
    write_data(&v1);

    // GROW and SHRINK resize the volume in place: same directory, data kept.
    let report = ar
        .apply_operation_json(
            &json!({"type": "GROW_VOLUME", "grow_volume": {
                "volume": volume(1000, "db", "v1"), "addition": disk(500, "db")}}),
            &NoUsers,
        )
        .unwrap();
    assert!(report.created.is_empty() && report.removed.is_empty());
    assert_eq!(
        ar.checkpointed(),
        &set(&json!([
            disk(500, "db"),
            cpus(1, "db"),
            volume(1500, "db", "v1")
        ]))
    );
    assert_data(&v1);
    totals(&ar);

    let report = ar
        .apply_operation_json(
            &json!({"type": "SHRINK_VOLUME", "shrink_volume": {
                "volume": volume(1500, "db", "v1"), "subtract": {"value": 300}}}),
            &NoUsers,
        )
        .unwrap();
    assert!(report.created.is_empty() && report.removed.is_empty());
    assert_eq!(
        ar.checkpointed(),
        &set(&json!([
            disk(800, "db"),
            cpus(1, "db"),
            volume(1200, "db", "v1")
        ]))
    );
    assert_data(&v1);
    totals(&ar);

    let report = ar
        .apply_operation_json(
            &json!({"type": "DESTROY", "destroy": {"volumes": [volume(1200, "db", "v1")]}}),
            &NoUsers,
        )
        .unwrap();
    assert_eq!(report.removed, vec![v1.clone()]);
    assert!(!v1.exists());
    assert_eq!(
        ar.checkpointed(),
        &set(&json!([disk(2000, "db"), cpus(1, "db")]))
    );

    ar.apply_operation_json(
        &json!({"type": "UNRESERVE", "unreserve": {"resources": [disk(2000, "db"), cpus(1, "db")]}}),
        &NoUsers,
    )
    .unwrap();
    assert!(ar.checkpointed().is_empty());
    assert_eq!(ar.total(), &parse_configured(FLAG).unwrap());

    // Reopening reads back exactly what was committed.
    drop(ar);
    let ar = open(&work, FLAG, Options::default());
    assert!(ar.checkpointed().is_empty());
}

#[test]
fn non_applicable_operations_are_refused_and_nothing_changes() {
    let (_t, work) = tempdir();
    let mut ar = open(&work, FLAG, Options::default());
    ar.apply_operation_json(
        &json!({"type": "RESERVE", "reserve": {"resources": [disk(2000, "db")]}}),
        &NoUsers,
    )
    .unwrap();
    ar.apply_operation_json(
        &json!({"type": "CREATE", "create": {"volumes": [volume(1000, "db", "v1")]}}),
        &NoUsers,
    )
    .unwrap();
    write_data(&work.join("volumes/roles/db/v1"));
    let before = snapshot(&work);
    let checkpointed = ar.checkpointed().clone();

    let refusals = [
        // More disk than is reserved.
        json!({"type": "CREATE", "create": {"volumes": [volume(3000, "db", "v2")]}}),
        // The persistence id is taken (Mesos: unique per role on the agent).
        json!({"type": "CREATE", "create": {"volumes": [volume(500, "db", "v1")]}}),
        // No such volume.
        json!({"type": "DESTROY", "destroy": {"volumes": [volume(1000, "db", "v9")]}}),
        // Reserving more than is unreserved.
        json!({"type": "RESERVE", "reserve": {"resources": [disk(20000, "web")]}}),
        // Unreserving what is not reserved.
        json!({"type": "UNRESERVE", "unreserve": {"resources": [disk(5000, "web")]}}),
        // Unreserving a persistent volume.
        json!({"type": "UNRESERVE", "unreserve": {"resources": [volume(1000, "db", "v1")]}}),
        // Shrinking by more than the volume has.
        json!({"type": "SHRINK_VOLUME", "shrink_volume": {
            "volume": volume(1000, "db", "v1"), "subtract": {"value": 1000}}}),
        // Growing by disk that is not there.
        json!({"type": "GROW_VOLUME", "grow_volume": {
            "volume": volume(1000, "db", "v1"), "addition": disk(5000, "db")}}),
    ];
    for op in &refusals {
        let err = ar.apply_operation_json(op, &NoUsers).unwrap_err();
        assert!(
            matches!(
                err,
                ResourcesError::OperationRefused { .. }
                    | ResourcesError::OperationNotApplicable { .. }
            ),
            "{op}: {err}"
        );
        assert_eq!(ar.checkpointed(), &checkpointed, "{op}");
        assert_eq!(snapshot(&work), before, "{op}: the work dir changed");
    }
    // The error texts are Mesos's.
    let err = ar.apply_operation_json(&refusals[0], &NoUsers).unwrap_err();
    assert!(err.to_string().contains("does not contain"), "{err}");
    assert!(matches!(
        ar.apply_operation_json(
            &json!({"type": "LAUNCH", "launch": {"task_infos": []}}),
            &NoUsers
        ),
        Err(ResourcesError::UnsupportedOperation { .. })
    ));
    assert!(matches!(
        ar.apply_operation_json(&json!({"type": "CREATE"}), &NoUsers),
        Err(ResourcesError::InvalidOperation { .. })
    ));
    // A checkpointed set that does not fit --resources.
    assert!(matches!(
        ar.checkpoint(&set(&json!([disk(20000, "db")])), &NoUsers),
        Err(ResourcesError::Incompatible { .. })
    ));
    // Resources an agent never checkpoints.
    assert!(matches!(
        ar.checkpoint(&parse_configured("cpus:1").unwrap(), &NoUsers),
        Err(ResourcesError::NotCheckpointable { .. })
    ));
    assert_eq!(snapshot(&work), before);
}

#[test]
fn hierarchical_and_refined_roles_are_encoded_as_mesos_does() {
    let (_t, work) = tempdir();
    let mut ar = open(&work, FLAG, Options::default());
    let refined = json!([
        {"type": "DYNAMIC", "role": "eng", "principal": "ops"},
        {"type": "DYNAMIC", "role": "eng/db/prod", "principal": "ops"}
    ]);
    let v = volume_on(100, refined, "v1", None);
    let flat = volume(100, "eng/web", "v2");
    ar.checkpoint(&set(&json!([v.clone(), flat])), &NoUsers)
        .unwrap();
    // The last reservation's role, '/' replaced by a space.
    let p1 = work.join("volumes/roles/eng db prod/v1");
    let p2 = work.join("volumes/roles/eng web/v2");
    assert!(p1.is_dir() && p2.is_dir());
    assert_eq!(
        entries(&work.join("volumes/roles")),
        vec!["eng db prod", "eng web"]
    );
    let r = set(&json!([v]));
    let r = r.iter().next().unwrap();
    assert_eq!(ar.volume_path(r).unwrap(), p1);
    assert_eq!(berth_agent::resources::volume_path(&work, r).unwrap(), p1);
}

#[test]
fn path_and_mount_disk_roots() {
    let (_t, tmp) = tempdir();
    let work = tmp.join("work");
    let p2 = tmp.join("paths/p2");
    let mnt = tmp.join("mnt1");
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"not yours").unwrap();
    let path_src = |root: &str| json!({"type": "PATH", "path": {"root": root}});
    let mount_src = json!({"type": "MOUNT", "mount": {"root": mnt.to_str().unwrap()}});
    let flag = json!([
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 4096},
         "disk": {"source": path_src("disks/p1")}},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 2048},
         "disk": {"source": path_src(p2.to_str().unwrap())}},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 1024},
         "disk": {"source": mount_src.clone()}}
    ])
    .to_string();
    let mut ar = open(&work, &flag, Options::default());
    let vols = set(&json!([
        volume_on(2048, reservation("db"), "rel", Some(path_src("disks/p1"))),
        volume_on(
            2048,
            reservation("db"),
            "abs",
            Some(path_src(p2.to_str().unwrap()))
        ),
        volume_on(1024, reservation("db"), "whole", Some(mount_src)),
    ]));
    let report = ar.checkpoint(&vols, &NoUsers).unwrap();
    let rel = work.join("disks/p1/volumes/roles/db/rel");
    let abs = p2.join("volumes/roles/db/abs");
    let mut created = report.created.clone();
    created.sort();
    let mut want = vec![rel.clone(), abs.clone(), mnt.clone()];
    want.sort();
    assert_eq!(created, want);
    assert!(rel.is_dir() && abs.is_dir());
    for r in vols.iter() {
        let p = ar.volume_path(r).unwrap();
        assert!(want.contains(&p), "{}", p.display());
    }
    // A partly used PATH disk: the rest stays unreserved in the total.
    assert_eq!(
        ar.total().unreserved().disk(),
        Some(Scalar::from_units(2048))
    );
    for d in [&rel, &abs, &mnt] {
        write_data(d);
    }
    // A symlink inside the MOUNT volume pointing outside must be removed, not followed.
    std::os::unix::fs::symlink(&outside, mnt.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("keep"), mnt.join("nested/keep-link")).unwrap();

    let report = ar.checkpoint(&Resources::new(), &NoUsers).unwrap();
    assert_eq!(report.removed.len(), 3);
    assert!(!rel.exists() && !abs.exists());
    // The MOUNT root stays (it is the disk), emptied.
    assert!(mnt.is_dir());
    assert!(entries(&mnt).is_empty(), "{:?}", entries(&mnt));
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"not yours");
}

#[test]
fn destroy_is_refused_while_in_use() {
    let (_t, work) = tempdir();
    let mut ar = open(&work, FLAG, Options::default());
    let vols = set(&json!([volume(1000, "db", "v1")]));
    ar.checkpoint(&vols, &NoUsers).unwrap();
    let v1 = work.join("volumes/roles/db/v1");
    write_data(&v1);
    let before = snapshot(&work);
    let in_use = |p: &Path| {
        if p == work.join("volumes/roles/db/v1") {
            vec!["ctr-1".to_owned()]
        } else {
            Vec::new()
        }
    };
    for attempt in [
        ar.checkpoint(&Resources::new(), &in_use),
        ar.apply_operation_json(
            &json!({"type": "DESTROY", "destroy": {"volumes": [volume(1000, "db", "v1")]}}),
            &in_use,
        ),
    ] {
        match attempt {
            Err(ResourcesError::VolumeInUse { id, path, users }) => {
                assert_eq!(id, "v1");
                assert_eq!(path, v1);
                assert_eq!(users, vec!["ctr-1".to_owned()]);
            }
            other => panic!("expected VolumeInUse, got {other:?}"),
        }
        assert_eq!(snapshot(&work), before);
        assert_eq!(ar.checkpointed(), &vols);
        assert!(!ar.is_pending());
    }
    // Once the container is gone, the destroy goes through.
    ar.checkpoint(&Resources::new(), &NoUsers).unwrap();
    assert!(!v1.exists());
}

#[test]
fn destroy_never_crosses_a_mount() {
    if !privileged("destroy_never_crosses_a_mount") {
        return;
    }
    let (_t, tmp) = tempdir();
    in_ns(|| {
        let m = LinuxMounter::new();
        let tmpfs = |at: &Path| {
            std::fs::create_dir_all(at).unwrap();
            m.mount_filesystem(
                Path::new("tmpfs"),
                at,
                "tmpfs",
                MountAttrs::default(),
                Some("size=4m"),
            )
            .unwrap();
        };
        // A ROOT-disk volume with a filesystem mounted inside it.
        let work = tmp.join("work");
        let mnt = tmp.join("mnt1");
        tmpfs(&mnt);
        let mount_src = json!({"type": "MOUNT", "mount": {"root": mnt.to_str().unwrap()}});
        let flag = json!([
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 4096}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 1024},
             "disk": {"source": mount_src.clone()}}
        ])
        .to_string();
        let mut ar = open(&work, &flag, Options::default());
        let vols = set(&json!([
            volume(1000, "db", "v1"),
            volume_on(1024, reservation("db"), "whole", Some(mount_src)),
        ]));
        ar.checkpoint(&vols, &NoUsers).unwrap();
        let v1 = work.join("volumes/roles/db/v1");
        let inner = v1.join("sub");
        tmpfs(&inner);
        std::fs::write(inner.join("other-fs.txt"), b"keep me").unwrap();
        let nested = mnt.join("nested-mount");
        tmpfs(&nested);
        std::fs::write(nested.join("other-fs.txt"), b"keep me too").unwrap();

        // Both volumes have a mount inside: refused before anything is written.
        match ar.checkpoint(&Resources::new(), &NoUsers) {
            Err(ResourcesError::MountedInside { mount_point, .. }) => {
                assert!(
                    mount_point == inner || mount_point == nested,
                    "{mount_point:?}"
                );
            }
            other => panic!("expected MountedInside, got {other:?}"),
        }
        assert!(!ar.is_pending());
        assert_eq!(ar.checkpointed(), &vols);
        assert_eq!(
            std::fs::read(inner.join("other-fs.txt")).unwrap(),
            b"keep me"
        );
        assert_eq!(
            std::fs::read(nested.join("other-fs.txt")).unwrap(),
            b"keep me too"
        );

        // Unmounted, both go; the MOUNT disk's root stays mounted and empty.
        m.unmount(&inner, &UnmountOptions::default()).unwrap();
        m.unmount(&nested, &UnmountOptions::default()).unwrap();
        ar.checkpoint(&Resources::new(), &NoUsers).unwrap();
        assert!(!v1.exists());
        assert!(MountTable::read_current().unwrap().is_mount_point(&mnt));
        assert!(entries(&mnt).is_empty());
    });
}

#[test]
fn retain_destroyed_data_keeps_the_data() {
    let (_t, work) = tempdir();
    let options = Options {
        retain_destroyed_data: true,
    };
    let mut ar = open(&work, FLAG, options);
    let vols = set(&json!([volume(1000, "db", "v1")]));
    ar.checkpoint(&vols, &NoUsers).unwrap();
    let v1 = work.join("volumes/roles/db/v1");
    write_data(&v1);
    let report = ar.checkpoint(&Resources::new(), &NoUsers).unwrap();
    assert!(report.removed.is_empty());
    let [(from, to)] = report.retained.as_slice() else {
        panic!("{report:?}")
    };
    assert_eq!(from, &v1);
    assert_eq!(to.parent().unwrap(), work.join("volumes/retained/roles/db"));
    assert!(to.file_name().unwrap().to_string_lossy().starts_with("v1."));
    assert!(!v1.exists());
    assert_data(to);
    // A new volume with the same id starts empty; the retained data stays.
    ar.checkpoint(&vols, &NoUsers).unwrap();
    assert!(entries(&v1).is_empty());
    assert_data(to);
}

const CRASH_AT: &str = "BERTH_AGENT_RESOURCES_CRASH_AT";
const CRASH_WORK: &str = "BERTH_AGENT_RESOURCES_WORK";
const CRASH_RETAIN: &str = "BERTH_AGENT_RESOURCES_RETAIN";

fn crash_flag() -> String {
    json!([
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 4096}},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 2048},
         "disk": {"source": {"type": "PATH", "path": {"root": "disks/p1"}}}}
    ])
    .to_string()
}

fn crash_sets() -> (Resources, Resources) {
    let keep = volume_on(
        1000,
        reservation("db"),
        "keep",
        Some(json!({"type": "PATH", "path": {"root": "disks/p1"}})),
    );
    let old = set(&json!([volume(1000, "db", "old"), keep.clone()]));
    let new = set(&json!([keep, volume(500, "eng/db", "new")]));
    (old, new)
}

/// The child of `crash_at_every_intent_point_then_recover`: one change that aborts the
/// process at the hook point given in the environment. Does nothing in a normal run.
#[test]
fn crash_child() {
    let Ok(at) = std::env::var(CRASH_AT) else {
        return;
    };
    let at: usize = at.parse().unwrap();
    let work = PathBuf::from(std::env::var(CRASH_WORK).unwrap());
    let retain = std::env::var(CRASH_RETAIN).is_ok_and(|v| v == "1");
    let mut ar = open(
        &work,
        &crash_flag(),
        Options {
            retain_destroyed_data: retain,
        },
    );
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    ar.set_hook(Arc::new(move |_p: HookPoint<'_>| {
        if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == at {
            std::process::abort();
        }
    }));
    let (_, new) = crash_sets();
    ar.checkpoint(&new, &NoUsers).unwrap();
}

#[test]
fn crash_at_every_intent_point_then_recover() {
    let exe = std::env::current_exe().unwrap();
    for retain in [false, true] {
        let mut finished = false;
        // Hook points of the change: target written, created, detached, removed, committed.
        for at in 1..=6usize {
            let (_t, work) = tempdir();
            let options = Options {
                retain_destroyed_data: retain,
            };
            let (old, new) = crash_sets();
            let keep = work.join("disks/p1/volumes/roles/db/keep");
            let gone = work.join("volumes/roles/db/old");
            let born = work.join("volumes/roles/eng db/new");
            {
                let mut ar = open(&work, &crash_flag(), options.clone());
                ar.checkpoint(&old, &NoUsers).unwrap();
                write_data(&keep);
                write_data(&gone);
            }
            let out = std::process::Command::new(&exe)
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CRASH_AT, at.to_string())
                .env(CRASH_WORK, &work)
                .env(CRASH_RETAIN, if retain { "1" } else { "0" })
                .output()
                .unwrap();
            let crashed = !out.status.success();
            assert_eq!(crashed, at <= 5, "retain {retain} at {at}: {out:?}");

            let mut ar = open(&work, &crash_flag(), options.clone());
            if crashed && at < 5 {
                // Before the commit, the change is pending and other changes wait for recovery.
                assert!(ar.is_pending(), "at {at}");
                assert!(matches!(
                    ar.checkpoint(&old, &NoUsers),
                    Err(ResourcesError::RecoveryRequired { .. })
                ));
            }
            let report = ar.recover(&NoUsers).unwrap();
            assert_eq!(report.recovered, crashed && at < 5, "at {at}");
            assert!(report.missing.is_empty(), "at {at}: {report:?}");

            // Every intent point is after the target was written: the change rolls forward.
            assert!(!ar.is_pending());
            assert_eq!(ar.checkpointed(), &new, "retain {retain} at {at}");
            assert_data(&keep);
            assert!(born.is_dir(), "at {at}");
            assert!(!gone.exists(), "at {at}");
            assert!(
                entries(&work.join("volumes/trash/roles/db")).is_empty(),
                "at {at}"
            );
            let retained = entries(&work.join("volumes/retained/roles/db"));
            if retain {
                assert_eq!(retained.len(), 1, "at {at}: {retained:?}");
                assert_data(&work.join("volumes/retained/roles/db").join(&retained[0]));
            } else {
                assert!(retained.is_empty(), "at {at}");
            }
            // The committed file on disk agrees, and a second recovery is a no-op.
            drop(ar);
            let mut ar = open(&work, &crash_flag(), options);
            assert_eq!(ar.checkpointed(), &new);
            let again = ar.recover(&NoUsers).unwrap();
            assert!(!again.recovered && again.created.is_empty() && again.removed.is_empty());
            finished |= !crashed;
        }
        assert!(finished, "the change never ran to completion");
    }
}

#[test]
fn corrupt_checkpoint_is_a_typed_error_and_is_not_overwritten() {
    let (_t, work) = tempdir();
    {
        let mut ar = open(&work, FLAG, Options::default());
        ar.checkpoint(&set(&json!([volume(1000, "db", "v1")])), &NoUsers)
            .unwrap();
    }
    let committed = work.join("meta/resources/resources.json");
    let target = work.join("meta/resources/resources.target.json");
    let bad: [&[u8]; 4] = [
        b"[{\"name\": \"disk\", \"type\": \"SCAL",
        b"not json",
        br#"[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}]"#,
        br#"[{"name":"disk","type":"SCALAR","scalar":{"value":1},"disk":{"persistence":{"id":"../x"}},"reservations":[{"type":"DYNAMIC","role":"db"}]}]"#,
    ];
    for file in [&committed, &target] {
        let original = std::fs::read(&committed).unwrap();
        for bytes in bad {
            std::fs::write(file, bytes).unwrap();
            let before = snapshot(&work);
            match AgentResources::open(&work, parse_configured(FLAG).unwrap(), Options::default()) {
                Err(ResourcesError::Corrupt { path, .. }) => assert_eq!(&path, file),
                other => panic!("expected Corrupt, got {other:?}"),
            }
            assert_eq!(std::fs::read(file).unwrap(), bytes, "overwritten");
            assert_eq!(snapshot(&work), before);
        }
        if file == &target {
            std::fs::remove_file(&target).unwrap();
        } else {
            std::fs::write(&committed, original).unwrap();
        }
    }
    // Restored, it opens again.
    let ar = open(&work, FLAG, Options::default());
    assert_eq!(ar.checkpointed().len(), 1);
}

#[test]
fn hostile_ids_roles_and_roots_never_escape() {
    let (_t, tmp) = tempdir();
    let work = tmp.join("work");
    std::fs::create_dir_all(&work).unwrap();
    // Ids and roles that could become paths are refused when the resources are read.
    for id in ["..", ".", "../x", "a/b", "a\\b", "x\u{1}", ""] {
        let text = json!([volume(1, "db", id)]).to_string();
        assert!(
            matches!(
                parse_resources_json(&text),
                Err(ResourcesError::InvalidResources { .. })
            ),
            "{id:?}"
        );
    }
    for role in ["..", "../x", "a b", "/abs", "a//b", "a/../b"] {
        let text = json!([volume(1, role, "v")]).to_string();
        assert!(parse_resources_json(&text).is_err(), "{role:?}");
    }

    // A disk root with '..' is refused, even when the operator configured it.
    let src = json!({"type": "PATH", "path": {"root": "../escape"}});
    let flag = json!([{"name": "disk", "type": "SCALAR", "scalar": {"value": 100},
                       "disk": {"source": src.clone()}}])
    .to_string();
    let mut ar = open(&work, &flag, Options::default());
    let before = snapshot(&tmp);
    let err = ar
        .checkpoint(
            &set(&json!([volume_on(100, reservation("db"), "v", Some(src))])),
            &NoUsers,
        )
        .unwrap_err();
    assert!(matches!(err, ResourcesError::InvalidRoot { .. }), "{err}");
    assert_eq!(snapshot(&tmp), before);
    drop(ar);

    // A symlink planted below the root is never followed: refused before the intent is written.
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(work.join("volumes")).unwrap();
    std::os::unix::fs::symlink(&outside, work.join("volumes/roles")).unwrap();
    let mut ar = open(&work, FLAG, Options::default());
    let before = snapshot(&tmp);
    let err = ar
        .checkpoint(&set(&json!([volume(100, "db", "v")])), &NoUsers)
        .unwrap_err();
    assert!(matches!(err, ResourcesError::NotADirectory { .. }), "{err}");
    assert!(!ar.is_pending());
    assert_eq!(snapshot(&tmp), before);
    assert!(entries(&outside).is_empty());
}

#[test]
fn one_open_at_a_time() {
    let (_t, work) = tempdir();
    let ar = open(&work, FLAG, Options::default());
    assert!(matches!(
        AgentResources::open(&work, parse_configured(FLAG).unwrap(), Options::default()),
        Err(ResourcesError::Locked { .. })
    ));
    drop(ar);
    let _again = open(&work, FLAG, Options::default());
    assert!(matches!(
        parse_configured("cpus:x"),
        Err(ResourcesError::InvalidConfigured { .. })
    ));
}

/// Project quotas through a volume's whole life, against the recording fake: CREATE gives the
/// volume an id (recorded first) and a hard limit of its size, GROW and SHRINK move the limit,
/// a SHRINK below what the volume holds is refused with nothing changed, DESTROY releases the
/// id for the next volume, and a reopened agent reconciles what the kernel lost.
#[test]
fn project_quotas_follow_create_grow_shrink_and_destroy() {
    use berth_agent::resources::quota::{DiskIsolation, ProjectRange, QuotaConfig};
    use berth_mount::quota::{FakeQuotas, Limits, Quotas, Support};
    let (_t, work) = tempdir();
    let fake = Arc::new(FakeQuotas::new(Support::Enforced));
    let config = QuotaConfig {
        isolation: DiskIsolation::Auto,
        range: ProjectRange::new(100, 101).unwrap(),
        headroom_bytes: 0,
    };
    let mut ar = open(&work, FLAG, Options::default());
    ar.set_quotas(config, Arc::clone(&fake) as Arc<dyn Quotas>)
        .unwrap();
    let mib = |n: u64| n << 20;
    ar.apply_operation_json(
        &json!({"type": "RESERVE", "reserve": {"resources": [disk(3000, "db")]}}),
        &NoUsers,
    )
    .unwrap();
    ar.apply_operation_json(
        &json!({"type": "CREATE", "create": {"volumes": [volume(1000, "db", "v1")]}}),
        &NoUsers,
    )
    .unwrap();
    let v1 = work.join("volumes/roles/db/v1");
    assert_eq!(fake.project_of(&v1).unwrap(), 100);
    assert_eq!(fake.limits_of(100).unwrap().hard_bytes, mib(1000));
    // The id and limit are in the committed checkpoint (written ahead in the target).
    let checkpoint: Json =
        serde_json::from_slice(&std::fs::read(work.join("meta/resources/resources.json")).unwrap())
            .unwrap();
    assert_eq!(checkpoint["projects"][v1.to_str().unwrap()]["project"], 100);
    assert_eq!(
        checkpoint["projects"][v1.to_str().unwrap()]["hard_bytes"],
        mib(1000)
    );
    assert_eq!(checkpoint["resources"].as_array().unwrap().len(), 2);

    ar.apply_operation_json(
        &json!({"type": "GROW_VOLUME", "grow_volume": {
            "volume": volume(1000, "db", "v1"), "addition": disk(500, "db")}}),
        &NoUsers,
    )
    .unwrap();
    assert_eq!(fake.limits_of(100).unwrap().hard_bytes, mib(1500));

    // 1200 MiB in use: a SHRINK to 1000 MB is refused, nothing changes.
    fake.set_used(100, mib(1200), 10);
    let before = ar.checkpointed().clone();
    let e = ar
        .apply_operation_json(
            &json!({"type": "SHRINK_VOLUME", "shrink_volume": {
                "volume": volume(1500, "db", "v1"), "subtract": {"value": 500}}}),
            &NoUsers,
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("holds {} bytes", mib(1200))),
        "{e}"
    );
    assert_eq!(e.code(), berth_agent::ErrorCode::FailedPrecondition);
    assert_eq!(ar.checkpointed(), &before);
    assert_eq!(fake.limits_of(100).unwrap().hard_bytes, mib(1500));
    assert!(!ar.is_pending());
    fake.set_used(100, mib(900), 10);
    ar.apply_operation_json(
        &json!({"type": "SHRINK_VOLUME", "shrink_volume": {
            "volume": volume(1500, "db", "v1"), "subtract": {"value": 500}}}),
        &NoUsers,
    )
    .unwrap();
    assert_eq!(fake.limits_of(100).unwrap().hard_bytes, mib(1000));

    // A second volume gets the next id; the kernel loses v2's limit (a crash between record
    // and limit); a reopened agent puts it back.
    ar.apply_operation_json(
        &json!({"type": "CREATE", "create": {"volumes": [volume(200, "db", "v2")]}}),
        &NoUsers,
    )
    .unwrap();
    let v2 = work.join("volumes/roles/db/v2");
    assert_eq!(fake.project_of(&v2).unwrap(), 101);
    fake.set_limits(&v2, 101, Limits::default()).unwrap();
    drop(ar);
    let mut ar = open(&work, FLAG, Options::default());
    ar.set_quotas(config, Arc::clone(&fake) as Arc<dyn Quotas>)
        .unwrap();
    let report = ar.reconcile_quotas().unwrap();
    assert_eq!(report.fixed, vec![v2.clone()]);
    assert_eq!(fake.limits_of(101).unwrap().hard_bytes, mib(200));

    // Every id is taken: a third volume is refused before anything is written.
    let e = ar
        .apply_operation_json(
            &json!({"type": "CREATE", "create": {"volumes": [volume(100, "db", "v3")]}}),
            &NoUsers,
        )
        .unwrap_err();
    assert!(e.to_string().contains("no free project id"), "{e}");
    assert!(!ar.is_pending(), "refused before the target was written");
    assert!(!work.join("volumes/roles/db/v3").exists());

    // DESTROY releases v1's id, and the next volume takes it.
    ar.apply_operation_json(
        &json!({"type": "DESTROY", "destroy": {"volumes": [volume(1000, "db", "v1")]}}),
        &NoUsers,
    )
    .unwrap();
    assert_eq!(fake.limits_of(100), None);
    ar.apply_operation_json(
        &json!({"type": "CREATE", "create": {"volumes": [volume(100, "db", "v3")]}}),
        &NoUsers,
    )
    .unwrap();
    assert_eq!(
        fake.project_of(&work.join("volumes/roles/db/v3")).unwrap(),
        100
    );
}

/// A new volume's project id is written ahead in the change's target, before the directory is
/// tagged: a crash right after the target (here a panic at the `target written` point) leaves
/// no id on any directory and none in `projects.json`, and the reopened agent takes the id
/// from the target, finishes the change with that same id and limit, and commits them in the
/// checkpoint; an id in the checkpoint that the record gives to something else is never
/// given twice.
#[test]
fn a_volumes_project_id_is_written_ahead_in_the_target() {
    use berth_agent::resources::quota::{DiskIsolation, ProjectRange, QuotaConfig};
    use berth_mount::quota::{FakeQuotas, Quotas, Support};
    let (_t, work) = tempdir();
    let fake = Arc::new(FakeQuotas::new(Support::Enforced));
    let config = QuotaConfig {
        isolation: DiskIsolation::Auto,
        range: ProjectRange::new(300, 302).unwrap(),
        headroom_bytes: 0,
    };
    let mib = |n: u64| n << 20;
    let target = work.join("meta/resources/resources.target.json");
    {
        let mut ar = open(&work, FLAG, Options::default());
        ar.set_quotas(config, Arc::clone(&fake) as Arc<dyn Quotas>)
            .unwrap();
        ar.apply_operation_json(
            &json!({"type": "RESERVE", "reserve": {"resources": [disk(3000, "db")]}}),
            &NoUsers,
        )
        .unwrap();
        ar.set_hook(Arc::new(|p: HookPoint<'_>| {
            assert_ne!(p.step, "target written", "crash");
        }));
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ar.apply_operation_json(
                &json!({"type": "CREATE", "create": {"volumes": [volume(700, "db", "w1")]}}),
                &NoUsers,
            )
        }));
        assert!(crashed.is_err(), "the hook stopped the change");
    }
    let w1 = work.join("volumes/roles/db/w1");
    let pending: Json = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert_eq!(pending["projects"][w1.to_str().unwrap()]["project"], 300);
    assert_eq!(
        pending["projects"][w1.to_str().unwrap()]["hard_bytes"],
        mib(700)
    );
    assert!(!w1.exists(), "nothing done after the intent");
    assert_eq!(fake.limits_of(300), None, "no limit set before the crash");
    assert!(!work.join("meta/resources/projects.json").exists());

    let mut ar = open(&work, FLAG, Options::default());
    assert!(ar.is_pending());
    ar.set_quotas(config, Arc::clone(&fake) as Arc<dyn Quotas>)
        .unwrap();
    assert_eq!(ar.quotas().unwrap().assigned(&w1).unwrap().project, 300);
    ar.recover(&NoUsers).unwrap();
    assert_eq!(fake.project_of(&w1).unwrap(), 300);
    assert_eq!(fake.limits_of(300).unwrap().hard_bytes, mib(700));
    let committed: Json =
        serde_json::from_slice(&std::fs::read(work.join("meta/resources/resources.json")).unwrap())
            .unwrap();
    assert_eq!(committed["projects"][w1.to_str().unwrap()]["project"], 300);
    drop(ar);

    // The checkpoint names id 300 for w1, but the record gives 300 to a sandbox: the reopened
    // agent leaves w1's entry out and reconciliation gives w1 a fresh id.
    let record = json!({"schema_version": 1, "volumes": {
        "/sandboxes/c9": {"project": 300, "hard_bytes": 1, "container": "c9"}}});
    std::fs::write(
        work.join("meta/resources/projects.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let mut ar = open(&work, FLAG, Options::default());
    ar.set_quotas(config, Arc::clone(&fake) as Arc<dyn Quotas>)
        .unwrap();
    assert_eq!(ar.quotas().unwrap().assigned(&w1), None);
    let report = ar.reconcile_quotas().unwrap();
    assert_eq!(report.cleared, vec![(w1.clone(), 300)]);
    assert_eq!(ar.quotas().unwrap().assigned(&w1).unwrap().project, 301);
    assert_eq!(fake.project_of(&w1).unwrap(), 301);

    // A checkpoint whose projects are not volumes' quotas is refused as corrupt.
    drop(ar);
    let bad = json!({"resources": committed["resources"].clone(),
        "projects": {"relative/dir": {"project": 5, "hard_bytes": 1}}});
    std::fs::write(
        work.join("meta/resources/resources.json"),
        serde_json::to_vec(&bad).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        AgentResources::open(&work, parse_configured(FLAG).unwrap(), Options::default()),
        Err(ResourcesError::Corrupt { .. })
    ));
}
