//! A loop of one resources workload for a profiler (`perf record`): `update` (the
//! `UpdateAllocation/0/20` work), `add` / `sub` (the in-place `Arithmetic/1` forms) or `plus` /
//! `minus` (the copying ones), run for the given number of seconds.
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
    let mut alloc = Allocation::new(50)?;
    let mut rounds = 0u64;
    let mut timed = Duration::ZERO;
    let mut ops = 0u64;
    while Instant::now() < until {
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
