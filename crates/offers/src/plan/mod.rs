//! Stateful tasks for schedulers: Marathon's semantics for local persistent volumes and
//! external volumes, as a pure library.
//!
//! * [`plan_launch`] — first launch of an instance: choose the disks (root / path / mount, by
//!   profile and path constraints), RESERVE cpus, mem and disk with labels that tie them to the
//!   instance (`marathon_framework_id`, `marathon_task_id`), CREATE each persistent volume with
//!   a Marathon persistence id (`<safePath>#<name>#<uuid>`), and LAUNCH on exactly those
//!   resources — or say precisely why the offer does not fit.
//! * [`plan_relaunch`] — an offer that holds the instance's reservation (labels) and all its
//!   persistence ids: LAUNCH on exactly those resources, with no new RESERVE or CREATE.
//! * Scale-down keeps everything: nothing to plan; a later [`plan_relaunch`] finds it again.
//! * [`plan_wipe`] — wipe or app deletion: DESTROY every volume, then UNRESERVE everything.
//! * [`plan_reclaim`] — what the scheduler forgot: DESTROY + UNRESERVE of every reservation
//!   labelled for this framework whose instance it does not know ([`reclaim`]).
//!
//! External volumes become Mesos `Volume`s of the task (`DOCKER_VOLUME` or `CSI_VOLUME`);
//! host-path volumes (the documented workaround for nested container paths) are passed through.
//! Every plan validates and applies with [`crate::validate()`] / [`crate::apply()`] on the framework
//! path; the property tests check exactly that.

pub mod ids;
pub mod reclaim;
pub mod spec;

use std::sync::Arc;

use berth_resources::proto as pb;
use berth_resources::{
    AllocationInfo, DiskInfo, DiskSource, DiskSourceType, Label, Labels, MarathonVolumeId,
    Persistence, PersistenceId, ReservationInfo, Resource, Resources, Role, Scalar, Value, Volume,
    VolumeMode,
};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use thiserror::Error;

pub use ids::{InstanceId, InstanceIdStyle, safe_path};
pub use reclaim::{Known, KnownInstance, ReclaimError, ReclaimPlan, ReclaimReason, plan_reclaim};
pub use spec::{DiskType, LocalVolume, RunSpec, SpecError, TaskVolume};

use crate::operation::{Launch, Operation};

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The app or pod is invalid.
    #[error("invalid run spec: {0}")]
    Spec(#[from] SpecError),
    /// The configuration is invalid (role, principal).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The offer does not fit; each reason names what is missing.
    #[error("the offer does not fit: {}", .0.join("; "))]
    NoFit(Vec<String>),
}

/// Who plans, and the label keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanConfig {
    /// The scheduler's framework id (label `marathon_framework_id`).
    pub framework_id: String,
    /// The role reservations are made for (the offer's allocation role).
    pub role: String,
    /// The framework's principal (reservations and volumes carry it).
    pub principal: Option<String>,
    /// Label key for the framework id.
    pub framework_label: String,
    /// Label key for the instance id.
    pub task_label: String,
}

impl PlanConfig {
    /// Marathon's label keys.
    #[must_use]
    pub fn new(framework_id: &str, role: &str, principal: Option<&str>) -> PlanConfig {
        PlanConfig {
            framework_id: framework_id.to_owned(),
            role: role.to_owned(),
            principal: principal.map(str::to_owned),
            framework_label: "marathon_framework_id".to_owned(),
            task_label: "marathon_task_id".to_owned(),
        }
    }

    fn labels(&self, instance: &str) -> Labels {
        Labels(vec![
            Label::new(&self.framework_label, &self.framework_id),
            Label::new(&self.task_label, instance),
        ])
    }

    fn reservation(&self, instance: &str) -> Result<ReservationInfo, PlanError> {
        let role = Role::new(&self.role).map_err(|e| PlanError::Config(format!("role: {e}")))?;
        Ok(ReservationInfo::dynamic(role, self.principal.as_deref())
            .with_labels(self.labels(instance)))
    }

    /// True if `r`'s current reservation carries this framework's labels for `instance`.
    fn owns(&self, r: &Resource, instance: &str) -> bool {
        let Some(labels) = r.current_reservation().and_then(|x| x.labels.as_ref()) else {
            return false;
        };
        let get = |k: &str| {
            labels
                .0
                .iter()
                .find(|l| l.key == k)
                .and_then(|l| l.value.as_deref())
        };
        get(&self.framework_label) == Some(self.framework_id.as_str())
            && get(&self.task_label) == Some(instance)
    }
}

