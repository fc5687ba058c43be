//! `berth-validator`: validates and applies Mesos offer operations the way the Mesos master
//! does, for schedulers in any language. Thin over `berth-offers` and `berth-resources`.
//!
//! ```text
//! berth-validator check [--resources FILE] [--operation FILE] [--context FILE] [--acls FILE]
//! berth-validator batch [--input FILE] [--output FILE]
//! berth-validator convert --message resource|resources|operation --from json|pb|pb64 --to json|pb|pb64 [FILE]
//! berth-validator serve --listen unix:PATH|tcp:IP:PORT [--tls-cert PEM --tls-key PEM [--client-ca PEM]]
//!     [--insecure-tcp] [--credentials FILE] [--uid-principals FILE] [--socket-group NAME]
//!     [--acls FILE] [--allow-request-acls] [--max-request-bytes N] [--max-resources N]
//!     [--call-timeout-ms N] [--max-concurrent-calls N] [--threads N]
//! ```
//!
//! Without arguments `check` runs the example of the Mesos persistent-volume documentation
//! (an offer of 2048 MB of dynamically reserved disk and a CREATE of a volume on it), embedded
//! in the binary. Exit codes: 0 valid, 1 invalid, 2 usage or I/O error; for `batch`, 1 when a
//! line was not a request (not UTF-8, not JSON or not an object). `serve` runs the
//! `berth.v1.Validator` gRPC service (`berth_validator::serve`) until SIGINT or SIGTERM.

mod cli;
mod convert;
mod plan;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth-validator: {e:#}");
            ExitCode::from(2)
        }
    }
}
