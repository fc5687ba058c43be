//! Managed-plugin supervision: berth starts a managed CSI plugin's command itself, waits for
//! its socket, restarts it with capped exponential backoff when it exits, and stops it
//! (SIGTERM, then SIGKILL after a grace period) on shutdown or drop.
//!
//! The command comes only from the operator's `CSIPluginInfo` file (the `NODE_SERVICE`
//! container's `CommandInfo`), never from a task. berth never runs a shell:
//!
//! - `shell` true (the default): `value` is split into words by [`split_words`] (single and
//!   double quotes and backslash escapes respected) and only `$VAR` / `${VAR}` naming
//!   `CSI_ENDPOINT` or a variable of the plugin's own `environment` are expanded; any other
//!   `$` text is kept literally. The first word is the executable (looked up in `PATH` when it
//!   has no `/`).
//! - `shell` false: `value` is the executable and `arguments` is the argv (`arguments[0]` is
//!   `argv[0]`, as with `execvp`), without any expansion.
//!
//! The child inherits berth's environment, overlaid with the plugin's `environment` and
//! `CSI_ENDPOINT=unix://<socket>`; stdin is `/dev/null`, stdout and stderr are berth's. It
//! runs in its own process group; signals go to the group. Any file left at the socket path
//! (`<socket_dir>/<type>-<name>.sock`, owned by berth) is removed before each start and after
//! the plugin is stopped.
//! `uris`, `user` and secret-typed environment variables are refused with
//! [`SupervisorError::Command`] (berth fetches nothing and switches no user).
//!
//! The library creates no runtime: [`PluginSupervisor::start`] is an async fn and the monitor
//! task is spawned on the caller's tokio runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use berth_resources::proto::environment::variable::Type as VariableType;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{PluginConfig, PluginKind};

/// The longest socket path a `sockaddr_un` holds (108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why a managed plugin could not be started or made ready.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The plugin is configured with `endpoints`, not `containers`.
    #[error("plugin {plugin}: not a managed plugin")]
    NotManaged {
        /// Plugin type.
        plugin: String,
    },
    /// The `CommandInfo` cannot be turned into an argv.
    #[error("plugin {plugin}: bad command: {reason}")]
    Command {
        /// Plugin type.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// The socket path would not fit in a `sockaddr_un`.
    #[error("plugin {plugin}: socket path {path} is longer than {MAX_SOCKET_PATH} bytes")]
    SocketPath {
        /// Plugin type.
        plugin: String,
        /// The path.
        path: PathBuf,
    },
    /// Preparing the socket directory or removing a stale socket failed.
    #[error("plugin {plugin}: {step} {path}: {source}")]
    Io {
        /// Plugin type.
        plugin: String,
        /// The step, e.g. `create socket dir`.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The executable could not be started (missing, not executable, ...).
    #[error("plugin {plugin}: cannot start {program:?}: {source}")]
    Spawn {
        /// Plugin type.
        plugin: String,
        /// The executable as configured.
        program: String,
        /// The error from `execvp`/`fork`.
        source: std::io::Error,
    },
    /// The plugin exited before its socket accepted a connection.
    #[error("plugin {plugin}: exited before its socket was ready: {status}")]
    Exited {
        /// Plugin type.
        plugin: String,
        /// The exit status, as text.
        status: String,
    },
    /// The socket did not accept a connection within the readiness timeout.
    #[error("plugin {plugin}: socket {socket} not ready after {timeout:?}")]
    NotReady {
        /// Plugin type.
        plugin: String,
        /// The socket path.
        socket: PathBuf,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The supervisor was shut down while waiting.
    #[error("plugin {plugin}: supervisor stopped")]
    Stopped {
        /// Plugin type.
        plugin: String,
    },
}

/// Why [`split_words`] refused a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A `'` or `"` is not closed.
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    /// The line ends with a lone backslash.
    #[error("trailing backslash")]
    TrailingBackslash,
    /// A `${` has no closing `}`.
    #[error("unterminated ${{")]
    UnterminatedBrace,
}

/// Timing knobs of a [`PluginSupervisor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupervisorOptions {
    /// How long a (re)started plugin has to accept a connection on its socket.
    pub ready_timeout: Duration,
    /// How often the socket is tried while waiting.
    pub ready_poll: Duration,
    /// The first restart delay; doubled after each consecutive failure.
    pub initial_backoff: Duration,
    /// The cap of the restart delay.
    pub max_backoff: Duration,
    /// A plugin that stayed up this long resets the backoff to `initial_backoff`.
    pub reset_after: Duration,
    /// Time between SIGTERM and SIGKILL when stopping.
    pub stop_grace: Duration,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(30),
            ready_poll: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
        }
    }
}

