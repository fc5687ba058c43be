//! The two reservation formats and the conversions between them (`research` F).
//!
//! * pre-refinement ("legacy"): `role` (+ `reservation` for dynamic reservations);
//! * post-refinement: the `reservations` stack, which is what berth uses internally.
//!
//! [`upgrade`] is Mesos's `upgradeResource`; [`downgrade`] is `downgradeResource`. Both operate
//! on the wire form and assume the resource passed common validation.

#![allow(deprecated)] // `Resource.role` is deprecated in Mesos but is part of the legacy format we read.

use berth_proto::mesos::v1 as pb;
use pb::resource::reservation_info::Type as ResType;

use crate::error::InputError;

/// Converts a validated resource to the post-refinement format, in place.
pub fn upgrade(r: &mut pb::Resource) {
    if !r.reservations.is_empty() {
        r.role = None;
        r.reservation = None;
        return;
    }
    let role = r.role.take().unwrap_or_else(|| "*".to_owned());
    let legacy = r.reservation.take();
    if role == "*" {
        return;
    }
    let info = match legacy {
        None => pb::resource::ReservationInfo {
            r#type: Some(ResType::Static as i32),
            role: Some(role),
            principal: None,
            labels: None,
        },
        Some(legacy) => pb::resource::ReservationInfo {
            r#type: Some(ResType::Dynamic as i32),
            role: Some(role),
            principal: legacy.principal,
            labels: legacy.labels,
        },
    };
    r.reservations.push(info);
}

/// Converts a post-refinement resource to the legacy format, in place.
///
/// # Errors
/// [`InputError::Downgrade`] when the stack has more than one reservation (the resource is left as
/// it was).
pub fn downgrade(r: &mut pb::Resource) -> Result<(), InputError> {
    match r.reservations.len() {
        0 => {
            r.role = Some("*".to_owned());
            r.reservation = None;
        }
        1 => {
            let info = r.reservations.remove(0);
            let dynamic = info.r#type() == ResType::Dynamic;
            r.role = info.role;
            r.reservation = dynamic.then_some(pb::resource::ReservationInfo {
                r#type: None,
                role: None,
                principal: info.principal,
                labels: info.labels,
            });
        }
        _ => return Err(InputError::Downgrade),
    }
    Ok(())
}
