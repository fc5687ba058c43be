//! The agent's container volume isolator (`berth_agent::container::Isolator`), run as root in
//! a private mount namespace entered by the main thread before criterion starts (every
//! measurement runs on that thread, on one current-thread runtime; the namespace dies with the
//! process, and every mount made here is unmounted before it ends anyway):
//!
//! * `agent/prepare_cleanup/16_persistent`: `prepare` + `cleanup` of one container with 16
//!   persistent volumes (read-write, relative container paths `vol-00` … `vol-15` in the
//!   sandbox; record, sandbox and volumes on the ext4 root file system, as an agent's work dir).
//!   Beside it, `agent/prepare_cleanup/16_persistent_floor`: the raw system calls of the same
//!   work, done by hand with nix — 16 × `mount(MS_BIND)` + 16 × `umount2` — plus two
//!   `berth_mount::durable::write_atomic` of the container's own record bytes. Target: ≤ 1.5 ×
//!   the floor. An interleaved measurement (one cycle of each per round, alternating which goes
//!   first) prints the median ratio, the floor's components measured alone, and the record
//!   writes and fsyncs per cycle (target: 2 record writes, one per transition).
//! * `agent/recover/10000_records_1000_mounts`: `Isolator::recover(live, &[])` of a freshly
//!   built isolator (a restarted agent) over 10 000 container records, all live: 1 000 prepared
//!   for real, one persistent volume each (so 1 000 volume mounts in the table), and 9 000
//!   containers without volumes (their records written directly in the byte format `prepare`
//!   writes, checked against one real prepare). Recovery keeps all of them, so the iteration
//!   can repeat. Target: < 300 ms. The phases of `recover`, redone one by one with the same
//!   public calls, are timed and printed after it.
//!
//! Not root: prints a message and exits without measuring.
//! Run: `cargo bench -p berth-benches --bench agent` (as root).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_agent::container::{
    ContainerConfig, ContainerRecord, Isolator, PersistentVolumes, RecordState, SCHEMA_VERSION,
};
use berth_mount::path::{ResolveMode, Resolver};
use berth_mount::{LinuxMounter, MountTable, Mounter, UnmountOptions};
use berth_resources::proto;
use criterion::{Criterion, SamplingMode};
use nix::mount::{MntFlags, MsFlags};
use tokio::runtime::Runtime;

const VOLUMES: usize = 16;
const RECORDS: usize = 10_000;
const MOUNTED: usize = 1_000;

/// Persistent volumes at `<dir>/<persistence id>`.
struct Dirs(PathBuf);

impl PersistentVolumes for Dirs {
    fn volume_path(&self, r: &proto::Resource) -> Result<PathBuf, String> {
        let id = &r
            .disk
            .as_ref()
            .and_then(|d| d.persistence.as_ref())
            .ok_or("no persistence")?
            .id;
        Ok(self.0.join(id))
    }
}

/// A container config with persistent volumes `pv_ids[i]` at `container_paths[i]`.
fn config(id: &str, sandbox: &Path, vols: &[(String, String)]) -> ContainerConfig {
    let resources: Vec<serde_json::Value> = vols
        .iter()
        .map(|(pv, path)| {
            serde_json::json!({
                "name": "disk", "type": "SCALAR", "scalar": {"value": 64},
                "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
                "disk": {"persistence": {"id": pv, "principal": "p"},
                         "volume": {"mode": "RW", "container_path": path}}
            })
        })
        .chain(std::iter::once(
            serde_json::json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}),
        ))
        .collect();
    let json = serde_json::json!({
        "container_id": id,
        "sandbox": sandbox,
        "resources": resources,
    });
    ContainerConfig::from_json(&json.to_string()).unwrap()
}

/// Mesos container ids are UUIDs: 36 characters, here deterministic and well spread.
fn container_id(i: usize) -> String {
    let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 40) & 0xfff,
        i
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The criterion filter given on the command line, if any (positional argument).
fn filter() -> Option<String> {
    const TAKES_VALUE: &[&str] = &[
        "--profile-time",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !TAKES_VALUE.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a.clone())
}

fn wanted(id: &str) -> bool {
    filter().is_none_or(|f| id.contains(&f))
}

// ----- 1. prepare + cleanup of 16 persistent volumes, against the raw floor -----

struct Cycle {
    iso: Isolator,
    cfg: ContainerConfig,
    sources: Vec<PathBuf>,
    floor_targets: Vec<PathBuf>,
    floor_record: PathBuf,
    record_bytes: Vec<u8>,
}

