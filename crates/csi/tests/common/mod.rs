//! A fake CSI node plugin (tonic server on a unix socket) with fault knobs, shared by the
//! integration tests.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::csi::v1 as pb;
use pb::identity_server::{Identity, IdentityServer};
use pb::node_server::{Node, NodeServer};
use tonic::{Code, Request, Response, Status};

#[derive(Debug, Clone)]
pub enum Fault {
    Code(Code),
    Hang(Duration),
    /// Do the call's side effect, then abort the whole process before answering (a plugin
    /// crashing mid-call; only for a plugin running in its own process).
    Crash,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub method: &'static str,
    pub volume_id: String,
    pub path: String,
    pub staging: String,
    pub readonly: bool,
    pub secrets: BTreeMap<String, String>,
    /// `MountVolume.volume_mount_group` of a stage or publish (empty: none sent).
    pub mount_group: String,
}

#[derive(Debug)]
pub struct FakeState {
    pub stage_unstage: bool,
    pub vendor_version: String,
    /// (method or "*", fault): the next matching call gets the fault.
    pub faults: VecDeque<(&'static str, Fault)>,
    pub not_ready_probes: u32,
    pub calls: Vec<Call>,
    pub staged: BTreeSet<String>,
    pub published: BTreeMap<String, bool>,
    pub not_found_on_unpublish: bool,
    pub echo_secrets_in_error: bool,
    pub leave_target: bool,
    /// Real mounts: volumes are directories under this root; stage binds the volume at the
    /// staging path, publish binds it (read-only when asked) at the target.
    pub real_mounts: Option<PathBuf>,
    /// Non-idempotent (as cfgd-csi with its cache on the target's filesystem): every stage
    /// and publish mounts again on top, every unstage and unpublish removes one mount and
    /// answers OK even when more are left.
    pub stack_mounts: bool,
    /// The next this-many unpublishes answer OK without unmounting anything.
    pub ignore_unpublish: usize,
    /// With `Some`, the plugin advertises `GET_VOLUME_STATS` (and `VOLUME_CONDITION` when the
    /// answer carries a condition) and answers `NodeGetVolumeStats` of a published volume so.
    pub volume_stats: Option<pb::NodeGetVolumeStatsResponse>,
    /// The plugin advertises `VOLUME_MOUNT_GROUP`.
    pub volume_mount_group: bool,
}

impl Default for FakeState {
    fn default() -> Self {
        Self {
            stage_unstage: true,
            vendor_version: "1.0.0".into(),
            faults: VecDeque::new(),
            not_ready_probes: 0,
            calls: Vec::new(),
            staged: BTreeSet::new(),
            published: BTreeMap::new(),
            not_found_on_unpublish: false,
            echo_secrets_in_error: false,
            leave_target: false,
            real_mounts: None,
            stack_mounts: false,
            ignore_unpublish: 0,
            volume_stats: None,
            volume_mount_group: false,
        }
    }
}

impl FakeState {
    pub fn count(&self, method: &str) -> usize {
        self.calls.iter().filter(|c| c.method == method).count()
    }
    pub fn fail_next(&mut self, method: &'static str, code: Code, n: usize) {
        for _ in 0..n {
            self.faults.push_back((method, Fault::Code(code)));
        }
    }
}

pub type Shared = Arc<Mutex<FakeState>>;

#[derive(Clone)]
struct Svc(Shared);

impl Svc {
    async fn enter(&self, call: Call) -> Result<Option<Fault>, Status> {
        let fault = {
            let mut s = self.0.lock().unwrap();
            let method = call.method;
            let secrets: Vec<String> = call.secrets.values().cloned().collect();
            s.calls.push(call);
            let idx = s.faults.iter().position(|(m, _)| *m == method || *m == "*");
            let fault = idx.and_then(|i| s.faults.remove(i)).map(|(_, f)| f);
            if let (Some(Fault::Code(c)), true) = (&fault, s.echo_secrets_in_error) {
                return Err(Status::new(
                    *c,
                    format!("bad secrets: {}", secrets.join(",")),
                ));
            }
            fault
        };
        match fault {
            None => Ok(None),
            Some(Fault::Code(c)) => Err(Status::new(c, "injected fault")),
            Some(Fault::Hang(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(Fault::Crash) => Ok(Some(Fault::Crash)),
        }
    }
}

/// Called after a call's side effect: a pending crash fault aborts the process now.
fn after_effect(fault: Option<Fault>) {
    if matches!(fault, Some(Fault::Crash)) {
        eprintln!("fake plugin: crashing mid-call as asked");
        std::process::abort();
    }
}

fn is_mount_point(p: &Path) -> bool {
    berth_mount::MountTable::read_current()
        .map(|t| t.is_mount_point(p))
        .unwrap_or(false)
}

fn mount_err(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("mount: {e}"))
}

/// Binds `source` at `target` (read-only when asked) unless something is mounted there and
/// the plugin is idempotent.
fn real_bind(source: &Path, target: &Path, read_only: bool, stack: bool) -> Result<(), Status> {
    use berth_mount::Mounter;
    if !stack && is_mount_point(target) {
        return Ok(());
    }
    let opts = if read_only {
        berth_mount::BindOptions::read_only()
    } else {
        berth_mount::BindOptions::default()
    };
    berth_mount::LinuxMounter::new()
        .bind(source, target, &opts)
        .map_err(mount_err)
}

/// Removes one mount at `target` (stacking plugin) or all of them.
fn real_unmount(target: &Path, stack: bool) -> Result<(), Status> {
    loop {
        if !is_mount_point(target) {
            return Ok(());
        }
        nix::mount::umount2(target, nix::mount::MntFlags::empty()).map_err(mount_err)?;
        if stack {
            return Ok(());
        }
    }
}

fn call(method: &'static str, volume_id: &str) -> Call {
    Call {
        method,
        volume_id: volume_id.into(),
        path: String::new(),
        staging: String::new(),
        readonly: false,
        secrets: BTreeMap::new(),
        mount_group: String::new(),
    }
}

/// The `volume_mount_group` of a capability (empty for none or a block volume).
fn mount_group(cap: Option<&pb::VolumeCapability>) -> String {
    use pb::volume_capability::AccessType;
    match cap.and_then(|c| c.access_type.as_ref()) {
        Some(AccessType::Mount(m)) => m.volume_mount_group.clone(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl Identity for Svc {
    async fn get_plugin_info(
        &self,
        _r: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        self.enter(call("GetPluginInfo", "")).await?;
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: "fake.csi.berth".into(),
            vendor_version: self.0.lock().unwrap().vendor_version.clone(),
            manifest: Default::default(),
        }))
    }
    async fn get_plugin_capabilities(
        &self,
        _r: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        self.enter(call("GetPluginCapabilities", "")).await?;
        Ok(Response::new(pb::GetPluginCapabilitiesResponse::default()))
    }
    async fn probe(
        &self,
        _r: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        self.enter(call("Probe", "")).await?;
        let mut s = self.0.lock().unwrap();
        let ready = if s.not_ready_probes > 0 {
            s.not_ready_probes -= 1;
            Some(false)
        } else {
            None
        };
        Ok(Response::new(pb::ProbeResponse { ready }))
    }
}

#[tonic::async_trait]
impl Node for Svc {
    async fn node_stage_volume(
        &self,
        r: Request<pb::NodeStageVolumeRequest>,
    ) -> Result<Response<pb::NodeStageVolumeResponse>, Status> {
        let r = r.into_inner();
        let mut c = call("NodeStageVolume", &r.volume_id);
        c.staging = r.staging_target_path.clone();
        c.secrets = r.secrets.clone().into_iter().collect();
        c.mount_group = mount_group(r.volume_capability.as_ref());
        let fault = self.enter(c).await?;
        if !Path::new(&r.staging_target_path).is_dir() {
            return Err(Status::invalid_argument(
                "staging_target_path is not a directory",
            ));
        }
        let mut s = self.0.lock().unwrap();
        if let Some(root) = s.real_mounts.clone() {
            let vol = volume_dir(&root, &r.volume_id)?;
            real_bind(
                &vol,
                Path::new(&r.staging_target_path),
                false,
                s.stack_mounts,
            )?;
        }
        s.staged.insert(r.staging_target_path);
        drop(s);
        after_effect(fault);
        Ok(Response::new(pb::NodeStageVolumeResponse {}))
    }
    async fn node_unstage_volume(
        &self,
        r: Request<pb::NodeUnstageVolumeRequest>,
    ) -> Result<Response<pb::NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        let mut c = call("NodeUnstageVolume", &r.volume_id);
        c.staging = r.staging_target_path.clone();
        let fault = self.enter(c).await?;
        let mut s = self.0.lock().unwrap();
        if s.real_mounts.is_some() {
            real_unmount(Path::new(&r.staging_target_path), s.stack_mounts)?;
        }
        s.staged.remove(&r.staging_target_path);
        drop(s);
        after_effect(fault);
        Ok(Response::new(pb::NodeUnstageVolumeResponse {}))
    }
    async fn node_publish_volume(
        &self,
        r: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        let mut c = call("NodePublishVolume", &r.volume_id);
        c.path = r.target_path.clone();
        c.staging = r.staging_target_path.clone();
        c.readonly = r.readonly;
        c.secrets = r.secrets.clone().into_iter().collect();
        c.mount_group = mount_group(r.volume_capability.as_ref());
        let fault = self.enter(c).await?;
        let mut s = self.0.lock().unwrap();
        // A real-mount plugin knows what is staged from the mount table (it survives a
        // restart of the plugin); the in-memory set otherwise.
        let staged = if s.real_mounts.is_some() {
            is_mount_point(Path::new(&r.staging_target_path))
        } else {
            s.staged.contains(&r.staging_target_path)
        };
        if s.stage_unstage && !staged {
            return Err(Status::failed_precondition("not staged"));
        }
        let target = Path::new(&r.target_path);
        if !target.parent().is_some_and(Path::is_dir) {
            return Err(Status::unknown("target parent missing"));
        }
        match std::fs::create_dir(target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Status::internal(e.to_string())),
        }
        if let Some(root) = s.real_mounts.clone() {
            let source = if s.stage_unstage {
                PathBuf::from(&r.staging_target_path)
            } else {
                volume_dir(&root, &r.volume_id)?
            };
            real_bind(&source, target, r.readonly, s.stack_mounts)?;
        } else {
            std::fs::write(
                target.join("published-by-fake"),
                if r.readonly { "ro" } else { "rw" },
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        }
        s.published.insert(r.target_path, r.readonly);
        drop(s);
        after_effect(fault);
        Ok(Response::new(pb::NodePublishVolumeResponse {}))
    }
    async fn node_unpublish_volume(
        &self,
        r: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        let mut c = call("NodeUnpublishVolume", &r.volume_id);
        c.path = r.target_path.clone();
        let fault = self.enter(c).await?;
        let mut s = self.0.lock().unwrap();
        if s.ignore_unpublish > 0 {
            s.ignore_unpublish -= 1;
            return Ok(Response::new(pb::NodeUnpublishVolumeResponse {}));
        }
        let was = s.published.remove(&r.target_path).is_some();
        if !was && s.not_found_on_unpublish {
            return Err(Status::not_found("volume not published there"));
        }
        let target = Path::new(&r.target_path);
        if s.real_mounts.is_some() {
            real_unmount(target, s.stack_mounts)?;
            if !s.leave_target {
                // Like real plugins: rmdir, which fails (and is ignored) while still mounted.
                let _ = std::fs::remove_dir(target);
            }
        } else if !s.leave_target {
            let _ = std::fs::remove_dir_all(target);
        }
        drop(s);
        after_effect(fault);
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }
    async fn node_get_volume_stats(
        &self,
        r: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let r = r.into_inner();
        let mut c = call("NodeGetVolumeStats", &r.volume_id);
        c.path = r.volume_path.clone();
        c.staging = r.staging_target_path.clone();
        self.enter(c).await?;
        let s = self.0.lock().unwrap();
        let Some(stats) = s.volume_stats.clone() else {
            return Err(Status::unimplemented("no stats"));
        };
        if r.volume_path.is_empty() {
            return Err(Status::invalid_argument("volume_path is required"));
        }
        if !s.published.contains_key(&r.volume_path) {
            return Err(Status::not_found("not published at that path"));
        }
        Ok(Response::new(stats))
    }
    async fn node_expand_volume(
        &self,
        _r: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("no expand"))
    }
    async fn node_get_capabilities(
        &self,
        _r: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        self.enter(call("NodeGetCapabilities", "")).await?;
        use pb::node_service_capability::{Rpc, Type, rpc::Type as T};
        let mut caps = vec![];
        let s = self.0.lock().unwrap();
        let rpc = |t: T| pb::NodeServiceCapability {
            r#type: Some(Type::Rpc(Rpc { r#type: t as i32 })),
        };
        if s.stage_unstage {
            caps.push(rpc(T::StageUnstageVolume));
        }
        if s.volume_mount_group {
            caps.push(rpc(T::VolumeMountGroup));
        }
        if let Some(stats) = &s.volume_stats {
            caps.push(rpc(T::GetVolumeStats));
            if stats.volume_condition.is_some() {
                caps.push(rpc(T::VolumeCondition));
            }
        }
        drop(s);
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }
    async fn node_get_info(
        &self,
        _r: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        self.enter(call("NodeGetInfo", "")).await?;
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: "node-1".into(),
            ..Default::default()
        }))
    }
}

