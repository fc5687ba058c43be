//! Privileged tier: real mounts, each test in its own private mount namespace (root needed;
//! in CI a missing root fails the test instead of skipping it).

// Helpers outside #[test] functions unwrap too: a failing setup is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use berth_mount::{
    BindOptions, LinuxMounter, MountAttrs, MountError, MountTable, Mounter, Op, Propagation,
    UnmountOptions, Unmounted, Verify,
};
use common::*;
use nix::errno::Errno;

fn engines() -> [(&'static str, LinuxMounter); 2] {
    [
        ("current kernel API", LinuxMounter::new()),
        ("legacy fallbacks", LinuxMounter::new().legacy_only()),
    ]
}

fn quick_unmount() -> UnmountOptions {
    UnmountOptions {
        busy_retries: 2,
        initial_backoff: std::time::Duration::from_millis(1),
        max_backoff: std::time::Duration::from_millis(4),
        ..UnmountOptions::default()
    }
}

/// A source tmpfs with a submount, bound recursively read-only: a write fails with EROFS on
/// the top mount and on the submount, the source stays writable; both engines.
#[test]
fn recursive_read_only_bind_proven_by_erofs() {
    if !privileged("recursive_read_only_bind_proven_by_erofs") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        for (name, m) in engines() {
            let src = d.join(format!("src-{}", name.len()));
            let dst = mkdirs(&d.join(format!("dst-{}", name.len())));
            tmpfs(&src);
            tmpfs(&src.join("sub"));
            m.bind(&src, &dst, &BindOptions::read_only()).unwrap();
            assert_erofs(&dst.join("top-file"));
            assert_erofs(&dst.join("sub/sub-file"));
            write(&src.join("top-file")).unwrap();
            write(&src.join("sub/sub-file")).unwrap();
            assert!(
                dst.join("sub/sub-file").exists(),
                "{name}: the bind shows the source"
            );
            let t = table();
            let below: Vec<_> = t.mounts_at_or_below(&dst).collect();
            assert_eq!(below.len(), 2, "{name}: top and submount");
            assert!(
                below.iter().all(|e| e.is_read_only()),
                "{name}: every mount ro"
            );
            assert!(
                !t.top_mount_at(&src).unwrap().is_read_only(),
                "{name}: source untouched"
            );
            let gone = m.unmount_all_at_or_below(&dst, &quick_unmount()).unwrap();
            assert_eq!(
                gone.first().unwrap(),
                &dst.join("sub"),
                "{name}: deepest first"
            );
            assert_eq!(table().mounts_at_or_below(&dst).len(), 0);
        }
    });
}

/// `bind_into` a root: the mount point is created, flags nosuid/nodev/noexec/ro reach every
/// submount, and the host path returned is inside the root.
#[test]
fn bind_into_root_with_flags() {
    if !privileged("bind_into_root_with_flags") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        for (i, (name, m)) in engines().into_iter().enumerate() {
            let vol = d.join(format!("vol{i}"));
            tmpfs(&vol);
            tmpfs(&vol.join("inner"));
            let root = mkdirs(&d.join(format!("root{i}")));
            let opts = BindOptions {
                recursive: true,
                attrs: MountAttrs {
                    read_only: true,
                    nosuid: true,
                    nodev: true,
                    noexec: true,
                },
                propagation: Some(Propagation::Private),
            };
            let host = m
                .bind_into(&vol, &root, Path::new("/data/db"), &opts)
                .unwrap();
            assert_eq!(host, root.join("data/db"), "{name}");
            let t = table();
            let below: Vec<_> = t.mounts_at_or_below(&host).collect();
            assert_eq!(below.len(), 2, "{name}");
            for e in &below {
                for flag in ["ro", "nosuid", "nodev", "noexec"] {
                    assert!(
                        e.has_mount_option(flag),
                        "{name}: {flag} on {}",
                        e.mount_point().display()
                    );
                }
                assert_eq!(e.propagation(), Propagation::Private, "{name}");
            }
            assert_erofs(&host.join("x"));
            assert_erofs(&host.join("inner/x"));
            // A file source gets a file mount point.
            let file_src = vol.join("config");
            std::fs::write(&file_src, b"cfg").unwrap();
            let fhost = m
                .bind_into(
                    &file_src,
                    &root,
                    Path::new("etc/app.conf"),
                    &BindOptions::default(),
                )
                .unwrap();
            assert_eq!(std::fs::read(&fhost).unwrap(), b"cfg");
            assert!(table().is_mount_point(&fhost));
            // Mount point of the wrong kind: refused.
            let err = m
                .bind_into(
                    &vol,
                    &root,
                    Path::new("etc/app.conf"),
                    &BindOptions::default(),
                )
                .unwrap_err();
            assert!(
                matches!(err, MountError::KindMismatch { .. }),
                "{name}: {err}"
            );
            m.unmount_all_at_or_below(&root, &quick_unmount()).unwrap();
        }
    });
}

