//! Fast, deterministic hashing of resource metadata for the `Resources` index.

use std::hash::{Hash, Hasher};

use rustc_hash::FxHasher;

/// Hash of a string with FxHash.
#[must_use]
pub(crate) fn fx_str(s: &str) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

/// A fresh hasher.
#[must_use]
pub(crate) fn hasher() -> FxHasher {
    FxHasher::default()
}
