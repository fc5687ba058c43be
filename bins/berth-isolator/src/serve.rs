//! `berth-isolator serve`: the `berth.v1.Isolator` gRPC service on a unix socket, recovering
//! on start, with an optional Prometheus-format metrics endpoint.
//!
//! On start the server recovers with every recorded container treated as live: complete
//! prepares are kept, interrupted ones rolled back, interrupted cleanups finished. The
//! containerizer's own `Recover` call (with its real live and orphan lists) then settles the
//! rest. Nothing a running container uses is torn down before someone says it is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use berth_agent::ErrorCode;
use berth_agent::container::ContainerConfig;
use berth_proto::berth::v1 as pb;
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

/// Runs an operation on its own task, so a client that gives up (deadline, disconnect) does
/// not cancel it half-way: a prepare always finishes or undoes itself.
async fn detached<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T, AgentError>> + Send + 'static,
) -> Result<T, Status> {
    match tokio::spawn(fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(status(&e)),
        Err(join) => Err(Status::internal(format!("operation task failed: {join}"))),
    }
}

fn resources_response(r: ResourcesView) -> pb::ResourcesResponse {
    pb::ResourcesResponse {
        checkpointed: r.checkpointed,
        total: r.total,
    }
}

#[tonic::async_trait]
impl IsolatorRpc for Service {
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
        };
        cfg.check()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let agent = Arc::clone(&self.agent);
        let mounts = detached(async move { agent.prepare(&cfg).await }).await?;
        Ok(Response::new(pb::PrepareResponse {
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
        let id = request.into_inner().container_id;
        berth_mount::names::ContainerId::new(&id)
            .map_err(|e| Status::invalid_argument(format!("container_id: {e}")))?;
        let agent = Arc::clone(&self.agent);
        detached(async move { agent.cleanup(&id).await }).await?;
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
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let containers = self
            .agent
            .isolator()
            .status()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::StatusResponse {
            containers: containers
                .into_iter()
                .map(|c| pb::ContainerStatus {
                    container_id: c.container_id,
                    state: c.state.to_owned(),
                    last_error: c.last_error.unwrap_or_default(),
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

/// Serves until SIGINT or SIGTERM: binds `socket` (a stale socket file is replaced), recovers,
/// serves, and on the signal stops accepting, lets calls in flight finish and stops managed
/// plugins. `ready` is called once the socket accepts connections.
///
/// # Errors
/// Bind failures, recovery failures, server errors.
pub async fn run(
    agent: Arc<Agent>,
    socket: &Path,
    metrics: Option<std::net::SocketAddr>,
    ready: impl FnOnce(),
) -> Result<()> {
    agent.recover_on_start().await?;
    if socket.exists() {
        std::fs::remove_file(socket)
            .with_context(|| format!("remove stale socket {}", socket.display()))?;
    }
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let uds = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("bind {}", socket.display()))?;
    // The persisted retry queues (failed unpublish/unstage/unmount) drain in the background.
    let retry = agent.spawn_retry_loops(std::time::Duration::from_secs(30));
    let metrics_task = match metrics {
        Some(addr) => Some(crate::serve::metrics::spawn(Arc::clone(&agent), addr).await?),
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
    tonic::transport::Server::builder()
        .add_service(IsolatorServer::new(Service::new(Arc::clone(&agent))))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(uds),
            shutdown,
        )
        .await
        .context("gRPC server")?;
    if let Some(t) = metrics_task {
        t.abort();
    }
    retry.stop();
    let _ = std::fs::remove_file(socket);
    agent.shutdown().await;
    Ok(())
}

/// The Prometheus text endpoint (`GET /metrics`).
pub mod metrics {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use anyhow::{Context as _, Result};

    use crate::agent::Agent;

    /// A label value as the exposition format wants it (`\\`, `\"` and `\n` escaped).
    fn label(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    /// The metrics text of `agent` (Prometheus exposition format 0.0.4).
    pub async fn render(agent: &Agent) -> String {
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
    ) -> Result<tokio::task::JoinHandle<()>> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind metrics address {addr}"))?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let agent = Arc::clone(&agent);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        render(&agent).await,
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
