//! Consumer-balanced, crash-safe mounting of Docker volume-driver volumes.
//!
//! - **Balanced, identified calls.** In the default [`MountMode::PerConsumer`], each consumer
//!   (container) gets one `Mount {Name, ID: <consumer id>}` when it starts and one
//!   `Unmount {Name, ID: <consumer id>}` when it stops, as Docker does, so plugins that count
//!   references (easyfuse, REX-Ray without `ignoreUsedCount`) see balanced calls. In
//!   [`MountMode::PerAgent`] (compatibility) there is one `Mount` per volume per agent with
//!   `ID = agent:<agent id>`, made for the first consumer, and one `Unmount` after the last.
//! - **Intent before effect.** The record of the volume ([`crate::record`]) is written and
//!   fsync'd before every plugin call: `MOUNTING` before `Get`/`Create`/`Mount`,
//!   `UNMOUNTING` before `Unmount`, with `in_flight` set. After a crash [`VolumeManager::recover`]
//!   therefore knows exactly which `ID`s may be mounted, and unmounts those of consumers that
//!   are gone, and rolls back interrupted mounts.
//! - **Uncertain outcomes.** When a call's outcome is unknown (a crash, a timeout, a lost
//!   connection), the next `Unmount` of that `ID` treats an error *answered by the plugin* as
//!   "already done" (the plugin does not know the `ID`); when the last attempt is known to have
//!   failed, an error stays an error and the record keeps the `UNMOUNTING` intent: a failed
//!   Unmount is neither forgotten (Mesos after MESOS-10126) nor blocks other consumers.
//!   [`VolumeManager::retry_pending`] retries such intents.
//! - **Remove** is refused while the record holds any consumer or mount.
//! - **Explicit create**: before the first `Mount` of a volume, `Get`; `Create` (with the
//!   options as a JSON map) only when the volume's policy or the manager's default allows it.
//!
//! One async mutex per (driver, volume) serializes operations on it inside this process; one
//! manager should own a state directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use berth_mount::MountTable;
use berth_mount::hook;
use berth_mount::store::{Layout, RecordStore, StoreError};

use crate::driver::{Drivers, VolumeDriver};
use crate::error::{DvdiError, Result};
use crate::names::{ConsumerId, DriverName, VolumeName};
use crate::protocol::Endpoint;
use crate::record::{Consumer, MountState, PluginMount, RECORD_FILE, VolumeRecord};
use crate::spec::DockerVolume;

/// How consumers map to plugin mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountMode {
    /// One Mount/Unmount per consumer, `ID` = the consumer id (Docker's semantics).
    PerConsumer,
    /// One Mount per volume per agent, `ID = agent:<agent_id>`.
    PerAgent {
        /// The agent id.
        agent_id: String,
    },
}

/// Settings of a [`VolumeManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where records live (persistent: never a tmpfs such as `/run`).
    pub state_dir: PathBuf,
    /// Per consumer or per agent.
    pub mode: MountMode,
    /// Create missing volumes when a volume's spec does not say (`explicit_create: None`).
    /// Default `false` (explicit create); Mesos's docker/volume isolator behaves as `true`.
    pub create_missing: bool,
    /// The mountinfo file to check mount points in; `None`: do not check.
    pub mountinfo: Option<PathBuf>,
}

impl ManagerConfig {
    /// Per-consumer mounting, explicit create, `/proc/self/mountinfo` checked.
    #[must_use]
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            mode: MountMode::PerConsumer,
            create_missing: false,
            mountinfo: Some(PathBuf::from("/proc/self/mountinfo")),
        }
    }
}

/// The crash hook and its points (shared by every write-ahead manager): this manager calls it
/// with [`berth_mount::hook::Phase::Intent`] once the intent record is durable and a call is
/// next (`/VolumeDriver.Mount` covers `Get` and `Create` before it), and with
/// [`berth_mount::hook::Phase::Done`] when the call returned OK and its outcome is not yet
/// recorded; the subject is `[driver, volume, mount ID]` and the step the call's path
/// ([`Endpoint::path`]).
pub use berth_mount::hook::{Hook, HookPoint};

/// One plugin call recovery made, or an entry it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The plugin.
    pub driver: String,
    /// The volume.
    pub volume: String,
    /// The mount `ID`.
    pub id: String,
}