/// What the supervised plugin is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginState {
    /// Started, socket not ready yet.
    Starting,
    /// Running and its socket accepts connections.
    Ready,
    /// Exited or failed to start; the next attempt comes after `delay`.
    BackingOff {
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// Stopped by shutdown or drop; no further restarts.
    Stopped,
}

/// A snapshot of a supervised plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    /// The current state.
    pub state: PluginState,
    /// The pid of the running child, if any.
    pub pid: Option<u32>,
    /// How many times the plugin was restarted (attempts after the first start).
    pub restarts: u32,
    /// Failed attempts since the plugin was last ready.
    pub consecutive_failures: u32,
    /// The last exit status, as text.
    pub last_exit: Option<String>,
    /// The last start or readiness error, as text.
    pub last_error: Option<String>,
}

/// The resolved command of a managed plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// The executable (looked up in `PATH` when it has no `/`).
    pub program: String,
    /// `argv[0]`, when it differs from `program` (`shell: false` with `arguments`).
    pub arg0: Option<String>,
    /// `argv[1..]`.
    pub args: Vec<String>,
    /// Variables added to the inherited environment (including `CSI_ENDPOINT`).
    pub env: BTreeMap<String, String>,
}

/// Splits `line` into words without a shell: blanks separate words; `'...'` is literal;
/// `"..."` keeps blanks and expands variables, `\` escapes `"`, `\`, `$` inside it; outside
/// quotes `\` escapes any character. `$NAME` and `${NAME}` are replaced when `vars` has
/// `NAME`, otherwise kept literally. An expansion never splits a word.
///
/// # Errors
/// [`SplitError`] for unterminated quotes or `${`, or a trailing backslash.
pub fn split_words(line: &str, vars: &BTreeMap<String, String>) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err(SplitError::UnterminatedQuote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$')) => cur.push(ch),
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err(SplitError::UnterminatedQuote('"')),
                        },
                        Some('$') => expand(&mut chars, vars, &mut cur)?,
                        Some(ch) => cur.push(ch),
                        None => return Err(SplitError::UnterminatedQuote('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(ch) => cur.push(ch),
                    None => return Err(SplitError::TrailingBackslash),
                }
            }
            '$' => {
                in_word = true;
                expand(&mut chars, vars, &mut cur)?;
            }
            ch => {
                in_word = true;
                cur.push(ch);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Expands the variable after a `$` (already consumed) into `out`.
fn expand(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    vars: &BTreeMap<String, String>,
    out: &mut String,
) -> Result<(), SplitError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut name = String::new();
        loop {
            match chars.next() {
                Some('}') => break,
                Some(ch) => name.push(ch),
                None => return Err(SplitError::UnterminatedBrace),
            }
        }
        match vars.get(&name) {
            Some(v) => out.push_str(v),
            None => {
                out.push_str("${");
                out.push_str(&name);
                out.push('}');
            }
        }
    } else {
        let mut name = String::new();
        while let Some(&ch) = chars.peek() {
            if !is_name(ch) {
                break;
            }
            name.push(ch);
            chars.next();
        }
        match vars.get(&name) {
            Some(v) => out.push_str(v),
            None => {
                out.push('$');
                out.push_str(&name);
            }
        }
    }
    Ok(())
}

/// The socket path berth gives a managed plugin: `<socket_dir>/<type>-<name>.sock`.
#[must_use]
pub fn socket_path(plugin: &PluginConfig, socket_dir: &Path) -> PathBuf {
    socket_dir.join(format!("{}-{}.sock", plugin.plugin_type, plugin.name))
}