impl Cycle {
    fn new(base: &Path) -> Self {
        let work = base.join("work");
        let sandbox = base.join("sandbox");
        let volumes = base.join("volumes");
        let floor = base.join("floor");
        let mut vols = Vec::new();
        let mut sources = Vec::new();
        let mut floor_targets = Vec::new();
        for i in 0..VOLUMES {
            let pv = format!("pv-{i:02}");
            let src = volumes.join(&pv);
            std::fs::create_dir_all(&src).unwrap();
            let t = floor.join(format!("sandbox/vol-{i:02}"));
            std::fs::create_dir_all(&t).unwrap();
            vols.push((pv, format!("vol-{i:02}")));
            sources.push(src);
            floor_targets.push(t);
        }
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&sandbox).unwrap();
        let iso = Isolator::new(&work, Arc::new(Dirs(volumes)), None);
        let id = container_id(0);
        let cfg = config(&id, &sandbox, &vols);
        // The record `prepare` writes, for the floor's writes of the same size.
        let plan = iso.plan(&cfg).unwrap();
        let rec = ContainerRecord {
            schema_version: SCHEMA_VERSION,
            container_id: id,
            state: RecordState::Preparing,
            sandbox: sandbox.clone(),
            rootfs: None,
            volumes: plan.into_iter().map(|p| p.entry).collect(),
            last_error: None,
        };
        let record_bytes = serde_json::to_vec_pretty(&rec).unwrap();
        let floor_record = floor.join("record/container.json");
        std::fs::create_dir_all(floor_record.parent().unwrap()).unwrap();
        Self {
            iso,
            cfg,
            sources,
            floor_targets,
            floor_record,
            record_bytes,
        }
    }

    fn berth(&self, rt: &Runtime) {
        rt.block_on(async {
            let prepared = self.iso.prepare(&self.cfg).await.unwrap();
            assert_eq!(prepared.len(), VOLUMES);
            self.iso.cleanup(&self.cfg.container_id).await.unwrap();
        });
    }

    /// The same work in raw system calls: intent write, 16 binds, intent write, 16 unmounts.
    fn floor(&self) {
        berth_mount::durable::write_atomic(&self.floor_record, &self.record_bytes).unwrap();
        for (s, t) in self.sources.iter().zip(&self.floor_targets) {
            bind(s, t);
        }
        berth_mount::durable::write_atomic(&self.floor_record, &self.record_bytes).unwrap();
        for t in self.floor_targets.iter().rev() {
            nix::mount::umount2(t, MntFlags::empty()).unwrap();
        }
    }
}

fn bind(s: &Path, t: &Path) {
    nix::mount::mount(Some(s), t, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
}

fn bench_prepare_cleanup(c: &mut Criterion, base: &Path, rt: &Runtime) {
    let cy = Cycle::new(base);
    // Correctness first: 16 mounts while prepared, none after, 2 record writes.
    let w0 = cy.iso.record_writes();
    let f0 = berth_mount::durable::fsync_calls();
    rt.block_on(async {
        cy.iso.prepare(&cy.cfg).await.unwrap();
        let table = MountTable::read_current().unwrap();
        assert_eq!(table.mounts_at_or_below(&cy.cfg.sandbox).count(), VOLUMES);
        cy.iso.cleanup(&cy.cfg.container_id).await.unwrap();
    });
    let writes = cy.iso.record_writes() - w0;
    let fsyncs = berth_mount::durable::fsync_calls() - f0;
    assert_eq!(
        MountTable::read_current()
            .unwrap()
            .mounts_at_or_below(base)
            .count(),
        0
    );
    println!(
        "agent/prepare_cleanup/16_persistent: Isolator::record_writes() per prepare+cleanup = \
         {writes} (target 2: one per transition), fsync calls = {fsyncs}; record {} bytes",
        cy.record_bytes.len()
    );

    let mut g = c.benchmark_group("agent/prepare_cleanup");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(12));
    g.bench_function("16_persistent", |b| b.iter(|| cy.berth(rt)));
    g.bench_function("16_persistent_floor", |b| b.iter(|| cy.floor()));
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        paired(&cy, rt, "ext4");
        floor_parts(&cy);
        // The same pair with work dir, sandbox and volumes on a tmpfs (fsync costs nothing):
        // what the isolator adds besides its record writes.
        let t = base.join("tmpfs");
        std::fs::create_dir_all(&t).unwrap();
        let m = LinuxMounter::new();
        m.mount_filesystem(
            Path::new("tmpfs"),
            &t,
            "tmpfs",
            berth_mount::MountAttrs::default(),
            None,
        )
        .unwrap();
        paired(&Cycle::new(&t), rt, "tmpfs");
        m.unmount(&t, &UnmountOptions::default()).unwrap();
    }
    assert_eq!(
        MountTable::read_current()
            .unwrap()
            .mounts_at_or_below(base)
            .count(),
        0,
        "a mount was left behind"
    );
}

