//! `berth-validator plan --reclaim --known FILE --offer OFFER`: a first launch the scheduler
//! forgot is destroyed and unreserved, a known one is kept, and the exit codes and JSON output
//! are those of the other `plan` commands.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)] // test helpers abort on setup errors

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value as Json, json};

fn run(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.as_bytes()).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait")
}

/// A directory of this process and test.
fn dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "berth-validator-reclaim-{}-{test}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn temp_file(test: &str, name: &str, content: &str) -> PathBuf {
    let path = dir(test).join(name);
    std::fs::write(&path, content).expect("write temp file");
    path
}

fn stdout_json(out: &Output) -> Json {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn kinds(ops: &Json) -> Vec<String> {
    ops.as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn reclaim(offer: &Path, known: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "plan",
        "--reclaim",
        "--known",
        known.to_str().unwrap(),
        "--offer",
        offer.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, "")
}

/// Validates and applies `ops` in order with `batch` on the framework path, the agent holding
/// the offered resources; the resources after.
fn apply_all(mut resources: Json, ops: &Json) -> Json {
    let ctx = json!({"api": "framework", "principal": "marathon",
        "framework": {"roles": ["marathon"], "capabilities": ["MULTI_ROLE"], "principal": "marathon"},
        "agent_capabilities": {"hierarchical_role": true, "reservation_refinement": true, "resize_volume": true}});
    for op in ops.as_array().unwrap() {
        // The agent has checkpointed the reservations and volumes offered.
        let mut ctx = ctx.clone();
        ctx["agent_checkpointed_resources"] = resources.clone();
        let line = json!({"resources": resources, "operation": op, "context": ctx}).to_string();
        let answer = run(&["batch"], &format!("{line}\n"));
        let answer: Json = serde_json::from_slice(&answer.stdout).unwrap();
        assert_eq!(answer["valid"], true, "{answer}");
        resources = answer["resources_after"].clone();
    }
    resources
}

fn total(resources: &Json, name: &str) -> f64 {
    resources
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == name)
        .map(|r| r["scalar"]["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn plan_reclaim_destroys_and_unreserves_a_forgotten_instance() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let offer_path = root.join("mysql-offer.json");
    let offer: Json = serde_json::from_str(&std::fs::read_to_string(&offer_path).unwrap()).unwrap();
    let state = dir("f").join("state.json");

    // A first launch whose RESERVE and CREATE were accepted.
    let out = run(
        &[
            "plan",
            "--app",
            root.join("mysql-app.json").to_str().unwrap(),
            "--offer",
            offer_path.to_str().unwrap(),
            "--principal",
            "marathon",
            "--reservation-out",
            state.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let launch = stdout_json(&out);
    let ops = Json::Array(launch.as_array().unwrap()[..2].to_vec());
    let reserved = apply_all(offer["resources"].clone(), &ops);
    let next = temp_file(
        "f",
        "next-offer.json",
        &json!({"resources": reserved, "framework_id": {"value": "marathon-fw-1"},
                "agent_id": {"value": "agent-7"}})
        .to_string(),
    );
    let reservation: Json =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let instance = reservation["instance_id"].as_str().unwrap().to_owned();

    // Known (its reservation state file's contents as the entry): nothing, exit 0.
    let known = temp_file(
        "f",
        "known.json",
        &json!({"run_specs": ["/mysql"], "instances": [reservation]}).to_string(),
    );
    let out = reclaim(&next, &known, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout_json(&out), json!([]));

    // Another framework's offer of the same resources: nothing.
    let out = reclaim(
        &next,
        &temp_file("f", "none.json", r#"{"instances": []}"#),
        &["--framework-id", "someone-else"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_json(&out), json!([]));

    // Forgotten (the framework id comes from the offer): DESTROY then UNRESERVE, which
    // give the original offer back.
    let forgotten = temp_file("f", "forgotten.json", r#"{"instances": []}"#);
    let out = reclaim(&next, &forgotten, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ops = stdout_json(&out);
    assert_eq!(kinds(&ops), ["DESTROY", "UNRESERVE"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Json = serde_json::from_str(
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("reclaim: "))
            .unwrap_or_else(|| panic!("no summary: {stderr}")),
    )
    .unwrap();
    assert_eq!(summary["reclaimed"][0]["instance_id"], instance.as_str());
    assert_eq!(summary["reclaimed"][0]["reason"], "unknown_instance");
    assert_eq!(
        summary["reclaimed"][0]["persistence_ids"],
        reservation["persistence_ids"]
    );
    let after = apply_all(reserved.clone(), &ops);
    for r in after.as_array().unwrap() {
        assert!(
            r.get("reservations").is_none()
                && r.get("reservation").is_none()
                && r.get("disk").is_none(),
            "still reserved: {r}"
        );
    }
    for name in ["cpus", "mem", "disk"] {
        assert_eq!(
            total(&after, name),
            total(&offer["resources"], name),
            "{name}"
        );
    }

    // The app was deleted: the known instance is reclaimed too.
    let deleted = temp_file(
        "f",
        "deleted.json",
        &json!({"framework_id": "marathon-fw-1", "run_specs": [], "instances": [instance]})
            .to_string(),
    );
    let out = reclaim(&next, &deleted, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(kinds(&stdout_json(&out)), ["DESTROY", "UNRESERVE"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_run_spec"));
    let _ = std::fs::remove_dir_all(dir("f"));
}

#[test]
fn plan_reclaim_exit_codes() {
    let resources = r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":1}}]"#;
    let offer = temp_file("c", "codes-offer.json", resources);
    let known = temp_file(
        "c",
        "codes-known.json",
        r#"{"framework_id": "fw", "instances": []}"#,
    );

    // A known instance that is no instance id: exit 1 with the reason, as a plan that does
    // not fit.
    let bad = temp_file(
        "c",
        "codes-bad.json",
        r#"{"framework_id": "fw", "instances": ["nope"]}"#,
    );
    let out = reclaim(&offer, &bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    let answer = stdout_json(&out);
    assert_eq!(answer["fits"], false);
    assert!(
        answer["reasons"][0].as_str().unwrap().contains("'nope'"),
        "{answer}"
    );

    // Usage and input errors: exit 2.
    let not_json = temp_file("c", "codes-garbage.json", "{");
    let wrong_shape = temp_file("c", "codes-shape.json", r#"{"instances": [1]}"#);
    let no_framework = temp_file("c", "codes-nofw.json", r#"{"instances": []}"#);
    let offer_arg = offer.to_str().unwrap();
    let known_arg = known.to_str().unwrap();
    for args in [
        vec!["plan", "--reclaim", "--offer", offer_arg],
        vec!["plan", "--known", known_arg, "--offer", offer_arg],
        vec![
            "plan",
            "--reclaim",
            "--known",
            known_arg,
            "--offer",
            offer_arg,
            "--app",
            known_arg,
        ],
        vec![
            "plan",
            "--reclaim",
            "--known",
            known_arg,
            "--offer",
            offer_arg,
            "--reservation",
            known_arg,
        ],
        vec!["plan", "--offer", offer_arg],
    ] {
        let out = run(&args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    for file in [&not_json, &wrong_shape, &no_framework] {
        let out = reclaim(&offer, file, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        assert!(out.stdout.is_empty());
    }
    let out = reclaim(&offer, &no_framework, &["--framework-id", "fw"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_json(&out), json!([]));
}
