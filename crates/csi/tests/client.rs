//! The CSI client against the fake plugin: endpoint forms, retries, deadlines, readiness,
//! caches across plugin restarts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use berth_csi::{ClientConfig, CsiClient, CsiError, NodeService, RetryPolicy};
use berth_proto::csi::v1 as pb;
use common::{FakePlugin, Fault};
use tonic::Code;

fn fast() -> ClientConfig {
    ClientConfig {
        call_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(40),
            overall: Duration::from_secs(2),
            full_jitter: true,
        },
    }
}

fn publish_req(target: &Path) -> pb::NodePublishVolumeRequest {
    pb::NodePublishVolumeRequest {
        volume_id: "v1".into(),
        target_path: target.to_string_lossy().into(),
        volume_capability: Some(pb::VolumeCapability::default()),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_endpoint_form_connects_with_authority_localhost() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let _p = FakePlugin::start(&sock).await;
    let s = sock.display().to_string();
    for ep in [format!("unix://{s}"), format!("unix:{s}"), s.clone()] {
        let c = CsiClient::new("fake", &ep, fast()).unwrap();
        assert_eq!(c.plugin_info().await.unwrap().name, "fake.csi.berth");
        assert_eq!(c.node_get_info().await.unwrap().node_id, "node-1");
    }
}

#[tokio::test]
async fn unavailable_then_ok_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    p.st().stage_unstage = false;
    for code in [
        Code::Unavailable,
        Code::Aborted,
        Code::ResourceExhausted,
        Code::DeadlineExceeded,
    ] {
        p.st().fail_next("NodePublishVolume", code, 2);
        let c = CsiClient::new("fake", sock.to_str().unwrap(), fast()).unwrap();
        let before = p.st().count("NodePublishVolume");
        c.publish(publish_req(&dir.path().join("t"))).await.unwrap();
        assert_eq!(p.st().count("NodePublishVolume") - before, 3, "{code:?}");
    }
}