/// One berth cycle and one floor cycle per round (alternating which goes first), so that
/// the disk's slow fsync mode and load from elsewhere hit both alike; then the floor's parts
/// alone.
fn paired(cy: &Cycle, rt: &Runtime, fs: &str) {
    const ROUNDS: usize = 151;
    let (mut berth, mut floor, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let w0 = cy.iso.record_writes();
    let f0 = berth_mount::durable::fsync_calls();
    for round in 0..ROUNDS {
        let time_berth = || {
            let t = Instant::now();
            cy.berth(rt);
            t.elapsed()
        };
        let time_floor = || {
            let t = Instant::now();
            cy.floor();
            t.elapsed()
        };
        let (b, f) = if round % 2 == 0 {
            let b = time_berth();
            (b, time_floor())
        } else {
            let f = time_floor();
            (time_berth(), f)
        };
        berth.push(ms(b));
        floor.push(ms(f));
        ratios.push(ms(b) / ms(f));
    }
    let per = |n: u64| n as f64 / ROUNDS as f64;
    let writes = per(cy.iso.record_writes() - w0);
    // The floor's two writes make 4 fsyncs per round.
    let fsyncs = per(berth_mount::durable::fsync_calls() - f0) - 4.0;
    let (mb, mf, mr) = (median(&mut berth), median(&mut floor), median(&mut ratios));
    println!(
        "agent/prepare_cleanup/16_persistent interleaved, {fs} ({ROUNDS} rounds): berth median {mb:.3} ms, \
         floor median {mf:.3} ms, ratio of medians {:.2}×, median per-round ratio {mr:.2}× \
         (target ≤ 1.5×); berth p10/p90 {:.3}/{:.3} ms, floor p10/p90 {:.3}/{:.3} ms; \
         record writes per cycle {writes:.2}, berth fsyncs per cycle {fsyncs:.2}",
        mb / mf,
        berth[ROUNDS / 10],
        berth[ROUNDS * 9 / 10],
        floor[ROUNDS / 10],
        floor[ROUNDS * 9 / 10],
    );
}

/// The floor's parts, alone; and a directory fsync alone (the isolator makes two more per
/// cycle than the floor: the new record directory's parent, and the record's removal).
fn floor_parts(cy: &Cycle) {
    const N: usize = 400;
    let (mut binds, mut umounts) = (Vec::new(), Vec::new());
    let (s, t) = (&cy.sources[0], &cy.floor_targets[0]);
    for _ in 0..N {
        let a = Instant::now();
        bind(s, t);
        let b = Instant::now();
        nix::mount::umount2(t, MntFlags::empty()).unwrap();
        let e = b.elapsed();
        binds.push((b - a).as_secs_f64() * 1e6);
        umounts.push(e.as_secs_f64() * 1e6);
    }
    let mut writes = Vec::new();
    for _ in 0..101 {
        let a = Instant::now();
        berth_mount::durable::write_atomic(&cy.floor_record, &cy.record_bytes).unwrap();
        writes.push(ms(a.elapsed()));
    }
    let mut dir_syncs = Vec::new();
    for _ in 0..101 {
        let a = Instant::now();
        berth_mount::durable::fsync_dir(cy.floor_record.parent().unwrap()).unwrap();
        dir_syncs.push(ms(a.elapsed()));
    }
    let (b, u, w, d) = (
        median(&mut binds),
        median(&mut umounts),
        median(&mut writes),
        median(&mut dir_syncs),
    );
    println!(
        "floor parts alone: mount(MS_BIND) median {b:.1} µs, umount2 median {u:.1} µs \
         (p10 {:.1}, p90 {:.1}), write_atomic median {w:.3} ms (p10 {:.3}, p90 {:.3}); \
         16 × (bind + umount2) + 2 × write = {:.3} ms; fsync of a directory alone median \
         {d:.3} ms (p10 {:.3}, p90 {:.3})",
        umounts[N / 10],
        umounts[N * 9 / 10],
        writes[10],
        writes[90],
        16.0 * (b + u) / 1e3 + 2.0 * w,
        dir_syncs[10],
        dir_syncs[90],
    );
}

// ----- 2. recover: 10 000 records, 1 000 mounts -----

struct Fleet {
    work: PathBuf,
    volumes: PathBuf,
    live: Vec<String>,
}

fn build_fleet(base: &Path, rt: &Runtime) -> Fleet {
    let work = base.join("work");
    let volumes = base.join("volumes");
    let sandboxes = base.join("sandboxes");
    std::fs::create_dir_all(&work).unwrap();
    let iso = Isolator::new(&work, Arc::new(Dirs(volumes.clone())), None);
    let mut live = Vec::with_capacity(RECORDS);
    let start = Instant::now();
    // 1 000 containers with one persistent volume each, prepared for real.
    rt.block_on(async {
        for i in 0..MOUNTED {
            let id = container_id(i);
            let pv = format!("pv-{i:04}");
            std::fs::create_dir_all(volumes.join(&pv)).unwrap();
            let sb = sandboxes.join(&id);
            std::fs::create_dir_all(&sb).unwrap();
            iso.prepare(&config(&id, &sb, &[(pv, "data".to_owned())]))
                .await
                .unwrap();
            live.push(id);
        }
    });
    let prepared = start.elapsed();
    // One container without volumes, prepared for real: the format of the other 8 999.
    let first = container_id(MOUNTED);
    let sb = sandboxes.join(&first);
    std::fs::create_dir_all(&sb).unwrap();
    rt.block_on(iso.prepare(&config(&first, &sb, &[]))).unwrap();
    let record = |id: &str| ContainerRecord {
        schema_version: SCHEMA_VERSION,
        container_id: id.to_owned(),
        state: RecordState::Preparing,
        sandbox: sandboxes.join(id),
        rootfs: None,
        volumes: Vec::new(),
        last_error: None,
    };
    let real = std::fs::read(work.join("containers").join(format!("{first}.json"))).unwrap();
    assert_eq!(
        real,
        serde_json::to_vec_pretty(&record(&first)).unwrap(),
        "the directly written records must be byte for byte what prepare writes"
    );
    live.push(first);
    // 8 999 more, written directly (not fsync'd: the bytes are the same, and recover only reads).
    for i in MOUNTED + 1..RECORDS {
        let id = container_id(i);
        std::fs::write(
            work.join("containers").join(format!("{id}.json")),
            serde_json::to_vec_pretty(&record(&id)).unwrap(),
        )
        .unwrap();
        live.push(id);
    }
    let table = MountTable::read_current().unwrap();
    println!(
        "agent/recover fixture: {MOUNTED} containers prepared in {:.1} s, {} records written \
         directly; mount table {} entries ({} under the fixture)",
        prepared.as_secs_f64(),
        RECORDS - MOUNTED - 1,
        table.len(),
        table.mounts_at_or_below(base).count()
    );
    Fleet {
        work,
        volumes,
        live,
    }
}

fn bench_recover(c: &mut Criterion, base: &Path, rt: &Runtime) {
    let fleet = build_fleet(base, rt);
    let recover = || {
        // A restarted agent: a new isolator over the same work dir.
        let iso = Isolator::new(&fleet.work, Arc::new(Dirs(fleet.volumes.clone())), None);
        let report = rt.block_on(iso.recover(&fleet.live, &[])).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.kept.len(), RECORDS);
        report
    };
    let t = Instant::now();
    let report = recover();
    println!(
        "agent/recover first run: {:.1} ms, kept {}, cleaned {}, quarantined {}",
        ms(t.elapsed()),
        report.kept.len(),
        report.cleaned.len(),
        report.quarantined.len()
    );

    let mut g = c.benchmark_group("agent/recover");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("10000_records_1000_mounts", |b| {
        b.iter(|| black_box(recover()));
    });
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        phases(&fleet, rt);
    }

    // Clean up every mount of the fixture (the namespace would drop them anyway).
    let un = UnmountOptions::default();
    LinuxMounter::new()
        .unmount_all_at_or_below(base, &un)
        .unwrap();
    assert_eq!(
        MountTable::read_current()
            .unwrap()
            .mounts_at_or_below(base)
            .count(),
        0
    );
}

