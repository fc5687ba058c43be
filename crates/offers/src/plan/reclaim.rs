//! Reclaiming what a scheduler forgot: reservations and persistent volumes that carry this
//! framework's labels but belong to no instance the scheduler knows (after a crash, a lost
//! update or a deleted app), with the semantics of Marathon's offer-matcher reconciler.
//!
//! For one offer:
//!
//! * A resource is **ours** when its current (last) reservation is dynamic and carries
//!   `marathon_framework_id` = our framework id and a `marathon_task_id` that parses as an
//!   instance id (`<safePath>.instance-<uuid>`, `<safePath>.marathon-<uuid>`, or the legacy
//!   `<safePath>.<uuid>` / `<safePath>_<uuid>`, which names the instance
//!   `<safePath>.marathon-<uuid>`). Everything else — unreserved, statically reserved,
//!   unlabelled, another framework's, an unparseable task id, or ours under someone else's
//!   refinement — is never touched.
//! * Our resources are grouped by instance. An instance is reclaimed when the scheduler does
//!   not know it ([`ReclaimReason::UnknownInstance`]), when its app or pod no longer exists
//!   ([`ReclaimReason::UnknownRunSpec`], checked only when [`Known::run_specs`] is given), or
//!   when it is known as decommissioned with terminal tasks
//!   ([`ReclaimReason::Decommissioned`]). Any other known instance keeps everything.
//! * For a reclaimed instance: DESTROY of its persistent volumes exactly as offered, then
//!   UNRESERVE of all its resources, the volumes in their destroyed form (persistence and
//!   volume removed, disk source kept). One operation per resource provider, as Mesos requires.
//!   UNRESERVE pops one reservation level only: a refined reservation returns to its parent.
//!
//! Differences from Marathon: a task id's uuid must be a hyphenated UUID of canonical length
//! (Java's `UUID.fromString` is laxer; Marathon's matcher throws on a task id it cannot parse);
//! a reserved disk with a source but no persistence is only unreserved (Marathon sends it in a
//! DESTROY, which the master refuses); an instance with a shared volume offered in more than
//! one copy is skipped (DESTROY would leave a copy behind). A shared volume in use by a
//! task is refused by the master's DESTROY ([`crate::OperationError::VolumesInUse`]), which
//! leaves the volume and its reservation in place; each instance's operations are separate so
//! that a refusal concerns that instance only.

use std::collections::BTreeMap;
use std::fmt;

use berth_resources::{ReservationType, Resource, Resources};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{InstanceId, InstanceIdStyle, PlanConfig, safe_path};
use crate::operation::Operation;

/// Why reclaiming cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReclaimError {
    /// A known instance id is not a Marathon instance id.
    #[error(
        "known instance '{0}' is not an instance id (<safePath>.instance-<uuid>, <safePath>.marathon-<uuid> or <safePath>[._]<uuid>)"
    )]
    KnownInstance(String),
    /// The framework id is empty.
    #[error("the framework id is empty")]
    FrameworkId,
}

/// One instance the scheduler knows: a bare id, or an object such as a reservation state file
/// (`{"instance_id": .., "persistence_ids": [..]}`) with an optional `decommissioned` flag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "KnownEntry")]
pub struct KnownInstance {
    /// The instance id (or the `marathon_task_id` label value).
    pub instance_id: String,
    /// The instance is decommissioned (goal `Decommissioned`) and its tasks are terminal: its
    /// reservation is to be freed, as Marathon does for terminal resident instances.
    #[serde(default)]
    pub decommissioned: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KnownEntry {
    Id(String),
    Object {
        instance_id: String,
        #[serde(default)]
        decommissioned: bool,
    },
}

impl From<KnownEntry> for KnownInstance {
    fn from(e: KnownEntry) -> KnownInstance {
        match e {
            KnownEntry::Id(instance_id) => KnownInstance {
                instance_id,
                decommissioned: false,
            },
            KnownEntry::Object {
                instance_id,
                decommissioned,
            } => KnownInstance {
                instance_id,
                decommissioned,
            },
        }
    }
}

/// What the scheduler knows (the `--known` file of `berth-validator plan --reclaim`):
///
/// ```json
/// {"framework_id": "fw-1", "run_specs": ["/prod/db"],
///  "instances": ["prod_db.instance-…", {"instance_id": "…", "decommissioned": true}]}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The framework id (optional here; the planner takes it from [`PlanConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<String>,
    /// The apps and pods that exist (`/prod/db`). `None`: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_specs: Option<Vec<String>>,
    /// The instances the scheduler tracks.
    #[serde(default)]
    pub instances: Vec<KnownInstance>,
}

