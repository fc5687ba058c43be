//! Faults never stop the agent (berth-agent `resources::gc`): a DESTROY whose data cannot be
//! removed still commits and leaves a recorded leftover, recovery of an older version's
//! pending DESTROY turns a failing purge into a leftover, and `gc` lists and removes
//! leftovers, orphan volume directories, stray mounts and expired retained data, touching
//! nothing else. Real filesystems: XFS on a loop device for immutable files (`chattr`, the
//! fixed e2fsprogs binary) and a 100,000-deep directory chain.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_agent::resources::gc::{Area, Origin};
use berth_agent::resources::{
    AgentResources, GcOptions, NoUsers, Options, parse_configured, parse_resources_json,
};
use berth_mount::loopdev::LoopDevice;
use berth_resources::Resources;
use common::{entries, in_ns, privileged, snapshot, tempdir};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use serde_json::{Value as Json, json};

const FLAG: &str = "cpus:4;mem:4096;disk:10000";
const DEPTH: usize = 100_000;

fn reservation(role: &str) -> Json {
    json!([{"type": "DYNAMIC", "role": role, "principal": "ops"}])
}

fn volume_on(mb: u64, role: &str, id: &str, source: Option<Json>) -> Json {
    let mut disk = json!({"persistence": {"id": id, "principal": "ops"},
                          "volume": {"container_path": "data", "mode": "RW"}});
    if let Some(s) = source {
        disk["source"] = s;
    }
    json!({"name": "disk", "type": "SCALAR", "scalar": {"value": mb},
           "reservations": reservation(role), "disk": disk})
}

fn volume(mb: u64, role: &str, id: &str) -> Json {
    volume_on(mb, role, id, None)
}

fn set(json: &Json) -> Resources {
    Resources::from_json(json).unwrap()
}

fn open(work: &Path, flag: &str, options: Options) -> AgentResources {
    AgentResources::open(work, parse_configured(flag).unwrap(), options).unwrap()
}

