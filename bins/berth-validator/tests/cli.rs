//! The validator binary, run as an operator or a scheduler would run it.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test helpers abort on setup errors

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value as Json, json};

fn run_raw(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait")
}

fn run_json(args: &[&str], stdin: &str) -> (Output, Json) {
    let out = run_raw(args, stdin.as_bytes());
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out, json)
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("berth-validator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write temp file");
    path
}

/// The Mesos persistent-volume documentation's "subsequent offer" after its CREATE example,
/// with the placeholders filled in as in the embedded defaults.
fn seed_subsequent_offer() -> Json {
    json!([{
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": 2048},
        "role": "framework-role",
        "reservation": {"principal": "framework-principal"},
        "disk": {
            "persistence": {"id": "volume-1"},
            "volume": {"container_path": "data", "mode": "RW"}
        }
    }])
}

#[test]
fn check_on_embedded_defaults_gives_the_seeds_subsequent_offer() {
    let (out, json) = run_json(&["check", "--json"], "");
    assert!(out.status.success(), "{json}");
    assert_eq!(json["valid"], Json::Bool(true));
    // What the framework (no MULTI_ROLE, no RESERVATION_REFINEMENT, as in the documentation's
    // days) sees in its next offer is exactly the documented offer.
    assert_eq!(json["offered"], seed_subsequent_offer());
    // The master's own view keeps the allocation and uses the post-refinement format.
    assert_eq!(
        json["resources_after"][0]["reservations"][0]["type"],
        "DYNAMIC"
    );
    assert_eq!(
        json["resources_after"][0]["allocation_info"]["role"],
        "framework-role"
    );

    let human = run_raw(&["check"], b"");
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.starts_with("VALID: the operation applies. The framework's next offer holds:"),
        "{text}"
    );
    let printed: Json =
        serde_json::from_str(text.split_once('\n').map(|x| x.1).unwrap_or_default()).expect("json");
    assert_eq!(printed, seed_subsequent_offer());
}

