//! `berth-validator --version` names the crate version and, built from a checkout, the git
//! revision HEAD names.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::process::Command;

#[test]
fn version_names_the_crate_and_the_revision() {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("berth-validator {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if let Ok(head) = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&repo)
        .output()
        && head.status.success()
    {
        let rev = String::from_utf8(head.stdout).unwrap();
        assert!(text.contains(&format!("(git {})", rev.trim())), "{text}");
    }
}
