//! berth-csi against a no-op CSI node plugin (tonic server on a unix socket, in this process,
//! on the same current-thread runtime as the client, as the floor in
//! `docs/research/perf-anchors.md` was measured):
//!
//! - `csi/rpc/bare_tonic_unpublish`: the generated tonic client on a reused channel — the floor;
//! - `csi/rpc/berth_client_unpublish`: the same RPC through `CsiClient` (socket identity check,
//!   per-attempt deadline, retry loop, error mapping). Target: at most 1.5× the floor;
//! - `csi/rpc/new_connection_per_call`: a new connection for every call (kubelet's way), for
//!   comparison;
//! - `csi/manager/publish_unpublish`: one consumer published then unpublished through the
//!   volume manager (stage + publish + unpublish + unstage, fsync'd records). The number of
//!   fsync'd record writes per publish and per unpublish is printed (target: at most one per
//!   state transition).
//!
//! Run: `cargo bench -p berth-benches --bench csi`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_csi::config::{PluginConfig, PluginKind};
use berth_csi::manager::{ManagerConfig, VolumeManager, VolumeSpec};
use berth_csi::record::{Capability, Mode};
use berth_csi::secrets::SecretResolver;
use berth_csi::{ClientConfig, CsiClient, NodeService};
use berth_proto::csi::v1 as pb;
use criterion::{Criterion, criterion_group, criterion_main};
use hyper_util::rt::TokioIo;
use pb::identity_server::{Identity, IdentityServer};
use pb::node_client::NodeClient;
use pb::node_server::{Node, NodeServer};
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Response, Status};

/// A plugin that answers everything at once and touches nothing.
#[derive(Clone, Copy)]
struct NoOp;

#[tonic::async_trait]
impl Identity for NoOp {
    async fn get_plugin_info(
        &self,
        _r: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: "noop.csi.berth".into(),
            vendor_version: "1".into(),
            manifest: HashMap::new(),
        }))
    }
    async fn get_plugin_capabilities(
        &self,
        _r: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::GetPluginCapabilitiesResponse::default()))
    }
    async fn probe(
        &self,
        _r: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        Ok(Response::new(pb::ProbeResponse { ready: None }))
    }
}

#[tonic::async_trait]
impl Node for NoOp {
    async fn node_stage_volume(
        &self,
        _r: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }
    async fn node_unstage_volume(
        &self,
        _r: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        Ok(Response::new(pb::NodeUnstageVolumeResponse {}))
    }
    async fn node_publish_volume(
        &self,
        _r: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }
    async fn node_unpublish_volume(
        &self,
        _r: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }
    async fn node_get_volume_stats(
        &self,
        _r: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn node_expand_volume(
        &self,
        _r: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("no"))
    }
    async fn node_get_capabilities(
        &self,
        _r: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        use pb::node_service_capability::{Rpc, Type, rpc::Type as T};
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities: vec![pb::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: T::StageUnstageVolume as i32,
                })),
            }],
        }))
    }
    async fn node_get_info(
        &self,
        _r: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: "n".into(),
            ..Default::default()
        }))
    }
}

fn serve(rt: &Runtime, socket: &Path) {
    let uds = rt.block_on(async { tokio::net::UnixListener::bind(socket).unwrap() });
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(NoOp))
            .add_service(NodeServer::new(NoOp))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(uds))
            .await
            .unwrap();
    });
}

