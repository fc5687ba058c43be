//! Load (root, a private mount namespace; skipped with a message otherwise, never in CI): 200
//! containers prepared and cleaned up concurrently on one current-thread runtime, sharing 20
//! persistent volumes and 20 Docker volumes (a real `berth_dvdi::VolumeManager` over the
//! in-memory driver, whose mount points are real host directories). Prepares and cleanups
//! interleave (the driver yields to the scheduler around every call, so tasks switch in the
//! middle of prepares and cleanups, with some of a container's volumes mounted and others not).
//!
//! Checked:
//! - while the tasks run, at every scheduling round: every `ID` the driver has mounted is in
//!   the volume's consumer record (write-ahead), and every mount under a sandbox or rootfs
//!   belongs to a container that has a record listing that volume (write-ahead);
//! - after every phase, exactly: `Isolator::users_of` of every persistent volume, the consumer
//!   and mount sets of every Docker volume's record, the driver's mounted `ID`s, `status()`,
//!   the mounts per sandbox and rootfs, and the data path through each mount;
//! - at the end: nothing mounted under the test root, no container record, no Docker volume
//!   record, exactly one `Mount` and one `Unmount` per (container, Docker volume) with the
//!   container id as `ID`, and one record write per container transition.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use berth_agent::container::{
    ContainerConfig, DockerVolumes, HookPoint, Isolator, PersistentVolumes, Phase, Source,
};
use berth_dvdi::driver::BoxFuture;
use berth_dvdi::fake::{MemoryDriver, MemoryDrivers};
use berth_dvdi::record::MountState;
use berth_dvdi::{
    Capabilities, DriverName, Drivers, Endpoint, ManagerConfig, VolumeDriver, VolumeInfo,
    VolumeManager,
};
use berth_resources::proto;
use berth_testkit::{in_ns, mounts_below, privileged};

const CONTAINERS: usize = 200;
const PERSISTENT: usize = 20;
const DOCKER: usize = 20;
const DRIVER: &str = "memfake";

/// Persistent volumes at `<root>/<persistence id>`.
struct Dirs(PathBuf);

impl PersistentVolumes for Dirs {
    fn volume_path(&self, r: &proto::Resource) -> Result<PathBuf, String> {
        let id = &r.disk.as_ref().unwrap().persistence.as_ref().unwrap().id;
        Ok(self.0.join(id))
    }
}

/// A driver that yields to the scheduler before and after every call of the wrapped one, so
/// that concurrent prepares and cleanups switch inside the manager's intent / call / record
/// sequence.
struct Yielding(Arc<dyn VolumeDriver>);

async fn yielding<T>(f: BoxFuture<'_, T>) -> T {
    tokio::task::yield_now().await;
    let out = f.await;
    tokio::task::yield_now().await;
    out
}

impl VolumeDriver for Yielding {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn create<'a>(
        &'a self,
        volume: &'a str,
        opts: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, berth_dvdi::Result<()>> {
        Box::pin(yielding(self.0.create(volume, opts)))
    }
    fn remove<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, berth_dvdi::Result<()>> {
        Box::pin(yielding(self.0.remove(volume)))
    }
    fn mount<'a>(
        &'a self,
        volume: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, berth_dvdi::Result<PathBuf>> {
        Box::pin(yielding(self.0.mount(volume, id)))
    }
    fn unmount<'a>(
        &'a self,
        volume: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, berth_dvdi::Result<()>> {
        Box::pin(yielding(self.0.unmount(volume, id)))
    }
    fn path<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, berth_dvdi::Result<Option<PathBuf>>> {
        Box::pin(yielding(self.0.path(volume)))
    }
    fn get<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, berth_dvdi::Result<Option<VolumeInfo>>> {
        Box::pin(yielding(self.0.get(volume)))
    }
    fn list(&self) -> BoxFuture<'_, berth_dvdi::Result<Vec<VolumeInfo>>> {
        Box::pin(yielding(self.0.list()))
    }
    fn capabilities(&self) -> BoxFuture<'_, berth_dvdi::Result<Capabilities>> {
        Box::pin(yielding(self.0.capabilities()))
    }
}

