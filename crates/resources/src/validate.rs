//! Resource validation on the wire form, exactly in Mesos's order.
//!
//! * [`validate_resource`] — Mesos `Resources::validate(const Resource&)` (common validation):
//!   value fields, DiskInfo placement and source, reservation format (legacy, refined and
//!   endpoint forms), sharedness. Accepts either reservation format.
//! * [`validate_list`] — the same over a list, naming the failing element.
//! * [`validate_master`] — the master's `resource::validate`: common validation, then the `gpus`
//!   total, persistent-volume and DiskInfo rules, and dynamically-reserved-revocable; run on the
//!   upgraded (post-refinement) form.
//! * [`validate_typed`] and [`validate_master_typed`] — the same rules on the idiomatic model
//!   ([`Resource`]), without writing the wire form: what the master runs on an operation's
//!   resources, and [`Resource::validate`]. They return exactly what the wire functions return
//!   on [`Resource::to_proto`] of the same resources; the rules the model's types already
//!   guarantee (ranges sorted and disjoint, set items unique, roles valid and not `*`,
//!   persistence ids valid, reservation types known, no legacy reservation fields) are not
//!   re-checked.
//!
//! This module reads the model ([`crate::convert`]) only to render a resource in an error
//! message; the conversions never call back into validation.
//!
//! Where Mesos accepts malformed input by accident, berth is stricter and says so:
//! overlapping ranges are refused whatever their order (Mesos only notices a later range
//! starting inside an earlier one), non-finite scalars are refused, and a reservation of type
//! `UNKNOWN` is refused anywhere in a stack.

#![allow(deprecated)] // `Resource.role` is deprecated in Mesos but is part of the legacy format we read.

use berth_proto::mesos::v1 as pb;
use pb::resource::disk_info::source::Type as SourceType;
use pb::resource::reservation_info::Type as ResType;
use pb::value::Type as ValueType;

use crate::convert::labels_from_proto;
use crate::error::{ResourceError, ValidationError};
use crate::resource::{DiskSourceType, ReservationType, Resource};
use crate::role::{is_strict_subrole, validate_role_name};
use crate::value::Value;
use crate::{Scalar, persistence::validate_id};

/// A short rendering of a wire resource for error messages: the model's rendering when it
/// converts, else its Mesos JSON.
fn render_proto(r: &pb::Resource) -> String {
    if validate_resource(r).is_ok()
        && let Ok(res) = Resource::from_valid_proto(r)
    {
        return res.to_string();
    }
    format!("{}", crate::json::to_json_value(r))
}

/// Mesos common validation of one resource (either reservation format).
///
/// # Errors
/// The first [`ResourceError`] in Mesos's order.
pub fn validate_resource(r: &pb::Resource) -> Result<(), ResourceError> {
    if r.name.is_empty() {
        return Err(ResourceError::EmptyName);
    }
    validate_value(r)?;
    validate_disk(r)?;
    validate_reservations(r)?;
    if r.shared.is_some() {
        if r.name != "disk" {
            return Err(ResourceError::SharedNonDisk(r.name.clone()));
        }
        if r.disk
            .as_ref()
            .and_then(|d| d.persistence.as_ref())
            .is_none()
        {
            return Err(ResourceError::SharedNonPersistent);
        }
    }
    Ok(())
}

