//! Operation validation, as the Mesos master does it (`research` O.1–O.6), in Mesos's order so
//! that the first error reported is Mesos's.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};

use berth_resources::{DiskSourceType, Resource, Resources, Role, Scalar, VolumeMode, validate};

use crate::context::{Api, Context, FrameworkCapability};
use crate::error::{OperationError, PersistentVolumeError};
use crate::operation::Operation;

/// Validates `op` against `ctx`.
///
/// # Errors
/// The first [`OperationError`] in Mesos's order.
pub fn validate(op: &Operation, ctx: &Context) -> Result<(), OperationError> {
    match op {
        Operation::Reserve { source, resources } => validate_reserve(source, resources, ctx),
        Operation::Unreserve { resources } => validate_unreserve(resources),
        Operation::Create { volumes } => validate_create(volumes, ctx),
        Operation::Destroy { volumes } => validate_destroy(volumes, ctx),
        Operation::GrowVolume { volume, addition } => validate_grow(volume, addition, ctx),
        Operation::ShrinkVolume { volume, subtract } => validate_shrink(volume, *subtract, ctx),
        Operation::Launch { tasks } => {
            for t in tasks {
                master_resources(&t.resources).map_err(OperationError::InvalidResources)?;
            }
            Ok(())
        }
    }
}

/// The master's `resource::validate` on typed resources (each resource checked once, no wire
/// form built).
fn master_resources(list: &[Resource]) -> Result<(), berth_resources::ValidationError> {
    validate::validate_master_typed(list)
}

/// The resources without allocation info, copied only when some entry has one.
fn without_allocation(r: &Resources) -> Cow<'_, Resources> {
    if r.iter().any(|x| x.allocation_info.is_some()) {
        Cow::Owned(r.unallocate())
    } else {
        Cow::Borrowed(r)
    }
}

/// `validateSingleResourceProvider`; an empty list fails too (research Q-3).
fn single_provider(list: &[Resource]) -> Result<(), OperationError> {
    let ids: BTreeSet<Option<&str>> = list.iter().map(|r| r.provider_id.as_deref()).collect();
    if ids.len() == 1 {
        return Ok(());
    }
    if ids.contains(&None) {
        return Err(OperationError::MixedProviders);
    }
    let names: Vec<&str> = ids.into_iter().flatten().collect();
    Err(OperationError::MultipleProviders(names.join(", ")))
}

