//! A loop of one resources workload for a profiler (`perf record`, `valgrind --tool=callgrind`):
//! `update` (the `UpdateAllocation/0/20` work; `agent` or `fw` for its agent's or its
//! frameworks' conversions alone), `add` / `sub` (the in-place `Arithmetic/1` forms) or `plus` /
//! `minus` (the copying ones), run for the given number of seconds.
//! `BERTH_PROFILE_ROLES=n` sets the number of frameworks (50); `BERTH_PROFILE_ROUNDS=n` runs
//! exactly `n` rounds instead (for instruction counts).
//!
//! ```text
//! CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p berth-benches --bin resources-profile
//! perf record -F 20000 -g target/release/resources-profile update 10
//! ```

use std::time::{Duration, Instant};

use berth_benches::{Allocation, reservations};
use berth_resources::Resources;

fn main() -> Result<(), berth_benches::Error> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "update".to_owned());
    let secs: u64 = args.next().map_or(Ok(5), |s| s.parse())?;
    let until = Instant::now() + Duration::from_secs(secs);
    let r = reservations(1000)?;
    let roles: usize = std::env::var("BERTH_PROFILE_ROLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut alloc = Allocation::new(roles)?;
    let mut rounds = 0u64;
    let mut timed = Duration::ZERO;
    let mut ops = 0u64;
    // BERTH_PROFILE_ROUNDS=n runs exactly n rounds (for instruction counts under callgrind).
    let fixed: Option<u64> = std::env::var("BERTH_PROFILE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok());
    while fixed.map_or(Instant::now() < until, |n| rounds < n) {
        match what.as_str() {
            "update" => {
                let t = Instant::now();
                for _ in 0..20 {
                    std::hint::black_box(alloc.reserve_all());
                    std::hint::black_box(alloc.unreserve_all());
                }
                timed += t.elapsed();
                ops += 1;
            }
            "agent" | "fw" => {
                // The agent's or the frameworks' half of `update` alone.
                let t = Instant::now();
                for _ in 0..20 {
                    for back in [false, true] {
                        for (fw, (u, r)) in alloc.frameworks.iter_mut().zip(&alloc.conversions) {
                            let target = if what == "agent" {
                                &mut alloc.agent
                            } else {
                                fw
                            };
                            let (from, to) = if back { (r, u) } else { (u, r) };
                            std::hint::black_box(target.convert(from, to));
                        }
                    }
                }
                timed += t.elapsed();
                ops += 1;
            }
            "add" | "plus" => {
                let mut total = Resources::new();
                let t = Instant::now();
                for _ in 0..10 {
                    if what == "add" {
                        total += &r;
                    } else {
                        total = &total + &r;
                    }
                }
                timed += t.elapsed();
                ops += 10;
                std::hint::black_box(total);
            }
            "sub" | "minus" => {
                let mut total = Resources::new();
                for _ in 0..10 {
                    total += &r;
                }
                let t = Instant::now();
                for _ in 0..10 {
                    if what == "sub" {
                        total -= &r;
                    } else {
                        total = &total - &r;
                    }
                }
                timed += t.elapsed();
                ops += 10;
                std::hint::black_box(total);
            }
            other => return Err(format!("unknown workload {other}").into()),
        }
        rounds += 1;
    }
    let per = timed.as_secs_f64() * 1e6 / ops.max(1) as f64;
    println!("{what}: {rounds} rounds, {per:.1} µs per operation");
    Ok(())
}