/// What a scheduler keeps about an instance's reservation (for relaunch and wipe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The `marathon_task_id` label value.
    pub instance_id: String,
    /// The persistence ids of the instance's volumes.
    pub persistence_ids: Vec<String>,
}

/// A plan: the operations to send in one ACCEPT, in order, and the reservation to remember.
#[derive(Clone, Debug)]
pub struct Plan {
    /// RESERVE, CREATE, LAUNCH (first launch); LAUNCH (relaunch); DESTROY, UNRESERVE (wipe).
    pub operations: Vec<Operation>,
    /// The instance's reservation.
    pub reservation: Reservation,
}

/// One piece of an offered resource taken for the instance.
struct Take {
    /// The offered resource it comes from (unreserved).
    from: Resource,
    amount: Scalar,
}

fn scalar_of(v: f64, what: &str) -> Result<Scalar, PlanError> {
    Scalar::from_f64(v).map_err(|e| PlanError::Config(format!("{what}: {e}")))
}

fn mib(v: u64) -> Scalar {
    Scalar::from_units(i64::try_from(v).unwrap_or(i64::MAX))
}

/// Unreserved, non-revocable, provider-less offered resources usable for reservations.
fn usable(offer: &Resources) -> impl Iterator<Item = &Resource> {
    offer.iter().filter(|r| {
        r.is_unreserved() && !r.revocable && r.provider_id.is_none() && !r.is_persistent_volume()
    })
}

/// Takes `need` of `name` (no disk source) from the usable resources, greedily.
fn take_plain(
    pool: &mut [(&Resource, Scalar)],
    name: &str,
    need: Scalar,
    takes: &mut Vec<Take>,
) -> Result<(), String> {
    if need <= Scalar::ZERO {
        return Ok(());
    }
    let available: Scalar = pool
        .iter()
        .filter(|(r, _)| &*r.name == name && r.disk_source().is_none())
        .fold(Scalar::ZERO, |a, (_, left)| a + *left);
    if available < need {
        return Err(format!(
            "not enough unreserved {name}: need {need}, the offer has {available}"
        ));
    }
    let mut missing = need;
    for (r, left) in pool
        .iter_mut()
        .filter(|(r, _)| &*r.name == name && r.disk_source().is_none())
    {
        if missing <= Scalar::ZERO {
            break;
        }
        let amount = if *left < missing { *left } else { missing };
        if amount > Scalar::ZERO {
            *left -= amount;
            missing -= amount;
            takes.push(Take {
                from: (*r).clone(),
                amount,
            });
        }
    }
    Ok(())
}

/// A volume's path constraints, compiled once: (LIKE?, anchored regex, source text).
pub(crate) type Constraints = Vec<(bool, Regex, String)>;

fn compile_constraints(p: &spec::PersistentInfo) -> Result<Constraints, PlanError> {
    p.constraints
        .iter()
        .filter_map(|c| match c.as_slice() {
            [_, op, value] => Some((op == "LIKE", value)),
            _ => None,
        })
        .map(|(like, value)| {
            Regex::new(&format!("^(?:{value})$"))
                .map(|re| (like, re, value.clone()))
                .map_err(|e| PlanError::Config(format!("constraint {value}: {e}")))
        })
        .collect()
}

/// Why a disk cannot hold a volume (rendered only when no disk fits).
enum Reject {
    Profile,
    Constraint(usize),
    Taken,
    TooSmall(Scalar),
    TooLarge(Scalar),
    Free(Scalar),
}

fn render(
    reject: &Reject,
    p: &spec::PersistentInfo,
    constraints: &Constraints,
    source: &DiskSource,
    size: Scalar,
) -> String {
    let root = source.root().unwrap_or("");
    let what = match reject {
        Reject::Profile => format!(
            "profile {:?} is not {:?}",
            source.profile.as_deref().unwrap_or(""),
            p.profile_name.as_deref().unwrap_or("")
        ),
        Reject::Constraint(i) => {
            constraints
                .get(*i)
                .map_or_else(String::new, |(like, _, value)| {
                    format!(
                        "path {root:?} does not satisfy {} {value}",
                        if *like { "LIKE" } else { "UNLIKE" }
                    )
                })
        }
        Reject::Taken => "already taken".to_owned(),
        Reject::TooSmall(whole) => format!("{whole} MiB is smaller than size {size}"),
        Reject::TooLarge(whole) => format!(
            "{whole} MiB is larger than maxSize {}",
            p.max_size.unwrap_or(0)
        ),
        Reject::Free(left) => format!("{left} MiB free, less than {size}"),
    };
    format!("{root}: {what}")
}

