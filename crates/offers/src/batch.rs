//! The JSON-lines protocol of `berth-validator batch` (and the gRPC `Batch` call): one request
//! object per line, in the vector format of `shared/conformance`, one answer per line.
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

use berth_resources::conformance::{StageError, fold, parse_list};
use berth_resources::{Resource, format, validate};
use serde_json::{Map, Value as Json, json};

use crate::acl::Acls;
use crate::pipeline;

fn failure(e: &StageError) -> Json {
    json!({"valid": false, "stage": e.stage, "error": e.message})
}

fn parse_failure(message: impl Into<String>) -> Json {
    json!({"valid": false, "stage": "parse", "error": message.into()})
}

/// Answers one request object.
#[must_use]
pub fn answer(request: &Json) -> Json {
    let Json::Object(obj) = request else {
        return parse_failure("a request must be a JSON object");
    };
    if let Some(op) = obj.get("op").and_then(Json::as_str) {
        return arithmetic(op, obj);
    }
    let null = Json::Null;
    let resources = obj.get("resources").unwrap_or(&null);
    let context = obj.get("context").unwrap_or(&null);
    match obj.get("operation") {
        None | Some(Json::Null) => resource_validation(resources, context),
        Some(operation) => {
            let acls = match obj.get("acls") {
                None | Some(Json::Null) => None,
                Some(a) => match Acls::from_value(a.clone()) {
                    Ok(acls) => Some(acls),
                    Err(e) => return parse_failure(format!("invalid acls: {e}")),
                },
            };
            let authorizer = acls.as_ref().map(|a| a as &dyn crate::acl::Authorizer);
            match pipeline::evaluate(resources, operation, context, authorizer) {
                Ok(after) => json!({"valid": true, "resources_after": after.to_json()}),
                Err(e) => failure(&e),
            }
        }
    }
}

fn resource_validation(resources: &Json, context: &Json) -> Json {
    let list = match parse_list(resources) {
        Ok(list) => list,
        Err(e) => return failure(&e),
    };
    for r in &list {
        if let Err(e) = validate::validate_resource(r) {
            return failure(&StageError::validate(&e));
        }
    }
    let mut upgraded = list.clone();
    upgraded.iter_mut().for_each(format::upgrade);
    if context.get("level").and_then(Json::as_str) != Some("resource")
        && let Err(e) = validate::validate_master(&upgraded)
    {
        return failure(&StageError::validate(&e));
    }
    let typed: Result<Vec<Resource>, _> = list.iter().map(Resource::from_proto).collect();
    let typed = match typed {
        Ok(t) => t,
        Err(e) => return failure(&StageError::validate(&e)),
    };
    let mut out = Map::new();
    out.insert("valid".into(), Json::Bool(true));
    out.insert(
        "upgraded".into(),
        Json::Array(typed.iter().map(Resource::to_json).collect()),
    );
    match typed
        .iter()
        .map(Resource::to_json_legacy)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(down) => out.insert("downgraded".into(), Json::Array(down)),
        Err(e) => out.insert("downgrade_error".into(), Json::String(e.to_string())),
    };
    Json::Object(out)
}

fn arithmetic(op: &str, obj: &Map<String, Json>) -> Json {
    let null = Json::Null;
    let (left, right) = match (
        fold(obj.get("left").unwrap_or(&null)),
        fold(obj.get("right").unwrap_or(&null)),
    ) {
        (Ok(l), Ok(r)) => (l, r),
        (Err(e), _) | (_, Err(e)) => return failure(&e),
    };
    let result = match op {
        "add" => &left + &right,
        "subtract" => &left - &right,
        "contains" => return json!({"contains": left.contains(&right)}),
        other => {
            return parse_failure(format!(
                "unknown op '{other}': use add, subtract or contains"
            ));
        }
    };
    json!({"result": result.to_json(), "size": result.len()})
}

/// Answers one line of input (any text).
#[must_use]
pub fn answer_line(line: &str) -> Json {
    match serde_json::from_str::<Json>(line) {
        Ok(request) => answer(&request),
        Err(e) => parse_failure(format!("not JSON: {e}")),
    }
}

/// Answers one line of input and appends the answer and a newline to `out` (what
/// `berth-validator batch` writes for each input line).
///
/// # Errors
/// Only if serializing to `out` fails.
pub fn write_answer(line: &str, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let trimmed = line.trim();
    let answer = if trimmed.is_empty() {
        json!({"valid": false, "stage": "parse", "error": "empty line"})
    } else {
        answer_line(trimmed)
    };
    serde_json::to_writer(&mut *out, &answer)?;
    out.push(b'\n');
    Ok(())
}