/// Why an instance's resources are reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReclaimReason {
    /// The scheduler tracks no such instance.
    UnknownInstance,
    /// The instance's app or pod no longer exists.
    UnknownRunSpec,
    /// The instance is decommissioned and terminal.
    Decommissioned,
}

/// One instance whose resources are reclaimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reclaimed {
    /// The instance id (`<safePath>.instance-<uuid>` or `<safePath>.marathon-<uuid>`).
    pub instance_id: String,
    /// Why.
    pub reason: ReclaimReason,
    /// The persistence ids of the volumes destroyed.
    pub persistence_ids: Vec<String>,
    /// The `marathon_task_id` label values found (legacy ids differ from the instance id).
    pub labels: Vec<String>,
}

/// An instance left alone although it would be reclaimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The instance id.
    pub instance_id: String,
    /// Why it is left alone.
    pub reason: String,
}

/// The operations to send in one ACCEPT, and what they reclaim.
#[derive(Clone, Debug, Default)]
pub struct ReclaimPlan {
    /// Per reclaimed instance, in instance-id order: DESTROY (if it has volumes), UNRESERVE.
    pub operations: Vec<Operation>,
    /// The reclaimed instances, in the order of the operations.
    pub reclaimed: Vec<Reclaimed>,
    /// Instances that would be reclaimed but are left alone.
    pub skipped: Vec<Skipped>,
}

/// An instance id as Marathon compares them: run spec, prefix and UUID.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    safe_path: String,
    /// `true` for `instance-`, `false` for `marathon-` (and legacy ids).
    instance_prefix: bool,
    uuid: uuid::Uuid,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.instance_prefix {
            "instance-"
        } else {
            "marathon-"
        };
        write!(
            f,
            "{}.{prefix}{}",
            self.safe_path,
            self.uuid.as_hyphenated()
        )
    }
}

/// One instance's resources in the offer (each with its number of copies) and the task-id
/// labels that name it.
#[derive(Default)]
struct Found {
    resources: Vec<(Resource, u64)>,
    labels: Vec<String>,
}

/// Parses a `marathon_task_id` value or an instance id; `None` when it names no instance.
fn key(text: &str) -> Option<Key> {
    let id = InstanceId::parse(text)?;
    // Java's UUID.fromString wants the hyphenated form; we also want the canonical lengths.
    if id.uuid.len() != 36 || id.uuid.matches('-').count() != 4 {
        return None;
    }
    let uuid = uuid::Uuid::try_parse(&id.uuid).ok()?;
    Some(Key {
        safe_path: id.safe_path,
        instance_prefix: id.style == InstanceIdStyle::Instance,
        uuid,
    })
}

/// The instance whose labels `r`'s current reservation carries for this framework, if any.
fn owner(r: &Resource, config: &PlanConfig) -> Option<(Key, String)> {
    let reservation = r.current_reservation()?;
    if reservation.kind != ReservationType::Dynamic {
        return None;
    }
    let labels = reservation.labels.as_ref()?;
    let get = |k: &str| {
        labels
            .0
            .iter()
            .find(|l| l.key == k)
            .and_then(|l| l.value.as_deref())
    };
    if get(&config.framework_label) != Some(config.framework_id.as_str()) {
        return None;
    }
    let label = get(&config.task_label)?;
    key(label).map(|k| (k, label.to_owned()))
}

