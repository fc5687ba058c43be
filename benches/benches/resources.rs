//! Mesos's resource benchmarks (`src/tests/resources_tests.cpp`) and the allocator's
//! `UpdateAllocation/0` shape, ported to `berth-resources`. Every figure is per operation
//! unless the id says otherwise; `README.md` records them.
//!
//! Run: `cargo bench -p berth-benches`, or one group: `cargo bench -p berth-benches -- Contains`.

// Benches abort on setup errors: a workload that cannot be built is a bug, not a figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_benches::{
    Allocation, fragment, overlapping_ports, parse_text, ports, reservations, revocable_cpus,
    scalars, shared_volume,
};
use berth_resources::Resources;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group};

/// Runs `iters` operations in chunks of at most `chunk` (Mesos's N), each chunk on a fresh
/// untimed `setup(n)`, and returns the time spent in `op` only; `check` sees each final state.
fn chunked<S>(
    iters: u64,
    chunk: u64,
    mut setup: impl FnMut(u64) -> S,
    mut op: impl FnMut(&mut S),
    mut check: impl FnMut(S),
) -> Duration {
    let mut spent = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(chunk);
        let mut state = setup(n);
        let start = Instant::now();
        for _ in 0..n {
            op(&mut state);
        }
        spent += start.elapsed();
        check(state);
        left -= n;
    }
    spent
}

/// `n` copies of `r` summed (untimed setup for the subtraction loops).
fn copies(r: &Resources, n: u64) -> Resources {
    let mut total = Resources::new();
    for _ in 0..n {
        total += r;
    }
    total
}

/// `Resources_Scalar_Arithmetic_BENCHMARK_Test.Arithmetic/{0,1,2}`: the four Mesos loops,
/// each reported per operation, plus the by-value forms Rust allows (`total = total + r`
/// moving `total` instead of copying it as C++ does).
fn arithmetic(c: &mut Criterion) {
    let params: [(&str, Resources, u64); 3] = [
        ("0", scalars().unwrap(), 50_000),
        ("1", reservations(1000).unwrap(), 10),
        ("2", shared_volume().unwrap(), 50_000),
    ];
    let mut g = c.benchmark_group("Arithmetic");
    for (param, r, n) in &params {
        let (r, n) = (r, *n);
        g.bench_function(BenchmarkId::new(*param, "total += r"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    n,
                    |_| Resources::new(),
                    |t| *t += black_box(r),
                    |t| {
                        assert!(!t.is_empty());
                    },
                )
            });
        });
        g.bench_function(BenchmarkId::new(*param, "total -= r"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    n,
                    |k| copies(r, k),
                    |t| *t -= black_box(r),
                    |t| {
                        assert!(t.is_empty(), "total -= r left {t}");
                    },
                )
            });
        });
        g.bench_function(BenchmarkId::new(*param, "total = total + r"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    n,
                    |_| Resources::new(),
                    |t| *t = &*t + black_box(r),
                    |t| assert!(!t.is_empty()),
                )
            });
        });
        g.bench_function(BenchmarkId::new(*param, "total = total - r"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    n,
                    |k| copies(r, k),
                    |t| *t = &*t - black_box(r),
                    |t| {
                        assert!(t.is_empty(), "total = total - r left {t}");
                    },
                )
            });
        });
        g.bench_function(BenchmarkId::new(*param, "total = total + r (move)"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    n,
                    |_| Resources::new(),
                    |t| *t = std::mem::take(t) + black_box(r),
                    |t| assert!(!t.is_empty()),
                )
            });
        });
        g.bench_function(BenchmarkId::new(*param, "total = total - r (move)"), |b| {
            b.iter_custom(|iters| {
                chunked(
                    iters,
                    n,
                    |k| copies(r, k),
                    |t| *t = std::mem::take(t) - black_box(r),
                    |t| assert!(t.is_empty(), "total = total - r left {t}"),
                )
            });
        });
    }
    g.finish();
}

/// `Resources_Filter_BENCHMARK_Test.Filters`: one filter call per iteration.
fn filters(c: &mut Criterion) {
    let plain = scalars().unwrap();
    let revocable = revocable_cpus();
    let reserved = Resources::parse(
        "cpus(role):1;gpus(role):1;mem(role):128;disk(role):256",
        "*",
    )
    .unwrap();
    assert_eq!(plain.non_revocable().len(), 4);
    assert_eq!(revocable.revocable().len(), 1);
    assert_eq!(plain.unreserved().len(), 4);
    assert_eq!(reserved.reserved(Some("role")).len(), 4);

    let mut g = c.benchmark_group("Filters");
    g.bench_function("nonRevocable", |b| {
        b.iter(|| black_box(&plain).non_revocable())
    });
    g.bench_function("revocable", |b| {
        b.iter(|| black_box(&revocable).revocable())
    });
    g.bench_function("unreserved", |b| b.iter(|| black_box(&plain).unreserved()));
    g.bench_function("reserved", |b| {
        b.iter(|| black_box(&reserved).reserved(Some("role")))
    });
    g.finish();
}

