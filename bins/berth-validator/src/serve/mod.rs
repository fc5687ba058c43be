//! `berth-validator serve`: the `berth.v1.Validator` gRPC service
//! (`proto/berth/v1/validator.proto`) on a unix socket or a TCP address, for many schedulers.
//!
//! * `Validate` and `Apply` take one request, either typed (Mesos `Resource` and
//!   `Offer.Operation` messages, a [`pb::Context`] and optional ACLs) or as one line of the batch
//!   JSON format, and answer with the verdict of the master's pipeline
//!   ([`berth_offers::pipeline`]): valid, or the failing stage (`parse`, `validate`, `apply`) and
//!   the error text. `Validate` runs the whole pipeline, apply step included, so that it always
//!   agrees with `Apply`; only `Apply` returns the resulting resources.
//! * `Batch` is `berth-validator batch` as a bidirectional stream: one answer per request line,
//!   in order; a bad line (not UTF-8, not JSON) gets a `parse` answer, a refused one a
//!   `refused` answer, and the stream goes on.
//! * `Ping` does nothing: health checks, and the transport-only baseline of the benchmarks.
//!
//! Shared by many clients, the server trusts none of them ([`Options`]):
//!
//! * The principal comes from authentication ([`auth`]): the client certificate of a TLS
//!   connection, HTTP basic credentials, or the uid of a unix-socket peer. A request naming
//!   another principal is refused (PERMISSION_DENIED). With no authentication configured the
//!   request's principal is believed, and the server says so when it starts.
//! * The server's own ACLs (`--acls`) authorize every operation; ACLs in a request are refused
//!   unless `--allow-request-acls`.
//! * TCP is served over TLS; plain TCP only with `--insecure-tcp` on a loopback address.
//! * [`Limits`]: message size (checked on the wire before the message is read), resources per
//!   request, a per-call deadline and a bound on concurrent calls. The runtime is multi-thread,
//!   and a request larger than [`INLINE_BYTES`] is answered on the blocking pool, so one large
//!   request never holds back small ones.
//!
//! Unix sockets: created 0600 (0660 with `--socket-group`), their directory 0750 when the
//! server creates it. A socket file left behind by a dead server is replaced; a socket that a
//! server still accepts on, or a path that is not a socket, is refused. SIGINT and SIGTERM stop
//! the server (in-flight calls get [`GRACE`] to finish) and remove the socket file it created.

pub mod auth;
pub mod limits;

