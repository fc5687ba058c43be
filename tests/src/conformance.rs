//! The conformance harness: evaluates test vectors taken from Mesos's own test suite
//! (`tests/conformance/*.json`, format in `tests/conformance/README.md`) against berth.
//!
//! `resource_validation` vectors (of `operations.json`) run through `berth-resources`'
//! validation and codecs, the `arithmetic.json` vectors through its arithmetic, and the other
//! operation vectors through [`berth_offers::pipeline::evaluate`] — the engine behind
//! `berth-validator batch`. Each check returns `Ok(())` or a description of the mismatch, so a
//! runner can print every failing name. Test support only: no production code links it.

use berth_offers::StageError;
use berth_offers::pipeline;
use berth_proto::mesos::v1 as pb;
use berth_resources::{Resource, Resources, format, validate};
use serde::Deserialize;
use serde_json::Value as Json;

/// One vector of `operations.json` (any category).
#[derive(Debug, Clone, Deserialize)]
pub struct OperationVector {
    /// Unique name.
    pub name: String,
    /// Where it comes from (`<mesos file>:<Fixture.Test>` or `rule <ID>`).
    #[serde(default)]
    pub source: String,
    /// `resource_validation`, `reserve`, `unreserve`, `create`, `destroy`, `grow_volume`,
    /// `shrink_volume` or `misc`.
    pub category: String,
    /// The resources (Mesos JSON).
    #[serde(default)]
    pub resources: Json,
    /// The operation (`null` for resource validation).
    #[serde(default)]
    pub operation: Json,
    /// The context.
    #[serde(default)]
    pub context: Json,
    /// The expectation.
    pub expect: Json,
}

/// One vector of `arithmetic.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ArithmeticVector {
    /// Unique name.
    pub name: String,
    /// Where it comes from.
    #[serde(default)]
    pub source: String,
    /// `add`, `subtract` or `contains`.
    pub op: String,
    /// Left operand (Mesos JSON array).
    pub left: Json,
    /// Right operand (Mesos JSON array).
    pub right: Json,
    /// `{result, size?}` or `{contains}`.
    pub expect: Json,
}

/// Checks an actual failure (or success) against `expect` (`valid`, `stage`, `error_contains`).
///
/// # Errors
/// A description of the mismatch.
pub fn check_outcome(expect: &Json, actual: &Result<(), StageError>) -> Result<(), String> {
    let want_valid = expect.get("valid").and_then(Json::as_bool).unwrap_or(true);
    match (want_valid, actual) {
        (true, Ok(())) => Ok(()),
        (true, Err(e)) => Err(format!(
            "expected valid, failed at {}: {}",
            e.stage, e.message
        )),
        (false, Ok(())) => Err("expected a failure, but it was accepted".to_owned()),
        (false, Err(e)) => {
            if let Some(stage) = expect.get("stage").and_then(Json::as_str)
                && stage != e.stage
            {
                return Err(format!(
                    "expected stage {stage}, failed at {}: {}",
                    e.stage, e.message
                ));
            }
            if let Some(sub) = expect.get("error_contains").and_then(Json::as_str)
                && !e.message.contains(sub)
            {
                return Err(format!("error {:?} does not contain {sub:?}", e.message));
            }
            Ok(())
        }
    }
}

/// Parses a JSON array of resources into wire messages.
///
/// # Errors
/// The parse failure.
pub fn parse_list(json: &Json) -> Result<Vec<pb::Resource>, StageError> {
    match json {
        Json::Null => Ok(Vec::new()),
        other => berth_resources::codec::parse_proto_list(other).map_err(|e| StageError::parse(&e)),
    }
}

/// Folds a JSON array into [`Resources`] as the harness does: each element parsed, validated
/// and upgraded; invalid or empty elements are dropped (Mesos `+=`).
///
/// # Errors
/// An element that does not parse.
pub fn fold(json: &Json) -> Result<Resources, StageError> {
    let mut out = Resources::new();
    for raw in parse_list(json)? {
        if let Ok(r) = Resource::from_proto(&raw) {
            out.add_resource(r);
        }
    }
    Ok(out)
}

/// Compares two JSON values, numbers by value (`1` equals `1.0`).
#[must_use]
pub fn json_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn validate_vector(v: &OperationVector) -> Result<Vec<pb::Resource>, StageError> {
    let list = parse_list(&v.resources)?;
    let level = v
        .context
        .get("level")
        .and_then(Json::as_str)
        .unwrap_or("resource");
    for r in &list {
        validate::validate_resource(r).map_err(|e| StageError::validate(&e))?;
    }
    let mut upgraded = list.clone();
    upgraded.iter_mut().for_each(format::upgrade);
    if level == "master" {
        validate::validate_master(&upgraded).map_err(|e| StageError::validate(&e))?;
    }
    Ok(list)
}

