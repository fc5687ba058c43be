//! The repository stands alone: no file names the reference folder that sits beside our own
//! checkouts (the project must build, run and test from a plain clone), and the conformance
//! vectors the other tiers read are in the repository, all of them.

#![allow(clippy::panic, clippy::expect_used)] // helpers outside #[test] abort on setup errors

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every file of the repository except build output and git's own store.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if name == "target" || name == ".git" || name == "node_modules" {
                continue;
            }
            files(&path, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

#[test]
fn no_file_names_the_folder_beside_the_repository() {
    // Built from parts so this file does not name it either.
    let needles = [
        format!("..{}shared", '/'),
        format!("shared{}conformance", '/'),
        format!("shared{}research", '/'),
        format!("shared{}seeds", '/'),
        format!("shared{}DESIGN", '/'),
    ];
    let mut all = Vec::new();
    files(&repo_root(), &mut all);
    assert!(
        all.len() > 100,
        "walked only {} files of {}",
        all.len(),
        repo_root().display()
    );
    let mut offenders = Vec::new();
    for path in &all {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for needle in &needles {
            if text.contains(needle.as_str()) {
                offenders.push(format!("{} names {needle}", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the repository must stand alone:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_vectors_are_in_the_repository() {
    let dir = repo_root().join("tests/conformance");
    for (file, at_least) in [("operations.json", 165), ("arithmetic.json", 83)] {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()));
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).expect("a JSON array");
        assert!(
            vectors.len() >= at_least,
            "{file}: {} vectors",
            vectors.len()
        );
        for v in &vectors {
            assert!(
                v["name"].is_string() && v["source"].is_string(),
                "{file}: {v}"
            );
        }
    }
    assert!(dir.join("README.md").is_file());
}
