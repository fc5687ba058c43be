//! Mount-engine benchmarks (issue "Mount engine: safe, verified Linux mounts"), run as root in
//! a private mount namespace entered by the main thread before criterion starts (every
//! measurement runs on that thread, and the namespace dies with the process):
//!
//! * `mount_cycle/*`: one bind + recursive read-only + unmount cycle on a tmpfs target, by hand
//!   with raw system calls (`raw_remount`: bind, `MS_REMOUNT|MS_BIND|MS_RDONLY`, `umount2`;
//!   `raw_setattr`: bind, `mount_setattr(AT_RECURSIVE)`, `umount2`) and through the engine
//!   (`berth_bind`: `Mounter::bind` + verified `Mounter::unmount`; `berth_bind_into`: the
//!   confined bind into a root + verified unmount). Target: `berth_bind` ≤ 1.3 × raw.
//! * `mountinfo/{100,1000}/*`: the kernel read alone (`read`: open + read into a reused
//!   buffer), our full read + parse (`read_parse`), parse alone (`parse`), with that many
//!   mounts in the table (mount points contain a space, so `\040` decoding is exercised).
//!   Target: `read_parse` ≤ 1.2 × `read` + 10 %.
//! * `query/{100,1000}/*`: `is_mount_point` and `mounts_at_or_below` on a parsed table
//!   (O(log n)), and the one-off index build.
//!
//! Not root: prints a message and exits without measuring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_mount::mountinfo::THREAD_SELF_MOUNTINFO;
use berth_mount::sys::{LinuxSys, SetAttr, Sys};
use berth_mount::{BindOptions, LinuxMounter, MountAttrs, MountTable, Mounter, UnmountOptions};
use criterion::{BatchSize, Criterion};
use nix::mount::{MntFlags, MsFlags};

fn bench_cycle(c: &mut Criterion, base: &Path) {
    let m = LinuxMounter::new();
    let src = base.join("volumes/roles/role1/pv-1");
    std::fs::create_dir_all(&src).unwrap();
    let tgt = base.join("sandbox/vol");
    std::fs::create_dir_all(&tgt).unwrap();
    let root = base.join("rootfs");
    std::fs::create_dir_all(root.join("data")).unwrap();

    let mut g = c.benchmark_group("mount_cycle");
    g.sample_size(60)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("raw_remount", |b| {
        b.iter(|| {
            nix::mount::mount(
                Some(&src),
                &tgt,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .unwrap();
            nix::mount::mount(
                None::<&str>,
                &tgt,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .unwrap();
            nix::mount::umount2(&tgt, MntFlags::empty()).unwrap();
        });
    });
    g.bench_function("raw_setattr", |b| {
        let attr = SetAttr {
            set: libc::MOUNT_ATTR_RDONLY,
            ..SetAttr::default()
        };
        b.iter(|| {
            nix::mount::mount(
                Some(&src),
                &tgt,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .unwrap();
            LinuxSys
                .mount_setattr(None, &tgt, libc::AT_RECURSIVE as libc::c_uint, attr)
                .unwrap();
            nix::mount::umount2(&tgt, MntFlags::empty()).unwrap();
        });
    });
    let ro = BindOptions::read_only();
    let un = UnmountOptions::default();
    g.bench_function("berth_bind", |b| {
        b.iter(|| {
            m.bind(&src, &tgt, &ro).unwrap();
            black_box(m.unmount(&tgt, &un).unwrap());
        });
    });
    g.bench_function("berth_bind_into", |b| {
        b.iter(|| {
            let host = m.bind_into(&src, &root, Path::new("data"), &ro).unwrap();
            black_box(m.unmount(&host, &un).unwrap());
        });
    });
    g.finish();
}

/// Adds bind mounts (mount points with a space) until the table has `n` lines.
fn grow_table(base: &Path, n: usize) {
    let m = LinuxMounter::new();
    let src = base.join("bind src");
    std::fs::create_dir_all(&src).unwrap();
    let mut i = 0usize;
    while MountTable::read_current().unwrap().len() < n {
        let t = base.join(format!("mounts/m {i}"));
        i += 1;
        if t.exists() {
            continue;
        }
        std::fs::create_dir_all(&t).unwrap();
        m.bind(
            &src,
            &t,
            &BindOptions {
                recursive: false,
                ..BindOptions::default()
            },
        )
        .unwrap();
    }
}

fn bench_mountinfo(c: &mut Criterion, base: &Path) {
    for n in [100usize, 1000] {
        grow_table(base, n);
        let path = Path::new(THREAD_SELF_MOUNTINFO);
        let mut g = c.benchmark_group(format!("mountinfo/{n}"));
        g.sample_size(60)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        let mut buf = Vec::with_capacity(256 * 1024);
        g.bench_function("read", |b| {
            b.iter(|| {
                buf.clear();
                std::fs::File::open(path)
                    .unwrap()
                    .read_to_end(&mut buf)
                    .unwrap();
                black_box(buf.len())
            });
        });
        g.bench_function("read_parse", |b| {
            b.iter(|| black_box(MountTable::read_current().unwrap().len()));
        });
        let text = std::fs::read(path).unwrap();
        g.bench_function("parse", |b| {
            b.iter_batched(
                || text.clone(),
                |t| black_box(MountTable::parse(t).unwrap().len()),
                BatchSize::SmallInput,
            );
        });
        g.finish();

        let table = MountTable::read_current().unwrap();
        assert!(table.len() >= n);
        let mid: PathBuf = base.join(format!("mounts/m {}", n / 2));
        let missing = base.join("mounts/none");
        let mounts = base.join("mounts");
        let _ = table.is_mount_point(&mid); // build the index once
        let mut g = c.benchmark_group(format!("query/{n}"));
        g.sample_size(60)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        g.bench_function("is_mount_point_hit", |b| {
            b.iter(|| black_box(table.is_mount_point(black_box(&mid))));
        });
        g.bench_function("is_mount_point_miss", |b| {
            b.iter(|| black_box(table.is_mount_point(black_box(&missing))));
        });
        g.bench_function("mounts_at_or_below_count", |b| {
            b.iter(|| black_box(table.mounts_at_or_below(black_box(&mounts)).len()));
        });
        g.bench_function("mounts_at_or_below_leaf", |b| {
            b.iter(|| black_box(table.mounts_at_or_below(black_box(&mid)).count()));
        });
        g.bench_function("index_build", |b| {
            b.iter_batched(
                || table.clone(),
                |t| black_box(t.is_mount_point(&mid)),
                BatchSize::SmallInput,
            );
        });
        g.finish();
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("mount benchmarks skipped: they need root (real mounts in a private namespace)");
        return;
    }
    // Single-threaded so far: the whole process (this thread) gets the private namespace.
    berth_mount::ns::enter_private_mount_namespace().expect("private mount namespace");
    let dir = tempfile_dir();
    let base = dir.join("bench");
    std::fs::create_dir_all(&base).unwrap();
    LinuxMounter::new()
        .mount_filesystem(
            Path::new("tmpfs"),
            &base,
            "tmpfs",
            MountAttrs::default(),
            None,
        )
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    bench_cycle(&mut c, &base);
    bench_mountinfo(&mut c, &base);
    c.final_summary();
    // The namespace (and every mount in it) goes away with the process.
    let _ = std::fs::remove_dir(&base);
    let _ = std::fs::remove_dir(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("berth-mount-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