struct YieldingDrivers(MemoryDrivers);

impl Drivers for YieldingDrivers {
    fn driver<'a>(
        &'a self,
        name: &'a DriverName,
    ) -> BoxFuture<'a, berth_dvdi::Result<Arc<dyn VolumeDriver>>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let inner = self.0.driver(name).await?;
            let d: Arc<dyn VolumeDriver> = Arc::new(Yielding(inner));
            Ok(d)
        })
    }
}

fn cid(i: usize) -> String {
    format!("ctr-{i:03}")
}
fn pv(p: usize) -> String {
    format!("pv-{p:02}")
}
fn dv(d: usize) -> String {
    format!("dv-{d:02}")
}

/// Container `i`'s volumes: persistent `(i % 20)` at `data` (read-write) and `(i + 7) % 20`
/// at `data/nested` (read-only, inside the first); Docker `(3i) % 20` at `ext` (a Mesos
/// `DOCKER_VOLUME`) and `(3i + 1) % 20` at `/mnt/dvdi` of its rootfs (the DVDI environment).
fn persistent_of(i: usize) -> [usize; 2] {
    [i % PERSISTENT, (i + 7) % PERSISTENT]
}
fn docker_of(i: usize) -> [usize; 2] {
    [(3 * i) % DOCKER, (3 * i + 1) % DOCKER]
}

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    volumes: PathBuf,
    docker: PathBuf,
}

impl Env {
    fn sandbox(&self, i: usize) -> PathBuf {
        self.root.join("sandboxes").join(cid(i))
    }
    fn rootfs(&self, i: usize) -> PathBuf {
        self.root.join("rootfs").join(cid(i))
    }
}

fn env() -> Env {
    let dir = tempfile::Builder::new()
        .prefix("berth-agent-load-")
        .tempdir()
        .unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let e = Env {
        work: root.join("work"),
        volumes: root.join("volumes"),
        docker: root.join("docker"),
        root,
        _dir: dir,
    };
    for p in 0..PERSISTENT {
        std::fs::create_dir_all(e.volumes.join(pv(p))).unwrap();
    }
    for d in 0..DOCKER {
        // The in-memory driver's mount point of volume `v` is `<docker>/<v>`: a real
        // directory, so berth can bind it.
        std::fs::create_dir_all(e.docker.join(dv(d))).unwrap();
    }
    std::fs::create_dir_all(&e.work).unwrap();
    for i in 0..CONTAINERS {
        std::fs::create_dir_all(e.sandbox(i)).unwrap();
        std::fs::create_dir_all(e.rootfs(i)).unwrap();
    }
    e
}

fn config(e: &Env, i: usize) -> ContainerConfig {
    let [a, b] = persistent_of(i);
    let [d1, d2] = docker_of(i);
    let disk = |id: String, mode: &str, path: &str| {
        serde_json::json!({
            "name": "disk", "type": "SCALAR", "scalar": {"value": 16},
            "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
            "disk": {"persistence": {"id": id}, "volume": {"mode": mode, "container_path": path}}
        })
    };
    let json = serde_json::json!({
        "container_id": cid(i),
        "sandbox": e.sandbox(i),
        "rootfs": e.rootfs(i),
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            disk(pv(a), "RW", "data"),
            disk(pv(b), "RO", "data/nested"),
        ],
        "volumes": [
            {"mode": "RW", "container_path": "ext",
             "source": {"type": "DOCKER_VOLUME",
                        "docker_volume": {"driver": DRIVER, "name": dv(d1)}}}
        ],
        "environment": {
            "DVDI_VOLUME_NAME": dv(d2),
            "DVDI_VOLUME_DRIVER": DRIVER,
            "DVDI_VOLUME_CONTAINERPATH": "/mnt/dvdi",
        }
    });
    ContainerConfig::from_json(&json.to_string()).unwrap()
}