/// Resolves a managed plugin's command into a [`LaunchSpec`] with `CSI_ENDPOINT=endpoint`.
///
/// # Errors
/// [`SupervisorError::NotManaged`] for an unmanaged plugin, [`SupervisorError::Command`]
/// for an empty or unsplittable command, `uris`, `user` or secret environment variables.
pub fn launch_spec(plugin: &PluginConfig, endpoint: &str) -> Result<LaunchSpec, SupervisorError> {
    let name = &plugin.plugin_type;
    let bad = |reason: &str| SupervisorError::Command {
        plugin: name.clone(),
        reason: reason.to_owned(),
    };
    let PluginKind::Managed { container } = &plugin.kind else {
        return Err(SupervisorError::NotManaged {
            plugin: name.clone(),
        });
    };
    let command = container
        .command
        .as_ref()
        .ok_or_else(|| bad("no command"))?;
    if !command.uris.is_empty() {
        return Err(bad("uris are not supported (berth fetches nothing)"));
    }
    if command.user.is_some() {
        return Err(bad("user is not supported"));
    }
    let mut env = BTreeMap::new();
    for var in command.environment.iter().flat_map(|e| e.variables.iter()) {
        if var.r#type() == VariableType::Secret || var.secret.is_some() {
            return Err(bad(&format!(
                "environment variable {:?}: secret variables are not supported",
                var.name
            )));
        }
        if var.name.is_empty() || var.name.contains(['=', '\0']) {
            return Err(bad(&format!(
                "invalid environment variable name {:?}",
                var.name
            )));
        }
        env.insert(var.name.clone(), var.value.clone().unwrap_or_default());
    }
    env.insert("CSI_ENDPOINT".to_owned(), endpoint.to_owned());
    let value = command.value.as_deref().unwrap_or_default();
    if command.shell() {
        let words = split_words(value, &env).map_err(|e| bad(&e.to_string()))?;
        let mut words = words.into_iter();
        let program = words.next().filter(|p| !p.is_empty());
        let program = program.ok_or_else(|| bad("empty command value"))?;
        Ok(LaunchSpec {
            program,
            arg0: None,
            args: words.collect(),
            env,
        })
    } else {
        if value.is_empty() {
            return Err(bad("empty command value"));
        }
        let mut args = command.arguments.iter().cloned();
        let arg0 = args.next();
        Ok(LaunchSpec {
            program: value.to_owned(),
            arg0,
            args: args.collect(),
            env,
        })
    }
}

/// Shared between the handle and the monitor task.
#[derive(Debug)]
struct Ctx {
    plugin: String,
    socket: PathBuf,
    spec: LaunchSpec,
    opts: SupervisorOptions,
    status: watch::Sender<PluginStatus>,
}

/// Supervises one managed plugin. Dropping it (or [`PluginSupervisor::shutdown`]) stops the
/// plugin: the monitor task sends SIGTERM to its process group, then SIGKILL after
/// [`SupervisorOptions::stop_grace`]. If the runtime itself goes away first, the child is
/// killed on drop.
#[derive(Debug)]
pub struct PluginSupervisor {
    ctx: Arc<Ctx>,
    stop: Option<watch::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PluginSupervisor {
    /// Starts the managed `plugin` with its socket in `socket_dir` (created if missing) and
    /// waits until the socket accepts a connection; then keeps it running in a task on the
    /// caller's runtime.
    ///
    /// # Errors
    /// Every [`SupervisorError`] except `Stopped`; on error no process is left running.
    pub async fn start(
        plugin: &PluginConfig,
        socket_dir: &Path,
        opts: SupervisorOptions,
    ) -> Result<Self, SupervisorError> {
        let name = plugin.plugin_type.clone();
        let socket = socket_path(plugin, socket_dir);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SupervisorError::SocketPath {
                plugin: name,
                path: socket,
            });
        }
        let endpoint = format!("unix://{}", socket.display());
        let spec = launch_spec(plugin, &endpoint)?;
        std::fs::create_dir_all(socket_dir).map_err(|source| SupervisorError::Io {
            plugin: name.clone(),
            step: "create socket dir",
            path: socket_dir.to_owned(),
            source,
        })?;
        let (status, _) = watch::channel(PluginStatus {
            state: PluginState::Starting,
            pid: None,
            restarts: 0,
            consecutive_failures: 0,
            last_exit: None,
            last_error: None,
        });
        let ctx = Arc::new(Ctx {
            plugin: name,
            socket,
            spec,
            opts,
            status,
        });
        let (stop_tx, mut stop_rx) = watch::channel(());
        let child = launch(&ctx, &mut stop_rx).await?;
        let task = tokio::spawn(monitor(Arc::clone(&ctx), child, stop_rx));
        Ok(Self {
            ctx,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The plugin type.
    #[must_use]
    pub fn plugin(&self) -> &str {
        &self.ctx.plugin
    }

    /// The socket path the plugin serves on.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.ctx.socket
    }

    /// `unix://<socket>`, the value of the plugin's `CSI_ENDPOINT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.ctx.socket.display())
    }

