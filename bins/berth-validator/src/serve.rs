//! `berth-validator serve`: the `berth.v1.Validator` gRPC service
//! (`proto/berth/v1/validator.proto`) on a unix socket or a TCP address.
//!
//! * `Validate` and `Apply` take one request, either typed (Mesos `Resource` and
//!   `Offer.Operation` messages, a [`pb::Context`] and optional ACLs) or as one line of the batch
//!   JSON format, and answer with the verdict of the master's pipeline
//!   ([`berth_offers::pipeline`]): valid, or the failing stage (`parse`, `validate`, `apply`) and
//!   the error text. `Validate` runs the whole pipeline, apply step included, so that it always
//!   agrees with `Apply`; only `Apply` returns the resulting resources.
//! * `Batch` is `berth-validator batch` as a bidirectional stream: one answer per request line,
//!   in order; a bad line gets a `parse` answer and the stream goes on.
//! * `Ping` does nothing: health checks, and the transport-only baseline of the benchmarks.
//!
//! The server runs on a current-thread tokio runtime: a call costs microseconds of CPU, less
//! than a cross-core wake-up on a multi-thread runtime.
//!
//! Unix sockets: a socket file left behind by a dead server is replaced; a socket that a server
//! still accepts on, or a path that is not a socket, is refused. SIGINT and SIGTERM stop the
//! server (in-flight calls get [`GRACE`] to finish) and remove the socket file it created.

use std::fmt;
use std::future::Future;
use std::io::{ErrorKind, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use berth_offers::acl::{Acls, Authorizer};
use berth_offers::{
    AgentCapabilities, Api, Context, Framework, FrameworkCapability, Operation, StageError, batch,
    pipeline,
};
use berth_proto::berth::v1 as pb;
use berth_proto::berth::v1::validator_server::{Validator, ValidatorServer};
use berth_proto::mesos::v1 as mesos;
use berth_resources::Resources;
use berth_resources::json::to_json_value;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::{Request, Response, Status, Streaming};

/// How long in-flight calls may run on after a shutdown signal before the server stops anyway.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long probing an existing socket file for a live server may take.
const PROBE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The address.

/// Where to listen: `unix:PATH` or `tcp:IP:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// `unix:PATH` (also `unix://PATH`, as gRPC clients write it).
    Unix(PathBuf),
    /// `tcp:IP:PORT` (an IP literal: no name is resolved); port 0 picks a free port.
    Tcp(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if let Some(rest) = s.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, e.g. unix:/run/berth/validator.sock".to_owned(),
                );
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let addr = rest.strip_prefix("//").unwrap_or(rest);
            return addr.parse().map(Listen::Tcp).map_err(|_| {
                format!(
                    "tcp: needs IP:PORT (an IP literal, e.g. tcp:127.0.0.1:50051 or tcp:[::1]:0), \
                     got '{addr}'"
                )
            });
        }
        Err(format!(
            "expected unix:PATH or tcp:IP:PORT (e.g. unix:/run/berth/validator.sock or \
             tcp:127.0.0.1:50051), got '{s}'"
        ))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
            Listen::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The service.

/// The `berth.v1.Validator` service. Stateless: every call is answered from its request alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValidatorService;

