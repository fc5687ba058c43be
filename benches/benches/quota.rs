//! Per-volume usage: project quotas against a `du` walk (issue "Volume sizes made real").
//!
//! 100 volume directories on one XFS filesystem mounted `prjquota`, 1,000 files each (100,000
//! files in all), each directory tagged with its own project id:
//!
//! * `usage_100_volumes/quotactl`: the usage of all 100 through `Q_GETQUOTA`
//!   (`berth_mount::quota::LinuxQuotas::usage`);
//! * `usage_100_volumes/du`: the same 100 through the `du` walk (`berth_mount::usage::tree_usage`).
//!
//! * `create_volume/{project-quota,none}`: one CREATE of a persistent volume through the
//!   agent's resources (`berth_agent::resources::AgentResources`: the fsync'd target, the
//!   directory, the commit) with a project quota given (id recorded write-ahead, directory
//!   tagged, limit set) and without; the DESTROY that follows each is not timed. After the
//!   criterion group, the same CREATEs run interleaved (200 pairs, each side first in turn)
//!   and their medians and ratio are printed: the VM runs under emulation on a shared host,
//!   and interleaving puts the host's load on both sides alike.
//!
//! Targets: quotactl ≥ 100× faster than du; CREATE with a quota ≤ 1.2× CREATE without. Needs root and a kernel with XFS project quotas;
//! when this kernel has none, the binary runs itself in the test VM (`scripts/install-vm.sh`,
//! one boot, criterion's output printed here; figures are then the VM's, under qemu's TCG, for
//! both sides alike). Without root or VM tools it says so and measures nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use berth_mount::quota::{Limits, LinuxQuotas, Quotas};
use berth_testkit::vm::{in_vm, kernel_has_project_quotas, mount_prjquota, quota_fs, run_in_vm};
use criterion::Criterion;

const VOLUMES: u32 = 100;
const FILES_PER_VOLUME: u32 = 1000;

