//! The CSI node client: tonic over a unix socket.
//!
//! * Endpoints `unix:///p`, `unix:/p` and `/p` are accepted ([`parse_endpoint`]); the channel
//!   dials the socket with a custom connector and the plain authority `localhost` (tonic and
//!   h2 servers reset streams whose `:authority` is a percent-encoded path).
//! * One lazily connected channel per plugin, reused by every call.
//! * Every attempt has its own deadline ([`ClientConfig::call_timeout`], 60 s by default, sent
//!   as `grpc-timeout` and enforced locally, so a hung plugin surfaces as a typed timeout and
//!   not as tonic's `Cancelled "Timeout expired"`).
//! * Retries: `UNAVAILABLE`, `DEADLINE_EXCEEDED` (and a local timeout), `ABORTED` and
//!   `RESOURCE_EXHAUSTED` are retried with exponential backoff and full jitter under an overall
//!   deadline ([`RetryPolicy`]); every other code fails at once (in particular
//!   `INVALID_ARGUMENT`, `UNIMPLEMENTED`, `ALREADY_EXISTS`). `NOT_FOUND` on
//!   `NodeUnpublishVolume` / `NodeUnstageVolume` means the work is already done (spec §4.3/§4.4).
//! * `GetPluginInfo` and `NodeGetCapabilities` are cached and dropped when the plugin
//!   restarts: detected by the socket's inode changing, or an `UNAVAILABLE` answer.
//! * Secrets are passed through to the plugin and nowhere else: requests that carry them have a
//!   redacting `Debug`, nothing here logs a request, and a plugin error message that echoes a
//!   secret value is scrubbed before it becomes a [`CsiError`].

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_proto::csi::v1 as pb;
use hyper_util::rt::TokioIo;
use pb::identity_client::IdentityClient;
use pb::node_client::NodeClient;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::{CsiError, Result};

use berth_mount::retry::Exhausted;
pub use berth_mount::retry::RetryPolicy;

/// The CSI client's default retry policy: full-jitter backoff from 100 ms, capped at 10 s,
/// within 5 minutes.
#[must_use]
pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(10),
        overall: Duration::from_secs(300),
        full_jitter: true,
    }
}

/// Client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Deadline of one attempt (Mesos: 60 s).
    pub call_timeout: Duration,
    /// Deadline for connecting the socket.
    pub connect_timeout: Duration,
    /// Retries of retryable codes.
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            retry: default_retry(),
        }
    }
}

/// What the client does with a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Retry with backoff while the overall deadline allows.
    Retry,
    /// Fail at once.
    Fail,
    /// The call's goal is already reached (`NOT_FOUND` on unpublish/unstage).
    Done,
}

/// The spec §4.3 mapping of a status code for RPC `step`.
#[must_use]
pub fn disposition(step: &str, code: Code) -> Disposition {
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::ResourceExhausted
        // tonic's own per-request timeout surfaces as Cancelled.
        | Code::Cancelled => Disposition::Retry,
        Code::NotFound if matches!(step, "NodeUnpublishVolume" | "NodeUnstageVolume") => {
            Disposition::Done
        }
        _ => Disposition::Fail,
    }
}

/// The code a status stands for. A status the plugin sent carries its own code. A status made
/// on our side from a transport failure (the connection dropped mid-call: the plugin crashed
/// or was restarted) comes as `UNKNOWN` "transport error" with the I/O error as its source;
/// the plugin never answered, so it counts as `UNAVAILABLE` and is retried — node calls are
/// idempotent by the spec, and the manager checks the mount table after teardown calls.
#[must_use]
pub fn effective_code(status: &tonic::Status) -> Code {
    if status.code() == Code::Unknown && std::error::Error::source(status).is_some() {
        Code::Unavailable
    } else {
        status.code()
    }
}