/// The service, ready for `tonic::transport::Server::add_service`.
#[must_use]
pub fn service() -> ValidatorServer<ValidatorService> {
    ValidatorServer::new(ValidatorService)
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::BatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Validator for ValidatorService {
    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        answer(request.get_ref(), false).map(Response::new)
    }

    async fn apply(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        answer(request.get_ref(), true).map(Response::new)
    }

    type BatchStream = BatchStream;

    async fn batch(
        &self,
        request: Request<Streaming<pb::BatchRequest>>,
    ) -> Result<Response<BatchStream>, Status> {
        // Answered as each request arrives, in order, with the stream's own back-pressure.
        let answers = request.into_inner().map(|item| {
            item.map(|r| pb::BatchResponse {
                json: answer_batch_line(&r.json),
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn ping(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }
}

/// Answers one `Batch` request line exactly as `berth-validator batch` answers an input line.
#[must_use]
pub fn answer_batch_line(line: &str) -> String {
    let trimmed = line.trim();
    let answer = if trimmed.is_empty() {
        json!({"valid": false, "stage": "parse", "error": "empty line"})
    } else {
        batch::answer_line(trimmed)
    };
    answer.to_string()
}

/// Answers a `Validate` (`with_resources` false) or `Apply` (`with_resources` true) request.
///
/// # Errors
/// `INTERNAL` if the batch engine's answer does not read back as resources (a bug).
pub fn answer(
    request: &pb::ValidateRequest,
    with_resources: bool,
) -> Result<pb::ValidateResponse, Status> {
    if !request.json.is_empty() {
        if has_typed_fields(request) {
            return Ok(failure(&parse_err(
                "set either `json` or the typed fields (resources, operation, context, \
                 acls_json), not both",
            )));
        }
        let answer = batch::answer_line(&request.json);
        let mut out = from_batch_answer(&answer, with_resources)?;
        out.json = answer.to_string();
        return Ok(out);
    }
    let Some(operation) = &request.operation else {
        // Resource validation: the batch engine's own, fed the same resources as Mesos JSON, so
        // the two cannot drift apart.
        let resources: Vec<Json> = request.resources.iter().map(to_json_value).collect();
        return from_batch_answer(
            &batch::answer(&json!({"resources": resources})),
            with_resources,
        );
    };
    Ok(match evaluate(request, operation) {
        Ok(after) => pb::ValidateResponse {
            valid: true,
            resources_after: if with_resources {
                after.to_proto_list()
            } else {
                Vec::new()
            },
            ..pb::ValidateResponse::default()
        },
        Err(e) => failure(&e),
    })
}

fn has_typed_fields(request: &pb::ValidateRequest) -> bool {
    !request.resources.is_empty()
        || request.operation.is_some()
        || request.context.is_some()
        || !request.acls_json.is_empty()
}

fn parse_err(message: impl Into<String>) -> StageError {
    StageError {
        stage: "parse",
        message: message.into(),
    }
}

fn failure(e: &StageError) -> pb::ValidateResponse {
    pb::ValidateResponse {
        valid: false,
        stage: e.stage.to_owned(),
        error: e.message.clone(),
        ..pb::ValidateResponse::default()
    }
}

/// Reads an answer object of the batch format into a response. Answers without `valid`
/// (arithmetic) are valid; the resources are `resources_after`, `upgraded` (resource
/// validation) or `result` (arithmetic), whichever the answer has.
fn from_batch_answer(answer: &Json, with_resources: bool) -> Result<pb::ValidateResponse, Status> {
    let text = |key: &str| {
        answer
            .get(key)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut out = pb::ValidateResponse {
        valid: answer.get("valid").and_then(Json::as_bool).unwrap_or(true),
        stage: text("stage"),
        error: text("error"),
        ..pb::ValidateResponse::default()
    };
    if with_resources
        && let Some(list) = ["resources_after", "upgraded", "result"]
            .iter()
            .find_map(|key| answer.get(*key))
    {
        out.resources_after = pipeline::parse_proto_list(list).map_err(|e| {
            Status::internal(format!(
                "reading back the answer's resources: {}",
                e.message
            ))
        })?;
    }
    Ok(out)
}

/// The pipeline on typed input, with the stages of [`pipeline::evaluate`] on JSON input: the
/// ACLs, resources and context are `parse`, reading the operation is `validate`, then
/// [`pipeline::run`] (`validate`, `apply`).
fn evaluate(
    request: &pb::ValidateRequest,
    operation: &mesos::offer::Operation,
) -> Result<Resources, StageError> {
    let acls = if request.acls_json.trim().is_empty() {
        None
    } else {
        Some(
            Acls::from_json(&request.acls_json)
                .map_err(|e| parse_err(format!("invalid acls: {e}")))?,
        )
    };
    let resources = resources(&request.resources)?;
    let ctx = context(request.context.as_ref())?;
    let op = Operation::from_proto(operation).map_err(|e| StageError::validate(&e))?;
    pipeline::run(
        &resources,
        op,
        &ctx,
        acls.as_ref().map(|a| a as &dyn Authorizer),
    )
}

/// As [`pipeline::parse_resources`]: any failure is at stage `parse`.
fn resources(list: &[mesos::Resource]) -> Result<Resources, StageError> {
    Resources::from_proto_list(list).map_err(|e| parse_err(e.to_string()))
}

/// As [`pipeline::parse_context`], from the message.
fn context(message: Option<&pb::Context>) -> Result<Context, StageError> {
    use pb::context::Api as PbApi;

    let mut ctx = Context::operator();
    let Some(c) = message else {
        return Ok(ctx);
    };
    ctx.principal.clone_from(&c.principal);
    ctx.offer_allocation_role
        .clone_from(&c.offer_allocation_role);
    let api = PbApi::try_from(c.api).map_err(|_| parse_err(format!("unknown api {}", c.api)))?;
    match (api, &c.framework) {
        (PbApi::Framework | PbApi::Unspecified, Some(fw)) => {
            let framework = Framework {
                id: fw.id.clone(),
                roles: fw.roles.clone(),
                capabilities: fw
                    .capabilities
                    .iter()
                    .map(|name| FrameworkCapability::from_name(name))
                    .collect(),
                principal: fw.principal.clone(),
            };
            if ctx.principal.is_none() {
                ctx.principal.clone_from(&framework.principal);
            }
            ctx.api = Api::Framework(framework);
        }
        (PbApi::Framework, None) => {
            return Err(parse_err(
                "context.framework is required on the framework API",
            ));
        }
        (PbApi::Operator | PbApi::Unspecified, _) => ctx.api = Api::Operator,
    }
    if let Some(caps) = &c.agent_capabilities {
        ctx.agent = AgentCapabilities {
            hierarchical_role: caps.hierarchical_role,
            reservation_refinement: caps.reservation_refinement,
            resize_volume: caps.resize_volume,
        };
    }
    ctx.checkpointed = resources(&c.agent_checkpointed_resources)?;
    ctx.used = c
        .agent_used_resources
        .iter()
        .map(|(framework, list)| Ok((framework.clone(), resources(&list.resources)?)))
        .collect::<Result<_, StageError>>()?;
    Ok(ctx)
}

// ---------------------------------------------------------------------------------------------
// The server.

/// `berth-validator serve`: binds `listen` on a current-thread runtime, prints
/// `listening on <address>` on standard output (with a TCP port 0 resolved), and serves until
/// SIGINT or SIGTERM.
///
/// # Errors
/// The runtime or the signal handlers cannot be set up, binding fails (see [`Bound::bind`]),
/// or the server fails.
pub fn run(listen: &Listen) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        // Handlers first: a signal right after the address is printed must still clean up.
        let mut signals = Signals::install()?;
        let bound = Bound::bind(listen).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {}", bound.local()).context("writing standard output")?;
            out.flush().context("writing standard output")?;
        }
        tracing::info!(address = %bound.local(), "serving berth.v1.Validator");
        bound
            .serve(async move {
                let name = signals.recv().await;
                tracing::info!("{name}: shutting down");
            })
            .await
    })
}

struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("installing a SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing a SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// A bound listening socket, ready to [`serve`](Bound::serve).
#[derive(Debug)]
pub struct Bound {
    local: Listen,
    listener: Listener,
}

#[derive(Debug)]
enum Listener {
    Unix {
        listener: tokio::net::UnixListener,
        file: SocketFile,
    },
    Tcp(tokio::net::TcpListener),
}

impl Bound {
    /// Binds `listen`; must run inside a tokio runtime with I/O and time enabled.
    ///
    /// A unix socket path that holds a socket nobody accepts on (a server that died) is
    /// replaced; a path with a live server, or anything but a socket, is refused.
    ///
    /// # Errors
    /// The path is refused, or binding fails.
    pub async fn bind(listen: &Listen) -> Result<Bound> {
        match listen {
            Listen::Unix(path) => {
                clear_stale_socket(path).await?;
                let listener = tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("binding {}", path.display()))?;
                let file = SocketFile::of(path)?;
                Ok(Bound {
                    local: listen.clone(),
                    listener: Listener::Unix { listener, file },
                })
            }
            Listen::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                let local = listener
                    .local_addr()
                    .with_context(|| format!("reading the address bound for {addr}"))?;
                if !local.ip().is_loopback() {
                    tracing::warn!(
                        address = %local,
                        "serving on a non-loopback address, without TLS or authentication"
                    );
                }
                Ok(Bound {
                    local: Listen::Tcp(local),
                    listener: Listener::Tcp(listener),
                })
            }
        }
    }

    /// Where it listens (a TCP port 0 resolved to the port bound).
    #[must_use]
    pub fn local(&self) -> &Listen {
        &self.local
    }

    /// Serves [`service()`] until `shutdown` completes, then lets in-flight calls finish for
    /// at most [`GRACE`], and removes the unix socket file (if it is still the one bound).
    ///
    /// # Errors
    /// The server fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        match self.listener {
            Listener::Unix { listener, file } => {
                let result = serve_incoming(UnixListenerStream::new(listener), shutdown).await;
                drop(file);
                result
            }
            Listener::Tcp(listener) => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                serve_incoming(incoming, shutdown).await
            }
        }
    }
}