/// Plans DESTROY + UNRESERVE for every resource of `offer` labelled for this framework whose
/// instance `known` does not keep.
///
/// # Errors
/// [`ReclaimError::KnownInstance`] for a known instance id that does not parse,
/// [`ReclaimError::FrameworkId`] for an empty framework id.
pub fn plan_reclaim(
    offer: &Resources,
    config: &PlanConfig,
    known: &Known,
) -> Result<ReclaimPlan, ReclaimError> {
    if config.framework_id.is_empty() {
        return Err(ReclaimError::FrameworkId);
    }
    let mut tracked: BTreeMap<Key, bool> = BTreeMap::new();
    for i in &known.instances {
        let k = key(&i.instance_id)
            .ok_or_else(|| ReclaimError::KnownInstance(i.instance_id.clone()))?;
        let decommissioned = tracked.entry(k).or_insert(i.decommissioned);
        // Listed twice: kept if any entry keeps it.
        *decommissioned &= i.decommissioned;
    }
    let run_specs: Option<Vec<String>> = known
        .run_specs
        .as_ref()
        .map(|specs| specs.iter().map(|s| safe_path(s)).collect());

    // Our resources by instance, each with its number of copies (shared volumes).
    let mut by_instance: BTreeMap<Key, Found> = BTreeMap::new();
    for (r, count) in offer.iter_with_counts() {
        if let Some((k, label)) = owner(r, config) {
            let entry = by_instance.entry(k).or_default();
            entry.resources.push((r.clone(), count));
            if !entry.labels.contains(&label) {
                entry.labels.push(label);
            }
        }
    }

    let mut plan = ReclaimPlan::default();
    for (k, Found { resources, labels }) in by_instance {
        let reason = match tracked.get(&k) {
            None => ReclaimReason::UnknownInstance,
            Some(_)
                if run_specs
                    .as_ref()
                    .is_some_and(|specs| !specs.contains(&k.safe_path)) =>
            {
                ReclaimReason::UnknownRunSpec
            }
            Some(true) => ReclaimReason::Decommissioned,
            Some(false) => continue,
        };
        if let Some((v, n)) = resources
            .iter()
            .find(|(r, n)| r.is_persistent_volume() && r.shared && *n > 1)
        {
            plan.skipped.push(Skipped {
                instance_id: k.to_string(),
                reason: format!(
                    "shared volume '{}' is offered in {n} copies; DESTROY would leave copies behind",
                    v.persistence_id().map(ToString::to_string).unwrap_or_default()
                ),
            });
            continue;
        }
        // Per provider (BTreeMap: the agent's own resources first, then providers by id).
        let mut destroy: BTreeMap<Option<String>, Vec<Resource>> = BTreeMap::new();
        let mut unreserve: BTreeMap<Option<String>, Resources> = BTreeMap::new();
        let mut persistence_ids = Vec::new();
        for (r, _) in &resources {
            let provider = r.provider_id.as_deref().map(str::to_owned);
            let freed = if r.is_persistent_volume() {
                if let Some(id) = r.persistence_id() {
                    persistence_ids.push(id.to_string());
                }
                destroy.entry(provider.clone()).or_default().push(r.clone());
                r.stripped_volume()
            } else {
                r.clone()
            };
            unreserve.entry(provider).or_default().add_resource(freed);
        }
        plan.operations.extend(
            destroy
                .into_values()
                .map(|volumes| Operation::Destroy { volumes }),
        );
        plan.operations.extend(
            unreserve
                .into_values()
                .map(|resources| Operation::Unreserve {
                    resources: resources.iter().cloned().collect(),
                }),
        );
        plan.reclaimed.push(Reclaimed {
            instance_id: k.to_string(),
            reason,
            persistence_ids,
            labels,
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_as_marathon_does() {
        let uuid = "5f0e3c1a-2b4d-11ef-9a3c-0242ac120002";
        let new = key(&format!("prod_db.instance-{uuid}")).unwrap();
        let old = key(&format!("prod_db.marathon-{uuid}")).unwrap();
        assert_ne!(new, old);
        assert_eq!(key(&format!("prod_db.{uuid}")), Some(old.clone()));
        assert_eq!(key(&format!("prod_db_{uuid}")), Some(old.clone()));
        assert_eq!(
            key(&format!("prod_db.marathon-{}", uuid.to_uppercase())),
            Some(old)
        );
        assert_eq!(new.to_string(), format!("prod_db.instance-{uuid}"));
        for bad in [
            "prod_db.instance-xyz",
            "prod_db",
            "",
            "prod_db.instance-5f0e3c1a2b4d11ef9a3c0242ac120002",
        ] {
            assert_eq!(key(bad), None, "{bad}");
        }
    }

    #[test]
    fn known_files_read_ids_and_reservation_states() {
        let known: Known = serde_json::from_str(
            r#"{"framework_id": "fw", "instances": ["a.instance-x",
                {"instance_id": "b.instance-y", "persistence_ids": ["b#d#u"]},
                {"instance_id": "c.instance-z", "decommissioned": true}]}"#,
        )
        .unwrap();
        assert_eq!(known.framework_id.as_deref(), Some("fw"));
        assert_eq!(known.run_specs, None);
        let flags: Vec<(&str, bool)> = known
            .instances
            .iter()
            .map(|i| (i.instance_id.as_str(), i.decommissioned))
            .collect();
        assert_eq!(
            flags,
            [
                ("a.instance-x", false),
                ("b.instance-y", false),
                ("c.instance-z", true)
            ]
        );
    }
}