/// Parses `unix:///p`, `unix:/p` or `/p` into the socket path.
///
/// # Errors
/// [`CsiError::Endpoint`] for other schemes, relative paths, or an empty path.
pub fn parse_endpoint(plugin: &str, endpoint: &str) -> Result<PathBuf> {
    let bad = |reason| CsiError::Endpoint {
        plugin: plugin.to_owned(),
        endpoint: endpoint.to_owned(),
        reason,
    };
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        if !rest.starts_with('/') {
            return Err(bad(
                "unix:// must be followed by an absolute path (unix:///p)",
            ));
        }
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else {
        endpoint
    };
    if path.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if !path.starts_with('/') || path.len() < 2 {
        return Err(bad("not an absolute socket path"));
    }
    Ok(PathBuf::from(path))
}

/// What `GetPluginInfo` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name (e.g. `csi.cfgd.io`).
    pub name: String,
    /// Its version.
    pub vendor_version: String,
}

/// What `NodeGetCapabilities` said, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCapabilities {
    /// `STAGE_UNSTAGE_VOLUME`: the CO must call NodeStage before NodePublish.
    pub stage_unstage: bool,
    /// `GET_VOLUME_STATS`.
    pub get_volume_stats: bool,
    /// `EXPAND_VOLUME`.
    pub expand_volume: bool,
    /// `VOLUME_CONDITION`: `NodeGetVolumeStats` reports the volume's condition.
    pub volume_condition: bool,
}

impl NodeCapabilities {
    fn from_response(resp: &pb::NodeGetCapabilitiesResponse) -> Self {
        use pb::node_service_capability::{Type, rpc::Type as Rpc};
        let mut caps = Self::default();
        for c in &resp.capabilities {
            let Some(Type::Rpc(rpc)) = &c.r#type else {
                continue;
            };
            match Rpc::try_from(rpc.r#type) {
                Ok(Rpc::StageUnstageVolume) => caps.stage_unstage = true,
                Ok(Rpc::GetVolumeStats) => caps.get_volume_stats = true,
                Ok(Rpc::ExpandVolume) => caps.expand_volume = true,
                Ok(Rpc::VolumeCondition) => caps.volume_condition = true,
                _ => {}
            }
        }
        caps
    }
}

/// One unit's figures of a `NodeGetVolumeStats` answer (a figure the plugin left out, or
/// sent negative, is `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageFigures {
    /// `total`.
    pub total: Option<u64>,
    /// `used`.
    pub used: Option<u64>,
    /// `available`.
    pub available: Option<u64>,
}

/// The condition a plugin with `VOLUME_CONDITION` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCondition {
    /// Whether the volume is abnormal.
    pub abnormal: bool,
    /// The plugin's message.
    pub message: String,
}

/// What `NodeGetVolumeStats` said, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeStats {
    /// The `BYTES` figures.
    pub bytes: Option<UsageFigures>,
    /// The `INODES` figures.
    pub inodes: Option<UsageFigures>,
    /// The condition (plugins with `VOLUME_CONDITION` only).
    pub condition: Option<VolumeCondition>,
}

impl VolumeStats {
    fn from_response(resp: &pb::NodeGetVolumeStatsResponse) -> Self {
        use pb::volume_usage::Unit;
        // Zero is what proto3 sends for a figure left out; the spec gives no other signal.
        let figure = |v: i64| u64::try_from(v).ok();
        let mut out = Self::default();
        for u in &resp.usage {
            let figures = UsageFigures {
                total: figure(u.total),
                used: figure(u.used),
                available: figure(u.available),
            };
            match Unit::try_from(u.unit) {
                Ok(Unit::Bytes) => out.bytes = Some(figures),
                Ok(Unit::Inodes) => out.inodes = Some(figures),
                _ => {}
            }
        }
        out.condition = resp.volume_condition.as_ref().map(|c| VolumeCondition {
            abnormal: c.abnormal,
            message: c.message.clone(),
        });
        out
    }
}

