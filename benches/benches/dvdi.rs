//! Docker volume plugin calls (issue "Docker volume driver bridge"): a Mount + Unmount round
//! trip against a plugin, made by berth-dvdi versus the way Mesos makes plugin calls — one
//! process per call — here one `curl --unix-socket` process per call (argv, no shell),
//! sending the same two requests (same method, path, `Accept`, `Content-Type` and body).
//! Target: berth ≥ 20× faster at the median, against a real plugin.
//!
//! Three plugins, one criterion group each (`dvdi/mount_unmount/<plugin>/<side>`):
//!
//! * `buttervolume` 3.13 (waitress + bottle, Python) on a btrfs loop file. Its Mount and
//!   Unmount do no file-system work.
//! * `easyfuse`: docker-volume-easyfuse 0.2.1 (aiohttp, Python) with a bindfs volume. One
//!   extra consumer `ID` (`bench-holder`) keeps the volume FUSE-mounted for the whole group, so
//!   each measured Mount/Unmount with `bench-consumer` is easyfuse's reference counting only
//!   (plus its JSON state file rewrite): no `mount`/`umount`/bindfs process is started inside a
//!   measured call. The bench checks the FUSE mount is there before and after the group.
//! * `fake`: an in-process axum plugin on a unix socket (its own thread and current-thread
//!   runtime), reference-counting in memory: the plugin's own cost is close to nil, so the
//!   ratio is the transport-only one (kept-alive HTTP/1.1 versus a process per call).
//!
//! Sides:
//! * `berth_client`: `PluginClient::mount` + `unmount` (kept-alive connection, activation
//!   cached), on a current-thread runtime;
//! * `berth_manager` (buttervolume only): `VolumeManager::mount` + `unmount` — the same calls
//!   plus the fsync'd consumer record before and after each (four durable writes);
//! * `curl_process_per_call`: two `curl` processes.
//!
//! The real plugins run as children of this process, started after its main thread entered a
//! private mount namespace (before any other thread exists), so the loop mount, the FUSE
//! mount, and the plugins go away with the process. Each needs root and its prerequisites
//! (`scripts/install-dvdi-peers.sh`); a group whose prerequisites are missing prints why and is
//! skipped. The `fake` group needs only `curl`.
//! Run: `cargo bench -p berth-benches --bench dvdi` (a filter such as `easyfuse` runs one group).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_dvdi::client::{ClientConfig, PluginClient, RetryPolicy, Timeouts};
use berth_dvdi::discovery::{Addr, Discovery};
use berth_dvdi::manager::{ManagerConfig, MountMode, VolumeManager};
use berth_dvdi::protocol::MIME;
use berth_dvdi::{ConsumerId, DockerVolume, DriverName, PluginRegistry, VolumeName};
use berth_mount::MountTable;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use serde_json::{Value as Json, json};
use tokio::runtime::Runtime;

const VOLUME: &str = "bench-vol";
/// The consumer of every measured Mount/Unmount.
const CONSUMER: &str = "bench-consumer";
/// easyfuse only: the consumer that keeps the FUSE mount up for the whole group.
const HOLDER: &str = "bench-holder";

fn which(exe: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(20)..)
        .unwrap_or_default()
        .join("\n")
}

