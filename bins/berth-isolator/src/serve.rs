//! `berth-isolator serve`: the `berth.v1.Isolator` gRPC service on a unix socket, recovering
//! on start, with an optional Prometheus-format metrics endpoint.
//!
//! On start the server recovers with every recorded container treated as live: complete
//! prepares are kept, interrupted ones rolled back, interrupted cleanups finished. The
//! containerizer's own `Recover` call (with its real live and orphan lists) then settles the
//! rest. Nothing a running container uses is torn down before someone says it is gone.
//!
//! The server runs as root and whoever may call it can bind host paths and destroy volumes,
//! so it trusts no caller (the rules live in `berth-rpc`, shared with `berth-validator`):
//!
//! - the socket is created 0600, or 0660 with `--socket-group`, whatever the umask; its
//!   directory 0750 when missing; a live socket at the path is refused ("another server is
//!   listening"), a stale one replaced, anything else at the path refused and left alone;
//! - every call's peer credentials (`SO_PEERCRED`) are checked: root, `--allow-uid`, members of
//!   the socket group; anyone else gets PERMISSION_DENIED and a log line with pid and uid;
//! - every operation runs on the blocking pool, one thread per call, with the isolator's
//!   per-container locks: a call stuck in a hung filesystem (a FUSE or NFS server that never
//!   answers) holds only its own thread, and the other containers' calls, `Ping` and
//!   `/metrics` go on;
//! - SIGTERM/SIGINT stop accepting, give calls in flight `--shutdown-grace` (default 10 s) and
//!   then stop without them: every side effect is preceded by its fsync'd intent, so the next
//!   start's recovery finishes or undoes an abandoned call;
//! - the metrics listener is loopback unless told otherwise, with a warning then.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use berth_agent::ErrorCode;
use berth_agent::container::ContainerConfig;
use berth_proto::berth::v1 as pb;
use berth_rpc::{BoundSocket, PeerPolicy};
use pb::isolator_server::{Isolator as IsolatorRpc, IsolatorServer};
use tonic::{Request, Response, Status};

use crate::agent::{Agent, AgentError, ResourcesView};

/// The service over an opened agent.
#[derive(Debug, Clone)]
pub struct Service {
    agent: Arc<Agent>,
}

impl Service {
    /// A service over `agent`.
    #[must_use]
    pub fn new(agent: Arc<Agent>) -> Self {
        Self { agent }
    }
}

/// The gRPC code of an agent error class: the one place where agent errors meet gRPC.
fn code(c: ErrorCode) -> tonic::Code {
    match c {
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

/// The gRPC status of an operation's error, by the error's own [`ErrorCode`]: the caller's
/// mistakes are `INVALID_ARGUMENT`, states that forbid the operation `FAILED_PRECONDITION` or
/// `ALREADY_EXISTS`, a plugin nobody configured `NOT_FOUND`, the rest `INTERNAL`.
fn status(e: &AgentError) -> Status {
    // The error and its causes, as the command line prints them.
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    Status::new(code(e.code()), text)
}

/// Runs an operation on a thread of the blocking pool (driving its own future there), so
///
/// - a client that gives up (deadline, disconnect) does not cancel it half-way: a prepare
///   always finishes or undoes itself;
/// - a system call that never returns (a hung FUSE or NFS server) holds that thread only,
///   never a runtime worker: other calls, `Ping` and `/metrics` go on.
async fn detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, AgentError>> + Send + 'static,
) -> Result<T, Status> {
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(fut)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(status(&e)),
        Err(join) => Err(Status::internal(format!("operation task failed: {join}"))),
    }
}

fn usage_message(u: berth_agent::agent::usage::VolumeUsage) -> pb::VolumeUsage {
    pb::VolumeUsage {
        kind: u.kind.to_owned(),
        persistence_id: u.persistence_id.unwrap_or_default(),
        volume_id: u.volume_id.unwrap_or_default(),
        role: u.role.unwrap_or_default(),
        path: u.path.display().to_string(),
        limit_bytes: u.limit_bytes,
        used_bytes: u.used_bytes,
        used_inodes: u.used_inodes,
        enforcement: u.enforcement.as_str().to_owned(),
        abnormal: u.abnormal.unwrap_or_default(),
        error: u.error.unwrap_or_default(),
    }
}

