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
    // Built from a checkout: a commit of it that HEAD contains (HEAD itself unless a commit
    // was made after the build).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    if git(&["rev-parse", "HEAD"]).is_some() {
        let rev = text
            .split("(git ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap_or_else(|| panic!("{text} names no revision"));
        assert_eq!(rev.len(), 12, "{text}");
        assert!(
            git(&["merge-base", "--is-ancestor", rev, "HEAD"]).is_some(),
            "{text}: {rev} is not a commit HEAD contains"
        );
    }
}