/// Evaluates one `resource_validation` vector.
///
/// # Errors
/// A description of the mismatch.
pub fn check_resource_validation(v: &OperationVector) -> Result<(), String> {
    let result = validate_vector(v);
    check_outcome(
        &v.expect,
        &result.as_ref().map(|_| ()).map_err(Clone::clone),
    )?;
    let Ok(list) = result else { return Ok(()) };

    let resources: Vec<Resource> = list
        .iter()
        .map(Resource::from_proto)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("valid input did not convert: {e}"))?;

    if let Some(want) = v.expect.get("upgraded") {
        let got = Json::Array(resources.iter().map(Resource::to_json).collect());
        if !json_equal(&got, want) {
            return Err(format!("upgraded: got {got}, want {want}"));
        }
    }
    let downgraded: Result<Vec<Json>, _> = resources.iter().map(Resource::to_json_legacy).collect();
    if let Some(want) = v.expect.get("downgraded") {
        let got = Json::Array(
            downgraded
                .clone()
                .map_err(|e| format!("downgrade failed: {e}"))?,
        );
        if !json_equal(&got, want) {
            return Err(format!("downgraded: got {got}, want {want}"));
        }
    }
    if let Some(sub) = v
        .expect
        .get("downgrade_error_contains")
        .and_then(Json::as_str)
    {
        match downgraded {
            Ok(_) => return Err("downgrade succeeded, expected an error".to_owned()),
            Err(e) if !e.to_string().contains(sub) => {
                return Err(format!("downgrade error {e} does not contain {sub:?}"));
            }
            Err(_) => {}
        }
    }

    // Every valid vector also round-trips through protobuf bytes.
    for r in &resources {
        let back = Resource::decode(&r.encode_to_vec())
            .map_err(|e| format!("protobuf round trip: {e}"))?;
        if !back.identical(r) {
            return Err(format!("protobuf round trip changed {r}"));
        }
    }
    Ok(())
}

/// Evaluates one `arithmetic.json` vector.
///
/// # Errors
/// A description of the mismatch.
pub fn check_arithmetic(v: &ArithmeticVector) -> Result<(), String> {
    let left = fold(&v.left).map_err(|e| e.message)?;
    let right = fold(&v.right).map_err(|e| e.message)?;
    let result = match v.op.as_str() {
        "add" => &left + &right,
        "subtract" => &left - &right,
        "contains" => {
            let want = v
                .expect
                .get("contains")
                .and_then(Json::as_bool)
                .ok_or("no expect.contains")?;
            let got = left.contains(&right);
            return if got == want {
                Ok(())
            } else {
                Err(format!("contains: got {got}, want {want}"))
            };
        }
        other => return Err(format!("unknown op {other}")),
    };
    let want = fold(v.expect.get("result").unwrap_or(&Json::Null)).map_err(|e| e.message)?;
    if result != want {
        return Err(format!("result: got [{result}], want [{want}]"));
    }
    if let Some(size) = v.expect.get("size").and_then(Json::as_u64)
        && result.len() as u64 != size
    {
        return Err(format!("size: got {}, want {size}", result.len()));
    }
    Ok(())
}

/// Parses a file of operation vectors.
///
/// # Errors
/// The JSON error.
pub fn load_operation_vectors(text: &str) -> Result<Vec<OperationVector>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Parses a file of arithmetic vectors.
///
/// # Errors
/// The JSON error.
pub fn load_arithmetic_vectors(text: &str) -> Result<Vec<ArithmeticVector>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Evaluates one vector of `operations.json`, of any category: `resource_validation` (or no
/// operation) as [`check_resource_validation`], the others through
/// [`berth_offers::pipeline::evaluate`].
///
/// # Errors
/// A description of the mismatch.
pub fn check_vector(v: &OperationVector) -> Result<(), String> {
    if v.category == "resource_validation" || v.operation.is_null() {
        return check_resource_validation(v);
    }
    let result = pipeline::evaluate(&v.resources, &v.operation, &v.context, None);
    check_outcome(
        &v.expect,
        &result.as_ref().map(|_| ()).map_err(Clone::clone),
    )?;
    if let (Ok(after), Some(want)) = (&result, v.expect.get("resources_after")) {
        let want = fold(want).map_err(|e| e.message)?;
        if *after != want {
            return Err(format!("resources_after: got [{after}], want [{want}]"));
        }
    }
    Ok(())
}