fn resources_response(r: ResourcesView) -> pb::ResourcesResponse {
    pb::ResourcesResponse {
        checkpointed: r.checkpointed,
        total: r.total,
    }
}

fn limitation_message(l: &berth_agent::agent::usage::Limitation) -> pb::Limitation {
    pb::Limitation {
        persistence_id: l.persistence_id.clone(),
        role: l.role.clone().unwrap_or_default(),
        path: l.path.display().to_string(),
        limit_bytes: l.limit_bytes,
        used_bytes: l.used_bytes,
        enforcement: l.enforcement.as_str().to_owned(),
        message: l.message(),
    }
}

/// The stream of a `Watch` call.
type LimitationStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Limitation, Status>> + Send>>;

#[tonic::async_trait]
impl IsolatorRpc for Service {
    type WatchStream = LimitationStream;

    async fn watch(
        &self,
        _request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let limitations = self.agent.limitations();
        // Subscribed before the current set is read: nothing raised in between is lost.
        let mut raised = limitations.subscribe();
        let current = limitations.current();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            for l in &current {
                if tx.send(Ok(limitation_message(l))).await.is_err() {
                    return;
                }
            }
            loop {
                match raised.recv().await {
                    Ok(l) => {
                        if tx.send(Ok(limitation_message(&l))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a Watch client fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn prepare(
        &self,
        request: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareResponse>, Status> {
        let r = request.into_inner();
        let cfg = ContainerConfig {
            container_id: r.container_id,
            sandbox: PathBuf::from(r.sandbox),
            rootfs: (!r.rootfs.is_empty()).then(|| PathBuf::from(r.rootfs)),
            resources: r.resources,
            volumes: r.volumes,
            environment: r.environment.into_iter().collect(),
            parent: (!r.parent_container_id.is_empty()).then(|| {
                berth_agent::container::ParentContainer {
                    container_id: r.parent_container_id,
                    sandbox: (!r.parent_sandbox.is_empty())
                        .then(|| PathBuf::from(r.parent_sandbox)),
                }
            }),
        };
        cfg.check()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let agent = Arc::clone(&self.agent);
        let (mounts, supplementary_gids) = detached(async move {
            let mounts = agent.prepare(&cfg).await?;
            Ok((mounts, agent.supplementary_gids(&cfg).await))
        })
        .await?;
        Ok(Response::new(pb::PrepareResponse {
            supplementary_gids,
            mounts: mounts
                .into_iter()
                .map(|m| pb::PreparedMount {
                    name: m.name,
                    target: m.target.display().to_string(),
                    source: m.source.display().to_string(),
                    read_only: m.read_only,
                })
                .collect(),
        }))
    }

    async fn cleanup(
        &self,
        request: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        let pb::CleanupRequest {
            container_id: id,
            force,
        } = request.into_inner();
        berth_mount::names::ContainerId::new(&id)
            .map_err(|e| Status::invalid_argument(format!("container_id: {e}")))?;
        let agent = Arc::clone(&self.agent);
        detached(async move {
            if force {
                agent.force_cleanup(&id).await
            } else {
                agent.cleanup(&id).await
            }
        })
        .await?;
        Ok(Response::new(pb::CleanupResponse {}))
    }

    async fn recover(
        &self,
        request: Request<pb::RecoverRequest>,
    ) -> Result<Response<pb::RecoverResponse>, Status> {
        let r = request.into_inner();
        let agent = Arc::clone(&self.agent);
        let report = detached(async move { agent.recover(&r.live, &r.orphans).await }).await?;
        Ok(Response::new(pb::RecoverResponse {
            kept: report.kept,
            orphans_kept: report.orphans_kept,
            cleaned: report.cleaned,
            quarantined: report.quarantined,
            errors: report.errors.iter().map(ToString::to_string).collect(),
            incomplete: report.incomplete,
            quarantine_kept: report.quarantine_kept,
            kept_for_children: report.kept_for_children,
            secrets_swept: report.secrets_swept,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let agent = Arc::clone(&self.agent);
        let containers = detached(async move { Ok(agent.isolator().status()?) }).await?;
        Ok(Response::new(pb::StatusResponse {
            disk_isolation: self.agent.disk_isolation().to_string(),
            containers: containers
                .into_iter()
                .map(|c| pb::ContainerStatus {
                    container_id: c.container_id,
                    state: c.state.to_owned(),
                    last_error: c.last_error.unwrap_or_default(),
                    parent: c.parent.unwrap_or_default(),
                    children: c.children,
                    volumes: c
                        .volumes
                        .into_iter()
                        .map(|v| pb::VolumeStatus {
                            name: v.name,
                            target: v
                                .target
                                .map(|t| t.display().to_string())
                                .unwrap_or_default(),
                            mounted: v.mounted,
                            read_only: v.read_only,
                            consumers: v.consumers,
                        })
                        .collect(),
                })
                .collect(),
            leftovers: self
                .agent
                .leftovers()
                .await
                .map_err(|e| status(&e))?
                .iter()
                .map(crate::agent::leftover_status)
                .collect(),
        }))
    }

    async fn checkpoint_resources(
        &self,
        request: Request<pb::CheckpointResourcesRequest>,
    ) -> Result<Response<pb::ResourcesResponse>, Status> {
        let r = request.into_inner();
        let agent = Arc::clone(&self.agent);
        let out = detached(async move { agent.checkpoint_resources(r.resources).await }).await?;
        Ok(Response::new(resources_response(out)))
    }

    async fn apply_operation(
        &self,
        request: Request<pb::ApplyOperationRequest>,
    ) -> Result<Response<pb::ResourcesResponse>, Status> {
        let Some(op) = request.into_inner().operation else {
            return Err(Status::invalid_argument("operation is required"));
        };
        let agent = Arc::clone(&self.agent);
        let out = detached(async move { agent.apply_operation(op).await }).await?;
        Ok(Response::new(resources_response(out)))
    }

    async fn get_resources(
        &self,
        _request: Request<pb::GetResourcesRequest>,
    ) -> Result<Response<pb::ResourcesResponse>, Status> {
        Ok(Response::new(resources_response(
            self.agent.resources().await,
        )))
    }

    async fn usage(
        &self,
        _request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let agent = Arc::clone(&self.agent);
        let volumes = detached(async move { Ok(agent.usage().await) }).await?;
        Ok(Response::new(pb::UsageResponse {
            volumes: volumes.into_iter().map(usage_message).collect(),
        }))
    }

    async fn expand_volume(
        &self,
        request: Request<pb::ExpandVolumeRequest>,
    ) -> Result<Response<pb::ExpandVolumeResponse>, Status> {
        let pb::ExpandVolumeRequest {
            plugin,
            volume_id,
            required_bytes,
            limit_bytes,
        } = request.into_inner();
        let agent = Arc::clone(&self.agent);
        let capacity_bytes = detached(async move {
            agent
                .expand_volume(&plugin, &volume_id, required_bytes, limit_bytes)
                .await
        })
        .await?;
        Ok(Response::new(pb::ExpandVolumeResponse { capacity_bytes }))
    }

    async fn ping(
        &self,
        _request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(Response::new(pb::PingResponse {
            version: env!("BERTH_VERSION").to_owned(),
        }))
    }
}

/// Parses `unix:PATH` (also `unix://PATH`).
///
/// # Errors
/// Anything else.
pub fn parse_listen(s: &str) -> Result<PathBuf> {
    let path = s
        .strip_prefix("unix:")
        .map(|p| p.strip_prefix("//").unwrap_or(p))
        .filter(|p| p.starts_with('/'))
        .with_context(|| format!("--listen: expected unix:/absolute/path.sock, got {s:?}"))?;
    Ok(PathBuf::from(path))
}

/// How `serve` listens and whom it admits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The socket's path (`--listen unix:PATH`).
    pub socket: PathBuf,
    /// `--socket-group`: the socket is 0660 with this group, whose members may call.
    pub socket_group: Option<String>,
    /// `--allow-uid`: uids besides root that may call.
    pub allow_uids: Vec<u32>,
    /// `--shutdown-grace`: how long calls in flight may run on after SIGTERM.
    pub grace: Duration,
    /// `--metrics`: where to serve `GET /metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--usage-interval`: how often the volumes' usage is measured (for `/metrics` and
    /// `Watch`).
    pub usage_interval: Duration,
}

impl ServeOptions {
    /// Listening on `socket`, root only, 10 s of grace, no metrics.
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>) -> ServeOptions {
        ServeOptions {
            socket: socket.into(),
            socket_group: None,
            allow_uids: Vec::new(),
            grace: DEFAULT_GRACE,
            metrics: None,
            usage_interval: DEFAULT_USAGE_INTERVAL,
        }
    }
}

/// The default `--usage-interval` (Mesos's `--container_disk_watch_interval` default).
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(15);

/// The default `--shutdown-grace`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Parses `--metrics`: `PORT` (loopback, the default address), `IP:PORT` or `[IPv6]:PORT`.
///
/// # Errors
/// Anything else.
pub fn parse_metrics(s: &str) -> Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)));
    }
    s.parse::<SocketAddr>()
        .with_context(|| format!("--metrics: expected PORT or IP:PORT, got {s:?}"))
}

/// Serves until SIGINT or SIGTERM: binds the socket (see the module docs), recovers, serves,
/// and on the signal stops accepting, gives calls in flight the grace period, and stops
/// managed plugins. `ready` is called once the socket accepts connections. Must run on a
/// multi-thread runtime.
///
/// # Errors
/// The socket is refused or cannot be bound, recovery fails, the server fails.
pub async fn run(agent: Arc<Agent>, options: &ServeOptions, ready: impl FnOnce()) -> Result<()> {
    let group = match &options.socket_group {
        Some(name) => Some(berth_rpc::unix::group_gid(name)?),
        None => None,
    };
    // Bound before recovery: a second server on the path is refused at once, and clients
    // queue in the backlog until the service is ready.
    let BoundSocket { listener, file } = BoundSocket::bind(&options.socket, group)
        .await
        .with_context(|| format!("--listen unix:{}", options.socket.display()))?;
    let policy = PeerPolicy::new(options.allow_uids.iter().copied(), group);
    tracing::info!(
        socket = %options.socket.display(),
        allow_uids = ?options.allow_uids,
        socket_group = ?options.socket_group,
        "admitting root{}",
        if options.allow_uids.is_empty() && group.is_none() { " only" } else { ", the listed uids and the socket group" }
    );
    let recovering = Arc::clone(&agent);
    detached(async move { recovering.recover_on_start().await })
        .await
        .map_err(|s| anyhow::anyhow!("start-up recovery: {}", s.message()))?;
    // The persisted retry queues (failed unpublish/unstage/unmount) drain in the background.
    let retry = agent.spawn_retry_loops(Duration::from_secs(30));
    // Volumes are measured in the background: the metrics read the last measurement, and
    // `Watch` hears of every volume found over its size.
    let usage = metrics::UsageCache::default();
    let refresh = usage.spawn_refresh(Arc::clone(&agent), options.usage_interval);
    let metrics_task = match options.metrics {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "metrics served beyond loopback: anyone who can reach it sees container ids, volumes and plugin names");
            }
            Some(crate::serve::metrics::spawn(Arc::clone(&agent), addr, usage).await?)
        }
        None => None,
    };
    ready();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    let router = tonic::transport::Server::builder().add_service(IsolatorServer::with_interceptor(
        Service::new(Arc::clone(&agent)),
        policy.interceptor(),
    ));
    let ended = berth_rpc::shutdown::serve_with_grace(
        router,
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        shutdown,
        options.grace,
    )
    .await
    .context("gRPC server")?;
    drop(file);
    if let Some(server) = metrics_task {
        server.abort();
    }
    refresh.abort();
    retry.stop();
    if ended == berth_rpc::shutdown::Ended::GraceExpired {
        tracing::warn!(
            containers = agent.isolator().locks_in_use(),
            "stopping with operations still running; their intents are recorded and the next start recovers them"
        );
    }
    if tokio::time::timeout(options.grace, agent.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("managed plugins did not stop within the grace period");
    }
    Ok(())
}

