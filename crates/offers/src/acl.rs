//! Authorization of operations with Mesos's ACL file format (the "Coming Soon" of the Mesos
//! persistent-volume documentation).
//!
//! ```json
//! {
//!   "permissive": false,
//!   "reserve_resources":   [{"principals": {"values": ["ops"]}, "roles": {"values": ["prod"]}}],
//!   "unreserve_resources": [{"principals": {"values": ["ops"]}, "reserver_principals": {"values": ["ops"]}}],
//!   "create_volumes":      [{"principals": {"type": "ANY"}, "roles": {"values": ["prod"]}}],
//!   "destroy_volumes":     [{"principals": {"values": ["ops"]}, "creator_principals": {"type": "ANY"}}],
//!   "resize_volume":       [{"principals": {"type": "NONE"}, "roles": {"type": "ANY"}}]
//! }
//! ```
//!
//! Rules are tried in order; the first whose subject and object both match decides: allowed
//! unless either entity is `NONE`. No match falls back to `permissive` (default `true`). An
//! entity is `{"values": [...]}`, `{"type": "ANY"}` or `{"type": "NONE"}`; an unauthenticated
//! request (no principal) matches only `ANY` and `NONE` subjects.

use serde::Deserialize;
use thiserror::Error;

use crate::error::OperationError;
use crate::operation::Operation;

/// What is being done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// RESERVE; the object is the reservation role.
    ReserveResources,
    /// UNRESERVE; the object is the principal that made the reservation.
    UnreserveResources,
    /// CREATE; the object is the volume's role.
    CreateVolume,
    /// DESTROY; the object is the principal that created the volume.
    DestroyVolume,
    /// GROW_VOLUME / SHRINK_VOLUME; the object is the volume's role.
    ResizeVolume,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::ReserveResources => "reserve resources",
            Action::UnreserveResources => "unreserve resources",
            Action::CreateVolume => "create volumes",
            Action::DestroyVolume => "destroy volumes",
            Action::ResizeVolume => "resize volumes",
        }
    }
}

/// One authorization question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The action.
    pub action: Action,
    /// The acting principal, if authenticated.
    pub principal: Option<&'a str>,
    /// The object (role or principal, per action); `None` when the resource has none.
    pub object: Option<&'a str>,
}

/// Decides authorization requests.
pub trait Authorizer: Send + Sync {
    /// True when allowed.
    fn authorized(&self, request: &Request<'_>) -> bool;
}

/// An ACL file that cannot be used.
#[derive(Debug, Error)]
pub enum AclError {
    /// Not JSON of the expected shape.
    #[error("invalid ACL file: {0}")]
    Json(#[from] serde_json::Error),
    /// An entity with neither `values` nor a known `type`.
    #[error(
        "invalid ACL entity in '{0}': use {{\"values\": [...]}} or {{\"type\": \"ANY\"|\"NONE\"}}"
    )]
    Entity(&'static str),
}

/// `{"values": [...]}` or `{"type": "ANY"|"NONE"|"SOME"}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Entity {
    /// `ANY`, `NONE` or `SOME` (implied by `values`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The values for `SOME`.
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntityKind {
    Any,
    None,
    Some,
}

impl Entity {
    fn kind(&self) -> Option<EntityKind> {
        match self.kind.as_deref() {
            Some("ANY") => Some(EntityKind::Any),
            Some("NONE") => Some(EntityKind::None),
            Some("SOME") | None if !self.values.is_empty() || self.kind.is_some() => {
                Some(EntityKind::Some)
            }
            _ => None,
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self.kind() {
            Some(EntityKind::Any | EntityKind::None) => true,
            Some(EntityKind::Some) => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            None => false,
        }
    }

    fn denies(&self) -> bool {
        self.kind() == Some(EntityKind::None)
    }
}

/// One ACL rule: a subject (`principals`) and one object entity.
#[derive(Clone, Debug, Deserialize)]
pub struct Rule {
    /// Who.
    pub principals: Entity,
    /// On what (the field name depends on the action).
    #[serde(
        alias = "roles",
        alias = "reserver_principals",
        alias = "creator_principals"
    )]
    pub object: Entity,
}

