//! `berth-isolator`: makes volumes real on an agent — persistent volumes, CSI volumes and
//! sandbox/host paths — per container, crash-safe. Thin over `berth-agent`.
//!
//! ```text
//! berth-isolator [--work-dir DIR] [--csi-plugin-config-dir DIR] [--resources SPEC]
//!                [--retain-destroyed-data] [--retain-destroyed-data-for DURATION] <command>
//!   prepare --container-id ID --config FILE    prepare a container's volumes (prints the mounts as JSON)
//!   cleanup --container-id ID                  undo exactly what prepare did
//!   recover [--live ID]... [--orphan ID]...    reconcile after a crash or reboot
//!   status [--json]                            containers, volumes, mounted or not; leftovers of
//!                                              destroyed volumes (JSON: {"containers", "leftovers"})
//!   checkpoint-resources --resources FILE      replace the checkpointed resources (JSON array)
//!   apply-operation --operation FILE           apply one accepted offer operation (JSON)
//!   resources                                  the checkpointed and total resources
//!   gc [--dry-run] [--json]                    remove leftovers of destroyed volumes, orphan volume
//!                                              directories, stray mounts, expired retained data
//!   serve --listen unix:PATH [--metrics IP:PORT]
//!   demo                                       a persistent volume across two containers
//! ```
//!
//! Flags are also accepted under the Mesos agent's spellings (`--work_dir`,
//! `--csi_plugin_config_dir`). Exit codes: 0 success, 1 the operation failed, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use berth_isolator::agent::{Agent, Settings, read_config};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "berth-isolator",
    version = env!("BERTH_VERSION"),
    about = "berth's agent-side volume isolator"
)]
struct Cli {
    /// The agent work directory (state, persistent volumes of ROOT disks).
    #[arg(
        long = "work-dir",
        alias = "work_dir",
        global = true,
        default_value = "/var/lib/berth"
    )]
    work_dir: PathBuf,
    /// Directory of CSIPluginInfo JSON files.
    #[arg(
        long = "csi-plugin-config-dir",
        alias = "csi_plugin_config_dir",
        global = true
    )]
    csi_plugin_config_dir: Option<PathBuf>,
    /// Where managed CSI plugins get their sockets (default <work-dir>/csi/sockets).
    #[arg(long = "csi-socket-dir", alias = "csi_socket_dir", global = true)]
    csi_socket_dir: Option<PathBuf>,
    /// Docker volume plugin discovery directories (comma separated).
    #[arg(
        long = "docker-plugin-dirs",
        alias = "docker_plugin_dirs",
        global = true,
        value_delimiter = ','
    )]
    docker_plugin_dirs: Vec<PathBuf>,
    /// The agent's configured resources (Mesos agent syntax, e.g. `cpus:4;mem:4096;disk(db):10000`, or a JSON array).
    /// (Before the subcommand: `checkpoint-resources` has a `--resources FILE` of its own.)
    #[arg(long)]
    resources: Option<String>,
    /// DESTROY keeps the volume's data instead of deleting it.
    #[arg(
        long = "retain-destroyed-data",
        alias = "retain_destroyed_data",
        global = true
    )]
    retain_destroyed_data: bool,
    /// Retained destroyed data older than this (`7d`, `12h`, `30m`, `3600s`) is removed by
    /// `gc` and by `serve`'s retry loop.
    #[arg(
        long = "retain-destroyed-data-for",
        alias = "retain_destroyed_data_for",
        global = true,
        value_name = "DURATION",
        value_parser = parse_duration
    )]
    retain_destroyed_data_for: Option<std::time::Duration>,
    /// Seconds to wait for the work dir's lock held by another berth-isolator.
    #[arg(long = "lock-wait", global = true, default_value_t = 10)]
    lock_wait: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepares a container's volumes; prints the mounts as JSON.
    Prepare {
        /// The container id.
        #[arg(long = "container-id", alias = "container_id")]
        container_id: String,
        /// The container config (JSON).
        #[arg(long)]
        config: PathBuf,
    },
    /// Undoes exactly what prepare did.
    Cleanup {
        /// The container id.
        #[arg(long = "container-id", alias = "container_id")]
        container_id: String,
    },
    /// Reconciles the records with the running containers.
    Recover {
        /// A container that is still running (repeatable).
        #[arg(long)]
        live: Vec<String>,
        /// A known orphan, left alone until its cleanup (repeatable).
        #[arg(long)]
        orphan: Vec<String>,
    },
    /// Containers and their volumes.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Replaces the checkpointed resources (a JSON array of Mesos resources).
    CheckpointResources {
        /// The file.
        #[arg(long = "resources", id = "checkpoint_file")]
        file: PathBuf,
    },
    /// Applies one accepted offer operation (Mesos `Offer.Operation` JSON).
    ApplyOperation {
        /// The file.
        #[arg(long)]
        operation: PathBuf,
    },
    /// Prints the checkpointed and total resources.
    Resources,
    /// Removes what no checkpoint needs: leftovers of destroyed volumes (data whose removal
    /// failed), volume directories no checkpoint names (orphans), stray mounts under the
    /// volume areas, and retained destroyed data older than --retain-destroyed-data-for.
    Gc {
        /// List only; change nothing.
        #[arg(long = "dry-run", alias = "dry_run")]
        dry_run: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Serves `berth.v1.Isolator` over gRPC.
    Serve {
        /// `unix:/path.sock`.
        #[arg(long)]
        listen: String,
        /// `IP:PORT` for Prometheus metrics (`GET /metrics`).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Shows a persistent volume surviving two containers (needs root; uses a temporary work
    /// dir in a private mount namespace).
    Demo,
    /// dvdcli's command line (`mount|unmount|path|create|remove|get|list` with
    /// `--volumedriver`, `--volumename`, `--volumeopts`, `--explicitcreate`), so Mesos's
    /// docker/volume isolator can run berth in place of dvdcli. State: `<work-dir>/dvdcli`.
    #[command(disable_help_flag = true)]
    Dvdcli {
        /// dvdcli's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Multicall: under the name `dvdcli` (a symlink to this binary), behave as dvdcli.
    let mut argv = std::env::args_os();
    if argv
        .next()
        .is_some_and(|a| berth_isolator::dvdcli::invoked_as_dvdcli(&a))
    {
        let args: Vec<String> = argv.map(|a| a.to_string_lossy().into_owned()).collect();
        return berth_isolator::dvdcli::main(&args);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    if matches!(cli.command, Command::Demo) {
        return match berth_isolator::demo::run(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berth-isolator demo: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-isolator: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-isolator: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    berth_agent::resources::parse_duration(s).map_err(|e| e.to_string())
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let settings = Settings {
        work_dir: cli.work_dir,
        csi_plugin_config_dir: cli.csi_plugin_config_dir,
        csi_socket_dir: cli.csi_socket_dir,
        docker_plugin_dirs: cli.docker_plugin_dirs,
        resources: cli.resources,
        retain_destroyed_data: cli.retain_destroyed_data,
        retain_destroyed_data_for: cli.retain_destroyed_data_for,
        lock_wait: std::time::Duration::from_secs(cli.lock_wait),
        step_hook: None,
    };
    match cli.command {
        Command::Serve { listen, metrics } => {
            let socket = berth_isolator::serve::parse_listen(&listen)?;
            let agent = Arc::new(berth_isolator::agent::open(settings).await?);
            berth_isolator::serve::run(agent, &socket, metrics, || {
                eprintln!(
                    "berth-isolator: serving berth.v1.Isolator on unix:{}",
                    socket.display()
                );
            })
            .await
        }
        Command::Dvdcli { args } => {
            let code = berth_isolator::dvdcli::run(&settings, &args).await?;
            if code == 0 {
                Ok(())
            } else {
                std::process::exit(code)
            }
        }
        other => {
            let agent = berth_isolator::agent::open(settings).await?;
            let out = command(&agent, other).await;
            agent.shutdown().await;
            out
        }
    }
}

async fn command(agent: &Agent, command: Command) -> Result<()> {
    match command {
        Command::Prepare {
            container_id,
            config,
        } => {
            let cfg = read_config(&config, &container_id)?;
            let mounts = agent.prepare(&cfg).await?;
            let list: Vec<serde_json::Value> = mounts
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "volume": m.name,
                        "target": m.target,
                        "source": m.source,
                        "read_only": m.read_only,
                    })
                })
                .collect();
            print_json(&serde_json::json!({"container_id": container_id, "mounts": list}))
        }
        Command::Cleanup { container_id } => {
            agent.cleanup(&container_id).await?;
            println!("cleaned up {container_id}");
            Ok(())
        }
        Command::Recover { live, orphan } => {
            let r = agent.recover(&live, &orphan).await?;
            let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
            print_json(&serde_json::json!({
                "kept": r.kept,
                "incomplete": r.incomplete,
                "orphans_kept": r.orphans_kept,
                "cleaned": r.cleaned,
                "quarantined": r.quarantined,
                "csi_records": r.csi_records,
                "errors": errors,
            }))?;
            if errors.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("recovery left {} error(s)", errors.len())
            }
        }
        Command::Status { json } => {
            let containers = agent.isolator().status()?;
            let leftovers = agent.leftovers().await?;
            if json {
                return print_json(&berth_isolator::agent::status_json(&containers, &leftovers));
            }
            if containers.is_empty() {
                println!("no containers");
            }
            for c in containers {
                println!("{} {}", c.container_id, c.state);
                if let Some(e) = &c.last_error {
                    println!("  last error: {e}");
                }
                for v in c.volumes {
                    println!(
                        "  {} -> {} ({}{}; consumers: {})",
                        v.name,
                        v.target
                            .map_or_else(|| "-".to_owned(), |t| t.display().to_string()),
                        if v.mounted { "mounted" } else { "not mounted" },
                        if v.read_only { ", ro" } else { "" },
                        v.consumers.join(", ")
                    );
                }
            }
            if !leftovers.is_empty() {
                println!(
                    "leftovers of destroyed volumes ({}; retried by serve, removed by gc):",
                    leftovers.len()
                );
                print_leftovers(&leftovers);
            }
            Ok(())
        }
        Command::Gc { dry_run, json } => {
            let opts = berth_agent::resources::GcOptions {
                dry_run,
                retain_destroyed_data_for: agent.settings().retain_destroyed_data_for,
                orphans_and_mounts: true,
                backoff: None,
            };
            let report = agent.gc(&opts).await?;
            if json {
                print_json(&serde_json::to_value(&report)?)?;
            } else {
                print_gc(&report);
            }
            if report.failed.is_empty() {
                Ok(())
            } else {
                anyhow::bail!(
                    "gc could not remove {} entr{} (see above)",
                    report.failed.len(),
                    if report.failed.len() == 1 { "y" } else { "ies" }
                )
            }
        }
        Command::CheckpointResources { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let list = berth_resources::json::from_json_str_list(&text)
                .with_context(|| format!("resources {}", file.display()))?;
            let out = agent.checkpoint_resources(list).await?;
            print_json(&berth_isolator::agent::resources_json(&out))
        }
        Command::ApplyOperation { operation } => {
            let text = std::fs::read_to_string(&operation)
                .with_context(|| format!("read {}", operation.display()))?;
            let op = berth_resources::json::from_json_str(&text)
                .with_context(|| format!("operation {}", operation.display()))?;
            let out = agent.apply_operation(op).await?;
            print_json(&berth_isolator::agent::resources_json(&out))
        }
        Command::Resources => {
            let out = agent.resources().await;
            print_json(&berth_isolator::agent::resources_json(&out))
        }
        Command::Serve { .. } | Command::Demo | Command::Dvdcli { .. } => {
            anyhow::bail!("internal: serve and demo are dispatched before this point")
        }
    }
}

