//! berth's fuzz targets: one function per untrusted input, shared by the coverage-guided
//! libFuzzer binaries (`fuzz_targets/`, built by `cargo fuzz` with the `libfuzzer` feature) and
//! by the stable regression test (`tests/regressions.rs`), which replays every file of
//! `regressions/<target>/` and every seed through the same functions.
//!
//! A target must return for any input: no panic, no hang, and no more live memory than
//! [`budget`] allows for the input's size (checked by the counting allocator of this crate:
//! an allocation past the budget fails, which aborts the process, and libFuzzer keeps the
//! input as a crash).

use std::alloc::System;
use std::sync::OnceLock;

use cap::Cap;

mod targets;

pub use targets::TARGETS;

/// Counts live heap bytes so that a target's memory can be bounded per input.
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// The most live heap memory a target may add while it handles an input of `len` bytes: 64×
/// the input, plus a fixed floor for what every parser needs whatever its input (buffers,
/// error messages, a tokio runtime for the async readers).
#[must_use]
pub fn budget(len: usize) -> usize {
    FLOOR.saturating_add(len.saturating_mul(64))
}

/// See [`budget`].
pub const FLOOR: usize = 4 << 20;

/// A target: its name (the folder of its corpus and regressions) and its function.
#[derive(Clone, Copy)]
pub struct Target {
    /// The name, e.g. `batch_line`.
    pub name: &'static str,
    /// What the input is.
    pub about: &'static str,
    /// The function.
    pub run: fn(&[u8]),
    /// Seeds: inputs of every shape the target reads, from the conformance vectors and the
    /// test fixtures.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}

/// The target named `name`.
#[must_use]
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Runs `target` on `data` under the memory budget of `data`'s size. Warms the target up once
/// on an empty input first (lazy statics such as the protobuf descriptor pool are not the
/// input's doing).
pub fn run(target: &Target, data: &[u8]) {
    static WARM: OnceLock<()> = OnceLock::new();
    WARM.get_or_init(|| {
        // A panic's report (its backtrace above all) is not the input's allocation: lift the
        // budget before the hook that was installed (libFuzzer's, which aborts) runs.
        let reporter = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = ALLOC.set_limit(usize::MAX);
            reporter(info);
        }));
        for t in TARGETS {
            (t.run)(&[]);
        }
    });
    let before = ALLOC.allocated();
    let limit = before.saturating_add(budget(data.len()));
    // Fails only if more is already allocated than the new limit, which cannot be.
    let _ = ALLOC.set_limit(limit);
    (target.run)(data);
    let _ = ALLOC.set_limit(usize::MAX);
}

/// The live heap bytes now (for tests of the budget itself).
#[must_use]
pub fn allocated() -> usize {
    ALLOC.allocated()
}
