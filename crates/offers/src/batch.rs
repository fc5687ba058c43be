//! The JSON-lines protocol of `berth-validator batch` (and the gRPC `Batch` call): one request
//! object per line, in the vector format of `tests/conformance`, one answer per line.
//!
//! * operation request (`resources`, `operation`, `context`, optional `acls`) →
//!   `{"valid": true, "resources_after": [...]}` or
//!   `{"valid": false, "stage": "parse"|"validate"|"apply", "error": "..."}`;
//! * resource validation (`operation` null or absent; `context.level` `resource` or `master`,
//!   default `master`) → `{"valid": true, "upgraded": [...], "downgraded": [...]}` (or
//!   `"downgrade_error"` instead of `downgraded`);
//! * arithmetic (`op` = `add`|`subtract`|`contains`, `left`, `right`) → `{"result": [...],
//!   "size": n}` or `{"contains": bool}`.
//!
//! `name`, `source`, `category`, `expect` and `note` are ignored. A line that is not UTF-8, not
//! JSON or not a JSON object answers `{"valid": false, "stage": "parse", ...}`; nothing stops the
//! stream.
//!
//! A server answering for many clients (`berth-validator serve`) imposes a [`Policy`] on every
//! line: the authenticated principal, its own ACLs, and a bound on the resources of a request. A
//! line the policy refuses answers `{"valid": false, "stage": "refused", "code":
//! "PERMISSION_DENIED"|"RESOURCE_EXHAUSTED", "error": "..."}` (the gRPC status names).
//!
//! Lines are read without building a `serde_json::Value` for the bulk of a request: resources
//! and operations stream from the text into protobuf messages, and answers stream out.

use berth_resources::codec::parse_proto_list_str;
use berth_resources::json::{WireJson, from_json_str};
use berth_resources::{Resource, Resources, format, proto, validate};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_json::value::RawValue;

use crate::acl::{Acls, Authorizer};
use crate::context::{Api, Context};
use crate::operation::Operation;
use crate::pipeline::{self, StageError};

/// What a server imposes on every request, whatever the request says.
///
/// [`Policy::default`] trusts the request: no authenticated principal (the request's own is
/// used), the request's ACLs (if any) apply, and no bound on its size. That is what the CLI and
/// a server without authentication do.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    /// The authenticated principal. A request naming another principal (`context.principal` or
    /// `context.framework.principal`) is refused; one naming none acts as this principal.
    pub principal: Option<&'a str>,
    /// The server's ACLs: they authorize every operation, in place of the request's.
    pub acls: Option<&'a dyn Authorizer>,
    /// Whether a request may carry its own `acls` (refused otherwise).
    pub allow_request_acls: bool,
    /// The most resource objects one request may hold, all lists together (offered,
    /// operation, checkpointed and used resources; arithmetic operands).
    pub max_resources: Option<usize>,
}

impl Default for Policy<'_> {
    fn default() -> Self {
        Policy {
            principal: None,
            acls: None,
            allow_request_acls: true,
            max_resources: None,
        }
    }
}

impl std::fmt::Debug for Policy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("principal", &self.principal)
            .field("acls", &self.acls.is_some())
            .field("allow_request_acls", &self.allow_request_acls)
            .field("max_resources", &self.max_resources)
            .finish()
    }
}

/// Why a [`Policy`] refuses a request (the gRPC status a server answers with).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request speaks for another principal, or carries ACLs the server does not take.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request holds more resources than the server accepts.
    #[error("{0}")]
    ResourceExhausted(String),
}

impl Refusal {
    /// The gRPC status code name: `PERMISSION_DENIED` or `RESOURCE_EXHAUSTED`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::PermissionDenied(_) => "PERMISSION_DENIED",
            Refusal::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
        }
    }
}

impl<'a> Policy<'a> {
    /// Refuses request-supplied ACLs unless allowed.
    ///
    /// # Errors
    /// [`Refusal::PermissionDenied`] when `present` and not allowed.
    pub fn check_request_acls(&self, present: bool) -> Result<(), Refusal> {
        if present && !self.allow_request_acls {
            return Err(Refusal::PermissionDenied(
                "this server takes no ACLs from requests: it applies its own (--acls)".to_owned(),
            ));
        }
        Ok(())
    }

