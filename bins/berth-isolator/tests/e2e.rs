//! End to end through the `berth-isolator` binary, as root, in a private mount namespace that
//! the binary's processes and the plugins share: a persistent volume, a CSI volume (the real
//! cfgd-csi plugin) and a Docker volume (the real docker-volume-easyfuse plugin with bindfs) in
//! one container; `demo`; the gRPC service and its metrics; and the binary killed with SIGKILL
//! at random moments of prepare and cleanup, followed by `recover`.
//!
//! The real-peer parts run when the peers are installed (`scripts/install-peers.sh`) and
//! fail instead of skipping under `BERTH_REQUIRE_PEERS=1` (CI).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_testkit::{Ns, peers_dir, privileged};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");

/// The peers, or a skip (a failure under `BERTH_REQUIRE_PEERS=1`).
fn peers(test: &str) -> Option<(PathBuf, PathBuf)> {
    let cfgd = std::env::var_os("BERTH_CFGD_CSI")
        .map_or_else(|| peers_dir().join("cfgd-csi/bin/cfgd-csi"), PathBuf::from);
    let easyfuse = peers_dir().join("docker-volume-easyfuse/bin/python");
    let bindfs = ["/usr/bin/bindfs", "/bin/bindfs"]
        .iter()
        .any(|p| Path::new(p).exists());
    if cfgd.is_file() && easyfuse.is_file() && bindfs && Path::new("/dev/fuse").exists() {
        return Some((cfgd, easyfuse));
    }
    assert!(
        std::env::var("BERTH_REQUIRE_PEERS").as_deref() != Ok("1"),
        "{test}: BERTH_REQUIRE_PEERS=1 but a peer is missing (cfgd-csi {}, easyfuse {}, bindfs {bindfs})",
        cfgd.display(),
        easyfuse.display()
    );
    eprintln!("SKIPPED {test}: real peers not installed (scripts/install-peers.sh)");
    None
}

/// Runs the binary in the namespace.
fn isolator(ns: &Ns, args: Vec<String>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(&args);
    ns.output(cmd)
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "berth-isolator failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn wait_for(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

fn volume() -> Value {
    json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": 64},
        "reservations": [{"type": "STATIC", "role": "db"}],
        "disk": {"persistence": {"id": "pv-e2e", "principal": "p"},
                 "volume": {"mode": "RW", "container_path": "data"}}
    })
}

/// A world: the two plugins running, the CSI config, the work dir.
struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ns: Ns,
    global: Vec<String>,
}