#[tokio::test]
async fn non_retryable_codes_fail_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    let c = CsiClient::new("fake", sock.to_str().unwrap(), fast()).unwrap();
    for code in [
        Code::InvalidArgument,
        Code::Unimplemented,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::PermissionDenied,
        Code::NotFound,
        Code::Internal,
    ] {
        p.st().fail_next("NodePublishVolume", code, 1);
        let before = p.st().count("NodePublishVolume");
        let err = c
            .publish(publish_req(&dir.path().join("t")))
            .await
            .unwrap_err();
        match &err {
            CsiError::Rpc {
                plugin,
                step,
                volume_id,
                code: got,
                attempts,
                ..
            } => {
                assert_eq!(
                    (plugin.as_str(), *step, volume_id.as_deref()),
                    ("fake", "NodePublishVolume", Some("v1"))
                );
                assert_eq!((*got, *attempts), (code, 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.st().count("NodePublishVolume") - before, 1);
        let text = err.to_string();
        assert!(
            text.contains("fake") && text.contains("NodePublishVolume") && text.contains("v1"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn not_found_on_unpublish_and_unstage_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    let c = CsiClient::new("fake", sock.to_str().unwrap(), fast()).unwrap();
    p.st().fail_next("NodeUnpublishVolume", Code::NotFound, 1);
    c.unpublish("v1", &dir.path().join("t")).await.unwrap();
    p.st().fail_next("NodeUnstageVolume", Code::NotFound, 1);
    c.unstage("v1", &dir.path().join("s")).await.unwrap();
    p.st().fail_next("NodeStageVolume", Code::NotFound, 1);
    let err = c
        .stage(pb::NodeStageVolumeRequest {
            volume_id: "v1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
}

#[tokio::test]
async fn hung_plugin_times_out_under_the_overall_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    for _ in 0..20 {
        p.st()
            .faults
            .push_back(("NodeUnpublishVolume", Fault::Hang(Duration::from_secs(30))));
    }
    let mut cfg = fast();
    cfg.retry.overall = Duration::from_millis(800);
    let c = CsiClient::new("fake", sock.to_str().unwrap(), cfg).unwrap();
    let t0 = Instant::now();
    let err = c.unpublish("v1", &dir.path().join("t")).await.unwrap_err();
    // Far below the 30 s hang: the overall deadline (0.8 s) ended the retries.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    match err {
        CsiError::Timeout { step, attempts, .. } => {
            assert_eq!(step, "NodeUnpublishVolume");
            assert!(attempts >= 2, "{attempts}");
        }
        other => panic!("{other:?}"),
    }
    // One hang then OK: the retry succeeds.
    p.st().faults.clear();
    p.st()
        .faults
        .push_back(("NodeUnpublishVolume", Fault::Hang(Duration::from_secs(30))));
    c.unpublish("v1", &dir.path().join("t")).await.unwrap();
}

#[tokio::test]
async fn persistent_unavailable_stops_at_the_overall_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    p.st().fail_next("*", Code::Unavailable, 10_000);
    let mut cfg = fast();
    cfg.retry.overall = Duration::from_millis(300);
    let c = CsiClient::new("fake", sock.to_str().unwrap(), cfg).unwrap();
    let t0 = Instant::now();
    let err = c.unpublish("v1", &dir.path().join("t")).await.unwrap_err();
    // 10 000 failures with 5–40 ms jittered backoff would take minutes: the 0.3 s overall
    // deadline ended the retries.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The last attempt either failed UNAVAILABLE or was cut short by the overall deadline.
    assert!(
        err.code() == Some(Code::Unavailable) || matches!(err, CsiError::Timeout { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn probe_loop_waits_for_ready_and_for_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let c = CsiClient::new("fake", sock.to_str().unwrap(), fast()).unwrap();
    // Nothing listening yet: not ready within a short deadline.
    assert!(matches!(
        c.wait_ready(Duration::from_millis(100)).await,
        Err(CsiError::NotReady { .. })
    ));
    let p = FakePlugin::start(&sock).await;
    p.st().not_ready_probes = 3;
    c.wait_ready(Duration::from_secs(5)).await.unwrap();
    assert_eq!(p.st().count("Probe"), 4);
    p.st().not_ready_probes = 1000;
    let before = p.st().count("Probe");
    let err = c.wait_ready(Duration::from_secs(1)).await.unwrap_err();
    // Not ready until the deadline (the last probe may be cut short by it), after several
    // answered probes said ready=false.
    assert!(matches!(err, CsiError::NotReady { .. }), "{err}");
    assert!(p.st().count("Probe") > before + 1, "the loop kept probing");
}

#[tokio::test]
async fn caches_are_refreshed_when_the_plugin_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let mut p = FakePlugin::start(&sock).await;
    let c = CsiClient::new("fake", sock.to_str().unwrap(), fast()).unwrap();
    assert_eq!(c.plugin_info().await.unwrap().vendor_version, "1.0.0");
    assert!(c.node_capabilities().await.unwrap().stage_unstage);
    assert_eq!(c.plugin_info().await.unwrap().vendor_version, "1.0.0");
    c.node_capabilities().await.unwrap();
    assert_eq!(p.st().count("GetPluginInfo"), 1);
    assert_eq!(p.st().count("NodeGetCapabilities"), 1);
    p.st().vendor_version = "2.0.0".into();
    p.st().stage_unstage = false;
    p.restart().await;
    assert_eq!(c.plugin_info().await.unwrap().vendor_version, "2.0.0");
    assert!(!c.node_capabilities().await.unwrap().stage_unstage);
    assert_eq!(p.st().count("GetPluginInfo"), 2);
}

#[tokio::test]
async fn secret_values_never_reach_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    p.st().echo_secrets_in_error = true;
    p.st()
        .fail_next("NodeStageVolume", Code::Unauthenticated, 1);
    let c = CsiClient::new("fake", sock.to_str().unwrap(), fast()).unwrap();
    let mut req = pb::NodeStageVolumeRequest {
        volume_id: "v1".into(),
        ..Default::default()
    };
    req.secrets.insert("password".into(), "s3cr3t-VALUE".into());
    assert!(!format!("{req:?}").contains("s3cr3t-VALUE"));
    let err = c.stage(req).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("s3cr3t-VALUE"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
}

#[tokio::test]
async fn volume_stats_are_decoded_with_the_condition() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("p.sock");
    let p = FakePlugin::start(&sock).await;
    p.state.lock().unwrap().stage_unstage = false;
    let c = CsiClient::new("fake", &sock.display().to_string(), fast()).unwrap();
    // Without the capability: advertised as absent, and the call fails at once.
    let caps = c.node_capabilities().await.unwrap();
    assert!(!caps.get_volume_stats && !caps.volume_condition);
    let target = dir.path().join("target");
    c.publish(publish_req(&target)).await.unwrap();
    let e = c.node_volume_stats("v1", &target, None).await.unwrap_err();
    assert!(
        matches!(
            e,
            CsiError::Rpc {
                code: Code::Unimplemented,
                ..
            }
        ),
        "{e}"
    );

    use pb::volume_usage::Unit;
    p.state.lock().unwrap().volume_stats = Some(pb::NodeGetVolumeStatsResponse {
        usage: vec![
            pb::VolumeUsage {
                available: 700,
                total: 1000,
                used: 300,
                unit: Unit::Bytes as i32,
            },
            pb::VolumeUsage {
                available: 90,
                total: 100,
                used: -1,
                unit: Unit::Inodes as i32,
            },
        ],
        volume_condition: Some(pb::VolumeCondition {
            abnormal: true,
            message: "disk degraded".into(),
        }),
    });
    // A fresh client: capabilities are cached per plugin run.
    let c = CsiClient::new("fake", &sock.display().to_string(), fast()).unwrap();
    let caps = c.node_capabilities().await.unwrap();
    assert!(caps.get_volume_stats && caps.volume_condition);
    let stats = c
        .node_volume_stats("v1", &target, Some(&dir.path().join("staging")))
        .await
        .unwrap();
    let bytes = stats.bytes.unwrap();
    assert_eq!(
        (bytes.total, bytes.used, bytes.available),
        (Some(1000), Some(300), Some(700))
    );
    let inodes = stats.inodes.unwrap();
    assert_eq!(inodes.used, None, "a negative figure is no figure");
    assert_eq!(inodes.total, Some(100));
    let cond = stats.condition.unwrap();
    assert!(cond.abnormal);
    assert_eq!(cond.message, "disk degraded");
    let last = p.state.lock().unwrap().calls.last().cloned().unwrap();
    assert_eq!(last.method, "NodeGetVolumeStats");
    assert_eq!(last.path, target.display().to_string());
    assert!(last.staging.ends_with("staging"));
    // A path the volume is not published at: the plugin's NOT_FOUND, not a retry loop.
    let e = c
        .node_volume_stats("v1", &dir.path().join("elsewhere"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            CsiError::Rpc {
                code: Code::NotFound,
                ..
            }
        ),
        "{e}"
    );
}