    /// Refuses a request of more than [`max_resources`](Policy::max_resources) resources.
    ///
    /// # Errors
    /// [`Refusal::ResourceExhausted`] past the bound.
    pub fn check_resources(&self, count: usize) -> Result<(), Refusal> {
        match self.max_resources {
            Some(max) if count > max => Err(Refusal::ResourceExhausted(format!(
                "the request holds {count} resources; this server accepts at most {max}"
            ))),
            _ => Ok(()),
        }
    }

    /// Makes the authenticated principal the context's: a context naming another principal
    /// (its own or its framework's) is refused; one naming none takes the authenticated one,
    /// and so does its framework.
    ///
    /// # Errors
    /// [`Refusal::PermissionDenied`] when the context names another principal.
    pub fn claim(&self, ctx: &mut Context) -> Result<(), Refusal> {
        let Some(principal) = self.principal else {
            return Ok(());
        };
        let framework = match &mut ctx.api {
            Api::Framework(fw) => Some(fw),
            Api::Operator => None,
        };
        let claimed = [
            ctx.principal.as_deref(),
            framework.as_ref().and_then(|fw| fw.principal.as_deref()),
        ];
        if let Some(other) = claimed.into_iter().flatten().find(|p| *p != principal) {
            return Err(Refusal::PermissionDenied(format!(
                "the request names principal '{other}' but the caller authenticated as \
                 '{principal}'"
            )));
        }
        if let Some(fw) = framework {
            fw.principal = Some(principal.to_owned());
        }
        ctx.principal = Some(principal.to_owned());
        Ok(())
    }

    /// The authorizer of a request: the server's ACLs, else the request's.
    #[must_use]
    pub fn authorizer<'b>(&'b self, request: Option<&'b Acls>) -> Option<&'b dyn Authorizer>
    where
        'a: 'b,
    {
        self.acls.or(request.map(|a| a as &dyn Authorizer))
    }
}

/// The number of resource objects a wire operation holds (what [`Policy::max_resources`]
/// counts), before any of them is read.
#[must_use]
pub fn operation_resources(op: &proto::offer::Operation) -> usize {
    fn tasks(tasks: &[proto::TaskInfo]) -> usize {
        tasks
            .iter()
            .map(|t| t.resources.len() + t.executor.as_ref().map_or(0, |e| e.resources.len()))
            .sum()
    }
    op.reserve
        .as_ref()
        .map_or(0, |b| b.resources.len() + b.source.len())
        + op.unreserve.as_ref().map_or(0, |b| b.resources.len())
        + op.create.as_ref().map_or(0, |b| b.volumes.len())
        + op.destroy.as_ref().map_or(0, |b| b.volumes.len())
        + op.grow_volume.as_ref().map_or(0, |_| 2)
        + op.shrink_volume.as_ref().map_or(0, |_| 1)
        + op.launch.as_ref().map_or(0, |b| tasks(&b.task_infos))
        + op.launch_group.as_ref().map_or(0, |b| {
            b.executor.resources.len() + tasks(&b.task_group.tasks)
        })
        + op.create_disk.as_ref().map_or(0, |_| 1)
        + op.destroy_disk.as_ref().map_or(0, |_| 1)
}

/// How a line was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The line was a request; the answer is its verdict (valid or not).
    Answered,
    /// The line was not a request: empty, not UTF-8, not JSON or not a JSON object.
    Unparsed,
    /// The policy refused the request (answered with stage `refused`).
    Refused(Refusal),
}

/// The parts of a request line the protocol reads; everything else is skipped unparsed.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    op: Option<String>,
    #[serde(borrow, default)]
    left: Option<&'a RawValue>,
    #[serde(borrow, default)]
    right: Option<&'a RawValue>,
    #[serde(borrow, default)]
    resources: Option<&'a RawValue>,
    #[serde(borrow, default)]
    operation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    acls: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct Failure<'a> {
    valid: bool,
    stage: &'a str,
    error: &'a str,
}

#[derive(Serialize)]
struct Applied<'a> {
    valid: bool,
    resources_after: &'a Resources,
}

#[derive(Serialize)]
struct Validated<'a> {
    valid: bool,
    upgraded: &'a [Resource],
    #[serde(skip_serializing_if = "Option::is_none")]
    downgraded: Option<Vec<Legacy>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    downgrade_error: Option<String>,
}

/// A legacy-format wire resource, serialized as Mesos JSON.
struct Legacy(Vec<u8>);

