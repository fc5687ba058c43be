//! `berth-validator serve`, run as a process and called with the generated tonic client over a
//! unix socket and over loopback TCP; and the typed request path held against the batch engine
//! on every operation vector of the conformance suite.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)] // test helpers abort on setup errors; JSON answers are read by index

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_offers::StageError;
use berth_offers::batch;
use berth_proto::berth::v1 as pb;
use berth_proto::berth::v1::validator_client::ValidatorClient;
use berth_proto::mesos::v1 as mesos;
use berth_resources::json::{from_json_value, to_json_value};
use berth_tests::conformance::{check_outcome, load_operation_vectors};
use serde_json::{Value as Json, json};
use tonic::transport::Channel;

const OFFER: &str = include_str!("../src/defaults/offer.json");
const CREATE: &str = include_str!("../src/defaults/create.json");
const CONTEXT: &str = include_str!("../src/defaults/context.json");

// ---------------------------------------------------------------------------------------------
// Helpers.

mod common;

use common::{Server, TempDir, connect, run_to_end, runtime};

fn json(text: &str) -> Json {
    serde_json::from_str(text).unwrap()
}

fn resources(list: &Json) -> Vec<mesos::Resource> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| from_json_value(r).unwrap())
        .collect()
}

/// A MULTI_ROLE framework in `framework-role` accepting the defaults' offer (allocated to
/// `framework-role`), an agent with every capability, as a message.
fn default_context() -> pb::Context {
    pb::Context {
        api: pb::context::Api::Framework as i32,
        offer_allocation_role: Some("framework-role".to_owned()),
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
    }
}

/// The defaults' CREATE with `edit` applied to its JSON first.
fn create_request(edit: impl FnOnce(&mut Json)) -> pb::ValidateRequest {
    let mut op = json(CREATE);
    edit(&mut op);
    pb::ValidateRequest {
        resources: resources(&json(OFFER)),
        operation: Some(Box::new(from_json_value(&op).unwrap())),
        context: Some(default_context()),
        ..pb::ValidateRequest::default()
    }
}

fn volume_ids(list: &[mesos::Resource]) -> Vec<String> {
    list.iter()
        .filter_map(|r| r.disk.as_ref()?.persistence.as_ref())
        .map(|p| p.id.clone())
        .collect()
}

