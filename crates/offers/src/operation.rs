//! Typed offer operations and their reading from the wire form (the master's first step,
//! `validateAndUpgradeResources`: the body must be set, every resource passes Mesos common
//! validation, and the legacy reservation format is upgraded).

use berth_proto::mesos::v1 as pb;
use berth_resources::{Resource, ResourceError, Scalar, validate};
use pb::offer::operation::Type as OpType;

use crate::error::OperationError;

/// A task or executor launch as resource consumption.
#[derive(Clone, Debug)]
pub struct Launch {
    /// Task id (or executor id).
    pub id: String,
    /// Resources it consumes.
    pub resources: Vec<Resource>,
    /// Container volumes (external, host and sandbox paths) the task mounts; they consume no
    /// offered resources.
    pub volumes: Vec<pb::Volume>,
}

/// An offer operation in berth's typed form.
#[derive(Clone, Debug)]
pub enum Operation {
    /// RESERVE `resources` (from `source` on the operator API).
    Reserve {
        /// Resources as they are now (operator API re-reservation); usually empty.
        source: Vec<Resource>,
        /// The reserved resources wanted.
        resources: Vec<Resource>,
    },
    /// UNRESERVE: pop one reservation level of each resource.
    Unreserve {
        /// The reserved resources.
        resources: Vec<Resource>,
    },
    /// CREATE persistent volumes.
    Create {
        /// The volumes.
        volumes: Vec<Resource>,
    },
    /// DESTROY persistent volumes.
    Destroy {
        /// The volumes.
        volumes: Vec<Resource>,
    },
    /// GROW_VOLUME.
    GrowVolume {
        /// The volume.
        volume: Resource,
        /// The disk added to it.
        addition: Resource,
    },
    /// SHRINK_VOLUME.
    ShrinkVolume {
        /// The volume.
        volume: Resource,
        /// The amount taken away.
        subtract: Scalar,
    },
    /// LAUNCH (and LAUNCH_GROUP): tasks that consume offered resources.
    Launch {
        /// Tasks and executors.
        tasks: Vec<Launch>,
    },
}