/// One allocation role across the list (framework path).
fn single_allocation_role(list: &[Resource], what: &'static str) -> Result<(), OperationError> {
    let mut first: Option<&str> = None;
    for r in list {
        let Some(role) = r.allocation_role() else {
            return Err(OperationError::NotAllocated(what));
        };
        match first {
            None => first = Some(role),
            Some(a) if a != role => {
                return Err(OperationError::MultipleAllocationRoles {
                    what,
                    a: role.to_owned(),
                    b: a.to_owned(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Every element has the same reservation stack.
fn uniform(list: &[Resource]) -> bool {
    list.windows(2)
        .all(|w| matches!(w, [a, b] if a.reservations == b.reservations))
}

fn capability_checks(
    r: &Resource,
    ctx: &Context,
    noun: &'static str,
    verb: &'static str,
) -> Result<(), OperationError> {
    if !ctx.agent.hierarchical_role
        && let Some(role) = r.reservation_role().filter(|role| role.is_hierarchical())
    {
        return Err(OperationError::NoHierarchicalRole {
            noun,
            resource: r.to_string(),
            role: role.to_string(),
            verb,
        });
    }
    if !ctx.agent.reservation_refinement && r.has_refined_reservations() {
        return Err(OperationError::NoReservationRefinement {
            noun,
            resource: r.to_string(),
            verb,
        });
    }
    Ok(())
}

fn validate_reserve(
    source: &[Resource],
    resources: &[Resource],
    ctx: &Context,
) -> Result<(), OperationError> {
    if !source.is_empty() && matches!(ctx.api, Api::Framework(_)) {
        return Err(OperationError::ReservationUpdateFromFramework);
    }
    master_resources(resources).map_err(OperationError::InvalidResources)?;
    master_resources(source).map_err(OperationError::InvalidSource)?;

    if !source.is_empty() {
        if !uniform(source) {
            return Err(OperationError::MixedSourceReservations);
        }
        if resources.is_empty() {
            return Err(OperationError::EmptyTarget);
        }
        if !uniform(resources) {
            return Err(OperationError::MixedTargetReservations);
        }
        let s: Resources = source
            .iter()
            .cloned()
            .collect::<Resources>()
            .to_unreserved();
        let t: Resources = resources
            .iter()
            .cloned()
            .collect::<Resources>()
            .to_unreserved();
        if s != t {
            return Err(OperationError::SourceTargetMismatch {
                from: s.to_string(),
                target: t.to_string(),
            });
        }
    }

    single_provider(resources)?;

    for r in resources {
        if !r.is_dynamically_reserved() {
            return Err(OperationError::NotDynamicallyReserved(r.to_string()));
        }
        capability_checks(r, ctx, "Resource", "reserved")?;
        if let Some(principal) = &ctx.principal {
            match r.current_reservation().and_then(|x| x.principal.as_ref()) {
                None => return Err(OperationError::ReserveWithoutPrincipal(principal.clone())),
                Some(found) if found != principal => {
                    return Err(OperationError::ReservePrincipalMismatch {
                        principal: principal.clone(),
                        found: found.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        let role = r
            .reservation_role()
            .map(ToString::to_string)
            .unwrap_or_default();
        match &ctx.api {
            Api::Framework(fw) => {
                let Some(allocated) = r.allocation_role() else {
                    return Err(OperationError::ReserveUnallocated(r.to_string()));
                };
                if allocated != role {
                    return Err(OperationError::ReserveRoleNotAllocation {
                        role,
                        allocated: allocated.to_owned(),
                    });
                }
                if !fw.roles.iter().any(|x| x == allocated) {
                    return Err(OperationError::ReserveAllocationNotFrameworkRole {
                        allocated: allocated.to_owned(),
                        roles: fw.roles_text(),
                    });
                }
                if !fw.roles.contains(&role) {
                    return Err(OperationError::ReserveRoleNotFrameworkRole {
                        role,
                        roles: fw.roles_text(),
                    });
                }
            }
            Api::Operator => {
                if r.allocation_info.is_some() {
                    return Err(OperationError::OperatorReserveAllocated);
                }
            }
        }
    }

    if matches!(ctx.api, Api::Framework(_)) {
        single_allocation_role(resources, "reservation")?;
    }
    Ok(())
}

fn validate_unreserve(resources: &[Resource]) -> Result<(), OperationError> {
    master_resources(resources).map_err(OperationError::InvalidResources)?;
    single_provider(resources)?;
    for r in resources {
        if !r.is_dynamically_reserved() {
            return Err(OperationError::NotDynamicallyReserved(r.to_string()));
        }
        if r.is_persistent_volume() {
            return Err(OperationError::UnreservePersistentVolume(r.to_string()));
        }
    }
    Ok(())
}

/// Mesos `validatePersistentVolume`.
fn persistent_volume(r: &Resource) -> Result<(), PersistentVolumeError> {
    let Some(disk) = &r.disk else {
        return Err(PersistentVolumeError::NoDiskInfo(r.to_string()));
    };
    if disk.persistence.is_none() {
        return Err(PersistentVolumeError::NoPersistence);
    }
    let Some(volume) = &disk.volume else {
        return Err(PersistentVolumeError::NoVolume);
    };
    if volume.mode == VolumeMode::Ro {
        return Err(PersistentVolumeError::ReadOnly);
    }
    Ok(())
}

fn validate_create(volumes: &[Resource], ctx: &Context) -> Result<(), OperationError> {
    master_resources(volumes).map_err(OperationError::InvalidResources)?;
    single_provider(volumes)?;
    for v in volumes {
        persistent_volume(v).map_err(OperationError::NotPersistentVolume)?;
    }

    // Persistence ids are unique per role on the agent, over the checkpointed resources plus
    // the new volumes combined as a collection (identical shared volumes merge, research Q-5).
    fn key(r: &Resource) -> Option<(&str, &str)> {
        let id = r.persistence_id()?;
        Some((r.reservation_role().map_or("", Role::as_str), id.as_str()))
    }
    let mut seen: HashSet<(&str, &str)> = HashSet::new();
    for r in ctx.checkpointed.iter() {
        if let Some(k) = key(r)
            && let Some(dup) = seen.replace(k)
        {
            return Err(OperationError::DuplicatePersistenceId(dup.1.to_owned()));
        }
    }
    let mut added: Vec<&Resource> = Vec::new();
    for v in volumes.iter().filter(|v| !v.is_empty()) {
        let merges = v.shared
            && (ctx.checkpointed.count(v) > 0 || added.iter().any(|a| a.shared && *a == v));
        added.push(v);
        if merges {
            continue;
        }
        if let Some(k) = key(v)
            && let Some(dup) = seen.replace(k)
        {
            return Err(OperationError::DuplicatePersistenceId(dup.1.to_owned()));
        }
    }

    // Per volume, in Mesos's order: sharing capability, agent capabilities, principal.
    for v in volumes {
        if let Api::Framework(fw) = &ctx.api
            && v.shared
            && !fw.has(FrameworkCapability::SharedResources)
        {
            return Err(OperationError::SharedWithoutCapability {
                volume: v.to_string(),
                framework: fw.id.clone().unwrap_or_default(),
            });
        }
        capability_checks(v, ctx, "Volume", "created")?;
        if let Some(principal) = &ctx.principal {
            match v
                .disk
                .as_ref()
                .and_then(|d| d.persistence.as_ref())
                .and_then(|p| p.principal.as_ref())
            {
                None => return Err(OperationError::CreateWithoutPrincipal(principal.clone())),
                Some(found) if found != principal => {
                    return Err(OperationError::CreatePrincipalMismatch {
                        principal: principal.clone(),
                        found: found.clone(),
                    });
                }
                Some(_) => {}
            }
        }
    }

    if matches!(ctx.api, Api::Framework(_)) {
        single_allocation_role(volumes, "volume")?;
    }
    Ok(())
}

fn validate_destroy(volumes: &[Resource], ctx: &Context) -> Result<(), OperationError> {
    // Mesos validates the volumes as a `Resources` collection: empty ones are dropped first.
    let unallocated: Resources = volumes.iter().collect::<Resources>().unallocate();
    let volumes: Vec<Resource> = unallocated.iter().cloned().collect();
    master_resources(&volumes).map_err(OperationError::InvalidResources)?;
    single_provider(&volumes)?;
    for v in &volumes {
        persistent_volume(v).map_err(OperationError::NotPersistentVolume)?;
    }
    let checkpointed = without_allocation(&ctx.checkpointed);
    for v in unallocated.iter().filter(|v| v.provider_id.is_none()) {
        if !checkpointed.contains_resource(v) {
            return Err(OperationError::VolumesNotFound);
        }
    }
    for used in ctx.used.values() {
        let used = without_allocation(used);
        if unallocated.iter().any(|v| used.contains_resource(v)) {
            return Err(OperationError::VolumesInUse);
        }
    }
    Ok(())
}

fn validate_grow(
    volume: &Resource,
    addition: &Resource,
    ctx: &Context,
) -> Result<(), OperationError> {
    volume
        .validate()
        .map_err(|error| OperationError::InvalidField {
            field: "GrowVolume.volume",
            error,
        })?;
    addition
        .validate()
        .map_err(|error| OperationError::InvalidField {
            field: "GrowVolume.addition",
            error,
        })?;
    if addition.scalar_value().unwrap_or(Scalar::ZERO) <= Scalar::ZERO {
        return Err(OperationError::GrowAdditionNotPositive);
    }
    if volume.provider_id.is_some() {
        return Err(OperationError::GrowProvider);
    }
    persistent_volume(volume).map_err(|error| OperationError::InvalidPersistentVolumeField {
        field: "GrowVolume.volume",
        error,
    })?;
    if volume.shared {
        return Err(OperationError::GrowShared);
    }
    let mut combined = Resources::from(volume.stripped_volume());
    combined.add_resource(addition.clone());
    if combined.len() != 1 {
        return Err(OperationError::GrowIncompatible);
    }
    if !ctx.agent.resize_volume {
        return Err(OperationError::NoResizeVolume {
            volume: volume.to_string(),
            verb: "grown",
        });
    }
    Ok(())
}

fn validate_shrink(
    volume: &Resource,
    subtract: Scalar,
    ctx: &Context,
) -> Result<(), OperationError> {
    volume
        .validate()
        .map_err(|error| OperationError::InvalidField {
            field: "ShrinkVolume.volume",
            error,
        })?;
    if subtract <= Scalar::ZERO {
        return Err(OperationError::ShrinkNotPositive);
    }
    if volume.scalar_value().unwrap_or(Scalar::ZERO) <= subtract {
        return Err(OperationError::ShrinkTooLarge);
    }
    if volume.provider_id.is_some() {
        return Err(OperationError::ShrinkProvider);
    }
    if volume
        .disk_source()
        .is_some_and(|s| s.kind == DiskSourceType::Mount)
    {
        return Err(OperationError::ShrinkMount);
    }
    persistent_volume(volume).map_err(|error| OperationError::InvalidPersistentVolumeField {
        field: "ShrinkVolume.volume",
        error,
    })?;
    if volume.shared {
        return Err(OperationError::ShrinkShared);
    }
    if !ctx.agent.resize_volume {
        return Err(OperationError::NoResizeVolume {
            volume: volume.to_string(),
            verb: "shrunk",
        });
    }
    Ok(())
}
