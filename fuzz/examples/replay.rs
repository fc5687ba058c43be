//! Runs one target on files, as the regression test does, with a panic's full backtrace:
//! `cargo run -p berth-fuzz --example replay -- TARGET FILE...`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(target) = args.next().as_deref().and_then(berth_fuzz::target) else {
        eprintln!("usage: replay TARGET FILE...");
        return ExitCode::from(2);
    };
    for file in args {
        match std::fs::read(&file) {
            Ok(data) => {
                eprintln!("{}: {file} ({} bytes)", target.name, data.len());
                berth_fuzz::run(target, &data);
            }
            Err(e) => {
                eprintln!("reading {file}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
