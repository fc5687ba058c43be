//! Real peers: Docker volume plugins from PyPI, installed by `scripts/install-dvdi-peers.sh`
//! into `${BERTH_PEERS_DIR:-/opt/berth-peers}` and started as in the research notes
//! (`docs/research/peers-and-csi.md` §2):
//!
//! - **buttervolume 3.13** on a btrfs file system on a loop file;
//! - **docker-volume-easyfuse 0.2.1** mounting bindfs over FUSE (fuse3).
//!
//! For each: create, mount for two consumers, write through one and read through the other,
//! unmount both, remove. For easyfuse the FUSE mount must exist while a consumer uses it and
//! be really gone (mountinfo) after the last Unmount.
//!
//! Everything runs inside a private mount namespace: a dedicated thread unshares one, makes
//! the loop mount there and starts the plugin from there (a child inherits the namespace of
//! the thread that forks it). When the test ends the plugin is killed and the thread exits,
//! so the namespace and every mount in it (btrfs, FUSE) disappear with them; nothing leaks
//! into the host's mount table even when an assertion fails half-way.
//!
//! Needs root, the peers, `mkfs.btrfs`, `bindfs` and `/dev/fuse`. Without them the tests print
//! why and pass, except with `BERTH_REQUIRE_PEERS=1` (CI), where a missing peer fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_dvdi::client::{ClientConfig, RetryPolicy, Timeouts};
use berth_dvdi::discovery::Discovery;
use berth_dvdi::manager::{ManagerConfig, MountMode, VolumeManager};
use berth_dvdi::{ConsumerId, DockerVolume, DriverName, PluginRegistry, VolumeName};
use berth_mount::MountTable;
use berth_testkit::{Ns, peer_or_skip, peers_dir};