fn validate_value(r: &pb::Resource) -> Result<(), ResourceError> {
    match ValueType::try_from(r.r#type) {
        Ok(ValueType::Scalar) => {
            let Some(scalar) = r
                .scalar
                .as_ref()
                .filter(|_| r.ranges.is_none() && r.set.is_none())
            else {
                return Err(ResourceError::InvalidScalar);
            };
            let fixed = Scalar::from_f64(scalar.value)?;
            if scalar.value != 0.0 && fixed.milli() <= 0 {
                return Err(ResourceError::ScalarNotPositive);
            }
        }
        Ok(ValueType::Ranges) => {
            let Some(ranges) = r
                .ranges
                .as_ref()
                .filter(|_| r.scalar.is_none() && r.set.is_none())
            else {
                return Err(ResourceError::InvalidRanges);
            };
            // The usual case, sorted and disjoint ranges (what berth and Mesos write), is valid:
            // one pass, nothing allocated.
            if ranges.range.iter().all(|x| x.begin <= x.end)
                && ranges
                    .range
                    .windows(2)
                    .all(|w| matches!(w, [a, b] if a.end < b.begin))
            {
                return Ok(());
            }
            // Mesos's order: for each range in turn, `begin > end`, then a later range starting
            // inside it (found with a sweep from the end, O(n log n) rather than Mesos's O(n²)).
            let mut first: Option<(usize, ResourceError)> = None;
            let mut later: std::collections::BTreeMap<u64, usize> =
                std::collections::BTreeMap::new();
            for (i, range) in ranges.range.iter().enumerate().rev() {
                if range.begin > range.end {
                    first = Some((i, ResourceError::RangeBeginAfterEnd));
                } else if later.range(range.begin..=range.end).next().is_some() {
                    first = Some((i, ResourceError::OverlappingRanges));
                }
                *later.entry(range.begin).or_insert(0) += 1;
            }
            if let Some((_, e)) = first {
                return Err(e);
            }
            // Stricter than Mesos (research Q-1): any overlap, in any order, is refused.
            let mut spans: Vec<(u64, u64)> =
                ranges.range.iter().map(|r| (r.begin, r.end)).collect();
            spans.sort_unstable();
            if spans.windows(2).any(|w| matches!(w, [a, b] if b.0 <= a.1)) {
                return Err(ResourceError::OverlappingRanges);
            }
        }
        Ok(ValueType::Set) => {
            let Some(set) = r
                .set
                .as_ref()
                .filter(|_| r.scalar.is_none() && r.ranges.is_none())
            else {
                return Err(ResourceError::InvalidSet);
            };
            let mut items: Vec<&str> = set.item.iter().map(String::as_str).collect();
            items.sort_unstable();
            if items.windows(2).any(|w| matches!(w, [a, b] if a == b)) {
                return Err(ResourceError::DuplicateSetItems);
            }
        }
        Ok(ValueType::Text) => return Err(ResourceError::UnsupportedType),
        Err(_) => return Err(ResourceError::InvalidType),
    }
    Ok(())
}

fn validate_disk(r: &pb::Resource) -> Result<(), ResourceError> {
    let Some(disk) = &r.disk else { return Ok(()) };
    if r.name != "disk" {
        return Err(ResourceError::DiskInfoOnNonDisk(r.name.clone()));
    }
    if let Some(source) = &disk.source {
        match SourceType::try_from(source.r#type) {
            Ok(SourceType::Path | SourceType::Mount) => {}
            Ok(t @ (SourceType::Block | SourceType::Raw)) => {
                let kind = if t == SourceType::Block {
                    "BLOCK"
                } else {
                    "RAW"
                };
                if source.mount.is_some() {
                    return Err(ResourceError::SourceFieldNotAllowed {
                        field: "Mount",
                        kind,
                    });
                }
                if source.path.is_some() {
                    return Err(ResourceError::SourceFieldNotAllowed {
                        field: "Path",
                        kind,
                    });
                }
            }
            Ok(SourceType::Unknown) | Err(_) => {
                return Err(ResourceError::UnsupportedSourceType(format!("{source:?}")));
            }
        }
    }
    Ok(())
}

