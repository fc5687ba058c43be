//! The master's pipeline for one operation, from Mesos JSON to the resulting resources
//! (`research` H-4): parse, read the operation (body, common validation, upgrade), the
//! framework-path rules (no RESERVE `source`, allocation-info injection), validation,
//! authorization, and application. Used by the conformance runner, `berth-validator check`,
//! `batch` and the gRPC service alike.

use std::collections::BTreeMap;

use berth_proto::mesos::v1 as pb;
use berth_resources::json::from_json_value;
use berth_resources::{AllocationInfo, JsonError, Resources};
use serde_json::Value as Json;

use crate::acl::Authorizer;
use crate::context::{AgentCapabilities, Api, Context, Framework, FrameworkCapability};
use crate::operation::Operation;
use crate::{apply, validate};

/// A failure of the pipeline, with the stage it happened in (the conformance vectors' and
/// `berth-validator`'s `stage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    /// `parse`, `validate` or `apply`.
    pub stage: &'static str,
    /// The error text.
    pub message: String,
}

impl StageError {
    /// A parse-stage failure.
    #[must_use]
    pub fn parse(e: &JsonError) -> StageError {
        StageError {
            stage: "parse",
            message: e.to_string(),
        }
    }

    /// A validate-stage failure.
    #[must_use]
    pub fn validate(e: &impl std::fmt::Display) -> StageError {
        StageError {
            stage: "validate",
            message: e.to_string(),
        }
    }
}

fn parse_err(message: impl Into<String>) -> StageError {
    StageError {
        stage: "parse",
        message: message.into(),
    }
}

/// Reads a JSON array of resources into wire messages, without validating them (`null` is
/// the empty list); stage `parse` on failure.
///
/// # Errors
/// The parse failure.
pub fn parse_proto_list(json: &Json) -> Result<Vec<pb::Resource>, StageError> {
    match json {
        Json::Null => Ok(Vec::new()),
        other => berth_resources::codec::parse_proto_list(other).map_err(|e| StageError::parse(&e)),
    }
}

/// Reads resources (a JSON array, either reservation format); stage `parse` on failure.
///
/// # Errors
/// The parse or validation failure, at stage `parse`.
pub fn parse_resources(json: &Json) -> Result<Resources, StageError> {
    if json.is_null() {
        return Ok(Resources::new());
    }
    Resources::from_json(json).map_err(|e| parse_err(e.to_string()))
}

/// Reads a context object of the conformance format (`research` H-4). Missing keys take the
/// operator API with no principal, no capabilities and an empty agent.
///
/// # Errors
/// A malformed context, at stage `parse`.
pub fn parse_context(json: &Json) -> Result<Context, StageError> {
    let mut ctx = Context::operator();
    if json.is_null() {
        return Ok(ctx);
    }
    let Json::Object(obj) = json else {
        return Err(parse_err("context must be a JSON object"));
    };
    let string = |v: Option<&Json>, what: &str| -> Result<Option<String>, StageError> {
        match v {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(parse_err(format!("context.{what} must be a string"))),
        }
    };
    ctx.principal = string(obj.get("principal"), "principal")?;
    ctx.offer_allocation_role = string(obj.get("offer_allocation_role"), "offer_allocation_role")?;
    let api = string(obj.get("api"), "api")?;
    match (api.as_deref(), obj.get("framework")) {
        (Some("framework"), Some(Json::Object(fw))) | (None, Some(Json::Object(fw))) => {
            let strings = |key: &str| -> Result<Vec<String>, StageError> {
                match fw.get(key) {
                    None | Some(Json::Null) => Ok(Vec::new()),
                    Some(Json::Array(items)) => items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| parse_err(format!("framework.{key}: not a string")))
                        })
                        .collect(),
                    Some(_) => Err(parse_err(format!("framework.{key} must be an array"))),
                }
            };
            let framework = Framework {
                id: string(fw.get("id"), "framework.id")?,
                roles: strings("roles")?,
                capabilities: strings("capabilities")?
                    .iter()
                    .map(|c| FrameworkCapability::from_name(c))
                    .collect(),
                principal: string(fw.get("principal"), "framework.principal")?,
            };
            if ctx.principal.is_none() {
                ctx.principal.clone_from(&framework.principal);
            }
            ctx.api = Api::Framework(framework);
        }
        (Some("framework"), _) => {
            return Err(parse_err(
                "context.framework is required on the framework API",
            ));
        }
        (Some("operator") | None, _) => ctx.api = Api::Operator,
        (Some(other), _) => return Err(parse_err(format!("unknown api '{other}'"))),
    }
    if let Some(caps) = obj.get("agent_capabilities").filter(|v| !v.is_null()) {
        let flag = |k: &str| caps.get(k).and_then(Json::as_bool).unwrap_or(false);
        ctx.agent = AgentCapabilities {
            hierarchical_role: flag("hierarchical_role"),
            reservation_refinement: flag("reservation_refinement"),
            resize_volume: flag("resize_volume"),
        };
    }
    ctx.checkpointed = parse_resources(
        obj.get("agent_checkpointed_resources")
            .unwrap_or(&Json::Null),
    )?;
    let mut used = BTreeMap::new();
    match obj.get("agent_used_resources") {
        None | Some(Json::Null) => {}
        Some(Json::Object(map)) => {
            for (framework, list) in map {
                used.insert(framework.clone(), parse_resources(list)?);
            }
        }
        Some(_) => return Err(parse_err("agent_used_resources must be an object")),
    }
    ctx.used = used;
    Ok(ctx)
}

/// Reads an operation (stage `parse` for bad JSON, `validate` for the master's first step).
///
/// # Errors
/// The failure and its stage.
pub fn read_operation(json: &Json) -> Result<Operation, StageError> {
    let raw: pb::offer::Operation = from_json_value(json).map_err(|e| StageError::parse(&e))?;
    Operation::from_proto(&raw).map_err(|e| StageError::validate(&e))
}

/// Framework-path preparation: inject the offer's allocation role where it is missing.
pub fn prepare(op: &mut Operation, ctx: &Context) {
    if let (Api::Framework(_), Some(role)) = (&ctx.api, &ctx.offer_allocation_role) {
        for r in op.resources_mut() {
            if r.allocation_info.is_none() {
                r.allocation_info = Some(AllocationInfo {
                    role: Some(std::sync::Arc::from(role.as_str())),
                });
            }
        }
    }
}

/// Validates, authorizes and applies a typed operation.
///
/// # Errors
/// The failure and its stage (`validate` or `apply`).
pub fn run(
    resources: &Resources,
    mut op: Operation,
    ctx: &Context,
    authorizer: Option<&dyn Authorizer>,
) -> Result<Resources, StageError> {
    prepare(&mut op, ctx);
    validate::validate(&op, ctx).map_err(|e| StageError::validate(&e))?;
    if let Some(authorizer) = authorizer {
        crate::acl::authorize_operation(authorizer, &op, ctx.principal.as_deref())
            .map_err(|e| StageError::validate(&e))?;
    }
    apply::apply(resources, &op).map_err(|e| StageError {
        stage: "apply",
        message: e.to_string(),
    })
}

/// The whole pipeline from Mesos JSON.
///
/// # Errors
/// The failure and its stage (`parse`, `validate` or `apply`).
pub fn evaluate(
    resources: &Json,
    operation: &Json,
    context: &Json,
    authorizer: Option<&dyn Authorizer>,
) -> Result<Resources, StageError> {
    let resources = parse_resources(resources)?;
    let ctx = parse_context(context)?;
    let op = read_operation(operation)?;
    run(&resources, op, &ctx, authorizer)
}