    /// The resolved command.
    #[must_use]
    pub fn launch_spec(&self) -> &LaunchSpec {
        &self.ctx.spec
    }

    /// A snapshot of the plugin's state.
    #[must_use]
    pub fn status(&self) -> PluginStatus {
        self.ctx.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<PluginStatus> {
        self.ctx.status.subscribe()
    }

    /// Waits until the status satisfies `pred`, at most `timeout`.
    ///
    /// # Errors
    /// [`SupervisorError::NotReady`] on timeout, [`SupervisorError::Stopped`] when the plugin
    /// is stopped before `pred` holds.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&PluginStatus) -> bool,
    ) -> Result<PluginStatus, SupervisorError> {
        let mut rx = self.subscribe();
        let fut = async {
            loop {
                {
                    let s = rx.borrow_and_update();
                    if pred(&s) {
                        return Ok(s.clone());
                    }
                    if s.state == PluginState::Stopped {
                        return Err(self.stopped());
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(self.stopped());
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(SupervisorError::NotReady {
                    plugin: self.ctx.plugin.clone(),
                    socket: self.ctx.socket.clone(),
                    timeout,
                })
            })
    }

    fn stopped(&self) -> SupervisorError {
        SupervisorError::Stopped {
            plugin: self.ctx.plugin.clone(),
        }
    }

    /// Stops the plugin (SIGTERM, SIGKILL after the grace period) and waits for it to exit.
    pub async fn shutdown(mut self) {
        self.stop.take();
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(plugin = %self.ctx.plugin, error = %e, "CSI plugin monitor task failed");
        }
    }
}

fn update(ctx: &Ctx, f: impl FnOnce(&mut PluginStatus)) {
    ctx.status.send_modify(f);
}

/// Removes a stale socket left by a previous run.
fn remove_stale_socket(ctx: &Ctx) -> Result<(), SupervisorError> {
    match std::fs::remove_file(&ctx.socket) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SupervisorError::Io {
            plugin: ctx.plugin.clone(),
            step: "remove stale socket",
            path: ctx.socket.clone(),
            source,
        }),
    }
}

/// Spawns the plugin and waits for its socket; on any failure nothing is left running.
async fn launch(ctx: &Ctx, stop: &mut watch::Receiver<()>) -> Result<Child, SupervisorError> {
    remove_stale_socket(ctx)?;
    let spec = &ctx.spec;
    let mut cmd = Command::new(&spec.program);
    if let Some(arg0) = &spec.arg0 {
        cmd.arg0(arg0);
    }
    cmd.args(&spec.args)
        .envs(&spec.env)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| SupervisorError::Spawn {
        plugin: ctx.plugin.clone(),
        program: spec.program.clone(),
        source,
    })?;
    update(ctx, |s| {
        s.state = PluginState::Starting;
        s.pid = child.id();
    });
    let timeout = ctx.opts.ready_timeout;
    let deadline = Instant::now() + timeout;
    loop {
        if tokio::net::UnixStream::connect(&ctx.socket).await.is_ok() {
            update(ctx, |s| {
                s.state = PluginState::Ready;
                s.consecutive_failures = 0;
                s.last_error = None;
            });
            tracing::info!(plugin = %ctx.plugin, pid = ?child.id(), "CSI plugin ready");
            return Ok(child);
        }
        if Instant::now() >= deadline {
            terminate(ctx, &mut child).await;
            return Err(SupervisorError::NotReady {
                plugin: ctx.plugin.clone(),
                socket: ctx.socket.clone(),
                timeout,
            });
        }
        tokio::select! {
            status = child.wait() => {
                update(ctx, |s| s.pid = None);
                return Err(SupervisorError::Exited {
                    plugin: ctx.plugin.clone(),
                    status: exit_text(status),
                });
            }
            _ = stop.changed() => {
                terminate(ctx, &mut child).await;
                return Err(SupervisorError::Stopped { plugin: ctx.plugin.clone() });
            }
            () = tokio::time::sleep(ctx.opts.ready_poll) => {}
        }
    }
}

