//! The per-(plugin, volume) state machine: stage once per boot, publish per access mode for
//! the first consumer, unpublish and unstage after the last — with an fsync'd intent record
//! before every RPC and the consumer set persisted in the same record.
//!
//! One async mutex per volume serializes publish, unpublish and recovery of that volume (and
//! its record updates; a record is never replaced while a call on it is in flight, unlike
//! Mesos, research `isolators.md` §1.8); different volumes run concurrently.
//!
//! Everything is driven by one reconciler, `drive`: the consumer set says which publications
//! (read-write, read-only) should exist; `drive` tears down what is not wanted (finishing any
//! interrupted unpublish/unstage first), then stages and publishes what is. `publish` and
//! `unpublish` change the consumer set and drive; [`VolumeManager::recover`] reloads every
//! record, resets what a reboot (changed boot id) lost, drops dead consumers and drives. A
//! record left in an intent because a call failed is the persisted retry queue:
//! [`VolumeManager::retry_pending`] drives those again.
//!
//! Paths: `<work_dir>/csi/<type>/<name>/volumes/<enc(id)>/volume.state` for records and
//! `<mounts>/<enc(id)>/{staging,target,target-ro}` with `<mounts>` =
//! `<work_dir>/csi/<type>/<name>/mounts` or `target_path_root`; `enc` is
//! [`berth_mount::names::encode_component`], so `.`, `..` and `/` never become components.
//! `target` is the read-write publication (Mesos's single target), `target-ro` the read-only
//! one when a read-only consumer shares a volume with read-write ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use berth_proto::csi::v1 as pb;
use berth_resources::proto::volume::source::CsiVolume;

use berth_mount::hook::{self, Phase};
use berth_mount::store::{Layout, RecordStore, StoreError};
use berth_mount::{LinuxMounter, MountTable, Mounter, UnmountOptions};

use crate::client::NodeService;
use crate::config::PluginConfig;
use crate::error::{CsiError, Result};
use crate::record::{
    Capability, Mode, Publication, PublishState, RECORD_FILE, SCHEMA_VERSION, StageState,
    VolumeRecord,
};
use crate::secrets::SecretResolver;

/// A pre-provisioned CSI volume as a consumer asks for it.
#[derive(Clone)]
pub struct VolumeSpec {
    /// The CSI volume id.
    pub volume_id: String,
    /// Capability.
    pub capability: Capability,
    /// `volume_context`.
    pub volume_context: BTreeMap<String, String>,
    /// `node_stage_secrets` (Mesos `Secret`s).
    pub stage_secrets: HashMap<String, berth_resources::proto::Secret>,
    /// `node_publish_secrets`.
    pub publish_secrets: HashMap<String, berth_resources::proto::Secret>,
}

impl std::fmt::Debug for VolumeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeSpec")
            .field("volume_id", &self.volume_id)
            .field("capability", &self.capability)
            .field("volume_context", &self.volume_context)
            .field(
                "stage_secrets",
                &self.stage_secrets.keys().collect::<Vec<_>>(),
            )
            .field(
                "publish_secrets",
                &self.publish_secrets.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl VolumeSpec {
    /// A spec from Mesos `Volume.Source.CSIVolume` (`static_provisioning` required).
    ///
    /// # Errors
    /// [`CsiError::Spec`] when `static_provisioning` is missing.
    pub fn from_mesos(csi: &CsiVolume) -> Result<Self> {
        use berth_resources::proto::volume::source::csi_volume::volume_capability::AccessType;
        let sp = csi
            .static_provisioning
            .as_ref()
            .ok_or_else(|| CsiError::Spec {
                plugin: csi.plugin_name.clone(),
                volume_id: String::new(),
                step: "parse volume",
                reason: "static_provisioning is required".to_owned(),
            })?;
        let cap = &sp.volume_capability;
        let capability = match &cap.access_type {
            Some(AccessType::Mount(m)) => Capability {
                block: false,
                fs_type: m.fs_type.clone().unwrap_or_default(),
                mount_flags: m.mount_flags.clone(),
                access_mode: cap.access_mode.mode,
            },
            Some(AccessType::Block(_)) => Capability {
                block: true,
                access_mode: cap.access_mode.mode,
                ..Capability::default()
            },
            None => {
                return Err(CsiError::Spec {
                    plugin: csi.plugin_name.clone(),
                    volume_id: sp.volume_id.clone(),
                    step: "parse volume",
                    reason: "volume_capability has neither block nor mount".to_owned(),
                });
            }
        };
        Ok(Self {
            volume_id: sp.volume_id.clone(),
            capability,
            volume_context: sp
                .volume_context
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            stage_secrets: sp.node_stage_secrets.clone(),
            publish_secrets: sp.node_publish_secrets.clone(),
        })
    }
}

/// The crash hook and its points (shared by every write-ahead manager): this manager calls
/// it with [`Phase::Intent`] once an intent record (`NODE_STAGE`, `NODE_PUBLISH`,
/// `NODE_UNPUBLISH`, `NODE_UNSTAGE`) is durable and its RPC is next, and with [`Phase::Done`]
/// when the RPC returned OK and its outcome is not yet recorded; the subject is
/// `[volume id]`.
pub use berth_mount::hook::{Hook, HookPoint};

/// What [`VolumeManager::recover`] did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Records read.
    pub records: usize,
    /// Volumes reset because the boot id changed.
    pub rebooted: usize,
    /// Volumes whose record was removed (no consumer left, all torn down).
    pub removed: usize,
    /// Stray mount directories (no record) removed, after unmounting anything left in them.
    pub strays: usize,
    /// Per-volume failures; those records stay as they are for the next retry.
    pub errors: Vec<CsiError>,
}

