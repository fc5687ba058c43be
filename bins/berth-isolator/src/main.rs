//! `berth-isolator`: makes volumes real on an agent — persistent volumes, CSI volumes and
//! sandbox/host paths — per container, crash-safe. Thin over `berth-agent`.
//!
//! ```text
//! berth-isolator [--work-dir DIR] [--csi-plugin-config-dir DIR] [--resources SPEC]
//!                [--sandbox-root DIR] [--allowed-host-paths PREFIX,...] [--secret-dir DIR]
//!                [--retain-destroyed-data] [--retain-destroyed-data-for DURATION] <command>
//!   prepare --container-id ID --config FILE    prepare a container's volumes (prints the mounts as JSON)
//!   cleanup --container-id ID [--force]        undo exactly what prepare did (--force: also a
//!                                              quarantined container with an unreadable record)
//!   recover [--live ID]... [--orphan ID]...    reconcile after a crash or reboot
//!   status [--json]                            containers, volumes, mounted or not; leftovers of
//!                                              destroyed volumes (JSON: {"containers", "leftovers"})
//!   checkpoint-resources --resources FILE      replace the checkpointed resources (JSON array)
//!   apply-operation --operation FILE           apply one accepted offer operation (JSON)
//!   resources                                  the checkpointed and total resources
//!   usage [--json]                             how full each volume is, and how it was measured
//!   gc [--dry-run] [--json]                    remove leftovers of destroyed volumes, orphan volume
//!                                              directories, stray mounts, expired retained data
//!   serve --listen unix:PATH [--socket-group G] [--allow-uid UID]... [--shutdown-grace SECS] [--metrics [IP:]PORT]
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
    /// How persistent volumes' sizes are enforced: `auto` (project quotas where the
    /// filesystem has them, else du accounting), `project-quota` (required), `du`, `none`.
    #[arg(
        long = "disk-isolation",
        alias = "disk_isolation",
        global = true,
        default_value = "auto"
    )]
    disk_isolation: berth_agent::resources::quota::DiskIsolation,
    /// Project ids for volume quotas, `BEGIN-END` (Mesos: `--xfs_project_range=[5000-10000]`).
    #[arg(
        long = "project-ids",
        alias = "xfs_project_range",
        global = true,
        default_value = "5000-10000"
    )]
    project_ids: berth_agent::resources::quota::ProjectRange,
    /// A soft limit this many bytes below each volume's hard limit (0: none).
    #[arg(
        long = "quota-headroom",
        alias = "quota_headroom",
        global = true,
        default_value_t = 0
    )]
    quota_headroom: u64,
    /// Refuse to prepare a container on a persistent volume measured over its size (volumes
    /// without a project quota, found by the server's periodic `du`).
    #[arg(
        long = "enforce-disk-limits",
        alias = "enforce_disk_limits",
        global = true
    )]
    enforce_disk_limits: bool,
    /// Shared persistent volumes get a gid each from `BEGIN-END` (Mesos:
    /// `--volume_gid_range=[10000-20000]`): group-writable, setgid; prepare returns the gids
    /// the task must run with (`supplementary_gids`).
    #[arg(long = "volume-gid-range", alias = "volume_gid_range", global = true)]
    volume_gid_range: Option<berth_agent::resources::gids::GidRange>,
    /// Every container sandbox must lie under this directory.
    #[arg(long = "sandbox-root", alias = "sandbox_root", global = true)]
    sandbox_root: Option<PathBuf>,
    /// HOST_PATH volume sources must lie under one of these (comma separated; default: any).
    #[arg(
        long = "allowed-host-paths",
        alias = "allowed_host_paths",
        global = true,
        value_delimiter = ','
    )]
    allowed_host_paths: Vec<PathBuf>,
    /// Where REFERENCE secrets of SECRET volumes are read: one file per secret name
    /// (`<DIR>/<name>`, or `<DIR>/<name>/<key>`).
    #[arg(long = "secret-dir", alias = "secret_dir", global = true)]
    secret_dir: Option<PathBuf>,
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
        /// Also end the quarantine of a container whose record cannot be read: release its
        /// CSI and Docker consumers (its binds cannot be located and are not unmounted).
        #[arg(long)]
        force: bool,
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
        /// `unix:/path.sock`: created 0600 (0660 with --socket-group), a live socket refused.
        #[arg(long)]
        listen: String,
        /// The socket is 0660 with this group, and the group's members may call.
        #[arg(long = "socket-group", alias = "socket_group")]
        socket_group: Option<String>,
        /// A uid besides root that may call (repeatable or comma separated).
        #[arg(long = "allow-uid", alias = "allow_uid", value_delimiter = ',')]
        allow_uid: Vec<u32>,
        /// Seconds calls in flight may run on after SIGTERM before the server stops anyway.
        #[arg(
            long = "shutdown-grace",
            alias = "shutdown_grace",
            default_value_t = 10
        )]
        shutdown_grace: u64,
        /// Prometheus metrics (`GET /metrics`): `PORT` on loopback, or `IP:PORT`.
        #[arg(long, value_parser = berth_isolator::serve::parse_metrics)]
        metrics: Option<std::net::SocketAddr>,
        /// Seconds between measurements of the volumes' usage (metrics, `Watch`,
        /// `--enforce-disk-limits`).
        #[arg(
            long = "usage-interval",
            alias = "usage_interval",
            default_value_t = 15
        )]
        usage_interval: u64,
    },
    /// How full each volume is (persistent, CSI, Docker), and how it was measured.
    Usage {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// NodeExpandVolume of a CSI volume published on this node, after its backend grew (the
    /// plugin must advertise EXPAND_VOLUME); prints `{"capacity_bytes": N}` (0: not reported).
    ExpandVolume {
        /// The plugin (`CSIPluginInfo.type`).
        #[arg(long)]
        plugin: String,
        /// The volume id.
        #[arg(long = "volume-id", alias = "volume_id")]
        volume_id: String,
        /// The size the node must see at least, in bytes.
        #[arg(long = "required-bytes", alias = "required_bytes")]
        required_bytes: u64,
        /// The most it may grow to, in bytes (0: no limit).
        #[arg(long = "limit-bytes", alias = "limit_bytes", default_value_t = 0)]
        limit_bytes: u64,
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
    // The server runs every call on the blocking pool, driven by a multi-thread runtime; a
    // one-shot command needs one thread.
    let serving = matches!(cli.command, Command::Serve { .. });
    let built = if serving {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-isolator: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let out = rt.block_on(run(cli));
    // A call stuck in a hung filesystem past the grace period is left behind (its intent is
    // recorded): the process exits instead of waiting for it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match out {
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
        sandbox_root: cli.sandbox_root,
        allowed_host_paths: cli.allowed_host_paths,
        retain_destroyed_data_for: cli.retain_destroyed_data_for,
        lock_wait: std::time::Duration::from_secs(cli.lock_wait),
        step_hook: None,
        enforce_disk_limits: cli.enforce_disk_limits,
        secret_dir: cli.secret_dir,
        volume_gid_range: cli.volume_gid_range,
        quota: berth_agent::resources::quota::QuotaConfig {
            isolation: cli.disk_isolation,
            range: cli.project_ids,
            headroom_bytes: cli.quota_headroom,
        },
    };
    match cli.command {
        Command::Serve {
            listen,
            socket_group,
            allow_uid,
            shutdown_grace,
            metrics,
            usage_interval,
        } => {
            let options = berth_isolator::serve::ServeOptions {
                socket: berth_isolator::serve::parse_listen(&listen)?,
                socket_group,
                allow_uids: allow_uid,
                grace: std::time::Duration::from_secs(shutdown_grace),
                metrics,
                usage_interval: std::time::Duration::from_secs(usage_interval.max(1)),
            };
            let agent = Arc::new(berth_isolator::agent::open(settings).await?);
            berth_isolator::serve::run(agent, &options, || {
                eprintln!(
                    "berth-isolator: serving berth.v1.Isolator on unix:{}",
                    options.socket.display()
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
            let gids = agent.supplementary_gids(&cfg).await;
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
            print_json(&serde_json::json!({
                "container_id": container_id,
                "mounts": list,
                "supplementary_gids": gids,
            }))
        }
        Command::Cleanup {
            container_id,
            force,
        } => {
            if force {
                agent.force_cleanup(&container_id).await?;
            } else {
                agent.cleanup(&container_id).await?;
            }
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
                "kept_for_children": r.kept_for_children,
                "secrets_swept": r.secrets_swept,
                "quarantined": r.quarantined,
                "quarantine_kept": r.quarantine_kept,
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
                return print_json(&berth_isolator::agent::status_json(
                    &containers,
                    &leftovers,
                    agent.disk_isolation(),
                ));
            }
            println!("disk isolation: {}", agent.disk_isolation());
            if containers.is_empty() {
                println!("no containers");
            }
            for c in containers {
                println!("{} {}", c.container_id, c.state);
                if let Some(p) = &c.parent {
                    println!("  parent: {p}");
                }
                if !c.children.is_empty() {
                    println!("  nested containers: {}", c.children.join(", "));
                }
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
        Command::ExpandVolume {
            plugin,
            volume_id,
            required_bytes,
            limit_bytes,
        } => {
            let capacity_bytes = agent
                .expand_volume(&plugin, &volume_id, required_bytes, limit_bytes)
                .await?;
            print_json(&serde_json::json!({ "capacity_bytes": capacity_bytes }))
        }
        Command::Usage { json } => {
            let usage = agent.usage().await;
            if json {
                return print_json(&serde_json::json!({ "volumes": usage }));
            }
            if usage.is_empty() {
                println!("no volumes");
            }
            let figure = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            for u in usage {
                let id = u
                    .persistence_id
                    .as_deref()
                    .or(u.volume_id.as_deref())
                    .unwrap_or("-");
                println!(
                    "{} {} {}: used {} of {} bytes, {} inodes ({}){}{}",
                    u.kind,
                    id,
                    u.path.display(),
                    figure(u.used_bytes),
                    figure(u.limit_bytes),
                    figure(u.used_inodes),
                    u.enforcement.as_str(),
                    u.abnormal
                        .map(|m| format!("; abnormal: {m}"))
                        .unwrap_or_default(),
                    u.error.map(|e| format!("; error: {e}")).unwrap_or_default(),
                );
            }
            Ok(())
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
