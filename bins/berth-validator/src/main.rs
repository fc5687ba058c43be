//! `berth-validator`: validates Mesos resources the way the Mesos master does, and converts
//! between the JSON reservation formats.
//!
//! ```text
//! berth-validator check [FILE|-] [--level resource|master] [--legacy]
//! berth-validator convert [FILE|-] --to legacy|post
//! ```
//!
//! Input is a JSON array of Mesos resources (either reservation format) or the agent's
//! `--resources` text (`cpus:4;mem:4096;disk(role):100`). Without a file, `check` validates the
//! offer of the Mesos persistent-volume documentation, embedded in the binary.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use berth_resources::{Resources, codec, format, validate};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value as Json, json};

/// The offer of the Mesos persistent-volume documentation, after CREATE.
const DEFAULT_RESOURCES: &str = include_str!("default-resources.json");

#[derive(Parser, Debug)]
#[command(
    name = "berth-validator",
    version,
    about = "Validate Mesos resources and offer operations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate resources and print them (post-refinement format) with their totals.
    Check {
        /// JSON array or agent text; `-` for standard input; embedded example when omitted.
        file: Option<String>,
        /// `resource`: Mesos common validation; `master`: also the master's checks.
        #[arg(long, value_enum, default_value_t = Level::Master)]
        level: Level,
        /// Print the legacy (pre-refinement) format instead.
        #[arg(long)]
        legacy: bool,
    },
    /// Convert resources between reservation formats.
    Convert {
        /// JSON array or agent text; `-` for standard input.
        file: String,
        /// Target format.
        #[arg(long, value_enum)]
        to: Target,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Level {
    Resource,
    Master,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Target {
    Legacy,
    Post,
}

fn read_input(file: Option<&str>) -> Result<String> {
    match file {
        None => Ok(DEFAULT_RESOURCES.to_owned()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            Ok(s)
        }
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
    }
}

fn load(text: &str, level: Level) -> Result<Resources> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('[') {
        return Ok(Resources::parse(text, "*")?);
    }
    let json: Json = serde_json::from_str(text).context("input is not JSON")?;
    let mut list = codec::parse_proto_list(&json)?;
    validate::validate_list(&list)?;
    list.iter_mut().for_each(format::upgrade);
    if matches!(level, Level::Master) {
        validate::validate_master(&list)?;
    }
    Ok(Resources::from_proto_list(&list)?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check {
            file,
            level,
            legacy,
        } => {
            let resources = load(&read_input(file.as_deref())?, level)?;
            let rendered = if legacy {
                resources.to_json_legacy()?
            } else {
                resources.to_json()
            };
            let totals: serde_json::Map<String, Json> = ["cpus", "mem", "disk", "gpus"]
                .iter()
                .filter_map(|n| {
                    resources
                        .scalar(n)
                        .map(|s| ((*n).to_owned(), json!(s.as_f64())))
                })
                .collect();
            let volumes: Vec<String> = resources
                .persistent_volumes()
                .iter()
                .map(ToString::to_string)
                .collect();
            let out = json!({
                "valid": true,
                "resources": rendered,
                "totals": totals,
                "ports": resources.ports().map(|p| p.to_string()),
                "persistent_volumes": volumes,
                "summary": resources.to_string(),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Convert { file, to } => {
            let resources = load(&read_input(Some(&file))?, Level::Resource)?;
            let out = match to {
                Target::Legacy => resources.to_json_legacy()?,
                Target::Post => resources.to_json(),
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let out = json!({"valid": false, "error": format!("{e:#}")});
            println!("{out}");
            ExitCode::from(1)
        }
    }
}