/// Every call of the service, over one connection.
async fn exercise(client: &mut ValidatorClient<Channel>) {
    client.ping(pb::Empty {}).await.unwrap();

    // Validate: the documentation's CREATE is valid and returns no resources.
    let valid = client
        .validate(create_request(|_| {}))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid, "{valid:?}");
    assert!(valid.stage.is_empty() && valid.error.is_empty());
    assert!(valid.resources_after.is_empty());

    // Validate: a bad persistence id fails at `validate`, with the master's message.
    let bad_id = client
        .validate(create_request(|op| {
            op["create"]["volumes"][0]["disk"]["persistence"]["id"] = json!("vol/1");
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!bad_id.valid);
    assert_eq!(bad_id.stage, "validate");
    assert!(
        bad_id.error.contains("'vol/1' contains invalid characters"),
        "{}",
        bad_id.error
    );

    // Validate runs the apply step too: a volume larger than the offer fails at `apply`.
    let too_big = client
        .validate(create_request(|op| {
            op["create"]["volumes"][0]["scalar"]["value"] = json!(4096);
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!too_big.valid);
    assert_eq!(too_big.stage, "apply");
    assert!(
        too_big.error.contains("does not contain"),
        "{}",
        too_big.error
    );

    // Apply: the resulting resources hold the persistent volume.
    let applied = client
        .apply(create_request(|_| {}))
        .await
        .unwrap()
        .into_inner();
    assert!(applied.valid, "{applied:?}");
    assert_eq!(volume_ids(&applied.resources_after), ["volume-1"]);
    let after = to_json_value(applied.resources_after.first().unwrap());
    assert_eq!(after["reservations"][0]["role"], "framework-role");
    assert_eq!(after["disk"]["volume"]["container_path"], "data");

    // Apply of a failing request: the stage and error, no resources.
    let refused = client
        .apply(create_request(|op| {
            op["create"]["volumes"][0]["scalar"]["value"] = json!(4096);
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((refused.valid, refused.stage.as_str()), (false, "apply"));
    assert!(refused.resources_after.is_empty());

    // A request in the batch JSON format: the same verdict, and the batch answer verbatim.
    let line =
        json!({"resources": json(OFFER), "operation": json(CREATE), "context": json(CONTEXT)})
            .to_string();
    let by_json = client
        .apply(pb::ValidateRequest {
            json: line.clone(),
            ..pb::ValidateRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(by_json.valid, "{by_json:?}");
    assert_eq!(by_json.resources_after, applied.resources_after);
    assert_eq!(json(&by_json.json), batch::answer_line(&line));

    // Both forms at once is a parse error.
    let both = client
        .validate(pb::ValidateRequest {
            json: line.clone(),
            ..create_request(|_| {})
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((both.valid, both.stage.as_str()), (false, "parse"));

    // Typed resource validation (no operation): Apply returns them upgraded.
    let resources_only = client
        .apply(pb::ValidateRequest {
            resources: resources(&json(OFFER)),
            ..pb::ValidateRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resources_only.valid, "{resources_only:?}");
    let upgraded = to_json_value(resources_only.resources_after.first().unwrap());
    assert_eq!(upgraded["reservations"][0]["type"], "DYNAMIC");

    // Batch: three lines, one of them garbage, answered in order.
    let arithmetic = json!({"op": "contains", "left": json(OFFER), "right": json(OFFER)});
    let lines = [line.clone(), "{not json".to_owned(), arithmetic.to_string()];
    let requests = tokio_stream::iter(
        lines
            .iter()
            .map(|l| pb::BatchRequest {
                json: l.clone().into_bytes(),
            })
            .collect::<Vec<_>>(),
    );
    let mut answers = client.batch(requests).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(answer) = answers.message().await.unwrap() {
        got.push(json(&answer.json));
    }
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0]["valid"], true);
    assert_eq!(
        got[0]["resources_after"][0]["disk"]["persistence"]["id"],
        "volume-1"
    );
    assert_eq!(got[1]["valid"], false);
    assert_eq!(got[1]["stage"], "parse");
    assert_eq!(got[2], json!({"contains": true}));
    for (line, answer) in lines.iter().zip(&got) {
        assert_eq!(answer, &batch::answer_line(line), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

#[test]
fn serves_every_call_on_a_unix_socket_and_cleans_up_on_sigterm() {
    let dir = TempDir::new();
    let socket = dir.path("v.sock");
    let mut server = Server::start(&format!("unix:{}", socket.display()));
    assert_eq!(server.address, format!("unix:{}", socket.display()));
    assert!(
        std::fs::symlink_metadata(&socket)
            .unwrap()
            .file_type()
            .is_socket()
    );

    runtime().block_on(async {
        let mut client = connect(&server.address).await;
        exercise(&mut client).await;
        // A second connection is served alongside the first.
        let mut other = connect(&server.address).await;
        other.ping(pb::Empty {}).await.unwrap();
        client.ping(pb::Empty {}).await.unwrap();
    });

    server.signal("TERM");
    let status = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the socket was not removed");
}

#[test]
fn serves_on_loopback_tcp_with_port_zero_and_stops_on_sigint() {
    let mut server = Server::start_with("tcp:127.0.0.1:0", &["--insecure-tcp"]);
    let addr: std::net::SocketAddr = server
        .address
        .strip_prefix("tcp:")
        .unwrap_or_else(|| panic!("{}", server.address))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);

    runtime().block_on(async {
        let mut client = connect(&server.address).await;
        exercise(&mut client).await;
    });

    server.signal("INT");
    let status = server.wait(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

#[test]
fn shutdown_is_bounded_when_a_client_never_lets_go() {
    let dir = TempDir::new();
    let socket = dir.path("v.sock");
    let mut server = Server::start(&format!("unix:{}", socket.display()));
    // A client with an open Batch stream, on a runtime that is then no longer driven: it will
    // neither close the stream nor answer the server's GOAWAY.
    let rt = runtime();
    let (_client, _sender, _answers) = rt.block_on(async {
        let mut client = connect(&server.address).await;
        let (sender, receiver) = tokio::sync::mpsc::channel::<pb::BatchRequest>(1);
        sender
            .send(pb::BatchRequest {
                json: b"{}".to_vec(),
            })
            .await
            .unwrap();
        let mut answers = client
            .batch(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .unwrap()
            .into_inner();
        assert!(answers.message().await.unwrap().is_some());
        (client, sender, answers)
    });
    let start = Instant::now();
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let took = start.elapsed();
    assert!(
        took < berth_validator::serve::GRACE + Duration::from_secs(5),
        "{took:?}"
    );
    assert!(!socket.exists());
}

#[test]
fn replaces_a_stale_socket_but_not_a_live_one_or_a_file() {
    let dir = TempDir::new();
    let socket = dir.path("v.sock");
    let listen = format!("unix:{}", socket.display());

    let mut first = Server::start(&listen);
    // A second server on the same path is refused while the first accepts.
    let (code, err) = run_to_end(&["serve", "--listen", &listen]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("another server is listening"), "{err}");

    // SIGKILL leaves the socket file behind; the next server replaces it.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(socket.exists());
    let mut second = Server::start(&listen);
    runtime().block_on(async {
        connect(&second.address)
            .await
            .ping(pb::Empty {})
            .await
            .unwrap();
    });
    second.signal("TERM");
    assert!(second.wait(Duration::from_secs(15)).success());
    assert!(!socket.exists());

    // Anything but a socket is left alone.
    let file = dir.path("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    let (code, err) = run_to_end(&["serve", "--listen", &format!("unix:{}", file.display())]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn bad_listen_addresses_are_usage_errors() {
    for bad in [
        "",
        "unix:",
        "tcp:localhost:50051",
        "tcp:127.0.0.1",
        "/tmp/v.sock",
    ] {
        let (code, err) = run_to_end(&["serve", "--listen", bad]);
        assert_eq!(code, Some(2), "{bad:?}: {err}");
        assert!(err.contains("--listen"), "{bad:?}: {err}");
    }
    let (code, err) = run_to_end(&["serve", "--listen", "tcp:127.0.0.1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("IP:PORT"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Typed requests against the batch engine.

fn conformance_dir() -> PathBuf {
    match std::env::var_os("BERTH_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance"),
    }
}

/// A vector's context as a message; `None` if the JSON has a shape the message cannot carry
/// (those are parse failures on the JSON path, which the JSON tests cover).
fn typed_context(c: &Json) -> Option<Option<pb::Context>> {
    if c.is_null() {
        return Some(None);
    }
    let obj = c.as_object()?;
    let string = |v: Option<&Json>| -> Option<Option<String>> {
        match v {
            None | Some(Json::Null) => Some(None),
            Some(Json::String(s)) => Some(Some(s.clone())),
            Some(_) => None,
        }
    };
    let strings = |v: Option<&Json>| -> Option<Vec<String>> {
        match v {
            None | Some(Json::Null) => Some(Vec::new()),
            Some(Json::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect(),
            Some(_) => None,
        }
    };
    let list = |v: Option<&Json>| -> Option<Vec<mesos::Resource>> {
        match v {
            None | Some(Json::Null) => Some(Vec::new()),
            Some(Json::Array(items)) => items.iter().map(|r| from_json_value(r).ok()).collect(),
            Some(_) => None,
        }
    };
    let api = match string(obj.get("api"))?.as_deref() {
        None => pb::context::Api::Unspecified,
        Some("framework") => pb::context::Api::Framework,
        Some("operator") => pb::context::Api::Operator,
        Some(_) => return None,
    };
    let framework = match obj.get("framework") {
        Some(Json::Object(fw)) => Some(pb::Framework {
            id: string(fw.get("id"))?,
            roles: strings(fw.get("roles"))?,
            capabilities: strings(fw.get("capabilities"))?,
            principal: string(fw.get("principal"))?,
        }),
        _ => None,
    };
    let agent_capabilities = obj
        .get("agent_capabilities")
        .filter(|v| !v.is_null())
        .map(|caps| {
            let flag = |k: &str| caps.get(k).and_then(Json::as_bool).unwrap_or(false);
            pb::AgentCapabilities {
                hierarchical_role: flag("hierarchical_role"),
                reservation_refinement: flag("reservation_refinement"),
                resize_volume: flag("resize_volume"),
            }
        });
    let mut agent_used_resources = std::collections::HashMap::new();
    match obj.get("agent_used_resources") {
        None | Some(Json::Null) => {}
        Some(Json::Object(map)) => {
            for (fw, l) in map {
                agent_used_resources.insert(
                    fw.clone(),
                    pb::ResourceList {
                        resources: list(Some(l))?,
                    },
                );
            }
        }
        Some(_) => return None,
    }
    Some(Some(pb::Context {
        api: api as i32,
        framework,
        principal: string(obj.get("principal"))?,
        agent_capabilities,
        agent_checkpointed_resources: list(obj.get("agent_checkpointed_resources"))?,
        agent_used_resources,
        offer_allocation_role: string(obj.get("offer_allocation_role"))?,
    }))
}

#[test]
fn typed_requests_answer_as_the_batch_engine_on_every_operation_vector() {
    let path = conformance_dir().join("operations.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); set BERTH_CONFORMANCE_DIR",
            path.display()
        )
    });
    let vectors = load_operation_vectors(&text).unwrap();
    let (mut compared, mut skipped) = (0, Vec::new());
    for v in vectors.iter().filter(|v| !v.operation.is_null()) {
        let typed_resources: Option<Vec<mesos::Resource>> = match &v.resources {
            Json::Null => Some(Vec::new()),
            Json::Array(items) => items.iter().map(|r| from_json_value(r).ok()).collect(),
            _ => None,
        };
        let operation = from_json_value::<mesos::offer::Operation>(&v.operation).ok();
        let (Some(resources), Some(operation), Some(context)) =
            (typed_resources, operation, typed_context(&v.context))
        else {
            skipped.push(v.name.clone());
            continue;
        };
        let request = pb::ValidateRequest {
            resources,
            operation: Some(Box::new(operation)),
            context,
            ..pb::ValidateRequest::default()
        };
        let typed = berth_validator::serve::answer(&request, true).unwrap();
        let validated = berth_validator::serve::answer(&request, false).unwrap();
        let expected = batch::answer(
            &json!({"resources": v.resources, "operation": v.operation, "context": v.context}),
        );

        let name = &v.name;
        assert_eq!(Some(typed.valid), expected["valid"].as_bool(), "{name}");
        assert_eq!(
            typed.stage,
            expected["stage"].as_str().unwrap_or(""),
            "{name}"
        );
        assert_eq!(
            typed.error,
            expected["error"].as_str().unwrap_or(""),
            "{name}"
        );
        let after: Vec<Json> = typed.resources_after.iter().map(to_json_value).collect();
        assert_eq!(
            Json::Array(after),
            expected
                .get("resources_after")
                .cloned()
                .unwrap_or(json!([])),
            "{name}"
        );
        assert_eq!(
            (validated.valid, &validated.stage, &validated.error),
            (typed.valid, &typed.stage, &typed.error),
            "{name}"
        );
        assert!(validated.resources_after.is_empty(), "{name}");
        let outcome = if typed.valid {
            Ok(())
        } else {
            Err(StageError {
                stage: match typed.stage.as_str() {
                    "parse" => "parse",
                    "validate" => "validate",
                    _ => "apply",
                },
                message: typed.error.clone(),
            })
        };
        check_outcome(&v.expect, &outcome).unwrap_or_else(|e| panic!("{name}: {e}"));
        compared += 1;
    }
    eprintln!("{compared} vectors compared; skipped (not representable typed): {skipped:?}");
    assert!(
        compared >= 100,
        "only {compared} vectors compared; skipped {skipped:?}"
    );
}