/// The node service as the volume manager needs it; [`CsiClient`] is the real one.
pub trait NodeService: Send + Sync {
    /// The plugin type (for errors).
    fn plugin(&self) -> &str;
    /// Cached `NodeGetCapabilities`.
    fn capabilities(&self) -> impl Future<Output = Result<NodeCapabilities>> + Send;
    /// `NodeStageVolume`.
    fn stage(&self, req: pb::NodeStageVolumeRequest) -> impl Future<Output = Result<()>> + Send;
    /// `NodeUnstageVolume` (`NOT_FOUND` = done).
    fn unstage(&self, volume_id: &str, staging: &Path) -> impl Future<Output = Result<()>> + Send;
    /// `NodePublishVolume`.
    fn publish(&self, req: pb::NodePublishVolumeRequest)
    -> impl Future<Output = Result<()>> + Send;
    /// `NodeUnpublishVolume` (`NOT_FOUND` = done).
    fn unpublish(&self, volume_id: &str, target: &Path) -> impl Future<Output = Result<()>> + Send;
    /// `NodeExpandVolume`: the capacity the plugin reports (0 = unknown).
    fn expand(&self, req: pb::NodeExpandVolumeRequest) -> impl Future<Output = Result<u64>> + Send;
}

type SocketId = (u64, u64);

struct Inner {
    channel: Channel,
    socket: Option<SocketId>,
    info: Option<PluginInfo>,
    caps: Option<NodeCapabilities>,
}

/// A CSI Identity + Node client for one plugin; cheap to clone (the channel is shared).
#[derive(Clone)]
pub struct CsiClient {
    plugin: Arc<str>,
    socket: Arc<Path>,
    config: ClientConfig,
    inner: Arc<Mutex<Inner>>,
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for CsiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiClient")
            .field("plugin", &self.plugin)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

fn socket_id(path: &Path) -> Option<SocketId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn make_channel(socket: &Path, config: &ClientConfig) -> Channel {
    let path: Arc<Path> = Arc::from(socket);
    Endpoint::from_static("http://localhost")
        .connect_timeout(config.connect_timeout)
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move {
                let stream = tokio::net::UnixStream::connect(&*path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
}

/// Replaces every non-empty secret value in `message` by `<redacted>`.
fn scrub(message: &str, secrets: &[&HashMap<String, String>]) -> String {
    let mut out = message.to_owned();
    for map in secrets {
        for v in map.values().filter(|v| !v.is_empty()) {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "<redacted>");
            }
        }
    }
    out
}

impl CsiClient {
    /// A client for plugin `plugin` (its `CSIPluginInfo.type`) at `endpoint`. Nothing is
    /// dialled until the first call; must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`CsiError::Endpoint`] for an endpoint [`parse_endpoint`] refuses.
    pub fn new(plugin: &str, endpoint: &str, config: ClientConfig) -> Result<Self> {
        let socket = parse_endpoint(plugin, endpoint)?;
        let channel = make_channel(&socket, &config);
        Ok(Self {
            plugin: Arc::from(plugin),
            socket: Arc::from(socket.as_path()),
            config,
            inner: Arc::new(Mutex::new(Inner {
                channel,
                socket: socket_id(&socket),
                info: None,
                caps: None,
            })),
            calls: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        })
    }

    /// How many RPC attempts this client made (retries included), for metrics.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The socket path.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The channel; a new socket inode (the plugin restarted) drops the caches and redials.
    fn channel(&self) -> Channel {
        let now = socket_id(&self.socket);
        let mut inner = self.lock();
        if now.is_some() && now != inner.socket {
            if inner.socket.is_some() {
                tracing::info!(plugin = %self.plugin, "CSI plugin socket changed: plugin restarted, refreshing caches");
            }
            inner.socket = now;
            inner.info = None;
            inner.caps = None;
            inner.channel = make_channel(&self.socket, &self.config);
        }
        inner.channel.clone()
    }

    fn forget_caches(&self) {
        let mut inner = self.lock();
        inner.info = None;
        inner.caps = None;
    }