pub use limits::Limits;

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use berth_offers::StageError;
use berth_offers::acl::{Acls, Authorizer};
use berth_offers::batch::{Policy, Refusal};
use berth_offers::{
    AgentCapabilities, Api, Context, Framework, FrameworkCapability, Operation, batch, pipeline,
};
use berth_proto::berth::v1 as pb;
use berth_proto::berth::v1::validator_server::{Validator, ValidatorServer};
use berth_proto::mesos::v1 as mesos;
use berth_resources::Resources;
use berth_resources::json::to_json_value;
use prost::Message as _;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::{Connected, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// How long in-flight calls may run on after a shutdown signal before the server stops anyway.
pub const GRACE: Duration = Duration::from_secs(5);

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

/// Requests whose encoding is larger than this are answered on tokio's blocking pool under the
/// call's deadline; smaller ones (microseconds of work) inline, where a thread hop would cost
/// more than the answer.
pub const INLINE_BYTES: usize = 64 << 10;

/// What every call of a server shares: how callers authenticate, the server's ACLs, its limits
/// and its call slots.
#[derive(Debug)]
pub struct Shared {
    auth: auth::Authenticator,
    acls: Option<Acls>,
    allow_request_acls: bool,
    limits: Limits,
    slots: Arc<Semaphore>,
}

impl Shared {
    /// A server's shared state.
    #[must_use]
    pub fn new(
        auth: auth::Authenticator,
        acls: Option<Acls>,
        allow_request_acls: bool,
        limits: Limits,
    ) -> Shared {
        Shared {
            auth,
            acls,
            allow_request_acls,
            slots: Arc::new(Semaphore::new(limits.max_concurrent_calls.max(1))),
            limits,
        }
    }

    /// No authentication, no server ACLs, request ACLs allowed, default limits: the service of
    /// [`service()`] (tests and benchmarks).
    #[must_use]
    pub fn trusting() -> Shared {
        Shared::new(
            auth::Authenticator::default(),
            None,
            true,
            Limits::default(),
        )
    }

    /// The policy imposed on a request of `principal`.
    fn policy<'a>(&'a self, principal: Option<&'a str>) -> Policy<'a> {
        Policy {
            principal,
            acls: self.acls.as_ref().map(|a| a as &dyn Authorizer),
            allow_request_acls: self.allow_request_acls,
            max_resources: Some(self.limits.max_resources),
        }
    }

    /// Runs `work` in a call slot under the call's deadline: inline when `inline`, else on the
    /// blocking pool (the slot stays taken until the work ends, deadline or not: it cannot be
    /// interrupted, and the slots bound the CPU the server spends).
    async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        inline: bool,
        work: impl FnOnce(&Shared) -> R + Send + 'static,
    ) -> Result<R, Status> {
        let deadline = tokio::time::Instant::now() + self.limits.call_timeout;
        let slot = match tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Err(Status::unavailable("the server is stopping")),
            Err(_) => {
                return Err(Status::resource_exhausted(format!(
                    "all {} call slots stayed busy for the call's deadline of {:?} \
                     (--max-concurrent-calls, --call-timeout)",
                    self.limits.max_concurrent_calls, self.limits.call_timeout
                )));
            }
        };
        if inline {
            let result = work(self);
            drop(slot);
            return Ok(result);
        }
        let shared = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work(&shared)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => Err(Status::internal(format!("the validation task failed: {e}"))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the call took longer than {:?} (--call-timeout)",
                self.limits.call_timeout
            ))),
        }
    }
}

/// The `berth.v1.Validator` service. Stateless but for [`Shared`]: every call is answered from
/// its request and the caller's authenticated principal.
#[derive(Clone, Debug)]
pub struct ValidatorService {
    shared: Arc<Shared>,
}

impl ValidatorService {
    /// The service of a server.
    #[must_use]
    pub fn new(shared: Arc<Shared>) -> ValidatorService {
        ValidatorService { shared }
    }

    async fn call(
        &self,
        request: Request<pb::ValidateRequest>,
        with_resources: bool,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let principal = self.shared.auth.authenticate(&request)?;
        let request = request.into_inner();
        let inline = request.encoded_len() <= INLINE_BYTES;
        let answer = self
            .shared
            .run(inline, move |shared| {
                answer_with(
                    &request,
                    with_resources,
                    &shared.policy(principal.as_deref()),
                )
            })
            .await?;
        if let Err(status) = &answer {
            tracing::info!(code = ?status.code(), message = status.message(), "refused a call");
        }
        answer.map(Response::new)
    }
}