impl Serialize for Legacy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match WireJson::new("mesos.v1.Resource", &self.0) {
            Ok(w) => w.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

#[derive(Serialize)]
struct Sum<'a> {
    result: &'a Resources,
    size: usize,
}

#[derive(Serialize)]
struct Contains {
    contains: bool,
}

fn parse_err(message: impl Into<String>) -> StageError {
    StageError {
        stage: "parse",
        message: message.into(),
    }
}

fn write<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, value)?;
    out.push(b'\n');
    Ok(())
}

fn write_failure(out: &mut Vec<u8>, e: &StageError) -> Result<(), serde_json::Error> {
    write(
        out,
        &Failure {
            valid: false,
            stage: e.stage,
            error: &e.message,
        },
    )
}

#[derive(Serialize)]
struct Refused<'a> {
    valid: bool,
    stage: &'a str,
    code: &'a str,
    error: String,
}

/// Appends the answer of a refused request: `{"valid": false, "stage": "refused", "code":
/// "PERMISSION_DENIED"|"RESOURCE_EXHAUSTED", "error": ...}` and a newline.
///
/// # Errors
/// Only if serializing to `out` fails.
pub fn write_refusal(out: &mut Vec<u8>, refusal: &Refusal) -> Result<(), serde_json::Error> {
    write(
        out,
        &Refused {
            valid: false,
            stage: "refused",
            code: refusal.code(),
            error: refusal.to_string(),
        },
    )
}

/// A request's outcome before it is written: a refusal, or the pipeline's result.
enum Outcome<T> {
    Refused(Refusal),
    Done(Result<T, StageError>),
}

impl<T> From<StageError> for Outcome<T> {
    fn from(e: StageError) -> Self {
        Outcome::Done(Err(e))
    }
}

impl<T> From<Refusal> for Outcome<T> {
    fn from(r: Refusal) -> Self {
        Outcome::Refused(r)
    }
}

/// Runs `f`, whose `?` turns stage errors and refusals into the outcome.
fn outcome<T>(f: impl FnOnce() -> Result<T, Outcome<T>>) -> Outcome<T> {
    match f() {
        Ok(value) => Outcome::Done(Ok(value)),
        Err(outcome) => outcome,
    }
}

/// The resources a context object names (checkpointed and used), counted in its JSON before
/// anything is parsed.
fn context_resources(context: &Json) -> usize {
    let len = |v: Option<&Json>| v.and_then(Json::as_array).map_or(0, Vec::len);
    len(context.get("agent_checkpointed_resources"))
        + context
            .get("agent_used_resources")
            .and_then(Json::as_object)
            .map_or(0, |used| used.values().map(|l| len(Some(l))).sum())
}

fn proto_list(raw: Option<&RawValue>) -> Result<Vec<proto::Resource>, StageError> {
    match raw {
        Some(raw) => parse_proto_list_str(raw.get()).map_err(|e| StageError::parse(&e)),
        None => Ok(Vec::new()),
    }
}

fn operation(
    line: &Line<'_>,
    raw_op: &RawValue,
    policy: &Policy<'_>,
    out: &mut Vec<u8>,
) -> Result<Verdict, serde_json::Error> {
    let run = || -> Result<Resources, Outcome<Resources>> {
        policy.check_request_acls(line.acls.is_some())?;
        // The stages in the order of `pipeline::evaluate`; everything is counted before the
        // resources are read (reading is what grows with their number).
        let offered = proto_list(line.resources)?;
        let context: Json = match line.context {
            Some(c) => serde_json::from_str(c.get()).map_err(|e| parse_err(e.to_string()))?,
            None => Json::Null,
        };
        let raw: proto::offer::Operation =
            from_json_str(raw_op.get()).map_err(|e| StageError::parse(&e))?;
        policy.check_resources(
            offered.len() + context_resources(&context) + operation_resources(&raw),
        )?;
        let offered = Resources::from_proto_list(&offered).map_err(|e| parse_err(e.to_string()))?;
        let mut ctx = pipeline::parse_context(&context)?;
        policy.claim(&mut ctx)?;
        let acls = match line.acls {
            Some(a) => Some(
                Acls::from_json(a.get()).map_err(|e| parse_err(format!("invalid acls: {e}")))?,
            ),
            None => None,
        };
        let op = Operation::from_proto(&raw).map_err(|e| StageError::validate(&e))?;
        Ok(pipeline::run(
            &offered,
            op,
            &ctx,
            policy.authorizer(acls.as_ref()),
        )?)
    };
    match outcome(run) {
        Outcome::Refused(r) => write_refusal(out, &r).map(|()| Verdict::Refused(r)),
        Outcome::Done(Ok(after)) => write(
            out,
            &Applied {
                valid: true,
                resources_after: &after,
            },
        )
        .map(|()| Verdict::Answered),
        Outcome::Done(Err(e)) => write_failure(out, &e).map(|()| Verdict::Answered),
    }
}

