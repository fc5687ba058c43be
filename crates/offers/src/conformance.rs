//! The operation vectors of `tests/conformance/operations.json` (categories other than
//! `resource_validation`), evaluated through [`crate::pipeline::evaluate`] — the engine behind
//! `berth-validator batch`.

use berth_resources::conformance::{
    OperationVector, check_outcome, check_resource_validation, fold,
};
use serde_json::Value as Json;

use crate::pipeline;

/// Evaluates one vector of any category.
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
    let _: &Json = &v.context;
    Ok(())
}
