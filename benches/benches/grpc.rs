//! `berth-validator serve` over a unix socket: the gRPC `Validate` and `Apply` round trips of
//! the Mesos persistent-volume documentation's CREATE (the binary's embedded defaults),
//! against a no-op `Ping` on the same connection. Goal: `Validate` at most 1.5× `Ping`.
//!
//! The server is the binary's own (`berth_validator::serve::Bound`), in this process, on one
//! current-thread tokio runtime shared with the client, as the binary runs it (and as the
//! floor in `docs/research/perf-anchors.md` §2.3 was measured). Every id is one round trip
//! on a reused channel, request clone included; `direct/*` is the same answer without gRPC,
//! and the request's clone, encode and decode alone.
//!
//! Run: `cargo bench -p berth-benches --bench grpc`.

// Benches abort on setup errors: a workload that cannot be built is a bug, not a figure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_proto::berth::v1 as pb;
use berth_proto::berth::v1::validator_client::ValidatorClient;
use berth_proto::mesos::v1 as mesos;
use berth_resources::json::from_json_value;
use berth_validator::serve::{self, Bound, Listen};
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message as _;
use serde_json::{Value as Json, json};
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};

const OFFER: &str = include_str!("../../bins/berth-validator/src/defaults/offer.json");
const CREATE: &str = include_str!("../../bins/berth-validator/src/defaults/create.json");
const CONTEXT: &str = include_str!("../../bins/berth-validator/src/defaults/context.json");

fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap()
}

/// The defaults' CREATE as a typed request (the defaults' context as a message).
fn create_request() -> pb::ValidateRequest {
    let offer: Vec<mesos::Resource> = json(OFFER)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| from_json_value(r).unwrap())
        .collect();
    pb::ValidateRequest {
        resources: offer,
        operation: Some(Box::new(from_json_value(&json(CREATE)).unwrap())),
        context: Some(pb::Context {
            api: pb::context::Api::Framework as i32,
            framework: Some(pb::Framework {
                roles: vec!["framework-role".to_owned()],
                capabilities: vec!["MULTI_ROLE".to_owned(), "RESERVATION_REFINEMENT".to_owned()],
                ..pb::Framework::default()
            }),
            agent_capabilities: Some(pb::AgentCapabilities {
                hierarchical_role: true,
                reservation_refinement: true,
                resize_volume: true,
            }),
            ..pb::Context::default()
        }),
        ..pb::ValidateRequest::default()
    }
}

/// The same request in the batch JSON format.
fn create_request_json() -> pb::ValidateRequest {
    pb::ValidateRequest {
        json:
            json!({"resources": json(OFFER), "operation": json(CREATE), "context": json(CONTEXT)})
                .to_string(),
        ..pb::ValidateRequest::default()
    }
}

/// A server on a unix socket in a fresh temp dir, and a client connected to it; the server
/// task runs whenever the runtime is driven (by the client's calls).
struct Fixture {
    runtime: Runtime,
    client: ValidatorClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), String>>>,
    dir: PathBuf,
}

