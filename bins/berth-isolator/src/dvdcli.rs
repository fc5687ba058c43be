//! berth as a drop-in `dvdcli`: Mesos's `docker/volume` isolator and mesos-module-dvdi run a
//! program named `dvdcli` (found on `PATH`, or at the module's configured path) and read what it
//! prints. Installing berth (`cargo install --path bins/berth-isolator`) installs one, and
//! `berth-isolator` itself behaves as it when invoked under the name `dvdcli` (a symlink).
//! `berth-isolator dvdcli ARGS...` is the same command under berth's own flags.
//!
//! The command line, the output and the exit codes are dvdcli's (`docs/dvdcli.md` lists the
//! argv shapes each caller passes and what it parses): `mount` prints the host mount point and a
//! newline on stdout and nothing else; errors go to stderr only, with exit status 1.
//!
//! A program invoked as `dvdcli` has no berth flags: it takes its work directory from
//! `BERTH_WORK_DIR` (default `/var/lib/berth`; state in `<work dir>/dvdcli`) and Docker's
//! plugin discovery directories from `BERTH_DOCKER_PLUGIN_DIRS` (comma separated; default
//! Docker's `/run/docker/plugins`, `/etc/docker/plugins`, `/usr/lib/docker/plugins`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};

use crate::agent::{Settings, docker_manager};

/// The work directory when `BERTH_WORK_DIR` is unset.
pub const DEFAULT_WORK_DIR: &str = "/var/lib/berth";

/// Whether a program path names dvdcli (`dvdcli`, `/usr/local/bin/dvdcli`): the multicall
/// test on `argv[0]`.
#[must_use]
pub fn invoked_as_dvdcli(argv0: &OsString) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "dvdcli")
}

/// Settings of a program invoked as `dvdcli`, from the environment (module docs).
#[must_use]
pub fn settings_from_env() -> Settings {
    let work_dir = std::env::var_os("BERTH_WORK_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_WORK_DIR), PathBuf::from);
    let docker_plugin_dirs = std::env::var("BERTH_DOCKER_PLUGIN_DIRS")
        .map(|v| {
            v.split(',')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    Settings {
        work_dir,
        docker_plugin_dirs,
        ..Settings::default()
    }
}

/// Runs one dvdcli command with berth's Docker volume bridge; returns the exit status.
///
/// Not under the agent's work-dir lock (Mesos runs dvdcli while the agent's own isolator
/// works); invocations are serialized by a lock of their own in `<work dir>/dvdcli`.
///
/// # Errors
/// The state directory or its lock cannot be made; the plugin registry cannot be set up.
pub async fn run(settings: &Settings, args: &[String]) -> Result<i32> {
    let state = settings.work_dir.join("dvdcli");
    std::fs::create_dir_all(&state)
        .map_err(|e| anyhow!("create the state directory {}: {e}", state.display()))?;
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join(".lock"))
        .map_err(|e| anyhow!("open {}: {e}", state.join(".lock").display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("lock {}: {e}", state.display()))?;
    let manager = docker_manager(
        settings,
        &state,
        // dvdcli calls carry no consumer: one Mount per volume for this agent, with the
        // agent's `ID` (its host name), as the compatibility mode of the bridge.
        berth_dvdi::MountMode::PerAgent {
            agent_id: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "berth".to_owned()),
        },
    )?;
    Ok(berth_dvdi::cli::dvdcli(
        args,
        &manager,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
    .await)
}

/// The whole program invoked as `dvdcli`: logging to stderr (warnings only, or `RUST_LOG`),
/// a current-thread runtime, [`run`] with [`settings_from_env`]. `args` exclude the program
/// name.
#[must_use]
pub fn main(args: &[String]) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&settings_from_env(), args)) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
