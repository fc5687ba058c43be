//! The escape corpus: hostile container paths and hostile rootfs contents (`..`, absolute and
//! relative symlinks that climb, loops, magic links, a symlink swapped in between check and
//! use, spaces, newlines, unicode). For every case, with the current kernel API and with the
//! legacy fallbacks (component walk, bind through `/proc/thread-self/fd`), nothing is mounted
//! or written outside the root — asserted on the host side: the outside directory's content
//! and the mount table.

// Helpers outside #[test] functions unwrap too: a failing setup is a failing test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth_mount::path::{Kind, ResolveMode, Resolver};
use berth_mount::sys::{LinuxSys, Sys};
use berth_mount::{BindOptions, LinuxMounter, MountError, MountTable, Mounter, UnmountOptions};
use common::*;
use nix::mount::MsFlags;

const MARKER: &str = "VOLUME-MARKER";

struct Env {
    root: PathBuf,
    outside: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Mounted at this path relative to the root.
    Inside(&'static str),
    /// Refused with an error.
    Refused,
}

struct Case {
    name: &'static str,
    path: &'static [u8],
    file_source: bool,
    setup: fn(&Env),
    expect: Expect,
}

fn none(_: &Env) {}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap().to_path_buf()
}

fn corpus() -> Vec<Case> {
    let c = |name, path: &'static [u8], setup: fn(&Env), expect| Case {
        name,
        path,
        file_source: false,
        setup,
        expect,
    };
    use Expect::{Inside, Refused};
    vec![
        c("dotdot", b"../x", none, Refused),
        c("dotdot after a component", b"a/../../x", none, Refused),
        c("dotdot deep", b"a/b/../../../x", none, Refused),
        c("absolute dotdot", b"/../outside", none, Refused),
        c("dot then dotdot", b"./../x", none, Refused),
        c("plain", b"data", none, Inside("data")),
        c("absolute, nested, created", b"/data/nested/deep", none, Inside("data/nested/deep")),
        c("redundant separators", b"a/./b//c/", none, Inside("a/b/c")),
        c(
            "absolute symlink to the outside (dangling inside)",
            b"abs",
            |e| symlink(&e.outside, e.root.join("abs")).unwrap(),
            Refused,
        ),
        c(
            "below an absolute symlink to the outside",
            b"abs/victim",
            |e| symlink(&e.outside, e.root.join("abs")).unwrap(),
            Refused,
        ),
        c(
            "absolute symlink confined to its mirror inside the root",
            b"abs_mirror",
            |e| {
                symlink(&e.outside, e.root.join("abs_mirror")).unwrap();
                mkdirs(&e.root.join(rel(&e.outside)));
            },
            Inside("MIRROR"),
        ),
        c(
            "relative symlink climbing (dangling inside)",
            b"rel",
            |e| symlink("../outside", e.root.join("rel")).unwrap(),
            Refused,
        ),
        c(
            "relative symlink climbing far, clamped at the root",
            b"rel_deep",
            |e| {
                symlink("../../../../../../../../../../outside", e.root.join("rel_deep")).unwrap();
                mkdirs(&e.root.join("outside"));
            },
            Inside("outside"),
        ),
        c(
            "nested symlink climbing to a victim",
            b"dir/up",
            |e| {
                mkdirs(&e.root.join("dir"));
                symlink("../../outside/victim", e.root.join("dir/up")).unwrap();
            },
            Refused,
        ),
        c(
            "symlink loop",
            b"loop1",
            |e| {
                symlink("loop2", e.root.join("loop1")).unwrap();
                symlink("loop1", e.root.join("loop2")).unwrap();
            },
            Refused,
        ),
        c(
            "self loop under a component",
            b"self/x",
            |e| symlink("self", e.root.join("self")).unwrap(),
            Refused,
        ),
        c("symlink to /", b"to_root", |e| symlink("/", e.root.join("to_root")).unwrap(), Refused),
        c("symlink to ..", b"dotdot_link", |e| symlink("..", e.root.join("dotdot_link")).unwrap(), Refused),
        c(
            "through a symlink to / into a new directory",
            b"via_root/data2",
            |e| symlink("/", e.root.join("via_root")).unwrap(),
            Inside("data2"),
        ),
        c(
            "intermediate absolute symlink to an existing directory",
            b"intermediate/sub",
            |e| {
                mkdirs(&e.root.join("existing"));
                symlink("/existing", e.root.join("intermediate")).unwrap();
            },
            Inside("existing/sub"),
        ),
        c(
            "existing file where a directory source needs a directory",
            b"existing_file",
            |e| std::fs::write(e.root.join("existing_file"), b"f").unwrap(),
            Refused,
        ),
        c(
            "a file in the middle of the path",
            b"not_a_dir/child",
            |e| std::fs::write(e.root.join("not_a_dir"), b"f").unwrap(),
            Refused,
        ),
        c("spaces, newline, tab, backslash", b"with space/and\nnewline\tand\\back", none, Inside("with space/and\nnewline\tand\\back")),
        c("unicode", "ünïcödé/データ/😀".as_bytes(), none, Inside("ünïcödé/データ/😀")),
        c(
            "magic link through a procfs inside the root",
            b"m/x",
            |e| {
                let proc_in_root = mkdirs(&e.root.join("proc"));
                LinuxMounter::new()
                    .bind(Path::new("/proc"), &proc_in_root, &BindOptions::default())
                    .unwrap();
                let mut target = b"/proc/self/root".to_vec();
                target.extend_from_slice(e.outside.as_os_str().as_bytes());
                symlink(OsStr::from_bytes(&target), e.root.join("m")).unwrap();
            },
            Refused,
        ),
        c("empty path", b"", none, Refused),
        c("the root itself", b".", none, Refused),
        c("NUL byte", b"a\0b", none, Refused),
        c(
            "component longer than 255 bytes",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            none,
            Refused,
        ),
        Case {
            name: "file source at a new file mount point",
            path: b"etc/hosts",
            file_source: true,
            setup: none,
            expect: Inside("etc/hosts"),
        },
        Case {
            name: "file source through an absolute symlink to a host file",
            path: b"passwd",
            file_source: true,
            setup: |e| symlink("/etc/passwd", e.root.join("passwd")).unwrap(),
            expect: Refused,
        },
        Case {
            name: "file source through a relative symlink to an outside file",
            path: b"sneaky",
            file_source: true,
            setup: |e| symlink("../outside/precious", e.root.join("sneaky")).unwrap(),
            expect: Refused,
        },
    ]
}