/// `recover`'s steps redone one by one with the same public calls, each timed over the
/// whole fleet (median of 5 passes), to show where the time goes.
fn phases(fleet: &Fleet, rt: &Runtime) {
    let iso = Isolator::new(&fleet.work, Arc::new(Dirs(fleet.volumes.clone())), None);
    let dir = fleet.work.join("containers");
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut push = |name: &'static str, d: Duration| match rows.iter_mut().find(|r| r.0 == name) {
        Some(r) => r.1.push(ms(d)),
        None => rows.push((name, vec![ms(d)])),
    };
    for _ in 0..5 {
        let t = Instant::now();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        push("list + sort the record files", t.elapsed());

        let t = Instant::now();
        let table = MountTable::read_current().unwrap();
        push("read + parse the mount table", t.elapsed());

        let t = Instant::now();
        let bytes: Vec<Vec<u8>> = names
            .iter()
            .map(|n| std::fs::read(dir.join(format!("{n}.json"))).unwrap())
            .collect();
        push("  of which: std::fs::read of each record", t.elapsed());
        let t = Instant::now();
        for b in &bytes {
            black_box(serde_json::from_slice::<ContainerRecord>(b).unwrap());
        }
        push("  of which: serde_json parse of each record", t.elapsed());

        let t = Instant::now();
        let recs: Vec<ContainerRecord> = names
            .iter()
            .map(|n| iso.load(n).unwrap().unwrap())
            .collect();
        push("Isolator::load of each record", t.elapsed());

        let t = Instant::now();
        let mut mounted = 0usize;
        for r in &recs {
            for v in r.volumes.iter().filter(|v| v.bind) {
                let fd = Resolver {
                    mode: ResolveMode::InRoot,
                    force_walk: false,
                }
                .open(&v.root, &v.path_in_root)
                .unwrap();
                let p = berth_mount::path::fd_path(&fd).unwrap();
                mounted += usize::from(table.is_mount_point(&p));
            }
        }
        assert_eq!(mounted, MOUNTED);
        push(
            "resolve each volume target + is_mount_point (1 000)",
            t.elapsed(),
        );

        let t = Instant::now();
        let mut found = 0usize;
        for n in &names {
            found += usize::from(fleet.live.contains(n));
            black_box(<[String]>::contains(&[], n));
        }
        assert_eq!(found, RECORDS);
        push(
            "live.contains + orphans.contains per record (slice scans, before the fix)",
            t.elapsed(),
        );

        let t = Instant::now();
        let mut locks: HashMap<String, Arc<tokio::sync::Mutex<()>>> = HashMap::new();
        rt.block_on(async {
            for n in &names {
                let l = Arc::clone(locks.entry(n.clone()).or_default());
                let _g = l.lock().await;
                black_box(&_g);
            }
        });
        push("per-record lock map entry + lock", t.elapsed());

        let t = Instant::now();
        let report = rt.block_on(iso.recover(&fleet.live, &[])).unwrap();
        assert_eq!(report.kept.len(), RECORDS);
        push("whole Isolator::recover (same pass)", t.elapsed());
    }
    println!("agent/recover phases (median of 5 passes over {RECORDS} records):");
    for (name, mut v) in rows {
        println!("  {name:<60} {:>8.2} ms", median(&mut v));
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("agent benchmarks skipped: they need root (real mounts in a private namespace)");
        return;
    }
    // Single-threaded so far: the whole process (this thread) gets the private namespace.
    berth_mount::ns::enter_private_mount_namespace().expect("private mount namespace");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // On the ext4 root file system (`/tmp`), where an agent's work dir would be.
    let dir = tempfile::Builder::new()
        .prefix("berth-agent-bench-")
        .tempdir_in("/tmp")
        .unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut c = Criterion::default().configure_from_args();
    if wanted("agent/prepare_cleanup/16_persistent") {
        let base = root.join("cycle");
        bench_prepare_cleanup(&mut c, &base, &rt);
    }
    if wanted("agent/recover/10000_records_1000_mounts") {
        let base = root.join("fleet");
        bench_recover(&mut c, &base, &rt);
    }
    c.final_summary();
    assert_eq!(
        MountTable::read_current()
            .unwrap()
            .mounts_at_or_below(&root)
            .count(),
        0,
        "every mount is gone before the directory is removed"
    );
    drop(dir);
}