/// What [`VolumeManager::recover`] (or [`VolumeManager::retry_pending`]) did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Records read.
    pub records: usize,
    /// `Unmount`s that succeeded (or were found already done).
    pub unmounted: Vec<Action>,
    /// Mounts of live consumers whose mount point had vanished from mountinfo and that were
    /// mounted again.
    pub remounted: Vec<Action>,
    /// Mounts dropped without a call because the plugin no longer lists the volume.
    pub vanished: Vec<Action>,
    /// Records removed (nothing left).
    pub removed: usize,
    /// Per-volume failures; those records keep their intents for the next retry.
    pub errors: Vec<DvdiError>,
}

/// The consumer-balanced mount manager (see the module docs).
pub struct VolumeManager<D> {
    drivers: D,
    config: ManagerConfig,
    store: RecordStore<VolumeRecord>,
    hook: Option<Hook>,
}

impl<D> std::fmt::Debug for VolumeManager<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn io<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DvdiError + 'a {
    move |source| DvdiError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

fn action(rec: &VolumeRecord, id: &str) -> Action {
    Action {
        driver: rec.driver.clone(),
        volume: rec.name.clone(),
        id: id.to_owned(),
    }
}

impl<D: Drivers> VolumeManager<D> {
    /// A manager over `drivers`.
    ///
    /// # Errors
    /// [`DvdiError::Io`] when the state directory cannot be created;
    /// [`DvdiError::Invalid`] for an invalid agent id.
    pub fn new(drivers: D, config: ManagerConfig) -> Result<Self> {
        if let MountMode::PerAgent { agent_id } = &config.mode {
            ConsumerId::agent(agent_id)?;
        }
        berth_mount::durable::create_dir_durable(&config.state_dir)
            .map_err(io("create state dir", &config.state_dir))?;
        let store = RecordStore::new(
            config.state_dir.clone(),
            Layout::Nested {
                depth: 2,
                file: RECORD_FILE,
            },
        );
        Ok(Self {
            drivers,
            config,
            store,
            hook: None,
        })
    }