/// Which containers are between the start and the end of a prepare or a cleanup, from the
/// isolator's hook points.
#[derive(Debug, Default)]
struct Activity {
    active: BTreeMap<String, &'static str>,
    max_active: usize,
    mixed: bool,
}

impl Activity {
    fn see(&mut self, p: HookPoint<'_>) {
        let [container] = p.subject else {
            return;
        };
        match (p.phase, p.step, p.index) {
            (Phase::Intent, step, _) => {
                self.active.insert((*container).to_owned(), step);
            }
            // The last volume of a prepare (4 per container) is mounted / the first volume is
            // released last (teardown goes in reverse).
            (Phase::Step, "mounted", Some(3)) | (Phase::Step, "released", Some(0)) => {
                self.active.remove(*container);
            }
            _ => {}
        }
        self.max_active = self.max_active.max(self.active.len());
        let kinds: BTreeSet<&str> = self.active.values().copied().collect();
        self.mixed |= kinds.len() > 1;
    }
}

struct World {
    e: Env,
    activity: Arc<std::sync::Mutex<Activity>>,
    iso: Arc<Isolator>,
    manager: Arc<VolumeManager<YieldingDrivers>>,
    driver: MemoryDriver,
}

fn world() -> World {
    let e = env();
    let driver = MemoryDriver::new(DRIVER, &e.docker);
    let mut cfg = ManagerConfig::new(e.root.join("dvdi-state"));
    cfg.mountinfo = Some(PathBuf::from("/proc/thread-self/mountinfo"));
    let manager = Arc::new(
        VolumeManager::new(
            YieldingDrivers(MemoryDrivers::default().with(driver.clone())),
            cfg,
        )
        .unwrap(),
    );
    let docker: Arc<dyn DockerVolumes> = manager.clone();
    let mut iso =
        Isolator::new(&e.work, Arc::new(Dirs(e.volumes.clone())), None).with_docker(docker);
    let activity = Arc::new(std::sync::Mutex::new(Activity::default()));
    let seen = Arc::clone(&activity);
    iso.set_hook(Arc::new(move |p: HookPoint<'_>| {
        seen.lock().unwrap().see(p)
    }));
    let iso = Arc::new(iso);
    World {
        e,
        activity,
        iso,
        manager,
        driver,
    }
}

/// Invariants that hold at every instant, whatever is in flight: the write-ahead intents.
fn check_instant(w: &World) {
    // Every ID the driver has mounted is in the volume's record (intent before the call).
    for d in 0..DOCKER {
        let at_driver = w.driver.mounted_ids(&dv(d));
        if at_driver.is_empty() {
            continue;
        }
        let rec = w
            .manager
            .load(DRIVER, &dv(d))
            .unwrap()
            .unwrap_or_else(|| panic!("{}: mounted at the driver without a record", dv(d)));
        for id in &at_driver {
            assert!(
                rec.mounts.contains_key(id),
                "{}: ID {id} mounted at the driver but not in the record {rec:?}",
                dv(d)
            );
        }
    }
    // Every mount under a sandbox or rootfs belongs to a container with a record (intent
    // before the mount) whose plan has a volume there.
    let table = berth_mount::MountTable::read_current().unwrap();
    let mut records: BTreeMap<String, Option<BTreeSet<PathBuf>>> = BTreeMap::new();
    for base in ["sandboxes", "rootfs"] {
        let base = w.e.root.join(base);
        for m in table.mounts_at_or_below(&base) {
            let mp = m.mount_point();
            let rel = mp.strip_prefix(&base).unwrap();
            let owner = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap()
                .to_owned();
            let planned = records.entry(owner.clone()).or_insert_with(|| {
                w.iso.load(&owner).unwrap().map(|rec| {
                    rec.volumes
                        .iter()
                        .map(|v| v.root.join(&v.path_in_root))
                        .collect()
                })
            });
            let planned = planned.as_ref().unwrap_or_else(|| {
                panic!(
                    "{} is mounted but container {owner} has no record",
                    mp.display()
                )
            });
            assert!(
                planned.contains(mp),
                "{} is mounted but not in {owner}'s plan {planned:?}",
                mp.display()
            );
        }
    }
}

