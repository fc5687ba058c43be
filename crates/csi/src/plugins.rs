//! The CSI side of an agent: every plugin of the configuration directory, reachable by its
//! `type` (what a volume's `plugin_name` names), each with its client, its volume manager and,
//! for managed plugins, its supervisor.
//!
//! Differences from Mesos (research `isolators.md` §1.1, §1.10), on purpose:
//! - one bad file is reported and skipped; an empty directory is valid (Mesos fails the whole
//!   load on one parse error and exits the agent on an empty directory);
//! - a plugin that fails to start is reported and tried again on its next use, and a volume
//!   naming a `type` not loaded yet makes the directory be read again (plugins added at
//!   runtime work, as in Mesos);
//! - nothing waits for a master registration;
//! - the plugin's cached `GetPluginInfo` / `NodeGetCapabilities` are dropped when its socket
//!   changes identity (a restarted plugin), see [`crate::client`];
//! - failed teardown is retried in the background by [`CsiPlugins::spawn_retry_loop`].
//!
//! Managed plugins run as child processes of berth (argv, no shell, `CSI_ENDPOINT` set), not
//! in containers: berth has no containerizer of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use berth_resources::proto::volume::source::CsiVolume;

use crate::client::{ClientConfig, CsiClient};
use crate::config::{self, PluginConfig, PluginKind};
use crate::error::{CsiError, Result};
use crate::manager::{ManagerConfig, RecoveryReport, VolumeManager, VolumeSpec};
use crate::record::Mode;
use crate::secrets::SecretResolver;
use crate::supervisor::{PluginStatus, PluginSupervisor, SupervisorOptions};

/// Settings of [`CsiPlugins`].
#[derive(Clone)]
pub struct PluginsConfig {
    /// The agent work dir (state under `<work_dir>/csi`).
    pub work_dir: PathBuf,
    /// The directory of `CSIPluginInfo` JSON files (`--csi_plugin_config_dir`).
    pub config_dir: PathBuf,
    /// Where managed plugins' sockets are made; default `<work_dir>/csi/sockets`. Socket
    /// paths are limited to 107 bytes, so a long work dir needs a shorter one.
    pub socket_dir: Option<PathBuf>,
    /// The client's deadlines and retries.
    pub client: ClientConfig,
    /// The supervisor's timing.
    pub supervisor: SupervisorOptions,
    /// How long a plugin has to answer `Probe` with ready after it is reachable.
    pub ready_timeout: Duration,
    /// Where secret references are resolved (`None`: only inline values work).
    pub secrets_dir: Option<PathBuf>,
    /// The boot id; `None` reads `/proc/sys/kernel/random/boot_id`.
    pub boot_id: Option<String>,
    /// A hook installed on every plugin's volume manager (tests: crash injection).
    pub hook: Option<crate::manager::Hook>,
}

impl std::fmt::Debug for PluginsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginsConfig")
            .field("work_dir", &self.work_dir)
            .field("config_dir", &self.config_dir)
            .field("socket_dir", &self.socket_dir)
            .finish_non_exhaustive()
    }
}

impl PluginsConfig {
    /// Defaults for `work_dir` and `config_dir`.
    #[must_use]
    pub fn new(work_dir: impl Into<PathBuf>, config_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            config_dir: config_dir.into(),
            socket_dir: None,
            client: ClientConfig::default(),
            supervisor: SupervisorOptions::default(),
            ready_timeout: Duration::from_secs(60),
            secrets_dir: None,
            boot_id: None,
            hook: None,
        }
    }

    fn sockets(&self) -> PathBuf {
        self.socket_dir
            .clone()
            .unwrap_or_else(|| self.work_dir.join("csi").join("sockets"))
    }
}

/// One started plugin.
pub struct Plugin {
    config: PluginConfig,
    manager: VolumeManager<CsiClient>,
    supervisor: Mutex<Option<PluginSupervisor>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("type", &self.config.plugin_type)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Its configuration.
    #[must_use]
    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// Its volume manager.
    #[must_use]
    pub fn manager(&self) -> &VolumeManager<CsiClient> {
        &self.manager
    }

    /// The supervisor's view, for a managed plugin.
    #[must_use]
    pub fn supervisor_status(&self) -> Option<PluginStatus> {
        self.supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(PluginSupervisor::status)
    }
}

/// One line of [`CsiPlugins::status`].
#[derive(Debug, Clone)]
pub struct PluginReport {
    /// `CSIPluginInfo.type`.
    pub plugin_type: String,
    /// Whether berth starts it.
    pub managed: bool,
    /// Started and usable.
    pub started: bool,
    /// The supervisor's view (managed plugins).
    pub supervisor: Option<PluginStatus>,
    /// The last start error, if it is not started.
    pub error: Option<String>,
}

/// Every configured CSI plugin of this agent.
#[derive(Debug)]
pub struct CsiPlugins {
    cfg: PluginsConfig,
    started: tokio::sync::RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// Serializes starts, so one plugin is never started twice.
    starting: tokio::sync::Mutex<()>,
    failed: Mutex<BTreeMap<String, String>>,
    config_errors: Mutex<Vec<String>>,
}