/// Real filesystems on loop devices (ext4, xfs): mounted, bound read-only (EROFS), unmounted.
#[test]
fn ext4_and_xfs_on_loop_devices() {
    if !privileged("ext4_and_xfs_on_loop_devices") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        for fstype in ["ext4", "xfs"] {
            let dev = loop_fs(&d, fstype);
            let fs = mkdirs(&d.join(format!("{fstype}-fs")));
            m.mount_filesystem(
                dev.path(),
                &fs,
                fstype,
                MountAttrs {
                    nodev: true,
                    ..MountAttrs::default()
                },
                None,
            )
            .unwrap();
            let e = table();
            let e = e.top_mount_at(&fs).unwrap();
            assert_eq!(e.fs_type(), fstype);
            assert_eq!(Path::new(e.mount_source()), dev.path());
            let vol = mkdirs(&fs.join("volumes/pv 1"));
            write(&vol.join("data")).unwrap();
            let root = mkdirs(&d.join(format!("{fstype}-root")));
            let host = m
                .bind_into(&vol, &root, Path::new("mnt/vol"), &BindOptions::read_only())
                .unwrap();
            assert_eq!(std::fs::read(host.join("data")).unwrap(), b"x");
            assert_erofs(&host.join("new"));
            write(&vol.join("new")).unwrap();
            assert_eq!(
                m.unmount(&host, &UnmountOptions::default()).unwrap(),
                Unmounted::Unmounted { attempts: 1 }
            );
            assert_eq!(
                m.unmount(&host, &UnmountOptions::default()).unwrap(),
                Unmounted::NotMounted
            );
            m.unmount(
                &fs,
                &UnmountOptions {
                    verify: Verify::MountInfo,
                    ..UnmountOptions::default()
                },
            )
            .unwrap();
            assert!(!table().is_mount_point(&fs));
            dev.detach().unwrap();
        }
    });
}