/// The service with no authentication, no server ACLs and default limits, ready for
/// `tonic::transport::Server::add_service`.
#[must_use]
pub fn service() -> ValidatorServer<ValidatorService> {
    ValidatorServer::new(ValidatorService::new(Arc::new(Shared::trusting())))
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::BatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Validator for ValidatorService {
    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        self.call(request, false).await
    }

    async fn apply(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        self.call(request, true).await
    }

    type BatchStream = BatchStream;

    async fn batch(
        &self,
        request: Request<Streaming<pb::BatchRequest>>,
    ) -> Result<Response<BatchStream>, Status> {
        let principal: Option<Arc<str>> = self.shared.auth.authenticate(&request)?.map(Arc::from);
        let shared = Arc::clone(&self.shared);
        // Answered as each request arrives, in order, with the stream's own back-pressure. A
        // line that misses its slot or deadline gets a `refused` answer; only a message that
        // does not decode (or is past --max-request-bytes) ends the stream, with its status.
        let answers = request.into_inner().then(move |item| {
            let shared = Arc::clone(&shared);
            let principal = principal.clone();
            async move {
                let line = item?.json;
                let inline = line.len() <= INLINE_BYTES;
                let json = shared
                    .run(inline, move |shared| {
                        answer_batch_bytes(&line, &shared.policy(principal.as_deref()))
                    })
                    .await
                    .unwrap_or_else(|status| refused_line(&status));
                Ok(pb::BatchResponse { json })
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn ping(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }
}

/// The `refused` answer of a `Batch` line that got no answer (no slot, past its deadline).
fn refused_line(status: &Status) -> String {
    let code = match status.code() {
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::Unavailable => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json!({"valid": false, "stage": "refused", "code": code, "error": status.message()}).to_string()
}

/// Answers one `Batch` request line exactly as `berth-validator batch` answers an input line.
#[must_use]
pub fn answer_batch_line(line: &str) -> String {
    answer_batch_bytes(line.as_bytes(), &Policy::default())
}

/// Answers one `Batch` line (any bytes) under `policy`, as `berth-validator batch` would.
#[must_use]
pub fn answer_batch_bytes(line: &[u8], policy: &Policy<'_>) -> String {
    let mut out = Vec::new();
    match batch::write_answer_with(line, policy, &mut out) {
        Ok(_) => {
            // The engine writes JSON (UTF-8) and a newline.
            let text = String::from_utf8_lossy(&out);
            text.trim_end().to_owned()
        }
        Err(e) => json!({"valid": false, "stage": "parse", "error": e.to_string()}).to_string(),
    }
}

/// The gRPC status of a refusal.
fn refusal_status(refusal: &Refusal) -> Status {
    match refusal {
        Refusal::PermissionDenied(m) => Status::permission_denied(m.clone()),
        Refusal::ResourceExhausted(m) => Status::resource_exhausted(m.clone()),
    }
}

/// Answers a `Validate` (`with_resources` false) or `Apply` (`with_resources` true) request,
/// trusting it ([`Policy::default`]).
///
/// # Errors
/// `INTERNAL` if the batch engine's answer does not read back as resources (a bug).
pub fn answer(
    request: &pb::ValidateRequest,
    with_resources: bool,
) -> Result<pb::ValidateResponse, Status> {
    answer_with(request, with_resources, &Policy::default())
}

/// Answers a `Validate` or `Apply` request under `policy`.
///
/// # Errors
/// PERMISSION_DENIED or RESOURCE_EXHAUSTED when the policy refuses the request; `INTERNAL` if
/// the batch engine's answer does not read back as resources (a bug).
pub fn answer_with(
    request: &pb::ValidateRequest,
    with_resources: bool,
    policy: &Policy<'_>,
) -> Result<pb::ValidateResponse, Status> {
    if !request.json.is_empty() {
        if has_typed_fields(request) {
            return Ok(failure(&parse_err(
                "set either `json` or the typed fields (resources, operation, context, \
                 acls_json), not both",
            )));
        }
        let mut out = Vec::new();
        let verdict = batch::write_answer_with(request.json.as_bytes(), policy, &mut out)
            .map_err(|e| Status::internal(format!("writing the answer: {e}")))?;
        if let batch::Verdict::Refused(refusal) = verdict {
            return Err(refusal_status(&refusal));
        }
        let answer: Json = serde_json::from_slice(&out)
            .map_err(|e| Status::internal(format!("reading back the answer: {e}")))?;
        let mut out = from_batch_answer(&answer, with_resources)?;
        out.json = answer.to_string();
        return Ok(out);
    }
    policy
        .check_request_acls(!request.acls_json.trim().is_empty())
        .map_err(|r| refusal_status(&r))?;
    policy
        .check_resources(typed_resources(request))
        .map_err(|r| refusal_status(&r))?;
    let Some(operation) = &request.operation else {
        // Resource validation: the batch engine's own, fed the same resources as Mesos JSON, so
        // the two cannot drift apart.
        let resources: Vec<Json> = request.resources.iter().map(to_json_value).collect();
        return from_batch_answer(
            &batch::answer(&json!({"resources": resources})),
            with_resources,
        );
    };
    Ok(match evaluate(request, operation, policy) {
        Ok(after) => pb::ValidateResponse {
            valid: true,
            resources_after: if with_resources {
                after.to_proto_list()
            } else {
                Vec::new()
            },
            ..pb::ValidateResponse::default()
        },
        Err(Outcome::Failed(e)) => failure(&e),
        Err(Outcome::Refused(r)) => return Err(refusal_status(&r)),
    })
}

/// The resource objects of a typed request, all lists together.
fn typed_resources(request: &pb::ValidateRequest) -> usize {
    let context = request.context.as_ref().map_or(0, |c| {
        c.agent_checkpointed_resources.len()
            + c.agent_used_resources
                .values()
                .map(|l| l.resources.len())
                .sum::<usize>()
    });
    request.resources.len()
        + context
        + request
            .operation
            .as_deref()
            .map_or(0, batch::operation_resources)
}

/// Why a typed request has no resulting resources.
enum Outcome {
    Failed(StageError),
    Refused(Refusal),
}

impl From<StageError> for Outcome {
    fn from(e: StageError) -> Outcome {
        Outcome::Failed(e)
    }
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
/// [`pipeline::run`] (`validate`, `apply`). The policy claims the context for the
/// authenticated principal and supplies the server's ACLs.
fn evaluate(
    request: &pb::ValidateRequest,
    operation: &mesos::offer::Operation,
    policy: &Policy<'_>,
) -> Result<Resources, Outcome> {
    let acls = if request.acls_json.trim().is_empty() {
        None
    } else {
        Some(
            Acls::from_json(&request.acls_json)
                .map_err(|e| parse_err(format!("invalid acls: {e}")))?,
        )
    };
    let resources = resources(&request.resources)?;
    let mut ctx = context(request.context.as_ref())?;
    policy.claim(&mut ctx).map_err(Outcome::Refused)?;
    let op = Operation::from_proto(operation).map_err(|e| StageError::validate(&e))?;
    Ok(pipeline::run(
        &resources,
        op,
        &ctx,
        policy.authorizer(acls.as_ref()),
    )?)
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

/// How `serve` runs: TLS, authentication, ACLs, limits, the socket's access, threads.
/// [`Options::default`] is a unix-socket server with no authentication and default limits.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// TLS for a TCP listener.
    pub tls: Option<TlsFiles>,
    /// Plain TCP, on a loopback address only.
    pub insecure_tcp: bool,
    /// `--credentials` and `--uid-principals`.
    pub auth: auth::AuthFiles,
    /// `--socket-group`: the unix socket is 0660 with this group (else 0600).
    pub socket_group: Option<String>,
    /// `--acls`: the server's ACLs, for every call.
    pub acls: Option<PathBuf>,
    /// `--allow-request-acls`.
    pub allow_request_acls: bool,
    /// The bounds on a call.
    pub limits: Limits,
    /// Runtime worker threads (default: the available cores, at least 2).
    pub threads: Option<usize>,
}

/// The PEM files of a TLS listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// CA certificates for client certificates: when set, a client must present a certificate
    /// signed by one (unless basic credentials are configured too, then either will do), and
    /// its subject common name is the principal.
    pub client_ca: Option<PathBuf>,
}

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// `berth-validator serve`: binds `listen` on a multi-thread runtime, prints
/// `listening on <address>` on standard output (with a TCP port 0 resolved), and serves until
/// SIGINT or SIGTERM.
///
/// # Errors
/// The runtime or the signal handlers cannot be set up, the options are refused or their
/// files cannot be read, binding fails (see [`Bound::bind_with`]), or the server fails.
pub fn run(listen: &Listen, options: &Options) -> Result<()> {
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(2)
            .max(2)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .max_blocking_threads(options.limits.max_concurrent_calls.max(1) + 8)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        // Handlers first: a signal right after the address is printed must still clean up.
        let mut signals = Signals::install()?;
        let bound = Bound::bind_with(listen, options).await?;
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

/// A bound listening socket and the loaded configuration, ready to [`serve`](Bound::serve).
#[derive(Debug)]
pub struct Bound {
    local: Listen,
    listener: Listener,
    shared: Arc<Shared>,
    tls: Option<ServerTlsConfig>,
}

#[derive(Debug)]
enum Listener {
    Unix {
        listener: tokio::net::UnixListener,
        file: berth_rpc::unix::SocketFile,
    },
    Tcp(tokio::net::TcpListener),
}

/// Refuses option combinations that make no sense or are unsafe.
fn check_options(listen: &Listen, options: &Options) -> Result<()> {
    match listen {
        Listen::Unix(_) => {
            if options.tls.is_some() {
                bail!(
                    "--tls-cert/--tls-key/--client-ca are for TCP listeners; a unix socket \
                     authenticates its peers by uid (--uid-principals)"
                );
            }
            if options.insecure_tcp {
                bail!("--insecure-tcp is for a TCP listener");
            }
        }
        Listen::Tcp(addr) => {
            if options.auth.uid_principals.is_some() || options.socket_group.is_some() {
                bail!("--uid-principals and --socket-group are for a unix socket listener");
            }
            match (&options.tls, options.insecure_tcp) {
                (Some(_), true) => bail!("--insecure-tcp and --tls-cert exclude each other"),
                (Some(_), false) => {}
                (None, true) if addr.ip().is_loopback() => {}
                (None, true) => bail!(
                    "--insecure-tcp is allowed on a loopback address only, not {addr}: give \
                     --tls-cert and --tls-key"
                ),
                (None, false) => bail!(
                    "plain TCP is refused: give --tls-cert and --tls-key (and --client-ca or \
                     --credentials to authenticate callers), or --insecure-tcp on a loopback \
                     address"
                ),
            }
        }
    }
    Ok(())
}

/// Reads the files of `options`: the authenticator, the ACLs, the TLS configuration.
fn load(options: &Options) -> Result<(Shared, Option<ServerTlsConfig>)> {
    let credentials = match &options.auth.credentials {
        Some(path) => {
            warn_if_readable_by_others(path);
            let credentials = auth::Credentials::load(path)?;
            if credentials.is_empty() {
                tracing::warn!(path = %path.display(), "the credentials file names no principal");
            }
            Some(credentials)
        }
        None => None,
    };
    let uids = match &options.auth.uid_principals {
        Some(path) => Some(auth::UidPrincipals::load(path)?),
        None => None,
    };
    let tls = match &options.tls {
        Some(files) => {
            let read = |path: &Path| {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))
            };
            let mut config = ServerTlsConfig::new()
                .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
                .timeout(HANDSHAKE);
            if let Some(ca) = &files.client_ca {
                config = config
                    .client_ca_root(Certificate::from_pem(read(ca)?))
                    .client_auth_optional(credentials.is_some());
            }
            // Built once here so that a bad certificate or key fails at start, not per call.
            Server::builder()
                .tls_config(config.clone())
                .context("the TLS certificate, key or client CA")?;
            Some(config)
        }
        None => None,
    };
    let client_certificates = options.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let acls = match &options.acls {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(Acls::from_json(&text).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let authenticator = auth::Authenticator {
        client_certificates,
        credentials,
        uids,
    };
    if !authenticator.configured() {
        tracing::warn!(
            "no authentication configured (--client-ca, --credentials, --uid-principals): each \
             request's own principal is believed"
        );
    }
    if acls.is_none() {
        tracing::warn!(
            "no server ACLs (--acls): operations are authorized only by ACLs in requests{}",
            if options.allow_request_acls {
                ""
            } else {
                ", which are refused: every operation is allowed"
            }
        );
    }
    if credentials_over_plain_tcp(options) {
        tracing::warn!("basic credentials over plain TCP: secrets cross the wire unencrypted");
    }
    Ok((
        Shared::new(
            authenticator,
            acls,
            options.allow_request_acls,
            options.limits,
        ),
        tls,
    ))
}

fn credentials_over_plain_tcp(options: &Options) -> bool {
    options.insecure_tcp && options.auth.credentials.is_some()
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.mode() & 0o777),
            "the credentials file is readable by others than its owner"
        );
    }
}

impl Bound {
    /// Binds `listen` with [`Options::default`] (a unix socket without authentication).
    ///
    /// # Errors
    /// As [`Bound::bind_with`] (a TCP address is refused: it needs TLS or `insecure_tcp`).
    pub async fn bind(listen: &Listen) -> Result<Bound> {
        Bound::bind_with(listen, &Options::default()).await
    }

    /// Checks `options`, reads their files, and binds `listen`; must run inside a tokio runtime
    /// with I/O and time enabled.
    ///
    /// A unix socket path that holds a socket nobody accepts on (a server that died) is
    /// replaced; a path with a live server, or anything but a socket, is refused. The socket
    /// is created 0600, or 0660 with `socket_group` as its group; its directory, when missing,
    /// is created 0750 (with that group).
    ///
    /// # Errors
    /// The options are refused, a file cannot be read, the path is refused, or binding fails.
    pub async fn bind_with(listen: &Listen, options: &Options) -> Result<Bound> {
        check_options(listen, options)?;
        let (shared, tls) = load(options)?;
        let shared = Arc::new(shared);
        match listen {
            Listen::Unix(path) => {
                let group = match &options.socket_group {
                    Some(name) => Some(berth_rpc::unix::group_gid(name)?),
                    None => None,
                };
                let berth_rpc::BoundSocket { listener, file } =
                    berth_rpc::BoundSocket::bind(path, group).await?;
                Ok(Bound {
                    local: listen.clone(),
                    listener: Listener::Unix { listener, file },
                    shared,
                    tls,
                })
            }
            Listen::Tcp(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?;
                let local = listener
                    .local_addr()
                    .with_context(|| format!("reading the address bound for {addr}"))?;
                Ok(Bound {
                    local: Listen::Tcp(local),
                    listener: Listener::Tcp(listener),
                    shared,
                    tls,
                })
            }
        }
    }

    /// Where it listens (a TCP port 0 resolved to the port bound).
    #[must_use]
    pub fn local(&self) -> &Listen {
        &self.local
    }

    /// Serves the service until `shutdown` completes, then lets in-flight calls finish for
    /// at most [`GRACE`], and removes the unix socket file (if it is still the one bound).
    ///
    /// # Errors
    /// The server fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let service = ValidatorServer::new(ValidatorService::new(Arc::clone(&self.shared)))
            .max_decoding_message_size(self.shared.limits.max_request_bytes);
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).context("configuring TLS")?;
        }
        let router = builder
            .layer(tower::util::MapRequestLayer::new(limits::limit_request(
                self.shared.limits.max_request_bytes,
            )))
            .add_service(service);
        match self.listener {
            Listener::Unix { listener, file } => {
                let result =
                    serve_incoming(router, UnixListenerStream::new(listener), shutdown).await;
                drop(file);
                result
            }
            Listener::Tcp(listener) => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                serve_incoming(router, incoming, shutdown).await
            }
        }
    }
}

async fn serve_incoming<L, I, IO, IE>(
    router: tonic::transport::server::Router<L>,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    L: tower::Layer<tonic::service::Routes> + Clone,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    berth_rpc::shutdown::serve_with_grace(router, incoming, shutdown, GRACE)
        .await
        .map(drop)
        .context("serving gRPC")
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