fn validate_reservations(r: &pb::Resource) -> Result<(), ResourceError> {
    if r.reservations.is_empty() {
        // Pre-refinement format.
        let role = r.role();
        validate_role_name(role).map_err(ResourceError::Role)?;
        if let Some(reservation) = &r.reservation {
            if reservation.r#type.is_some() {
                return Err(ResourceError::LegacyReservationField("type"));
            }
            if reservation.role.is_some() {
                return Err(ResourceError::LegacyReservationField("role"));
            }
            if role == "*" {
                return Err(ResourceError::StarDynamicallyReserved);
            }
        }
        return Ok(());
    }

    // Post-refinement format.
    for reservation in &r.reservations {
        if reservation.r#type.is_none() {
            return Err(ResourceError::ReservationFieldMissing("type"));
        }
        let Some(role) = reservation.role.as_deref() else {
            return Err(ResourceError::ReservationFieldMissing("role"));
        };
        validate_role_name(role).map_err(ResourceError::ReservationRole)?;
        if role == "*" {
            return Err(ResourceError::StarReserved);
        }
    }
    for pair in r.reservations.windows(2) {
        let [parent, child] = pair else { continue };
        if child.r#type() == ResType::Static {
            return Err(ResourceError::RefinedStatic);
        }
        if !is_strict_subrole(child.role(), parent.role()) {
            return Err(ResourceError::NotARefinement {
                child: child.role().to_owned(),
                parent: parent.role().to_owned(),
            });
        }
    }

    // Mixed ("endpoint") format: the legacy fields must agree with the stack.
    if let [single] = r.reservations.as_slice() {
        if let Some(role) = &r.role
            && role != single.role()
        {
            return Err(ResourceError::FormatRoleMismatch {
                role: role.clone(),
                stack: single.role().to_owned(),
            });
        }
        match ResType::try_from(single.r#type.unwrap_or_default()) {
            Ok(ResType::Static) => {
                if r.reservation.is_some() {
                    return Err(ResourceError::FormatStaticWithReservation);
                }
            }
            Ok(ResType::Dynamic) => {
                if r.role.is_some() != r.reservation.is_some() {
                    return Err(ResourceError::FormatDynamicPartial);
                }
                if let Some(legacy) = &r.reservation {
                    if legacy.principal() != single.principal() {
                        return Err(ResourceError::FormatPrincipalMismatch {
                            legacy: legacy.principal().to_owned(),
                            stack: single.principal().to_owned(),
                        });
                    }
                    let empty = pb::Labels::default();
                    let a = labels_from_proto(legacy.labels.as_ref().unwrap_or(&empty));
                    let b = labels_from_proto(single.labels.as_ref().unwrap_or(&empty));
                    if a != b {
                        return Err(ResourceError::FormatLabelsMismatch {
                            legacy: a.to_string(),
                            stack: b.to_string(),
                        });
                    }
                }
            }
            Ok(ResType::Unknown) | Err(_) => {
                return Err(ResourceError::FormatUnknownReservationType);
            }
        }
    } else {
        if r.role.is_some() {
            return Err(ResourceError::FormatRefinedWithLegacy("Resource.role"));
        }
        if r.reservation.is_some() {
            return Err(ResourceError::FormatRefinedWithLegacy(
                "Resource.reservation",
            ));
        }
    }

    // Stricter than Mesos: UNKNOWN (or an unknown number) anywhere in a stack.
    if r.reservations.iter().any(|x| {
        !matches!(
            ResType::try_from(x.r#type.unwrap_or_default()),
            Ok(ResType::Static | ResType::Dynamic)
        )
    }) {
        return Err(ResourceError::UnknownReservationType);
    }
    Ok(())
}

/// Common validation of every element of a list (Mesos `Resources::validate(list)`).
///
/// # Errors
/// [`ValidationError::Resource`] naming the first invalid element.
pub fn validate_list(list: &[pb::Resource]) -> Result<(), ValidationError> {
    for (index, r) in list.iter().enumerate() {
        validate_resource(r).map_err(|error| ValidationError::Resource {
            index,
            resource: render_proto(r),
            error,
        })?;
    }
    Ok(())
}

