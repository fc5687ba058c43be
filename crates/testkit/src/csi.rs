//! A CSI node plugin for raw block volumes, served from inside a test's mount namespace, so
//! that `berth-isolator` processes started there talk to it over a unix socket and see its
//! mounts.
//!
//! - `NodePublishVolume` of a `block` volume binds the device named by the volume context's
//!   `device` (a loop device the test attached) onto the target path, a file it creates when
//!   missing, as the CSI spec has a plugin do; `readonly` remounts that bind read-only. A
//!   `mount` capability is refused (`INVALID_ARGUMENT`). No `STAGE_UNSTAGE_VOLUME`.
//! - `NodeUnpublishVolume` unmounts the target and removes the file (`NOT_FOUND`: done).
//! - `NodeExpandVolume` (advertised as `EXPAND_VOLUME` only when asked) grows the loop
//!   device's backing file to the required bytes and has the kernel re-read its size
//!   (`berth_mount::loopdev::refresh_capacity`) through the published device node, then
//!   answers the device's size.
//!
//! Every call is recorded (`method volume_id`) for the tests to check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_proto::csi::v1 as pb;
use pb::identity_server::{Identity, IdentityServer};
use pb::node_server::{Node, NodeServer};
use tonic::{Request, Response, Status};

use crate::Ns;

/// The running plugin; stopped when dropped.
#[derive(Debug)]
pub struct BlockPlugin {
    calls: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct Svc {
    calls: Arc<Mutex<Vec<String>>>,
    expand: bool,
}

impl Svc {
    fn record(&self, method: &str, volume_id: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("{method} {volume_id}"));
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

#[tonic::async_trait]
impl Identity for Svc {
    async fn get_plugin_info(
        &self,
        _r: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: "block.csi.berth".into(),
            vendor_version: "0.1.0".into(),
            manifest: std::collections::HashMap::new(),
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
        Ok(Response::new(pb::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl Node for Svc {
    async fn node_stage_volume(
        &self,
        _r: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("no STAGE_UNSTAGE_VOLUME"))
    }
    async fn node_unstage_volume(
        &self,
        _r: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("no STAGE_UNSTAGE_VOLUME"))
    }
    async fn node_publish_volume(
        &self,
        r: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        use pb::volume_capability::AccessType;
        let r = r.into_inner();
        self.record("NodePublishVolume", &r.volume_id);
        let block = r
            .volume_capability
            .as_ref()
            .is_some_and(|c| matches!(c.access_type, Some(AccessType::Block(_))));
        if !block {
            return Err(Status::invalid_argument("only block volumes"));
        }
        let device = r
            .volume_context
            .get("device")
            .ok_or_else(|| Status::invalid_argument("volume_context.device"))?;
        let target = PathBuf::from(&r.target_path);
        if crate::mounts_below(&target).contains(&target) {
            return Ok(Response::new(pb::NodePublishVolumeResponse {}));
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
            .map_err(|e| internal("create target", e))?;
        nix::mount::mount(
            Some(Path::new(device)),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| internal("bind device", e))?;
        if r.readonly {
            nix::mount::mount(
                None::<&str>,
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND
                    | nix::mount::MsFlags::MS_REMOUNT
                    | nix::mount::MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| internal("remount read-only", e))?;
        }
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }
    async fn node_unpublish_volume(
        &self,
        r: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        self.record("NodeUnpublishVolume", &r.volume_id);
        let target = PathBuf::from(&r.target_path);
        if crate::mounts_below(&target).contains(&target) {
            nix::mount::umount(&target).map_err(|e| internal("unmount", e))?;
        }
        match std::fs::remove_file(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal("remove target", e)),
        }
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }
    async fn node_get_volume_stats(
        &self,
        _r: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("no GET_VOLUME_STATS"))
    }
    async fn node_expand_volume(
        &self,
        r: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        self.record("NodeExpandVolume", &r.volume_id);
        if !self.expand {
            return Err(Status::unimplemented("no EXPAND_VOLUME"));
        }
        let required = r
            .capacity_range
            .map(|c| u64::try_from(c.required_bytes).unwrap_or(0))
            .filter(|b| *b > 0)
            .ok_or_else(|| Status::invalid_argument("capacity_range.required_bytes"))?;
        // The device published at volume_path, and the loop device's backing file.
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .open(&r.volume_path)
            .map_err(|e| internal("open volume_path", e))?;
        let rdev = nix::sys::stat::fstat(&dev)
            .map_err(|e| internal("stat volume_path", e))?
            .st_rdev;
        let sys = format!(
            "/sys/dev/block/{}:{}/loop/backing_file",
            nix::sys::stat::major(rdev),
            nix::sys::stat::minor(rdev)
        );
        let backing = std::fs::read_to_string(&sys).map_err(|e| internal(&sys, e))?;
        let backing = std::fs::OpenOptions::new()
            .write(true)
            .open(backing.trim())
            .map_err(|e| internal("open backing file", e))?;
        if backing
            .metadata()
            .map_err(|e| internal("stat backing", e))?
            .len()
            < required
        {
            backing
                .set_len(required)
                .map_err(|e| internal("grow backing file", e))?;
        }
        berth_mount::loopdev::refresh_capacity(&dev)
            .map_err(|e| internal("LOOP_SET_CAPACITY", e))?;
        let size =
            berth_mount::loopdev::device_size(&dev).map_err(|e| internal("BLKGETSIZE64", e))?;
        Ok(Response::new(pb::NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        }))
    }
    async fn node_get_capabilities(
        &self,
        _r: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        use pb::node_service_capability::{Rpc, Type, rpc::Type as T};
        let capabilities = if self.expand {
            vec![pb::NodeServiceCapability {
                r#type: Some(Type::Rpc(Rpc {
                    r#type: T::ExpandVolume as i32,
                })),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }
    async fn node_get_info(
        &self,
        _r: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: "node-1".into(),
            ..Default::default()
        }))
    }
}

impl BlockPlugin {
    /// Serves the plugin on `socket` from a thread inside `ns` (advertising `EXPAND_VOLUME`
    /// when `expand`); returns once the socket listens.
    ///
    /// # Panics
    /// When the socket cannot be bound or the runtime built.
    #[must_use]
    pub fn start(ns: &Ns, socket: &Path, expand: bool) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let svc = Svc {
            calls: Arc::clone(&calls),
            expand,
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let socket = socket.to_owned();
        // A thread started from the namespace thread is in the namespace.
        let thread = ns.run(move || {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let _ = std::fs::remove_file(&socket);
                    let uds = tokio::net::UnixListener::bind(&socket).unwrap();
                    ready_tx.send(()).unwrap();
                    tonic::transport::Server::builder()
                        .add_service(IdentityServer::new(svc.clone()))
                        .add_service(NodeServer::new(svc))
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::UnixListenerStream::new(uds),
                            async {
                                let _ = stop_rx.await;
                            },
                        )
                        .await
                        .unwrap();
                });
            })
        });
        ready_rx.recv().unwrap();
        Self {
            calls,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The calls so far, as `method volume_id`.
    #[must_use]
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Drop for BlockPlugin {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