fn resource_validation(
    line: &Line<'_>,
    policy: &Policy<'_>,
    out: &mut Vec<u8>,
) -> Result<Verdict, serde_json::Error> {
    let run = || -> Result<Vec<Resource>, Outcome<Vec<Resource>>> {
        policy.check_request_acls(line.acls.is_some())?;
        let list = proto_list(line.resources)?;
        policy.check_resources(list.len())?;
        for r in &list {
            validate::validate_resource(r).map_err(|e| StageError::validate(&e))?;
        }
        let level = match line.context {
            Some(c) => serde_json::from_str::<Json>(c.get())
                .map_err(|e| parse_err(e.to_string()))?
                .get("level")
                .and_then(Json::as_str)
                .map(str::to_owned),
            None => None,
        };
        if level.as_deref() != Some("resource") {
            let mut upgraded = list.clone();
            upgraded.iter_mut().for_each(format::upgrade);
            validate::validate_master(&upgraded).map_err(|e| StageError::validate(&e))?;
        }
        Ok(list
            .iter()
            .map(Resource::from_proto)
            .collect::<Result<_, _>>()
            .map_err(|e| StageError::validate(&e))?)
    };
    let typed = match outcome(run) {
        Outcome::Refused(r) => return write_refusal(out, &r).map(|()| Verdict::Refused(r)),
        Outcome::Done(Err(e)) => return write_failure(out, &e).map(|()| Verdict::Answered),
        Outcome::Done(Ok(typed)) => typed,
    };
    let (downgraded, downgrade_error) = match typed
        .iter()
        .map(Resource::to_proto_legacy)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(down) => (
            Some(down.iter().map(|r| Legacy(r.encode_to_vec())).collect()),
            None,
        ),
        Err(e) => (None, Some(e.to_string())),
    };
    write(
        out,
        &Validated {
            valid: true,
            upgraded: &typed,
            downgraded,
            downgrade_error,
        },
    )
    .map(|()| Verdict::Answered)
}

/// Resources folded as Mesos's `+=` does (invalid or empty elements dropped).
fn fold(list: &[proto::Resource]) -> Resources {
    let mut out = Resources::new();
    for r in list {
        if let Ok(r) = Resource::from_proto(r) {
            out.add_resource(r);
        }
    }
    out
}

fn arithmetic(
    op: &str,
    line: &Line<'_>,
    policy: &Policy<'_>,
    out: &mut Vec<u8>,
) -> Result<Verdict, serde_json::Error> {
    let operands = || -> Result<(Resources, Resources), Outcome<()>> {
        let (left, right) = (proto_list(line.left)?, proto_list(line.right)?);
        policy.check_resources(left.len() + right.len())?;
        Ok((fold(&left), fold(&right)))
    };
    let (left, right) = match operands() {
        Ok(operands) => operands,
        Err(Outcome::Refused(r)) => return write_refusal(out, &r).map(|()| Verdict::Refused(r)),
        Err(Outcome::Done(Err(e))) => return write_failure(out, &e).map(|()| Verdict::Answered),
        Err(Outcome::Done(Ok(()))) => return Ok(Verdict::Answered),
    };
    let result = match op {
        "add" => &left + &right,
        "subtract" => &left - &right,
        "contains" => {
            return write(
                out,
                &Contains {
                    contains: left.contains(&right),
                },
            )
            .map(|()| Verdict::Answered);
        }
        other => {
            return write_failure(
                out,
                &parse_err(format!(
                    "unknown op '{other}': use add, subtract or contains"
                )),
            )
            .map(|()| Verdict::Answered);
        }
    };
    write(
        out,
        &Sum {
            result: &result,
            size: result.len(),
        },
    )
    .map(|()| Verdict::Answered)
}