fn chattr(flag: &str, path: &Path) {
    let out = Command::new(berth_testkit::vm::tool("chattr"))
        .arg(flag)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chattr {flag} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An XFS filesystem mounted by [`xfs`]: unmounted (lazily: its immutable files stay inside
/// the image) when dropped, before its loop device is detached, so the temporary directory
/// holding the image can be removed after it.
struct Mounted {
    target: PathBuf,
    _dev: LoopDevice,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An XFS filesystem (inodes on demand: 100,000 directories fit) on a loop device, mounted at
/// `<dir>/fs` in the current (private) namespace until the guard drops.
fn xfs(dir: &Path) -> (Mounted, PathBuf) {
    let dev = berth_testkit::vm::quota_fs(dir, "xfs", 512);
    let target = dir.join("fs");
    std::fs::create_dir_all(&target).unwrap();
    nix::mount::mount(
        Some(dev.path()),
        &target,
        Some("xfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let guard = Mounted {
        target: target.clone(),
        _dev: dev,
    };
    (guard, target)
}

/// `<dir>/chain/d/d/.../d` (`depth` levels), made through descriptors (no path is that long);
/// the deepest directory, open.
fn deep_chain(dir: &Path, depth: usize) -> OwnedFd {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur: OwnedFd = nix::fcntl::open(dir, flags, Mode::empty()).unwrap();
    for i in 0..depth {
        let name = if i == 0 { "chain" } else { "d" };
        mkdirat(&cur, name, Mode::from_bits_truncate(0o755)).unwrap();
        cur = openat(&cur, name, flags, Mode::empty()).unwrap();
    }
    cur
}

/// A volume's poison: a 100,000-deep directory chain with an immutable file at the bottom
/// (so no purge can remove the chain before the flag goes), and another immutable file at
/// the top. Returns the bottom file's path through this process's descriptor of its
/// directory (the real path is far longer than `PATH_MAX`) and that descriptor.
fn poison(v: &Path) -> (PathBuf, OwnedFd) {
    std::fs::write(v.join("data.txt"), b"precious").unwrap();
    let deepest = deep_chain(v, DEPTH);
    let file = openat(
        &deepest,
        "immutable",
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::unistd::write(&file, b"bottom").unwrap();
    drop(file);
    let bottom = PathBuf::from(format!(
        "/proc/{}/fd/{}/immutable",
        std::process::id(),
        deepest.as_raw_fd()
    ));
    chattr("+i", &bottom);
    std::fs::create_dir_all(v.join("locked")).unwrap();
    std::fs::write(v.join("locked/immutable"), b"cannot go").unwrap();
    chattr("+i", &v.join("locked/immutable"));
    (bottom, deepest)
}

/// The persistence ids of the checkpointed volumes.
fn volume_ids(ar: &AgentResources) -> Vec<String> {
    ar.checkpointed()
        .iter()
        .filter_map(|r| r.persistence_id().map(|id| id.as_str().to_owned()))
        .collect()
}

fn destroy(vol: &Json) -> Json {
    json!({"type": "DESTROY", "destroy": {"volumes": [vol]}})
}

#[test]
fn a_poisoned_destroy_commits_leaves_a_leftover_and_gc_removes_it() {
    if !privileged("a_poisoned_destroy_commits_leaves_a_leftover_and_gc_removes_it") {
        return;
    }
    in_ns(|| {
        let (_t, tmp) = tempdir();
        let (_dev, fs) = xfs(&tmp);
        let work = fs.join("work");
        let v1 = volume(1000, "db", "v1");
        let v2 = volume(1000, "db", "v2");
        let mut ar = open(&work, FLAG, Options::default());
        ar.checkpoint(&set(&json!([v1.clone(), v2.clone()])), &NoUsers)
            .unwrap();
        let p1 = work.join("volumes/roles/db/v1");
        let p2 = work.join("volumes/roles/db/v2");
        let (bottom, deepest) = poison(&p1);
        std::fs::write(p2.join("sibling.txt"), b"keep me").unwrap();
        std::fs::create_dir_all(work.join("volumes/trash")).unwrap();
        std::fs::write(work.join("volumes/beside-trash.txt"), b"keep me too").unwrap();
        let sibling = snapshot(&p2);
        let beside = std::fs::read(work.join("volumes/beside-trash.txt")).unwrap();

        // DESTROY answers success; the volume is gone from the resources at once.
        let report = ar.apply_operation_json(&destroy(&v1), &NoUsers).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        let [(gone, left)] = report.deferred.as_slice() else {
            panic!("{report:?}")
        };
        assert_eq!(gone, &p1);
        assert!(
            left.starts_with(work.join("volumes/trash/roles/db")),
            "{left:?}"
        );
        assert!(!p1.exists());
        assert!(!ar.is_pending());
        assert_eq!(volume_ids(&ar), ["v2"]);
        let committed =
            std::fs::read_to_string(work.join("meta/resources/resources.json")).unwrap();
        assert_eq!(
            &parse_resources_json(&committed).unwrap(),
            ar.checkpointed()
        );
        let leftovers = ar.leftovers().unwrap();
        let [l] = leftovers.as_slice() else {
            panic!("{leftovers:?}")
        };
        assert_eq!(&l.path, left);
        assert_eq!(l.volume, p1);
        assert_eq!(l.id, "v1");
        assert_eq!(
            (l.area, l.origin, l.attempts),
            (Area::Volumes, Origin::Destroy, 1)
        );
        assert!(l.first_failure.is_some());
        assert!(
            l.last_error.as_deref().unwrap().contains("immutable"),
            "{l:?}"
        );

        // A restart opens cleanly and takes the next operation.
        drop(ar);
        let mut ar = open(&work, FLAG, Options::default());
        assert!(!ar.is_pending());
        assert!(ar.recover(&NoUsers).unwrap().missing.is_empty());
        ar.apply_operation_json(
            &json!({"type": "CREATE", "create": {"volumes": [volume(500, "db", "v3")]}}),
            &NoUsers,
        )
        .unwrap();
        assert!(work.join("volumes/roles/db/v3").is_dir());
        assert_eq!(ar.leftovers().unwrap().len(), 1);

        // Dry run: listed, nothing removed.
        let dry = ar
            .gc(&GcOptions {
                dry_run: true,
                orphans_and_mounts: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(dry.leftovers.len(), 1, "{dry:?}");
        assert!(dry.removed.is_empty() && dry.failed.is_empty() && dry.orphans.is_empty());
        assert!(left.join("locked/immutable").exists());
        assert!(left.join("chain/d").exists());

        // Still immutable: gc fails on it, counts the attempt, keeps it.
        let still = ar
            .gc(&GcOptions {
                orphans_and_mounts: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(still.failed.len(), 1, "{still:?}");
        assert_eq!(still.remaining.len(), 1);
        assert_eq!(still.remaining[0].attempts, 2);

        // Once the file can go, gc removes the whole entry, the 100,000-deep chain included.
        chattr("-i", &left.join("locked/immutable"));
        chattr("-i", &bottom);
        drop(deepest);
        let done = ar
            .gc(&GcOptions {
                orphans_and_mounts: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(done.removed, vec![left.clone()], "{done:?}");
        assert!(
            done.failed.is_empty() && done.remaining.is_empty(),
            "{done:?}"
        );
        assert!(!left.exists());
        assert!(entries(&work.join("meta/resources/leftovers")).is_empty());
        assert!(ar.leftovers().unwrap().is_empty());

        // Nothing outside the volume was touched.
        assert_eq!(snapshot(&p2), sibling);
        assert_eq!(
            std::fs::read(work.join("volumes/beside-trash.txt")).unwrap(),
            beside
        );
        assert!(work.join("volumes/roles/db/v3").is_dir());
    });
}

#[test]
fn recovery_of_an_older_versions_pending_destroy_turns_a_failing_purge_into_a_leftover() {
    if !privileged("recovery_of_an_older_versions_pending_destroy") {
        return;
    }
    in_ns(|| {
        let (_t, tmp) = tempdir();
        let (_dev, fs) = xfs(&tmp);
        let work = fs.join("work");
        let v1 = volume(1000, "db", "v1");
        let v2 = volume(1000, "db", "v2");
        {
            let mut ar = open(&work, FLAG, Options::default());
            ar.checkpoint(&set(&json!([v1.clone(), v2.clone()])), &NoUsers)
                .unwrap();
        }
        // What an older version left: the target without v1 written, v1 renamed to
        // trash/roles/db/v1, and its purge failing on an immutable file.
        let p1 = work.join("volumes/roles/db/v1");
        std::fs::write(p1.join("data.txt"), b"x").unwrap();
        std::fs::create_dir_all(p1.join("locked")).unwrap();
        std::fs::write(p1.join("locked/immutable"), b"cannot go").unwrap();
        chattr("+i", &p1.join("locked/immutable"));
        std::fs::create_dir_all(work.join("volumes/trash/roles/db")).unwrap();
        let legacy = work.join("volumes/trash/roles/db/v1");
        std::fs::rename(&p1, &legacy).unwrap();
        std::fs::write(
            work.join("meta/resources/resources.target.json"),
            serde_json::to_vec(&json!([v2.clone()])).unwrap(),
        )
        .unwrap();

        let mut ar = open(&work, FLAG, Options::default());
        assert!(ar.is_pending());
        let report = ar.recover(&NoUsers).unwrap();
        assert!(report.recovered);
        assert!(!ar.is_pending());
        assert_eq!(ar.checkpointed(), &set(&json!([v2.clone()])));
        let leftovers = ar.leftovers().unwrap();
        let [l] = leftovers.as_slice() else {
            panic!("{leftovers:?}")
        };
        assert_eq!(l.path, legacy);
        assert_eq!(l.attempts, 1);
        // The next change goes through.
        ar.checkpoint(&set(&json!([v2.clone(), v1.clone()])), &NoUsers)
            .unwrap();
        assert!(work.join("volumes/roles/db/v1").is_dir());
        // A DESTROY of the re-created v1 does not collide with the old leftover.
        ar.apply_operation_json(&destroy(&v1), &NoUsers).unwrap();
        assert!(!work.join("volumes/roles/db/v1").exists());
        assert_eq!(ar.leftovers().unwrap().len(), 1);

        chattr("-i", &legacy.join("locked/immutable"));
        let done = ar.gc(&GcOptions::default()).unwrap();
        assert_eq!(done.removed, vec![legacy.clone()], "{done:?}");
        assert!(entries(&work.join("volumes/trash/roles/db")).is_empty());
        assert!(work.join("volumes/roles/db/v2").is_dir());
    });
}

#[test]
fn a_mount_disk_destroy_moves_its_contents_into_its_own_trash_first() {
    if !privileged("a_mount_disk_destroy_moves_its_contents_into_its_own_trash_first") {
        return;
    }
    in_ns(|| {
        let (_t, tmp) = tempdir();
        let (_dev, mnt) = xfs(&tmp);
        let work = tmp.join("work");
        let source = json!({"type": "MOUNT", "mount": {"root": mnt.to_str().unwrap()}});
        let flag = json!([
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 1024},
             "disk": {"source": source.clone()}}
        ])
        .to_string();
        let whole = volume_on(1024, "db", "whole", Some(source));
        let mut ar = open(&work, &flag, Options::default());
        ar.checkpoint(&set(&json!([whole.clone()])), &NoUsers)
            .unwrap();
        std::fs::write(mnt.join("data.txt"), b"x").unwrap();
        std::fs::create_dir_all(mnt.join("locked")).unwrap();
        std::fs::write(mnt.join("locked/immutable"), b"cannot go").unwrap();
        chattr("+i", &mnt.join("locked/immutable"));

        let report = ar.apply_operation_json(&destroy(&whole), &NoUsers).unwrap();
        assert_eq!(report.deferred.len(), 1, "{report:?}");
        assert!(volume_ids(&ar).is_empty());
        // The disk's root holds nothing of the volume but its trash.
        assert_eq!(entries(&mnt), vec![".berth-trash".to_owned()]);
        let leftovers = ar.leftovers().unwrap();
        let [l] = leftovers.as_slice() else {
            panic!("{leftovers:?}")
        };
        assert_eq!(l.area, Area::Mount);
        assert!(l.path.starts_with(mnt.join(".berth-trash")));
        assert!(l.path.join("locked/immutable").exists());

        // Found again after a restart (the checkpoint no longer names the disk).
        drop(ar);
        let mut ar = open(&work, &flag, Options::default());
        assert_eq!(ar.leftovers().unwrap().len(), 1);
        chattr("-i", &l.path.join("locked/immutable"));
        let done = ar.gc(&GcOptions::default()).unwrap();
        assert_eq!(done.removed.len(), 1, "{done:?}");
        assert!(entries(&mnt).is_empty(), "{:?}", entries(&mnt));

        // On a disk that holds a volume again, `.berth-trash` is inside the volume: what its
        // user puts there is not a leftover.
        ar.checkpoint(&set(&json!([whole.clone()])), &NoUsers)
            .unwrap();
        std::fs::create_dir_all(mnt.join(".berth-trash/mine")).unwrap();
        let report = ar
            .gc(&GcOptions {
                orphans_and_mounts: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert!(
            report.leftovers.is_empty() && report.removed.is_empty(),
            "{report:?}"
        );
        assert!(mnt.join(".berth-trash/mine").is_dir());
    });
}

#[test]
fn gc_removes_orphan_volume_directories_and_nothing_a_checkpoint_names() {
    let (_t, tmp) = tempdir();
    let work = tmp.join("work");
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"not yours").unwrap();
    let mut ar = open(&work, FLAG, Options::default());
    ar.checkpoint(&set(&json!([volume(1000, "db", "v1")])), &NoUsers)
        .unwrap();
    let v1 = work.join("volumes/roles/db/v1");
    std::fs::write(v1.join("data.txt"), b"mine").unwrap();
    let orphan = work.join("volumes/roles/db/orphan");
    std::fs::create_dir_all(orphan.join("nested")).unwrap();
    std::fs::write(orphan.join("nested/f"), b"stale").unwrap();
    // A symlink inside an orphan, and an orphan that is a symlink: never followed.
    std::os::unix::fs::symlink(&outside, orphan.join("escape")).unwrap();
    let other = work.join("volumes/roles/web/o2");
    std::fs::create_dir_all(&other).unwrap();
    let link = work.join("volumes/roles/db/link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let before = snapshot(&tmp);

    let dry = ar
        .gc(&GcOptions {
            dry_run: true,
            orphans_and_mounts: true,
            ..GcOptions::default()
        })
        .unwrap();
    let mut want = vec![link.clone(), orphan.clone(), other.clone()];
    want.sort();
    let mut got = dry.orphans.clone();
    got.sort();
    assert_eq!(got, want, "{dry:?}");
    assert_eq!(snapshot(&tmp), before, "a dry run changes nothing");

    let done = ar
        .gc(&GcOptions {
            orphans_and_mounts: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert!(done.failed.is_empty(), "{done:?}");
    let mut removed = done.removed.clone();
    removed.sort();
    assert_eq!(removed, want);
    assert!(!orphan.exists() && !other.exists());
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert_eq!(std::fs::read(v1.join("data.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"not yours");
    assert!(entries(&work.join("volumes/trash/roles/db")).is_empty());
    assert!(entries(&work.join("meta/resources/leftovers")).is_empty());
    // A second pass finds nothing.
    let report = ar
        .gc(&GcOptions {
            orphans_and_mounts: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert!(report.orphans.is_empty() && report.removed.is_empty());

    // A record whose entry never came to be (a crash before the move) is dropped by gc, and a
    // record aiming outside a trash directory is never acted on.
    let records = work.join("meta/resources/leftovers");
    let stale = json!({
        "path": work.join("volumes/trash/roles/db/never.1"), "root": work, "area": "volumes",
        "role": "db", "id": "never", "name": "never.1", "volume": work.join("volumes/roles/db/never"),
        "origin": "destroy", "recorded_at": 1, "attempts": 0
    });
    std::fs::write(records.join("1.json"), stale.to_string()).unwrap();
    let hostile = json!({
        "path": outside, "root": tmp, "area": "volumes",
        "role": "db", "id": "x", "name": "outside", "volume": outside,
        "origin": "destroy", "recorded_at": 1, "attempts": 0
    });
    std::fs::write(records.join("2.json"), hostile.to_string()).unwrap();
    assert!(ar.leftovers().unwrap().is_empty());
    let report = ar.gc(&GcOptions::default()).unwrap();
    assert!(
        report.removed.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(entries(&records), vec!["2.json".to_owned()]);
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"not yours");
}

#[test]
fn gc_expires_retained_data_older_than_the_given_age_only() {
    let (_t, work) = tempdir();
    let options = Options {
        retain_destroyed_data: true,
    };
    let mut ar = open(&work, FLAG, options);
    let v1 = volume(1000, "db", "v1");
    ar.checkpoint(&set(&json!([v1.clone()])), &NoUsers).unwrap();
    std::fs::write(work.join("volumes/roles/db/v1/data.txt"), b"recent").unwrap();
    let report = ar.apply_operation_json(&destroy(&v1), &NoUsers).unwrap();
    let [(_, recent)] = report.retained.as_slice() else {
        panic!("{report:?}")
    };
    // Data retained in 2001.
    let old = work.join("volumes/retained/roles/db/v0.1000000000");
    std::fs::create_dir_all(old.join("nested")).unwrap();
    std::fs::write(old.join("nested/f"), b"old").unwrap();
    let old2 = work.join("volumes/retained/roles/db/v0.1000000000.1");
    std::fs::create_dir_all(&old2).unwrap();

    let opts = |dry_run| GcOptions {
        dry_run,
        retain_destroyed_data_for: Some(Duration::from_secs(7 * 86_400)),
        ..GcOptions::default()
    };
    let dry = ar.gc(&opts(true)).unwrap();
    let mut want = vec![old.clone(), old2.clone()];
    want.sort();
    let mut got = dry.expired.clone();
    got.sort();
    assert_eq!(got, want, "{dry:?}");
    assert!(old.join("nested/f").exists() && old2.exists());

    let done = ar.gc(&opts(false)).unwrap();
    assert!(done.failed.is_empty(), "{done:?}");
    assert!(!old.exists() && !old2.exists());
    assert_eq!(std::fs::read(recent.join("data.txt")).unwrap(), b"recent");
    assert!(entries(&work.join("volumes/trash/roles/db")).is_empty());
    // Without an age, retained data stays.
    let none = ar.gc(&GcOptions::default()).unwrap();
    assert!(none.expired.is_empty());
    assert!(recent.exists());
}

#[test]
fn gc_unmounts_stray_mounts_in_the_trash_and_orphans_and_keeps_those_in_live_volumes() {
    if !privileged("gc_unmounts_stray_mounts") {
        return;
    }
    in_ns(|| {
        let (_t, work) = tempdir();
        let mut ar = open(&work, FLAG, Options::default());
        ar.checkpoint(&set(&json!([volume(1000, "db", "v1")])), &NoUsers)
            .unwrap();
        let tmpfs = |at: &Path| {
            std::fs::create_dir_all(at).unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                at,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            std::fs::write(at.join("on-the-mount"), b"data of another filesystem").unwrap();
        };
        let in_trash = work.join("volumes/trash/roles/db/x.1/m");
        let in_orphan = work.join("volumes/roles/db/orphan/m");
        let in_live = work.join("volumes/roles/db/v1/inner");
        let in_records = work.join("containers/c1");
        for at in [&in_trash, &in_orphan, &in_live, &in_records] {
            tmpfs(at);
        }
        let mounted = |p: &Path| {
            berth_mount::MountTable::read_current()
                .unwrap()
                .is_mount_point(p)
        };

        let dry = ar
            .gc(&GcOptions {
                dry_run: true,
                orphans_and_mounts: true,
                ..GcOptions::default()
            })
            .unwrap();
        let action = |r: &berth_agent::resources::GcReport, p: &Path| {
            r.stray_mounts
                .iter()
                .find(|m| m.mount_point == p)
                .map(|m| m.action.clone())
        };
        assert_eq!(action(&dry, &in_trash).as_deref(), Some("would unmount"));
        assert_eq!(action(&dry, &in_orphan).as_deref(), Some("would unmount"));
        assert_eq!(action(&dry, &in_live).as_deref(), Some("kept"));
        assert!(mounted(&in_trash) && mounted(&in_orphan) && mounted(&in_live));

        let done = ar
            .gc(&GcOptions {
                orphans_and_mounts: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(action(&done, &in_trash).as_deref(), Some("unmounted"));
        assert_eq!(action(&done, &in_orphan).as_deref(), Some("unmounted"));
        assert_eq!(action(&done, &in_live).as_deref(), Some("kept"));
        assert_eq!(action(&done, &in_records).as_deref(), Some("kept"));
        assert!(mounted(&in_records));
        assert!(done.failed.is_empty(), "{done:?}");
        assert!(!mounted(&in_trash) && !mounted(&in_orphan));
        assert!(!work.join("volumes/trash/roles/db/x.1").exists());
        assert!(!work.join("volumes/roles/db/orphan").exists());
        // The live volume's mount and its data stay.
        assert!(mounted(&in_live));
        assert!(in_live.join("on-the-mount").exists());
    });
}

#[test]
fn a_destroy_that_cannot_move_the_volume_is_still_refused_and_records_nothing() {
    if !privileged("a_destroy_that_cannot_move_the_volume_is_still_refused") {
        return;
    }
    in_ns(|| {
        let (_t, work) = tempdir();
        let mut ar = open(&work, FLAG, Options::default());
        ar.checkpoint(&set(&json!([volume(1000, "db", "v1")])), &NoUsers)
            .unwrap();
        // Only failures after the move are deferred: a volume with a mount inside is refused.
        let inner = work.join("volumes/roles/db/v1/m");
        std::fs::create_dir_all(&inner).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &inner,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let err = ar
            .apply_operation_json(&destroy(&volume(1000, "db", "v1")), &NoUsers)
            .unwrap_err();
        assert!(
            matches!(
                err,
                berth_agent::resources::ResourcesError::MountedInside { .. }
            ),
            "{err}"
        );
        assert!(work.join("volumes/roles/db/v1/m").is_dir());
        assert!(entries(&work.join("meta/resources/leftovers")).is_empty());
        assert!(entries(&work.join("volumes/trash/roles/db")).is_empty());
    });
}

#[test]
fn the_agent_opens_over_a_failing_pending_destroy_and_retries_it_with_backoff() {
    if !privileged("the_agent_opens_over_a_failing_pending_destroy") {
        return;
    }
    in_ns(|| {
        let (_t, tmp) = tempdir();
        let (_dev, fs) = xfs(&tmp);
        let work = fs.join("work");
        let v1 = volume(1000, "db", "v1");
        let v2 = volume(1000, "db", "v2");
        {
            let mut ar = open(&work, FLAG, Options::default());
            ar.checkpoint(&set(&json!([v1.clone(), v2.clone()])), &NoUsers)
                .unwrap();
        }
        // An older version's DESTROY of v1, pending, whose purge fails.
        let p1 = work.join("volumes/roles/db/v1");
        std::fs::write(p1.join("locked"), b"cannot go").unwrap();
        chattr("+i", &p1.join("locked"));
        std::fs::create_dir_all(work.join("volumes/trash/roles/db")).unwrap();
        let legacy = work.join("volumes/trash/roles/db/v1");
        std::fs::rename(&p1, &legacy).unwrap();
        std::fs::write(
            work.join("meta/resources/resources.target.json"),
            serde_json::to_vec(&json!([v2.clone()])).unwrap(),
        )
        .unwrap();

        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let settings = berth_agent::agent::Settings {
                    work_dir: work.clone(),
                    resources: Some(FLAG.to_owned()),
                    ..berth_agent::agent::Settings::default()
                };
                let agent = berth_agent::agent::Agent::open(settings).await.unwrap();
                let view = agent.resources().await;
                assert!(
                    view.checkpointed
                        .iter()
                        .filter_map(|r| r.disk.as_ref()?.persistence.as_ref())
                        .all(|p| p.id != "v1")
                );
                let leftovers = agent.leftovers().await.unwrap();
                assert_eq!(leftovers.len(), 1, "{leftovers:?}");
                assert_eq!(leftovers[0].attempts, 1);
                // The next operation goes through.
                let list = berth_resources::json::from_json_str_list(
                    &json!([v2.clone(), volume(500, "db", "v3")]).to_string(),
                )
                .unwrap();
                agent.checkpoint_resources(list).await.unwrap();
                assert!(work.join("volumes/roles/db/v3").is_dir());

                // The retry pass respects the backoff: nothing is attempted before it passes.
                let pass = agent.retry_leftovers().await.unwrap();
                assert!(
                    pass.removed.is_empty() && pass.failed.is_empty(),
                    "{pass:?}"
                );
                assert_eq!(agent.leftovers().await.unwrap()[0].attempts, 1);

                // Once due (the record's last attempt moved back in time), it is retried: still
                // failing, then removed once the flag is gone.
                let age = |l: &berth_agent::resources::Leftover| {
                    let file = l.record.clone().unwrap();
                    let mut v: Json =
                        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
                    v["last_attempt"] = json!(0);
                    std::fs::write(&file, v.to_string()).unwrap();
                };
                age(&agent.leftovers().await.unwrap()[0]);
                let pass = agent.retry_leftovers().await.unwrap();
                assert_eq!(pass.failed.len(), 1, "{pass:?}");
                let l = agent.leftovers().await.unwrap();
                assert_eq!(l[0].attempts, 2);
                chattr("-i", &legacy.join("locked"));
                age(&l[0]);
                let pass = agent.retry_leftovers().await.unwrap();
                assert_eq!(pass.removed, vec![legacy.clone()], "{pass:?}");
                assert!(agent.leftovers().await.unwrap().is_empty());
                assert!(!legacy.exists());
                assert!(work.join("volumes/roles/db/v2").is_dir());
            });
    });
}

#[test]
fn a_symlink_where_a_mount_disks_trash_goes_is_removed_not_followed() {
    let (_t, tmp) = tempdir();
    let work = tmp.join("work");
    let mnt = tmp.join("mnt1");
    let outside = tmp.join("outside");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"not yours").unwrap();
    let source = json!({"type": "MOUNT", "mount": {"root": mnt.to_str().unwrap()}});
    let flag = json!([
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 1024},
         "disk": {"source": source.clone()}}
    ])
    .to_string();
    let whole = volume_on(1024, "db", "whole", Some(source));
    let mut ar = open(&work, &flag, Options::default());
    ar.checkpoint(&set(&json!([whole.clone()])), &NoUsers)
        .unwrap();
    std::fs::write(mnt.join("data.txt"), b"x").unwrap();
    // The volume's user plants the trash directory's name as a symlink out of the disk.
    std::os::unix::fs::symlink(&outside, mnt.join(".berth-trash")).unwrap();
    let report = ar.apply_operation_json(&destroy(&whole), &NoUsers).unwrap();
    assert!(report.deferred.is_empty(), "{report:?}");
    assert_eq!(report.removed, vec![mnt.clone()]);
    assert!(entries(&mnt).is_empty(), "{:?}", entries(&mnt));
    assert_eq!(entries(&outside), vec!["keep".to_owned()]);
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"not yours");
}