    /// Runs one logical RPC with per-attempt deadlines and the retry policy.
    async fn call<T, F, Fut>(
        &self,
        step: &'static str,
        volume_id: Option<&str>,
        secrets: &[&HashMap<String, String>],
        mut attempt_fn: F,
    ) -> Result<T>
    where
        T: Default,
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let policy = self.config.retry;
        let overall = Instant::now() + policy.overall;
        let outcome = policy
            .run(
                |_attempt| {
                    let remaining = overall.saturating_duration_since(Instant::now());
                    let per_call = self.config.call_timeout.min(remaining);
                    self.calls
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let fut = tokio::time::timeout(per_call, attempt_fn(self.channel(), per_call));
                    async move {
                        let status = match fut.await {
                            Ok(Ok(v)) => return Ok(v),
                            Ok(Err(status)) => Some(status),
                            Err(_elapsed) => None,
                        };
                        let code = status
                            .as_ref()
                            .map_or(Code::DeadlineExceeded, effective_code);
                        if code == Code::Unavailable {
                            self.forget_caches();
                        }
                        if disposition(step, code) == Disposition::Done {
                            return Ok(T::default());
                        }
                        Err((status, code))
                    }
                },
                |(_, code), attempt| {
                    let disp = disposition(step, *code);
                    tracing::debug!(plugin = %self.plugin, step, volume_id, attempt, ?code, ?disp, "CSI call not OK");
                    disp == Disposition::Retry
                },
            )
            .await;
        let Exhausted {
            error: (status, _),
            attempts,
        } = match outcome {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let volume_id = volume_id.map(str::to_owned);
        Err(match status {
            None => CsiError::Timeout {
                plugin: self.plugin.to_string(),
                step,
                volume_id,
                attempts,
            },
            Some(s) if s.code() == Code::Cancelled || s.code() == Code::DeadlineExceeded => {
                CsiError::Timeout {
                    plugin: self.plugin.to_string(),
                    step,
                    volume_id,
                    attempts,
                }
            }
            Some(s) => CsiError::Rpc {
                plugin: self.plugin.to_string(),
                step,
                volume_id,
                code: effective_code(&s),
                message: scrub(s.message(), secrets),
                attempts,
            },
        })
    }

