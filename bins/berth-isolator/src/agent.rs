//! An agent's work directory opened for use: the lock, the CSI plugins, the checkpointed
//! resources and the container isolator, plus counters for the metrics endpoint.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, Result, bail};
use berth_agent::container::{
    ContainerConfig, Isolator, PersistentVolumes, Prepared, RecoveryReport,
};
use berth_agent::resources::{AgentResources, Options, SyncReport};
use berth_csi::{CsiPlugins, PluginsConfig};
use berth_dvdi::{Discovery, ManagerConfig, MountMode, PluginRegistry};
use berth_proto::berth::v1 as pb;
use berth_resources::proto;

/// Where and how an agent runs (the global flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `--work-dir` / `--work_dir`.
    pub work_dir: PathBuf,
    /// `--csi-plugin-config-dir` / `--csi_plugin_config_dir`.
    pub csi_plugin_config_dir: Option<PathBuf>,
    /// Where managed CSI plugins get their sockets (default `<work_dir>/csi/sockets`).
    pub csi_socket_dir: Option<PathBuf>,
    /// `--docker-plugin-dirs`: discovery roots of Docker volume plugins.
    pub docker_plugin_dirs: Vec<PathBuf>,
    /// `--resources`: the agent's configured resources (Mesos agent syntax or a JSON array).
    pub resources: Option<String>,
    /// `--retain-destroyed-data`: DESTROY keeps the volume's data.
    pub retain_destroyed_data: bool,
    /// How long to wait for the work dir's lock (another one-shot command, or a server).
    pub lock_wait: std::time::Duration,
}

/// The test failpoint: with `BERTH_ISOLATOR_KILL_AT=<n>` in the environment, the process kills
/// itself with SIGKILL at the n-th write-ahead point it passes (container intents and volume
/// steps, resources intents, CSI and Docker volume intents and call completions). The crash
/// tests use it to stop the binary at every point of prepare, cleanup, CREATE and DESTROY.
/// Unset (always, outside tests), it costs nothing.
#[derive(Debug, Clone)]
pub struct Failpoint {
    at: usize,
    seen: Arc<std::sync::atomic::AtomicUsize>,
}

impl Failpoint {
    /// The failpoint of the environment, if set.
    #[must_use]
    pub fn from_env() -> Option<Self> {
        let at = std::env::var("BERTH_ISOLATOR_KILL_AT").ok()?.parse().ok()?;
        Some(Self {
            at,
            seen: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        })
    }

