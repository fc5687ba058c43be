// The build script of both binaries (included by their `build.rs`): sets `BERTH_VERSION` to
// the crate version and, when built from a git checkout, the revision — `0.1.0 (git
// 1a2b3c4d5e6f)` — for `--version`. Runs `git` by its fixed name with fixed arguments (no
// shell); without git or outside a checkout the version stands alone.

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let dir = Path::new(&dir);
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let rev = git(dir, &["rev-parse", "--short=12", "HEAD"]);
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the branch's ref (a commit).
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", path],
        ) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &branch],
        )
    {
        println!("cargo:rerun-if-changed={p}");
    }
    match rev {
        Some(rev) => println!("cargo:rustc-env=BERTH_VERSION={version} (git {rev})"),
        None => println!("cargo:rustc-env=BERTH_VERSION={version}"),
    }
}