fn populate(mnt: &Path) -> Vec<(PathBuf, u32)> {
    let q = LinuxQuotas::new();
    (1..=VOLUMES)
        .map(|i| {
            let dir = mnt.join(format!("volumes/roles/db/pv-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            q.assign(&dir, 1000 + i).unwrap();
            q.set_limits(
                &dir,
                1000 + i,
                Limits {
                    hard_bytes: 64 << 20,
                    soft_bytes: 0,
                },
            )
            .unwrap();
            for f in 0..FILES_PER_VOLUME {
                let sub = dir.join(format!("d{}", f / 100));
                if f % 100 == 0 {
                    std::fs::create_dir_all(&sub).unwrap();
                }
                std::fs::write(sub.join(format!("f{f}")), [7_u8; 100]).unwrap();
            }
            (dir, 1000 + i)
        })
        .collect()
}

fn bench(c: &mut Criterion, volumes: &[(PathBuf, u32)]) {
    let q = LinuxQuotas::new();
    // Both sides must see the same files.
    for (dir, id) in volumes {
        let by_quota = q.usage(dir, *id).unwrap();
        let by_walk = berth_mount::usage::tree_usage(dir).unwrap();
        assert_eq!(by_quota.used_inodes, by_walk.inodes, "{}", dir.display());
    }
    let mut g = c.benchmark_group("usage_100_volumes");
    g.sample_size(20);
    g.bench_function("quotactl", |b| {
        b.iter(|| {
            for (dir, id) in volumes {
                black_box(q.usage(dir, *id).unwrap());
            }
        });
    });
    g.bench_function("du", |b| {
        b.iter(|| {
            for (dir, _) in volumes {
                black_box(berth_mount::usage::tree_usage(dir).unwrap());
            }
        });
    });
    g.finish();
}

fn create_volume(c: &mut Criterion, mnt: &Path) {
    use berth_agent::resources::quota::{DiskIsolation, ProjectRange, QuotaConfig};
    use berth_agent::resources::{AgentResources, NoUsers, Options, parse_configured};
    use std::sync::Arc;
    let open = |name: &str, quota: bool| {
        let work = mnt.join(name);
        let mut ar = AgentResources::open(
            &work,
            parse_configured("disk(db):10000000").unwrap(),
            Options::default(),
        )
        .unwrap();
        if quota {
            ar.set_quotas(
                QuotaConfig {
                    isolation: DiskIsolation::ProjectQuota,
                    range: ProjectRange::new(1, 1_000_000).unwrap(),
                    headroom_bytes: 0,
                },
                Arc::new(LinuxQuotas::new()),
            )
            .unwrap();
        }
        ar
    };
    let op = |kind: &str, i: u64| {
        let v = serde_json::json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
            "reservations": [{"type": "STATIC", "role": "db"}],
            "disk": {"persistence": {"id": format!("v{i}"), "principal": "p"},
                     "volume": {"mode": "RW", "container_path": "data"}}});
        match kind {
            "CREATE" => serde_json::json!({"type": "CREATE", "create": {"volumes": [v]}}),
            _ => serde_json::json!({"type": "DESTROY", "destroy": {"volumes": [v]}}),
        }
    };
    let mut g = c.benchmark_group("create_volume");
    g.sample_size(30);
    for (name, quota) in [("project-quota", true), ("none", false)] {
        let mut ar = open(name, quota);
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let start = std::time::Instant::now();
                    ar.apply_operation_json(&op("CREATE", n), &NoUsers).unwrap();
                    total += start.elapsed();
                    ar.apply_operation_json(&op("DESTROY", n), &NoUsers)
                        .unwrap();
                }
                total
            });
        });
        if quota {
            assert!(ar.quotas().unwrap().all().is_empty(), "every id released");
        }
    }
    g.finish();

    // The same CREATEs interleaved: one with a quota, one without, alternately first, so that
    // the host's load (the VM runs under emulation) weighs on both sides alike.
    let (mut with, mut without) = (open("pair-quota", true), open("pair-none", false));
    let (mut t_with, mut t_without) = (Vec::new(), Vec::new());
    for i in 0..INTERLEAVED_PAIRS {
        let n = 1_000_000 + u64::from(i);
        let time = |ar: &mut AgentResources| {
            let start = std::time::Instant::now();
            ar.apply_operation_json(&op("CREATE", n), &NoUsers).unwrap();
            let t = start.elapsed();
            ar.apply_operation_json(&op("DESTROY", n), &NoUsers)
                .unwrap();
            t
        };
        if i % 2 == 0 {
            t_with.push(time(&mut with));
            t_without.push(time(&mut without));
        } else {
            t_without.push(time(&mut without));
            t_with.push(time(&mut with));
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let (m_with, m_without) = (median(&mut t_with), median(&mut t_without));
    println!(
        "create_volume interleaved ({INTERLEAVED_PAIRS} pairs): project-quota median {:.2} ms, \
         none median {:.2} ms, ratio {:.2}",
        m_with.as_secs_f64() * 1e3,
        m_without.as_secs_f64() * 1e3,
        m_with.as_secs_f64() / m_without.as_secs_f64()
    );
}

/// CREATE pairs of the interleaved measurement.
const INTERLEAVED_PAIRS: u32 = 200;

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("quota bench: needs root (loop devices, mounts); nothing measured");
        return;
    }
    if !in_vm() && !kernel_has_project_quotas() {
        let exe = std::env::current_exe().unwrap();
        // Criterion's own arguments (a filter such as `create_volume`) go along.
        let args: Vec<String> = std::env::args().skip(1).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match run_in_vm(&exe, &args, &[("CRITERION_HOME", "/tmp/criterion")]) {
            Some(run) => {
                println!(
                    "quota bench: ran in the VM ({}, {:.0?}), status {}:\n{}",
                    run.kernel.display(),
                    run.elapsed,
                    run.status,
                    run.output
                );
                assert_eq!(run.status, "0", "{}", run.vng_stderr);
            }
            None => eprintln!(
                "quota bench: this kernel has no project quotas and the VM tools are missing \
                 (scripts/install-vm.sh); nothing measured"
            ),
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let dev = quota_fs(&d, "xfs", 1024);
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let devp = dev.path().to_owned();
    berth_mount::ns::in_private_mount_namespace(move || {
        mount_prjquota(&devp, &mnt, "xfs").unwrap();
        let mut c = Criterion::default().configure_from_args();
        create_volume(&mut c, &mnt);
        // Populating 100,000 files is slow under the VM's emulation: only when asked for.
        if !std::env::args().any(|a| a == "create_volume") {
            let volumes = populate(&mnt);
            bench(&mut c, &volumes);
        }
        c.final_summary();
        nix::mount::umount(&mnt).unwrap();
    })
    .unwrap();
}