async fn bare_channel(socket: &Path) -> Channel {
    let path: Arc<Path> = Arc::from(socket);
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(&*path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

fn unpublish_req() -> pb::NodeUnpublishVolumeRequest {
    pb::NodeUnpublishVolumeRequest {
        volume_id: "vol-1".into(),
        target_path: "/var/lib/berth/csi/t/default/mounts/vol-1/target".into(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("noop.sock");
    serve(&rt, &socket);

    let mut g = c.benchmark_group("csi/rpc");
    let channel = rt.block_on(bare_channel(&socket));
    let mut bare = NodeClient::new(channel);
    g.bench_function("bare_tonic_unpublish", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut req = Request::new(unpublish_req());
                req.set_timeout(Duration::from_secs(60));
                bare.node_unpublish_volume(req).await.unwrap()
            })
        });
    });
    let client = rt.block_on(async {
        CsiClient::new(
            "org.berth.noop",
            socket.to_str().unwrap(),
            ClientConfig::default(),
        )
        .unwrap()
    });
    let target = std::path::PathBuf::from(unpublish_req().target_path);
    g.bench_function("berth_client_unpublish", |b| {
        b.iter(|| rt.block_on(client.unpublish("vol-1", &target)).unwrap());
    });
    g.bench_function("new_connection_per_call", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut c = NodeClient::new(bare_channel(&socket).await);
                c.node_unpublish_volume(unpublish_req()).await.unwrap()
            })
        });
    });
    g.finish();

    // The manager: one consumer, publish then unpublish; fsync'd records counted.
    let work = tempfile::tempdir_in(
        std::env::var_os("BERTH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into),
    )
    .unwrap();
    let plugin = PluginConfig {
        plugin_type: "org.berth.noop".into(),
        name: "default".into(),
        kind: PluginKind::Unmanaged {
            node_socket: socket.clone(),
        },
        target_path_root: None,
        // The no-op plugin makes no target: berth makes it (Mesos's workaround flag).
        target_path_exists: true,
        source: std::path::PathBuf::new(),
    };
    let manager = rt.block_on(async {
        VolumeManager::new(
            CsiClient::new(
                "org.berth.noop",
                socket.to_str().unwrap(),
                ClientConfig::default(),
            )
            .unwrap(),
            &plugin,
            ManagerConfig {
                work_dir: work.path().to_owned(),
                boot_id: Some("bench".into()),
                secrets: SecretResolver::new(None),
                mount_groups: None,
            },
        )
        .unwrap()
    });
    let spec = VolumeSpec {
        volume_id: "vol-1".into(),
        capability: Capability {
            fs_type: "ext4".into(),
            access_mode: 1,
            ..Capability::default()
        },
        volume_context: BTreeMap::new(),
        stage_secrets: HashMap::new(),
        publish_secrets: HashMap::new(),
    };
    // Count once, outside the timing: fsync'd record writes (one per state transition) and
    // the fsync system calls behind them (file + directory per write, plus new directories).
    let counts =
        |m: &VolumeManager<CsiClient>| (m.record_writes(), berth_csi::record::fsync_calls());
    let mut steps = Vec::new();
    let mut last = counts(&manager);
    let mut step = |name: &'static str, last: &mut (u64, u64)| {
        let now = counts(&manager);
        steps.push((name, now.0 - last.0, now.1 - last.1));
        *last = now;
    };
    rt.block_on(manager.publish(&spec, "ctr-1", Mode::Rw))
        .unwrap();
    step("first publish (stage + publish: 4 transitions)", &mut last);
    rt.block_on(manager.publish(&spec, "ctr-2", Mode::Rw))
        .unwrap();
    step("second consumer joins (consumer set only)", &mut last);
    rt.block_on(manager.unpublish("vol-1", "ctr-2")).unwrap();
    step("non-last consumer leaves (consumer set only)", &mut last);
    rt.block_on(manager.unpublish("vol-1", "ctr-1")).unwrap();
    step(
        "last unpublish (unpublish + unstage + record removal)",
        &mut last,
    );
    for (name, writes, fsyncs) in steps {
        println!("csi/manager {name}: {writes} fsync'd record writes, {fsyncs} fsync calls");
    }
    let mut g = c.benchmark_group("csi/manager");
    g.sample_size(30);
    g.bench_function("publish_unpublish", |b| {
        b.iter(|| {
            rt.block_on(async {
                manager.publish(&spec, "ctr-1", Mode::Rw).await.unwrap();
                manager.unpublish("vol-1", "ctr-1").await.unwrap();
            });
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
