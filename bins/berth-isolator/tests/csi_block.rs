//! CSI raw block volumes and `NodeExpandVolume` through the `berth-isolator` binary, as root in
//! a private mount namespace, against `berth_testkit::csi::BlockPlugin` (a CSI node plugin
//! that publishes a loop device): the block capability is published to a file target, the
//! device node is bound as a file at the container path and written through it (the bytes
//! land on the loop device), `expand-volume` grows the device the container sees, refusals
//! are typed (a volume not published here, a plugin without `EXPAND_VOLUME`, a capacity of
//! 0; by gRPC `NOT_FOUND`, `FAILED_PRECONDITION`, `INVALID_ARGUMENT`), and cleanup leaves no mount and no target behind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use berth_mount::loopdev::{LoopDevice, device_size};
use berth_testkit::csi::BlockPlugin;
use berth_testkit::{Ns, privileged};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");
const MIB: u64 = 1 << 20;

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ns: Ns,
    global: Vec<String>,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["conf", "csi", "work"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let global = vec![
            format!("--work_dir={}", root.join("work").display()),
            format!("--csi_plugin_config_dir={}", root.join("conf").display()),
            "--resources=cpus:2;mem:512;disk:256".to_owned(),
        ];
        Self {
            _dir: dir,
            root,
            ns: Ns::new(),
            global,
        }
    }

    /// A plugin of type `plugin_type` on its own socket, with or without `EXPAND_VOLUME`.
    fn plugin(&self, plugin_type: &str, expand: bool) -> BlockPlugin {
        let sock = self.root.join(format!("csi/{plugin_type}.sock"));
        let p = BlockPlugin::start(&self.ns, &sock, expand);
        std::fs::write(
            self.root.join(format!("conf/{plugin_type}.json")),
            json!({"type": plugin_type, "endpoints": [{"csi_service": "NODE_SERVICE",
                "endpoint": format!("unix://{}", sock.display())}]})
            .to_string(),
        )
        .unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.global).args(args);
        self.ns.output(cmd)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A container with one block volume of `plugin_type` at `dev/data` in its sandbox.
    fn container(
        &self,
        id: &str,
        plugin_type: &str,
        device: &Path,
        mode: &str,
    ) -> (PathBuf, String) {
        let sandbox = self.root.join(format!("sandbox-{id}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        let cfg = json!({
            "container_id": id,
            "sandbox": sandbox,
            "volumes": [
                {"mode": mode, "container_path": "dev/data", "source": {"type": "CSI_VOLUME", "csi_volume": {
                    "plugin_name": plugin_type,
                    "static_provisioning": {"volume_id": "blk-1",
                        "volume_capability": {"block": {}, "access_mode": {"mode": "SINGLE_NODE_WRITER"}},
                        "volume_context": {"device": device}}}}}
            ]
        });
        let path = self.root.join(format!("{id}.json"));
        std::fs::write(&path, cfg.to_string()).unwrap();
        (sandbox, path.display().to_string())
    }

    fn mounts_below_root(&self) -> Vec<PathBuf> {
        self.ns.mounts_below(&self.root)
    }
}