/// A real plugin: a child process, killed on drop.
struct Plugin {
    child: Child,
    socket: PathBuf,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// btrfs on a loop file in `dir`, buttervolume serving `dir/run/buttervolume.sock`.
fn start_buttervolume(exe: &Path, mkfs: &Path, dir: &Path) -> Plugin {
    for s in ["run", "btrfs", "state"] {
        std::fs::create_dir_all(dir.join(s)).unwrap();
    }
    let img = dir.join("btrfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let st = Command::new(mkfs)
        .arg("-q")
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.btrfs: {st:?}");
    let dev = berth_mount::loopdev::LoopDevice::attach(&img, false).unwrap();
    nix::mount::mount(
        Some(dev.path()),
        &dir.join("btrfs"),
        Some("btrfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    // Autoclear: the device is freed with the mount (when the namespace goes).
    std::mem::forget(dev);
    let socket = dir.join("run/buttervolume.sock");
    let child = Command::new(exe)
        .arg("run")
        .env(
            "BUTTERVOLUME_VOLUMES_PATH",
            format!("{}/volumes/", dir.join("btrfs").display()),
        )
        .env(
            "BUTTERVOLUME_SNAPSHOTS_PATH",
            format!("{}/snapshots/", dir.join("btrfs").display()),
        )
        .env("BUTTERVOLUME_SCHEDULE", dir.join("schedule.csv"))
        .env("BUTTERVOLUME_SOCKET", &socket)
        .env("BUTTERVOLUME_RUNPATH", dir.join("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Plugin { child, socket }
}

/// easyfuse serving `dir/run/easyfuse.sock`, mounting under `dir/mnt`, state in `dir/db`,
/// its log in `dir/easyfuse.log`; `dir/src` is the bindfs source.
fn start_easyfuse(python: &Path, dir: &Path) -> Plugin {
    for s in ["run", "src", "mnt", "db"] {
        std::fs::create_dir_all(dir.join(s)).unwrap();
    }
    std::fs::write(dir.join("src/hello.txt"), "hello-from-src").unwrap();
    let socket = dir.join("run/easyfuse.sock");
    let child = Command::new(python)
        .args(["-m", "easyfuse", "-s"])
        .arg(&socket)
        .arg("-m")
        .arg(dir.join("mnt"))
        .arg("-d")
        .arg(dir.join("db/mntdb.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("easyfuse.log")).unwrap())
        .spawn()
        .unwrap();
    Plugin { child, socket }
}

/// Lazily unmounts `path` on drop if it is still a mount point (a FUSE mount left by a
/// failure half-way): the kernel then ends the FUSE connection and bindfs exits.
struct UnmountGuard(PathBuf);

impl Drop for UnmountGuard {
    fn drop(&mut self) {
        while is_mount_point(&self.0) {
            if nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
    }
}

fn is_mount_point(path: &Path) -> bool {
    MountTable::read_current()
        .map(|t| t.is_mount_point(path))
        .unwrap_or(false)
}

// ---- the in-process fake plugin (transport-only reference) ----

type Volumes = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// Activate, Create, Mount and Unmount as a reference-counting plugin answers them
/// (easyfuse's shapes: JSON in a `text/plain` body, errors as 400 + `Err`).
async fn fake_handler(State(vols): State<Volumes>, uri: Uri, body: Bytes) -> Response {
    let req: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let field = |k: &str| {
        req.get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (name, id) = (field("Name"), field("ID"));
    let (status, answer) = {
        let mut v = vols.lock().unwrap();
        match uri.path() {
            "/Plugin.Activate" => (200, json!({"Implements": ["VolumeDriver"]})),
            "/VolumeDriver.Create" => {
                v.entry(name).or_default();
                (200, json!({"Err": ""}))
            }
            "/VolumeDriver.Mount" => match v.get_mut(&name) {
                Some(ids) => {
                    ids.insert(id);
                    (
                        200,
                        json!({"Mountpoint": format!("/fake/{name}"), "Err": ""}),
                    )
                }
                None => (400, json!({"Err": format!("Volume {name} not found.")})),
            },
            "/VolumeDriver.Unmount" => {
                if v.get_mut(&name).is_some_and(|ids| ids.remove(&id)) {
                    (200, json!({"Err": ""}))
                } else {
                    (400, json!({"Err": format!("Volume ID {id} not found.")}))
                }
            }
            _ => (404, json!({"Err": "404: Not Found"})),
        }
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "text/plain; charset=utf-8")],
        answer.to_string(),
    )
        .into_response()
}

/// The fake plugin on its own thread and current-thread runtime (a separate "process").
struct FakePlugin {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePlugin {
    fn start(socket: &Path) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                let app = Router::new()
                    .fallback(fake_handler)
                    .with_state(Volumes::default());
                tokio::select! {
                    r = axum::serve(listener, app) => r.unwrap(),
                    _ = rx => {}
                }
            });
        });
        Self {
            socket: socket.to_owned(),
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

// ---- the two sides ----

fn config() -> ClientConfig {
    ClientConfig {
        timeouts: Timeouts::default(),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            overall: Duration::from_secs(30),
            full_jitter: false,
        },
        max_idle: 4,
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn curl_call(curl: &Path, socket: &Path, endpoint: &str, body: &str) {
    let out = Command::new(curl)
        .arg("-sS")
        .arg("--fail-with-body")
        .arg("--unix-socket")
        .arg(socket)
        .args(["-X", "POST", "-H"])
        .arg(format!("Accept: {MIME}"))
        .arg("-H")
        .arg(format!("Content-Type: {MIME}"))
        .arg("-d")
        .arg(body)
        .arg(format!("http://plugin.moby.localhost{endpoint}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {endpoint}: {out:?}");
    // The same success check the client makes: an empty Err.
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.get("Err").and_then(Json::as_str).unwrap_or("").is_empty(),
        "{v}"
    );
    black_box(v);
}

fn group<'a>(c: &'a mut Criterion, plugin: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(format!("dvdi/mount_unmount/{plugin}"));
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g
}

fn bench_berth_client(g: &mut BenchmarkGroup<'_, WallTime>, rt: &Runtime, client: &PluginClient) {
    g.bench_function("berth_client", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mp = client.mount(VOLUME, CONSUMER).await.unwrap();
                client.unmount(VOLUME, CONSUMER).await.unwrap();
                black_box(mp);
            });
        });
    });
}

fn bench_curl(g: &mut BenchmarkGroup<'_, WallTime>, curl: &Path, socket: &Path) {
    let body = format!(r#"{{"Name":"{VOLUME}","ID":"{CONSUMER}"}}"#);
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("curl_process_per_call", |b| {
        b.iter(|| {
            curl_call(curl, socket, "/VolumeDriver.Mount", &body);
            curl_call(curl, socket, "/VolumeDriver.Unmount", &body);
        });
    });
}

// ---- the groups ----

fn bench_buttervolume(c: &mut Criterion, exe: &Path, mkfs: &Path, curl: &Path, dir: &Path) {
    let plugin = start_buttervolume(exe, mkfs, dir);
    let rt = runtime();
    let client = PluginClient::new("buttervolume", Addr::Unix(plugin.socket.clone()), config());
    rt.block_on(async {
        // Waits (activation retries) until the plugin listens.
        client.activate().await.unwrap();
        client.create(VOLUME, &BTreeMap::new()).await.unwrap();
    });
    let reg = PluginRegistry::new(
        Discovery::with_roots(vec![dir.join("run")], vec![]),
        config(),
    );
    let manager = VolumeManager::new(
        reg,
        ManagerConfig {
            state_dir: dir.join("state"),
            mode: MountMode::PerConsumer,
            create_missing: false,
            mountinfo: None,
        },
    )
    .unwrap();
    let volume = DockerVolume::new(
        DriverName::new("buttervolume").unwrap(),
        VolumeName::new(VOLUME).unwrap(),
    );
    let consumer = ConsumerId::new(CONSUMER).unwrap();

    let mut g = group(c, "buttervolume");
    bench_berth_client(&mut g, &rt, &client);
    g.bench_function("berth_manager", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mp = manager.mount(&volume, &consumer).await.unwrap();
                manager
                    .unmount(&volume.driver, &volume.name, &consumer)
                    .await
                    .unwrap();
                black_box(mp);
            });
        });
    });
    bench_curl(&mut g, curl, &plugin.socket);
    g.finish();
    drop(plugin);
    let _ = nix::mount::umount2(&dir.join("btrfs"), nix::mount::MntFlags::MNT_DETACH);
}