/// The backing directory of a volume under a real-mounts root (created on first use).
fn volume_dir(root: &Path, volume_id: &str) -> Result<PathBuf, Status> {
    let enc = berth_mount::names::encode_component(volume_id)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let dir = root.join(enc);
    std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
    Ok(dir)
}

#[allow(unused_imports)]
pub use berth_testkit::{in_ns, mounts_below, privileged};

/// An unmanaged plugin configuration of type `org.berth.fake` at `socket`.
pub fn unmanaged(socket: &Path) -> berth_csi::config::PluginConfig {
    berth_csi::config::PluginConfig {
        plugin_type: "org.berth.fake".into(),
        name: "default".into(),
        kind: berth_csi::config::PluginKind::Unmanaged {
            node_socket: socket.to_owned(),
        },
        target_path_root: None,
        target_path_exists: false,
        source: PathBuf::new(),
    }
}

/// A client of `org.berth.fake` with short deadlines: `call` per attempt, `overall` in all.
pub fn client(socket: &Path, call: Duration, overall: Duration) -> berth_csi::CsiClient {
    let cfg = berth_csi::ClientConfig {
        call_timeout: call,
        connect_timeout: Duration::from_millis(300).max(call / 2),
        retry: berth_csi::RetryPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(50),
            overall,
            full_jitter: true,
        },
    };
    berth_csi::CsiClient::new("org.berth.fake", socket.to_str().unwrap(), cfg).unwrap()
}

