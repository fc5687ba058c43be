//! Docker volume plugin calls (issue "Docker volume driver bridge"): a Mount + Unmount round
//! trip against a real plugin, made by berth-dvdi versus the way Mesos makes plugin calls —
//! one process per call — here one `curl --unix-socket` process per call (argv, no shell),
//! sending the same two requests. Target: berth ≥ 20× faster at the median.
//!
//! The plugin is buttervolume 3.13 (installed by `scripts/install-dvdi-peers.sh`) on a btrfs
//! loop file, started from this process after its main thread entered a private mount
//! namespace (so the loop mount, and the plugin, die with the process). Its Mount and Unmount
//! do no file-system work, so the figures are the protocol path plus the plugin's own
//! request handling (waitress + bottle, in Python), which both sides pay.
//!
//! Ids, each one Mount{Name, ID} + Unmount{Name, ID} of one volume:
//! * `dvdi/mount_unmount/berth_client`: `PluginClient::mount` + `unmount` (kept-alive
//!   connection, activation cached), on a current-thread runtime;
//! * `dvdi/mount_unmount/berth_manager`: `VolumeManager::mount` + `unmount` — the same calls
//!   plus the fsync'd consumer record before and after each (four durable writes);
//! * `dvdi/mount_unmount/curl_process_per_call`: two `curl` processes.
//!
//! Needs root, buttervolume and btrfs-progs; otherwise prints why and measures nothing.
//! Run: `cargo bench -p berth-benches --bench dvdi`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_dvdi::client::{ClientConfig, PluginClient, RetryPolicy, Timeouts};
use berth_dvdi::discovery::{Addr, Discovery};
use berth_dvdi::manager::{ManagerConfig, MountMode, VolumeManager};
use berth_dvdi::protocol::MIME;
use berth_dvdi::{ConsumerId, DockerVolume, DriverName, PluginRegistry, VolumeName};
use criterion::Criterion;
use tokio::runtime::Runtime;

const VOLUME: &str = "bench-vol";

fn which(exe: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

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

fn config() -> ClientConfig {
    ClientConfig {
        timeouts: Timeouts::default(),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            overall: Duration::from_secs(30),
        },
        max_idle: 4,
    }
}

fn curl_call(curl: &Path, socket: &Path, endpoint: &str, body: &str) {
    let out = Command::new(curl)
        .arg("-sS")
        .arg("--fail-with-body")
        .arg("--unix-socket")
        .arg(socket)
        .args(["-X", "POST", "-H"])
        .arg(format!("Accept: {MIME}"))
        .arg("-d")
        .arg(body)
        .arg(format!("http://plugin.moby.localhost{endpoint}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {endpoint}: {out:?}");
    // The same success check the client makes: an empty Err.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v.get("Err")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .is_empty(),
        "{v}"
    );
    black_box(v);
}

fn bench(c: &mut Criterion, plugin: &Plugin, curl: &Path, dir: &Path) {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = PluginClient::new("buttervolume", Addr::Unix(plugin.socket.clone()), config());
    rt.block_on(async {
        // Waits (activation retries) until the plugin listens.
        client.activate().await.unwrap();
        client
            .create(VOLUME, &std::collections::BTreeMap::new())
            .await
            .unwrap();
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
    let consumer = ConsumerId::new("bench-consumer").unwrap();

    let mut g = c.benchmark_group("dvdi/mount_unmount");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("berth_client", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mp = client.mount(VOLUME, "bench-consumer").await.unwrap();
                client.unmount(VOLUME, "bench-consumer").await.unwrap();
                black_box(mp);
            });
        });
    });
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
    let mount_body = format!(r#"{{"Name":"{VOLUME}","ID":"bench-consumer"}}"#);
    g.sample_size(20).measurement_time(Duration::from_secs(4));
    g.bench_function("curl_process_per_call", |b| {
        b.iter(|| {
            curl_call(curl, &plugin.socket, "/VolumeDriver.Mount", &mount_body);
            curl_call(curl, &plugin.socket, "/VolumeDriver.Unmount", &mount_body);
        });
    });
    g.finish();
}

fn main() {
    let peers = std::env::var_os("BERTH_PEERS_DIR")
        .map_or_else(|| PathBuf::from("/opt/berth-peers"), PathBuf::from);
    let exe = peers.join("buttervolume/bin/buttervolume");
    let (Some(mkfs), Some(curl)) = (which("mkfs.btrfs"), which("curl")) else {
        eprintln!("dvdi benchmarks skipped: mkfs.btrfs (btrfs-progs) or curl missing");
        return;
    };
    if !nix::unistd::geteuid().is_root() || !exe.is_file() {
        eprintln!(
            "dvdi benchmarks skipped: need root and buttervolume (scripts/install-dvdi-peers.sh)"
        );
        return;
    }
    // Single-threaded so far: the whole process, and the plugin it starts, get the namespace.
    berth_mount::ns::enter_private_mount_namespace().expect("private mount namespace");
    let dir = std::env::temp_dir().join(format!("berth-dvdi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = start_buttervolume(&exe, &mkfs, &dir);
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &plugin, &curl, &dir);
    c.final_summary();
    drop(plugin);
    let _ = nix::mount::umount2(&dir.join("btrfs"), nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(&dir);
}
