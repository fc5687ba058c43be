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
//! `name`, `source`, `category`, `expect` and `note` are ignored. A line that is not a JSON
//! object answers `{"valid": false, "stage": "parse", ...}`; nothing stops the stream.
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
use crate::pipeline::{self, StageError};

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

/// Resources from the text of a JSON array (strict: an invalid element fails the request).
fn resources(raw: Option<&RawValue>) -> Result<Resources, StageError> {
    let Some(raw) = raw else {
        return Ok(Resources::new());
    };
    let list = parse_proto_list_str(raw.get()).map_err(|e| StageError::parse(&e))?;
    Resources::from_proto_list(&list).map_err(|e| parse_err(e.to_string()))
}

/// Resources folded as Mesos's `+=` does (invalid or empty elements dropped).
fn fold(raw: Option<&RawValue>) -> Result<Resources, StageError> {
    let Some(raw) = raw else {
        return Ok(Resources::new());
    };
    let list = parse_proto_list_str(raw.get()).map_err(|e| StageError::parse(&e))?;
    let mut out = Resources::new();
    for r in &list {
        if let Ok(r) = Resource::from_proto(r) {
            out.add_resource(r);
        }
    }
    Ok(out)
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

fn operation(
    line: &Line<'_>,
    raw_op: &RawValue,
    out: &mut Vec<u8>,
) -> Result<(), serde_json::Error> {
    let run = || -> Result<Resources, StageError> {
        let offered = resources(line.resources)?;
        let context: Json = match line.context {
            Some(c) => serde_json::from_str(c.get()).map_err(|e| parse_err(e.to_string()))?,
            None => Json::Null,
        };
        let ctx = pipeline::parse_context(&context)?;
        let acls = match line.acls {
            Some(a) => Some(
                Acls::from_json(a.get()).map_err(|e| parse_err(format!("invalid acls: {e}")))?,
            ),
            None => None,
        };
        let raw: proto::offer::Operation =
            from_json_str(raw_op.get()).map_err(|e| StageError::parse(&e))?;
        let op = crate::Operation::from_proto(&raw).map_err(|e| StageError::validate(&e))?;
        pipeline::run(
            &offered,
            op,
            &ctx,
            acls.as_ref().map(|a| a as &dyn Authorizer),
        )
    };
    match run() {
        Ok(after) => write(
            out,
            &Applied {
                valid: true,
                resources_after: &after,
            },
        ),
        Err(e) => write_failure(out, &e),
    }
}

fn resource_validation(line: &Line<'_>, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let run = || -> Result<Vec<Resource>, StageError> {
        let list = match line.resources {
            Some(raw) => parse_proto_list_str(raw.get()).map_err(|e| StageError::parse(&e))?,
            None => Vec::new(),
        };
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
        list.iter()
            .map(Resource::from_proto)
            .collect::<Result<_, _>>()
            .map_err(|e| StageError::validate(&e))
    };
    match run() {
        Ok(typed) => {
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
        }
        Err(e) => write_failure(out, &e),
    }
}

fn arithmetic(op: &str, line: &Line<'_>, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let (left, right) = match (fold(line.left), fold(line.right)) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => return write_failure(out, &e),
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
            );
        }
        other => {
            return write_failure(
                out,
                &parse_err(format!(
                    "unknown op '{other}': use add, subtract or contains"
                )),
            );
        }
    };
    write(
        out,
        &Sum {
            result: &result,
            size: result.len(),
        },
    )
}

/// Answers one line of input and appends the answer and a newline to `out` (what
/// `berth-validator batch` writes for each input line).
///
/// # Errors
/// Only if serializing to `out` fails.
pub fn write_answer(line: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let trimmed = line.trim();
    if trimmed.is_empty() {
        return write_failure(out, &parse_err("empty line"));
    }
    let parsed: Line<'_> = match serde_json::from_str(trimmed) {
        Ok(l) => l,
        Err(e) if e.is_data() => {
            return write_failure(
                out,
                &parse_err(format!("a request must be a JSON object: {e}")),
            );
        }
        Err(e) => return write_failure(out, &parse_err(format!("not JSON: {e}"))),
    };
    if let Some(op) = parsed.op.as_deref() {
        return arithmetic(op, &parsed, out);
    }
    match parsed.operation {
        Some(raw_op) if raw_op.get() != "null" => operation(&parsed, raw_op, out),
        _ => resource_validation(&parsed, out),
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