impl CsiPlugins {
    /// Loads the configuration directory and starts every plugin in it. A bad file or a
    /// plugin that fails to start is reported (see [`CsiPlugins::status`] and
    /// [`CsiPlugins::config_errors`]) and does not stop the others.
    ///
    /// # Errors
    /// [`CsiError::Config`] only when the directory cannot be listed.
    pub async fn start(cfg: PluginsConfig) -> Result<Self> {
        let this = Self {
            cfg,
            started: tokio::sync::RwLock::new(BTreeMap::new()),
            starting: tokio::sync::Mutex::new(()),
            failed: Mutex::new(BTreeMap::new()),
            config_errors: Mutex::new(Vec::new()),
        };
        let loaded = this.load()?;
        for plugin in loaded.into_values() {
            let name = plugin.plugin_type.clone();
            if let Err(e) = this.start_one(plugin).await {
                tracing::warn!(plugin = %name, error = %e, "CSI plugin failed to start; will retry on use");
            }
        }
        Ok(this)
    }

    fn load(&self) -> Result<BTreeMap<String, PluginConfig>> {
        let loaded = config::load_dir(&self.cfg.config_dir)?;
        *self
            .config_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            loaded.errors.iter().map(ToString::to_string).collect();
        Ok(loaded.plugins)
    }