/// `profileName` and `constraints` against a disk source.
fn disk_matches(
    p: &spec::PersistentInfo,
    constraints: &Constraints,
    source: &DiskSource,
) -> Result<(), Reject> {
    if let Some(profile) = &p.profile_name
        && source.profile.as_deref() != Some(profile.as_str())
    {
        return Err(Reject::Profile);
    }
    let root = source.root().unwrap_or("");
    for (i, (like, re, _)) in constraints.iter().enumerate() {
        if re.is_match(root) != *like {
            return Err(Reject::Constraint(i));
        }
    }
    Ok(())
}

struct PlannedVolume {
    volume: LocalVolume,
    /// The offered disk the volume is created on (unreserved form).
    disk: Resource,
    size: Scalar,
}

/// A validated run spec, ready to plan against many offers (constraints compiled once).
#[derive(Clone, Debug)]
pub struct PreparedSpec {
    spec: RunSpec,
    volumes: Vec<(LocalVolume, Constraints)>,
    task_volumes: Vec<pb::Volume>,
}

impl PreparedSpec {
    /// Validates `spec` and compiles what planning needs.
    ///
    /// # Errors
    /// [`PlanError::Spec`] for an invalid app or pod.
    pub fn new(spec: &RunSpec) -> Result<PreparedSpec, PlanError> {
        spec.validate()?;
        let volumes = spec
            .local_volumes()
            .into_iter()
            .map(|v| compile_constraints(&v.persistent).map(|c| (v, c)))
            .collect::<Result<_, _>>()?;
        Ok(PreparedSpec {
            spec: spec.clone(),
            volumes,
            task_volumes: task_volumes(spec),
        })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }
}

/// Plans the first launch of one instance on `offer` (see [`PreparedSpec`] to plan one spec
/// against many offers).
///
/// # Errors
/// [`PlanError::Spec`] for an invalid app or pod, [`PlanError::NoFit`] with every reason the
/// offer does not fit.
pub fn plan_launch(
    spec: &RunSpec,
    offer: &Resources,
    config: &PlanConfig,
    instance: Option<InstanceId>,
) -> Result<Plan, PlanError> {
    plan_launch_prepared(&PreparedSpec::new(spec)?, offer, config, instance)
}