/// Answers one line of input and appends the answer and a newline to `out` (what
/// `berth-validator batch` writes for each input line), trusting the line
/// ([`Policy::default`]).
///
/// # Errors
/// Only if serializing to `out` fails.
pub fn write_answer(line: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    write_answer_with(line.as_bytes(), &Policy::default(), out).map(|_| ())
}

/// Answers one line of input, which may be any bytes, under `policy`: appends the answer and a
/// newline to `out`, and says how the line was answered. A line that is not UTF-8, not JSON
/// or not a JSON object gets a `parse` answer ([`Verdict::Unparsed`]).
///
/// # Errors
/// Only if serializing to `out` fails.
pub fn write_answer_with(
    line: &[u8],
    policy: &Policy<'_>,
    out: &mut Vec<u8>,
) -> Result<Verdict, serde_json::Error> {
    let unparsed = |out: &mut Vec<u8>, message: String| {
        write_failure(out, &parse_err(message)).map(|()| Verdict::Unparsed)
    };
    let line = match std::str::from_utf8(line) {
        Ok(line) => line,
        Err(e) => {
            return unparsed(
                out,
                format!(
                    "the line is not UTF-8: invalid byte at offset {}",
                    e.valid_up_to()
                ),
            );
        }
    };
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return unparsed(out, "empty line".to_owned());
    }
    let parsed: Line<'_> = match serde_json::from_str(trimmed) {
        Ok(l) => l,
        Err(e) if e.is_data() => {
            return unparsed(out, format!("a request must be a JSON object: {e}"));
        }
        Err(e) => return unparsed(out, format!("not JSON: {e}")),
    };
    if let Some(op) = parsed.op.as_deref() {
        return arithmetic(op, &parsed, policy, out);
    }
    match parsed.operation {
        Some(raw_op) if raw_op.get() != "null" => operation(&parsed, raw_op, policy, out),
        _ => resource_validation(&parsed, policy, out),
    }
}

/// Answers one line of input as a JSON value.
#[must_use]
pub fn answer_line(line: &str) -> Json {
    let mut out = Vec::new();
    match write_answer(line, &mut out) {
        Ok(()) => serde_json::from_slice(&out).unwrap_or(Json::Null),
        Err(e) => serde_json::json!({"valid": false, "stage": "parse", "error": e.to_string()}),
    }
}