    /// The files of the last directory load that were skipped, with their reasons.
    #[must_use]
    pub fn config_errors(&self) -> Vec<String> {
        self.config_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn start_one(&self, plugin: PluginConfig) -> Result<Arc<Plugin>> {
        let _one = self.starting.lock().await;
        if let Some(p) = self.started.read().await.get(&plugin.plugin_type) {
            return Ok(Arc::clone(p));
        }
        let name = plugin.plugin_type.clone();
        match self.launch(plugin).await {
            Ok(p) => {
                let p = Arc::new(p);
                self.failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&name);
                self.started.write().await.insert(name, Arc::clone(&p));
                Ok(p)
            }
            Err(e) => {
                self.failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name, e.to_string());
                Err(e)
            }
        }
    }

    async fn launch(&self, plugin: PluginConfig) -> Result<Plugin> {
        let unavailable = |reason: String| CsiError::UnknownPlugin {
            plugin: plugin.plugin_type.clone(),
            reason,
        };
        let (endpoint, supervisor) = match &plugin.kind {
            PluginKind::Unmanaged { node_socket } => (node_socket.display().to_string(), None),
            PluginKind::Managed { .. } => {
                let sup =
                    PluginSupervisor::start(&plugin, &self.cfg.sockets(), self.cfg.supervisor)
                        .await
                        .map_err(|e| unavailable(e.to_string()))?;
                (sup.endpoint(), Some(sup))
            }
        };
        let client = CsiClient::new(&plugin.plugin_type, &endpoint, self.cfg.client)?;
        client.wait_ready(self.cfg.ready_timeout).await?;
        let info = client.plugin_info().await?;
        tracing::info!(plugin = %plugin.plugin_type, name = %info.name, version = %info.vendor_version, managed = supervisor.is_some(), "CSI plugin ready");
        let mut manager = VolumeManager::new(
            client,
            &plugin,
            ManagerConfig {
                work_dir: self.cfg.work_dir.clone(),
                boot_id: self.cfg.boot_id.clone(),
                secrets: SecretResolver::new(self.cfg.secrets_dir.clone()),
            },
        )?;
        if let Some(h) = &self.cfg.hook {
            manager.set_hook(Arc::clone(h));
        }
        Ok(Plugin {
            config: plugin,
            manager,
            supervisor: Mutex::new(supervisor),
        })
    }

    /// The plugin of `plugin_type`: a started one, or one started now (after a failed start,
    /// or from a configuration file added since; the directory is read again).
    ///
    /// # Errors
    /// [`CsiError::UnknownPlugin`] when no configuration names it or it cannot start.
    pub async fn plugin(&self, plugin_type: &str) -> Result<Arc<Plugin>> {
        if let Some(p) = self.started.read().await.get(plugin_type) {
            return Ok(Arc::clone(p));
        }
        let mut loaded = self.load()?;
        let Some(cfg) = loaded.remove(plugin_type) else {
            return Err(CsiError::UnknownPlugin {
                plugin: plugin_type.to_owned(),
                reason: String::new(),
            });
        };
        self.start_one(cfg).await
    }

    /// The plugin of `plugin_type` if it is started, without waiting (`None` while the
    /// registry is being changed).
    #[must_use]
    pub fn plugin_now(&self, plugin_type: &str) -> Option<Arc<Plugin>> {
        self.started.try_read().ok()?.get(plugin_type).cloned()
    }

    /// The started plugins.
    pub async fn started(&self) -> Vec<Arc<Plugin>> {
        self.started.read().await.values().cloned().collect()
    }

    /// Publishes a Mesos `CSI_VOLUME` for `consumer` and returns the host path to bind.
    ///
    /// # Errors
    /// As [`CsiPlugins::plugin`], [`VolumeSpec::from_mesos`] and [`VolumeManager::publish`].
    pub async fn publish(&self, volume: &CsiVolume, consumer: &str, mode: Mode) -> Result<PathBuf> {
        let spec = VolumeSpec::from_mesos(volume)?;
        let plugin = self.plugin(&volume.plugin_name).await?;
        plugin.manager.publish(&spec, consumer, mode).await
    }

    /// `NodeExpandVolume` of a volume of `plugin_type` published on this node (see
    /// [`VolumeManager::expand`]).
    ///
    /// # Errors
    /// As [`CsiPlugins::plugin`] and [`VolumeManager::expand`].
    pub async fn expand(
        &self,
        plugin_type: &str,
        volume_id: &str,
        required_bytes: u64,
        limit_bytes: u64,
    ) -> Result<u64> {
        let plugin = self.plugin(plugin_type).await?;
        plugin
            .manager
            .expand(volume_id, required_bytes, limit_bytes)
            .await
    }

    /// Removes `consumer` from a volume (unpublish/unstage after the last one).
    ///
    /// # Errors
    /// As [`CsiPlugins::plugin`] and [`VolumeManager::unpublish`].
    pub async fn unpublish(
        &self,
        plugin_type: &str,
        volume_id: &str,
        consumer: &str,
    ) -> Result<()> {
        let plugin = self.plugin(plugin_type).await?;
        plugin.manager.unpublish(volume_id, consumer).await
    }

    /// Recovers every started plugin's volumes (see [`VolumeManager::recover`]). State
    /// directories of plugin types that are not started are reported, never touched.
    pub async fn recover(
        &self,
        live: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> BTreeMap<String, Result<RecoveryReport>> {
        let mut out = BTreeMap::new();
        for p in self.started().await {
            out.insert(p.config.plugin_type.clone(), p.manager.recover(live).await);
        }
        for orphan in self.unstarted_state().await {
            out.insert(
                orphan.clone(),
                Err(CsiError::UnknownPlugin {
                    plugin: orphan,
                    reason: "it has volume state on disk but is not started; its volumes are left as they are".to_owned(),
                }),
            );
        }
        out
    }

    /// Plugin types that have a state directory but are not started.
    async fn unstarted_state(&self) -> Vec<String> {
        let root = self.cfg.work_dir.join("csi");
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        let started = self.started.read().await;
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|t| t != "sockets" && !started.contains_key(t))
            .filter(|t| has_records(&root.join(t)))
            .collect();
        out.sort();
        out
    }

    /// Drives every pending intent of every started plugin once (the retry queue).
    pub async fn retry_pending(&self) -> BTreeMap<String, Result<RecoveryReport>> {
        let mut out = BTreeMap::new();
        for p in self.started().await {
            out.insert(
                p.config.plugin_type.clone(),
                p.manager.retry_pending().await,
            );
        }
        out
    }

    /// Runs [`CsiPlugins::retry_pending`] every `every` until the handle is aborted or the
    /// registry is dropped.
    pub fn spawn_retry_loop(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = weak.upgrade() else {
                    return;
                };
                for (plugin, outcome) in this.retry_pending().await {
                    match outcome {
                        Ok(r) => {
                            for e in &r.errors {
                                tracing::warn!(plugin = %plugin, error = %e, "CSI retry still failing");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(plugin = %plugin, error = %e, "CSI retry pass failed")
                        }
                    }
                }
            }
        })
    }

    /// Every configured plugin: started or not, and why not.
    pub async fn status(&self) -> Vec<PluginReport> {
        let mut out = Vec::new();
        let started = self.started.read().await;
        for p in started.values() {
            let supervisor = p.supervisor_status();
            out.push(PluginReport {
                plugin_type: p.config.plugin_type.clone(),
                managed: supervisor.is_some(),
                started: true,
                supervisor,
                error: None,
            });
        }
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (plugin_type, error) in failed {
            if !started.contains_key(&plugin_type) {
                out.push(PluginReport {
                    plugin_type,
                    managed: false,
                    started: false,
                    supervisor: None,
                    error: Some(error),
                });
            }
        }
        out
    }

    /// Stops every managed plugin (SIGTERM, then SIGKILL after the grace period). Volumes
    /// stay as they are: their records let the next start recover them.
    pub async fn shutdown(&self) {
        let plugins: Vec<Arc<Plugin>> = self.started.write().await.values().cloned().collect();
        for p in plugins {
            let sup = p
                .supervisor
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(sup) = sup {
                sup.shutdown().await;
            }
        }
    }
}

fn has_records(type_dir: &Path) -> bool {
    let Ok(names) = std::fs::read_dir(type_dir) else {
        return false;
    };
    names.filter_map(|e| e.ok()).any(|name| {
        std::fs::read_dir(name.path().join("volumes")).is_ok_and(|mut v| v.next().is_some())
    })
}