/// Propagation proven by mounting on the host side: a slave bind sees it, a private bind does
/// not; a mount made inside the slave does not travel back; an unbindable mount cannot be
/// bound.
#[test]
fn propagation_observed() {
    if !privileged("propagation_observed") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let vol = mkdirs(&d.join("volumes"));
        m.bind(&vol, &vol, &BindOptions::default()).unwrap();
        m.set_propagation(&vol, Propagation::Shared, false).unwrap();
        assert_eq!(
            table().top_mount_at(&vol).unwrap().propagation(),
            Propagation::Shared
        );
        let slave = mkdirs(&d.join("slave"));
        let private = mkdirs(&d.join("private"));
        let shared = mkdirs(&d.join("shared"));
        let with = |p| BindOptions {
            propagation: Some(p),
            ..BindOptions::default()
        };
        m.bind(&vol, &slave, &with(Propagation::Slave)).unwrap();
        m.bind(&vol, &private, &with(Propagation::Private)).unwrap();
        m.bind(&vol, &shared, &BindOptions::default()).unwrap();
        let t = table();
        assert!(t.top_mount_at(&slave).unwrap().master().is_some());
        assert_eq!(
            t.top_mount_at(&private).unwrap().propagation(),
            Propagation::Private
        );
        // Host side mounts a new volume under the shared directory.
        tmpfs(&vol.join("new"));
        let t = table();
        assert!(t.is_mount_point(&slave.join("new")), "slave receives");
        assert!(t.is_mount_point(&shared.join("new")), "peer receives");
        assert!(!t.is_mount_point(&private.join("new")), "private does not");
        // Host-side unmount propagates too (why Mesos makes its work_dir shared).
        m.unmount(&vol.join("new"), &UnmountOptions::default())
            .unwrap();
        let t = table();
        assert!(!t.is_mount_point(&slave.join("new")));
        assert!(!t.is_mount_point(&shared.join("new")));
        // A slave does not send back.
        tmpfs(&slave.join("inner"));
        assert!(!table().is_mount_point(&vol.join("inner")));
        // Unbindable cannot be the source of a bind.
        let u = mkdirs(&d.join("unbindable"));
        m.bind(&u, &u, &BindOptions::default()).unwrap();
        m.set_propagation(&u, Propagation::Unbindable, true)
            .unwrap();
        assert!(table().top_mount_at(&u).unwrap().is_unbindable());
        let err = m
            .bind(&u, &mkdirs(&d.join("u2")), &BindOptions::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                MountError::Syscall {
                    op: Op::Bind,
                    errno: Errno::EINVAL,
                    ..
                }
            ),
            "{err}"
        );
    });
}

/// A busy mount (an open file): plain unmount retries then fails with `Busy`, leaving it
/// mounted; with the detach fallback it is detached, gone from mountinfo, and the open file
/// still works.
#[test]
fn busy_unmount_behaves_as_documented() {
    if !privileged("busy_unmount_behaves_as_documented") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let t = d.join("busy");
        tmpfs(&t);
        let mut f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(t.join("held"))
            .unwrap();
        let err = m.unmount(&t, &quick_unmount()).unwrap_err();
        match &err {
            MountError::Busy { target, attempts } => {
                assert_eq!(target, &t);
                assert_eq!(*attempts, 3);
            }
            other => panic!("{other}"),
        }
        assert_eq!(err.errno(), Some(Errno::EBUSY));
        assert!(table().is_mount_point(&t), "still mounted after Busy");
        let opts = UnmountOptions {
            detach_fallback: true,
            ..quick_unmount()
        };
        assert_eq!(
            m.unmount(&t, &opts).unwrap(),
            Unmounted::Detached { attempts: 3 }
        );
        assert!(!table().is_mount_point(&t), "detached at once");
        f.write_all(b"still usable").unwrap();
        drop(f);
        // After the holder closes, a fresh mount unmounts at the first attempt.
        tmpfs(&t);
        assert_eq!(
            m.unmount(&t, &quick_unmount()).unwrap(),
            Unmounted::Unmounted { attempts: 1 }
        );
    });
}

/// Everything at or below a path goes, deepest first, stacked mounts included; a sibling with
/// a common prefix stays.
#[test]
fn unmount_everything_below_deepest_first() {
    if !privileged("unmount_everything_below_deepest_first") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let top = d.join("t");
        tmpfs(&top);
        tmpfs(&top.join("a"));
        tmpfs(&top.join("a/b c"));
        tmpfs(&top.join("a/b c"));
        tmpfs(&top.join("z"));
        let sibling = d.join("t2");
        tmpfs(&sibling);
        let before = table().mounts_at_or_below(&top).len();
        assert_eq!(before, 5);
        let gone = m.unmount_all_at_or_below(&top, &quick_unmount()).unwrap();
        assert_eq!(gone.len(), 5);
        assert_eq!(gone.first().unwrap(), &top.join("a/b c"));
        assert_eq!(gone.last().unwrap(), &top);
        let t = table();
        assert_eq!(t.mounts_at_or_below(&top).len(), 0);
        assert!(t.is_mount_point(&sibling));
        assert!(
            m.unmount_all_at_or_below(&top, &quick_unmount())
                .unwrap()
                .is_empty()
        );
    });
}