/// [`plan_launch`] for a prepared spec.
///
/// # Errors
/// [`PlanError::NoFit`] with every reason the offer does not fit.
pub fn plan_launch_prepared(
    prepared: &PreparedSpec,
    offer: &Resources,
    config: &PlanConfig,
    instance: Option<InstanceId>,
) -> Result<Plan, PlanError> {
    let spec = &prepared.spec;
    let instance = instance
        .unwrap_or_else(|| InstanceId::generate(spec.id()))
        .to_string();
    let reservation = config.reservation(&instance)?;
    let (cpus, mem, disk) = spec.resources();
    let (cpus, mem, sandbox) = (
        scalar_of(cpus, "cpus")?,
        scalar_of(mem, "mem")?,
        scalar_of(disk, "disk")?,
    );
    let mut pool: Vec<(&Resource, Scalar)> = usable(offer)
        .filter_map(|r| r.scalar_value().map(|s| (r, s)))
        .collect();
    let mut takes = Vec::new();
    let mut reasons = Vec::new();
    for (name, need) in [("cpus", cpus), ("mem", mem)] {
        if let Err(e) = take_plain(&mut pool, name, need, &mut takes) {
            reasons.push(e);
        }
    }

    // Disks: root volumes and the sandbox come from the root disk; path volumes share PATH
    // disks; a mount volume takes a whole MOUNT disk.
    let volumes = &prepared.volumes;
    let root_need = volumes
        .iter()
        .map(|(v, _)| v)
        .filter(|v| v.persistent.disk_type() == DiskType::Root)
        .fold(sandbox, |a, v| a + mib(v.persistent.size));
    if let Err(e) = take_plain(&mut pool, "disk", root_need, &mut takes) {
        reasons.push(format!("{e} (sandbox {sandbox} + root volumes)"));
    }
    let mut planned: Vec<PlannedVolume> = Vec::new();
    let mut mount_used: Vec<usize> = Vec::new();
    for (v, constraints) in volumes {
        let p = &v.persistent;
        let size = mib(p.size);
        match p.disk_type() {
            DiskType::Root => {
                if let Some(root) = pool
                    .iter()
                    .find(|(r, _)| &*r.name == "disk" && r.disk_source().is_none())
                {
                    planned.push(PlannedVolume {
                        volume: v.clone(),
                        disk: (*root.0).clone(),
                        size,
                    });
                }
            }
            DiskType::Path | DiskType::Mount => {
                let want = if p.disk_type() == DiskType::Path {
                    DiskSourceType::Path
                } else {
                    DiskSourceType::Mount
                };
                // Whether disk `i` can hold the volume, and how much of it is taken.
                let check =
                    |i: usize, r: &Resource, left: Scalar| -> Option<Result<Scalar, Reject>> {
                        let source = r.disk_source().filter(|s| s.kind == want)?;
                        Some(disk_matches(p, constraints, source).and_then(|()| {
                            if want == DiskSourceType::Mount {
                                let whole = r.scalar_value().unwrap_or(Scalar::ZERO);
                                if mount_used.contains(&i) {
                                    Err(Reject::Taken)
                                } else if whole < size {
                                    Err(Reject::TooSmall(whole))
                                } else if p.max_size.is_some_and(|m| whole > mib(m)) {
                                    Err(Reject::TooLarge(whole))
                                } else {
                                    Ok(whole)
                                }
                            } else if left < size {
                                Err(Reject::Free(left))
                            } else {
                                Ok(size)
                            }
                        }))
                    };
                let chosen =
                    pool.iter()
                        .enumerate()
                        .find_map(|(i, (r, left))| match check(i, r, *left) {
                            Some(Ok(amount)) => Some((i, amount)),
                            _ => None,
                        });
                let why = || -> Vec<String> {
                    pool.iter()
                        .enumerate()
                        .filter_map(
                            |(i, (r, left))| match (check(i, r, *left), r.disk_source()) {
                                (Some(Err(reject)), Some(source)) => {
                                    Some(render(&reject, p, constraints, source, size))
                                }
                                _ => None,
                            },
                        )
                        .collect()
                };
                match chosen {
                    Some((i, amount)) => {
                        if let Some((r, left)) = pool.get_mut(i) {
                            *left -= amount;
                            if want == DiskSourceType::Mount {
                                mount_used.push(i);
                            }
                            takes.push(Take {
                                from: (*r).clone(),
                                amount,
                            });
                            planned.push(PlannedVolume {
                                volume: v.clone(),
                                disk: (*r).clone(),
                                size: amount,
                            });
                        }
                    }
                    None => {
                        let kind = if want == DiskSourceType::Path {
                            "PATH"
                        } else {
                            "MOUNT"
                        };
                        let why = why();
                        let detail = if why.is_empty() {
                            "the offer has none".to_owned()
                        } else {
                            why.join(", ")
                        };
                        reasons.push(format!(
                            "no {kind} disk for volume '{}' (size {size} MiB): {detail}",
                            v.name
                        ));
                    }
                }
            }
        }
    }
    if !reasons.is_empty() {
        return Err(PlanError::NoFit(reasons));
    }

    // RESERVE what was taken (pieces of one offered resource merge).
    let mut reserve: Resources = Resources::new();
    for t in &takes {
        let mut r = t.from.clone();
        r.value = Value::Scalar(t.amount);
        r.reservations.push(reservation.clone());
        reserve.add_resource(r);
    }
    let reserved = reserve;
    let reserve: Vec<Resource> = reserved.iter().cloned().collect();

    // CREATE the volumes on the reserved disks.
    let mut persistence_ids = Vec::new();
    let mut created = Vec::new();
    for pv in &planned {
        let id = MarathonVolumeId::generate(spec.id(), &pv.volume.name)
            .map_err(|e| PlanError::Config(format!("volume '{}': {e}", pv.volume.name)))?;
        let id =
            PersistenceId::new(&id.to_string()).map_err(|e| PlanError::Config(e.to_string()))?;
        persistence_ids.push(id.to_string());
        let mut r = pv.disk.clone();
        r.value = Value::Scalar(pv.size);
        r.reservations.push(reservation.clone());
        let container_path = match spec {
            RunSpec::App(_) => pv.volume.name.clone(),
            RunSpec::Pod(_) => pv
                .volume
                .container_paths
                .first()
                .cloned()
                .unwrap_or_else(|| pv.volume.name.clone()),
        };
        r.disk = Some(Arc::new(DiskInfo {
            persistence: Some(Persistence {
                id,
                principal: config.principal.clone(),
            }),
            volume: Some(Volume::new(container_path, VolumeMode::Rw)),
            source: pv.disk.disk_source().cloned(),
        }));
        created.push(r);
    }

    // LAUNCH on the reserved resources minus what the volumes took, plus the volumes.
    let mut launch_resources = reserved;
    for v in &created {
        launch_resources.subtract_resource(&v.stripped_volume());
        launch_resources.add_resource(v.clone());
    }
    let launch = Launch {
        id: instance.clone(),
        resources: launch_resources.iter_expanded().cloned().collect(),
        volumes: prepared.task_volumes.clone(),
    };
    let mut operations = vec![Operation::Reserve {
        source: vec![],
        resources: reserve,
    }];
    if !created.is_empty() {
        operations.push(Operation::Create { volumes: created });
    }
    operations.push(Operation::Launch {
        tasks: vec![launch],
    });
    Ok(Plan {
        operations,
        reservation: Reservation {
            instance_id: instance,
            persistence_ids,
        },
    })
}

