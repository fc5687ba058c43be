//! Helpers shared by berth's cross-crate tests: where the conformance vectors live, and the
//! harness that evaluates them ([`conformance`]).

use std::path::PathBuf;

pub mod conformance;

/// The directory holding the conformance vectors: `$BERTH_CONFORMANCE_DIR`, else the
/// repository's own `tests/conformance`.
#[must_use]
pub fn conformance_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance")
}

/// Reads one vector file, with an error that says where it looked.
///
/// # Errors
/// The file cannot be read.
pub fn read_vectors(file: &str) -> Result<String, String> {
    let path = conformance_dir().join(file);
    std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {} ({e}); the vectors live in tests/conformance; BERTH_CONFORMANCE_DIR overrides",
            path.display()
        )
    })
}