fn bench_easyfuse(c: &mut Criterion, python: &Path, curl: &Path, dir: &Path) {
    let mountpoint = dir.join("mnt").join(VOLUME);
    // Dropped after the plugin, even on a panic: whatever is left of the FUSE mount goes.
    let _guard = UnmountGuard(mountpoint.clone());
    let plugin = start_easyfuse(python, dir);
    let log = dir.join("easyfuse.log");
    let rt = runtime();
    let client = PluginClient::new("easyfuse", Addr::Unix(plugin.socket.clone()), config());
    let opts = BTreeMap::from([
        (
            "device".to_owned(),
            format!("bindfs#{}", dir.join("src").display()),
        ),
        ("o".to_owned(), "allow_other".to_owned()),
    ]);
    let held = rt.block_on(async {
        client.activate().await?;
        client.create(VOLUME, &opts).await?;
        // The holder: this Mount is the one that runs `mount -t fuse` (bindfs).
        client.mount(VOLUME, HOLDER).await
    });
    let held = held.unwrap_or_else(|e| panic!("easyfuse: {e}\nlog:\n{}", log_tail(&log)));
    assert_eq!(held, mountpoint);
    assert!(
        is_mount_point(&mountpoint),
        "easyfuse made the FUSE mount for {HOLDER}"
    );
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("hello.txt")).unwrap(),
        "hello-from-src"
    );

    let mut g = group(c, "easyfuse");
    bench_berth_client(&mut g, &rt, &client);
    bench_curl(&mut g, curl, &plugin.socket);
    g.finish();

    assert!(
        is_mount_point(&mountpoint),
        "the FUSE mount stayed up through every measured call (held by {HOLDER})"
    );
    rt.block_on(client.unmount(VOLUME, HOLDER))
        .unwrap_or_else(|e| panic!("easyfuse: {e}\nlog:\n{}", log_tail(&log)));
    assert!(
        !is_mount_point(&mountpoint),
        "the last Unmount removed the FUSE mount"
    );
    rt.block_on(client.remove(VOLUME)).unwrap();
    drop(plugin);
}