/// How many times a plugin that answered OK to `NodeUnpublishVolume` / `NodeUnstageVolume`
/// but left a mount behind is asked again before berth unmounts the leftovers itself.
const PLUGIN_REPEATS: usize = 2;

/// Settings of a [`VolumeManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The agent work dir; state lives under `<work_dir>/csi/<type>/<name>`.
    pub work_dir: PathBuf,
    /// The boot id; `None` reads `/proc/sys/kernel/random/boot_id`.
    pub boot_id: Option<String>,
    /// Resolves secret references.
    pub secrets: SecretResolver,
}

/// The per-volume stage/publish manager of one plugin.
pub struct VolumeManager<N> {
    node: N,
    plugin_type: String,
    root: PathBuf,
    mounts: PathBuf,
    target_path_exists: bool,
    boot_id: String,
    secrets: SecretResolver,
    store: RecordStore<VolumeRecord>,
    hook: Option<Hook>,
    mounter: LinuxMounter,
}

impl<N> std::fmt::Debug for VolumeManager<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeManager")
            .field("plugin_type", &self.plugin_type)
            .field("root", &self.root)
            .field("boot_id", &self.boot_id)
            .finish_non_exhaustive()
    }
}

struct CallSecrets {
    stage: HashMap<String, String>,
    publish: HashMap<String, String>,
}