fn exit_text(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Sends `sig` to the child's process group while the child is not yet reaped.
fn signal_group(ctx: &Ctx, child: &Child, sig: Signal) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    if let Err(e) = killpg(Pid::from_raw(pid), sig) {
        tracing::debug!(plugin = %ctx.plugin, pid, ?sig, error = %e, "signal to CSI plugin failed");
    }
}

/// SIGTERM to the group, SIGKILL after the grace period, then reap.
async fn terminate(ctx: &Ctx, child: &mut Child) {
    signal_group(ctx, child, Signal::SIGTERM);
    if tokio::time::timeout(ctx.opts.stop_grace, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(plugin = %ctx.plugin, "CSI plugin ignored SIGTERM; killing it");
        signal_group(ctx, child, Signal::SIGKILL);
        if let Err(e) = child.kill().await {
            tracing::warn!(plugin = %ctx.plugin, error = %e, "killing CSI plugin failed");
        }
    }
    update(ctx, |s| s.pid = None);
}

/// Marks the plugin stopped and removes its socket file.
fn stopped(ctx: &Ctx) {
    if let Err(e) = remove_stale_socket(ctx) {
        tracing::debug!(error = %e, "leaving the CSI plugin socket behind");
    }
    update(ctx, |s| s.state = PluginState::Stopped);
}

/// Keeps the plugin running until the stop sender is dropped.
async fn monitor(ctx: Arc<Ctx>, mut child: Child, mut stop: watch::Receiver<()>) {
    let opts = ctx.opts;
    // The workspace's one backoff (doubling from `initial_backoff`, capped at `max_backoff`);
    // restarts have no overall budget, and a plugin that stayed up `reset_after` starts over.
    let policy = berth_mount::retry::RetryPolicy {
        initial_backoff: opts.initial_backoff,
        max_backoff: opts.max_backoff,
        overall: Duration::MAX,
        full_jitter: false,
    };
    let mut attempt: u32 = 0;
    let mut ready_at = Instant::now();
    loop {
        tokio::select! {
            status = child.wait() => {
                let text = exit_text(status);
                tracing::warn!(plugin = %ctx.plugin, status = %text, "CSI plugin exited");
                update(&ctx, |s| {
                    s.pid = None;
                    s.last_exit = Some(text);
                });
            }
            _ = stop.changed() => {
                terminate(&ctx, &mut child).await;
                stopped(&ctx);
                return;
            }
        }
        if ready_at.elapsed() >= opts.reset_after {
            attempt = 0;
        }
        loop {
            let delay = policy.backoff(attempt);
            update(&ctx, |s| {
                s.state = PluginState::BackingOff { delay };
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => {
                    stopped(&ctx);
                    return;
                }
            }
            attempt = attempt.saturating_add(1);
            update(&ctx, |s| s.restarts = s.restarts.saturating_add(1));
            match launch(&ctx, &mut stop).await {
                Ok(c) => {
                    child = c;
                    ready_at = Instant::now();
                    break;
                }
                Err(SupervisorError::Stopped { .. }) => {
                    stopped(&ctx);
                    return;
                }
                Err(e) => {
                    tracing::warn!(plugin = %ctx.plugin, error = %e, "CSI plugin restart failed");
                    update(&ctx, |s| {
                        if let SupervisorError::Exited { status, .. } = &e {
                            s.last_exit = Some(status.clone());
                        }
                        s.last_error = Some(e.to_string());
                    });
                }
            }
        }
    }
}