/// The master's resource validation (`resource::validate` in the master) of a list already
/// in the post-refinement format (call [`crate::format::upgrade`] first).
///
/// # Errors
/// The first failure, with the master's prefixes.
pub fn validate_master(list: &[pb::Resource]) -> Result<(), ValidationError> {
    validate_list(list)?;

    // gpus: the total must be whole.
    let mut gpus = Scalar::ZERO;
    for r in list
        .iter()
        .filter(|r| r.name == "gpus" && r.r#type == ValueType::Scalar as i32)
    {
        if let Some(s) = &r.scalar {
            gpus += Scalar::from_f64(s.value).map_err(|e| ValidationError::Gpus(e.into()))?;
        }
    }
    // Mesos: `(long long)(gpus * 1000) % 1000 == 0` on the double of the fixed-point sum, so
    // the truncation of the multiply decides (1.001 passes there, and here).
    #[allow(clippy::cast_possible_truncation)]
    let thousandths = (gpus.as_f64() * 1000.0) as i64;
    if thousandths % 1000 != 0 {
        return Err(ValidationError::Gpus(ResourceError::GpusNotInteger));
    }

    for r in list {
        let Some(disk) = &r.disk else { continue };
        if let Some(persistence) = &disk.persistence {
            if r.revocable.is_some() {
                return Err(ValidationError::Disk(ResourceError::PersistentRevocable));
            }
            if r.reservations.is_empty() {
                return Err(ValidationError::Disk(ResourceError::PersistentUnreserved));
            }
            let Some(volume) = &disk.volume else {
                return Err(ValidationError::Disk(
                    ResourceError::PersistentWithoutVolume,
                ));
            };
            if volume.host_path.is_some() {
                return Err(ValidationError::Disk(ResourceError::PersistentWithHostPath));
            }
            validate_id(&persistence.id)
                .map_err(|e| ValidationError::Disk(ResourceError::PersistentInvalidId(e)))?;
        } else if disk.volume.is_some() {
            return Err(ValidationError::Disk(ResourceError::NonPersistentVolume));
        } else if disk.source.is_none() {
            return Err(ValidationError::Disk(ResourceError::EmptyDiskInfo));
        }
    }

    for r in list {
        let dynamic = r
            .reservations
            .last()
            .is_some_and(|x| x.r#type() == ResType::Dynamic);
        if dynamic && r.revocable.is_some() {
            return Err(ValidationError::Reservation(
                ResourceError::DynamicRevocable(render_proto(r)),
            ));
        }
    }
    Ok(())
}

/// Mesos's common validation of a resource of the model: [`validate_resource`] on
/// [`Resource::to_proto`] of it, without building the wire form.
///
/// # Errors
/// The first [`ResourceError`] in Mesos's order.
pub fn validate_typed(r: &Resource) -> Result<(), ResourceError> {
    if r.name.is_empty() {
        return Err(ResourceError::EmptyName);
    }
    // Ranges are sorted and disjoint, set items unique, by construction; a scalar is checked
    // as the wire form carries it (its double).
    if let Value::Scalar(s) = r.value {
        let value = s.as_f64();
        let fixed = Scalar::from_f64(value)?;
        if value != 0.0 && fixed.milli() <= 0 {
            return Err(ResourceError::ScalarNotPositive);
        }
    }
    if let Some(disk) = &r.disk {
        if &*r.name != "disk" {
            return Err(ResourceError::DiskInfoOnNonDisk(r.name.to_string()));
        }
        if let Some(source) = &disk.source
            && let kind @ (DiskSourceType::Block | DiskSourceType::Raw) = source.kind
        {
            if source.mount.is_some() {
                return Err(ResourceError::SourceFieldNotAllowed {
                    field: "Mount",
                    kind: kind.as_str(),
                });
            }
            if source.path.is_some() {
                return Err(ResourceError::SourceFieldNotAllowed {
                    field: "Path",
                    kind: kind.as_str(),
                });
            }
        }
    }
    // Roles are valid and never `*`, types are known and the legacy fields do not exist in the
    // model: what is left of the reservation rules is the refinement of the stack.
    for pair in r.reservations.windows(2) {
        let [parent, child] = pair else { continue };
        if child.kind == ReservationType::Static {
            return Err(ResourceError::RefinedStatic);
        }
        if !child.role.is_strict_subrole_of(&parent.role) {
            return Err(ResourceError::NotARefinement {
                child: child.role.to_string(),
                parent: parent.role.to_string(),
            });
        }
    }
    if r.shared {
        if &*r.name != "disk" {
            return Err(ResourceError::SharedNonDisk(r.name.to_string()));
        }
        if !r.is_persistent_volume() {
            return Err(ResourceError::SharedNonPersistent);
        }
    }
    Ok(())
}

/// The rendering [`validate_master`] gives a wire resource, for a resource of the model (error
/// paths only).
fn render_typed(r: &Resource) -> String {
    render_proto(&r.to_proto())
}

/// The master's resource validation ([`validate_master`]) of resources of the model: each
/// resource is checked once, with the same result as [`validate_master`] on their wire form.
///
/// # Errors
/// The first failure, with the master's prefixes.
pub fn validate_master_typed(list: &[Resource]) -> Result<(), ValidationError> {
    for (index, r) in list.iter().enumerate() {
        validate_typed(r).map_err(|error| ValidationError::Resource {
            index,
            resource: render_typed(r),
            error,
        })?;
    }

    // gpus: the total must be whole (see `validate_master`).
    let mut gpus = Scalar::ZERO;
    for r in list.iter().filter(|r| &*r.name == "gpus") {
        if let Value::Scalar(s) = r.value {
            gpus += Scalar::from_f64(s.as_f64()).map_err(|e| ValidationError::Gpus(e.into()))?;
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    let thousandths = (gpus.as_f64() * 1000.0) as i64;
    if thousandths % 1000 != 0 {
        return Err(ValidationError::Gpus(ResourceError::GpusNotInteger));
    }

    for r in list {
        let Some(disk) = &r.disk else { continue };
        // A persistence id of the model is valid by construction.
        if disk.persistence.is_some() {
            if r.revocable {
                return Err(ValidationError::Disk(ResourceError::PersistentRevocable));
            }
            if r.reservations.is_empty() {
                return Err(ValidationError::Disk(ResourceError::PersistentUnreserved));
            }
            let Some(volume) = &disk.volume else {
                return Err(ValidationError::Disk(
                    ResourceError::PersistentWithoutVolume,
                ));
            };
            if volume.host_path.is_some() {
                return Err(ValidationError::Disk(ResourceError::PersistentWithHostPath));
            }
        } else if disk.volume.is_some() {
            return Err(ValidationError::Disk(ResourceError::NonPersistentVolume));
        } else if disk.source.is_none() {
            return Err(ValidationError::Disk(ResourceError::EmptyDiskInfo));
        }
    }

    for r in list {
        if r.is_dynamically_reserved() && r.revocable {
            return Err(ValidationError::Reservation(
                ResourceError::DynamicRevocable(render_typed(r)),
            ));
        }
    }
    Ok(())
}

impl Resource {
    /// Validates a resource built in Rust with Mesos's common rules (the same checks as input
    /// from the wire).
    ///
    /// # Errors
    /// The first rule that fails.
    pub fn validate(&self) -> Result<(), ResourceError> {
        validate_typed(self)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::json::from_json_value;

    fn raw(j: serde_json::Value) -> pb::Resource {
        from_json_value(&j).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn ranges_errors_come_in_mesos_order() {
        let r = raw(json!({"name":"p","type":"RANGES","ranges":{"range":[
            {"begin":1,"end":10},{"begin":5,"end":6},{"begin":9,"end":3}]}}));
        assert_eq!(validate_resource(&r), Err(ResourceError::OverlappingRanges));
        let r = raw(json!({"name":"p","type":"RANGES","ranges":{"range":[
            {"begin":9,"end":3},{"begin":1,"end":10},{"begin":5,"end":6}]}}));
        assert_eq!(
            validate_resource(&r),
            Err(ResourceError::RangeBeginAfterEnd)
        );
        // Mesos misses an earlier range inside a later one; berth refuses it too.
        let r = raw(
            json!({"name":"p","type":"RANGES","ranges":{"range":[{"begin":5,"end":10},{"begin":1,"end":6}]}}),
        );
        assert_eq!(validate_resource(&r), Err(ResourceError::OverlappingRanges));
        let r = raw(
            json!({"name":"p","type":"RANGES","ranges":{"range":[{"begin":1,"end":4},{"begin":5,"end":6}]}}),
        );
        assert_eq!(validate_resource(&r), Ok(()));
    }

    #[test]
    fn gpus_total_truncates_like_mesos() {
        let gpus = |v: f64| {
            vec![raw(
                json!({"name":"gpus","type":"SCALAR","scalar":{"value":v}}),
            )]
        };
        assert!(validate_master(&gpus(1.0)).is_ok());
        assert!(
            validate_master(&gpus(1.001)).is_ok(),
            "(long long)(1.001 * 1000) == 1000"
        );
        assert!(validate_master(&gpus(1.5)).is_err());
    }

    #[test]
    fn role_component_texts() {
        let role = |name: &str| {
            validate_resource(&raw(
                json!({"name":"cpus","type":"SCALAR","scalar":{"value":1},
                "reservations":[{"type":"STATIC","role":name}]}),
            ))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
        };
        assert!(
            role("a/-b").contains("Role component '-b' is invalid because it starts with a dash")
        );
        assert!(role("a b/-c").contains(
            "Role component 'a b' is invalid because it contains backspace or whitespace"
        ));
        assert!(role("a/../b").contains("cannot include '..' as a component"));
    }

    #[test]
    fn persistence_ids_refuse_ascii_controls_only() {
        assert!(
            crate::persistence::validate_id("v\u{85}").is_ok(),
            "iscntrl is per byte"
        );
        assert!(crate::persistence::validate_id("v\u{7f}").is_err());
        assert!(crate::persistence::validate_id("v\t").is_err());
    }
}
