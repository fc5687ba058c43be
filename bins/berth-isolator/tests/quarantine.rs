//! A quarantined container through the `berth-isolator` binary, as root in a private mount
//! namespace (issue 15 item 4): its binds stay across recoveries, `status` (text and JSON)
//! shows it `quarantined`, a plain `cleanup` of an unreadable record is refused and points at
//! `--force`, `cleanup --force` ends the quarantine; a quarantined record that can still be
//! read is cleaned up, binds and all, by a plain `cleanup`. (The plugin side — no
//! NodeUnpublish, NodeUnstage or Unmount until `--force` — is `berth-agent`'s
//! `tests/quarantine.rs`, against the fake plugins that count calls.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;
use std::process::{Command, Output};

use berth_testkit::{Ns, privileged};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");

fn run(ns: &Ns, work: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--work-dir").arg(work).args(args);
    ns.output(cmd)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth-isolator failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_quarantined_container_keeps_its_binds_until_cleanup_and_status_says_so() {
    if !privileged("a_quarantined_container_keeps_its_binds_until_cleanup_and_status_says_so") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let work = root.join("work");
    let host = root.join("host");
    std::fs::create_dir_all(&host).unwrap();
    let ns = Ns::new();
    let mut sandboxes: Vec<PathBuf> = Vec::new();
    for id in ["garbled", "readable"] {
        let sandbox = root.join(format!("sandbox-{id}"));
        std::fs::create_dir_all(&sandbox).unwrap();
        let cfg = root.join(format!("{id}.json"));
        std::fs::write(
            &cfg,
            json!({"container_id": id, "sandbox": sandbox,
                   "volumes": [{"mode": "RO", "container_path": "h",
                                "source": {"type": "HOST_PATH", "host_path": {"path": host}}}]})
            .to_string(),
        )
        .unwrap();
        let _ = ok(&run(
            &ns,
            &work,
            &[
                "prepare",
                "--container-id",
                id,
                "--config",
                cfg.to_str().unwrap(),
            ],
        ));
        assert_eq!(ns.mounts_below(&sandbox), [sandbox.join("h")]);
        sandboxes.push(sandbox);
    }
    std::fs::write(work.join("containers/garbled.json"), b"{ garbled").unwrap();
    let rec = work.join("containers/readable.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&rec).unwrap()).unwrap();
    v["schema_version"] = json!(99);
    std::fs::write(&rec, v.to_string()).unwrap();

    // Recovery after recovery, nothing of theirs goes (the command fails: the corrupt
    // records are errors of the first pass).
    let first = run(&ns, &work, &["recover"]);
    let report: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(
        report["quarantined"],
        json!(["garbled", "readable"]),
        "{report}"
    );
    for _ in 0..2 {
        let report: Value = serde_json::from_str(&ok(&run(&ns, &work, &["recover"]))).unwrap();
        assert_eq!(report["quarantined"], json!([]), "{report}");
        assert_eq!(
            report["quarantine_kept"],
            json!(["garbled", "readable"]),
            "{report}"
        );
    }
    for sb in &sandboxes {
        assert_eq!(
            ns.mounts_below(sb),
            [sb.join("h")],
            "bind of {}",
            sb.display()
        );
    }
    let status: Value = serde_json::from_str(&ok(&run(&ns, &work, &["status", "--json"]))).unwrap();
    let states: Vec<(&str, &str)> = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["container_id"].as_str().unwrap(),
                c["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("garbled", "quarantined"), ("readable", "quarantined")]
    );
    let text = ok(&run(&ns, &work, &["status"]));
    assert!(text.contains("garbled quarantined"), "{text}");
    assert!(text.contains("--force"), "{text}");

    // A readable record: a plain cleanup tears it down.
    let _ = ok(&run(&ns, &work, &["cleanup", "--container-id", "readable"]));
    assert!(ns.mounts_below(&sandboxes[1]).is_empty());
    // An unreadable one: refused, then released with --force (its binds are not located:
    // the operator unmounts them).
    let refused = run(&ns, &work, &["cleanup", "--container-id", "garbled"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("quarantined") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(ns.mounts_below(&sandboxes[0]), [sandboxes[0].join("h")]);
    let _ = ok(&run(
        &ns,
        &work,
        &["cleanup", "--container-id", "garbled", "--force"],
    ));
    let status: Value = serde_json::from_str(&ok(&run(&ns, &work, &["status", "--json"]))).unwrap();
    assert_eq!(
        berth_testkit::status_parts(&status),
        json!({"containers": [], "leftovers": []})
    );
    let report: Value = serde_json::from_str(&ok(&run(&ns, &work, &["recover"]))).unwrap();
    assert_eq!(report["quarantine_kept"], json!([]), "{report}");
}