/// The Prometheus text endpoint (`GET /metrics`).
pub mod metrics {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use anyhow::{Context as _, Result};

    use crate::agent::Agent;
    use berth_agent::agent::usage::VolumeUsage;

    /// A label value as the exposition format wants it (`\\`, `\"` and `\n` escaped).
    fn label(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    /// The last usage measured, refreshed in the background: `/metrics` reads it and never
    /// measures (a walk of a large volume, or a plugin that hangs, never holds a scrape).
    #[derive(Debug, Default, Clone)]
    pub struct UsageCache(Arc<std::sync::Mutex<Vec<VolumeUsage>>>);

    impl UsageCache {
        /// What was measured last (empty before the first measurement).
        #[must_use]
        pub fn get(&self) -> Vec<VolumeUsage> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }

        /// Measures now and every `every`, each time on the blocking pool.
        #[must_use]
        pub fn spawn_refresh(
            &self,
            agent: Arc<Agent>,
            every: std::time::Duration,
        ) -> tokio::task::JoinHandle<()> {
            let cache = self.clone();
            tokio::spawn(async move {
                loop {
                    let a = Arc::clone(&agent);
                    match super::detached(async move { Ok(a.measure().await) }).await {
                        Ok(v) => {
                            *cache
                                .0
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e.message(), "measuring volume usage failed")
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        }
    }

    fn usage_gauges(out: &mut String, usage: &[VolumeUsage]) {
        type Figure = fn(&VolumeUsage) -> Option<u64>;
        let gauges: [(&str, &str, Figure); 3] = [
            (
                "berth_volume_used_bytes",
                "Bytes used on a volume (see enforcement for how it was measured).",
                |u| u.used_bytes,
            ),
            (
                "berth_volume_limit_bytes",
                "A volume's size: promised (persistent volumes) or reported (CSI, Docker).",
                |u| u.limit_bytes,
            ),
            (
                "berth_volume_used_inodes",
                "Inodes used on a volume.",
                |u| u.used_inodes,
            ),
        ];
        for (name, help, figure) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for u in usage {
                let Some(v) = figure(u) else { continue };
                let id = u
                    .persistence_id
                    .as_deref()
                    .or(u.volume_id.as_deref())
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\",id=\"{}\",enforcement=\"{}\"}} {v}",
                    u.kind,
                    label(id),
                    u.enforcement.as_str()
                );
            }
        }
    }

    /// The metrics text of `agent` (Prometheus exposition format 0.0.4), with the volumes'
    /// `usage` as last measured.
    pub async fn render(agent: &Agent, usage: &[VolumeUsage]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP berth_isolator_operations_total Isolator operations by result."
        );
        let _ = writeln!(out, "# TYPE berth_isolator_operations_total counter");
        for ((op, ok), n) in agent.counters.snapshot() {
            let result = if ok { "ok" } else { "failed" };
            let _ = writeln!(
                out,
                "berth_isolator_operations_total{{operation=\"{op}\",result=\"{result}\"}} {n}"
            );
        }
        let containers = agent
            .isolator()
            .record_states()
            .map(|s| s.len())
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP berth_isolator_containers Containers with a record."
        );
        let _ = writeln!(out, "# TYPE berth_isolator_containers gauge");
        let _ = writeln!(out, "berth_isolator_containers {containers}");
        let quarantined = agent.isolator().quarantined_ids().len();
        let _ = writeln!(
            out,
            "# HELP berth_isolator_quarantined_containers Containers whose record is quarantined: everything they held is kept until cleanup --force."
        );
        let _ = writeln!(out, "# TYPE berth_isolator_quarantined_containers gauge");
        let _ = writeln!(out, "berth_isolator_quarantined_containers {quarantined}");
        usage_gauges(&mut out, usage);
        crate::agent::render_leftovers(&mut out, &agent.leftovers().await.unwrap_or_default());
        let _ = writeln!(
            out,
            "# HELP berth_plugin_calls_total Calls made to volume plugins (CSI RPC attempts, Docker volume plugin endpoint calls)."
        );
        let _ = writeln!(out, "# TYPE berth_plugin_calls_total counter");
        for (plugin, n) in agent.docker_calls() {
            let _ = writeln!(
                out,
                "berth_plugin_calls_total{{kind=\"docker\",plugin=\"{}\"}} {n}",
                label(&plugin)
            );
        }
        let Some(csi) = agent.csi() else {
            return out;
        };
        let started = csi.started().await;
        for p in &started {
            let _ = writeln!(
                out,
                "berth_plugin_calls_total{{kind=\"csi\",plugin=\"{}\"}} {}",
                label(&p.config().plugin_type),
                p.manager().node().calls()
            );
        }
        let status = csi.status().await;
        let _ = writeln!(
            out,
            "# HELP berth_csi_plugin_up Whether a configured CSI plugin is started."
        );
        let _ = writeln!(out, "# TYPE berth_csi_plugin_up gauge");
        for p in &status {
            let _ = writeln!(
                out,
                "berth_csi_plugin_up{{plugin=\"{}\"}} {}",
                label(&p.plugin_type),
                u8::from(p.started)
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_csi_plugin_restarts_total Restarts of a managed CSI plugin."
        );
        let _ = writeln!(out, "# TYPE berth_csi_plugin_restarts_total counter");
        for p in &status {
            if let Some(s) = &p.supervisor {
                let _ = writeln!(
                    out,
                    "berth_csi_plugin_restarts_total{{plugin=\"{}\"}} {}",
                    label(&p.plugin_type),
                    s.restarts
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP berth_csi_retry_queue_depth CSI volumes with a pending intent (the retry queue)."
        );
        let _ = writeln!(out, "# TYPE berth_csi_retry_queue_depth gauge");
        for p in &started {
            let _ = writeln!(
                out,
                "berth_csi_retry_queue_depth{{plugin=\"{}\"}} {}",
                label(&p.config().plugin_type),
                p.manager().pending_count()
            );
        }
        out
    }

    /// Serves `GET /metrics` on `addr` in the background.
    ///
    /// # Errors
    /// Bind failure.
    pub async fn spawn(
        agent: Arc<Agent>,
        addr: std::net::SocketAddr,
        usage: UsageCache,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind metrics address {addr}"))?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let agent = Arc::clone(&agent);
                let usage = usage.get();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        render(&agent, &usage).await,
                    )
                }
            }),
        );
        Ok(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "metrics server stopped");
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn metrics_address_defaults_to_loopback() {
        assert_eq!(
            parse_metrics("9100").unwrap(),
            "127.0.0.1:9100".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_metrics("0.0.0.0:9100").unwrap(),
            "0.0.0.0:9100".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_metrics("[::1]:9100").unwrap(),
            "[::1]:9100".parse::<SocketAddr>().unwrap()
        );
        assert!(parse_metrics("localhost:9100").is_err());
        assert!(parse_metrics("").is_err());
    }

    #[test]
    fn listen_takes_absolute_unix_paths_only() {
        assert_eq!(
            parse_listen("unix:///run/berth.sock").unwrap(),
            PathBuf::from("/run/berth.sock")
        );
        assert!(parse_listen("unix:relative.sock").is_err());
        assert!(parse_listen("tcp:127.0.0.1:1").is_err());
    }
}