fn print_leftovers(leftovers: &[berth_agent::resources::Leftover]) {
    for l in leftovers {
        println!(
            "  {} (volume {}, {}, {} failed attempt{}{})",
            l.path.display(),
            l.volume.display(),
            berth_isolator::agent::origin(l.origin),
            l.attempts,
            if l.attempts == 1 { "" } else { "s" },
            l.last_error
                .as_ref()
                .map_or_else(String::new, |e| format!("; last error: {e}"))
        );
    }
}

fn print_gc(r: &berth_agent::resources::GcReport) {
    if r.dry_run {
        println!("dry run: nothing changed");
    }
    println!("leftovers: {}", r.leftovers.len());
    print_leftovers(&r.leftovers);
    println!("orphan volume directories: {}", r.orphans.len());
    for p in &r.orphans {
        println!("  {}", p.display());
    }
    println!("expired retained data: {}", r.expired.len());
    for p in &r.expired {
        println!("  {}", p.display());
    }
    println!("stray mounts: {}", r.stray_mounts.len());
    for m in &r.stray_mounts {
        println!("  {} ({})", m.mount_point.display(), m.action);
    }
    if !r.dry_run {
        println!("removed: {}", r.removed.len());
        for p in &r.removed {
            println!("  {}", p.display());
        }
        for f in &r.failed {
            println!("failed: {}: {}", f.path.display(), f.error);
        }
        println!("leftovers remaining: {}", r.remaining.len());
    }
}