    /// `GetPluginInfo`, cached until the plugin restarts.
    ///
    /// # Errors
    /// [`CsiError::Rpc`] / [`CsiError::Timeout`].
    pub async fn plugin_info(&self) -> Result<PluginInfo> {
        let _ = self.channel();
        if let Some(info) = self.lock().info.clone() {
            return Ok(info);
        }
        let resp = self
            .call("GetPluginInfo", None, &[], |ch, t| async move {
                let mut req = tonic::Request::new(pb::GetPluginInfoRequest {});
                req.set_timeout(t);
                IdentityClient::new(ch)
                    .get_plugin_info(req)
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        let info = PluginInfo {
            name: resp.name,
            vendor_version: resp.vendor_version,
        };
        self.lock().info = Some(info.clone());
        Ok(info)
    }

    /// `NodeGetCapabilities`, cached until the plugin restarts.
    ///
    /// # Errors
    /// [`CsiError::Rpc`] / [`CsiError::Timeout`].
    pub async fn node_capabilities(&self) -> Result<NodeCapabilities> {
        let _ = self.channel();
        if let Some(caps) = self.lock().caps {
            return Ok(caps);
        }
        let resp = self
            .call("NodeGetCapabilities", None, &[], |ch, t| async move {
                let mut req = tonic::Request::new(pb::NodeGetCapabilitiesRequest {});
                req.set_timeout(t);
                NodeClient::new(ch)
                    .node_get_capabilities(req)
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        let caps = NodeCapabilities::from_response(&resp);
        self.lock().caps = Some(caps);
        Ok(caps)
    }

    /// One `Probe`: `Ok(true)` when ready (`ready` absent counts as ready).
    ///
    /// # Errors
    /// [`CsiError::Rpc`] / [`CsiError::Timeout`].
    pub async fn probe(&self) -> Result<bool> {
        let resp = self
            .call("Probe", None, &[], |ch, t| async move {
                let mut req = tonic::Request::new(pb::ProbeRequest {});
                req.set_timeout(t);
                IdentityClient::new(ch)
                    .probe(req)
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(resp.ready.unwrap_or(true))
    }

    /// Probes until the plugin says ready (`ready=false`, `FAILED_PRECONDITION`, an absent
    /// socket and retryable codes are waited out with backoff) or `deadline` passes.
    /// `ready=false` is honoured (Mesos ignores it).
    ///
    /// # Errors
    /// [`CsiError::NotReady`] with the last answer; other codes fail at once as [`CsiError::Rpc`].
    pub async fn wait_ready(&self, deadline: Duration) -> Result<()> {
        let end = Instant::now() + deadline;
        let mut attempt = 0u32;
        loop {
            let remaining = end.saturating_duration_since(Instant::now());
            let last = match tokio::time::timeout(remaining, self.probe()).await {
                Ok(Ok(true)) => return Ok(()),
                Ok(Ok(false)) => "ready=false".to_owned(),
                Ok(Err(e @ CsiError::Rpc { code, .. })) => {
                    if code != Code::FailedPrecondition
                        && disposition("Probe", code) != Disposition::Retry
                    {
                        return Err(e);
                    }
                    e.to_string()
                }
                Ok(Err(e)) => e.to_string(),
                Err(_elapsed) => "Probe did not answer before the readiness deadline".to_owned(),
            };
            let sleep = self.config.retry.jittered(attempt);
            attempt = attempt.saturating_add(1);
            if Instant::now() + sleep >= end {
                return Err(CsiError::NotReady {
                    plugin: self.plugin.to_string(),
                    last,
                });
            }
            tokio::time::sleep(sleep).await;
        }
    }

    /// `NodeGetVolumeStats` of a published volume: its id, the path it is published at
    /// (`volume_path`) and, for a staged volume, its staging path. Callers check
    /// [`NodeCapabilities::get_volume_stats`] first; a plugin without it answers
    /// `UNIMPLEMENTED`, which fails at once.
    ///
    /// # Errors
    /// [`CsiError::Rpc`] / [`CsiError::Timeout`].
    pub async fn node_volume_stats(
        &self,
        volume_id: &str,
        volume_path: &Path,
        staging: Option<&Path>,
    ) -> Result<VolumeStats> {
        let request = pb::NodeGetVolumeStatsRequest {
            volume_id: volume_id.to_owned(),
            volume_path: volume_path.to_string_lossy().into_owned(),
            staging_target_path: staging
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let resp = self
            .call("NodeGetVolumeStats", Some(volume_id), &[], |ch, t| {
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(t);
                async move {
                    NodeClient::new(ch)
                        .node_get_volume_stats(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        Ok(VolumeStats::from_response(&resp))
    }

    /// `NodeGetInfo` (not cached).
    ///
    /// # Errors
    /// [`CsiError::Rpc`] / [`CsiError::Timeout`].
    pub async fn node_get_info(&self) -> Result<pb::NodeGetInfoResponse> {
        self.call("NodeGetInfo", None, &[], |ch, t| async move {
            let mut req = tonic::Request::new(pb::NodeGetInfoRequest {});
            req.set_timeout(t);
            NodeClient::new(ch)
                .node_get_info(req)
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }
}

impl NodeService for CsiClient {
    fn plugin(&self) -> &str {
        &self.plugin
    }

    async fn capabilities(&self) -> Result<NodeCapabilities> {
        self.node_capabilities().await
    }

    async fn stage(&self, request: pb::NodeStageVolumeRequest) -> Result<()> {
        let vid = request.volume_id.clone();
        let secrets = request.secrets.clone();
        self.call("NodeStageVolume", Some(&vid), &[&secrets], |ch, t| {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(t);
            async move { NodeClient::new(ch).node_stage_volume(req).await.map(|_| ()) }
        })
        .await
    }

    async fn unstage(&self, volume_id: &str, staging: &Path) -> Result<()> {
        let request = pb::NodeUnstageVolumeRequest {
            volume_id: volume_id.to_owned(),
            staging_target_path: staging.to_string_lossy().into_owned(),
        };
        self.call("NodeUnstageVolume", Some(volume_id), &[], |ch, t| {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(t);
            async move {
                NodeClient::new(ch)
                    .node_unstage_volume(req)
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    async fn publish(&self, request: pb::NodePublishVolumeRequest) -> Result<()> {
        let vid = request.volume_id.clone();
        let secrets = request.secrets.clone();
        self.call("NodePublishVolume", Some(&vid), &[&secrets], |ch, t| {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(t);
            async move {
                NodeClient::new(ch)
                    .node_publish_volume(req)
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    async fn expand(&self, request: pb::NodeExpandVolumeRequest) -> Result<u64> {
        let vid = request.volume_id.clone();
        let secrets = request.secrets.clone();
        let resp = self
            .call("NodeExpandVolume", Some(&vid), &[&secrets], |ch, t| {
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(t);
                async move {
                    NodeClient::new(ch)
                        .node_expand_volume(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        Ok(u64::try_from(resp.capacity_bytes).unwrap_or(0))
    }

    async fn unpublish(&self, volume_id: &str, target: &Path) -> Result<()> {
        let request = pb::NodeUnpublishVolumeRequest {
            volume_id: volume_id.to_owned(),
            target_path: target.to_string_lossy().into_owned(),
        };
        self.call("NodeUnpublishVolume", Some(volume_id), &[], |ch, t| {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(t);
            async move {
                NodeClient::new(ch)
                    .node_unpublish_volume(req)
                    .await
                    .map(|_| ())
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        for ok in ["unix:///a/b.sock", "unix:/a/b.sock", "/a/b.sock"] {
            assert_eq!(parse_endpoint("p", ok).unwrap(), PathBuf::from("/a/b.sock"));
        }
        for bad in ["unix://a/b.sock", "tcp://h:1", "a.sock", "", "unix:", "/"] {
            assert!(matches!(
                parse_endpoint("p", bad),
                Err(CsiError::Endpoint { .. })
            ));
        }
    }

    #[test]
    fn codes() {
        use Disposition::*;
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::ResourceExhausted,
        ] {
            assert_eq!(disposition("NodePublishVolume", c), Retry);
        }
        for c in [
            Code::InvalidArgument,
            Code::Unimplemented,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
            Code::Unknown,
            Code::Internal,
        ] {
            assert_eq!(disposition("NodePublishVolume", c), Fail);
        }
        assert_eq!(disposition("NodeUnpublishVolume", Code::NotFound), Done);
        assert_eq!(disposition("NodeUnstageVolume", Code::NotFound), Done);
        assert_eq!(disposition("NodeStageVolume", Code::NotFound), Fail);
    }

    #[test]
    fn backoff_is_bounded_full_jitter() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            overall: Duration::from_secs(1),
            full_jitter: true,
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(10));
        assert_eq!(p.ceiling(2), Duration::from_millis(40));
        assert_eq!(p.ceiling(3), Duration::from_millis(50));
        assert_eq!(p.ceiling(200), Duration::from_millis(50));
        for a in 0..40 {
            assert!(p.jittered(a) <= p.ceiling(a));
        }
    }

    #[test]
    fn scrubs_secret_values() {
        let mut s = HashMap::new();
        s.insert("password".to_owned(), "hunter2".to_owned());
        assert_eq!(
            scrub("bad password hunter2 for user", &[&s]),
            "bad password <redacted> for user"
        );
    }
}
