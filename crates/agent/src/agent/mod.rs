//! An agent's work directory opened for use: its lock, the CSI plugins and Docker volume
//! drivers wired in, the checkpointed resources and the container isolator, start-up
//! recovery, the background retry loops of the plugins' pending intents, and counters for a
//! metrics endpoint. Binaries compose this; they hold no agent logic.

mod error;
mod lock;
pub mod usage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_csi::{CsiPlugins, PluginsConfig};
use berth_dvdi::{Discovery, ManagerConfig, MountMode, PluginRegistry};
use berth_resources::proto;

use crate::container::{
    ContainerConfig, DockerVolumes, Isolator, PersistentVolumes, PreparePolicy, Prepared,
    RecordState, RecoveryReport,
};
use crate::resources::{AgentResources, GcOptions, GcReport, Leftover, Options, SyncReport};

pub use error::AgentError;

/// A `Result` with [`AgentError`].
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// A hook called at every write-ahead point of the agent (container intents and volume
/// steps, resources intents, CSI and Docker volume intents and call completions): tests
/// inject crashes with it.
/// It is the shared `berth_mount::hook` type: every manager's points reach it as they are.
#[derive(Clone)]
pub struct StepHook(pub berth_mount::hook::Hook);

impl std::fmt::Debug for StepHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StepHook")
    }
}

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
    /// `--sandbox-root`: every sandbox must lie under it.
    pub sandbox_root: Option<PathBuf>,
    /// `--allowed-host-paths`: `HOST_PATH` sources must lie under one of these (empty: any).
    pub allowed_host_paths: Vec<PathBuf>,
    /// `--retain-destroyed-data-for`: the retry loop (and `gc`) removes retained destroyed
    /// data older than this.
    pub retain_destroyed_data_for: Option<Duration>,
    /// How long to wait for the work dir's lock (another one-shot command, or a server).
    pub lock_wait: Duration,
    /// Called at every write-ahead point (tests: crash injection).
    pub step_hook: Option<StepHook>,
    /// `--disk-isolation`, `--project-ids`, `--quota-headroom`: project quotas of persistent
    /// volumes.
    pub quota: crate::resources::quota::QuotaConfig,
    /// `--enforce-disk-limits`: prepare refuses a container on a volume over its size.
    pub enforce_disk_limits: bool,
    /// `--secret-dir`: where `REFERENCE` secrets of `SECRET` volumes are read (one file per
    /// secret name).
    pub secret_dir: Option<PathBuf>,
    /// `--volume-gid-range`: shared persistent volumes get a gid each (see
    /// [`crate::resources::gids`]).
    pub volume_gid_range: Option<crate::resources::gids::GidRange>,
}

/// The backoff of the leftover retry loop: the wait after a failed removal doubles from 30 s
/// up to an hour (the workspace's one backoff, [`berth_mount::retry::RetryPolicy`]).
pub const LEFTOVER_BACKOFF: berth_mount::retry::RetryPolicy = berth_mount::retry::RetryPolicy {
    initial_backoff: Duration::from_secs(30),
    max_backoff: Duration::from_secs(3600),
    overall: Duration::MAX,
    full_jitter: false,
};

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

/// The agent's resources as a service reports them: the checkpointed set and the total.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcesView {
    /// The checkpointed resources.
    pub checkpointed: Vec<proto::Resource>,
    /// The agent's total resources.
    pub total: Vec<proto::Resource>,
}

/// Persistent volume directories as Mesos lays them out, rooted per disk source, for the
/// volumes the agent holds: a snapshot of the committed checkpointed resources, replaced by
/// the agent after every change (under [`Isolator::hold_prepares`]).
struct Layout {
    work_dir: PathBuf,
    checkpointed: Arc<std::sync::RwLock<berth_resources::Resources>>,
}

