//! Applying an operation to resources (Mesos `Resources::apply` and the resource conversions of
//! `getResourceConversions`, `research` A-11…A-S1).
//!
//! Each operation is a list of conversions `(consumed, converted)` applied in order: the
//! current resources must contain what is consumed, which is then replaced by what it converts
//! to. The totals of `cpus`, `gpus`, `mem`, `disk` and `ports` must not change (checked, and
//! reported as [`ApplyError::NotConserved`] rather than aborting as Mesos does). LAUNCH, which
//! Mesos's `apply` leaves alone, consumes the launched tasks' resources here, as the master's
//! accept pipeline does.

use berth_resources::{Resource, Resources, Value};

use crate::error::ApplyError;
use crate::operation::Operation;

struct Conversion {
    consumed: Resources,
    converted: Resources,
    /// DESTROY: the volume must be gone after the step.
    gone: Option<Resource>,
}

fn conversions(op: &Operation) -> Result<Vec<Conversion>, ApplyError> {
    let plain = |consumed, converted| Conversion {
        consumed,
        converted,
        gone: None,
    };
    Ok(match op {
        Operation::Reserve { source, resources } => {
            let converted: Resources = resources.iter().collect();
            let consumed = if source.is_empty() {
                converted.pop_reservation()
            } else {
                source.iter().collect()
            };
            vec![plain(consumed, converted)]
        }
        Operation::Unreserve { resources } => resources
            .iter()
            .map(|r| {
                let popped = r.pop_reservation().unwrap_or_else(|| r.clone());
                plain(Resources::from(r.clone()), Resources::from(popped))
            })
            .collect(),
        Operation::Create { volumes } => volumes
            .iter()
            .map(|v| {
                plain(
                    Resources::from(v.stripped_volume()),
                    Resources::from(v.clone()),
                )
            })
            .collect(),
        Operation::Destroy { volumes } => volumes
            .iter()
            .map(|v| Conversion {
                consumed: Resources::from(v.clone()),
                converted: Resources::from(v.stripped_volume()),
                gone: Some(v.clone()),
            })
            .collect(),
        Operation::GrowVolume { volume, addition } => {
            if volume.provider_id.is_some() {
                return Err(ApplyError::Provider);
            }
            let mut consumed = Resources::from(volume.clone());
            consumed.add_resource(addition.clone());
            let mut grown = volume.clone();
            if let (Value::Scalar(v), Some(a)) = (&mut grown.value, addition.scalar_value()) {
                *v += a;
            }
            vec![plain(consumed, Resources::from(grown))]
        }
        Operation::ShrinkVolume { volume, subtract } => {
            if volume.provider_id.is_some() {
                return Err(ApplyError::Provider);
            }
            let mut freed = volume.clone();
            freed.value = Value::Scalar(*subtract);
            let freed = freed.stripped_volume();
            let mut shrunk = volume.clone();
            if let Value::Scalar(v) = &mut shrunk.value {
                *v -= *subtract;
            }
            let mut converted = Resources::from(shrunk);
            converted.add_resource(freed);
            vec![plain(Resources::from(volume.clone()), converted)]
        }
        Operation::Launch { tasks } => {
            let consumed: Resources = tasks.iter().flat_map(|t| t.resources.iter()).collect();
            vec![plain(consumed, Resources::new())]
        }
    })
}

/// Totals that an operation must conserve.
fn totals(r: &Resources) -> [Option<berth_resources::Scalar>; 4] {
    [r.cpus(), r.gpus(), r.mem(), r.disk()]
}

/// Applies `op` to `resources`.
///
/// # Errors
/// [`ApplyError`] when the resources do not hold what the operation consumes.
pub fn apply(resources: &Resources, op: &Operation) -> Result<Resources, ApplyError> {
    let conserving = !matches!(op, Operation::Launch { .. });
    let mut result = resources.clone();
    let mut shares = false;
    for c in conversions(op)? {
        // What a step consumes is held, so it is removed exactly: the totals of the result
        // stay those of the input iff each step converts to the same totals it consumes.
        if conserving
            && (totals(&c.consumed) != totals(&c.converted)
                || c.consumed.ports() != c.converted.ports())
        {
            return Err(ApplyError::NotConserved(op.kind().to_owned()));
        }
        shares |= c.converted.iter().any(|r| r.shared);
        if !result.convert(&c.consumed, &c.converted) {
            return Err(ApplyError::NotContained {
                resources: result.to_string(),
                consumed: c.consumed.to_string(),
            });
        }
        if let Some(volume) = c.gone
            && result.contains_resource(&volume)
        {
            return Err(ApplyError::SharedCopies(volume.to_string()));
        }
    }
    // A shared volume that merges with an identical copy adds a copy, not disk: the step looks
    // balanced but the totals change (Mesos aborts on its conservation CHECK here).
    if conserving
        && shares
        && (totals(&result) != totals(resources) || result.ports() != resources.ports())
    {
        return Err(ApplyError::NotConserved(op.kind().to_owned()));
    }
    Ok(result)
}