/// `ResourcesContains/Resources_Contains_BENCHMARK_Test.Contains/{0..8}`: one
/// `superset.contains(subset)` per iteration.
fn contains(c: &mut Criterion) {
    let small = Resources::parse("cpus:1;mem:128", "*").unwrap();
    let four = scalars().unwrap();
    let whole = ports([(1, 16_000)]);
    let fragmented = ports(fragment(1, 16_000, 8_000));
    assert_eq!(fragmented.ports().unwrap().ranges().len(), 8_000);
    let mixed_subset = &small + &fragmented;
    let mixed_superset = &four + &whole;

    // (param, subset, superset, expected)
    let cases: [(&str, &Resources, &Resources, bool); 9] = [
        ("0", &small, &four, true),
        ("1", &four, &small, false),
        ("2", &small, &small, true),
        ("3", &fragmented, &whole, true),
        ("4", &whole, &fragmented, false),
        ("5", &fragmented, &fragmented, true),
        ("6", &mixed_subset, &mixed_superset, true),
        ("7", &mixed_superset, &mixed_subset, false),
        ("8", &mixed_subset, &mixed_subset, true),
    ];
    let mut g = c.benchmark_group("Contains");
    for (param, subset, superset, expected) in cases {
        assert_eq!(superset.contains(subset), expected, "Contains/{param}");
        g.bench_function(param, |b| {
            b.iter(|| black_box(superset).contains(black_box(subset)))
        });
    }
    g.finish();
}

/// `Resources_Parse/Resources_Parse_BENCHMARK_Test.Parse/{1000,10000}`: Mesos parses the text
/// that many times; each iteration here is one parse.
fn parse(c: &mut Criterion) {
    let text = parse_text(100);
    // `res0:0` is a zero scalar: valid, but an empty resource that the collection drops.
    assert_eq!(Resources::parse(&text, "*").unwrap().len(), 99);
    let mut g = c.benchmark_group("Parse");
    for param in ["1000", "10000"] {
        g.bench_function(param, |b| {
            b.iter(|| Resources::parse(black_box(&text), "*").unwrap());
        });
    }
    g.finish();
}

/// Mesos JSON text of one `ports` resource holding `n` disjoint ranges `[3k+1, 3k+2]`.
fn ranges_json(n: u64) -> String {
    let mut text = String::from(r#"[{"name":"ports","type":"RANGES","ranges":{"range":["#);
    for k in 0..n {
        if k > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"begin":{},"end":{}}}"#,
            3 * k + 1_000_000_000,
            3 * k + 1_000_000_001
        ));
    }
    text.push_str("]}}]");
    text
}

/// A line of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The parse forms of `ParseRanges`.
fn parse_form(form: &str, text: &str) -> Resources {
    if form == "serde" {
        serde_json::from_str::<Resources>(text).unwrap()
    } else {
        let list = berth_resources::codec::parse_proto_list_str(text).unwrap();
        Resources::from_proto_list(&list).unwrap()
    }
}

/// In a child process (`BERTH_PEAK_PROBE=<form>:<n>`): the memory one parse needs at its peak
/// beyond what the process held with the input built (peak RSS, reset through
/// `/proc/self/clear_refs`), printed as `peak <bytes> input <bytes>`.
fn probe_peak(probe: &str) {
    let (form, n) = probe.split_once(':').unwrap();
    let text = ranges_json(n.parse().unwrap());
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status_bytes("VmRSS:");
    let parsed = parse_form(form, &text);
    let peak = status_bytes("VmHWM:");
    assert!(parsed.ports().is_some());
    println!("peak {} input {}", peak.saturating_sub(before), text.len());
}

