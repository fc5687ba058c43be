//! Offer-operation benchmarks (issue "Offer operations and the master-side validator"):
//!
//! * `CreateDestroy/{10,100,1000,10000}`: validate + apply of one CREATE, and of one DESTROY,
//!   on an offer of that many resource objects (target: CREATE on 100 objects under 5 µs,
//!   linear in offer size);
//! * `ReserveGrowth/{identical,distinct}/{1000,10000,100000}`: validate + apply of one RESERVE
//!   of n MOUNT disks, all identical (one metadata, never merged) or all distinct, on an offer of
//!   exactly those disks unreserved (target: time per disk flat within 2× across n, identical
//!   within 3× of distinct). `BERTH_GROWTH_MAX` caps n (an engine that is quadratic there needs
//!   seconds per iteration).
//! * `Batch`: the `berth-validator batch` engine over lines of the conformance vectors,
//!   compared in the same run with `serde_json` merely parsing the same lines into
//!   `serde_json::Value` (target: at least 50% of that throughput).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use berth_offers::{AgentCapabilities, Context, Operation, apply, batch, validate};
use berth_resources::{
    DiskInfo, Persistence, PersistenceId, ReservationInfo, Resource, Resources, Role, Scalar,
    Volume, VolumeMode,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn reserved(name: &str, role: &str, amount: i64) -> Resource {
    let mut r = Resource::scalar(name, Scalar::from_units(amount));
    r.reservations.push(ReservationInfo::dynamic(
        Role::new(role).unwrap(),
        Some("ops"),
    ));
    r
}

fn volume(role: &str, id: &str, size: i64) -> Resource {
    let mut r = reserved("disk", role, size);
    r.disk = Some(std::sync::Arc::new(DiskInfo {
        persistence: Some(Persistence {
            id: PersistenceId::new(id).unwrap(),
            principal: Some("ops".into()),
        }),
        volume: Some(Volume::new("data", VolumeMode::Rw)),
        source: None,
    }));
    r
}

/// An offer of `n` distinct resource objects: reserved cpus/mem/disk for `n/4` roles, plus
/// volumes, plus the 1000 MB of `db` disk the CREATE uses.
fn offer(n: usize) -> (Resources, Resources) {
    let mut offer = Resources::new();
    let mut checkpointed = Resources::new();
    let mut i = 0;
    while offer.len() + 1 < n {
        let role = format!("role{i}");
        offer.add_resource(reserved("cpus", &role, 1));
        offer.add_resource(reserved("mem", &role, 128));
        offer.add_resource(reserved("disk", &role, 100));
        let v = volume(&role, &format!("v{i}"), 10);
        checkpointed.add_resource(v.clone());
        offer.add_resource(v);
        i += 1;
    }
    let db = reserved("disk", "db", 1000);
    checkpointed.add_resource(db.clone());
    offer.add_resource(db);
    (offer, checkpointed)
}

fn create_destroy(c: &mut Criterion) {
    let mut g = c.benchmark_group("CreateDestroy");
    for n in [10usize, 100, 1000, 10_000] {
        let (offer, checkpointed) = offer(n);
        let mut ctx = Context::operator();
        ctx.principal = Some("ops".into());
        ctx.agent = AgentCapabilities::all();
        ctx.checkpointed = checkpointed.filter(Resource::needs_checkpointing);
        let v = volume("db", "new-volume", 1000);
        let create = Operation::Create {
            volumes: vec![v.clone()],
        };
        let destroy = Operation::Destroy {
            volumes: vec![v.clone()],
        };
        let created = apply(&offer, &create).unwrap();
        let mut ctx_after = ctx.clone();
        ctx_after.checkpointed.add_resource(v.clone());
        validate(&destroy, &ctx_after).unwrap();
        g.bench_with_input(BenchmarkId::new("CREATE validate+apply", n), &n, |b, _| {
            b.iter(|| {
                validate(black_box(&create), &ctx).unwrap();
                black_box(apply(&offer, &create).unwrap())
            });
        });
        g.bench_with_input(BenchmarkId::new("DESTROY validate+apply", n), &n, |b, _| {
            b.iter(|| {
                validate(black_box(&destroy), &ctx_after).unwrap();
                black_box(apply(&created, &destroy).unwrap())
            });
        });
    }
    g.finish();
}

/// `n` unreserved MOUNT disks of 1 000 MB: all on `/mnt/d` (identical), or one root each.
fn mount_disks(n: usize, identical: bool) -> Vec<Resource> {
    (0..n)
        .map(|i| {
            let root = if identical {
                "/mnt/d".to_owned()
            } else {
                format!("/mnt/d{i}")
            };
            let mut r = Resource::scalar("disk", Scalar::from_units(1000));
            r.disk = Some(std::sync::Arc::new(DiskInfo {
                persistence: None,
                volume: None,
                source: Some(berth_resources::DiskSource::mount(root)),
            }));
            r
        })
        .collect()
}

fn reserve_growth(c: &mut Criterion) {
    let max: usize = std::env::var("BERTH_GROWTH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut g = c.benchmark_group("ReserveGrowth");
    g.sample_size(10);
    for n in [1000usize, 10_000, 100_000]
        .into_iter()
        .filter(|n| *n <= max)
    {
        g.throughput(Throughput::Elements(n as u64));
        for identical in [true, false] {
            let disks = mount_disks(n, identical);
            let offer: Resources = disks.iter().cloned().collect();
            assert_eq!(offer.len(), n);
            let reserve = Operation::Reserve {
                source: Vec::new(),
                resources: disks
                    .iter()
                    .map(|d| {
                        let mut r = d.clone();
                        r.reservations.push(ReservationInfo::dynamic(
                            Role::new("db").unwrap(),
                            Some("ops"),
                        ));
                        r
                    })
                    .collect(),
            };
            let mut ctx = Context::operator();
            ctx.principal = Some("ops".into());
            ctx.agent = AgentCapabilities::all();
            let after = apply(&offer, &reserve).unwrap();
            assert_eq!(after.len(), n);
            assert_eq!(after.reserved(Some("db")).len(), n);
            let id = if identical { "identical" } else { "distinct" };
            g.bench_with_input(BenchmarkId::new(id, n), &n, |b, _| {
                b.iter(|| {
                    validate(black_box(&reserve), &ctx).unwrap();
                    black_box(apply(&offer, &reserve).unwrap())
                });
            });
        }
    }
    g.finish();
}

fn vector_lines() -> Vec<String> {
    let dir = std::env::var_os("BERTH_CONFORMANCE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance"),
        PathBuf::from,
    );
    let mut lines = Vec::new();
    for file in ["operations.json", "arithmetic.json"] {
        let text = std::fs::read_to_string(dir.join(file)).expect("conformance vectors");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        lines.extend(vectors.iter().map(ToString::to_string));
    }
    lines
}

fn batch_throughput(c: &mut Criterion) {
    let lines = vector_lines();
    let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut g = c.benchmark_group("Batch");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("serde_json::Value parse (baseline)", |b| {
        b.iter(|| {
            for line in &lines {
                black_box(serde_json::from_str::<serde_json::Value>(line).unwrap());
            }
        });
    });
    g.bench_function("berth batch answer", |b| {
        let mut out = Vec::with_capacity(1 << 20);
        b.iter(|| {
            out.clear();
            for line in &lines {
                batch::write_answer(line, &mut out).unwrap();
            }
            black_box(out.len())
        });
    });
    g.finish();
}

/// `Plan/3 volumes on 1000 objects`: first-launch planning of an app with a root, a path and a
/// mount volume against an offer of 1 000 resource objects (target: under 50 µs).
fn plan(c: &mut Criterion) {
    use berth_offers::plan::{PlanConfig, RunSpec, plan_launch};
    use berth_resources::{AllocationInfo, DiskSource};
    let app = RunSpec::from_json(
        r#"{"id": "/bench/db", "cpus": 1, "mem": 1024, "disk": 100, "container": {"volumes": [
            {"containerPath": "data", "mode": "RW", "persistent": {"type": "root", "size": 1000}},
            {"containerPath": "logs", "mode": "RW", "persistent": {"type": "path", "size": 2000, "constraints": [["path", "LIKE", "/mnt/ssd-.*"]]}},
            {"containerPath": "wal", "mode": "RW", "persistent": {"type": "mount", "size": 4000, "maxSize": 9000}}]},
          "unreachableStrategy": "disabled", "upgradeStrategy": {"minimumHealthCapacity": 0, "maximumOverCapacity": 0}}"#,
    )
    .unwrap();
    let allocated = |mut r: Resource| {
        r.allocation_info = Some(AllocationInfo::role("marathon"));
        r
    };
    let disk = |source: DiskSource, size: i64| {
        let mut r = Resource::scalar("disk", Scalar::from_units(size));
        r.disk = Some(std::sync::Arc::new(DiskInfo {
            persistence: None,
            volume: None,
            source: Some(source),
        }));
        allocated(r)
    };
    let mut offer = Resources::new();
    for (name, v) in [("cpus", 8), ("mem", 16_384), ("disk", 50_000)] {
        offer.add_resource(allocated(Resource::scalar(name, Scalar::from_units(v))));
    }
    let mut i = 0;
    while offer.len() < 1000 {
        match i % 4 {
            0 => offer.add_resource(disk(DiskSource::path(format!("/mnt/hdd-{i}")), 5000)),
            1 => offer.add_resource(disk(
                DiskSource::mount(format!("/mnt/m-{i}")),
                2000 + (i * 7) % 8000,
            )),
            _ => offer.add_resource(allocated(reserved("cpus", &format!("other{i}"), 1))),
        }
        i += 1;
    }
    offer.add_resource(disk(DiskSource::path("/mnt/ssd-1"), 8000));
    let config = PlanConfig::new("fw", "marathon", Some("ops"));
    if let Err(e) = plan_launch(&app, &offer, &config, None) {
        panic!("{e}");
    }
    let mut g = c.benchmark_group("Plan");
    let prepared = berth_offers::plan::PreparedSpec::new(&app).unwrap();
    g.bench_function(
        BenchmarkId::new("3 volumes on objects (prepared spec)", offer.len()),
        |b| {
            b.iter(|| {
                black_box(
                    berth_offers::plan::plan_launch_prepared(
                        &prepared,
                        black_box(&offer),
                        &config,
                        None,
                    )
                    .unwrap(),
                )
            });
        },
    );
    g.bench_function(
        BenchmarkId::new(
            "3 volumes on objects (validate + prepare + plan)",
            offer.len(),
        ),
        |b| {
            b.iter(|| black_box(plan_launch(&app, black_box(&offer), &config, None).unwrap()));
        },
    );
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = create_destroy, reserve_growth, batch_throughput, plan
}
criterion_main!(benches);