    /// Installs a hook called at every [`HookPoint`].
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// The drivers.
    pub fn drivers(&self) -> &D {
        &self.drivers
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// How many records were written so far (tests check intents are written).
    #[must_use]
    pub fn record_writes(&self) -> u64 {
        self.store.writes() + self.store.removals()
    }

    /// The record path of (driver, volume).
    ///
    /// # Errors
    /// [`DvdiError::Invalid`] when a name cannot be encoded as a path component.
    pub fn record_path(&self, driver: &str, volume: &str) -> Result<PathBuf> {
        self.store.path(&[driver, volume]).map_err(store_err)
    }

    /// Reads the record of (driver, volume), `None` when there is none.
    ///
    /// # Errors
    /// [`DvdiError::Io`], or [`DvdiError::Record`] for an unparsable record.
    pub fn load(&self, driver: &str, volume: &str) -> Result<Option<VolumeRecord>> {
        self.store.load(&[driver, volume]).map_err(store_err)
    }

    fn save(&self, rec: &VolumeRecord) -> Result<()> {
        let key = [rec.driver.as_str(), rec.name.as_str()];
        if rec.is_empty() {
            self.store.remove(&key)
        } else {
            self.store.persist(&key, rec)
        }
        .map_err(store_err)
    }

    fn hook(&self, done: bool, rec: (&str, &str), id: &str, call: Endpoint) {
        if self.hook.is_some() {
            let subject = [rec.0, rec.1, id];
            let point = if done {
                HookPoint::done(&subject, call.path())
            } else {
                HookPoint::intent(&subject, call.path())
            };
            hook::fire(self.hook.as_ref(), point);
        }
    }

    fn mount_id(&self, consumer: &ConsumerId) -> Result<String> {
        match &self.config.mode {
            MountMode::PerConsumer => Ok(consumer.as_str().to_owned()),
            MountMode::PerAgent { agent_id } => {
                Ok(ConsumerId::agent(agent_id)?.as_str().to_owned())
            }
        }
    }

    /// Makes `volume` available to `consumer` and returns the host mount point. Idempotent: a
    /// consumer already mounted gets its recorded mount point without a call.
    ///
    /// # Errors
    /// [`DvdiError::NoSuchVolume`] (explicit create), plugin and transport errors, record
    /// errors. When the Mount's outcome is unknown (timeout, lost connection) the record keeps
    /// a pending rollback for [`VolumeManager::retry_pending`].
    pub async fn mount(&self, volume: &DockerVolume, consumer: &ConsumerId) -> Result<PathBuf> {
        let driver_name = volume.driver.as_str();
        let vol = volume.name.as_str();
        self.record_path(driver_name, vol)?;
        let _g = self.store.lock(&[driver_name, vol]).await;
        let mut rec = self
            .load(driver_name, vol)?
            .unwrap_or_else(|| VolumeRecord::new(driver_name, vol));
        let driver = self.drivers.driver(&volume.driver).await?;

        // Finish what an earlier failure left (a pending unmount of this consumer, a pending
        // rollback) before adding the consumer again.
        if rec.mounts.values().any(|m| m.state != MountState::Mounted)
            && let Err(e) = self.drive(&mut rec, driver.as_ref(), None).await
        {
            tracing::warn!(driver = driver_name, volume = vol, error = %e, "pending unmount still failing");
        }

        let id = self.mount_id(consumer)?;
        if let Some(c) = rec.consumers.get(consumer.as_str())
            && !c.leaving
            && let Some(PluginMount {
                state: MountState::Mounted,
                mountpoint: Some(mp),
                ..
            }) = rec.mounts.get(&c.mount_id)
        {
            return Ok(mp.clone());
        }
        rec.consumers.insert(
            consumer.as_str().to_owned(),
            Consumer {
                mount_id: id.clone(),
                mode: volume.mode,
                leaving: false,
            },
        );
        match rec.mounts.get_mut(&id) {
            Some(m)
                if m.mountpoint.is_some()
                    && (m.state == MountState::Mounted
                        || (m.state == MountState::Unmounting && !m.in_flight)) =>
            {
                // The ID is mounted at the plugin (compatibility mode: the agent's mount; or
                // its Unmount failed for certain): join it without a call.
                m.state = MountState::Mounted;
                m.last_error = None;
                let mp = m.mountpoint.clone().unwrap_or_default();
                self.save(&rec)?;
                return Ok(mp);
            }
            Some(m) => {
                return Err(DvdiError::Pending {
                    plugin: driver_name.to_owned(),
                    volume: vol.to_owned(),
                    id: id.clone(),
                    last_error: m.last_error.clone().unwrap_or_default(),
                });
            }
            None => {}
        }

        // Intent: MOUNTING, durable before Get / Create / Mount.
        rec.mounts.insert(
            id.clone(),
            PluginMount {
                state: MountState::Mounting,
                in_flight: true,
                mountpoint: None,
                was_mount_point: false,
                last_error: None,
            },
        );
        self.save(&rec)?;
        self.hook(false, (driver_name, vol), &id, Endpoint::Mount);
        let explicit = volume
            .explicit_create
            .unwrap_or(!self.config.create_missing);
        let outcome = match self.ensure_exists(driver.as_ref(), volume, explicit).await {
            Ok(()) => driver.mount(vol, &id).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(mp) => {
                self.hook(true, (driver_name, vol), &id, Endpoint::Mount);
                let was_mount_point = self.is_mount_point(&mp);
                rec.mounts.insert(
                    id,
                    PluginMount {
                        state: MountState::Mounted,
                        in_flight: false,
                        mountpoint: Some(mp.clone()),
                        was_mount_point,
                        last_error: None,
                    },
                );
                self.save(&rec)?;
                tracing::info!(driver = driver_name, volume = vol, consumer = %consumer, mountpoint = %mp.display(), "volume mounted");
                Ok(mp)
            }
            Err(e) if e.is_transient() => {
                // Maybe mounted: keep a pending rollback of this ID.
                if let Some(m) = rec.mounts.get_mut(&id) {
                    m.last_error = Some(e.to_string());
                }
                if let Some(c) = rec.consumers.get_mut(consumer.as_str()) {
                    c.leaving = true;
                }
                self.save(&rec)?;
                Err(e)
            }
            Err(e) => {
                // The plugin refused (or we refused to create): nothing is mounted.
                rec.mounts.remove(&id);
                rec.consumers.remove(consumer.as_str());
                self.save(&rec)?;
                Err(e)
            }
        }
    }

    async fn ensure_exists(
        &self,
        driver: &dyn VolumeDriver,
        volume: &DockerVolume,
        explicit: bool,
    ) -> Result<()> {
        let vol = volume.name.as_str();
        let cause = match driver.get(vol).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => None,
            Err(e) if e.is_plugin_answer() => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        if explicit {
            return Err(DvdiError::NoSuchVolume {
                plugin: driver.name().to_owned(),
                volume: vol.to_owned(),
                cause,
            });
        }
        tracing::info!(driver = driver.name(), volume = vol, options = ?volume.options.keys().collect::<Vec<_>>(), "creating missing volume");
        driver.create(vol, &volume.options).await
    }

    fn is_mount_point(&self, p: &Path) -> bool {
        let Some(mi) = &self.config.mountinfo else {
            return false;
        };
        match MountTable::read_file(mi) {
            Ok(t) => t.is_mount_point(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read mountinfo");
                false
            }
        }
    }

    /// Releases `volume` for `consumer`: `Unmount` of its `ID` (per consumer), or of the
    /// agent's `ID` after the last consumer (per agent). An unknown consumer is a no-op.
    ///
    /// # Errors
    /// Plugin and transport errors (the record then keeps the `UNMOUNTING` intent, retried
    /// by [`VolumeManager::retry_pending`]), record errors.
    pub async fn unmount(
        &self,
        driver_name: &DriverName,
        volume: &VolumeName,
        consumer: &ConsumerId,
    ) -> Result<()> {
        let (d, v) = (driver_name.as_str(), volume.as_str());
        self.record_path(d, v)?;
        let _g = self.store.lock(&[d, v]).await;
        let Some(mut rec) = self.load(d, v)? else {
            return Ok(());
        };
        let Some(c) = rec.consumers.get_mut(consumer.as_str()) else {
            return Ok(());
        };
        // Not saved on its own: the Unmount intent (or the consumer's removal) that `drive`
        // writes next carries it. A crash before that leaves the consumer recorded, and the
        // caller's retried cleanup (or `recover`) releases it.
        c.leaving = true;
        let driver = self.drivers.driver(driver_name).await?;
        self.drive(&mut rec, driver.as_ref(), None).await
    }

    /// Converges one record: every mount no live consumer wants is unmounted (intent first),
    /// then leaving consumers without a mount are dropped. `vanished`: the plugin does not
    /// have the volume any more, so unwanted mounts are dropped without a call.
    async fn drive(
        &self,
        rec: &mut VolumeRecord,
        driver: &dyn VolumeDriver,
        mut report: Option<&mut RecoveryReport>,
    ) -> Result<()> {
        let ids: Vec<String> = rec
            .mounts
            .keys()
            .filter(|id| !rec.wanted(id))
            .cloned()
            .collect();
        let mut first_err = None;
        for id in ids {
            let Some(m) = rec.mounts.get_mut(&id) else {
                continue;
            };
            let uncertain = m.in_flight;
            m.state = MountState::Unmounting;
            m.in_flight = true;
            self.save(rec)?;
            self.hook(false, (&rec.driver, &rec.name), &id, Endpoint::Unmount);
            match driver.unmount(&rec.name, &id).await {
                Ok(()) => {
                    self.hook(true, (&rec.driver, &rec.name), &id, Endpoint::Unmount);
                    tracing::info!(driver = %rec.driver, volume = %rec.name, id = %id, "volume unmounted");
                }
                Err(e) if uncertain && e.is_plugin_answer() => {
                    tracing::warn!(driver = %rec.driver, volume = %rec.name, id = %id, error = %e,
                        "Unmount after an interrupted call refused by the plugin; taking it as already done");
                }
                Err(e) => {
                    if let Some(m) = rec.mounts.get_mut(&id) {
                        // A transient failure may have reached the plugin; a refusal did not
                        // do anything.
                        m.in_flight = e.is_transient() || uncertain;
                        m.last_error = Some(e.to_string());
                    }
                    self.save(rec)?;
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                    continue;
                }
            }
            rec.mounts.remove(&id);
            rec.consumers
                .retain(|_, c| !(c.leaving && c.mount_id == id));
            self.save(rec)?;
            if let Some(r) = report.as_deref_mut() {
                r.unmounted.push(action(rec, &id));
            }
        }
        // A leaving consumer is done once its mount is gone, or is still mounted for others
        // (per agent); it stays while its mount has a pending intent.
        let before = rec.consumers.len();
        let mounts = &rec.mounts;
        rec.consumers.retain(|_, c| {
            !(c.leaving
                && mounts
                    .get(&c.mount_id)
                    .is_none_or(|m| m.state == MountState::Mounted))
        });
        if rec.consumers.len() != before {
            self.save(rec)?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Explicitly creates `volume` with its options (`Create`), unless it exists (`Get`).
    ///
    /// # Errors
    /// Plugin and transport errors.
    pub async fn create(&self, volume: &DockerVolume) -> Result<()> {
        let driver = self.drivers.driver(&volume.driver).await?;
        self.ensure_exists(driver.as_ref(), volume, false).await
    }

    /// `Remove` of the volume, refused while any consumer or mount is recorded.
    ///
    /// # Errors
    /// [`DvdiError::InUse`], plugin and transport errors.
    pub async fn remove(&self, driver_name: &DriverName, volume: &VolumeName) -> Result<()> {
        let (d, v) = (driver_name.as_str(), volume.as_str());
        self.record_path(d, v)?;
        let _g = self.store.lock(&[d, v]).await;
        if let Some(rec) = self.load(d, v)?
            && !rec.is_empty()
        {
            let mut consumers: Vec<String> = rec.consumers.keys().cloned().collect();
            consumers.extend(
                rec.mounts
                    .keys()
                    .filter(|id| !rec.consumers.contains_key(*id))
                    .map(|id| format!("mount {id}")),
            );
            return Err(DvdiError::InUse {
                plugin: d.to_owned(),
                volume: v.to_owned(),
                consumers,
            });
        }
        let driver = self.drivers.driver(driver_name).await?;
        driver.remove(v).await
    }

    /// Every record in the state directory: `(driver, volume)` pairs, decoded.
    ///
    /// # Errors
    /// [`DvdiError::Io`] reading the directory.
    pub fn volumes(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .store
            .list()
            .map_err(store_err)?
            .into_iter()
            .filter_map(|k| {
                let [driver, volume]: [String; 2] = k.try_into().ok()?;
                Some((driver, volume))
            })
            .collect())
    }

    /// Recovery after a restart or crash. `keep` holds the consumers that still exist
    /// (running containers and known orphans whose cleanup has not come yet): their mounts
    /// stay (and are mounted again when mountinfo shows a recorded mount point gone); every
    /// other consumer's mount is unmounted, interrupted mounts are rolled back, interrupted
    /// unmounts finished. The plugin's `List` (or `Get`) says which volumes still exist.
    ///
    /// # Errors
    /// Only reading the state directory; per-volume failures are in the report and leave
    /// that record for the next retry.
    pub async fn recover(&self, keep: &BTreeSet<String>) -> Result<RecoveryReport> {
        self.reconcile(Some(keep)).await
    }

    /// Retries every pending intent (failed unmounts, rollbacks) without dropping consumers.
    ///
    /// # Errors
    /// As [`VolumeManager::recover`].
    pub async fn retry_pending(&self) -> Result<RecoveryReport> {
        self.reconcile(None).await
    }

    async fn reconcile(&self, keep: Option<&BTreeSet<String>>) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let table = match &self.config.mountinfo {
            Some(p) if keep.is_some() => match MountTable::read_file(p) {
                Ok(t) => Some(t),
                Err(e) => {
                    report.errors.push(DvdiError::Mountinfo(e));
                    None
                }
            },
            _ => None,
        };
        let mut listed: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        for (driver_name, volume) in self.volumes()? {
            report.records += 1;
            if let Err(e) = self
                .reconcile_one(
                    &driver_name,
                    &volume,
                    keep,
                    table.as_ref(),
                    &mut listed,
                    &mut report,
                )
                .await
            {
                report.errors.push(e);
            }
        }
        Ok(report)
    }

    async fn reconcile_one(
        &self,
        driver_name: &str,
        volume: &str,
        keep: Option<&BTreeSet<String>>,
        table: Option<&MountTable>,
        listed: &mut BTreeMap<String, Option<BTreeSet<String>>>,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        let _g = self.store.lock(&[driver_name, volume]).await;
        let Some(mut rec) = self.load(driver_name, volume)? else {
            return Ok(());
        };
        let dn = DriverName::new(driver_name)?;
        let driver = self.drivers.driver(&dn).await?;

        if let Some(keep) = keep {
            let mut changed = false;
            for (cid, c) in &mut rec.consumers {
                let interrupted = rec
                    .mounts
                    .get(&c.mount_id)
                    .is_some_and(|m| m.state == MountState::Mounting);
                if !c.leaving && (!keep.contains(cid) || interrupted) {
                    c.leaving = true;
                    changed = true;
                }
            }
            if changed {
                self.save(&rec)?;
            }
        }

        // Does the plugin still have the volume? (List once per driver; Get when List fails.)
        let exists = match listed.entry(driver_name.to_owned()) {
            std::collections::btree_map::Entry::Occupied(o) => {
                o.get().as_ref().map(|s| s.contains(volume))
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                let names = driver
                    .list()
                    .await
                    .ok()
                    .map(|l| l.into_iter().map(|i| i.name).collect::<BTreeSet<_>>());
                v.insert(names).as_ref().map(|s| s.contains(volume))
            }
        };
        let exists = match exists {
            Some(e) => Some(e),
            None => match driver.get(volume).await {
                Ok(v) => Some(v.is_some()),
                Err(_) => None,
            },
        };
        if exists == Some(false) {
            let gone: Vec<String> = rec
                .mounts
                .keys()
                .filter(|id| !rec.wanted(id))
                .cloned()
                .collect();
            for id in gone {
                tracing::warn!(driver = driver_name, volume, id = %id, "volume no longer exists at the plugin; dropping its mount record");
                rec.mounts.remove(&id);
                report.vanished.push(action(&rec, &id));
            }
            rec.consumers
                .retain(|_, c| !c.leaving || rec.mounts.contains_key(&c.mount_id));
            self.save(&rec)?;
        }

        // Mount points that vanished (reboot, a crashed FUSE daemon) for live consumers.
        if let Some(table) = table {
            let lost: Vec<String> = rec
                .mounts
                .iter()
                .filter(|(id, m)| {
                    m.state == MountState::Mounted
                        && m.was_mount_point
                        && rec.wanted(id)
                        && m.mountpoint
                            .as_deref()
                            .is_some_and(|p| !table.is_mount_point(p))
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in lost {
                self.remount(&mut rec, driver.as_ref(), &id).await?;
                report.remounted.push(action(&rec, &id));
            }
        }

        let before = report.unmounted.len();
        let r = self.drive(&mut rec, driver.as_ref(), Some(report)).await;
        if rec.is_empty() && (report.unmounted.len() > before || exists == Some(false)) {
            report.removed += 1;
        }
        r
    }

    async fn remount(
        &self,
        rec: &mut VolumeRecord,
        driver: &dyn VolumeDriver,
        id: &str,
    ) -> Result<()> {
        tracing::warn!(driver = %rec.driver, volume = %rec.name, id, "mount point gone; mounting again");
        // Balance the plugin's count first; it may have forgotten the ID already.
        if let Err(e) = driver.unmount(&rec.name, id).await
            && !e.is_plugin_answer()
        {
            return Err(e);
        }
        if let Some(m) = rec.mounts.get_mut(id) {
            m.state = MountState::Mounting;
            m.in_flight = true;
        }
        self.save(rec)?;
        self.hook(false, (&rec.driver, &rec.name), id, Endpoint::Mount);
        let mp = driver.mount(&rec.name, id).await?;
        let was_mount_point = self.is_mount_point(&mp);
        rec.mounts.insert(
            id.to_owned(),
            PluginMount {
                state: MountState::Mounted,
                in_flight: false,
                mountpoint: Some(mp),
                was_mount_point,
                last_error: None,
            },
        );
        self.save(rec)
    }
}

fn store_err(e: StoreError) -> DvdiError {
    match e {
        StoreError::Key {
            index,
            part,
            source,
        } => crate::error::invalid(
            if index == 0 {
                "plugin name"
            } else {
                "volume name"
            },
            &part,
            source.to_string(),
        ),
        StoreError::Io { step, path, source } => DvdiError::Io { step, path, source },
        StoreError::Corrupt { path, reason } => DvdiError::Record { path, reason },
        e @ StoreError::KeyShape { .. } => DvdiError::Record {
            path: PathBuf::new(),
            reason: e.to_string(),
        },
    }
}