/// The peak memory of one parse in a fresh process (so that memory freed by earlier runs
/// cannot hide it); `None` where the kernel cannot say.
fn peak_extra(form: &str, n: u64) -> Option<u64> {
    let out = std::process::Command::new(std::env::current_exe().ok()?)
        .env("BERTH_PEAK_PROBE", format!("{form}:{n}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// `ParseRanges/{10000,100000,1000000}`: Mesos JSON of one resource with that many ranges,
/// read through serde (`serde_json::from_str::<Resources>`) and through the text codec
/// (`parse_proto_list_str` + `Resources::from_proto_list`). Before the timings, the peak memory
/// of one parse beyond the input is printed against the input's size. `BERTH_PARSE_MAX` caps n.
fn parse_ranges(c: &mut Criterion) {
    let max: u64 = std::env::var("BERTH_PARSE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut g = c.benchmark_group("ParseRanges");
    g.sample_size(10);
    for n in [10_000u64, 100_000, 1_000_000]
        .into_iter()
        .filter(|n| *n <= max)
    {
        let text = ranges_json(n);
        g.throughput(criterion::Throughput::Bytes(text.len() as u64));
        for form in ["serde", "codec"] {
            let held = parse_form(form, &text)
                .ports()
                .map_or(0, |p| p.ranges().len());
            assert_eq!(held as u64, n);
            if let Some(extra) = peak_extra(form, n) {
                #[allow(clippy::cast_precision_loss)]
                let ratio = extra as f64 / text.len() as f64;
                eprintln!(
                    "ParseRanges/{form}/{n}: input {:.1} MB, peak memory beyond it {:.1} MB = {ratio:.2}x the input",
                    text.len() as f64 / 1e6,
                    extra as f64 / 1e6
                );
            }
            g.bench_with_input(BenchmarkId::new(form, n), &text, |b, t| {
                b.iter(|| black_box(parse_form(form, black_box(t))));
            });
        }
    }
    g.finish();
}

/// `ResourcesRangesSizes/Resources_Ranges_BENCHMARK_Test.ArithmeticOverlapping/{10,100,1000}`:
/// `n` ranges `[1+10k, 6+10k]` against `[3+10k, 8+10k]`, one operation per iteration.
fn ranges(c: &mut Criterion) {
    let mut g = c.benchmark_group("ArithmeticOverlapping");
    for n in [10u64, 100, 1000] {
        let ports1 = overlapping_ports(n, 1, 6);
        let ports2 = overlapping_ports(n, 3, 8);
        let param = n.to_string();
        assert_eq!(
            (&ports1 + &ports2).ports().unwrap().ranges().len(),
            usize::try_from(n).unwrap()
        );
        assert_eq!(
            (&ports1 - &ports2).ports().unwrap().ranges().len(),
            usize::try_from(n).unwrap()
        );
        g.bench_function(BenchmarkId::new(&param, "a += b"), |b| {
            b.iter_batched(
                || ports1.clone(),
                |mut a| {
                    a += black_box(&ports2);
                    a
                },
                BatchSize::SmallInput,
            );
        });
        g.bench_function(BenchmarkId::new(&param, "a -= b"), |b| {
            b.iter_batched(
                || ports1.clone(),
                |mut a| {
                    a -= black_box(&ports2);
                    a
                },
                BatchSize::SmallInput,
            );
        });
        g.bench_function(BenchmarkId::new(&param, "a + b"), |b| {
            b.iter(|| black_box(&ports1) + black_box(&ports2));
        });
        g.bench_function(BenchmarkId::new(&param, "a - b"), |b| {
            b.iter(|| black_box(&ports1) - black_box(&ports2));
        });
    }
    g.finish();
}

/// `ResourceParam/HierarchicalAllocator__BENCHMARK_WithResourceParam.UpdateAllocation/0`'s
/// resource work: 50 roles (200 reserved resource objects), 20 × (RESERVE all + UNRESERVE
/// all), each conversion checked with `contains` and applied with `-=`/`+=` to the agent and
/// to the framework's allocation. One iteration = the whole 20-pair workload.
fn update_allocation(c: &mut Criterion) {
    let mut alloc = Allocation::new(50).unwrap();
    let start = alloc.clone();
    let mut g = c.benchmark_group("UpdateAllocation");
    g.bench_function("0/20 reserve+unreserve", |b| {
        b.iter(|| {
            for _ in 0..20 {
                assert!(alloc.reserve_all(), "RESERVE refused");
                assert!(alloc.unreserve_all(), "UNRESERVE refused");
            }
        });
    });
    g.finish();
    assert_eq!(alloc.agent, start.agent);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = arithmetic, filters, contains, parse, parse_ranges, ranges, update_allocation
}

fn main() {
    if let Ok(probe) = std::env::var("BERTH_PEAK_PROBE") {
        probe_peak(&probe);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