/// Paths with spaces, tabs, newlines, backslashes and unicode come back decoded from the real
/// kernel's mountinfo.
#[test]
fn mountinfo_decodes_the_kernels_escapes() {
    if !privileged("mountinfo_decodes_the_kernels_escapes") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let names = [
            "with space",
            "tab\there",
            "new\nline",
            "back\\slash",
            "ünïcödé データ",
            "\\040",
        ];
        for n in names {
            let p = mkdirs(&d.join(n));
            m.mount_filesystem(
                Path::new("src name\\x"),
                &p,
                "tmpfs",
                MountAttrs::default(),
                None,
            )
            .unwrap();
        }
        let t = table();
        for n in names {
            let p = d.join(n);
            let e = t
                .top_mount_at(&p)
                .unwrap_or_else(|| panic!("{n:?} not found"));
            assert_eq!(e.mount_point(), p);
            assert_eq!(e.mount_source(), "src name\\x");
            assert_eq!(e.fs_type(), "tmpfs");
        }
        assert_eq!(t.mounts_at_or_below(&d).len(), names.len());
        // /proc/<tid>/mountinfo is the same table for this thread.
        let tid = nix::unistd::gettid().as_raw();
        let by_pid = MountTable::read_pid(tid).unwrap();
        assert_eq!(by_pid.len(), t.len());
    });
}

/// A closure run in the mount namespace of another thread mounts there: that thread sees the
/// mount, the caller's namespace does not.
#[test]
fn run_in_the_mount_namespace_of_a_pid() {
    if !privileged("run_in_the_mount_namespace_of_a_pid") {
        return;
    }
    let (_g, d) = tempdir();
    let target = mkdirs(&d.join("into-container"));
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (seen_tx, seen_rx) = mpsc::channel();
    let t2 = target.clone();
    let container = std::thread::spawn(move || {
        berth_mount::ns::enter_private_mount_namespace().unwrap();
        tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
        go_rx.recv().unwrap();
        seen_tx
            .send(MountTable::read_current().unwrap().is_mount_point(&t2))
            .unwrap();
    });
    let tid = tid_rx.recv().unwrap();
    let inside = berth_mount::ns::in_mount_namespace_of(tid, || {
        tmpfs(&target);
        MountTable::read_current().unwrap().is_mount_point(&target)
    })
    .unwrap();
    assert!(inside);
    go_tx.send(()).unwrap();
    assert!(
        seen_rx.recv().unwrap(),
        "the target namespace has the mount"
    );
    container.join().unwrap();
    assert!(
        !MountTable::read_current().unwrap().is_mount_point(&target),
        "ours does not"
    );
    let err = berth_mount::ns::in_mount_namespace_of(i32::MAX, || ()).unwrap_err();
    assert!(
        matches!(
            err,
            MountError::Namespace {
                errno: Errno::ENOENT,
                ..
            }
        ),
        "{err}"
    );
}

