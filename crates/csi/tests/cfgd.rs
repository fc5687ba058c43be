//! The real-peer tier: cfgd-csi 0.8.0 (crates.io), a real CSI node plugin, installed by
//! `scripts/install-peers.sh`. Runs whenever the binary is installed (as root); a missing
//! binary is a printed skip, except with `BERTH_REQUIRE_PEERS=1` (CI after the install), where
//! it fails. Everything happens in a private mount namespace: the plugin's cache on its own
//! tmpfs (research `peers-and-csi.md` §6.1), the plugin process, its mounts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_csi::record::Mode;
use berth_csi::{CsiPlugins, PluginsConfig};
use berth_resources::proto::volume::source::CsiVolume;
use common::{in_ns, mounts_below, privileged};

fn cfgd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("BERTH_CFGD_CSI").map_or_else(
        || {
            let root = std::env::var_os("BERTH_PEERS_DIR")
                .map_or_else(|| PathBuf::from("/opt/berth-peers"), PathBuf::from);
            root.join("cfgd-csi/bin/cfgd-csi")
        },
        PathBuf::from,
    );
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("BERTH_REQUIRE_PEERS").as_deref() != Ok("1"),
        "BERTH_REQUIRE_PEERS=1 but cfgd-csi is not installed at {} (run scripts/install-peers.sh)",
        path.display()
    );
    eprintln!(
        "SKIPPED cfgd-csi tier: {} not installed (scripts/install-peers.sh)",
        path.display()
    );
    None
}

fn module_volume(id: &str) -> CsiVolume {
    let v: berth_resources::proto::Volume =
        berth_resources::json::from_json_value(&serde_json::json!({
            "mode": "RO",
            "container_path": "/opt/module",
            "source": {
                "type": "CSI_VOLUME",
                "csi_volume": {
                    "plugin_name": "io.cfgd.csi",
                    "static_provisioning": {
                        "volume_id": id,
                        "volume_capability": {
                            "mount": {},
                            "access_mode": {"mode": "MULTI_NODE_READER_ONLY"}
                        },
                        "volume_context": {"module": "nettools", "version": "1.0.0"}
                    }
                }
            }
        }))
        .unwrap();
    v.source.unwrap().csi_volume.unwrap()
}

fn seed_cache(cache: &Path) {
    std::fs::create_dir_all(cache).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        cache,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=16m"),
    )
    .unwrap();
    let module = cache.join("nettools/1.0.0");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::write(module.join("README"), b"hello from module\n").unwrap();
    std::fs::write(module.join(".cfgd-complete"), b"").unwrap();
}

#[test]
fn cfgd_csi_publishes_a_real_read_only_volume_and_leaves_nothing_mounted() {
    let Some(bin) = cfgd_binary() else {
        return;
    };
    if !privileged("cfgd_csi tier") {
        return;
    }
    in_ns(|| async move {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let cache = root.join("cache");
        seed_cache(&cache);
        let sock = root.join("csi/cfgd.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        // cfgd-csi takes a bare socket path in CSI_ENDPOINT (§4.1); fixed argv, no shell.
        let mut plugin = tokio::process::Command::new(&bin)
            .env("CSI_ENDPOINT", &sock)
            .env("CACHE_DIR", &cache)
            .env("METRICS_PORT", "0")
            .env("CFGD_CSI_ALLOWED_REGISTRIES", "registry.invalid")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();

        let conf = root.join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("cfgd.json"),
            serde_json::json!({
                "type": "io.cfgd.csi",
                "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": format!("unix://{}", sock.display())}],
            })
            .to_string(),
        )
        .unwrap();
        let work = root.join("work");
        let mut cfg = PluginsConfig::new(&work, &conf);
        cfg.ready_timeout = Duration::from_secs(60);
        let plugins = CsiPlugins::start(cfg).await.unwrap();
        let status = plugins.status().await;
        assert!(status[0].started, "{status:?}");
        let p = plugins.plugin("io.cfgd.csi").await.unwrap();
        let info = p.manager().node().plugin_info().await.unwrap();
        assert_eq!(info.name, "csi.cfgd.io");
        assert!(
            p.manager()
                .node()
                .node_capabilities()
                .await
                .unwrap()
                .stage_unstage
        );

        // Two read-only consumers: one stage, one publish, one mount.
        let vol = module_volume("vol-cfgd-1");
        let t1 = plugins.publish(&vol, "ctr-1", Mode::Ro).await.unwrap();
        let t2 = plugins.publish(&vol, "ctr-2", Mode::Ro).await.unwrap();
        assert_eq!(t1, t2);
        assert_eq!(
            std::fs::read(t1.join("README")).unwrap(),
            b"hello from module\n"
        );
        let table = berth_mount::MountTable::read_current().unwrap();
        let m = table.top_mount_at(&t1).expect("target is a mount point");
        assert!(m.is_read_only(), "cfgd-csi publishes read-only");
        drop(table);
        assert_eq!(mounts_below(&work).len(), 1, "{:?}", mounts_below(&work));
        let err = std::fs::write(t1.join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
        let rec = p.manager().load("vol-cfgd-1").unwrap().unwrap();
        assert_eq!(rec.mesos_state(), "PUBLISHED");
        assert_eq!(rec.consumers.len(), 2);

        // Cleanup: nothing mounted under berth's work dir, no record, no directories.
        plugins
            .unpublish("io.cfgd.csi", "vol-cfgd-1", "ctr-1")
            .await
            .unwrap();
        assert_eq!(mounts_below(&work).len(), 1, "still used by ctr-2");
        plugins
            .unpublish("io.cfgd.csi", "vol-cfgd-1", "ctr-2")
            .await
            .unwrap();
        assert_eq!(mounts_below(&work), Vec::<PathBuf>::new());
        assert!(p.manager().load("vol-cfgd-1").unwrap().is_none());
        assert!(!p.manager().mount_dir("vol-cfgd-1").unwrap().exists());
        // The module in the plugin's cache is untouched.
        assert!(cache.join("nettools/1.0.0/README").exists());

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(plugin.id().unwrap()).unwrap()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = tokio::time::timeout(Duration::from_secs(30), plugin.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(out.success(), "cfgd-csi exit: {out:?}");
    });
}
