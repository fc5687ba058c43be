//! The per-agent registry: configuration directory → started plugins → volume managers.
//! Unmanaged plugins added at runtime, unknown and failing plugins, the background retry
//! queue, and a managed plugin (this test binary re-executed as a fake plugin doing real
//! mounts) that crashes in the middle of `NodePublishVolume`: the supervisor restarts it, the
//! client retries, and exactly one mount results.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_csi::record::Mode;
use berth_csi::supervisor::SupervisorOptions;
use berth_csi::{ClientConfig, CsiError, CsiPlugins, PluginsConfig, RetryPolicy};
use berth_resources::proto::volume::source::CsiVolume;
use common::{FakePlugin, Fault, in_ns, mounts_below, privileged};
use tonic::Code;

fn fast_client() -> ClientConfig {
    ClientConfig {
        call_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            overall: Duration::from_secs(20),
            full_jitter: true,
        },
    }
}

fn cfg(root: &Path) -> PluginsConfig {
    let mut c = PluginsConfig::new(root.join("work"), root.join("conf"));
    c.client = fast_client();
    c.ready_timeout = Duration::from_secs(10);
    c.boot_id = Some("b1".into());
    c.supervisor = SupervisorOptions {
        ready_timeout: Duration::from_secs(10),
        ready_poll: Duration::from_millis(10),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        reset_after: Duration::from_secs(60),
        stop_grace: Duration::from_secs(5),
    };
    c
}

fn write_unmanaged(conf: &Path, file: &str, plugin_type: &str, socket: &Path) {
    std::fs::create_dir_all(conf).unwrap();
    let json = serde_json::json!({
        "type": plugin_type,
        "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": format!("unix://{}", socket.display())}],
    });
    std::fs::write(conf.join(file), json.to_string()).unwrap();
}

fn volume(plugin: &str, id: &str) -> CsiVolume {
    let v: berth_resources::proto::Volume =
        berth_resources::json::from_json_value(&serde_json::json!({
            "mode": "RW",
            "container_path": "/data",
            "source": {
                "type": "CSI_VOLUME",
                "csi_volume": {
                    "plugin_name": plugin,
                    "static_provisioning": {
                        "volume_id": id,
                        "volume_capability": {
                            "mount": {},
                            "access_mode": {"mode": "SINGLE_NODE_WRITER"}
                        }
                    }
                }
            }
        }))
        .unwrap();
    v.source.unwrap().csi_volume.unwrap()
}

#[tokio::test]
async fn plugins_load_start_and_are_found_by_type_also_when_added_at_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let conf = root.join("conf");
    let a = FakePlugin::start(&root.join("a.sock")).await;
    write_unmanaged(&conf, "a.json", "org.example.a", &a.socket);
    std::fs::write(conf.join("broken.json"), b"{ not json").unwrap();

    let plugins = CsiPlugins::start(cfg(root)).await.unwrap();
    assert_eq!(
        plugins.config_errors().len(),
        1,
        "{:?}",
        plugins.config_errors()
    );
    assert!(plugins.config_errors()[0].contains("broken.json"));
    let status = plugins.status().await;
    assert_eq!(status.len(), 1);
    assert!(status[0].started && !status[0].managed);

    let target = plugins
        .publish(&volume("org.example.a", "v1"), "c1", Mode::Rw)
        .await
        .unwrap();
    assert!(target.join("published-by-fake").exists());

    // A type nobody configured: a typed error naming it.
    let err = plugins
        .publish(&volume("org.example.none", "v1"), "c1", Mode::Rw)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CsiError::UnknownPlugin { plugin, .. } if plugin == "org.example.none"),
        "{err}"
    );

    // Added at runtime: the directory is read again on first use.
    let b = FakePlugin::start(&root.join("b.sock")).await;
    write_unmanaged(&conf, "b.json", "org.example.b", &b.socket);
    plugins
        .publish(&volume("org.example.b", "v2"), "c1", Mode::Rw)
        .await
        .unwrap();
    assert_eq!(b.st().count("NodePublishVolume"), 1);
    assert_eq!(plugins.started().await.len(), 2);

    plugins
        .unpublish("org.example.a", "v1", "c1")
        .await
        .unwrap();
    plugins
        .unpublish("org.example.b", "v2", "c1")
        .await
        .unwrap();
    assert!(a.st().published.is_empty() && b.st().published.is_empty());
}

#[tokio::test]
async fn a_plugin_that_fails_to_start_is_reported_and_retried_on_use() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let conf = root.join("conf");
    let sock = root.join("late.sock");
    write_unmanaged(&conf, "late.json", "org.example.late", &sock);
    let mut c = cfg(root);
    c.ready_timeout = Duration::from_millis(300);
    c.client.retry.overall = Duration::from_millis(300);
    let plugins = CsiPlugins::start(c).await.unwrap();
    let status = plugins.status().await;
    assert_eq!(status.len(), 1);
    assert!(!status[0].started);
    assert!(status[0].error.is_some());

    // The plugin comes up later: the next use starts it.
    let p = FakePlugin::start(&sock).await;
    plugins
        .publish(&volume("org.example.late", "v"), "c", Mode::Rw)
        .await
        .unwrap();
    assert!(plugins.status().await[0].started);
    plugins
        .unpublish("org.example.late", "v", "c")
        .await
        .unwrap();
    assert!(p.st().published.is_empty());
}