impl Fixture {
    fn start() -> Fixture {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("berth-bench-grpc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("v.sock");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (server, client) = runtime.block_on(async {
            let bound = Bound::bind(&Listen::Unix(socket.clone())).await.unwrap();
            let server = tokio::spawn(async move {
                bound
                    .serve(async move {
                        stopped.await.ok();
                    })
                    .await
                    .map_err(|e| format!("{e:#}"))
            });
            let channel = Endpoint::from_shared(format!("unix:{}", socket.display()))
                .unwrap()
                .connect()
                .await
                .unwrap();
            (server, ValidatorClient::new(channel))
        });
        Fixture {
            runtime,
            client,
            stop: Some(stop),
            server: Some(server),
            dir,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let (Some(stop), Some(server)) = (self.stop.take(), self.server.take()) {
            stop.send(()).ok();
            let result = self.runtime.block_on(server);
            assert!(matches!(result, Ok(Ok(()))), "server: {result:?}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn grpc(c: &mut Criterion) {
    let fx = Fixture::start();
    let typed = create_request();
    let by_json = create_request_json();

    // The workload is what it claims to be.
    fx.runtime.block_on(async {
        let mut client = fx.client.clone();
        let v = client.validate(typed.clone()).await.unwrap().into_inner();
        assert!(v.valid && v.resources_after.is_empty(), "{v:?}");
        let a = client.apply(typed.clone()).await.unwrap().into_inner();
        assert!(a.valid && a.resources_after.len() == 1, "{a:?}");
        let j = client.validate(by_json.clone()).await.unwrap().into_inner();
        assert!(j.valid, "{j:?}");
    });

    let mut group = c.benchmark_group("grpc");
    group.bench_function("ping", |b| {
        let mut client = fx.client.clone();
        b.iter_custom(|iters| {
            fx.runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(client.ping(pb::Empty {}).await.unwrap());
                }
                start.elapsed()
            })
        });
    });
    for (id, request, apply) in [
        ("validate", &typed, false),
        ("apply", &typed, true),
        ("validate_json", &by_json, false),
    ] {
        group.bench_function(id, |b| {
            let mut client = fx.client.clone();
            b.iter_custom(|iters| {
                fx.runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let response = if apply {
                            client.apply(request.clone()).await
                        } else {
                            client.validate(request.clone()).await
                        };
                        assert!(response.unwrap().get_ref().valid);
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();

    // `cargo bench` (not `cargo test --benches`): the goal's ratio, measured with the two
    // calls interleaved so that load from elsewhere on the machine hits both alike.
    if std::env::args().any(|a| a == "--bench") {
        paired_ratio(&fx, &typed);
    }

    // The same answers without the transport: what the service itself costs.
    let mut group = c.benchmark_group("direct");
    group.bench_function("validate", |b| {
        b.iter(|| serve::answer(black_box(&typed), false).unwrap());
    });
    group.bench_function("apply", |b| {
        b.iter(|| serve::answer(black_box(&typed), true).unwrap());
    });
    // The client's clone plus protobuf encode and decode of the request: the part of a
    // Validate round trip that Ping does not pay besides the answer itself.
    group.bench_function("request_clone_encode_decode", |b| {
        b.iter(|| {
            let bytes = black_box(&typed).clone().encode_to_vec();
            pb::ValidateRequest::decode(bytes.as_slice()).unwrap()
        });
    });
    group.finish();
}

/// Rounds of `CALLS` pings then `CALLS` typed Validates; prints the median per-call times and
/// the median of the per-round ratios.
fn paired_ratio(fx: &Fixture, typed: &pb::ValidateRequest) {
    const ROUNDS: usize = 21;
    const CALLS: u32 = 2_000;
    let mut client = fx.client.clone();
    let (mut pings, mut validates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    fx.runtime.block_on(async {
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for _ in 0..CALLS {
                black_box(client.ping(pb::Empty {}).await.unwrap());
            }
            let ping = start.elapsed() / CALLS;
            let start = Instant::now();
            for _ in 0..CALLS {
                assert!(
                    client
                        .validate(typed.clone())
                        .await
                        .unwrap()
                        .get_ref()
                        .valid
                );
            }
            let validate = start.elapsed() / CALLS;
            pings.push(ping);
            validates.push(validate);
            ratios.push(validate.as_secs_f64() / ping.as_secs_f64());
        }
    });
    pings.sort();
    validates.sort();
    ratios.sort_by(f64::total_cmp);
    let mid = ROUNDS / 2;
    println!(
        "grpc/validate ÷ grpc/ping, interleaved ({ROUNDS} rounds of {CALLS} calls each): \
         median ratio {:.2}× (goal ≤ 1.5×); median ping {:?}, validate {:?}",
        ratios[mid], pings[mid], validates[mid]
    );
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = grpc
}
criterion_main!(benches);