impl PersistentVolumes for Layout {
    /// Mesos's identity of a persistent volume (research `mesos-rules.md` ):
    /// [`Resources::contains_resource`](berth_resources::Resources::contains_resource) of the
    /// checkpointed set, so the persistence id, disk source, role and reservation stack,
    /// sharedness and size must all match, while `volume` (container path, mode) is how the
    /// container uses it and is ignored. The allocation is cleared first: a task's resources
    /// are allocated to its role, checkpointed ones never are.
    fn volume_path(&self, r: &proto::Resource) -> std::result::Result<PathBuf, String> {
        let mut typed = berth_resources::Resource::from_proto(r).map_err(|e| e.to_string())?;
        typed.allocation_info = None;
        let held = self
            .checkpointed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_resource(&typed);
        if !held {
            return Err(
                "not among the agent's checkpointed resources (a persistent volume is mounted only once the agent holds it: CREATE it, or send it in CheckpointResources)"
                    .to_owned(),
            );
        }
        crate::resources::volume_path(&self.work_dir, &typed).map_err(|e| e.to_string())
    }
}

/// The Docker volume-driver manager type berth uses.
pub type DockerManager = berth_dvdi::VolumeManager<PluginRegistry>;

/// An opened work directory. Holds an exclusive lock on `<work_dir>/.lock` for its life, so
/// one-shot commands and a server never act on the same directory at once.
pub struct Agent {
    settings: Settings,
    _lock: nix::fcntl::Flock<std::fs::File>,
    isolator: Isolator,
    csi: Option<Arc<CsiPlugins>>,
    docker: Arc<DockerManager>,
    resources: tokio::sync::Mutex<AgentResources>,
    limitations: usage::Limitations,
    disk_isolation: usage::DiskIsolationStatus,
    /// The committed checkpointed set as the isolator's [`Layout`] sees it.
    checkpointed: Arc<std::sync::RwLock<berth_resources::Resources>>,
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

fn work_dir_err(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_path_buf();
    move |source| AgentError::WorkDir { step, path, source }
}

impl Agent {
    /// Opens `settings.work_dir` (creating it), takes its lock, starts the CSI plugins of
    /// the configuration directory, wires the Docker volume drivers, and finishes an
    /// interrupted change of the resources. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// The work dir cannot be made or is locked by another process; the CSI config directory
    /// cannot be listed; the resources cannot be opened or recovered.
    pub async fn open(mut settings: Settings) -> Result<Self> {
        std::fs::create_dir_all(&settings.work_dir)
            .map_err(work_dir_err("create work dir", &settings.work_dir))?;
        // One spelling of every path under the work dir: records, volume directories and the
        // mount table must agree.
        settings.work_dir = std::fs::canonicalize(&settings.work_dir)
            .map_err(work_dir_err("canonicalize work dir", &settings.work_dir))?;
        let work = &settings.work_dir;
        let lock = lock::lock_work_dir(work, settings.lock_wait).await?;
        let hook = settings.step_hook.clone();
        // One book of gids for shared persistent volumes and CSI volumes alike, holding the
        // CSI records' gids before any plugin starts (see `resources::gids`).
        let gids = settings.volume_gid_range.map(|range| {
            let g = crate::resources::gids::VolumeGids::new(
                range,
                work.join(crate::resources::META_DIR)
                    .join(crate::resources::gids::TASK_GIDS_FILE),
            );
            g.adopt_csi(&berth_csi::groups::recorded(work));
            g
        });
        let csi = match &settings.csi_plugin_config_dir {
            Some(dir) => {
                let mut cfg = PluginsConfig::new(work, dir);
                cfg.socket_dir.clone_from(&settings.csi_socket_dir);
                cfg.hook = hook.as_ref().map(|h| h.0.clone());
                cfg.mount_groups = gids
                    .as_ref()
                    .map(crate::resources::gids::VolumeGids::csi_groups);
                let plugins =
                    CsiPlugins::start(cfg)
                        .await
                        .map_err(|source| AgentError::CsiConfig {
                            dir: dir.clone(),
                            source: Box::new(source),
                        })?;
                for e in plugins.config_errors() {
                    tracing::warn!(error = %e, "CSI plugin config skipped");
                }
                Some(Arc::new(plugins))
            }
            None => None,
        };
        let mut docker = docker_manager(&settings, &work.join("dvdi"), MountMode::PerConsumer)?;
        if let Some(h) = &hook {
            docker.set_hook(h.0.clone());
        }
        let docker = Arc::new(docker);
        let checkpointed = Arc::new(std::sync::RwLock::new(berth_resources::Resources::new()));
        let mut isolator = Isolator::new(
            work,
            Arc::new(Layout {
                work_dir: work.clone(),
                checkpointed: Arc::clone(&checkpointed),
            }),
            csi.clone(),
        )
        .with_docker(Arc::clone(&docker) as Arc<dyn DockerVolumes>)
        .with_policy(PreparePolicy {
            sandbox_root: settings.sandbox_root.clone(),
            allowed_host_paths: settings.allowed_host_paths.clone(),
        })
        .with_secret_dir(settings.secret_dir.clone());
        if let Some(h) = &hook {
            isolator.set_hook(h.0.clone());
        }
        // As the Mesos agent: what --resources does not name is detected (cpus, mem, the work
        // dir's disk, ports).
        let configured = crate::resources::detect::agent_resources(
            settings.resources.as_deref(),
            &crate::resources::detect::HostTotals::probe(work),
        )?;
        let mut resources = AgentResources::open(
            work,
            configured,
            Options {
                retain_destroyed_data: settings.retain_destroyed_data,
            },
        )?;
        if let Some(h) = &hook {
            resources.set_hook(h.0.clone());
        }
        resources.set_quotas(
            settings.quota,
            Arc::new(berth_mount::quota::LinuxQuotas::new()),
        )?;
        if let Some(g) = gids {
            resources.set_gids(g)?;
            let parent_gids = resources
                .gids()
                .cloned()
                .map(|g| Arc::new(ParentGidsOf(g)) as Arc<dyn crate::container::ParentGids>);
            isolator = isolator.with_parent_gids(parent_gids);
        }
        if resources.is_pending() {
            let users = |p: &Path| isolator.users_of(p);
            let report = resources.recover(&users)?;
            tracing::info!(?report, "finished an interrupted resources change");
        }
        let disk_isolation = usage::DiskIsolationStatus {
            mode: match settings.quota.isolation {
                crate::resources::quota::DiskIsolation::Auto => "auto",
                crate::resources::quota::DiskIsolation::ProjectQuota => "project-quota",
                crate::resources::quota::DiskIsolation::Du => "du",
                crate::resources::quota::DiskIsolation::None => "none",
            },
            work_dir: match resources.quotas().map(|q| q.enforcement(work)) {
                Some(Ok(crate::resources::quota::VolumeEnforcement::ProjectQuota)) => {
                    "project-quota"
                }
                Some(Ok(crate::resources::quota::VolumeEnforcement::Du)) => "du",
                Some(Ok(crate::resources::quota::VolumeEnforcement::None)) | None => "none",
                Some(Err(_)) => "unsupported",
            },
        };
        tracing::info!(%disk_isolation, "volume sizes");
        // A quota that cannot be put right is reported; it never stops the agent.
        if let Err(e) = resources.reconcile_quotas() {
            tracing::warn!(error = %e, "reconciling the volumes' project quotas");
        }
        match resources.reconcile_gids() {
            Ok(given) if !given.is_empty() => {
                tracing::info!(volumes = ?given, "gave existing shared volumes their gids");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "giving shared volumes their gids"),
        }
        *checkpointed.write().unwrap_or_else(PoisonError::into_inner) =
            resources.checkpointed().clone();
        match resources.leftovers() {
            Ok(l) if !l.is_empty() => tracing::warn!(
                count = l.len(),
                "destroyed volumes left data that could not be removed yet (see status; retried, and removed by gc)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "leftovers of destroyed volumes not listed"),
        }
        Ok(Self {
            settings,
            _lock: lock,
            isolator,
            csi,
            docker,
            resources: tokio::sync::Mutex::new(resources),
            limitations: usage::Limitations::default(),
            disk_isolation,
            checkpointed,
            counters: Counters::default(),
        })
    }

    fn view(r: &AgentResources) -> ResourcesView {
        ResourcesView {
            checkpointed: r.checkpointed().to_proto_list(),
            total: r.total().to_proto_list(),
        }
    }

    /// Replaces the checkpointed resources (the master's `CheckpointResources`) and syncs the
    /// volume directories; a destroyed volume in use by a container is refused.
    ///
    /// # Errors
    /// Invalid resources, volumes in use, I/O.
    pub async fn checkpoint_resources(&self, list: Vec<proto::Resource>) -> Result<ResourcesView> {
        let out = self.checkpoint_inner(&list).await;
        self.counters.count("checkpoint_resources", out.is_ok());
        out
    }

    async fn checkpoint_inner(&self, list: &[proto::Resource]) -> Result<ResourcesView> {
        let new = berth_resources::Resources::from_proto_list(list)
            .map_err(|source| AgentError::CheckpointedResources { source })?;
        let mut r = self.resources.lock().await;
        let _prepares = self.isolator.hold_prepares().await;
        let users = |p: &Path| self.isolator.users_of(p);
        let out = r.checkpoint(&new, &users);
        self.publish(&r);
        log_sync(&out?);
        Ok(Self::view(&r))
    }

    /// Gives the isolator the committed checkpointed set (after every change, committed or
    /// refused, while prepares are held).
    fn publish(&self, r: &AgentResources) {
        *self
            .checkpointed
            .write()
            .unwrap_or_else(PoisonError::into_inner) = r.checkpointed().clone();
    }

    /// Applies one accepted operation (typed, as it came off the wire) to the agent's total
    /// resources and syncs the volume directories.
    ///
    /// # Errors
    /// An operation that is invalid or does not apply, volumes in use, I/O.
    pub async fn apply_operation(&self, op: proto::offer::Operation) -> Result<ResourcesView> {
        let out = self.apply_inner(&op).await;
        self.counters.count("apply_operation", out.is_ok());
        out
    }

    async fn apply_inner(&self, op: &proto::offer::Operation) -> Result<ResourcesView> {
        let op = crate::resources::read_operation(op)?;
        let mut r = self.resources.lock().await;
        let _prepares = self.isolator.hold_prepares().await;
        let users = |p: &Path| self.isolator.users_of(p);
        let out = r.apply_operation(&op, &users);
        self.publish(&r);
        log_sync(&out?);
        Ok(Self::view(&r))
    }

    /// The checkpointed and total resources.
    pub async fn resources(&self) -> ResourcesView {
        Self::view(&*self.resources.lock().await)
    }

    /// How volume sizes are enforced (said once in the log at open, and in `status`).
    #[must_use]
    pub fn disk_isolation(&self) -> &usage::DiskIsolationStatus {
        &self.disk_isolation
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

    /// The leftovers of destroyed volumes (trash entries whose removal failed).
    ///
    /// # Errors
    /// An unreadable target checkpoint.
    pub async fn leftovers(&self) -> Result<Vec<Leftover>> {
        Ok(self.resources.lock().await.leftovers()?)
    }

    /// One garbage-collection pass over the volume areas (see
    /// [`AgentResources::gc`](crate::resources::AgentResources::gc)).
    ///
    /// # Errors
    /// A pending change, an unreadable checkpoint.
    pub async fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let out = self
            .resources
            .lock()
            .await
            .gc(opts)
            .map_err(AgentError::from);
        self.counters.count("gc", out.is_ok());
        out
    }

    /// One pass of the leftover retry loop: leftovers whose backoff has passed are removed
    /// again, and retained data past `--retain-destroyed-data-for` is removed.
    ///
    /// # Errors
    /// As [`Agent::gc`].
    pub async fn retry_leftovers(&self) -> Result<GcReport> {
        let opts = GcOptions {
            dry_run: false,
            retain_destroyed_data_for: self.settings.retain_destroyed_data_for,
            orphans_and_mounts: false,
            backoff: Some(LEFTOVER_BACKOFF),
        };
        let report = self.resources.lock().await.gc(&opts)?;
        for p in &report.removed {
            tracing::info!(path = %p.display(), "leftover of a destroyed volume removed");
        }
        for f in &report.failed {
            tracing::warn!(path = %f.path.display(), error = %f.error, "leftover of a destroyed volume still not removable");
        }
        Ok(report)
    }

    /// Starts the background retry loops of the persisted retry queues (failed CSI
    /// unpublish/unstage, failed Docker unmounts, leftovers of destroyed volumes), each pass
    /// every `every` (a leftover is retried when its own backoff, [`LEFTOVER_BACKOFF`], has
    /// passed). They stop when the returned handle is dropped or stopped.
    #[must_use]
    pub fn spawn_retry_loops(self: &Arc<Self>, every: Duration) -> RetryLoops {
        let csi = self.csi.as_ref().map(|c| c.spawn_retry_loop(every));
        let weak = Arc::downgrade(self);
        let leftovers = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(agent) = weak.upgrade() else {
                    return;
                };
                // File-system work: on the blocking pool, so a hung filesystem holds only
                // this pass.
                let handle = tokio::runtime::Handle::current();
                let pass = tokio::task::spawn_blocking(move || {
                    handle.block_on(async move { agent.retry_leftovers().await })
                });
                if let Ok(Err(e)) = pass.await {
                    tracing::warn!(error = %e, "leftover retry pass failed");
                }
            }
        });
        let weak = Arc::downgrade(self);
        let docker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(agent) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = agent.retry_docker().await {
                    tracing::warn!(error = %e, "Docker volume retry pass failed");
                }
            }
        });
        RetryLoops {
            tasks: csi.into_iter().chain([docker, leftovers]).collect(),
        }
    }

    /// Docker volume plugin calls made so far, per plugin.
    #[must_use]
    pub fn docker_calls(&self) -> BTreeMap<String, u64> {
        self.docker.drivers().calls()
    }

    /// The supplementary gids a task of `cfg` must run with (`--volume-gid-range`): the gids
    /// of the shared persistent volumes and the `PARENT` sandbox paths it uses, and the
    /// `volume_mount_group` of its CSI volumes that have one (read from their records, so
    /// after `prepare`: the container must be among the volume's consumers), sorted, no
    /// duplicates.
    pub async fn supplementary_gids(&self, cfg: &ContainerConfig) -> Vec<u32> {
        let mut out: Vec<u32> = {
            let r = self.resources.lock().await;
            let Some(gids) = r.gids() else {
                return Vec::new();
            };
            cfg.resources
                .iter()
                .filter_map(|p| berth_resources::Resource::from_proto(p).ok())
                .filter(berth_resources::Resource::is_persistent_volume)
                .filter_map(|v| gids.gid(&r.volume_path(&v).ok()?))
                .collect()
        };
        if let Some(parent) = &cfg.parent {
            let gids = self.resources.lock().await.gids().cloned();
            if let Some(gids) = gids {
                out.extend(
                    cfg.volumes
                        .iter()
                        .filter(|v| crate::container::is_parent_sandbox_path(v))
                        .filter_map(|v| {
                            let sp = v.source.as_ref()?.sandbox_path.as_ref()?;
                            gids.other(&crate::container::parent_gid_key(
                                &parent.container_id,
                                Path::new(&sp.path),
                            ))
                        }),
                );
            }
        }
        if let Some(csi) = &self.csi {
            // Started plugins only (a prepared volume's plugin is): asking for the gids
            // never starts a plugin or reads the configuration directory.
            let started = csi.started().await;
            for v in &cfg.volumes {
                let Some(c) = v.source.as_ref().and_then(|s| s.csi_volume.as_ref()) else {
                    continue;
                };
                let Some(sp) = &c.static_provisioning else {
                    continue;
                };
                let Some(plugin) = started
                    .iter()
                    .find(|p| p.config().plugin_type == c.plugin_name)
                else {
                    continue;
                };
                match plugin.manager().load(&sp.volume_id) {
                    Ok(Some(rec)) if rec.consumers.contains_key(&cfg.container_id) => {
                        out.extend(rec.volume_mount_group);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(container = %cfg.container_id, error = %e, "a CSI volume record is unreadable; its gid is not given");
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `NodeExpandVolume` of CSI volume `volume_id` of plugin `plugin`, published on this
    /// node, to at least `required_bytes` (at most `limit_bytes`, 0: no limit) — after its
    /// backend grew (see [`berth_csi::manager::VolumeManager::expand`]). Returns the capacity the
    /// plugin reports (0: not reported).
    ///
    /// # Errors
    /// [`AgentError::Expand`]: no CSI configuration, an unknown plugin, a plugin without
    /// `EXPAND_VOLUME`, a volume not published here, a bad capacity, the plugin's error.
    pub async fn expand_volume(
        &self,
        plugin: &str,
        volume_id: &str,
        required_bytes: u64,
        limit_bytes: u64,
    ) -> Result<u64> {
        let wrap = |source| AgentError::Expand {
            plugin: plugin.to_owned(),
            volume_id: volume_id.to_owned(),
            source: Box::new(source),
        };
        let csi = self.csi.as_ref().ok_or_else(|| {
            wrap(berth_csi::CsiError::UnknownPlugin {
                plugin: plugin.to_owned(),
                reason: "no CSI plugin configuration directory is set".to_owned(),
            })
        })?;
        csi.expand(plugin, volume_id, required_bytes, limit_bytes)
            .await
            .map_err(wrap)
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
        let out = self.prepare_inner(cfg).await;
        self.counters.count("prepare", out.is_ok());
        out
    }

    async fn prepare_inner(&self, cfg: &ContainerConfig) -> Result<Vec<Prepared>> {
        self.check_disk_limits(cfg)?;
        // The sandbox's quota (its non-persistent disk) before anything is mounted into it;
        // recorded write-ahead with the container's id, released if the prepare fails.
        // Only a config the isolator admits (sandbox checked and canonical, every volume
        // planned) gets anything tagged.
        let disk = sandbox_disk_bytes(cfg);
        let limited = if disk > 0 {
            let (admitted, _) = self.isolator.plan_admitted(cfg)?;
            self.resources
                .lock()
                .await
                .limit_sandbox(&admitted.sandbox, disk, &cfg.container_id)?
        } else {
            false
        };
        match self.isolator.prepare(cfg).await {
            Ok(p) => Ok(p),
            Err(e) => {
                if limited
                    && !matches!(e, crate::container::ContainerError::AlreadyPrepared { .. })
                    && let Err(undo) = self
                        .resources
                        .lock()
                        .await
                        .release_sandbox_of(&cfg.container_id)
                {
                    tracing::warn!(container = %cfg.container_id, error = %undo, "cannot release the sandbox quota of a failed prepare");
                }
                Err(e.into())
            }
        }
    }

    /// Cleans up a container.
    ///
    /// # Errors
    /// The isolator's error.
    pub async fn cleanup(&self, id: &str) -> Result<()> {
        let out = self.isolator.cleanup(id).await.map_err(AgentError::from);
        let out = match out {
            Ok(()) => self
                .resources
                .lock()
                .await
                .release_sandbox_of(id)
                .map_err(AgentError::from),
            Err(e) => Err(e),
        };
        if out.is_ok() {
            self.release_parent_gids(|parent| parent == id).await;
        }
        self.counters.count("cleanup", out.is_ok());
        out
    }

    /// Releases the gids of the `PARENT` sandbox paths of the parents `release` picks.
    async fn release_parent_gids(&self, release: impl Fn(&str) -> bool) {
        let gids = self.resources.lock().await.gids().cloned();
        let Some(gids) = gids else {
            return;
        };
        let picked = |key: &str| {
            key.strip_prefix("parent/")
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(parent, _)| release(parent))
        };
        match gids.release_others(picked) {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(released = ?gone, "released the gids of a pod's sandbox paths");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot release the gids of a pod's sandbox paths")
            }
        }
    }

    /// `cleanup --force`: also ends the quarantine of a container whose record cannot be
    /// read, releasing its CSI and Docker consumers ([`Isolator::force_cleanup`]).
    ///
    /// # Errors
    /// The isolator's error.
    pub async fn force_cleanup(&self, id: &str) -> Result<()> {
        let out = self.isolator.force_cleanup(id).await;
        if out.is_ok() {
            self.release_parent_gids(|parent| parent == id).await;
        }
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
        let report = out?;
        self.release_orphan_sandbox_quotas().await;
        Ok(report)
    }

    /// Sandbox quotas whose container has no record any more (a crash between the quota and
    /// the record, or after the cleanup and before the release) are released.
    async fn release_orphan_sandbox_quotas(&self) {
        let Ok(states) = self.isolator.record_states() else {
            return;
        };
        let recorded: std::collections::BTreeSet<String> =
            states.into_iter().map(|(id, _)| id).collect();
        self.release_parent_gids(|parent| !recorded.contains(parent))
            .await;
        let mut r = self.resources.lock().await;
        for c in r.sandbox_quota_containers() {
            if recorded.contains(&c) {
                continue;
            }
            if let Err(e) = r.release_sandbox_of(&c) {
                tracing::warn!(container = %c, error = %e, "cannot release an orphaned sandbox quota");
            }
        }
    }

    /// A server's start-up recovery, before anyone says which containers live: every
    /// recorded container may be running and is kept (complete prepares stay, interrupted
    /// ones are reported), interrupted cleanups are finished. Nothing a running container
    /// uses is torn down; the containerizer's own recover settles the rest.
    ///
    /// # Errors
    /// The isolator's error.
    pub async fn recover_on_start(&self) -> Result<RecoveryReport> {
        let live: Vec<String> = self
            .isolator
            .record_states()?
            .into_iter()
            .filter(|(_, state)| *state != RecordState::Cleaning)
            .map(|(id, _)| id)
            .collect();
        let report = self.recover(&live, &[]).await?;
        tracing::info!(
            kept = report.kept.len(),
            cleaned = report.cleaned.len(),
            quarantined = report.quarantined.len(),
            quarantine_kept = report.quarantine_kept.len(),
            errors = report.errors.len(),
            "recovered"
        );
        for e in &report.errors {
            tracing::warn!(error = %e, "recovery error");
        }
        Ok(report)
    }

    /// Stops managed plugins.
    pub async fn shutdown(&self) {
        if let Some(csi) = &self.csi {
            csi.shutdown().await;
        }
    }
}

/// The container's non-persistent `disk` in bytes: disk resources of the config without a
/// persistent volume and without a source (PATH and MOUNT disks are disks of their own).
fn sandbox_disk_bytes(cfg: &ContainerConfig) -> u64 {
    cfg.resources
        .iter()
        .filter(|r| r.name == "disk")
        .filter(|r| {
            r.disk
                .as_ref()
                .is_none_or(|d| d.persistence.is_none() && d.source.is_none())
        })
        .filter_map(|r| r.scalar.as_ref())
        .map(|s| {
            // MB to bytes; a negative or absurd value counts as none.
            if s.value.is_finite() && s.value > 0.0 {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let mb = s.value as u64;
                mb.saturating_mul(1 << 20)
            } else {
                0
            }
        })
        .fold(0, u64::saturating_add)
}

/// The background retry loops of [`Agent::spawn_retry_loops`]; dropping it stops them.
#[derive(Debug)]
pub struct RetryLoops {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RetryLoops {
    /// Stops the loops.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RetryLoops {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
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
    for (p, left) in &report.deferred {
        tracing::warn!(path = %p.display(), leftover = %left.display(), "volume destroyed; its data is left in the trash for the retry loop and gc");
    }
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
) -> Result<DockerManager, berth_dvdi::DvdiError> {
    let registry = PluginRegistry::new(discovery(settings), berth_dvdi::ClientConfig::default());
    let mut cfg = ManagerConfig::new(state_dir);
    cfg.mode = mode;
    // Mesos's docker/volume isolator and dvdcli create a missing volume (implicit create);
    // a volume spec can still ask for explicit create.
    cfg.create_missing = true;
    // This thread's mount namespace (a private one in tests and the demo).
    cfg.mountinfo = Some(PathBuf::from("/proc/thread-self/mountinfo"));
    berth_dvdi::VolumeManager::new(registry, cfg)
}

/// The agent's gid book as the isolator's `PARENT` sandbox path gids.
struct ParentGidsOf(crate::resources::gids::VolumeGids);

impl crate::container::ParentGids for ParentGidsOf {
    fn gid(&self, parent: &str, path: &Path) -> std::result::Result<u32, String> {
        self.0
            .take_other(&crate::container::parent_gid_key(parent, path))
    }
}