#[tokio::test]
async fn the_retry_loop_drains_failed_teardowns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let conf = root.join("conf");
    let p = FakePlugin::start(&root.join("p.sock")).await;
    write_unmanaged(&conf, "p.json", "org.example.p", &p.socket);
    let plugins = Arc::new(CsiPlugins::start(cfg(root)).await.unwrap());
    plugins
        .publish(&volume("org.example.p", "v"), "c", Mode::Rw)
        .await
        .unwrap();
    // INTERNAL is not retried by the client: the unpublish fails and stays queued.
    p.st().fail_next("NodeUnpublishVolume", Code::Internal, 2);
    plugins
        .unpublish("org.example.p", "v", "c")
        .await
        .unwrap_err();
    let m = plugins.plugin("org.example.p").await.unwrap();
    assert_eq!(
        m.manager().load("v").unwrap().unwrap().mesos_state(),
        "NODE_UNPUBLISH"
    );
    let handle = plugins.spawn_retry_loop(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while m.manager().load("v").unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retry loop never drained the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.abort();
    assert!(p.st().published.is_empty() && p.st().staged.is_empty());
    // Two failures, then the success.
    assert_eq!(p.st().count("NodeUnpublishVolume"), 3);
    // A settled record costs no RPC on a retry pass.
    plugins
        .publish(&volume("org.example.p", "w"), "c", Mode::Rw)
        .await
        .unwrap();
    let calls = p.st().calls.len();
    let writes = m.manager().record_writes();
    let reports = plugins.retry_pending().await;
    assert!(reports["org.example.p"].as_ref().unwrap().errors.is_empty());
    assert_eq!(p.st().calls.len(), calls);
    assert_eq!(m.manager().record_writes(), writes);
}

// ----- a managed plugin (this binary) that crashes mid-call -----

/// Does nothing in a normal run; serves as a real-mount fake plugin when re-executed with
/// `BERTH_FAKE_PLUGIN_VOLUMES` set. With `BERTH_FAKE_CRASH_MARKER` naming an existing file,
/// the first `NodePublishVolume` mounts, removes the marker and aborts the process before
/// answering.
#[test]
fn fake_plugin_process() {
    let Ok(volumes) = std::env::var("BERTH_FAKE_PLUGIN_VOLUMES") else {
        return;
    };
    let endpoint = std::env::var("CSI_ENDPOINT").unwrap();
    let socket = PathBuf::from(endpoint.strip_prefix("unix://").unwrap());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let state = Arc::new(std::sync::Mutex::new(common::FakeState {
                real_mounts: Some(PathBuf::from(volumes)),
                ..Default::default()
            }));
            if let Ok(marker) = std::env::var("BERTH_FAKE_CRASH_MARKER")
                && std::fs::remove_file(&marker).is_ok()
            {
                state
                    .lock()
                    .unwrap()
                    .faults
                    .push_back(("NodePublishVolume", Fault::Crash));
            }
            let _p = FakePlugin::start_with(&socket, state).await;
            std::future::pending::<()>().await;
        });
}

#[test]
fn managed_plugin_crashing_mid_publish_is_restarted_and_the_publish_completes_once() {
    if !privileged("managed_plugin_crashing_mid_publish") {
        return;
    }
    in_ns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let conf = root.join("conf");
        let volumes = root.join("volumes");
        std::fs::create_dir_all(&volumes).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        let marker = root.join("crash-once");
        std::fs::write(&marker, b"").unwrap();
        let exe = std::env::current_exe().unwrap();
        let json = serde_json::json!({
            "type": "org.example.managed",
            "containers": [{
                "services": ["NODE_SERVICE"],
                "command": {
                    "shell": false,
                    "value": exe.display().to_string(),
                    "arguments": ["plugins-test", "--exact", "fake_plugin_process", "--nocapture", "--test-threads=1"],
                    "environment": {"variables": [
                        {"name": "BERTH_FAKE_PLUGIN_VOLUMES", "value": volumes.display().to_string()},
                        {"name": "BERTH_FAKE_CRASH_MARKER", "value": marker.display().to_string()}
                    ]}
                }
            }]
        });
        std::fs::write(conf.join("managed.json"), json.to_string()).unwrap();
        let mut c = cfg(&root);
        c.socket_dir = Some(root.join("s"));
        let plugins = CsiPlugins::start(c).await.unwrap();
        let status = plugins.status().await;
        assert!(status[0].started && status[0].managed, "{status:?}");
        let first_pid = status[0].supervisor.as_ref().unwrap().pid.unwrap();

        let target = plugins
            .publish(&volume("org.example.managed", "v"), "c", Mode::Rw)
            .await
            .unwrap();
        assert!(!marker.exists(), "the plugin crashed once");
        let sup = plugins.status().await[0].supervisor.clone().unwrap();
        assert!(sup.restarts >= 1, "{sup:?}");
        assert_ne!(sup.pid, Some(first_pid));
        // The crashed call had mounted; the retried call found it mounted: one mount only.
        assert_eq!(mounts_below(&target).len(), 1);
        std::fs::write(target.join("f"), b"x").unwrap();

        plugins
            .unpublish("org.example.managed", "v", "c")
            .await
            .unwrap();
        assert_eq!(mounts_below(&root), Vec::<PathBuf>::new());
        let pid = plugins.status().await[0]
            .supervisor
            .as_ref()
            .unwrap()
            .pid
            .unwrap();
        plugins.shutdown().await;
        assert!(
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
                None
            )
            .is_err(),
            "plugin process {pid} still alive after shutdown"
        );
    });
}