fn capability_pb(c: &Capability) -> pb::VolumeCapability {
    use pb::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
    pb::VolumeCapability {
        access_type: Some(if c.block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: c.fs_type.clone(),
                mount_flags: c.mount_flags.clone(),
                volume_mount_group: String::new(),
            })
        }),
        access_mode: Some(AccessMode {
            mode: c.access_mode,
        }),
    }
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl<N: NodeService> VolumeManager<N> {
    /// A manager for `plugin` talking to `node`.
    ///
    /// # Errors
    /// [`CsiError::Io`] when the boot id cannot be read.
    pub fn new(node: N, plugin: &PluginConfig, config: ManagerConfig) -> Result<Self> {
        let io = |step: &'static str, path: &Path| {
            let plugin = plugin.plugin_type.clone();
            let path = path.to_owned();
            move |source| CsiError::Io {
                plugin,
                volume_id: String::new(),
                step,
                path,
                source,
            }
        };
        // Mount tables show canonical paths: the roots are created and canonicalized once, so
        // leftover mounts under them are recognised.
        let root = config
            .work_dir
            .join("csi")
            .join(&plugin.plugin_type)
            .join(&plugin.name);
        std::fs::create_dir_all(&root).map_err(io("create state root", &root))?;
        let root = std::fs::canonicalize(&root).map_err(io("canonicalize state root", &root))?;
        let mounts = plugin
            .target_path_root
            .clone()
            .unwrap_or_else(|| root.join("mounts"));
        std::fs::create_dir_all(&mounts).map_err(io("create mount root", &mounts))?;
        let mounts =
            std::fs::canonicalize(&mounts).map_err(io("canonicalize mount root", &mounts))?;
        let boot_id = match config.boot_id {
            Some(b) => b,
            None => {
                let p = Path::new("/proc/sys/kernel/random/boot_id");
                std::fs::read_to_string(p)
                    .map_err(|source| CsiError::Io {
                        plugin: plugin.plugin_type.clone(),
                        volume_id: String::new(),
                        step: "read boot id",
                        path: p.to_owned(),
                        source,
                    })?
                    .trim()
                    .to_owned()
            }
        };
        let store = RecordStore::new(
            root.join("volumes"),
            Layout::Nested {
                depth: 1,
                file: RECORD_FILE,
            },
        );
        Ok(Self {
            node,
            plugin_type: plugin.plugin_type.clone(),
            store,
            root,
            mounts,
            target_path_exists: plugin.target_path_exists,
            boot_id,
            secrets: config.secrets,
            hook: None,
            mounter: LinuxMounter::new(),
        })
    }

    /// Installs a hook called at every intent point (tests: crash and fault injection).
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// The node service.
    pub fn node(&self) -> &N {
        &self.node
    }

    /// How many fsync'd record writes (and removals) this manager made.
    pub fn record_writes(&self) -> u64 {
        self.store.writes() + self.store.removals()
    }

    fn enc(&self, volume_id: &str) -> Result<String> {
        berth_mount::names::encode_component(volume_id).map_err(|source| CsiError::InvalidId {
            plugin: self.plugin_type.clone(),
            volume_id: volume_id.to_owned(),
            source,
        })
    }

    /// The record file of a volume.
    ///
    /// # Errors
    /// [`CsiError::InvalidId`] for an id that cannot be encoded.
    pub fn record_path(&self, volume_id: &str) -> Result<PathBuf> {
        self.store
            .path(&[volume_id])
            .map_err(|e| self.store_err(volume_id, e))
    }

    /// The mount directory of a volume (`staging`, `target`, `target-ro` inside).
    ///
    /// # Errors
    /// [`CsiError::InvalidId`] for an id that cannot be encoded.
    pub fn mount_dir(&self, volume_id: &str) -> Result<PathBuf> {
        Ok(self.mounts.join(self.enc(volume_id)?))
    }

    fn target_for(&self, volume_id: &str, mode: Mode) -> Result<PathBuf> {
        let dir = self.mount_dir(volume_id)?;
        Ok(match mode {
            Mode::Rw => dir.join("target"),
            Mode::Ro => dir.join("target-ro"),
        })
    }

    fn io(
        &self,
        volume_id: &str,
        step: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> CsiError {
        let plugin = self.plugin_type.clone();
        let volume_id = volume_id.to_owned();
        let path = path.to_owned();
        move |source| CsiError::Io {
            plugin,
            volume_id,
            step,
            path,
            source,
        }
    }

    fn store_err(&self, volume_id: &str, e: StoreError) -> CsiError {
        let plugin = self.plugin_type.clone();
        match e {
            StoreError::Key { source, .. } => CsiError::InvalidId {
                plugin,
                volume_id: volume_id.to_owned(),
                source,
            },
            StoreError::Io {
                step: "read record",
                path,
                source,
            } => CsiError::Record {
                plugin,
                path,
                reason: format!("read: {source}"),
            },
            StoreError::Io { step, path, source } => CsiError::Io {
                plugin,
                volume_id: volume_id.to_owned(),
                step,
                path,
                source,
            },
            StoreError::Corrupt { path, reason } => CsiError::Record {
                plugin,
                path,
                reason,
            },
            e @ StoreError::KeyShape { .. } => CsiError::Record {
                plugin,
                path: self.store.root().to_owned(),
                reason: e.to_string(),
            },
        }
    }

    fn hook(&self, phase: Phase, volume_id: &str, intent: &'static str) {
        if self.hook.is_some() {
            let subject = [volume_id];
            let point = match phase {
                Phase::Done => HookPoint::done(&subject, intent),
                Phase::Intent | Phase::Step => HookPoint::intent(&subject, intent),
            };
            hook::fire(self.hook.as_ref(), point);
        }
    }

    /// Reads a volume's record (`None` when there is none).
    ///
    /// # Errors
    /// [`CsiError::Record`] for an unreadable or corrupt record.
    pub fn load(&self, volume_id: &str) -> Result<Option<VolumeRecord>> {
        self.store
            .load(&[volume_id])
            .map_err(|e| self.store_err(volume_id, e))
    }

    fn persist(&self, rec: &VolumeRecord) -> Result<()> {
        self.store
            .persist(&[&rec.volume_id], rec)
            .map_err(|e| self.store_err(&rec.volume_id, e))
    }

    fn remove_record(&self, rec: &VolumeRecord) -> Result<()> {
        let enc = self.enc(&rec.volume_id)?;
        self.store
            .remove(&[&rec.volume_id])
            .map_err(|e| self.store_err(&rec.volume_id, e))?;
        // Non-recursive removals: a directory that still holds anything (a mount!) stays.
        let mdir = self.mounts.join(&enc);
        for sub in ["staging", "target", "target-ro"] {
            let _ = std::fs::remove_dir(mdir.join(sub));
        }
        let _ = std::fs::remove_dir(&mdir);
        Ok(())
    }

    /// Resets what a reboot lost: with a boot id other than ours, nothing is staged or
    /// published any more.
    fn normalize_boot(&self, rec: &mut VolumeRecord) -> bool {
        match &rec.boot_id {
            Some(b) if *b != self.boot_id => {
                rec.stage = StageState::NodeReady;
                rec.boot_id = None;
                for p in rec.publications.values() {
                    let _ = std::fs::remove_dir(&p.target);
                }
                rec.publications.clear();
                true
            }
            _ => false,
        }
    }

    /// Adds `consumer` (a container id) with `mode` to the volume, staging and publishing as
    /// needed, and returns the host path to bind-mount (the publication's target).
    ///
    /// # Errors
    /// Invalid ids or specs, secret, RPC and I/O errors. On error the consumer is not added
    /// and whatever this call started is torn down again (or left as a pending intent).
    pub async fn publish(&self, spec: &VolumeSpec, consumer: &str, mode: Mode) -> Result<PathBuf> {
        let vid = spec.volume_id.as_str();
        let spec_err = |step: &'static str, reason: String| CsiError::Spec {
            plugin: self.plugin_type.clone(),
            volume_id: vid.to_owned(),
            step,
            reason,
        };
        self.enc(vid)?;
        berth_mount::names::validate_component(consumer)
            .map_err(|e| spec_err("add consumer", format!("consumer id: {e}")))?;
        if mode == Mode::Rw && matches!(spec.capability.access_mode, 2 | 3) {
            return Err(spec_err(
                "add consumer",
                "a read-only access mode cannot be used in read-write mode".to_owned(),
            ));
        }
        // Resolve secrets before any side effect.
        let stage = self
            .secrets
            .resolve(&self.plugin_type, vid, &spec.stage_secrets)?;
        let publish = self
            .secrets
            .resolve(&self.plugin_type, vid, &spec.publish_secrets)?;

        let _guard = self.store.lock(&[vid]).await;
        let mut rec = match self.load(vid)? {
            Some(mut r) => {
                self.normalize_boot(&mut r);
                r
            }
            None => VolumeRecord {
                schema_version: SCHEMA_VERSION,
                plugin_type: self.plugin_type.clone(),
                plugin_name: self
                    .root
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                volume_id: vid.to_owned(),
                stage: StageState::NodeReady,
                boot_id: None,
                staging_path: None,
                capability: spec.capability.clone(),
                volume_context: spec.volume_context.clone(),
                stage_secrets: BTreeMap::new(),
                publish_secrets: BTreeMap::new(),
                publications: BTreeMap::new(),
                consumers: BTreeMap::new(),
            },
        };
        if let Some(&had) = rec.consumers.get(consumer)
            && had != mode
        {
            return Err(spec_err(
                "add consumer",
                format!("consumer {consumer} already uses the volume in mode {had:?}"),
            ));
        }
        if rec.consumers.is_empty() && rec.publications.is_empty() {
            rec.capability = spec.capability.clone();
            rec.volume_context = spec.volume_context.clone();
        } else if rec.capability != spec.capability || rec.volume_context != spec.volume_context {
            return Err(spec_err(
                "add consumer",
                "volume_capability or volume_context differs from the one in use".to_owned(),
            ));
        }
        rec.stage_secrets = stage.stored.clone();
        rec.publish_secrets = publish.stored.clone();
        let added = rec.consumers.insert(consumer.to_owned(), mode).is_none();
        let secrets = CallSecrets {
            stage: stage.values,
            publish: publish.values,
        };
        match self.drive(&mut rec, Some(&secrets), added).await {
            Ok(_) => self.target_for(vid, mode),
            Err(e) => {
                if added {
                    rec.consumers.remove(consumer);
                    if let Err(rollback) = self.drive(&mut rec, None, true).await {
                        tracing::warn!(plugin = %self.plugin_type, volume_id = vid, error = %rollback, "rollback left a pending intent");
                    }
                }
                Err(e)
            }
        }
    }

    /// Removes `consumer` from the volume; after the last consumer of a mode its publication
    /// is unpublished, after the last consumer of all the volume is unstaged and its record
    /// removed. An unknown volume or consumer is a no-op (but pending intents are retried).
    ///
    /// # Errors
    /// RPC and I/O errors; the record then keeps the pending intent (the retry queue).
    pub async fn unpublish(&self, volume_id: &str, consumer: &str) -> Result<()> {
        self.enc(volume_id)?;
        let _guard = self.store.lock(&[volume_id]).await;
        let Some(mut rec) = self.load(volume_id)? else {
            return Ok(());
        };
        let rebooted = self.normalize_boot(&mut rec);
        let removed = rec.consumers.remove(consumer).is_some();
        self.drive(&mut rec, None, rebooted || removed)
            .await
            .map(|_| ())
    }

    /// `NodeExpandVolume` of a volume published (or staged) on this node, after its backend
    /// grew (CSI's `ControllerExpandVolume`, or the operator's storage tools, for a
    /// pre-provisioned volume): the plugin grows what the node sees — the file system of a
    /// mount volume, the device of a block volume — to at least `required_bytes` (and at
    /// most `limit_bytes` when not 0). It is called with the volume's published path (the
    /// read-write one first), its staging path when staged and its capability (no secrets),
    /// under the volume's lock. Returns the capacity the plugin reports
    /// (0: not reported).
    ///
    /// # Errors
    /// [`CsiError::NotCapable`] when the plugin does not advertise `EXPAND_VOLUME`,
    /// [`CsiError::NotPublished`] when no publication is in place, [`CsiError::Spec`] for a
    /// capacity of 0 or a limit below it, RPC errors.
    pub async fn expand(
        &self,
        volume_id: &str,
        required_bytes: u64,
        limit_bytes: u64,
    ) -> Result<u64> {
        self.enc(volume_id)?;
        let spec_err = |reason: String| CsiError::Spec {
            plugin: self.plugin_type.clone(),
            volume_id: volume_id.to_owned(),
            step: "expand",
            reason,
        };
        if required_bytes == 0 || (limit_bytes != 0 && limit_bytes < required_bytes) {
            return Err(spec_err(format!(
                "required {required_bytes} bytes, limit {limit_bytes}: need 0 < required <= limit (0: no limit)"
            )));
        }
        let as_i64 =
            |b: u64| i64::try_from(b).map_err(|_| spec_err(format!("{b} bytes is too large")));
        let (required, limit) = (as_i64(required_bytes)?, as_i64(limit_bytes)?);
        let caps = self.node.capabilities().await?;
        if !caps.expand_volume {
            return Err(CsiError::NotCapable {
                plugin: self.plugin_type.clone(),
                volume_id: volume_id.to_owned(),
                capability: "EXPAND_VOLUME",
            });
        }
        let _guard = self.store.lock(&[volume_id]).await;
        let not_published = || CsiError::NotPublished {
            plugin: self.plugin_type.clone(),
            volume_id: volume_id.to_owned(),
        };
        let rec = self.load(volume_id)?.ok_or_else(not_published)?;
        let published = [Mode::Rw, Mode::Ro].into_iter().find_map(|m| {
            rec.publications
                .get(&m)
                .filter(|p| p.state == PublishState::Published)
                .map(|p| p.target.clone())
        });
        let Some(volume_path) = published else {
            return Err(not_published());
        };
        self.node
            .expand(pb::NodeExpandVolumeRequest {
                volume_id: volume_id.to_owned(),
                volume_path: path_string(&volume_path),
                capacity_range: Some(pb::CapacityRange {
                    required_bytes: required,
                    limit_bytes: limit,
                }),
                staging_target_path: rec
                    .staging_path
                    .as_deref()
                    .filter(|_| rec.stage == StageState::VolReady && caps.stage_unstage)
                    .map(path_string)
                    .unwrap_or_default(),
                volume_capability: Some(capability_pb(&rec.capability)),
                // Mesos volumes carry no node-expand secrets, and the stage and publish ones
                // are not sent to a call they were not given for.
                secrets: HashMap::new(),
            })
            .await
    }

    /// Every volume record, in key order (records that cannot be read are left out: recovery
    /// reports them). Reads every record.
    #[must_use]
    pub fn records(&self) -> Vec<VolumeRecord> {
        let Ok(keys) = self.store.list() else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| self.store.load(&key(k)).ok().flatten())
            .collect()
    }

    /// How many volumes have a pending intent (the retry queue's depth): records that are not
    /// settled (see [`VolumeRecord::is_settled`]). Reads every record.
    #[must_use]
    pub fn pending_count(&self) -> usize {
        let Ok(keys) = self.store.list() else {
            return 0;
        };
        keys.iter()
            .filter(|k| matches!(self.store.load(&key(k)), Ok(Some(r)) if !r.is_settled()))
            .count()
    }

    /// Reloads every record after a restart: resets volumes of an older boot, drops consumers
    /// `live` says are gone (`None`: keep all), and finishes or rolls back every interrupted
    /// intent. After a reboot only volumes with live consumers are staged and published again.
    ///
    /// # Errors
    /// [`CsiError::Io`] when the state directory cannot be listed; per-volume failures are in
    /// the report.
    pub async fn recover(
        &self,
        live: Option<&(dyn Fn(&str) -> bool + Sync)>,
    ) -> Result<RecoveryReport> {
        self.reconcile(live, false).await
    }

    /// Drives again every record left in an intent (the persisted retry queue of failed
    /// unpublish/unstage and interrupted calls); settled records are not touched, so a
    /// periodic retry costs one directory listing and one read per record, no RPC and no
    /// write.
    ///
    /// # Errors
    /// As [`VolumeManager::recover`].
    pub async fn retry_pending(&self) -> Result<RecoveryReport> {
        self.reconcile(None, true).await
    }

    async fn reconcile(
        &self,
        live: Option<&(dyn Fn(&str) -> bool + Sync)>,
        pending_only: bool,
    ) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        let list_err = |e| self.store_err("", e);
        // Record directories without a record: a removal interrupted between the unlink and
        // the rmdir. Removed under the volume's lock (a publish may be about to write its
        // first record there).
        for k in self.store.list_empty().map_err(list_err)? {
            let k = key(&k);
            let _guard = self.store.lock(&k).await;
            if let Err(e) = self.store.sweep(&k) {
                report
                    .errors
                    .push(self.store_err(k.first().copied().unwrap_or(""), e));
            }
        }
        for k in self.store.list().map_err(list_err)? {
            let rec = match self.store.load(&key(&k)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    report
                        .errors
                        .push(self.store_err(k.first().map_or("", String::as_str), e));
                    continue;
                }
            };
            report.records += 1;
            let _guard = self.store.lock(&[&rec.volume_id]).await;
            // Reload under the lock: a concurrent publish may have changed it.
            let mut rec = match self.load(&rec.volume_id) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    report.errors.push(e);
                    continue;
                }
            };
            if pending_only && rec.is_settled() && rec.boot_id.as_deref() == Some(&self.boot_id) {
                continue;
            }
            let rebooted = self.normalize_boot(&mut rec);
            if rebooted {
                report.rebooted += 1;
            }
            let before = rec.consumers.len();
            if let Some(live) = live {
                rec.consumers.retain(|c, _| live(c));
            }
            let dirty = rebooted || rec.consumers.len() != before;
            match self.drive(&mut rec, None, dirty).await {
                Ok(true) => report.removed += 1,
                Ok(false) => {}
                Err(e) => report.errors.push(e),
            }
        }
        self.collect_strays(&mut report).await;
        Ok(report)
    }

    /// Removes mount directories that have no record (a crash between creating a directory
    /// and writing the first intent, or an older layout): whatever is still mounted in them
    /// is unmounted first, and directories are removed one by one, never recursively, so no
    /// data on a mounted volume is ever deleted. Names that are not our encoding are left
    /// alone (a shared `target_path_root`).
    async fn collect_strays(&self, report: &mut RecoveryReport) {
        let Ok(entries) = std::fs::read_dir(&self.mounts) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for enc in names {
            let Ok(volume_id) = berth_mount::names::decode_component(&enc) else {
                continue;
            };
            if self.enc(&volume_id).ok().as_deref() != Some(enc.as_str()) {
                continue;
            }
            let _guard = self.store.lock(&[&volume_id]).await;
            if self.store.path(&[&volume_id]).is_ok_and(|p| p.exists()) {
                continue;
            }
            let dir = self.mounts.join(&enc);
            if let Err(e) = self.unmount_leftovers(&volume_id, &dir) {
                report.errors.push(e);
                continue;
            }
            for sub in ["staging", "target", "target-ro"] {
                let _ = std::fs::remove_dir(dir.join(sub));
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => report.strays += 1,
                Err(e) => report
                    .errors
                    .push(self.io(&volume_id, "remove stray mount dir", &dir)(e)),
            }
        }
    }

    /// Mount points at or below `path` in this thread's mount namespace.
    fn mounted_at_or_below(&self, volume_id: &str, path: &Path) -> Result<Vec<PathBuf>> {
        let table = MountTable::read_current().map_err(|source| CsiError::Mount {
            plugin: self.plugin_type.clone(),
            volume_id: volume_id.to_owned(),
            step: "read mountinfo",
            source: Box::new(source),
        })?;
        Ok(table
            .mounts_at_or_below(path)
            .map(|e| e.mount_point().to_path_buf())
            .collect())
    }

    /// Unmounts everything at or below `path` (busy mounts are detached lazily); `true` when
    /// there was something to unmount.
    fn unmount_leftovers(&self, volume_id: &str, path: &Path) -> Result<bool> {
        let left = self.mounted_at_or_below(volume_id, path)?;
        if left.is_empty() {
            return Ok(false);
        }
        tracing::warn!(plugin = %self.plugin_type, volume_id, path = %path.display(), mounts = left.len(), "unmounting what was left mounted");
        let opts = UnmountOptions {
            detach_fallback: true,
            ..UnmountOptions::default()
        };
        self.mounter
            .unmount_all_at_or_below(path, &opts)
            .map(|_| true)
            .map_err(|source| CsiError::Mount {
                plugin: self.plugin_type.clone(),
                volume_id: volume_id.to_owned(),
                step: "unmount leftover",
                source: Box::new(source),
            })
    }

    /// After a plugin answered OK to an unpublish (`stage == false`) or unstage of `path`:
    /// checks the mount table; a plugin that left a mount (non-idempotent stacking, a lost
    /// race) is asked again, up to [`PLUGIN_REPEATS`] times, then berth unmounts the rest
    /// itself. Nothing is ever leaked at a path berth owns. `true` when berth had to unmount.
    async fn ensure_unmounted(&self, volume_id: &str, path: &Path, stage: bool) -> Result<bool> {
        for _ in 0..PLUGIN_REPEATS {
            let left = self.mounted_at_or_below(volume_id, path)?;
            if left.is_empty() {
                return Ok(false);
            }
            let rpc = if stage {
                "NodeUnstageVolume"
            } else {
                "NodeUnpublishVolume"
            };
            tracing::warn!(plugin = %self.plugin_type, volume_id, path = %path.display(), mounts = left.len(), rpc, "plugin answered OK but left mounts; asking again");
            if stage {
                self.node.unstage(volume_id, path).await?;
            } else {
                self.node.unpublish(volume_id, path).await?;
            }
        }
        self.unmount_leftovers(volume_id, path)
    }

    /// Brings the plugin and the record to what the consumer set wants. Returns `true` when
    /// the volume is gone (record removed). `dirty`: the caller changed the record (consumer
    /// set, boot reset) and it must be written even when no transition happens.
    async fn drive(
        &self,
        rec: &mut VolumeRecord,
        secrets: Option<&CallSecrets>,
        dirty: bool,
    ) -> Result<bool> {
        let vid = rec.volume_id.clone();
        let caps = self.node.capabilities().await?;
        let wanted: BTreeSet<Mode> = rec.consumers.values().copied().collect();
        let mut written = false;

        // 1. Tear down publications nobody wants.
        let modes: Vec<Mode> = rec.publications.keys().copied().collect();
        for mode in modes {
            if !wanted.contains(&mode) {
                self.unpublish_one(rec, mode).await?;
                written = true;
            }
        }

        // 2. No consumer: unstage and forget.
        if wanted.is_empty() {
            if rec.stage != StageState::NodeReady
                && let Some(staging) = rec.staging_path.clone()
            {
                self.unstage(rec, &staging).await?;
            }
            self.remove_record(rec)?;
            return Ok(true);
        }

        // 3. Stage.
        if rec.stage == StageState::NodeUnstage {
            if let Some(staging) = rec.staging_path.clone() {
                self.unstage(rec, &staging).await?;
                written = true;
            }
            rec.stage = StageState::NodeReady;
        }
        if rec.stage != StageState::VolReady {
            if caps.stage_unstage {
                let staging = self.mount_dir(&vid)?.join("staging");
                berth_mount::durable::create_dir_durable(&staging).map_err(self.io(
                    &vid,
                    "mkdir staging",
                    &staging,
                ))?;
                rec.staging_path = Some(staging.clone());
                rec.stage = StageState::NodeStage;
                rec.boot_id = Some(self.boot_id.clone());
                self.persist(rec)?;
                self.hook(Phase::Intent, &vid, "NODE_STAGE");
                let stage_secrets = match secrets {
                    Some(s) => s.stage.clone(),
                    None => {
                        self.secrets
                            .resolve_stored(&self.plugin_type, &vid, &rec.stage_secrets)?
                    }
                };
                self.node
                    .stage(pb::NodeStageVolumeRequest {
                        volume_id: vid.clone(),
                        publish_context: HashMap::new(),
                        staging_target_path: path_string(&staging),
                        volume_capability: Some(capability_pb(&rec.capability)),
                        secrets: stage_secrets,
                        volume_context: rec.volume_context.clone().into_iter().collect(),
                    })
                    .await?;
                self.hook(Phase::Done, &vid, "NODE_STAGE");
                rec.stage = StageState::VolReady;
                self.persist(rec)?;
                written = true;
            } else {
                rec.stage = StageState::VolReady;
                rec.boot_id = Some(self.boot_id.clone());
            }
        }

        // 4. Publish each wanted mode.
        for mode in wanted {
            match rec.publications.get(&mode).map(|p| p.state) {
                Some(PublishState::Published) => continue,
                Some(PublishState::NodeUnpublish) => {
                    self.unpublish_one(rec, mode).await?;
                }
                Some(PublishState::NodePublish) | None => {}
            }
            let target = self.target_for(&vid, mode)?;
            let parent = self.mount_dir(&vid)?;
            berth_mount::durable::create_dir_durable(&parent).map_err(self.io(
                &vid,
                "mkdir target parent",
                &parent,
            ))?;
            if self.target_path_exists {
                // The CO makes the target: a directory for a mount volume, a file for a block
                // volume (the plugin places the device there).
                if rec.capability.block {
                    create_file_durable(&target).map_err(self.io(
                        &vid,
                        "create target file",
                        &target,
                    ))?;
                } else {
                    berth_mount::durable::create_dir_durable(&target).map_err(self.io(
                        &vid,
                        "mkdir target",
                        &target,
                    ))?;
                }
            }
            rec.publications.insert(
                mode,
                Publication {
                    target: target.clone(),
                    state: PublishState::NodePublish,
                },
            );
            self.persist(rec)?;
            self.hook(Phase::Intent, &vid, "NODE_PUBLISH");
            let publish_secrets = match secrets {
                Some(s) => s.publish.clone(),
                None => {
                    self.secrets
                        .resolve_stored(&self.plugin_type, &vid, &rec.publish_secrets)?
                }
            };
            self.node
                .publish(pb::NodePublishVolumeRequest {
                    volume_id: vid.clone(),
                    publish_context: HashMap::new(),
                    staging_target_path: rec
                        .staging_path
                        .as_deref()
                        .filter(|_| caps.stage_unstage)
                        .map(path_string)
                        .unwrap_or_default(),
                    target_path: path_string(&target),
                    volume_capability: Some(capability_pb(&rec.capability)),
                    readonly: mode == Mode::Ro,
                    secrets: publish_secrets,
                    volume_context: rec.volume_context.clone().into_iter().collect(),
                })
                .await?;
            self.hook(Phase::Done, &vid, "NODE_PUBLISH");
            if !target.exists() {
                return Err(CsiError::Target {
                    plugin: self.plugin_type.clone(),
                    volume_id: vid.clone(),
                    step: "NodePublishVolume",
                    path: target,
                    reason: "does not exist after a successful publish",
                });
            }
            if let Some(p) = rec.publications.get_mut(&mode) {
                p.state = PublishState::Published;
            }
            self.persist(rec)?;
            written = true;
        }
        if !written && dirty {
            // Only the consumer set changed (a consumer joined or left a publication).
            self.persist(rec)?;
        }
        Ok(false)
    }

    async fn unpublish_one(&self, rec: &mut VolumeRecord, mode: Mode) -> Result<()> {
        let vid = rec.volume_id.clone();
        let Some(p) = rec.publications.get_mut(&mode) else {
            return Ok(());
        };
        p.state = PublishState::NodeUnpublish;
        let target = p.target.clone();
        self.persist(rec)?;
        self.hook(Phase::Intent, &vid, "NODE_UNPUBLISH");
        self.node.unpublish(&vid, &target).await?;
        self.hook(Phase::Done, &vid, "NODE_UNPUBLISH");
        let berth_unmounted = self.ensure_unmounted(&vid, &target, false).await?;
        if self.target_path_exists || berth_unmounted {
            // Ours to remove (berth made it, or berth had to finish the plugin's unmount): a
            // directory, or a block volume's file.
            let removed = match std::fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => std::fs::remove_dir(&target),
                Ok(_) => std::fs::remove_file(&target),
                Err(e) => Err(e),
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&vid, "remove target", &target)(e)),
            }
        } else if target.exists() {
            return Err(CsiError::Target {
                plugin: self.plugin_type.clone(),
                volume_id: vid,
                step: "NodeUnpublishVolume",
                path: target,
                reason: "still exists after a successful unpublish (the plugin must remove it)",
            });
        }
        rec.publications.remove(&mode);
        self.persist(rec)
    }

    async fn unstage(&self, rec: &mut VolumeRecord, staging: &Path) -> Result<()> {
        let vid = rec.volume_id.clone();
        rec.stage = StageState::NodeUnstage;
        self.persist(rec)?;
        self.hook(Phase::Intent, &vid, "NODE_UNSTAGE");
        self.node.unstage(&vid, staging).await?;
        self.hook(Phase::Done, &vid, "NODE_UNSTAGE");
        self.ensure_unmounted(&vid, staging, true).await?;
        match std::fs::remove_dir(staging) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(&vid, "rmdir staging", staging)(e)),
        }
        rec.stage = StageState::NodeReady;
        rec.boot_id = None;
        Ok(())
    }
}

/// Creates an empty file at `path` (kept if it exists) and makes its directory entry durable.
fn create_file_durable(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match path.parent() {
        Some(parent) => berth_mount::durable::fsync_dir(parent),
        None => Ok(()),
    }
}

/// A listed key as the store's key type.
fn key(k: &[String]) -> Vec<&str> {
    k.iter().map(String::as_str).collect()
}