/// A volume manager for `cfg` over `client`, state under `work`, boot id `boot`.
pub fn manager_for(
    cfg: &berth_csi::config::PluginConfig,
    client: berth_csi::CsiClient,
    work: &Path,
    boot: &str,
    secrets_dir: Option<PathBuf>,
) -> berth_csi::manager::VolumeManager<berth_csi::CsiClient> {
    berth_csi::manager::VolumeManager::new(
        client,
        cfg,
        berth_csi::manager::ManagerConfig {
            work_dir: work.to_owned(),
            boot_id: Some(boot.into()),
            secrets: berth_csi::secrets::SecretResolver::new(secrets_dir),
            mount_groups: None,
        },
    )
    .unwrap()
}

/// A volume manager as [`manager_for`], giving `volume_mount_group` gids from `groups`.
pub fn manager_with_groups(
    cfg: &berth_csi::config::PluginConfig,
    client: berth_csi::CsiClient,
    work: &Path,
    boot: &str,
    groups: Arc<dyn berth_csi::MountGroups>,
) -> berth_csi::manager::VolumeManager<berth_csi::CsiClient> {
    berth_csi::manager::VolumeManager::new(
        client,
        cfg,
        berth_csi::manager::ManagerConfig {
            work_dir: work.to_owned(),
            boot_id: Some(boot.into()),
            secrets: berth_csi::secrets::SecretResolver::new(None),
            mount_groups: Some(groups),
        },
    )
    .unwrap()
}