async fn serve_incoming<I, IO, IE>(incoming: I, shutdown: impl Future<Output = ()>) -> Result<()>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(service())
        .serve_with_incoming_shutdown(incoming, async move {
            stopped.await.ok();
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.context("serving gRPC"),
        () = shutdown => {}
    }
    stop.send(()).ok();
    match tokio::time::timeout(GRACE, &mut server).await {
        Ok(result) => result.context("serving gRPC"),
        Err(_) => {
            tracing::warn!("calls still running {GRACE:?} after the shutdown signal; stopping");
            Ok(())
        }
    }
}

/// Refuses a path that is not a socket or that a live server accepts on; removes a socket
/// file nobody accepts on.
async fn clear_stale_socket(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    match tokio::time::timeout(PROBE, tokio::net::UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
            tracing::info!(path = %path.display(), "removed a stale socket");
            Ok(())
        }
        Ok(Ok(_)) | Err(_) => bail!(
            "another server is listening on {}; stop it or choose another --listen path",
            path.display()
        ),
        Ok(Err(e)) => {
            Err(e).with_context(|| format!("probing the existing socket {}", path.display()))
        }
    }
}

/// The socket file a server bound; removed on drop if the path still holds that very file.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &Path) -> Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)
            .with_context(|| format!("inspecting the bound socket {}", path.display()))?;
        Ok(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "unix:/run/v.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/v.sock".into()))
        );
        assert_eq!(
            "unix:///run/v.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/v.sock".into()))
        );
        assert_eq!(
            "unix:v.sock".parse::<Listen>(),
            Ok(Listen::Unix("v.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:0".parse::<Listen>(),
            Ok(Listen::Tcp(([127, 0, 0, 1], 0).into()))
        );
        assert!(
            matches!("tcp:[::1]:50051".parse::<Listen>(), Ok(Listen::Tcp(a)) if a.port() == 50051)
        );
        for bad in [
            "",
            "unix:",
            "tcp:",
            "tcp:localhost:80",
            "tcp:127.0.0.1",
            "/run/v.sock",
            "http://x",
        ] {
            assert!(bad.parse::<Listen>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            Listen::Tcp(([127, 0, 0, 1], 5).into()).to_string(),
            "tcp:127.0.0.1:5"
        );
    }

    #[test]
    fn json_and_typed_fields_are_exclusive() {
        let request = pb::ValidateRequest {
            json: "{}".to_owned(),
            acls_json: "{}".to_owned(),
            ..pb::ValidateRequest::default()
        };
        let out = answer(&request, false).unwrap();
        assert!(!out.valid);
        assert_eq!(out.stage, "parse");
    }

    #[test]
    fn framework_api_needs_a_framework() {
        let c = pb::Context {
            api: pb::context::Api::Framework as i32,
            ..pb::Context::default()
        };
        assert_eq!(context(Some(&c)).unwrap_err().stage, "parse");
        let c = pb::Context {
            api: 42,
            ..pb::Context::default()
        };
        assert_eq!(context(Some(&c)).unwrap_err().stage, "parse");
    }

    #[test]
    fn empty_batch_lines_are_parse_failures() {
        let answer: Json = serde_json::from_str(&answer_batch_line("  \n")).unwrap();
        assert_eq!(answer["stage"], "parse");
        let answer: Json = serde_json::from_str(&answer_batch_line("garbage")).unwrap();
        assert_eq!(answer["valid"], false);
    }
}
