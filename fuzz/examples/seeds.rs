//! Writes every target's seeds into `<dir>/<target>/seed-<n>` (default dir: `fuzz/corpus`), the
//! starting corpus of a `cargo fuzz run`. `scripts/fuzz.sh` runs it first.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    for target in berth_fuzz::TARGETS {
        let out = dir.join(target.name);
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("creating {}: {e}", out.display());
            return ExitCode::from(2);
        }
        let seeds = (target.seeds)();
        for (i, seed) in seeds.iter().enumerate() {
            let path = out.join(format!("seed-{i:04}"));
            if let Err(e) = std::fs::write(&path, seed) {
                eprintln!("writing {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
        println!(
            "{}: {} seeds in {}",
            target.name,
            seeds.len(),
            out.display()
        );
    }
    ExitCode::SUCCESS
}