impl Operation {
    /// The Mesos name of the operation type.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Reserve { .. } => "RESERVE",
            Operation::Unreserve { .. } => "UNRESERVE",
            Operation::Create { .. } => "CREATE",
            Operation::Destroy { .. } => "DESTROY",
            Operation::GrowVolume { .. } => "GROW_VOLUME",
            Operation::ShrinkVolume { .. } => "SHRINK_VOLUME",
            Operation::Launch { .. } => "LAUNCH",
        }
    }

    /// Every resource of the operation, mutably (for allocation-info injection).
    pub(crate) fn resources_mut(&mut self) -> Vec<&mut Resource> {
        match self {
            Operation::Reserve { resources, .. } | Operation::Unreserve { resources } => {
                resources.iter_mut().collect()
            }
            Operation::Create { volumes } | Operation::Destroy { volumes } => {
                volumes.iter_mut().collect()
            }
            Operation::GrowVolume { volume, addition } => vec![volume, addition],
            Operation::ShrinkVolume { volume, .. } => vec![volume],
            Operation::Launch { tasks } => tasks
                .iter_mut()
                .flat_map(|t| t.resources.iter_mut())
                .collect(),
        }
    }

    /// Reads a wire operation: body presence, common validation, upgrade.
    ///
    /// # Errors
    /// [`OperationError`] as the master's first step reports it.
    pub fn from_proto(op: &pb::offer::Operation) -> Result<Operation, OperationError> {
        let kind = op
            .r#type
            .and_then(|t| OpType::try_from(t).ok())
            .unwrap_or(OpType::Unknown);
        let missing = OperationError::MissingBody;
        Ok(match kind {
            OpType::Unknown => return Err(OperationError::Unknown),
            OpType::Reserve => {
                let body = op.reserve.as_ref().ok_or(missing(
                    "A RESERVE offer operation must have the Offer.Operation.reserve field set.",
                ))?;
                Operation::Reserve {
                    resources: list(&body.resources).map_err(OperationError::InvalidResources)?,
                    source: list(&body.source).map_err(OperationError::InvalidSource)?,
                }
            }
            OpType::Unreserve => {
                let body = op
                    .unreserve
                    .as_ref()
                    .ok_or(missing("An UNRESERVE offer operation must have the Offer.Operation.unreserve field set."))?;
                Operation::Unreserve {
                    resources: list(&body.resources).map_err(OperationError::InvalidResources)?,
                }
            }
            OpType::Create => {
                let body = op.create.as_ref().ok_or(missing(
                    "A CREATE offer operation must have the Offer.Operation.create field set.",
                ))?;
                Operation::Create {
                    volumes: list(&body.volumes).map_err(OperationError::InvalidResources)?,
                }
            }
            OpType::Destroy => {
                let body = op.destroy.as_ref().ok_or(missing(
                    "A DESTROY offer operation must have the Offer.Operation.destroy field set.",
                ))?;
                Operation::Destroy {
                    volumes: list(&body.volumes).map_err(OperationError::InvalidResources)?,
                }
            }
            OpType::GrowVolume => {
                let body = op.grow_volume.as_ref().ok_or(missing(
                    "A GROW_VOLUME operation must have the Offer.Operation.grow_volume field set",
                ))?;
                Operation::GrowVolume {
                    volume: single(&body.volume, "GrowVolume.volume")?,
                    addition: single(&body.addition, "GrowVolume.addition")?,
                }
            }
            OpType::ShrinkVolume => {
                let body = op
                    .shrink_volume
                    .as_ref()
                    .ok_or(missing("A SHRINK_VOLUME offer operation must have the Offer.Operation.shrink_volume field set"))?;
                Operation::ShrinkVolume {
                    volume: single(&body.volume, "ShrinkVolume.volume")?,
                    subtract: Scalar::from_f64(body.subtract.value).map_err(|error| {
                        OperationError::Scalar {
                            field: "ShrinkVolume.subtract",
                            error,
                        }
                    })?,
                }
            }
            OpType::Launch => {
                let body = op.launch.as_ref().ok_or(missing(
                    "A LAUNCH offer operation must have the Offer.Operation.launch field set.",
                ))?;
                let mut tasks = Vec::new();
                for t in &body.task_infos {
                    push_task(&mut tasks, t)?;
                }
                Operation::Launch { tasks }
            }
            OpType::LaunchGroup => {
                let body = op
                    .launch_group
                    .as_ref()
                    .ok_or(missing("A LAUNCH_GROUP offer operation must have the Offer.Operation.launch_group field set."))?;
                let mut tasks = Vec::new();
                tasks.push(Launch {
                    id: body.executor.executor_id.value.clone(),
                    resources: list(&body.executor.resources)
                        .map_err(OperationError::InvalidResources)?,
                    volumes: container_volumes(body.executor.container.as_ref()),
                });
                for t in &body.task_group.tasks {
                    push_task(&mut tasks, t)?;
                }
                Operation::Launch { tasks }
            }
            OpType::CreateDisk => return Err(OperationError::Unsupported("CREATE_DISK")),
            OpType::DestroyDisk => return Err(OperationError::Unsupported("DESTROY_DISK")),
        })
    }

    /// Writes the wire form (post-refinement format).
    #[must_use]
    pub fn to_proto(&self) -> pb::offer::Operation {
        let protos = |v: &[Resource]| v.iter().map(Resource::to_proto).collect::<Vec<_>>();
        let mut op = pb::offer::Operation::default();
        match self {
            Operation::Reserve { source, resources } => {
                op.r#type = Some(OpType::Reserve as i32);
                op.reserve = Some(pb::offer::operation::Reserve {
                    source: protos(source),
                    resources: protos(resources),
                });
            }
            Operation::Unreserve { resources } => {
                op.r#type = Some(OpType::Unreserve as i32);
                op.unreserve = Some(pb::offer::operation::Unreserve {
                    resources: protos(resources),
                });
            }
            Operation::Create { volumes } => {
                op.r#type = Some(OpType::Create as i32);
                op.create = Some(pb::offer::operation::Create {
                    volumes: protos(volumes),
                });
            }
            Operation::Destroy { volumes } => {
                op.r#type = Some(OpType::Destroy as i32);
                op.destroy = Some(pb::offer::operation::Destroy {
                    volumes: protos(volumes),
                });
            }
            Operation::GrowVolume { volume, addition } => {
                op.r#type = Some(OpType::GrowVolume as i32);
                op.grow_volume = Some(pb::offer::operation::GrowVolume {
                    volume: volume.to_proto(),
                    addition: addition.to_proto(),
                });
            }
            Operation::ShrinkVolume { volume, subtract } => {
                op.r#type = Some(OpType::ShrinkVolume as i32);
                op.shrink_volume = Some(pb::offer::operation::ShrinkVolume {
                    volume: volume.to_proto(),
                    subtract: pb::value::Scalar {
                        value: subtract.as_f64(),
                    },
                });
            }
            Operation::Launch { tasks } => {
                op.r#type = Some(OpType::Launch as i32);
                op.launch = Some(pb::offer::operation::Launch {
                    task_infos: tasks
                        .iter()
                        .map(|t| pb::TaskInfo {
                            name: t.id.clone(),
                            task_id: pb::TaskId {
                                value: t.id.clone(),
                            },
                            agent_id: pb::AgentId::default(),
                            resources: protos(&t.resources),
                            container: (!t.volumes.is_empty()).then(|| pb::ContainerInfo {
                                r#type: pb::container_info::Type::Mesos as i32,
                                volumes: t.volumes.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                });
            }
        }
        op
    }
}

fn push_task(tasks: &mut Vec<Launch>, t: &pb::TaskInfo) -> Result<(), OperationError> {
    let id = t.task_id.value.clone();
    tasks.push(Launch {
        id: id.clone(),
        resources: list(&t.resources).map_err(OperationError::InvalidResources)?,
        volumes: container_volumes(t.container.as_ref()),
    });
    if let Some(executor) = &t.executor {
        tasks.push(Launch {
            id: executor.executor_id.value.clone(),
            resources: list(&executor.resources).map_err(OperationError::InvalidResources)?,
            volumes: container_volumes(executor.container.as_ref()),
        });
    }
    Ok(())
}

fn container_volumes(c: Option<&pb::ContainerInfo>) -> Vec<pb::Volume> {
    c.map(|c| c.volumes.clone()).unwrap_or_default()
}

/// Common validation of a list, then conversion (upgrade) of every element; each element is
/// validated once.
///
/// The only failure after common validation is a persistence id that cannot become a path
/// component (or an unknown volume mode); the master finds a bad id in its own resource
/// validation, after the revocable, reservation and volume checks, so on that (cold) path that
/// validation is run to report what Mesos reports.
fn list(raw: &[pb::Resource]) -> Result<Vec<Resource>, berth_resources::ValidationError> {
    use berth_resources::ValidationError;
    validate::validate_list(raw)?;
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        match Resource::from_valid_proto(r) {
            Ok(resource) => out.push(resource),
            Err(error) => {
                let mut upgraded = raw.to_vec();
                upgraded
                    .iter_mut()
                    .for_each(berth_resources::format::upgrade);
                validate::validate_master(&upgraded)?;
                return Err(match error {
                    ResourceError::PersistenceId(e) => {
                        ValidationError::Disk(ResourceError::PersistentInvalidId(e))
                    }
                    error => ValidationError::Resource {
                        index: out.len(),
                        resource: r.name.clone(),
                        error,
                    },
                });
            }
        }
    }
    Ok(out)
}

fn single(raw: &pb::Resource, field: &'static str) -> Result<Resource, OperationError> {
    Resource::from_proto(raw).map_err(|error| match error {
        ResourceError::PersistenceId(e) => OperationError::InvalidPersistenceId(e),
        error => OperationError::InvalidField { field, error },
    })
}