/// The offered resources reserved for the instance (its labels, this framework).
fn owned_by(
    offer: &Resources,
    config: &PlanConfig,
    reservation: &Reservation,
) -> Result<Vec<Resource>, PlanError> {
    let owned: Vec<Resource> = offer
        .iter_expanded()
        .filter(|r| config.owns(r, &reservation.instance_id))
        .cloned()
        .collect();
    if owned.is_empty() {
        return Err(PlanError::NoFit(vec![format!(
            "the offer holds no resources reserved for instance '{}'",
            reservation.instance_id
        )]));
    }
    Ok(owned)
}

/// Plans the relaunch of an instance on an offer that holds its reservation and volumes.
///
/// # Errors
/// [`PlanError::NoFit`] when the offer lacks the reservation or one of the volumes.
pub fn plan_relaunch(
    spec: &RunSpec,
    offer: &Resources,
    config: &PlanConfig,
    reservation: &Reservation,
) -> Result<Plan, PlanError> {
    spec.validate()?;
    let owned = owned_by(offer, config, reservation)?;
    let missing: Vec<String> = reservation
        .persistence_ids
        .iter()
        .filter(|id| {
            !owned.iter().any(|r| {
                r.persistence_id()
                    .is_some_and(|p| p.as_str() == id.as_str())
            })
        })
        .map(|id| {
            format!(
                "the offer lacks persistent volume '{id}' of instance '{}'",
                reservation.instance_id
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(PlanError::NoFit(missing));
    }
    let launch = Launch {
        id: reservation.instance_id.clone(),
        resources: owned,
        volumes: task_volumes(spec),
    };
    Ok(Plan {
        operations: vec![Operation::Launch {
            tasks: vec![launch],
        }],
        reservation: reservation.clone(),
    })
}

/// Plans a wipe (or app deletion) of an instance: DESTROY every volume, then UNRESERVE every
/// resource reserved for it.
///
/// # Errors
/// [`PlanError::NoFit`] when the offer holds nothing of the instance.
pub fn plan_wipe(
    offer: &Resources,
    config: &PlanConfig,
    reservation: &Reservation,
) -> Result<Plan, PlanError> {
    let owned = owned_by(offer, config, reservation)?;
    let volumes: Vec<Resource> = owned
        .iter()
        .filter(|r| r.is_persistent_volume())
        .cloned()
        .collect();
    let mut unreserve: Resources = Resources::new();
    for r in &owned {
        unreserve.add_resource(if r.is_persistent_volume() {
            r.stripped_volume()
        } else {
            r.clone()
        });
    }
    let mut operations = Vec::new();
    if !volumes.is_empty() {
        operations.push(Operation::Destroy { volumes });
    }
    operations.push(Operation::Unreserve {
        resources: unreserve.iter().cloned().collect(),
    });
    Ok(Plan {
        operations,
        reservation: reservation.clone(),
    })
}

/// External and host-path volumes as Mesos `Volume`s of the task.
fn task_volumes(spec: &RunSpec) -> Vec<pb::Volume> {
    spec.task_volumes().iter().map(mesos_volume).collect()
}

fn mode(read_write: bool) -> i32 {
    if read_write {
        pb::volume::Mode::Rw as i32
    } else {
        pb::volume::Mode::Ro as i32
    }
}

/// Maps an external or host-path volume to a Mesos `Volume`.
#[must_use]
pub fn mesos_volume(v: &TaskVolume) -> pb::Volume {
    use pb::volume::source::{self, Type as SourceType};
    match v {
        TaskVolume::HostPath {
            container_path,
            host_path,
            read_write,
        } => pb::Volume {
            container_path: container_path.clone(),
            host_path: Some(host_path.clone()),
            mode: mode(*read_write),
            ..Default::default()
        },
        TaskVolume::External {
            container_path,
            read_write,
            external,
        } if external.provider == "csi" => {
            let opt = |k: &str| external.options.get(k);
            let cap = opt("capability");
            let cap_str = |k: &str| cap.and_then(|c| c.get(k)).and_then(Json::as_str);
            let access = cap_str("accessMode")
                .and_then(source::csi_volume::volume_capability::access_mode::Mode::from_str_name)
                .unwrap_or(
                    source::csi_volume::volume_capability::access_mode::Mode::SingleNodeWriter,
                );
            let access_type = if cap_str("accessType") == Some("block") {
                source::csi_volume::volume_capability::AccessType::Block(Default::default())
            } else {
                source::csi_volume::volume_capability::AccessType::Mount(
                    source::csi_volume::volume_capability::MountVolume {
                        fs_type: cap_str("fsType").map(str::to_owned),
                        mount_flags: cap
                            .and_then(|c| c.get("mountFlags"))
                            .and_then(Json::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(|x| x.as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    },
                )
            };
            let strings = |k: &str| -> std::collections::HashMap<String, String> {
                opt(k)
                    .and_then(Json::as_object)
                    .map(|o| {
                        o.iter()
                            .filter_map(|(a, b)| b.as_str().map(|b| (a.clone(), b.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let secrets = |k: &str| -> std::collections::HashMap<String, pb::Secret> {
                strings(k)
                    .into_iter()
                    .map(|(key, name)| {
                        (
                            key,
                            pb::Secret {
                                r#type: Some(pb::secret::Type::Reference as i32),
                                reference: Some(pb::secret::Reference { name, key: None }),
                                value: None,
                            },
                        )
                    })
                    .collect()
            };
            pb::Volume {
                container_path: container_path.clone(),
                mode: mode(*read_write),
                source: Some(pb::volume::Source {
                    r#type: Some(SourceType::CsiVolume as i32),
                    csi_volume: Some(source::CsiVolume {
                        plugin_name: opt("pluginName")
                            .and_then(Json::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        static_provisioning: Some(source::csi_volume::StaticProvisioning {
                            volume_id: external.name.clone(),
                            volume_capability: source::csi_volume::VolumeCapability {
                                access_type: Some(access_type),
                                access_mode: source::csi_volume::volume_capability::AccessMode {
                                    mode: access as i32,
                                },
                            },
                            node_stage_secrets: secrets("nodeStageSecret"),
                            node_publish_secrets: secrets("nodePublishSecret"),
                            volume_context: strings("volumeContext"),
                        }),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        TaskVolume::External {
            container_path,
            read_write,
            external,
        } => {
            let opt = |k: &str| {
                external
                    .options
                    .get(k)
                    .and_then(Json::as_str)
                    .map(str::trim)
            };
            let mut parameters: Vec<pb::Parameter> = external
                .options
                .iter()
                .filter(|(k, _)| k.starts_with("dvdi/") && k.as_str() != "dvdi/driver")
                .filter(|(k, _)| !(external.size.is_some() && k.as_str() == "dvdi/size"))
                .filter_map(|(k, v)| {
                    v.as_str().map(|v| pb::Parameter {
                        key: k.trim_start_matches("dvdi/").to_owned(),
                        value: v.trim().to_owned(),
                    })
                })
                .collect();
            if let Some(size) = external.size {
                parameters.push(pb::Parameter {
                    key: "size".to_owned(),
                    value: size.to_string(),
                });
            }
            pb::Volume {
                container_path: container_path.clone(),
                mode: mode(*read_write),
                source: Some(pb::volume::Source {
                    r#type: Some(SourceType::DockerVolume as i32),
                    docker_volume: Some(source::DockerVolume {
                        driver: opt("dvdi/driver").map(str::to_owned),
                        name: external.name.clone(),
                        driver_options: (!parameters.is_empty()).then_some(pb::Parameters {
                            parameter: parameters,
                        }),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
    }
}

/// Allocation info of the offer's role, for callers that build offers by hand.
#[must_use]
pub fn allocated_to(role: &str) -> AllocationInfo {
    AllocationInfo::role(role)
}