/// Exact checks after a phase: `prepared` are the containers that must be prepared now,
/// `cleaned` those that must be gone.
fn check_phase(w: &World, phase: &str, prepared: &BTreeSet<usize>, cleaned: &BTreeSet<usize>) {
    // Persistent volumes: users_of is exactly the containers using it.
    for p in 0..PERSISTENT {
        let want: Vec<String> = prepared
            .iter()
            .filter(|i| persistent_of(**i).contains(&p))
            .map(|i| cid(*i))
            .collect();
        assert_eq!(
            w.iso.users_of(&w.e.volumes.join(pv(p))),
            want,
            "{phase}: users of {}",
            pv(p)
        );
    }
    // Docker volumes: the record's consumers and mounts, and the driver's IDs.
    for d in 0..DOCKER {
        let want: BTreeSet<String> = prepared
            .iter()
            .filter(|i| docker_of(**i).contains(&d))
            .map(|i| cid(*i))
            .collect();
        let rec = w.manager.load(DRIVER, &dv(d)).unwrap();
        if want.is_empty() {
            assert!(rec.is_none(), "{phase}: {}: record left {rec:?}", dv(d));
        } else {
            let rec = rec.unwrap_or_else(|| panic!("{phase}: {}: no record", dv(d)));
            let consumers: BTreeSet<String> = rec.consumers.keys().cloned().collect();
            assert_eq!(consumers, want, "{phase}: consumers of {}", dv(d));
            assert!(
                rec.consumers
                    .iter()
                    .all(|(c, v)| !v.leaving && &v.mount_id == c),
                "{phase}: {}: {rec:?}",
                dv(d)
            );
            let mounts: BTreeSet<String> = rec.mounts.keys().cloned().collect();
            assert_eq!(mounts, want, "{phase}: plugin mounts of {}", dv(d));
            assert!(
                rec.mounts.values().all(|m| m.state == MountState::Mounted
                    && !m.in_flight
                    && m.mountpoint.as_deref() == Some(&*w.e.docker.join(dv(d)))),
                "{phase}: {}: {rec:?}",
                dv(d)
            );
        }
        assert_eq!(
            w.driver.mounted_ids(&dv(d)),
            want,
            "{phase}: IDs mounted at the driver for {}",
            dv(d)
        );
    }
    // Status: exactly the prepared containers, every volume mounted.
    let status = w.iso.status().unwrap();
    let listed: BTreeSet<String> = status.iter().map(|s| s.container_id.clone()).collect();
    let want: BTreeSet<String> = prepared.iter().map(|i| cid(*i)).collect();
    assert_eq!(listed, want, "{phase}: status lists");
    for s in &status {
        assert_eq!(s.state, "prepared", "{phase}: {}", s.container_id);
        assert_eq!(s.volumes.len(), 4, "{phase}: {}", s.container_id);
        assert!(
            s.volumes.iter().all(|v| v.mounted),
            "{phase}: {}: {:?}",
            s.container_id,
            s.volumes
        );
    }
    // The mount table: three mounts in each prepared sandbox, one in its rootfs, none for
    // cleaned containers, nothing else under the test root.
    let table = berth_mount::MountTable::read_current().unwrap();
    for i in prepared {
        let i = *i;
        let mut sb: Vec<PathBuf> = table
            .mounts_at_or_below(&w.e.sandbox(i))
            .map(|m| m.mount_point().to_path_buf())
            .collect();
        sb.sort();
        assert_eq!(
            sb,
            [
                w.e.sandbox(i).join("data"),
                w.e.sandbox(i).join("data/nested"),
                w.e.sandbox(i).join("ext"),
            ],
            "{phase}: {}",
            cid(i)
        );
        let rf: Vec<PathBuf> = table
            .mounts_at_or_below(&w.e.rootfs(i))
            .map(|m| m.mount_point().to_path_buf())
            .collect();
        assert_eq!(rf, [w.e.rootfs(i).join("mnt/dvdi")], "{phase}: {}", cid(i));
    }
    for i in cleaned {
        assert!(
            table.mounts_at_or_below(&w.e.sandbox(*i)).next().is_none()
                && table.mounts_at_or_below(&w.e.rootfs(*i)).next().is_none(),
            "{phase}: {} cleaned but still mounted",
            cid(*i)
        );
    }
    assert_eq!(
        table.mounts_at_or_below(&w.e.root).count(),
        4 * prepared.len(),
        "{phase}: mounts under the test root"
    );
}