/// Safe removal refuses while anything is mounted below (and never touches the mounted
/// data); symlinks are removed, not followed; `rmdir` is never recursive.
#[test]
fn safe_removal_never_crosses_a_mount() {
    if !privileged("safe_removal_never_crosses_a_mount") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let outside = mkdirs(&d.join("outside"));
        std::fs::write(outside.join("precious"), b"keep").unwrap();
        let vol = mkdirs(&d.join("volume/sub/deeper"));
        let vol = vol.parent().unwrap().parent().unwrap().to_path_buf();
        std::fs::write(vol.join("a"), b"a").unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("sub/link-out")).unwrap();
        let mp = mkdirs(&vol.join("sub/deeper/mnt"));
        m.bind(&outside, &mp, &BindOptions::default()).unwrap();
        let err = berth_mount::path::remove_dir_all_checked(&vol).unwrap_err();
        assert!(
            matches!(&err, MountError::MountedBelow { mount_point, .. } if *mount_point == mp),
            "{err}"
        );
        assert!(vol.join("a").exists(), "nothing removed before refusing");
        // rmdir: a mount point is busy, a non-empty directory is refused, missing is fine.
        assert_eq!(
            berth_mount::path::rmdir(&mp).unwrap_err().errno(),
            Some(Errno::EBUSY)
        );
        assert_eq!(
            berth_mount::path::rmdir(&vol).unwrap_err().errno(),
            Some(Errno::ENOTEMPTY)
        );
        assert!(!berth_mount::path::rmdir(&d.join("missing")).unwrap());
        m.unmount(&mp, &UnmountOptions::default()).unwrap();
        berth_mount::path::remove_dir_all_checked(&vol).unwrap();
        assert!(!vol.exists());
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
        berth_mount::path::remove_dir_all_checked(&vol).unwrap();
    });
}

/// A directory bind-mounted from the *same* filesystem (same `st_dev`) is still refused, and
/// the data behind the bind survives.
#[test]
fn same_filesystem_bind_survives_removal_attempt() {
    if !privileged("same_filesystem_bind_survives_removal_attempt") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let data = mkdirs(&d.join("data"));
        std::fs::write(data.join("f"), b"1").unwrap();
        let vol = mkdirs(&d.join("vol/x"));
        m.bind(&data, &vol, &BindOptions::default()).unwrap();
        assert!(berth_mount::path::remove_dir_all_checked(&d.join("vol")).is_err());
        assert!(data.join("f").exists());
        let mut s = String::new();
        File::open(data.join("f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "1");
    });
}

#[test]
fn errors_name_operation_paths_and_errno() {
    if !privileged("errors_name_operation_paths_and_errno") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        let m = mounter();
        let err = m
            .bind(
                &d.join("missing src"),
                &mkdirs(&d.join("t")),
                &BindOptions::default(),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bind mount "), "{msg}");
        assert!(
            msg.contains("missing src") && msg.contains("/t") && msg.contains("ENOENT"),
            "{msg}"
        );
        let _: PathBuf = match err {
            MountError::Syscall { target, .. } => target,
            other => panic!("{other}"),
        };
    });
}

/// `detach_all_in_root` follows mount ids, not paths: a mount whose parent directory was
/// renamed and replaced by a symlink to a host mount is still found, and the host mount stays.
#[test]
fn detach_all_in_root_is_not_redirected_by_a_swap() {
    if !privileged("detach_all_in_root_is_not_redirected_by_a_swap") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        for (name, m) in engines() {
            let base = mkdirs(&d.join(format!("swap-{}", name.len())));
            let root = mkdirs(&base.join("root"));
            let outside = mkdirs(&base.join("outside"));
            tmpfs(&outside.join("x"));
            let vol = mkdirs(&base.join("vol"));
            let host = m
                .bind_into(&vol, &root, Path::new("a/x"), &BindOptions::default())
                .unwrap();
            tmpfs(&host.join("deeper"));
            std::fs::rename(root.join("a"), root.join("b")).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
            let gone = m.detach_all_in_root(&root).unwrap();
            assert_eq!(
                gone,
                vec![root.join("b/x/deeper"), root.join("b/x")],
                "{name}"
            );
            let t = table();
            assert!(
                t.is_mount_point(&outside.join("x")),
                "{name}: the host mount stays"
            );
            assert_eq!(t.mounts_at_or_below(&root).len(), 0, "{name}");
        }
    });
}