    /// Counts one point; kills the process at the chosen one.
    pub fn tick(&self) {
        if self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.at {
            let _ =
                nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Counters of the metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    ops: Mutex<BTreeMap<(&'static str, bool), u64>>,
}

impl Counters {
    /// Counts one operation (`ok` or failed).
    pub fn count(&self, op: &'static str, ok: bool) {
        *self
            .ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((op, ok))
            .or_default() += 1;
    }

    /// `(operation, ok) → count`.
    #[must_use]
    pub fn snapshot(&self) -> BTreeMap<(&'static str, bool), u64> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Persistent volume directories as Mesos lays them out, rooted per disk source.
struct Layout {
    work_dir: PathBuf,
}

impl PersistentVolumes for Layout {
    fn volume_path(&self, r: &proto::Resource) -> std::result::Result<PathBuf, String> {
        let typed = berth_resources::Resource::from_proto(r).map_err(|e| e.to_string())?;
        berth_agent::resources::volume_path(&self.work_dir, &typed).map_err(|e| e.to_string())
    }
}

/// An opened work directory. Holds an exclusive lock on `<work_dir>/.lock` for its life, so
/// one-shot commands and a server never act on the same directory at once.
pub struct Agent {
    settings: Settings,
    _lock: nix::fcntl::Flock<std::fs::File>,
    isolator: Isolator,
    csi: Option<Arc<CsiPlugins>>,
    docker: Arc<DockerManager>,
    resources: tokio::sync::Mutex<AgentResources>,
    /// Counters for `/metrics`.
    pub counters: Counters,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("work_dir", &self.settings.work_dir)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Opens `settings.work_dir` (creating it), takes its lock and starts the CSI plugins of
    /// the configuration directory. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// The work dir cannot be made or is locked by another process; the CSI config directory
    /// cannot be listed.
    pub async fn open(mut settings: Settings) -> Result<Self> {
        std::fs::create_dir_all(&settings.work_dir)
            .with_context(|| format!("create work dir {}", settings.work_dir.display()))?;
        // One spelling of every path under the work dir: records, volume directories and the
        // mount table must agree.
        settings.work_dir = std::fs::canonicalize(&settings.work_dir)
            .with_context(|| format!("canonicalize work dir {}", settings.work_dir.display()))?;
        let work = &settings.work_dir;
        let lock_path = work.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        let deadline = tokio::time::Instant::now() + settings.lock_wait;
        let mut file = file;
        let lock = loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EWOULDBLOCK))
                    if tokio::time::Instant::now() < deadline =>
                {
                    file = f;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err((_, errno)) => bail!(
                    "work dir {} is in use by another berth-isolator (lock {}: {errno}; waited {:?})",
                    work.display(),
                    lock_path.display(),
                    settings.lock_wait
                ),
            }
        };
        let failpoint = Failpoint::from_env();
        let csi = match &settings.csi_plugin_config_dir {
            Some(dir) => {
                let mut cfg = PluginsConfig::new(work, dir);
                cfg.socket_dir.clone_from(&settings.csi_socket_dir);
                if let Some(fp) = &failpoint {
                    let fp = fp.clone();
                    cfg.hook = Some(Arc::new(move |_| fp.tick()));
                }
                let plugins = CsiPlugins::start(cfg)
                    .await
                    .with_context(|| format!("CSI plugin config dir {}", dir.display()))?;
                for e in plugins.config_errors() {
                    tracing::warn!(error = %e, "CSI plugin config skipped");
                }
                Some(Arc::new(plugins))
            }
            None => None,
        };
        let mut docker = docker_manager(&settings, &work.join("dvdi"), MountMode::PerConsumer)?;
        if let Some(fp) = &failpoint {
            let fp = fp.clone();
            docker.set_hook(Arc::new(move |_| fp.tick()));
        }
        let docker = Arc::new(docker);
        let mut isolator = Isolator::new(
            work,
            Arc::new(Layout {
                work_dir: work.clone(),
            }),
            csi.clone(),
        )
        .with_docker(Arc::clone(&docker) as Arc<dyn berth_agent::container::DockerVolumes>);
        if let Some(fp) = &failpoint {
            let fp = fp.clone();
            isolator.set_hook(Arc::new(move |_| fp.tick()));
        }
        // As the Mesos agent: what --resources does not name is detected (cpus, mem, the work
        // dir's disk, ports).
        let configured = berth_agent::resources::detect::agent_resources(
            settings.resources.as_deref(),
            &berth_agent::resources::detect::HostTotals::probe(work),
        )?;
        let mut resources = AgentResources::open(
            work,
            configured,
            Options {
                retain_destroyed_data: settings.retain_destroyed_data,
            },
        )?;
        if let Some(fp) = &failpoint {
            let fp = fp.clone();
            resources.set_hook(Arc::new(move |_| fp.tick()));
        }
        if resources.is_pending() {
            let users = |p: &Path| isolator.users_of(p);
            let report = resources.recover(&users)?;
            tracing::info!(?report, "finished an interrupted resources change");
        }
        Ok(Self {
            settings,
            _lock: lock,
            isolator,
            csi,
            docker,
            resources: tokio::sync::Mutex::new(resources),
            counters: Counters::default(),
        })
    }

    fn resources_response(r: &AgentResources) -> pb::ResourcesResponse {
        pb::ResourcesResponse {
            checkpointed: r.checkpointed().to_proto_list(),
            total: r.total().to_proto_list(),
        }
    }

    /// Replaces the checkpointed resources (the master's `CheckpointResources`) and syncs the
    /// volume directories; a destroyed volume in use by a container is refused.
    ///
    /// # Errors
    /// Invalid resources, volumes in use, I/O.
    pub async fn checkpoint_resources(
        &self,
        list: Vec<proto::Resource>,
    ) -> Result<pb::ResourcesResponse> {
        let out = self.checkpoint_inner(&list).await;
        self.counters.count("checkpoint_resources", out.is_ok());
        out
    }

    async fn checkpoint_inner(&self, list: &[proto::Resource]) -> Result<pb::ResourcesResponse> {
        let new =
            berth_resources::Resources::from_proto_list(list).context("checkpointed resources")?;
        let mut r = self.resources.lock().await;
        let users = |p: &Path| self.isolator.users_of(p);
        let report: SyncReport = r.checkpoint(&new, &users)?;
        log_sync(&report);
        Ok(Self::resources_response(&r))
    }

    /// Applies one accepted operation to the agent's total resources and syncs the volume
    /// directories.
    ///
    /// # Errors
    /// An operation that is invalid or does not apply, volumes in use, I/O.
    pub async fn apply_operation(
        &self,
        op: proto::offer::Operation,
    ) -> Result<pb::ResourcesResponse> {
        let out = self.apply_inner(&op).await;
        self.counters.count("apply_operation", out.is_ok());
        out
    }

    async fn apply_inner(&self, op: &proto::offer::Operation) -> Result<pb::ResourcesResponse> {
        let json = berth_resources::json::to_json_value(op);
        let mut r = self.resources.lock().await;
        let users = |p: &Path| self.isolator.users_of(p);
        let report = r.apply_operation_json(&json, &users)?;
        log_sync(&report);
        Ok(Self::resources_response(&r))
    }

    /// The checkpointed and total resources.
    ///
    /// # Errors
    /// None today; kept fallible for the service.
    pub async fn resources(&self) -> Result<pb::ResourcesResponse> {
        Ok(Self::resources_response(&*self.resources.lock().await))
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The container isolator.
    #[must_use]
    pub fn isolator(&self) -> &Isolator {
        &self.isolator
    }

    /// Drives the Docker volume manager's pending intents once (failed unmounts).
    ///
    /// # Errors
    /// The manager's error.
    pub async fn retry_docker(&self) -> Result<()> {
        let report = self.docker.retry_pending().await?;
        for e in &report.errors {
            tracing::warn!(error = %e, "Docker volume retry still failing");
        }
        Ok(())
    }

    /// Docker volume plugin calls made so far, per plugin.
    #[must_use]
    pub fn docker_calls(&self) -> BTreeMap<String, u64> {
        self.docker.drivers().calls()
    }

    /// The CSI plugins, when configured.
    #[must_use]
    pub fn csi(&self) -> Option<&Arc<CsiPlugins>> {
        self.csi.as_ref()
    }

    /// Prepares a container.
    ///
    /// # Errors
    /// The isolator's error.
    pub async fn prepare(&self, cfg: &ContainerConfig) -> Result<Vec<Prepared>> {
        let out = self.isolator.prepare(cfg).await;
        self.counters.count("prepare", out.is_ok());
        Ok(out?)
    }

    /// Cleans up a container.
    ///
    /// # Errors
    /// The isolator's error.
    pub async fn cleanup(&self, id: &str) -> Result<()> {
        let out = self.isolator.cleanup(id).await;
        self.counters.count("cleanup", out.is_ok());
        Ok(out?)
    }

    /// Recovers after a restart.
    ///
    /// # Errors
    /// The isolator's error.
    pub async fn recover(&self, live: &[String], orphans: &[String]) -> Result<RecoveryReport> {
        let out = self.isolator.recover(live, orphans).await;
        self.counters.count("recover", out.is_ok());
        Ok(out?)
    }

    /// Stops managed plugins.
    pub async fn shutdown(&self) {
        if let Some(csi) = &self.csi {
            csi.shutdown().await;
        }
    }
}

fn log_sync(report: &SyncReport) {
    for p in &report.created {
        tracing::info!(path = %p.display(), "volume directory created");
    }
    for p in &report.removed {
        tracing::info!(path = %p.display(), "volume directory removed");
    }
}

/// `{"checkpointed": [...], "total": [...]}` in Mesos JSON.
#[must_use]
pub fn resources_json(r: &pb::ResourcesResponse) -> serde_json::Value {
    let list = |l: &[proto::Resource]| -> Vec<serde_json::Value> {
        l.iter().map(berth_resources::json::to_json_value).collect()
    };
    serde_json::json!({"checkpointed": list(&r.checkpointed), "total": list(&r.total)})
}

/// Docker plugin discovery: `--docker-plugin-dirs` (each searched for sockets and for
/// `.spec`/`.json` files), or Docker's own roots.
#[must_use]
pub fn discovery(settings: &Settings) -> Discovery {
    if settings.docker_plugin_dirs.is_empty() {
        Discovery::default()
    } else {
        Discovery::with_roots(
            settings.docker_plugin_dirs.clone(),
            settings.docker_plugin_dirs.clone(),
        )
    }
}

/// A Docker volume-driver manager with state under `state_dir`.
///
/// # Errors
/// The state directory cannot be made.
pub fn docker_manager(
    settings: &Settings,
    state_dir: &Path,
    mode: MountMode,
) -> Result<DockerManager> {
    let registry = PluginRegistry::new(discovery(settings), berth_dvdi::ClientConfig::default());
    let mut cfg = ManagerConfig::new(state_dir);
    cfg.mode = mode;
    // Mesos's docker/volume isolator and dvdcli create a missing volume (implicit create);
    // a volume spec can still ask for explicit create.
    cfg.create_missing = true;
    // This thread's mount namespace (a private one in tests and the demo).
    cfg.mountinfo = Some(PathBuf::from("/proc/thread-self/mountinfo"));
    Ok(berth_dvdi::VolumeManager::new(registry, cfg)?)
}

/// The Docker volume-driver manager type berth uses.
pub type DockerManager = berth_dvdi::VolumeManager<PluginRegistry>;

/// Reads a container config file; `--container-id` must match its `container_id` (or fills
/// it in when the file has none).
///
/// # Errors
/// Unreadable file, malformed config, mismatching id.
pub fn read_config(path: &Path, container_id: &str) -> Result<ContainerConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read container config {}", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("container config {}: not JSON", path.display()))?;
    if let Some(obj) = value.as_object_mut() {
        match obj.get("container_id").and_then(serde_json::Value::as_str) {
            None => {
                obj.insert("container_id".into(), container_id.into());
            }
            Some(id) if id != container_id => bail!(
                "container config {}: container_id {id:?} differs from --container-id {container_id:?}",
                path.display()
            ),
            Some(_) => {}
        }
    }
    ContainerConfig::from_json(&value.to_string())
        .with_context(|| format!("container config {}", path.display()))
}