/// The data path of a freshly prepared container: its mounts lead to its volumes.
fn check_data(w: &World, i: usize) {
    let id = cid(i);
    let [a, b] = persistent_of(i);
    let [d1, d2] = docker_of(i);
    let sb = w.e.sandbox(i);
    std::fs::write(sb.join("data").join(&id), id.as_bytes()).unwrap();
    assert_eq!(
        std::fs::read(w.e.volumes.join(pv(a)).join(&id)).unwrap(),
        id.as_bytes()
    );
    // data/nested is persistent volume b, read-only.
    std::fs::write(w.e.volumes.join(pv(b)).join(format!("seen-by-{id}")), b"x").unwrap();
    assert!(
        sb.join("data/nested")
            .join(format!("seen-by-{id}"))
            .exists()
    );
    let ro = std::fs::write(sb.join("data/nested/w"), b"w").unwrap_err();
    assert_eq!(ro.raw_os_error(), Some(nix::libc::EROFS), "{id}");
    std::fs::write(sb.join("ext").join(&id), id.as_bytes()).unwrap();
    assert!(w.e.docker.join(dv(d1)).join(&id).exists());
    std::fs::write(w.e.rootfs(i).join("mnt/dvdi").join(&id), id.as_bytes()).unwrap();
    assert!(w.e.docker.join(dv(d2)).join(&id).exists());
}

enum Op {
    Prepare(usize),
    Cleanup(usize),
}