/// A [`berth_csi::MountGroups`] over an inclusive range, with gids held by someone else (the
/// agent's persistent volumes) that it never gives.
#[derive(Debug)]
pub struct RangeGroups {
    pub begin: u32,
    pub end: u32,
    pub others: BTreeSet<u32>,
    pub held: Mutex<BTreeMap<PathBuf, u32>>,
}

impl RangeGroups {
    pub fn new(begin: u32, end: u32, others: impl IntoIterator<Item = u32>) -> Arc<Self> {
        Arc::new(Self {
            begin,
            end,
            others: others.into_iter().collect(),
            held: Mutex::new(BTreeMap::new()),
        })
    }
    pub fn held(&self) -> BTreeMap<PathBuf, u32> {
        self.held.lock().unwrap().clone()
    }
}

impl berth_csi::MountGroups for RangeGroups {
    fn take(&self, record: &Path) -> Result<u32, String> {
        let mut held = self.held.lock().unwrap();
        if let Some(g) = held.get(record) {
            return Ok(*g);
        }
        let gid = (self.begin..=self.end)
            .find(|g| !self.others.contains(g) && !held.values().any(|h| h == g))
            .ok_or_else(|| format!("every gid of {}-{} is taken", self.begin, self.end))?;
        held.insert(record.to_owned(), gid);
        Ok(gid)
    }
    fn release(&self, record: &Path) {
        self.held.lock().unwrap().remove(record);
    }
}

/// A running fake plugin.
pub struct FakePlugin {
    pub state: Shared,
    pub socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakePlugin {
    pub async fn start(socket: &Path) -> Self {
        Self::start_with(socket, Arc::new(Mutex::new(FakeState::default()))).await
    }

    pub async fn start_with(socket: &Path, state: Shared) -> Self {
        let mut p = Self {
            state,
            socket: socket.to_owned(),
            stop: None,
            task: None,
        };
        p.serve();
        p
    }

    fn serve(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let uds = tokio::net::UnixListener::bind(&self.socket).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = Svc(Arc::clone(&self.state));
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(IdentityServer::new(svc.clone()))
                .add_service(NodeServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(uds),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .unwrap();
        });
        self.stop = Some(tx);
        self.task = Some(task);
    }

    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Stops and starts again on the same path (a new socket inode), keeping the state.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.serve();
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