#[test]
fn check_reports_invalid_operations_with_exit_1() {
    let offer = temp_file("offer.json", &seed_subsequent_offer().to_string());
    // Destroying a volume that the agent has not checkpointed.
    let destroy = temp_file(
        "destroy.json",
        &json!({"type": "DESTROY", "destroy": {"volumes": seed_subsequent_offer()}}).to_string(),
    );
    let out = run_raw(
        &[
            "check",
            "--resources",
            offer.to_str().unwrap(),
            "--operation",
            destroy.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("INVALID (validate): Persistent volumes not found"),
        "{text}"
    );

    // The same DESTROY with the volume checkpointed on the agent applies.
    let context = temp_file(
        "context.json",
        &json!({"api": "operator", "agent_checkpointed_resources": seed_subsequent_offer()})
            .to_string(),
    );
    let (out, json) = run_json(
        &[
            "check",
            "--json",
            "--resources",
            offer.to_str().unwrap(),
            "--operation",
            destroy.to_str().unwrap(),
            "--context",
            context.to_str().unwrap(),
        ],
        "",
    );
    assert!(out.status.success(), "{json}");
    assert!(json["resources_after"][0].get("disk").is_none(), "{json}");
}

#[test]
fn seed_typo_is_warned_about() {
    // The documentation's CREATE says `create.resources`; the field is `volumes`.
    let op = temp_file(
        "typo.json",
        &json!({"type": "CREATE", "create": {"resources": seed_subsequent_offer()}}).to_string(),
    );
    let offer = temp_file(
        "offer2.json",
        &json!([seed_subsequent_offer()[0].clone()]).to_string(),
    );
    let out = run_raw(
        &[
            "check",
            "--resources",
            offer.to_str().unwrap(),
            "--operation",
            op.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("'create.resources' is not a field of Offer.Operation")
    );
}

#[test]
fn check_resources_only_and_bad_input() {
    let cases = [
        (
            r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":-1}}]"#,
            "value <= 0",
        ),
        (
            r#"[{"name":"cpus","type":"BOGUS","scalar":{"value":1}}]"#,
            "Failed to find enum",
        ),
        (
            r#"[{"name":"disk","type":"SCALAR","scalar":{"value":1},"role":"r","disk":{"persistence":{"id":".."},"volume":{"container_path":"d","mode":"RW"}}}]"#,
            "'..' is disallowed",
        ),
        ("cpus:abc", "bad scalar"),
    ];
    for (input, want) in cases {
        let (out, json) = run_json(&["check", "--json", "--resources", "-"], input);
        assert_eq!(out.status.code(), Some(1), "{input}");
        assert!(
            json["error"].as_str().unwrap_or_default().contains(want),
            "{input}: {json}"
        );
    }
    let (out, json) = run_json(
        &["check", "--json", "--resources", "-"],
        "cpus(r1):2;mem:64",
    );
    assert!(out.status.success());
    assert_eq!(json["downgraded"][0]["role"], "r1");
    // Not JSON at all is an input error (exit 2).
    assert_eq!(
        run_raw(&["check", "--resources", "-"], b"[not json")
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run_raw(&["check", "--bogus"], b"").status.code(), Some(2));
    assert_eq!(run_raw(&["frobnicate"], b"").status.code(), Some(2));
    assert_eq!(
        run_raw(&["check", "--operation", "/nonexistent/op.json"], b"")
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn acls_allow_and_deny() {
    let acls = temp_file(
        "acls.json",
        &json!({"permissive": false,
                "create_volumes": [{"principals": {"values": ["ops"]}, "roles": {"values": ["framework-role"]}}]})
        .to_string(),
    );
    let offer = temp_file(
        "offer3.json",
        r#"[{"name":"disk","type":"SCALAR","scalar":{"value":2048},"role":"framework-role","reservation":{"principal":"ops"}}]"#,
    );
    let create = json!({"type": "CREATE", "create": {"volumes": [{"name":"disk","type":"SCALAR","scalar":{"value":2048},
        "role":"framework-role","reservation":{"principal":"ops"},
        "disk":{"persistence":{"id":"v","principal":"ops"},"volume":{"container_path":"d","mode":"RW"}}}]}});
    let op = temp_file("create3.json", &create.to_string());
    for (principal, ok) in [("ops", true), ("intruder", false)] {
        let ctx = temp_file(
            &format!("ctx-{principal}.json"),
            &json!({"api":"operator","principal":principal}).to_string(),
        );
        let mut create_for = create.clone();
        create_for["create"]["volumes"][0]["disk"]["persistence"]["principal"] = json!(principal);
        let op_for = temp_file(&format!("op-{principal}.json"), &create_for.to_string());
        let (out, json) = run_json(
            &[
                "check",
                "--json",
                "--resources",
                offer.to_str().unwrap(),
                "--operation",
                op_for.to_str().unwrap(),
                "--context",
                ctx.to_str().unwrap(),
                "--acls",
                acls.to_str().unwrap(),
            ],
            "",
        );
        assert_eq!(out.status.success(), ok, "{principal}: {json}");
        if !ok {
            assert!(
                json["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("Not authorized"),
                "{json}"
            );
        }
    }
    let _ = op;
}

#[test]
fn batch_answers_every_line_in_order_and_survives_garbage() {
    let ok = json!({"resources": [{"name":"cpus","type":"SCALAR","scalar":{"value":2}}],
        "operation": {"type":"RESERVE","reserve":{"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},
          "reservations":[{"type":"DYNAMIC","role":"r","principal":"p"}]}]}},
        "context": {"api":"operator","principal":"p"}});
    let bad_apply = json!({"resources": [], "operation": ok["operation"].clone(), "context": ok["context"].clone()});
    let input = format!(
        "{ok}\nthis is not json\n{bad_apply}\n\n[1,2]\n{}\n{}\n",
        json!({"op":"add","left":[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}],"right":[{"name":"cpus","type":"SCALAR","scalar":{"value":2}}]}),
        json!({"resources":[{"name":"cpus","type":"SCALAR","scalar":{"value":1},"role":"r"}],"operation":null,"context":{"level":"resource"}}),
    );
    let out = run_raw(&["batch"], input.as_bytes());
    // Lines 2, 4 and 5 are not requests: answered, and the exit code says so.
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each answer is JSON"))
        .collect();
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert_eq!(lines[0]["valid"], true);
    assert_eq!(
        lines[0]["resources_after"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(lines[1]["stage"], "parse");
    assert_eq!(lines[2]["stage"], "apply");
    assert_eq!(lines[3]["stage"], "parse");
    assert_eq!(lines[4]["stage"], "parse");
    assert_eq!(lines[5]["size"], 1);
    assert_eq!(lines[5]["result"][0]["scalar"]["value"], 3);
    assert_eq!(lines[6]["upgraded"][0]["reservations"][0]["type"], "STATIC");
    assert_eq!(lines[6]["downgraded"][0]["role"], "r");
}

#[test]
fn batch_runs_all_vectors_like_the_conformance_engine() {
    let dir = std::env::var_os("BERTH_CONFORMANCE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance"),
        PathBuf::from,
    );
    let text = std::fs::read_to_string(dir.join("operations.json")).expect("operations.json");
    let vectors: Vec<Json> = serde_json::from_str(&text).expect("vectors");
    let input: String = vectors.iter().map(|v| format!("{v}\n")).collect();
    let out = run_raw(&["batch"], input.as_bytes());
    assert!(out.status.success(), "every vector is a request");
    let answers: Vec<Json> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(answers.len(), vectors.len());
    for (v, a) in vectors.iter().zip(&answers) {
        let want = v["expect"]["valid"].as_bool().unwrap_or(true);
        assert_eq!(a["valid"].as_bool(), Some(want), "{}: {a}", v["name"]);
        if !want {
            assert_eq!(a["stage"], v["expect"]["stage"], "{}", v["name"]);
            if let Some(sub) = v["expect"]["error_contains"].as_str() {
                assert!(
                    a["error"].as_str().unwrap_or_default().contains(sub),
                    "{}: {a}",
                    v["name"]
                );
            }
        }
    }
}

#[test]
fn convert_round_trips_every_vector_byte_for_byte() {
    let dir = std::env::var_os("BERTH_CONFORMANCE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance"),
        PathBuf::from,
    );
    let text = std::fs::read_to_string(dir.join("operations.json")).expect("operations.json");
    let vectors: Vec<Json> = serde_json::from_str(&text).expect("vectors");
    let mut checked = 0;
    for v in &vectors {
        let mut items = vec![("resources", v["resources"].clone())];
        if !v["operation"].is_null() {
            items.push(("operation", v["operation"].clone()));
        }
        for (message, json) in items {
            let first = run_raw(
                &[
                    "convert",
                    "--message",
                    message,
                    "--from",
                    "json",
                    "--to",
                    "pb",
                ],
                json.to_string().as_bytes(),
            );
            if !first.status.success() {
                // Vectors that fail at the parse stage are not valid Mesos JSON.
                assert_eq!(
                    v["expect"]["stage"],
                    "parse",
                    "{}: {}",
                    v["name"],
                    String::from_utf8_lossy(&first.stderr)
                );
                continue;
            }
            let back = run_raw(
                &[
                    "convert",
                    "--message",
                    message,
                    "--from",
                    "pb",
                    "--to",
                    "json",
                ],
                &first.stdout,
            );
            assert!(back.status.success());
            let again = run_raw(
                &[
                    "convert",
                    "--message",
                    message,
                    "--from",
                    "json",
                    "--to",
                    "pb64",
                ],
                &back.stdout,
            );
            let b64 = run_raw(
                &[
                    "convert",
                    "--message",
                    message,
                    "--from",
                    "pb64",
                    "--to",
                    "pb",
                ],
                &again.stdout,
            );
            assert_eq!(
                b64.stdout, first.stdout,
                "{} {message}: bytes changed",
                v["name"]
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} round trips");
}

/// Runs `berth-validator plan --app APP --offer OFFER EXTRA...`.
fn plan(app: &Path, offer: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "plan",
        "--app",
        app.to_str().unwrap(),
        "--offer",
        offer.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_raw(&args, b"")
}

/// The operation types of a `plan` answer.
fn kinds(out: &Output) -> Vec<String> {
    let ops: Vec<Json> = serde_json::from_slice(&out.stdout).expect("operations");
    ops.iter()
        .map(|o| o["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn plan_mysql_then_relaunch_then_wipe() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let app = root.join("mysql-app.json");
    let offer = root.join("mysql-offer.json");
    let state = std::env::temp_dir().join(format!("berth-plan-state-{}.json", std::process::id()));
    let state_arg = state.to_str().unwrap();
    let out = plan(
        &app,
        &offer,
        &["--principal", "marathon", "--reservation-out", state_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(kinds(&out), ["RESERVE", "CREATE", "LAUNCH"]);
    let ops: Vec<Json> = serde_json::from_slice(&out.stdout).expect("operations");
    assert_eq!(
        ops[2]["launch"]["task_infos"][0]["agent_id"]["value"],
        "agent-7"
    );
    let reservation: Json =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(
        reservation["persistence_ids"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("mysql#mysqldata#")
    );

    // The same operations, checked by the validator itself on the framework path.
    let offer_json: Json = serde_json::from_str(&std::fs::read_to_string(&offer).unwrap()).unwrap();
    let mut resources = offer_json["resources"].clone();
    let ctx = json!({"api": "framework", "principal": "marathon",
        "framework": {"roles": ["marathon"], "capabilities": ["MULTI_ROLE"], "principal": "marathon"},
        "agent_capabilities": {"hierarchical_role": true, "reservation_refinement": true, "resize_volume": true}});
    for op in &ops[..2] {
        let line = json!({"resources": resources, "operation": op, "context": ctx}).to_string();
        let answer = run_raw(&["batch"], format!("{line}\n").as_bytes());
        let answer: Json = serde_json::from_slice(&answer.stdout).unwrap();
        assert_eq!(answer["valid"], true, "{answer}");
        resources = answer["resources_after"].clone();
    }

    // Relaunch on the next offer holding the reservation: only a LAUNCH; wipe: DESTROY, UNRESERVE.
    let next = temp_file(
        "next-offer.json",
        &json!({"resources": resources, "agent_id": {"value": "agent-7"}}).to_string(),
    );
    let kept = [
        "--framework-id",
        "marathon-fw-1",
        "--principal",
        "marathon",
        "--reservation",
        state_arg,
    ];
    let out = plan(&app, &next, &kept);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(kinds(&out), ["LAUNCH"]);
    let out = plan(&app, &next, &[&kept[..], &["--wipe"]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(kinds(&out), ["DESTROY", "UNRESERVE"]);

    // An offer that cannot hold the app: exit 1 with the reasons.
    let small = temp_file(
        "small-offer.json",
        r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":4},"allocation_info":{"role":"marathon"}}]"#,
    );
    let out = plan(&app, &small, &[]);
    assert_eq!(out.status.code(), Some(1));
    let answer: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["fits"], false);
    assert!(
        answer["reasons"]
            .to_string()
            .contains("not enough unreserved mem"),
        "{answer}"
    );
    let _ = std::fs::remove_file(state);
}