/// Runs `ops` as concurrent tasks, with a checker task verifying the instant invariants at
/// every scheduling round until they are all done.
async fn run_phase(w: &Arc<World>, ops: Vec<Op>) -> (usize, bool) {
    let t0 = std::time::Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let checker = {
        let (w, done, rounds) = (Arc::clone(w), Arc::clone(&done), Arc::clone(&rounds));
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                check_instant(&w);
                rounds.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for op in ops {
        let iso = Arc::clone(&w.iso);
        match op {
            Op::Prepare(i) => {
                let cfg = config(&w.e, i);
                tasks.spawn(async move {
                    let p = iso
                        .prepare(&cfg)
                        .await
                        .unwrap_or_else(|e| panic!("prepare {}: {e}", cid(i)));
                    assert_eq!(p.len(), 4, "{}", cid(i));
                });
            }
            Op::Cleanup(i) => {
                tasks.spawn(async move {
                    iso.cleanup(&cid(i))
                        .await
                        .unwrap_or_else(|e| panic!("cleanup {}: {e}", cid(i)));
                });
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    done.store(true, Ordering::Release);
    if let Err(e) = checker.await {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(rounds.load(Ordering::Relaxed) > 1, "the checker ran");
    let mut a = w.activity.lock().unwrap();
    assert!(a.active.is_empty(), "unfinished: {:?}", a.active);
    let report = (a.max_active, a.mixed);
    *a = Activity::default();
    drop(a);
    eprintln!(
        "phase: {} checker rounds, at most {} containers in flight at once, prepares and cleanups overlapping: {}, {:?}",
        rounds.load(Ordering::Relaxed),
        report.0,
        report.1,
        t0.elapsed()
    );
    report
}

#[test]
fn two_hundred_containers_sharing_twenty_persistent_and_twenty_docker_volumes() {
    if !privileged("two_hundred_containers_sharing_twenty_persistent_and_twenty_docker_volumes") {
        return;
    }
    in_ns(|| async {
        let w = Arc::new(world());
        for d in 0..DOCKER {
            w.driver.create(&dv(d), &BTreeMap::new()).await.unwrap();
        }
        let all: Vec<usize> = (0..CONTAINERS).collect();
        let (first, second) = all.split_at(120);
        let (early, late) = first.split_at(60);

        // Phase 1: 120 containers prepared concurrently.
        let (in_flight, _) = run_phase(&w, first.iter().map(|i| Op::Prepare(*i)).collect()).await;
        assert!(in_flight > 1, "prepares interleaved");
        let mut prepared: BTreeSet<usize> = first.iter().copied().collect();
        let mut cleaned = BTreeSet::new();
        check_phase(&w, "phase 1 (prepare 120)", &prepared, &cleaned);
        for i in first {
            check_data(&w, *i);
        }

        // Phase 2: 60 of them cleaned up while the other 80 are prepared, interleaved.
        let mut ops = Vec::new();
        for k in 0..second.len().max(early.len()) {
            if let Some(i) = second.get(k) {
                ops.push(Op::Prepare(*i));
            }
            if let Some(i) = early.get(k) {
                ops.push(Op::Cleanup(*i));
            }
        }
        let (in_flight, mixed) = run_phase(&w, ops).await;
        assert!(in_flight > 1 && mixed, "prepares and cleanups interleaved");
        prepared.extend(second.iter().copied());
        for i in early {
            prepared.remove(i);
            cleaned.insert(*i);
        }
        check_phase(&w, "phase 2 (clean 60, prepare 80)", &prepared, &cleaned);
        for i in second {
            check_data(&w, *i);
        }

        // Phase 3: the remaining 140 cleaned up concurrently.
        let rest: Vec<usize> = late.iter().chain(second).copied().collect();
        let (in_flight, _) = run_phase(&w, rest.iter().map(|i| Op::Cleanup(*i)).collect()).await;
        assert!(in_flight > 1, "cleanups interleaved");
        cleaned.extend(rest);
        prepared.clear();
        check_phase(&w, "phase 3 (clean 140)", &prepared, &cleaned);

        // Nothing left: mounts, container records, Docker volume records.
        assert_eq!(mounts_below(&w.e.root), Vec::<PathBuf>::new());
        assert!(w.iso.status().unwrap().is_empty());
        let records = w.e.work.join("containers");
        if records.exists() {
            let left: Vec<_> = std::fs::read_dir(&records)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "container records left: {left:?}");
        }
        assert!(w.manager.volumes().unwrap().is_empty());
        // One fsync'd record write per container transition (prepare, cleanup).
        assert_eq!(w.iso.record_writes(), 2 * CONTAINERS as u64);
        // The data written through the mounts is in the volumes.
        for i in 0..CONTAINERS {
            let id = cid(i);
            assert!(w.e.volumes.join(pv(persistent_of(i)[0])).join(&id).exists());
            assert!(w.e.docker.join(dv(docker_of(i)[0])).join(&id).exists());
            assert!(w.e.docker.join(dv(docker_of(i)[1])).join(&id).exists());
        }

        // The driver saw exactly one Mount and one Unmount per (container, Docker volume),
        // with the container id as ID.
        let mut want: BTreeMap<(String, String), usize> = BTreeMap::new();
        for i in 0..CONTAINERS {
            for d in docker_of(i) {
                want.insert((dv(d), cid(i)), 1);
            }
        }
        assert_eq!(want.len(), 2 * CONTAINERS);
        for endpoint in [Endpoint::Mount, Endpoint::Unmount] {
            let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
            for (e, volume, id) in w.driver.calls() {
                if e == endpoint {
                    *got.entry((volume, id)).or_default() += 1;
                }
            }
            assert_eq!(got, want, "{endpoint:?} calls");
        }
        for d in 0..DOCKER {
            assert!(w.driver.mounted_ids(&dv(d)).is_empty());
        }
        // Every prepared volume named its source right (sanity of the plan used above).
        let plan = w.iso.plan(&config(&w.e, 0)).unwrap();
        assert!(plan.iter().any(|p| matches!(
            &p.entry.source,
            Source::Docker { driver, name } if driver == DRIVER && name == &dv(1)
        )));
    });
}
