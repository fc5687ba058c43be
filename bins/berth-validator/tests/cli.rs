//! The validator binary, run as an operator would run it.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test helpers abort on setup errors

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;

fn run(args: &[&str], stdin: Option<&str>) -> (Output, Json) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("stdin: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out, json)
}

#[test]
fn check_on_embedded_defaults() {
    let (out, json) = run(&["check"], None);
    assert!(out.status.success());
    assert_eq!(json["valid"], Json::Bool(true));
    assert_eq!(json["totals"]["disk"], serde_json::json!(2048.0));
    // The legacy role/reservation input comes out in the post-refinement format.
    let disk = &json["resources"][3];
    assert_eq!(disk["reservations"][0]["type"], "DYNAMIC");
    assert_eq!(disk["reservations"][0]["role"], "framework-role");
    assert!(disk.get("role").is_none());
    assert_eq!(json["persistent_volumes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn check_refuses_bad_input_with_typed_errors() {
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
        (
            r#"[{"name":"disk","type":"SCALAR","scalar":{"value":1},"disk":{"persistence":{"id":"v"},"volume":{"container_path":"d","mode":"RW"}}}]"#,
            "unreserved",
        ),
        ("[not json", "not JSON"),
        ("cpus:abc", "bad scalar"),
    ];
    for (input, want) in cases {
        let (out, json) = run(&["check", "-"], Some(input));
        assert_eq!(out.status.code(), Some(1), "{input}");
        assert_eq!(json["valid"], Json::Bool(false));
        let err = json["error"].as_str().unwrap_or_default();
        assert!(
            err.contains(want),
            "{input}: {err} does not contain {want:?}"
        );
    }
}

#[test]
fn resource_level_skips_master_checks() {
    let input = r#"[{"name":"disk","type":"SCALAR","scalar":{"value":1},"disk":{"persistence":{"id":"v"},"volume":{"container_path":"d","mode":"RW"}}}]"#;
    let (out, _) = run(&["check", "-", "--level", "resource"], Some(input));
    assert!(out.status.success());
}

#[test]
fn convert_between_formats() {
    let (out, json) = run(
        &["convert", "-", "--to", "legacy"],
        Some("cpus(r1):2;mem:64"),
    );
    assert!(out.status.success());
    let roles: Vec<&str> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["role"].as_str())
        .collect();
    assert_eq!(roles, ["r1", "*"]);

    let refined = r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":1},"reservations":[
        {"type":"STATIC","role":"a"},{"type":"DYNAMIC","role":"a/b","principal":"p"}]}]"#;
    let (out, json) = run(&["convert", "-", "--to", "legacy"], Some(refined));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Cannot downgrade")
    );
}