/// Every file under `dir` with its content (symlinks as their target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            let content = if ft.is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else if ft.is_dir() {
                todo.push(p.clone());
                b"<dir>".to_vec()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(p, content);
        }
    }
    out
}

fn run_corpus(m: &LinuxMounter, engine: &str, base: &Path) {
    let cases = corpus();
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    for (i, case) in cases.iter().enumerate() {
        let dir = mkdirs(&base.join(format!("{engine}-{i}")));
        let env = Env {
            root: mkdirs(&dir.join("root")),
            outside: mkdirs(&dir.join("outside")),
        };
        std::fs::write(env.outside.join("precious"), b"keep").unwrap();
        mkdirs(&env.outside.join("victim"));
        let vol = mkdirs(&dir.join("volume"));
        std::fs::write(vol.join(MARKER), b"v").unwrap();
        let source = if case.file_source {
            vol.join(MARKER)
        } else {
            vol.clone()
        };
        (case.setup)(&env);
        let before_outside = snapshot(&env.outside);
        let before_ids: Vec<u64> = MountTable::read_current()
            .unwrap()
            .iter()
            .map(|e| e.mount_id())
            .collect();

        let path = Path::new(OsStr::from_bytes(case.path));
        let got = m.bind_into(&source, &env.root, path, &BindOptions::read_only());
        let what = format!("[{engine}] case {i} {:?} ({:?})", case.name, path);

        // Host-side invariants, whatever the outcome.
        let t = MountTable::read_current().unwrap();
        assert_eq!(
            snapshot(&env.outside),
            before_outside,
            "{what}: outside changed"
        );
        assert_eq!(
            t.mounts_at_or_below(&env.outside).len(),
            0,
            "{what}: mount outside"
        );
        assert!(!t.is_mount_point(Path::new("/etc/passwd")), "{what}");
        for e in t.iter().filter(|e| !before_ids.contains(&e.mount_id())) {
            assert!(
                e.mount_point().starts_with(&env.root),
                "{what}: new mount {} is outside the root",
                e.mount_point().display()
            );
        }
        match (case.expect, got) {
            (Expect::Inside(want), Ok(host)) => {
                let want = if want == "MIRROR" {
                    env.root.join(rel(&env.outside))
                } else {
                    env.root.join(want)
                };
                assert_eq!(host, want, "{what}");
                assert!(
                    t.is_mount_point(&host),
                    "{what}: not mounted at {}",
                    host.display()
                );
                let marker = if case.file_source {
                    host.clone()
                } else {
                    host.join(MARKER)
                };
                assert_eq!(
                    std::fs::read(&marker).unwrap(),
                    b"v",
                    "{what}: the volume is there"
                );
                assert_erofs(&if case.file_source {
                    host.clone()
                } else {
                    host.join("w")
                });
            }
            (Expect::Refused, Err(e)) => {
                assert!(
                    !matches!(e, MountError::Syscall { .. }),
                    "{what}: refused before any mount call, got {e}"
                );
                let new_in_root = t
                    .mounts_at_or_below(&env.root)
                    .filter(|e| !before_ids.contains(&e.mount_id()))
                    .count();
                assert_eq!(new_in_root, 0, "{what}: refused but something was mounted");
            }
            (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
        m.unmount_all_at_or_below(&env.root, &UnmountOptions::default())
            .unwrap();
    }
}

#[test]
fn escape_corpus_current_kernel_api() {
    if !privileged("escape_corpus_current_kernel_api") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| run_corpus(&LinuxMounter::new(), "current", &d));
}

#[test]
fn escape_corpus_legacy_fallbacks() {
    if !privileged("escape_corpus_legacy_fallbacks") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| run_corpus(&LinuxMounter::new().legacy_only(), "legacy", &d));
}