fn bench_fake(c: &mut Criterion, curl: &Path, dir: &Path) {
    let plugin = FakePlugin::start(&dir.join("fake.sock"));
    let rt = runtime();
    let client = PluginClient::new("fake", Addr::Unix(plugin.socket.clone()), config());
    rt.block_on(async {
        client.activate().await.unwrap();
        client.create(VOLUME, &BTreeMap::new()).await.unwrap();
    });
    let mut g = group(c, "fake");
    bench_berth_client(&mut g, &rt, &client);
    bench_curl(&mut g, curl, &plugin.socket);
    g.finish();
    drop(plugin);
}

fn main() {
    let Some(curl) = which("curl") else {
        eprintln!("dvdi benchmarks skipped: curl missing");
        return;
    };
    let root = nix::unistd::geteuid().is_root();
    if root {
        // Single-threaded so far: the whole process, the threads and the plugins it starts
        // get the namespace, and every mount made in it goes with them.
        berth_mount::ns::enter_private_mount_namespace().expect("private mount namespace");
    }
    let peers = std::env::var_os("BERTH_PEERS_DIR")
        .map_or_else(|| PathBuf::from("/opt/berth-peers"), PathBuf::from);
    let dir = std::env::temp_dir().join(format!("berth-dvdi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Criterion::default().configure_from_args();

    let butter = peers.join("buttervolume/bin/buttervolume");
    match which("mkfs.btrfs") {
        Some(mkfs) if root && butter.is_file() => {
            let d = dir.join("buttervolume");
            bench_buttervolume(&mut c, &butter, &mkfs, &curl, &d);
        }
        _ => eprintln!(
            "dvdi/mount_unmount/buttervolume skipped: needs root, buttervolume and mkfs.btrfs \
             (scripts/install-dvdi-peers.sh)"
        ),
    }

    let easyfuse = peers.join("docker-volume-easyfuse");
    let python = easyfuse.join("bin/python");
    if root
        && python.is_file()
        && easyfuse.join("VERSION").is_file()
        && which("bindfs").is_some()
        && Path::new("/dev/fuse").exists()
    {
        bench_easyfuse(&mut c, &python, &curl, &dir.join("easyfuse"));
    } else {
        eprintln!(
            "dvdi/mount_unmount/easyfuse skipped: needs root, docker-volume-easyfuse, bindfs \
             and /dev/fuse (scripts/install-dvdi-peers.sh)"
        );
    }

    bench_fake(&mut c, &curl, &dir);

    c.final_summary();
    let _ = std::fs::remove_dir_all(&dir);
}