/// A Mesos ACL file.
#[derive(Clone, Debug, Deserialize)]
pub struct Acls {
    /// Decision when no rule matches (Mesos default: true).
    #[serde(default = "yes")]
    pub permissive: bool,
    /// `reserve_resources`.
    #[serde(default)]
    pub reserve_resources: Vec<Rule>,
    /// `unreserve_resources`.
    #[serde(default)]
    pub unreserve_resources: Vec<Rule>,
    /// `create_volumes`.
    #[serde(default)]
    pub create_volumes: Vec<Rule>,
    /// `destroy_volumes`.
    #[serde(default)]
    pub destroy_volumes: Vec<Rule>,
    /// `resize_volume`.
    #[serde(default)]
    pub resize_volume: Vec<Rule>,
}

fn yes() -> bool {
    true
}

impl Acls {
    /// Parses an ACL file.
    ///
    /// # Errors
    /// [`AclError`] for malformed JSON or entities.
    pub fn from_json(text: &str) -> Result<Acls, AclError> {
        Acls::from_value(serde_json::from_str(text)?)
    }

    /// Reads an ACL object already parsed as JSON.
    ///
    /// # Errors
    /// [`AclError`] for malformed rules or entities.
    pub fn from_value(json: serde_json::Value) -> Result<Acls, AclError> {
        let acls: Acls = serde_json::from_value(json)?;
        for (name, rules) in [
            ("reserve_resources", &acls.reserve_resources),
            ("unreserve_resources", &acls.unreserve_resources),
            ("create_volumes", &acls.create_volumes),
            ("destroy_volumes", &acls.destroy_volumes),
            ("resize_volume", &acls.resize_volume),
        ] {
            if rules
                .iter()
                .any(|r| r.principals.kind().is_none() || r.object.kind().is_none())
            {
                return Err(AclError::Entity(name));
            }
        }
        Ok(acls)
    }

    fn rules(&self, action: Action) -> &[Rule] {
        match action {
            Action::ReserveResources => &self.reserve_resources,
            Action::UnreserveResources => &self.unreserve_resources,
            Action::CreateVolume => &self.create_volumes,
            Action::DestroyVolume => &self.destroy_volumes,
            Action::ResizeVolume => &self.resize_volume,
        }
    }
}

impl Authorizer for Acls {
    fn authorized(&self, request: &Request<'_>) -> bool {
        for rule in self.rules(request.action) {
            if rule.principals.matches(request.principal) && rule.object.matches(request.object) {
                return !rule.principals.denies() && !rule.object.denies();
            }
        }
        self.permissive
    }
}

/// Asks `authorizer` about every resource of `op`.
///
/// # Errors
/// [`OperationError::Unauthorized`] naming the action, principal and object refused.
pub fn authorize_operation(
    authorizer: &dyn Authorizer,
    op: &Operation,
    principal: Option<&str>,
) -> Result<(), OperationError> {
    let mut asks: Vec<(Action, Option<String>)> = Vec::new();
    let role = |r: &berth_resources::Resource| r.reservation_role().map(ToString::to_string);
    match op {
        Operation::Reserve { resources, .. } => {
            asks.extend(
                resources
                    .iter()
                    .map(|r| (Action::ReserveResources, role(r))),
            );
        }
        Operation::Unreserve { resources } => asks.extend(resources.iter().map(|r| {
            (
                Action::UnreserveResources,
                r.current_reservation().and_then(|x| x.principal.clone()),
            )
        })),
        Operation::Create { volumes } => {
            asks.extend(volumes.iter().map(|r| (Action::CreateVolume, role(r))))
        }
        Operation::Destroy { volumes } => asks.extend(volumes.iter().map(|r| {
            (
                Action::DestroyVolume,
                r.disk
                    .as_ref()
                    .and_then(|d| d.persistence.as_ref())
                    .and_then(|p| p.principal.clone()),
            )
        })),
        Operation::GrowVolume { volume, .. } | Operation::ShrinkVolume { volume, .. } => {
            asks.push((Action::ResizeVolume, role(volume)));
        }
        Operation::Launch { .. } => {}
    }
    for (action, object) in asks {
        let request = Request {
            action,
            principal,
            object: object.as_deref(),
        };
        if !authorizer.authorized(&request) {
            return Err(OperationError::Unauthorized(format!(
                "principal '{}' may not {} for '{}'",
                principal.unwrap_or("<unauthenticated>"),
                action.name(),
                object.as_deref().unwrap_or("<none>")
            )));
        }
    }
    Ok(())
}