/// With `NoSymlinks`, any symlink on the way is refused, even one that stays inside.
#[test]
fn no_symlinks_mode_refuses_every_symlink() {
    if !privileged("no_symlinks_mode_refuses_every_symlink") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        for m in [
            LinuxMounter::new().with_resolve_mode(ResolveMode::NoSymlinks),
            LinuxMounter::new()
                .legacy_only()
                .with_resolve_mode(ResolveMode::NoSymlinks),
        ] {
            let root = mkdirs(&d.join("root"));
            let vol = mkdirs(&d.join("vol"));
            mkdirs(&root.join("real"));
            let _ = symlink("real", root.join("inside_link"));
            let err = m
                .bind_into(
                    &vol,
                    &root,
                    Path::new("inside_link/x"),
                    &BindOptions::default(),
                )
                .unwrap_err();
            assert!(matches!(err, MountError::Escape { .. }), "{err}");
            let host = m
                .bind_into(&vol, &root, Path::new("real/x"), &BindOptions::default())
                .unwrap();
            assert_eq!(host, root.join("real/x"));
            m.unmount(&host, &UnmountOptions::default()).unwrap();
        }
    });
}

/// A directory swapped for a symlink to the outside *after* resolution: the mount lands on the
/// inode resolution opened (now renamed inside the root), never on the outside. Done at the
/// system-call level to place the swap exactly between check and use, for both attach paths.
#[test]
fn symlink_swapped_between_check_and_use() {
    if !privileged("symlink_swapped_between_check_and_use") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        for legacy in [false, true] {
            let base = mkdirs(&d.join(format!("swap-{legacy}")));
            let root = mkdirs(&base.join("root"));
            let outside = mkdirs(&base.join("outside"));
            let vol = mkdirs(&base.join("vol"));
            std::fs::write(vol.join(MARKER), b"v").unwrap();
            let resolver = Resolver {
                mode: ResolveMode::InRoot,
                force_walk: legacy,
            };
            let fd = resolver
                .prepare_mount_point(&root, Path::new("target"), Kind::Dir)
                .unwrap();
            // The swap.
            std::fs::rename(root.join("target"), root.join("moved")).unwrap();
            symlink(&outside, root.join("target")).unwrap();
            if legacy {
                let fd_path = PathBuf::from(format!(
                    "/proc/thread-self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ));
                LinuxSys
                    .mount(
                        Some(&vol),
                        &fd_path,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .unwrap();
            } else {
                let tree = LinuxSys.open_tree_clone(&vol, true).unwrap();
                LinuxSys
                    .move_mount(
                        std::os::fd::AsFd::as_fd(&tree),
                        std::os::fd::AsFd::as_fd(&fd),
                    )
                    .unwrap();
            }
            let t = MountTable::read_current().unwrap();
            assert!(
                t.is_mount_point(&root.join("moved")),
                "mounted on the opened inode"
            );
            assert_eq!(
                t.mounts_at_or_below(&outside).len(),
                0,
                "never on the outside"
            );
            assert!(!outside.join(MARKER).exists());
            assert!(root.join("moved").join(MARKER).exists());
        }
    });
}

/// A racing process flips a path component between a directory and a symlink to the outside
/// while the engine mounts through it, many times: every mount that succeeds is inside the
/// root, and nothing ever appears outside.
#[test]
fn racing_symlink_swaps_never_escape() {
    if !privileged("racing_symlink_swaps_never_escape") {
        return;
    }
    let (_g, d) = tempdir();
    for (k, m) in [LinuxMounter::new(), LinuxMounter::new().legacy_only()]
        .into_iter()
        .enumerate()
    {
        let base = mkdirs(&d.join(format!("race-{k}")));
        let root = mkdirs(&base.join("root"));
        let outside = mkdirs(&base.join("outside"));
        let vol = mkdirs(&base.join("vol"));
        std::fs::write(vol.join(MARKER), b"v").unwrap();
        mkdirs(&root.join("race"));
        symlink(&outside, root.join("other")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, stopped, root) = (Arc::clone(&stop), Arc::clone(&stopped), root.clone());
            std::thread::spawn(move || {
                let mut flips = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    nix::fcntl::renameat2(
                        nix::fcntl::AT_FDCWD,
                        &root.join("race"),
                        nix::fcntl::AT_FDCWD,
                        &root.join("other"),
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                    flips += 1;
                }
                stopped.store(true, Ordering::Release);
                flips
            })
        };
        let before = snapshot(&outside);
        let mut mounted = 0;
        let mut deferred = 0;
        in_ns(|| {
            for _ in 0..300 {
                if let Ok(host) =
                    m.bind_into(&vol, &root, Path::new("race/x"), &BindOptions::default())
                {
                    mounted += 1;
                    assert!(host.starts_with(&root), "{}", host.display());
                    // While the path flips to a symlink, a confined detach must refuse rather
                    // than follow it: the mount stays, safely inside the root, for later.
                    match m.detach_all_in_root(&root) {
                        Ok(_) => {}
                        Err(berth_mount::MountError::StillMounted { .. }) => deferred += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
                let t = MountTable::read_current().unwrap();
                assert_eq!(t.mounts_at_or_below(&outside).len(), 0);
            }
            // Once the race is over, everything left is detached.
            stop.store(true, Ordering::Relaxed);
            while !stopped.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            let _ = m.detach_all_in_root(&root).unwrap();
            let t = MountTable::read_current().unwrap();
            assert_eq!(
                t.mounts_at_or_below(&root).len(),
                0,
                "nothing left mounted in the root"
            );
            assert_eq!(t.mounts_at_or_below(&outside).len(), 0);
        });
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert!(flips > 0);
        assert_eq!(snapshot(&outside), before, "nothing written outside");
        eprintln!(
            "race {k}: {mounted}/300 mounts succeeded inside the root during {flips} flips \
             ({deferred} detaches deferred until the race ended)"
        );
    }
}

/// The host path given with a descriptor (`open_in_with_path`,
/// `prepare_mount_point_in_with_path`) is where the descriptor leads, as `fd_path` says:
/// without a symlink on the way (computed, no system call), through symlinks inside the root
/// (asked of the kernel), and with the root itself named through a symlink. The fast path
/// keeps every refusal of the slow one. Needs no mount, so it runs unprivileged too.
#[test]
fn host_paths_are_where_the_descriptors_lead() {
    use berth_mount::path::{RootDir, fd_path};
    let (_g, d) = tempdir();
    let real = mkdirs(&d.join("real-root"));
    mkdirs(&real.join("a/b"));
    std::fs::write(real.join("c"), b"").unwrap();
    symlink("/a", real.join("abs")).unwrap();
    symlink("a/b", real.join("rel")).unwrap();
    symlink("/", real.join("up")).unwrap();
    symlink("../../..", real.join("climb")).unwrap();
    let link = d.join("root-link");
    symlink(&real, &link).unwrap();
    let inroot = Resolver::default();
    let plain = Resolver {
        mode: ResolveMode::NoSymlinks,
        force_walk: false,
    };
    for force_walk in [false, true] {
        let inroot = Resolver {
            force_walk,
            ..inroot
        };
        for root in [&real, &link] {
            let rd = RootDir::open(root).unwrap();
            assert_eq!(rd.host_path().unwrap(), real.as_path());
            let what = |p: &str| format!("root {} path {p} walk {force_walk}", root.display());
            for (p, want) in [
                ("a", "a"),
                ("a/b", "a/b"),
                ("/a/b", "a/b"),
                ("./a//b/", "a/b"),
                ("abs/b", "a/b"),
                ("rel", "a/b"),
                ("c", "c"),
                ("climb/a", "a"),
            ] {
                let (fd, host) = inroot.open_in_with_path(&rd, Path::new(p)).unwrap();
                assert_eq!(host, fd_path(&fd).unwrap(), "{}", what(p));
                assert_eq!(host, real.join(want), "{}", what(p));
            }
            for (p, want) in [
                ("x/y", "x/y"),
                ("a/b", "a/b"),
                ("abs/new", "a/new"),
                ("rel", "a/b"),
            ] {
                let (fd, host) = inroot
                    .prepare_mount_point_in_with_path(&rd, Path::new(p), Kind::Dir)
                    .unwrap();
                assert_eq!(host, fd_path(&fd).unwrap(), "{}", what(p));
                assert_eq!(host, real.join(want), "{}", what(p));
                assert!(real.join(want).is_dir(), "{}", what(p));
            }
            let (fd, host) = inroot
                .prepare_mount_point_in_with_path(&rd, Path::new("f"), Kind::File)
                .unwrap();
            assert_eq!(host, fd_path(&fd).unwrap());
            assert!(real.join("f").is_file());
            let err = inroot
                .prepare_mount_point_in_with_path(&rd, Path::new("c"), Kind::Dir)
                .unwrap_err();
            assert!(matches!(err, MountError::KindMismatch { .. }), "{err}");
            let err = inroot
                .prepare_mount_point_in_with_path(&rd, Path::new("a"), Kind::File)
                .unwrap_err();
            assert!(matches!(err, MountError::KindMismatch { .. }), "{err}");
            let err = inroot
                .prepare_mount_point_in_with_path(&rd, Path::new("up"), Kind::Dir)
                .unwrap_err();
            assert!(matches!(err, MountError::Escape { .. }), "{err}");
            let err = inroot
                .open_in_with_path(&rd, Path::new("a/../a"))
                .unwrap_err();
            assert!(matches!(err, MountError::Escape { .. }), "{err}");
            let err = inroot
                .open_in_with_path(&rd, Path::new("missing"))
                .unwrap_err();
            assert!(matches!(err, MountError::Fs { .. }), "{err}");
            // NoSymlinks: every symlink is refused, on both paths.
            let plain = Resolver {
                force_walk,
                ..plain
            };
            for p in ["abs/b", "rel", "up"] {
                let err = plain.open_in_with_path(&rd, Path::new(p)).unwrap_err();
                assert!(
                    matches!(err, MountError::Escape { .. }),
                    "{}: {err}",
                    what(p)
                );
                let err = plain
                    .prepare_mount_point_in_with_path(&rd, Path::new(p), Kind::Dir)
                    .unwrap_err();
                assert!(
                    matches!(err, MountError::Escape { .. }),
                    "{}: {err}",
                    what(p)
                );
            }
            let (_fd, host) = plain.open_in_with_path(&rd, Path::new("a/b")).unwrap();
            assert_eq!(host, real.join("a/b"));
            std::fs::remove_dir_all(real.join("x")).unwrap();
            std::fs::remove_dir(real.join("a/new")).unwrap();
            std::fs::remove_file(real.join("f")).unwrap();
        }
    }
}

/// `unmount_in_root` cannot be redirected by a process in the root. With a parent directory
/// swapped for a symlink to the outside after the mount point was resolved, a path-based
/// `unmount` follows the symlink and unmounts a mount outside the root (the hazard, shown
/// first); `unmount_in_root` refuses and the outside mount stays. It unmounts our mount where
/// it really is, takes a stack whole, is idempotent, and a missing parent means nothing is
/// mounted.
#[test]
fn unmount_in_root_cannot_be_redirected() {
    use berth_mount::Unmounted;
    use berth_mount::path::RootDir;
    if !privileged("unmount_in_root_cannot_be_redirected") {
        return;
    }
    let (_g, d) = tempdir();
    in_ns(|| {
        for (n, m) in [
            LinuxMounter::new(),
            LinuxMounter::new()
                .legacy_only()
                .with_resolve_mode(ResolveMode::InRoot),
        ]
        .iter()
        .enumerate()
        {
            let base = mkdirs(&d.join(format!("run-{n}")));
            let root = mkdirs(&base.join("root"));
            let vol = mkdirs(&base.join("vol"));
            let outside = mkdirs(&base.join("outside"));
            let opts = UnmountOptions::default();
            let mounted = |p: &Path| MountTable::read_current().unwrap().is_mount_point(p);
            let rd = RootDir::open(&root).unwrap();

            // Ours, nested and at the root's top level.
            let ab = m
                .bind_into(&vol, &root, Path::new("a/b"), &BindOptions::default())
                .unwrap();
            let c = m
                .bind_into(&vol, &root, Path::new("c"), &BindOptions::default())
                .unwrap();
            assert!(mounted(&ab) && mounted(&c));
            let got = m.unmount_in_root(&rd, Path::new("a/b"), &opts).unwrap();
            assert!(matches!(got, Unmounted::Unmounted { .. }), "{got:?}");
            let got = m.unmount_in_root(&rd, Path::new("c"), &opts).unwrap();
            assert!(matches!(got, Unmounted::Unmounted { .. }), "{got:?}");
            assert!(!mounted(&ab) && !mounted(&c));
            assert_eq!(
                m.unmount_in_root(&rd, Path::new("a/b"), &opts).unwrap(),
                Unmounted::NotMounted
            );
            assert_eq!(
                m.unmount_in_root(&rd, Path::new("nothing/here"), &opts)
                    .unwrap(),
                Unmounted::NotMounted
            );

            // A stack at one mount point goes whole (plain `unmount` takes the top only).
            for _ in 0..3 {
                m.bind_into(&vol, &root, Path::new("s"), &BindOptions::default())
                    .unwrap();
            }
            let got = m.unmount_in_root(&rd, Path::new("s"), &opts).unwrap();
            assert!(matches!(got, Unmounted::Unmounted { .. }), "{got:?}");
            assert!(
                !mounted(&root.join("s")),
                "a lower mount of the stack stayed"
            );

            // Someone else's mount outside the root, named like ours.
            tmpfs(&outside.join("b"));
            let swap = || {
                std::fs::rename(root.join("a"), root.join("a-moved")).unwrap();
                symlink(&outside, root.join("a")).unwrap();
            };
            let unswap = || {
                std::fs::remove_file(root.join("a")).unwrap();
                std::fs::rename(root.join("a-moved"), root.join("a")).unwrap();
            };

            // The hazard: by path, the parent symlink is followed out of the root.
            m.bind_into(&vol, &root, Path::new("a/b"), &BindOptions::default())
                .unwrap();
            swap();
            m.unmount(&root.join("a/b"), &opts).unwrap();
            assert!(
                !mounted(&outside.join("b")),
                "by path, the unmount was redirected outside"
            );
            assert!(mounted(&root.join("a-moved/b")), "and ours stayed");
            unswap();
            m.unmount(&root.join("a/b"), &opts).unwrap();
            tmpfs(&outside.join("b"));

            // unmount_in_root: refused, the outside mount stays, ours is found where it is.
            m.bind_into(&vol, &root, Path::new("a/b"), &BindOptions::default())
                .unwrap();
            swap();
            let err = m.unmount_in_root(&rd, Path::new("a/b"), &opts).unwrap_err();
            assert!(matches!(err, MountError::Escape { .. }), "{err}");
            assert!(mounted(&outside.join("b")), "the outside mount was touched");
            assert!(mounted(&root.join("a-moved/b")));
            let got = m
                .unmount_in_root(&rd, Path::new("a-moved/b"), &opts)
                .unwrap();
            assert!(matches!(got, Unmounted::Unmounted { .. }), "{got:?}");
            assert!(!mounted(&root.join("a-moved/b")));
            unswap();
            m.unmount(&outside.join("b"), &opts).unwrap();
            assert_eq!(
                MountTable::read_current()
                    .unwrap()
                    .mounts_at_or_below(&base)
                    .count(),
                0
            );
        }
    });
}
