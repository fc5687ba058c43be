//! Replays every crasher kept in `regressions/<target>/` and every seed of every target through
//! the same functions the libFuzzer binaries call, under the same memory budget: a regression
//! panics, aborts (past the budget) or takes too long here, on the stable toolchain.
//!
//! The only test of this binary: the memory budget is process-wide, so nothing else may
//! allocate while a target runs (the other checks of the targets are in `targets.rs`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // a failing replay is the test failing

use std::path::Path;
use std::time::{Duration, Instant};

/// libFuzzer's `-timeout` of the campaign, with room for a debug build and a loaded machine.
const SLOW: Duration = Duration::from_secs(10);

#[test]
fn every_regression_and_seed_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut replayed = 0;
    let mut seeds = 0;
    for target in berth_fuzz::TARGETS {
        let dir = root.join(target.name);
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            if file.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let data = std::fs::read(file).unwrap();
            let started = Instant::now();
            berth_fuzz::run(target, &data);
            let took = started.elapsed();
            assert!(took < SLOW, "{}: {took:?}", file.display());
            replayed += 1;
        }
        let target_seeds = (target.seeds)();
        assert!(!target_seeds.is_empty(), "{} has no seeds", target.name);
        for seed in &target_seeds {
            let started = Instant::now();
            berth_fuzz::run(target, seed);
            assert!(started.elapsed() < SLOW, "{}: a seed is slow", target.name);
        }
        seeds += target_seeds.len();
    }
    eprintln!(
        "{} targets: {replayed} regression inputs and {seeds} seeds replayed",
        berth_fuzz::TARGETS.len()
    );
}