fn which(exe: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

/// `true` when a prerequisite is missing (a printed skip, or a failure with
/// `BERTH_REQUIRE_PEERS=1`).
fn missing(what: &[(&str, bool)]) -> bool {
    !peer_or_skip("dvdi peer tier", what)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn client_config() -> ClientConfig {
    ClientConfig {
        timeouts: Timeouts::uniform(Duration::from_secs(60)),
        // The plugins take a moment to import and bind their socket.
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            overall: Duration::from_secs(30),
            full_jitter: false,
        },
        max_idle: 4,
    }
}

fn manager(run: &Path, state: &Path, mountinfo: Option<PathBuf>) -> VolumeManager<PluginRegistry> {
    let reg = PluginRegistry::new(
        Discovery::with_roots(vec![run.to_owned()], vec![]),
        client_config(),
    );
    VolumeManager::new(
        reg,
        ManagerConfig {
            state_dir: state.to_owned(),
            mode: MountMode::PerConsumer,
            create_missing: true,
            mountinfo,
        },
    )
    .unwrap()
}

fn cid(s: &str) -> ConsumerId {
    ConsumerId::new(s).unwrap()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Mount for two consumers, write through one, read through the other.
fn write_then_read(ns: &Ns, a: &Path, b: &Path, file: &str, text: &str) {
    let (a, b, file, text) = (a.to_owned(), b.to_owned(), file.to_owned(), text.to_owned());
    ns.run(move || {
        std::fs::write(a.join(&file), &text).unwrap();
        assert_eq!(std::fs::read_to_string(b.join(&file)).unwrap(), text);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buttervolume_on_btrfs() {
    let venv = peers_dir().join("buttervolume");
    let exe = venv.join("bin/buttervolume");
    let mkfs = which("mkfs.btrfs");
    if missing(&[
        ("root", is_root()),
        ("buttervolume", exe.is_file()),
        ("mkfs.btrfs (btrfs-progs)", mkfs.is_some()),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    for s in ["run", "state", "btrfs"] {
        std::fs::create_dir_all(d.join(s)).unwrap();
    }
    let img = d.join("btrfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let st = Command::new(mkfs.unwrap())
        .arg("-q")
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.btrfs: {st:?}");

    let mut ns = Ns::new();
    let (img2, mnt) = (img.clone(), d.join("btrfs"));
    ns.run(move || {
        let dev = berth_mount::loopdev::LoopDevice::attach(&img2, false).unwrap();
        nix::mount::mount(
            Some(dev.path()),
            &mnt,
            Some("btrfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        // LO_FLAGS_AUTOCLEAR: the device goes with the namespace's last reference to the mount.
        std::mem::forget(dev);
    });
    let log = d.join("buttervolume.log");
    let mut cmd = Command::new(&exe);
    cmd.arg("run")
        .env(
            "BUTTERVOLUME_VOLUMES_PATH",
            format!("{}/volumes/", d.join("btrfs").display()),
        )
        .env(
            "BUTTERVOLUME_SNAPSHOTS_PATH",
            format!("{}/snapshots/", d.join("btrfs").display()),
        )
        .env("BUTTERVOLUME_SCHEDULE", d.join("schedule.csv"))
        .env("BUTTERVOLUME_SOCKET", d.join("run/buttervolume.sock"))
        .env("BUTTERVOLUME_RUNPATH", d.join("run"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(d.join("buttervolume.err")).unwrap());
    let pid = ns.spawn(cmd);

    let m = manager(
        &d.join("run"),
        &d.join("state"),
        Some(PathBuf::from(format!("/proc/{pid}/mountinfo"))),
    );
    let v = DockerVolume::new(
        DriverName::new("buttervolume").unwrap(),
        VolumeName::new("berth-vol1").unwrap(),
    );
    let mp1 = match m.mount(&v, &cid("container-1")).await {
        Ok(p) => p,
        Err(e) => panic!(
            "mount: {e}\nlog:\n{}\n{}",
            log_tail(&log),
            log_tail(&d.join("buttervolume.err"))
        ),
    };
    let mp2 = m.mount(&v, &cid("container-2")).await.unwrap();
    assert!(
        mp1.starts_with(d.join("btrfs/volumes")),
        "{}",
        mp1.display()
    );
    write_then_read(&ns, &mp1, &mp2, "hello.txt", "hello through container-1");
    let rec = m.load("buttervolume", "berth-vol1").unwrap().unwrap();
    assert_eq!(
        rec.mounts.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["container-1".into(), "container-2".into()])
    );

    m.unmount(&v.driver, &v.name, &cid("container-2"))
        .await
        .unwrap();
    assert!(
        m.remove(&v.driver, &v.name).await.is_err(),
        "Remove refused before the last Unmount"
    );
    m.unmount(&v.driver, &v.name, &cid("container-1"))
        .await
        .unwrap();
    m.remove(&v.driver, &v.name).await.unwrap();
    assert!(m.load("buttervolume", "berth-vol1").unwrap().is_none());
    let gone = mp1.clone();
    assert!(ns.run(move || !gone.exists()), "the subvolume is deleted");
    let reg = m.drivers();
    let c = reg.client(&v.driver).await.unwrap();
    assert!(
        c.get("berth-vol1").await.is_err(),
        "buttervolume: Get of a removed volume is an error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easyfuse_with_bindfs() {
    let venv = peers_dir().join("docker-volume-easyfuse");
    let python = venv.join("bin/python");
    let bindfs = which("bindfs");
    if missing(&[
        ("root", is_root()),
        (
            "docker-volume-easyfuse",
            python.is_file() && venv.join("VERSION").is_file(),
        ),
        ("bindfs", bindfs.is_some()),
        ("/dev/fuse", Path::new("/dev/fuse").exists()),
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    for s in ["run", "state", "src", "mnt", "db"] {
        std::fs::create_dir_all(d.join(s)).unwrap();
    }
    std::fs::write(d.join("src/hello.txt"), "hello-from-src").unwrap();
    let mut ns = Ns::new();
    let log = d.join("easyfuse.log");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "easyfuse", "-s"])
        .arg(d.join("run/easyfuse.sock"))
        .arg("-m")
        .arg(d.join("mnt"))
        .arg("-d")
        .arg(d.join("db/mntdb.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let pid = ns.spawn(cmd);
    let mountinfo = PathBuf::from(format!("/proc/{pid}/mountinfo"));

    let m = manager(&d.join("run"), &d.join("state"), Some(mountinfo.clone()));
    let mut v = DockerVolume::new(
        DriverName::new("easyfuse").unwrap(),
        VolumeName::new("berth-fuse").unwrap(),
    );
    v.options.insert(
        "device".into(),
        format!("bindfs#{}", d.join("src").display()),
    );
    v.options.insert("o".into(), "allow_other".into());
    let mp1 = match m.mount(&v, &cid("container-1")).await {
        Ok(p) => p,
        Err(e) => panic!("mount: {e}\nlog:\n{}", log_tail(&log)),
    };
    let mp2 = m.mount(&v, &cid("container-2")).await.unwrap();
    assert_eq!(mp1, d.join("mnt/berth-fuse"));
    let is_mounted = |p: &Path| MountTable::read_file(&mountinfo).unwrap().is_mount_point(p);
    assert!(is_mounted(&mp1), "FUSE mount made by the plugin");
    assert!(
        m.load("easyfuse", "berth-fuse").unwrap().unwrap().mounts["container-1"].was_mount_point
    );

    write_then_read(
        &ns,
        &mp1,
        &mp2,
        "from-c1.txt",
        "written through container-1",
    );
    let (a, b) = (mp1.clone(), d.join("src"));
    ns.run(move || {
        assert_eq!(
            std::fs::read_to_string(a.join("hello.txt")).unwrap(),
            "hello-from-src"
        );
        assert_eq!(
            std::fs::read_to_string(b.join("from-c1.txt")).unwrap(),
            "written through container-1",
            "bindfs passes writes through"
        );
    });

    // easyfuse counts IDs: the first Unmount keeps the mount, the last one removes it.
    m.unmount(&v.driver, &v.name, &cid("container-2"))
        .await
        .unwrap();
    assert!(is_mounted(&mp1), "still mounted for container-1");
    assert!(
        m.remove(&v.driver, &v.name).await.is_err(),
        "Remove refused before the last Unmount"
    );
    m.unmount(&v.driver, &v.name, &cid("container-1"))
        .await
        .unwrap();
    assert!(
        !is_mounted(&mp1),
        "the FUSE mount is really gone after the last Unmount"
    );
    let table = MountTable::read_file(&mountinfo).unwrap();
    assert!(
        table
            .iter()
            .all(|e| e.fs_type() != "fuse" || !e.mount_point().starts_with(d.join("mnt"))),
        "no FUSE mount left under the plugin's base"
    );
    m.remove(&v.driver, &v.name).await.unwrap();
    assert!(m.load("easyfuse", "berth-fuse").unwrap().is_none());
    let c = m.drivers().client(&v.driver).await.unwrap();
    assert!(
        c.get("berth-fuse").await.is_err(),
        "easyfuse: Get of a removed volume is an error"
    );
    assert_eq!(
        c.capabilities().await.unwrap().scope,
        berth_dvdi::Scope::Global
    );
}