impl World {
    fn start(cfgd: &Path, easyfuse: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for d in [
            "cache", "csi", "conf", "plugins", "fuse-mnt", "fuse-db", "fuse-src", "work",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("fuse-src/hello.txt"), b"hello through FUSE").unwrap();
        let mut ns = Ns::new();
        // cfgd-csi with its cache on its own tmpfs (research peers-and-csi.md §6.1).
        let cache = root.join("cache");
        ns.run({
            let cache = cache.clone();
            move || {
                nix::mount::mount(
                    Some("tmpfs"),
                    &cache,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    Some("size=16m"),
                )
                .unwrap();
                std::fs::create_dir_all(cache.join("nettools/1.0.0")).unwrap();
                std::fs::write(cache.join("nettools/1.0.0/README"), b"hello from module\n")
                    .unwrap();
                std::fs::write(cache.join("nettools/1.0.0/.cfgd-complete"), b"").unwrap();
            }
        });
        let sock = root.join("csi/cfgd.sock");
        let mut cmd = Command::new(cfgd);
        cmd.env("CSI_ENDPOINT", &sock)
            .env("CACHE_DIR", &cache)
            .env("METRICS_PORT", "0")
            .env("CFGD_CSI_ALLOWED_REGISTRIES", "registry.invalid")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ns.spawn(cmd);
        std::fs::write(
            root.join("conf/cfgd.json"),
            json!({"type": "io.cfgd.csi", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": format!("unix://{}", sock.display())}]}).to_string(),
        )
        .unwrap();
        // easyfuse, discovered as `easyfuse` through its socket in our plugin dir.
        let mut cmd = Command::new(easyfuse);
        cmd.args(["-m", "easyfuse", "-s"])
            .arg(root.join("plugins/easyfuse.sock"))
            .arg("-m")
            .arg(root.join("fuse-mnt"))
            .arg("-d")
            .arg(root.join("fuse-db/mntdb.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ns.spawn(cmd);
        wait_for(&sock);
        wait_for(&root.join("plugins/easyfuse.sock"));
        let global = vec![
            format!("--work_dir={}", root.join("work").display()),
            format!("--csi_plugin_config_dir={}", root.join("conf").display()),
            format!("--docker-plugin-dirs={}", root.join("plugins").display()),
            "--resources=cpus:2;mem:512;disk(db):256".to_owned(),
        ];
        Self {
            _dir: dir,
            root,
            ns,
            global,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = self.global.clone();
        all.extend(args.iter().map(|s| (*s).to_owned()));
        isolator(&self.ns, all)
    }

    fn write(&self, name: &str, value: &Value) -> String {
        let p = self.root.join(name);
        std::fs::write(&p, value.to_string()).unwrap();
        p.display().to_string()
    }

    fn container(&self, id: &str) -> (PathBuf, String) {
        let sandbox = self.root.join(format!("sandbox-{id}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        let cfg = json!({
            "container_id": id,
            "sandbox": sandbox,
            "resources": [volume()],
            "volumes": [
                {"mode": "RO", "container_path": "module", "source": {"type": "CSI_VOLUME", "csi_volume": {
                    "plugin_name": "io.cfgd.csi",
                    "static_provisioning": {"volume_id": "vol-module",
                        "volume_capability": {"mount": {}, "access_mode": {"mode": "MULTI_NODE_READER_ONLY"}},
                        "volume_context": {"module": "nettools", "version": "1.0.0"}}}}},
                {"mode": "RW", "container_path": "fuse", "source": {"type": "DOCKER_VOLUME", "docker_volume": {
                    "driver": "easyfuse", "name": "berth-e2e",
                    "driver_options": {"parameter": [
                        {"key": "device", "value": format!("bindfs#{}", self.root.join("fuse-src").display())},
                        {"key": "o", "value": "allow_other"}]}}}}
            ],
            "environment": {}
        });
        (sandbox, self.write(&format!("{id}.json"), &cfg))
    }

    fn create_volume(&self) {
        let op = self.write(
            "create.json",
            &json!({"type": "CREATE", "create": {"volumes": [volume()]}}),
        );
        let out = ok(&self.run(&["apply-operation", "--operation", &op]));
        assert_eq!(out["checkpointed"].as_array().unwrap().len(), 1, "{out}");
    }

    /// Nothing of berth's is mounted any more (the plugins' own cache tmpfs aside).
    fn assert_nothing_mounted(&self) {
        for sub in ["work", "fuse-mnt"] {
            assert_eq!(
                self.ns.mounts_below(&self.root.join(sub)),
                Vec::<PathBuf>::new(),
                "{sub}"
            );
        }
        for entry in std::fs::read_dir(&self.root).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sandbox-")
            {
                assert_eq!(
                    self.ns.mounts_below(&p),
                    Vec::<PathBuf>::new(),
                    "{}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn three_volume_kinds_in_one_container_through_the_binary() {
    if !privileged("three_volume_kinds_in_one_container") {
        return;
    }
    let Some((cfgd, easyfuse)) = peers("three_volume_kinds_in_one_container") else {
        return;
    };
    let w = World::start(&cfgd, &easyfuse);
    w.create_volume();
    let (sandbox, cfg) = w.container("c1");
    let out = ok(&w.run(&["prepare", "--container-id", "c1", "--config", &cfg]));
    assert_eq!(out["mounts"].as_array().unwrap().len(), 3, "{out}");

    // Inside the namespace, where the mounts are: persistent written through the container
    // path lands in the volume directory; the CSI module is read-only; the Docker volume is
    // the FUSE file system of easyfuse and bindfs.
    let vol = w.root.join("work/volumes/roles/db/pv-e2e");
    let (sb, v) = (sandbox.clone(), vol.clone());
    w.ns.run(move || {
        std::fs::write(sb.join("data/f"), b"persistent").unwrap();
        assert_eq!(std::fs::read(v.join("f")).unwrap(), b"persistent");
        assert_eq!(
            std::fs::read(sb.join("module/README")).unwrap(),
            b"hello from module\n"
        );
        assert!(std::fs::write(sb.join("module/x"), b"x").is_err());
        assert_eq!(
            std::fs::read(sb.join("fuse/hello.txt")).unwrap(),
            b"hello through FUSE"
        );
    });

    let status = ok(&w.run(&["status", "--json"]));
    assert_eq!(status["containers"][0]["state"], "prepared", "{status}");
    assert!(
        status["containers"][0]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["mounted"] == true),
        "{status}"
    );

    // DESTROY while in use is refused.
    let destroy = w.write(
        "destroy.json",
        &json!({"type": "DESTROY", "destroy": {"volumes": [volume()]}}),
    );
    let refused = w.run(&["apply-operation", "--operation", &destroy]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{refused:?}"
    );

    let _ = ok(&w.run(&["cleanup", "--container-id", "c1"]));
    w.assert_nothing_mounted();
    let status = ok(&w.run(&["status", "--json"]));
    assert_eq!(
        berth_testkit::status_parts(&status),
        json!({"containers": [], "leftovers": []})
    );
    // The enforcement mode: auto, and on this machine's temporary directory either a project
    // quota (a kernel and filesystem with them) or du accounting.
    assert_eq!(status["disk_isolation"]["mode"], "auto", "{status}");
    assert!(
        ["du", "project-quota"].contains(&status["disk_isolation"]["work_dir"].as_str().unwrap()),
        "{status}"
    );
    assert!(
        !w.root
            .join("work/csi/io.cfgd.csi/default/volumes/vol-module")
            .exists()
    );

    let _ = ok(&w.run(&["apply-operation", "--operation", &destroy]));
    assert!(!vol.exists());
}

#[test]
fn usage_of_every_volume_kind_through_the_binary_and_the_service() {
    if !privileged("usage_of_every_volume_kind") {
        return;
    }
    let Some((cfgd, easyfuse)) = peers("usage_of_every_volume_kind") else {
        return;
    };
    let w = World::start(&cfgd, &easyfuse);
    w.create_volume();
    let (sandbox, cfg) = w.container("c1");
    let _ = ok(&w.run(&["prepare", "--container-id", "c1", "--config", &cfg]));
    let sb = sandbox.clone();
    w.ns.run(move || std::fs::write(sb.join("data/blob"), vec![1u8; 3 << 20]).unwrap());

    let usage = ok(&w.run(&["usage", "--json"]));
    let volumes = usage["volumes"].as_array().unwrap();
    let by_kind = |k: &str| -> Vec<&Value> { volumes.iter().filter(|v| v["kind"] == k).collect() };
    let persistent = by_kind("persistent");
    assert_eq!(persistent.len(), 1, "{usage}");
    let p = persistent[0];
    assert_eq!(p["persistence_id"], "pv-e2e");
    assert_eq!(p["role"], "db");
    assert_eq!(p["enforcement"], "du");
    assert_eq!(p["limit_bytes"], 64u64 << 20);
    assert!(p["used_bytes"].as_u64().unwrap() >= 3 << 20, "{p}");
    assert!(p["used_inodes"].as_u64().unwrap() >= 2, "{p}");
    // cfgd-csi advertises GET_VOLUME_STATS: its NodeGetVolumeStats figures.
    let csi = by_kind("csi");
    assert_eq!(csi.len(), 1, "{usage}");
    assert_eq!(csi[0]["volume_id"], "vol-module");
    assert_eq!(csi[0]["enforcement"], "csi", "{usage}");
    assert!(csi[0]["used_bytes"].as_u64().is_some(), "{usage}");
    assert!(csi[0].get("error").is_none(), "{usage}");
    // The Docker volume (easyfuse's FUSE mount): statvfs of its mount point.
    let docker = by_kind("docker");
    assert_eq!(docker.len(), 1, "{usage}");
    assert_eq!(docker[0]["enforcement"], "statvfs");
    assert!(docker[0]["limit_bytes"].as_u64().is_some(), "{usage}");

    // The service: the same figures by gRPC, and as gauges at /metrics.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sock = w.root.join("isolator.sock");
    let mut args = w.global.clone();
    args.extend([
        "serve".to_owned(),
        format!("--listen=unix:{}", sock.display()),
        format!("--metrics={port}"),
        "--usage-interval=1".to_owned(),
    ]);
    let mut cmd = Command::new(BIN);
    cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
    let mut ns_children = Vec::new();
    let child = w.ns.run(move || cmd.spawn().unwrap());
    ns_children.push(child);
    wait_for(&sock);
    let s2 = sock.clone();
    let grpc = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use berth_proto::berth::v1 as pb;
            let channel = berth_testkit::unix_channel(s2.clone()).await;
            pb::isolator_client::IsolatorClient::new(channel)
                .usage(pb::UsageRequest {})
                .await
                .unwrap()
                .into_inner()
        });
    assert_eq!(grpc.volumes.len(), volumes.len(), "{grpc:?}");
    let pv = grpc
        .volumes
        .iter()
        .find(|v| v.persistence_id == "pv-e2e")
        .unwrap();
    assert_eq!(pv.limit_bytes, Some(64 << 20));
    assert!(pv.used_bytes.unwrap() >= 3 << 20);
    assert_eq!(pv.enforcement, "du");
    let mut text = String::new();
    for _ in 0..100 {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        std::io::Write::write_all(&mut conn, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        text.clear();
        std::io::Read::read_to_string(&mut conn, &mut text).unwrap();
        if text.contains("berth_volume_used_bytes{kind=\"persistent\",id=\"pv-e2e\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        text.contains("berth_volume_limit_bytes{kind=\"persistent\",id=\"pv-e2e\",enforcement=\"du\"} 67108864"),
        "{text}"
    );
    assert!(
        text.contains("berth_volume_used_bytes{kind=\"docker\""),
        "{text}"
    );
    for mut c in ns_children {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(c.id()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(c.wait().unwrap().success());
    }
    let _ = ok(&w.run(&["cleanup", "--container-id", "c1"]));
    w.assert_nothing_mounted();
}

/// Without project quotas (a tmpfs work dir) sizes fall back to `du` accounting: a volume
/// written past its size is reported through `Watch`, and with `--enforce-disk-limits` no new
/// container may use it until it is back under; `--disk-isolation project-quota` refuses to
/// create a volume there at all.
#[test]
fn without_project_quotas_a_volume_over_its_size_is_watched_and_refused() {
    if !privileged("without_project_quotas_a_volume_over_its_size_is_watched") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut ns = Ns::new();
    let work_dir = root.join("work");
    std::fs::create_dir_all(&work_dir).unwrap();
    let w2 = work_dir.clone();
    ns.run(move || {
        nix::mount::mount(
            Some("tmpfs"),
            &w2,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=64m"),
        )
        .unwrap();
    });
    let work = format!("--work-dir={}", work_dir.display());
    let resources = "--resources=disk(db):64".to_owned();
    let small = json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": 1},
        "reservations": [{"type": "STATIC", "role": "db"}],
        "disk": {"persistence": {"id": "small", "principal": "p"},
                 "volume": {"mode": "RW", "container_path": "data"}}
    });
    let op = root.join("create.json");
    std::fs::write(
        &op,
        json!({"type": "CREATE", "create": {"volumes": [small.clone()]}}).to_string(),
    )
    .unwrap();
    // project-quota is required and tmpfs has none: refused, nothing created.
    let refused = isolator(
        &ns,
        vec![
            work.clone(),
            resources.clone(),
            "--disk-isolation=project-quota".into(),
            "apply-operation".into(),
            "--operation".into(),
            op.display().to_string(),
        ],
    );
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not enforce project quotas"),
        "{refused:?}"
    );
    let _ = ok(&isolator(
        &ns,
        vec![
            work.clone(),
            resources.clone(),
            "apply-operation".into(),
            "--operation".into(),
            op.display().to_string(),
        ],
    ));

    let sock = root.join("isolator.sock");
    let mut cmd = Command::new(BIN);
    cmd.args([
        work.clone(),
        resources,
        "--enforce-disk-limits".into(),
        "serve".into(),
        format!("--listen=unix:{}", sock.display()),
        "--usage-interval=1".into(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let pid = ns.spawn(cmd);
    wait_for(&sock);
    let vol_dir = work_dir.join("volumes/roles/db/small");
    let sandbox = root.join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    let vol: berth_resources::proto::Resource =
        berth_resources::json::from_json_value(&small).unwrap();
    let (s2, v2, sb) = (sock.clone(), vol_dir.clone(), sandbox.clone());
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use berth_proto::berth::v1 as pb;
                let channel = berth_testkit::unix_channel(s2.clone()).await;
                let mut c = pb::isolator_client::IsolatorClient::new(channel);
                let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
                assert_eq!(st.disk_isolation, "auto (the work dir's filesystem: du)");
                let usage = c.usage(pb::UsageRequest {}).await.unwrap().into_inner();
                assert_eq!(usage.volumes.len(), 1, "{usage:?}");
                assert_eq!(
                    usage.volumes[0].enforcement, "du",
                    "tmpfs has no project quotas"
                );
                assert_eq!(usage.volumes[0].limit_bytes, Some(1 << 20));
                let mut watch = c.watch(pb::WatchRequest {}).await.unwrap().into_inner();
                // 2 MiB in a 1 MB volume: nothing stops the write, the next measurement
                // raises the limitation.
                std::fs::write(v2.join("too-much"), vec![7u8; 2 << 20]).unwrap();
                let l = tokio::time::timeout(Duration::from_secs(20), watch.message())
                    .await
                    .expect("a limitation within 20 s")
                    .unwrap()
                    .expect("the stream is open");
                assert_eq!(l.persistence_id, "small");
                assert_eq!(l.enforcement, "du");
                assert_eq!(l.limit_bytes, 1 << 20);
                assert!(l.used_bytes >= 2 << 20, "{l:?}");
                assert!(l.message.contains("over its size"), "{l:?}");
                let req = || pb::PrepareRequest {
                    container_id: "c-over".into(),
                    sandbox: sb.display().to_string(),
                    resources: vec![vol.clone()],
                    ..Default::default()
                };
                let e = c.prepare(req()).await.unwrap_err();
                assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
                assert!(e.message().contains("--enforce-disk-limits"), "{e:?}");
                assert!(!sb.join("data").exists(), "nothing was prepared");
                // Back under its size: after the next measurement, prepare goes through.
                std::fs::remove_file(v2.join("too-much")).unwrap();
                let mut prepared = None;
                for _ in 0..40 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if let Ok(r) = c.prepare(req()).await {
                        prepared = Some(r.into_inner());
                        break;
                    }
                }
                assert_eq!(
                    prepared.expect("prepare once under the size").mounts.len(),
                    1
                );
                c.cleanup(pb::CleanupRequest {
                    container_id: "c-over".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            });
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut child = ns.children.pop().unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn sigkill_at_random_moments_then_recover_leaks_nothing() {
    if !privileged("sigkill_at_random_moments") {
        return;
    }
    let Some((cfgd, easyfuse)) = peers("sigkill_at_random_moments") else {
        return;
    };
    let w = World::start(&cfgd, &easyfuse);
    w.create_volume();
    let vol = w.root.join("work/volumes/roles/db/pv-e2e");
    std::fs::write(vol.join("keep"), b"data before the crashes").unwrap();
    let mut interrupted = 0;
    let rounds = 16u64;
    for round in 0..rounds {
        let id = format!("k{round}");
        let (_sandbox, cfg) = w.container(&id);
        let mut args = w.global.clone();
        let step = if round % 2 == 0 { "prepare" } else { "cleanup" };
        if step == "cleanup" {
            let _ = ok(&w.run(&["prepare", "--container-id", &id, "--config", &cfg]));
            args.extend(["cleanup".into(), "--container-id".into(), id.clone()]);
        } else {
            args.extend([
                "prepare".into(),
                "--container-id".into(),
                id.clone(),
                "--config".into(),
                cfg.clone(),
            ]);
        }
        // Spread over 0-80 ms: a prepare or cleanup of the three volumes takes about 40-60
        // ms here (start-up, intents, plugin calls, mounts), so kills land before, during
        // and after the work.
        let delay = Duration::from_micros(fastrand_like(round) * 80);
        let killed = w.ns.run(move || {
            let mut child = Command::new(BIN)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            );
            child.wait().unwrap()
        });
        if killed.code().is_none() {
            interrupted += 1;
        }
        // The container is gone (never started or stopped): recover with nothing live.
        let report = ok(&w.run(&["recover"]));
        assert_eq!(
            report["errors"],
            json!([]),
            "round {round} ({step}, {killed}): {report}"
        );
        w.assert_nothing_mounted();
        assert_eq!(
            berth_testkit::status_parts(&ok(&w.run(&["status", "--json"]))),
            json!({"containers": [], "leftovers": []}),
            "round {round}"
        );
        let csi_dir = w
            .root
            .join("work/csi/io.cfgd.csi/default/volumes/vol-module");
        assert!(
            !csi_dir.exists(),
            "round {round} ({step}, {killed}): CSI record left: {:?} {}",
            std::fs::read_dir(&csi_dir)
                .map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>()),
            std::fs::read_to_string(csi_dir.join("volume.state")).unwrap_or_default()
        );
        assert_eq!(
            std::fs::read(vol.join("keep")).unwrap(),
            b"data before the crashes",
            "round {round}"
        );
    }
    eprintln!("{interrupted} of {rounds} runs were killed before they finished");
    assert!(interrupted >= 1, "no run was really interrupted");
}

/// A deterministic spread of delays (no RNG dependency needed here).
fn fastrand_like(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) % 1_000
}

#[test]
fn demo_runs_and_checks_every_step() {
    if !privileged("demo_runs_and_checks_every_step") {
        return;
    }
    let out = Command::new(BIN).arg("demo").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "2. CREATE",
        "the data survived",
        "is refused",
        "8. DESTROY",
        "9. nothing is left mounted",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let work = format!("--work-dir={}", dir.path().join("w").display());
    let out = Command::new(BIN)
        .args([
            &work,
            "prepare",
            "--container-id",
            "c",
            "--config",
            "/nonexistent.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent.json"),
        "{out:?}"
    );
    let cfg = dir.path().join("c.json");
    std::fs::write(
        &cfg,
        json!({"container_id": "other", "sandbox": "/tmp"}).to_string(),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            &work,
            "prepare",
            "--container-id",
            "c",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("differs from --container-id"),
        "{out:?}"
    );
    let out = Command::new(BIN)
        .args([&work, "serve", "--listen", "tcp:1.2.3.4:5"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unix:/absolute/path.sock"),
        "{out:?}"
    );
    // A second process on the same work dir while one holds it.
    let out = Command::new(BIN).args([&work, "status"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn grpc_service_prepares_reports_and_serves_metrics() {
    if !privileged("grpc_service_prepares_reports_and_serves_metrics") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut ns = Ns::new();
    let work = format!("--work-dir={}", root.join("work").display());
    let resources = "--resources=disk(db):256".to_owned();
    let op = root.join("create.json");
    std::fs::write(
        &op,
        json!({"type": "CREATE", "create": {"volumes": [volume()]}}).to_string(),
    )
    .unwrap();
    let _ = ok(&isolator(
        &ns,
        vec![
            work.clone(),
            resources.clone(),
            "apply-operation".into(),
            "--operation".into(),
            op.display().to_string(),
        ],
    ));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sock = root.join("isolator.sock");
    let mut cmd = Command::new(BIN);
    cmd.args([
        work.clone(),
        resources,
        "serve".into(),
        format!("--listen=unix:{}", sock.display()),
        format!("--metrics=127.0.0.1:{port}"),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let pid = ns.spawn(cmd);
    wait_for(&sock);
    // The server holds the work dir: one-shot commands are refused, not interleaved.
    let busy = isolator(
        &ns,
        vec![work.clone(), "--lock-wait=0".into(), "status".into()],
    );
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use by another berth-isolator"),
        "{busy:?}"
    );

    let sandbox = root.join("sandbox");
    std::fs::create_dir_all(&sandbox).unwrap();
    let (sb, s2) = (sandbox.clone(), sock.clone());
    let status = ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use berth_proto::berth::v1 as pb;
                let path = s2.clone();
                let channel = berth_testkit::unix_channel(path.clone()).await;
                let mut c = pb::isolator_client::IsolatorClient::new(channel);
                let vol: berth_resources::proto::Resource =
                    berth_resources::json::from_json_value(&volume()).unwrap();
                let prepared = c
                    .prepare(pb::PrepareRequest {
                        container_id: "g1".into(),
                        sandbox: sb.display().to_string(),
                        resources: vec![vol],
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(prepared.mounts.len(), 1);
                assert!(
                    berth_mount::MountTable::read_current()
                        .unwrap()
                        .is_mount_point(&sb.join("data"))
                );
                let again = c
                    .prepare(pb::PrepareRequest {
                        container_id: "g1".into(),
                        sandbox: sb.display().to_string(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert_eq!(again.code(), tonic::Code::AlreadyExists);
                let bad = c
                    .prepare(pb::PrepareRequest {
                        container_id: "../x".into(),
                        sandbox: sb.display().to_string(),
                        ..Default::default()
                    })
                    .await
                    .unwrap_err();
                assert_eq!(bad.code(), tonic::Code::InvalidArgument);
                let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
                let res = c
                    .get_resources(pb::GetResourcesRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(res.checkpointed.len(), 1);
                c.cleanup(pb::CleanupRequest {
                    container_id: "g1".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                assert!(
                    !berth_mount::MountTable::read_current()
                        .unwrap()
                        .is_mount_point(&sb.join("data"))
                );
                st
            })
    });
    assert_eq!(status.containers.len(), 1);
    assert_eq!(status.containers[0].state, "prepared");
    assert!(status.containers[0].volumes[0].mounted);

    // Metrics: Prometheus text.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut conn, &mut text).unwrap();
    assert!(
        text.contains("berth_isolator_operations_total{operation=\"prepare\",result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("berth_isolator_operations_total{operation=\"prepare\",result=\"failed\"} 1"),
        "{text}"
    );
    assert!(text.contains("berth_isolator_containers 0"), "{text}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut child = ns.children.pop().unwrap();
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    assert!(!sock.exists(), "socket removed on shutdown");
}

#[test]
fn the_readme_config_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```json\n{\n  \"container_id\": \"c1\"")
        .expect("example in README")
        + "```json\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let mut value: Value = serde_json::from_str(&readme[start..end]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    value["sandbox"] = json!(dir.path());
    let cfg = berth_agent::container::ContainerConfig::from_json(&value.to_string()).unwrap();
    assert_eq!(cfg.resources.len(), 1);
    assert_eq!(cfg.volumes.len(), 4);
    assert_eq!(cfg.environment["DVDI_VOLUME_NAME"], "logs");
}

impl World {
    /// Runs the binary with the failpoint at `n`; `true` when it was killed there.
    fn run_killed_at(&self, n: usize, args: &[&str]) -> bool {
        let mut all = self.global.clone();
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let out = self.ns.run(move || {
            Command::new(BIN)
                .args(&all)
                .env("BERTH_ISOLATOR_KILL_AT", n.to_string())
                .output()
                .unwrap()
        });
        match out.status.code() {
            Some(0) => false,
            None => true,
            Some(c) => panic!(
                "exit {c} at point {n} of {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// After a crash and `recover`: nothing mounted, no container, no CSI or Docker consumer.
    fn assert_recovered(&self, what: &str) {
        self.assert_nothing_mounted();
        assert_eq!(
            berth_testkit::status_parts(&ok(&self.run(&["status", "--json"]))),
            json!({"containers": [], "leftovers": []}),
            "{what}"
        );
        let csi = self.root.join("work/csi/io.cfgd.csi/default/volumes");
        let left: Vec<_> = std::fs::read_dir(&csi)
            .map(|d| d.collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{what}: CSI records left: {left:?}");
        let dvdi = self.root.join("work/dvdi");
        let records: Vec<_> = walk_files(&dvdi)
            .into_iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            records.is_empty(),
            "{what}: Docker volume records left: {records:?}"
        );
    }

    fn checkpointed(&self) -> usize {
        ok(&self.run(&["resources"]))["checkpointed"]
            .as_array()
            .unwrap()
            .len()
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn sigkill_at_every_write_ahead_point_then_recover() {
    if !privileged("sigkill_at_every_write_ahead_point") {
        return;
    }
    let Some((cfgd, easyfuse)) = peers("sigkill_at_every_write_ahead_point") else {
        return;
    };
    let w = World::start(&cfgd, &easyfuse);
    let vol = w.root.join("work/volumes/roles/db/pv-e2e");
    let create = w.write(
        "create.json",
        &json!({"type": "CREATE", "create": {"volumes": [volume()]}}),
    );
    let destroy = w.write(
        "destroy.json",
        &json!({"type": "DESTROY", "destroy": {"volumes": [volume()]}}),
    );

    // CREATE killed at each point: afterwards (the next open finishes an interrupted change)
    // the directory exists exactly when the volume is checkpointed.
    let mut points = 0;
    for n in 1.. {
        let killed = w.run_killed_at(n, &["apply-operation", "--operation", &create]);
        let checkpointed = w.checkpointed();
        assert_eq!(vol.is_dir(), checkpointed == 1, "CREATE killed at {n}");
        if checkpointed == 1 {
            let _ = ok(&w.run(&["apply-operation", "--operation", &destroy]));
        }
        if !killed {
            points = n - 1;
            break;
        }
    }
    assert!(points >= 2, "CREATE passes {points} points");

    // DESTROY killed at each point: the data is there exactly while the volume is checkpointed.
    for n in 1.. {
        let _ = ok(&w.run(&["apply-operation", "--operation", &create]));
        std::fs::write(vol.join("keep"), b"kept").unwrap();
        let killed = w.run_killed_at(n, &["apply-operation", "--operation", &destroy]);
        let checkpointed = w.checkpointed();
        assert_eq!(vol.is_dir(), checkpointed == 1, "DESTROY killed at {n}");
        if checkpointed == 1 {
            assert_eq!(
                std::fs::read(vol.join("keep")).unwrap(),
                b"kept",
                "DESTROY killed at {n}"
            );
            let _ = ok(&w.run(&["apply-operation", "--operation", &destroy]));
        }
        if !killed {
            break;
        }
    }

    // Prepare and cleanup of the three kinds killed at each point, then recover; odd points
    // say the container still runs (a complete prepare is kept, anything else rolled back).
    let _ = ok(&w.run(&["apply-operation", "--operation", &create]));
    std::fs::write(vol.join("keep"), b"kept").unwrap();
    let mut prepare_points = 0;
    for n in 1.. {
        let id = format!("p{n}");
        let (_sandbox, cfg) = w.container(&id);
        let killed = w.run_killed_at(n, &["prepare", "--container-id", &id, "--config", &cfg]);
        if !killed {
            prepare_points = n - 1;
            let _ = ok(&w.run(&["cleanup", "--container-id", &id]));
            w.assert_recovered("after the last prepare");
            break;
        }
        let live = n % 2 == 1;
        let report = if live {
            ok(&w.run(&["recover", "--live", &id]))
        } else {
            ok(&w.run(&["recover"]))
        };
        if live {
            // A live container is never torn down by recovery; a cut-short prepare is
            // reported incomplete and its own cleanup (the containerizer's) finishes it.
            assert_eq!(report["kept"], json!([id.clone()]), "prepare killed at {n}");
            let complete = report["incomplete"] == json!([]);
            let status = ok(&w.run(&["status", "--json"]));
            let all_mounted = status["containers"][0]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["mounted"] == true);
            assert_eq!(
                complete, all_mounted,
                "prepare killed at {n}: {report} {status}"
            );
            let _ = ok(&w.run(&["cleanup", "--container-id", &id]));
        } else {
            assert_eq!(report["kept"], json!([]), "prepare killed at {n}");
        }
        w.assert_recovered(&format!("prepare killed at {n} (live {live})"));
        assert_eq!(std::fs::read(vol.join("keep")).unwrap(), b"kept");
    }
    assert!(
        prepare_points >= 8,
        "prepare passes {prepare_points} points"
    );

    let mut cleanup_points = 0;
    for n in 1.. {
        let id = format!("c{n}");
        let (_sandbox, cfg) = w.container(&id);
        let _ = ok(&w.run(&["prepare", "--container-id", &id, "--config", &cfg]));
        let killed = w.run_killed_at(n, &["cleanup", "--container-id", &id]);
        if !killed {
            cleanup_points = n - 1;
            w.assert_recovered("after the last cleanup");
            break;
        }
        let _ = ok(&w.run(&["recover"]));
        w.assert_recovered(&format!("cleanup killed at {n}"));
        assert_eq!(std::fs::read(vol.join("keep")).unwrap(), b"kept");
    }
    assert!(
        cleanup_points >= 8,
        "cleanup passes {cleanup_points} points"
    );
    eprintln!(
        "killed at every point: CREATE {points}, prepare {prepare_points}, cleanup {cleanup_points} (and DESTROY)"
    );
}

#[test]
fn checkpoint_resources_through_the_binary_creates_and_destroys_volume_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let work = format!("--work-dir={}", root.join("work").display());
    let run = |args: &[&str]| {
        let mut all = vec![work.clone(), "--resources=disk(db):256".to_owned()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        Command::new(BIN).args(&all).output().unwrap()
    };
    let with_volume = root.join("with.json");
    std::fs::write(&with_volume, json!([volume()]).to_string()).unwrap();
    let out = ok(&run(&[
        "checkpoint-resources",
        "--resources",
        with_volume.to_str().unwrap(),
    ]));
    assert_eq!(out["checkpointed"].as_array().unwrap().len(), 1, "{out}");
    let vol = root.join("work/volumes/roles/db/pv-e2e");
    assert!(vol.is_dir());
    let shown = ok(&run(&["resources"]));
    assert_eq!(shown["checkpointed"], out["checkpointed"]);
    // A set that does not fit the agent's resources is refused; nothing changes.
    let too_big = root.join("big.json");
    let mut big = volume();
    big["scalar"]["value"] = json!(100_000);
    std::fs::write(&too_big, json!([big]).to_string()).unwrap();
    let refused = run(&[
        "checkpoint-resources",
        "--resources",
        too_big.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(vol.is_dir());
    // The master's new set without the volume: its directory goes.
    let empty = root.join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let out = ok(&run(&[
        "checkpoint-resources",
        "--resources",
        empty.to_str().unwrap(),
    ]));
    assert_eq!(out["checkpointed"], json!([]));
    assert!(!vol.exists());
}