/// Answers one request object.
#[must_use]
pub fn answer(request: &Json) -> Json {
    answer_line(&request.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use serde_json::json;

    use super::*;

    const OFFER: &str = r#"[{"name":"disk","type":"SCALAR","scalar":{"value":100},
        "reservations":[{"type":"DYNAMIC","role":"r","principal":"p1"}]}]"#;

    fn create(context: &Json, acls: Option<&Json>) -> Vec<u8> {
        let mut line = json!({
            "resources": serde_json::from_str::<Json>(OFFER).unwrap(),
            "operation": {"type": "CREATE", "create": {"volumes": [{
                "name": "disk", "type": "SCALAR", "scalar": {"value": 10},
                "reservations": [{"type": "DYNAMIC", "role": "r", "principal": "p1"}],
                "disk": {"persistence": {"id": "v1", "principal": "p1"},
                         "volume": {"container_path": "data", "mode": "RW"}}}]}},
            "context": context,
        });
        if let Some(acls) = acls {
            line["acls"] = acls.clone();
        }
        line.to_string().into_bytes()
    }

    fn run(line: &[u8], policy: &Policy<'_>) -> (Verdict, Json) {
        let mut out = Vec::new();
        let verdict = write_answer_with(line, policy, &mut out).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        (verdict, serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn lines_that_are_not_requests_are_unparsed_and_answered() {
        for line in [
            &b"\xff\xfe{}"[..],
            b"",
            b"   ",
            b"{not json",
            b"[1,2]",
            b"42",
        ] {
            let (verdict, answer) = run(line, &Policy::default());
            assert_eq!(verdict, Verdict::Unparsed, "{line:?}");
            assert_eq!(answer["stage"], "parse", "{line:?}");
            assert_eq!(answer["valid"], false, "{line:?}");
        }
        let (_, answer) = run(b"{}\xc3(", &Policy::default());
        assert!(
            answer["error"].as_str().unwrap().contains("offset 2"),
            "{answer}"
        );
    }

    #[test]
    fn the_authenticated_principal_replaces_and_bounds_the_requests() {
        let p1 = Policy {
            principal: Some("p1"),
            ..Policy::default()
        };
        // No principal in the request: it acts as the authenticated one (the reservation's
        // principal must then match, which it does).
        let (verdict, answer) = run(&create(&json!({"api": "operator"}), None), &p1);
        assert_eq!(
            (verdict, &answer["valid"]),
            (Verdict::Answered, &json!(true))
        );
        // Naming the same principal is fine; naming another, directly or as the framework's,
        // is refused.
        let (verdict, _) = run(&create(&json!({"principal": "p1"}), None), &p1);
        assert_eq!(verdict, Verdict::Answered);
        for context in [
            json!({"principal": "p2"}),
            json!({"framework": {"roles": ["r"], "principal": "p2"}}),
        ] {
            let (verdict, answer) = run(&create(&context, None), &p1);
            assert!(matches!(
                verdict,
                Verdict::Refused(Refusal::PermissionDenied(_))
            ));
            assert_eq!(answer["stage"], "refused");
            assert_eq!(answer["code"], "PERMISSION_DENIED");
            assert!(
                answer["error"].as_str().unwrap().contains("'p2'"),
                "{answer}"
            );
        }
        // Without authentication the request's principal stands (p2 then fails validation:
        // the reservation is p1's).
        let (verdict, answer) = run(
            &create(&json!({"principal": "p2"}), None),
            &Policy::default(),
        );
        assert_eq!(verdict, Verdict::Answered);
        assert_eq!(answer["stage"], "validate");
    }

    #[test]
    fn server_acls_apply_and_request_acls_are_refused_unless_allowed() {
        let deny = Acls::from_json(
            r#"{"permissive": false, "create_volumes": [{"principals": {"values": ["p9"]},
                "roles": {"type": "ANY"}}]}"#,
        )
        .unwrap();
        let permissive = json!({"permissive": true});
        let server = Policy {
            acls: Some(&deny),
            allow_request_acls: false,
            ..Policy::default()
        };
        let ctx = json!({"principal": "p1"});
        let (verdict, answer) = run(&create(&ctx, Some(&permissive)), &server);
        assert!(matches!(
            verdict,
            Verdict::Refused(Refusal::PermissionDenied(_))
        ));
        assert_eq!(answer["code"], "PERMISSION_DENIED");
        let (_, answer) = run(&create(&ctx, None), &server);
        assert_eq!(answer["stage"], "validate", "{answer}");
        // Allowed request ACLs do not override the server's.
        let (_, answer) = run(
            &create(&ctx, Some(&permissive)),
            &Policy {
                allow_request_acls: true,
                ..server
            },
        );
        assert_eq!(answer["stage"], "validate", "{answer}");
        // The trusting default takes the request's.
        let (_, answer) = run(&create(&ctx, Some(&permissive)), &Policy::default());
        assert_eq!(answer["valid"], true, "{answer}");
    }

    #[test]
    fn requests_past_the_resource_bound_are_refused() {
        let policy = Policy {
            max_resources: Some(2),
            ..Policy::default()
        };
        // Offer (1) + volume (1) = 2: within.
        let (verdict, _) = run(&create(&json!({}), None), &policy);
        assert_eq!(verdict, Verdict::Answered);
        // One checkpointed resource more: past it.
        let ctx =
            json!({"agent_checkpointed_resources": serde_json::from_str::<Json>(OFFER).unwrap()});
        let (verdict, answer) = run(&create(&ctx, None), &policy);
        assert!(matches!(
            verdict,
            Verdict::Refused(Refusal::ResourceExhausted(_))
        ));
        assert_eq!(answer["code"], "RESOURCE_EXHAUSTED");
        let three = json!({"resources": [{"name":"cpus","type":"SCALAR","scalar":{"value":1}},
            {"name":"mem","type":"SCALAR","scalar":{"value":1}},
            {"name":"gpus","type":"SCALAR","scalar":{"value":1}}]});
        let (verdict, _) = run(three.to_string().as_bytes(), &policy);
        assert!(matches!(verdict, Verdict::Refused(_)));
        let sum = json!({"op": "add", "left": three["resources"], "right": []});
        let (verdict, _) = run(sum.to_string().as_bytes(), &policy);
        assert!(matches!(verdict, Verdict::Refused(_)));
    }
}