#[test]
fn a_block_volume_is_a_device_file_in_the_container_and_expand_grows_it() {
    if !privileged("a_block_volume_is_a_device_file_in_the_container_and_expand_grows_it") {
        return;
    }
    let w = World::new();
    let backing = w.root.join("disk.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let lo =
        w.ns.run({
            let backing = backing.clone();
            move || LoopDevice::attach(&backing, false)
        })
        .unwrap();
    let device = lo.path().to_owned();
    let plugin = w.plugin("block.csi.berth", true);
    let plain = w.plugin("plain.csi.berth", false);

    // Not published yet: expand is refused, naming why.
    let e = w.refused(&[
        "expand-volume",
        "--plugin",
        "block.csi.berth",
        "--volume-id",
        "blk-1",
        "--required-bytes",
        &(32 * MIB).to_string(),
    ]);
    assert!(e.contains("not published on this node"), "{e}");

    let (sandbox, cfg) = w.container("c1", "block.csi.berth", &device, "RW");
    let mounts = w.ok(&["prepare", "--container-id", "c1", "--config", &cfg]);
    let in_container = sandbox.join("dev/data");
    assert_eq!(
        mounts["mounts"][0]["target"].as_str(),
        Some(in_container.to_str().unwrap()),
        "{mounts}"
    );
    let target = PathBuf::from(mounts["mounts"][0]["source"].as_str().unwrap());
    assert!(target.ends_with("target"), "{target:?}");
    assert!(
        w.mounts_below_root().contains(&in_container),
        "bound at the container path"
    );
    assert!(
        plugin
            .calls()
            .contains(&"NodePublishVolume blk-1".to_owned())
    );

    // A device node, written through the container path: the bytes are on the loop device.
    let (kind_ok, size, read_back) = w.ns.run({
        let in_container = in_container.clone();
        let device = device.clone();
        move || {
            let is_block = std::fs::metadata(&in_container)
                .unwrap()
                .file_type()
                .is_block_device();
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&in_container)
                .unwrap();
            f.seek(SeekFrom::Start(MIB)).unwrap();
            f.write_all(b"written through the container path").unwrap();
            f.sync_all().unwrap();
            let size = device_size(&f).unwrap();
            let mut d = std::fs::File::open(&device).unwrap();
            d.seek(SeekFrom::Start(MIB)).unwrap();
            let mut buf = vec![0u8; 34];
            d.read_exact(&mut buf).unwrap();
            (is_block, size, buf)
        }
    });
    assert!(kind_ok, "a block device at the container path");
    assert_eq!(size, 16 * MIB);
    assert_eq!(&read_back, b"written through the container path");

    // Typed refusals: a capacity of 0, a limit below the requirement, a plugin without
    // EXPAND_VOLUME, an unknown plugin.
    let e = w.refused(&[
        "expand-volume",
        "--plugin",
        "block.csi.berth",
        "--volume-id",
        "blk-1",
        "--required-bytes",
        "0",
    ]);
    assert!(e.contains("need 0 < required <= limit"), "{e}");
    let e = w.refused(&[
        "expand-volume",
        "--plugin",
        "block.csi.berth",
        "--volume-id",
        "blk-1",
        "--required-bytes",
        &(32 * MIB).to_string(),
        "--limit-bytes",
        &(8 * MIB).to_string(),
    ]);
    assert!(e.contains("need 0 < required <= limit"), "{e}");
    let e = w.refused(&[
        "expand-volume",
        "--plugin",
        "plain.csi.berth",
        "--volume-id",
        "blk-1",
        "--required-bytes",
        &(32 * MIB).to_string(),
    ]);
    assert!(e.contains("does not advertise EXPAND_VOLUME"), "{e}");
    assert!(
        plain.calls().is_empty(),
        "no NodeExpandVolume to a plugin without it: {:?}",
        plain.calls()
    );
    let e = w.refused(&[
        "expand-volume",
        "--plugin",
        "nobody.csi.berth",
        "--volume-id",
        "blk-1",
        "--required-bytes",
        "1",
    ]);
    assert!(e.contains("not configured"), "{e}");

    // Expand: the device the container sees grows, the data stays.
    let out = w.ok(&[
        "expand-volume",
        "--plugin",
        "block.csi.berth",
        "--volume-id",
        "blk-1",
        "--required-bytes",
        &(32 * MIB).to_string(),
    ]);
    assert_eq!(out["capacity_bytes"], 32 * MIB, "{out}");
    assert!(
        plugin
            .calls()
            .contains(&"NodeExpandVolume blk-1".to_owned())
    );
    let (size, kept) = w.ns.run({
        let in_container = in_container.clone();
        move || {
            let mut f = std::fs::File::open(&in_container).unwrap();
            let size = device_size(&f).unwrap();
            f.seek(SeekFrom::Start(MIB)).unwrap();
            let mut buf = vec![0u8; 34];
            f.read_exact(&mut buf).unwrap();
            (size, buf)
        }
    });
    assert_eq!(size, 32 * MIB, "the container sees the grown device");
    assert_eq!(&kept, b"written through the container path");

    // The same call by gRPC (the service holds the work dir meanwhile), with its codes.
    let sock = w.root.join("isolator.sock");
    let mut cmd = Command::new(BIN);
    cmd.args(&w.global)
        .args(["serve", &format!("--listen=unix:{}", sock.display())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut server = w.ns.run(move || cmd.spawn().unwrap());
    for _ in 0..600 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let codes = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use berth_proto::berth::v1 as pb;
            let channel = berth_testkit::unix_channel(sock).await;
            let mut c = pb::isolator_client::IsolatorClient::new(channel);
            let call = |plugin: &str, required_bytes: u64| pb::ExpandVolumeRequest {
                plugin: plugin.to_owned(),
                volume_id: "blk-1".to_owned(),
                required_bytes,
                limit_bytes: 0,
            };
            let grown = c
                .expand_volume(call("block.csi.berth", 48 * MIB))
                .await
                .unwrap()
                .into_inner()
                .capacity_bytes;
            let mut codes = vec![grown.to_string()];
            for (plugin, bytes) in [
                ("nobody.csi.berth", MIB),
                ("plain.csi.berth", 64 * MIB),
                ("block.csi.berth", 0),
            ] {
                let e = c.expand_volume(call(plugin, bytes)).await.unwrap_err();
                codes.push(format!("{:?}", e.code()));
            }
            codes
        });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.wait().unwrap().success());
    assert_eq!(
        codes,
        [
            (48 * MIB).to_string(),
            "NotFound".to_owned(),
            "FailedPrecondition".to_owned(),
            "InvalidArgument".to_owned()
        ]
    );

    // Cleanup: unpublished, the target file gone, nothing mounted.
    w.ok(&["cleanup", "--container-id", "c1"]);
    assert!(
        plugin
            .calls()
            .contains(&"NodeUnpublishVolume blk-1".to_owned())
    );
    assert!(!target.exists(), "the target file is removed");
    assert_eq!(w.mounts_below_root(), Vec::<PathBuf>::new());
    drop(plugin);
    drop(plain);
    w.ns.run(move || lo.detach()).unwrap();
}
