//! Container volumes: `prepare` / `cleanup` / `recover` / `status`.
//!
//! A container's config lists Mesos resources (persistent volumes: disks with `persistence`
//! and `volume.container_path`) and Mesos `Volume`s (`SANDBOX_PATH`, `HOST_PATH`,
//! `CSI_VOLUME`; `DOCKER_VOLUME` and the `DVDI_VOLUME_*` environment come with the Docker
//! volume bridge). `prepare` resolves each to a host source (the volume directory, a path in the
//! sandbox, a host path, a CSI publication) and bind-mounts it at the container path, inside
//! the sandbox (relative paths) or the rootfs (absolute paths), never outside them.
//!
//! Crash safety: one fsync'd record per container transition, written before any side effect:
//! `preparing` (the full plan) before the first source or mount, `cleaning` before the first
//! unmount; the record is removed when cleanup is complete. Never one write per volume.
//! [`Isolator::recover`] reads every record and, against the mount table, keeps complete
//! prepares of live containers, rolls back incomplete ones, finishes every cleanup, keeps known
//! orphans untouched until their cleanup arrives, and quarantines corrupt records.
//!
//! Where Mesos differs (research `isolators.md` §1.3, §1.10, §7.2): an absolute container path
//! without a rootfs is refused instead of being mounted over the host's own path (Mesos mounts
//! it inside the container's mount namespace, which berth, working from outside, does not
//! have); nested container paths are mounted parent first instead of being skipped; duplicate
//! container paths in one container are refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use berth_csi::CsiPlugins;
use berth_csi::record::Mode;
use berth_mount::path::{Kind, ResolveMode, Resolver, RootDir};
use berth_mount::{BindOptions, LinuxMounter, MountTable, Mounter, UnmountOptions, Unmounted};
use berth_resources::proto;
use serde::{Deserialize, Serialize};

/// The record schema version.
pub const SCHEMA_VERSION: u32 = 1;

/// What went wrong preparing, cleaning up or recovering a container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The container config is malformed.
    #[error("container config: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A volume of the container cannot be used as asked.
    #[error("container {container}: {volume}: {reason}")]
    Volume {
        /// The container id.
        container: String,
        /// The volume, as named in errors (`persistent volume <id>`, `CSI volume <plugin>/<id>` ...).
        volume: String,
        /// What is wrong.
        reason: String,
    },
    /// A mount step failed.
    #[error("container {container}: {volume}: {source}")]
    Mount {
        /// The container id.
        container: String,
        /// The volume.
        volume: String,
        /// The mount engine's error.
        source: Box<berth_mount::MountError>,
    },
    /// A Docker volume-driver step failed.
    #[error("container {container}: {volume}: {source}")]
    Dvdi {
        /// The container id.
        container: String,
        /// The volume.
        volume: String,
        /// The bridge's error.
        source: Box<berth_dvdi::DvdiError>,
    },
    /// A CSI step failed.
    #[error("container {container}: {volume}: {source}")]
    Csi {
        /// The container id.
        container: String,
        /// The volume.
        volume: String,
        /// The CSI error.
        source: Box<berth_csi::CsiError>,
    },
    /// A file-system step on berth's own records failed.
    #[error("container {container}: {step} {path}: {source}")]
    Io {
        /// The container id.
        container: String,
        /// The step.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record cannot be read; the container is quarantined.
    #[error("container {container}: record {path}: {reason}")]
    Record {
        /// The container id (its directory name when the record is unreadable).
        container: String,
        /// The record file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `prepare` for a container that has a record already.
    #[error("container {container}: already prepared (clean it up first)")]
    AlreadyPrepared {
        /// The container id.
        container: String,
    },
}

type Result<T, E = ContainerError> = std::result::Result<T, E>;

/// A boxed future, for the object-safe [`DockerVolumes`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The Docker volume-driver side (implemented by [`berth_dvdi::VolumeManager`]): one Mount per
/// consumer with the consumer's id, one Unmount per consumer.
pub trait DockerVolumes: Send + Sync {
    /// Mounts `volume` for `consumer`; the host mount point.
    fn mount<'a>(
        &'a self,
        volume: &'a berth_dvdi::DockerVolume,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<PathBuf, berth_dvdi::DvdiError>>;
    /// Releases `driver`/`name` for `consumer`.
    fn unmount<'a>(
        &'a self,
        driver: &'a str,
        name: &'a str,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<(), berth_dvdi::DvdiError>>;
    /// The host mount point `consumer` got for `driver`/`name`, while it is mounted.
    fn mountpoint(&self, driver: &str, name: &str, consumer: &str) -> Option<PathBuf>;
    /// The consumers of `driver`/`name`.
    fn consumers(&self, driver: &str, name: &str) -> Vec<String>;
    /// After a restart: unmounts every consumer not in `keep`; the number of records read.
    fn recover<'a>(
        &'a self,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<(usize, Vec<String>), berth_dvdi::DvdiError>>;
}

impl<D: berth_dvdi::Drivers + 'static> DockerVolumes for berth_dvdi::VolumeManager<D> {
    fn mount<'a>(
        &'a self,
        volume: &'a berth_dvdi::DockerVolume,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<PathBuf, berth_dvdi::DvdiError>> {
        Box::pin(async move {
            let consumer = berth_dvdi::ConsumerId::new(consumer)?;
            berth_dvdi::VolumeManager::mount(self, volume, &consumer).await
        })
    }

    fn unmount<'a>(
        &'a self,
        driver: &'a str,
        name: &'a str,
        consumer: &'a str,
    ) -> BoxFuture<'a, Result<(), berth_dvdi::DvdiError>> {
        Box::pin(async move {
            let driver = berth_dvdi::DriverName::new(driver)?;
            let name = berth_dvdi::VolumeName::new(name)?;
            let consumer = berth_dvdi::ConsumerId::new(consumer)?;
            berth_dvdi::VolumeManager::unmount(self, &driver, &name, &consumer).await
        })
    }

    fn consumers(&self, driver: &str, name: &str) -> Vec<String> {
        self.load(driver, name)
            .ok()
            .flatten()
            .map(|r| r.consumers.into_keys().collect())
            .unwrap_or_default()
    }

    fn mountpoint(&self, driver: &str, name: &str, consumer: &str) -> Option<PathBuf> {
        let rec = self.load(driver, name).ok()??;
        let c = rec.consumers.get(consumer)?;
        rec.mounts.get(&c.mount_id)?.mountpoint.clone()
    }

    fn recover<'a>(
        &'a self,
        keep: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<(usize, Vec<String>), berth_dvdi::DvdiError>> {
        Box::pin(async move {
            let r = berth_dvdi::VolumeManager::recover(self, keep).await?;
            Ok((
                r.records,
                r.errors.iter().map(ToString::to_string).collect(),
            ))
        })
    }
}

/// Where persistent volumes live on this agent (implemented by the checkpointed resources).
pub trait PersistentVolumes: Send + Sync {
    /// The host directory of a persistent volume (a disk resource with `persistence`).
    ///
    /// # Errors
    /// A description of why the resource has no usable directory.
    fn volume_path(&self, resource: &proto::Resource) -> std::result::Result<PathBuf, String>;
}

/// A container as `prepare` takes it (the JSON config file of `berth-isolator prepare`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerConfig {
    /// The container id: one path component.
    pub container_id: String,
    /// The sandbox directory (absolute, existing).
    pub sandbox: PathBuf,
    /// The container's root filesystem, when it has an image.
    pub rootfs: Option<PathBuf>,
    /// Mesos `Resource`s of the container (persistent volumes among them).
    pub resources: Vec<proto::Resource>,
    /// Mesos `Volume`s of the container.
    pub volumes: Vec<proto::Volume>,
    /// The environment (`DVDI_VOLUME_*`).
    pub environment: BTreeMap<String, String>,
}

/// The longest container id: its record is `<id>.json`, one file name (255 bytes at most).
pub const MAX_ID_LEN: usize = 250;

/// A container id must be one path component of at most [`MAX_ID_LEN`] bytes.
fn check_id(id: &str) -> Result<()> {
    berth_mount::names::validate_component(id)
        .map_err(|e| cfg_err(format!("container_id: {e}")))?;
    if id.len() > MAX_ID_LEN {
        return Err(cfg_err(format!(
            "container_id: {} bytes, at most {MAX_ID_LEN}",
            id.len()
        )));
    }
    Ok(())
}

fn cfg_err(reason: impl Into<String>) -> ContainerError {
    ContainerError::Config {
        reason: reason.into(),
    }
}

impl ContainerConfig {
    /// Parses the JSON config: keys `container_id`, `sandbox`, `rootfs` (optional),
    /// `resources` (Mesos Resource JSON array), `volumes` (Mesos Volume JSON array),
    /// `environment` (object of strings). Unknown keys are refused (typos).
    ///
    /// # Errors
    /// [`ContainerError::Config`] naming the key or element.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| cfg_err(format!("not JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| cfg_err("must be a JSON object"))?;
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "container_id" | "sandbox" | "rootfs" | "resources" | "volumes" | "environment"
            ) {
                return Err(cfg_err(format!("unknown key {key:?}")));
            }
        }
        let string = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(cfg_err(format!("{key} must be a string"))),
            }
        };
        let container_id =
            string("container_id")?.ok_or_else(|| cfg_err("container_id is required"))?;
        let sandbox = string("sandbox")?.ok_or_else(|| cfg_err("sandbox is required"))?;
        let rootfs = string("rootfs")?;
        let list = |key: &str| -> Result<&[serde_json::Value]> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(&[]),
                Some(serde_json::Value::Array(a)) => Ok(a),
                Some(_) => Err(cfg_err(format!("{key} must be an array"))),
            }
        };
        let resources = list("resources")?
            .iter()
            .enumerate()
            .map(|(i, r)| {
                berth_resources::json::from_json_value::<proto::Resource>(r)
                    .map_err(|e| cfg_err(format!("resources[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let volumes = list("volumes")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                berth_resources::json::from_json_value::<proto::Volume>(v)
                    .map_err(|e| cfg_err(format!("volumes[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut environment = BTreeMap::new();
        match obj.get("environment") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(env)) => {
                for (k, v) in env {
                    let v = v
                        .as_str()
                        .ok_or_else(|| cfg_err(format!("environment.{k} must be a string")))?;
                    environment.insert(k.clone(), v.to_owned());
                }
            }
            Some(_) => return Err(cfg_err("environment must be an object of strings")),
        }
        let cfg = Self {
            container_id,
            sandbox: PathBuf::from(sandbox),
            rootfs: rootfs.map(PathBuf::from),
            resources,
            volumes,
            environment,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks the id and the directories.
    ///
    /// # Errors
    /// [`ContainerError::Config`].
    pub fn check(&self) -> Result<()> {
        check_id(&self.container_id)?;
        for (key, dir) in std::iter::once(("sandbox", &self.sandbox))
            .chain(self.rootfs.iter().map(|r| ("rootfs", r)))
        {
            if !dir.is_absolute() {
                return Err(cfg_err(format!("{key} {} must be absolute", dir.display())));
            }
            if !dir.is_dir() {
                return Err(cfg_err(format!(
                    "{key} {} is not a directory",
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// Where a volume's host source comes from; persisted in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A persistent volume's directory.
    Persistent {
        /// The volume directory.
        path: PathBuf,
        /// The persistence id.
        persistence_id: String,
    },
    /// `SANDBOX_PATH` (`SELF`): a path inside the container's own sandbox.
    SandboxPath {
        /// The container's sandbox.
        sandbox: PathBuf,
        /// The path relative to the sandbox.
        path: PathBuf,
    },
    /// `HOST_PATH`: an existing host path.
    HostPath {
        /// The host path.
        path: PathBuf,
    },
    /// `DOCKER_VOLUME` or a `DVDI_VOLUME_*` variable: a Docker volume-driver Mount with this
    /// container as the consumer `ID`.
    Docker {
        /// The driver (plugin) name.
        driver: String,
        /// The volume name.
        name: String,
    },
    /// `CSI_VOLUME`: a publication of the CSI volume manager, with this container as consumer.
    Csi {
        /// The plugin type.
        plugin: String,
        /// The CSI volume id.
        volume_id: String,
    },
}

/// One planned (and, once prepared, mounted) volume of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    /// How errors and status name it.
    pub name: String,
    /// The source.
    pub source: Source,
    /// The root the container path is resolved in (sandbox or rootfs).
    pub root: PathBuf,
    /// The path inside `root` (relative).
    pub path_in_root: PathBuf,
    /// Read-only.
    pub read_only: bool,
    /// Whether the source is bind-mounted into the container. `false` only for a
    /// `DVDI_VOLUME_*` volume without `_CONTAINERPATH` (the DVDI contract: the task uses the
    /// host mount point itself).
    #[serde(default = "yes")]
    pub bind: bool,
}

fn yes() -> bool {
    true
}

/// One volume of a plan: the persisted entry and what acquiring its source needs.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The part that is persisted in the record.
    pub entry: VolumeEntry,
    csi: Option<proto::volume::source::CsiVolume>,
    docker: Option<berth_dvdi::DockerVolume>,
    /// The sandbox's owner (uid, gid): the task's user.
    sandbox_owner: Option<(u32, u32)>,
}

impl Planned {
    fn new(entry: VolumeEntry) -> Self {
        Self {
            entry,
            csi: None,
            docker: None,
            sandbox_owner: None,
        }
    }
}

/// A container record's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Intent: prepare may have done any part of the plan (complete when every target is
    /// mounted).
    Preparing,
    /// Intent: cleanup started; whatever is left is torn down.
    Cleaning,
}

/// The persisted record of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Format version.
    pub schema_version: u32,
    /// The container.
    pub container_id: String,
    /// State.
    pub state: RecordState,
    /// The sandbox.
    pub sandbox: PathBuf,
    /// The rootfs.
    pub rootfs: Option<PathBuf>,
    /// The plan, parents before nested paths.
    pub volumes: Vec<VolumeEntry>,
    /// Why the last teardown attempt failed (the record then stays for recovery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a test hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint<'a> {
    /// The intent record of `step` (`preparing`, `cleaning`) is durable.
    Intent {
        /// The container.
        container: &'a str,
        /// The step.
        step: &'static str,
    },
    /// Volume number `index` of the plan got its source / its mount / was unmounted / released.
    Volume {
        /// The container.
        container: &'a str,
        /// `source`, `mounted`, `unmounted`, `released`.
        step: &'static str,
        /// Index in the plan.
        index: usize,
    },
}

/// A test hook (crash injection).
pub type Hook = Arc<dyn Fn(HookPoint<'_>) + Send + Sync>;

/// A prepared mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The volume's name.
    pub name: String,
    /// The host path of the mount point.
    pub target: PathBuf,
    /// The host source.
    pub source: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// What [`Isolator::recover`] did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Live containers, kept as they are (a live container is never torn down by recovery).
    pub kept: Vec<String>,
    /// Of `kept`, those with a volume not mounted at its container path now (an interrupted
    /// prepare, or a task that moved a mount point): reported, left to their cleanup.
    pub incomplete: Vec<String>,
    /// Known orphans left untouched.
    pub orphans_kept: Vec<String>,
    /// Containers whose volumes were torn down (dead, interrupted prepare, interrupted cleanup).
    pub cleaned: Vec<String>,
    /// Quarantined records (moved to `<work_dir>/containers-quarantine/`).
    pub quarantined: Vec<String>,
    /// CSI volumes recovered, per plugin (records read).
    pub csi_records: usize,
    /// Errors; those records stay for the next attempt.
    pub errors: Vec<ContainerError>,
}

/// One container in [`Isolator::status`].
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    /// The container.
    pub container_id: String,
    /// `preparing`, `prepared`, `cleaning`.
    pub state: &'static str,
    /// Its volumes.
    pub volumes: Vec<VolumeStatus>,
    /// Why the last teardown attempt failed, if it did.
    pub last_error: Option<String>,
}

/// One volume in [`ContainerStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct VolumeStatus {
    /// The volume's name.
    pub name: String,
    /// The container path's host path, when it resolves.
    pub target: Option<PathBuf>,
    /// Whether a mount is at the target now.
    pub mounted: bool,
    /// Read-only.
    pub read_only: bool,
    /// Every container using the volume now (persistent: containers with it in their
    /// record; CSI and Docker: the consumer sets of those managers).
    pub consumers: Vec<String>,
}

/// The per-agent container volume isolator.
pub struct Isolator {
    work_dir: PathBuf,
    mounter: LinuxMounter,
    persistent: Arc<dyn PersistentVolumes>,
    csi: Option<Arc<CsiPlugins>>,
    docker: Option<Arc<dyn DockerVolumes>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Prepares and cleanups hold it shared, `recover` exclusively: recovery judges every
    /// record against one consistent mount table and set of records.
    ops: tokio::sync::RwLock<()>,
    busy: Mutex<BTreeSet<String>>,
    hook: Option<Hook>,
    writes: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Isolator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolator")
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

fn depth(p: &Path) -> usize {
    p.components().count()
}

impl Isolator {
    /// An isolator with state under `<work_dir>/containers`.
    #[must_use]
    pub fn new(
        work_dir: impl Into<PathBuf>,
        persistent: Arc<dyn PersistentVolumes>,
        csi: Option<Arc<CsiPlugins>>,
    ) -> Self {
        Self {
            work_dir: work_dir.into(),
            mounter: LinuxMounter::new(),
            persistent,
            csi,
            docker: None,
            locks: Mutex::new(HashMap::new()),
            ops: tokio::sync::RwLock::new(()),
            busy: Mutex::new(BTreeSet::new()),
            hook: None,
            writes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Adds Docker volume-driver volumes (`DOCKER_VOLUME`, `DVDI_VOLUME_*`).
    #[must_use]
    pub fn with_docker(mut self, docker: Arc<dyn DockerVolumes>) -> Self {
        self.docker = Some(docker);
        self
    }

    /// Installs a hook called at every intent and volume step (tests: crash injection).
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// How many fsync'd record writes this isolator made.
    #[must_use]
    pub fn record_writes(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The CSI plugins, if configured.
    #[must_use]
    pub fn csi(&self) -> Option<&Arc<CsiPlugins>> {
        self.csi.as_ref()
    }

    fn hook(&self, p: HookPoint<'_>) {
        if let Some(h) = &self.hook {
            h(p);
        }
    }

    fn records_dir(&self) -> PathBuf {
        self.work_dir.join("containers")
    }

    /// `<work_dir>/containers/<id>.json`: flat, so a record's first write needs no new
    /// directory (and no fsync of one) beyond `containers/` itself.
    fn record_path(&self, id: &str) -> PathBuf {
        self.records_dir().join(format!("{id}.json"))
    }

    /// The ids of every record (file names `<id>.json`; berth's own temp files and anything
    /// else are skipped), sorted.
    fn record_ids(&self) -> Result<Vec<String>> {
        let dir = self.records_dir();
        let mut ids: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with(berth_mount::durable::TEMP_PREFIX))
                .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Self::io("", "list records", &dir)(e)),
        };
        ids.sort();
        Ok(ids)
    }

    /// Takes a container's operation lock. Its map entry is removed when the last holder (or
    /// waiter) lets go, so the map holds only containers with an operation under way.
    async fn lock_id(&self, id: &str) -> IdLock<'_> {
        let lock = {
            let mut l = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(l.entry(id.to_owned()).or_default())
        };
        IdLock {
            locks: &self.locks,
            id: id.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// How many containers' operation locks are held or awaited now (0 when idle).
    #[must_use]
    pub fn locks_in_use(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn io(
        id: &str,
        step: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> ContainerError {
        let container = id.to_owned();
        let path = path.to_owned();
        move |source| ContainerError::Io {
            container,
            step,
            path,
            source,
        }
    }

    /// Reads a container's record (`None` when there is none).
    ///
    /// # Errors
    /// [`ContainerError::Record`] for an unreadable or corrupt record.
    pub fn load(&self, id: &str) -> Result<Option<ContainerRecord>> {
        check_id(id)?;
        let path = self.record_path(id);
        let bad = |reason: String| ContainerError::Record {
            container: id.to_owned(),
            path: path.clone(),
            reason,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(id, "read record", &path)(e)),
        };
        let rec: ContainerRecord =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("parse: {e}")))?;
        if rec.schema_version != SCHEMA_VERSION || rec.container_id != id {
            return Err(bad(format!(
                "schema {} for container {:?}",
                rec.schema_version, rec.container_id
            )));
        }
        Ok(Some(rec))
    }

    fn persist(&self, rec: &ContainerRecord) -> Result<()> {
        let id = &rec.container_id;
        let dir = self.records_dir();
        if !dir.is_dir() {
            berth_mount::durable::create_dir_durable(&dir).map_err(Self::io(
                id,
                "create records dir",
                &dir,
            ))?;
        }
        let path = self.record_path(id);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| ContainerError::Record {
            container: id.clone(),
            path: path.clone(),
            reason: format!("encode: {e}"),
        })?;
        berth_mount::durable::write_atomic(&path, &bytes).map_err(Self::io(
            id,
            "write record",
            &path,
        ))?;
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Removes a record once everything it describes is undone. The unlink is not fsync'd:
    /// if a crash loses it, the `cleaning` record comes back and recovery replays a teardown
    /// that finds nothing left to do.
    fn remove_record(&self, id: &str) -> Result<()> {
        let path = self.record_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(id, "remove record", &path)(e)),
        }
    }

    /// Validates the config and resolves every volume into a plan, without side effects:
    /// parents before nested paths, duplicate container paths refused.
    ///
    /// # Errors
    /// [`ContainerError::Config`] / [`ContainerError::Volume`] naming the volume.
    pub fn plan(&self, cfg: &ContainerConfig) -> Result<Vec<Planned>> {
        cfg.check()?;
        let id = &cfg.container_id;
        let vol_err = |volume: &str, reason: String| ContainerError::Volume {
            container: id.clone(),
            volume: volume.to_owned(),
            reason,
        };
        let mut plan = Vec::new();
        let place = |name: &str, container_path: &str| -> Result<(PathBuf, PathBuf)> {
            if container_path.is_empty() {
                return Err(vol_err(name, "container_path is empty".to_owned()));
            }
            let p = Path::new(container_path);
            if p.components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
                || container_path.contains('\0')
            {
                return Err(vol_err(
                    name,
                    format!(
                        "container_path {container_path:?} has '.' or '..' components or a NUL"
                    ),
                ));
            }
            if p.is_absolute() {
                let Some(rootfs) = &cfg.rootfs else {
                    return Err(vol_err(
                        name,
                        format!(
                            "absolute container_path {container_path:?} without a rootfs: berth mounts from outside the container and would cover the host's own path; use a relative path (under the sandbox) or give the container a rootfs"
                        ),
                    ));
                };
                let rel: PathBuf = p.components().skip(1).collect();
                if rel.as_os_str().is_empty() {
                    return Err(vol_err(name, "container_path is the root".to_owned()));
                }
                Ok((rootfs.clone(), rel))
            } else {
                Ok((cfg.sandbox.clone(), p.components().collect()))
            }
        };
        let mode_ro = |mode: i32| mode == proto::volume::Mode::Ro as i32;

        // Persistent volumes from the resources.
        for r in &cfg.resources {
            let Some(disk) = &r.disk else { continue };
            let (Some(persistence), Some(volume)) = (&disk.persistence, &disk.volume) else {
                continue;
            };
            let name = format!("persistent volume {}", persistence.id);
            let path = self
                .persistent
                .volume_path(r)
                .map_err(|reason| vol_err(&name, reason))?;
            if !path.is_dir() {
                return Err(vol_err(
                    &name,
                    format!(
                        "volume directory {} does not exist (was the volume created on this agent?)",
                        path.display()
                    ),
                ));
            }
            let (root, rel) = place(&name, &volume.container_path)?;
            plan.push(Planned::new(VolumeEntry {
                name,
                source: Source::Persistent {
                    path,
                    persistence_id: persistence.id.clone(),
                },
                root,
                path_in_root: rel,
                read_only: mode_ro(volume.mode),
                bind: true,
            }));
        }

        // Volumes.
        use proto::volume::source::Type;
        for (i, v) in cfg.volumes.iter().enumerate() {
            let read_only = mode_ro(v.mode);
            let source = v.source.as_ref();
            let kind = source.map_or(Type::Unknown, |s| s.r#type());
            let mut docker = None;
            let (name, src, csi) = match (kind, source) {
                (Type::Unknown, _) if v.host_path.is_some() => {
                    let hp = v.host_path.clone().unwrap_or_default();
                    (
                        format!("host path {hp}"),
                        Source::HostPath {
                            path: PathBuf::from(hp),
                        },
                        None,
                    )
                }
                (Type::HostPath, Some(s)) => {
                    let hp = s
                        .host_path
                        .as_ref()
                        .map(|h| h.path.clone())
                        .unwrap_or_default();
                    (
                        format!("host path {hp}"),
                        Source::HostPath {
                            path: PathBuf::from(hp),
                        },
                        None,
                    )
                }
                (Type::SandboxPath, Some(s)) => {
                    let sp = s.sandbox_path.as_ref().ok_or_else(|| {
                        vol_err(
                            &format!("volumes[{i}]"),
                            "SANDBOX_PATH without sandbox_path".to_owned(),
                        )
                    })?;
                    let name = format!("sandbox path {}", sp.path);
                    if sp.r#type() == proto::volume::source::sandbox_path::Type::Parent {
                        return Err(vol_err(
                            &name,
                            "PARENT sandbox paths need a parent container; berth supports SELF"
                                .to_owned(),
                        ));
                    }
                    let p = Path::new(&sp.path);
                    if sp.path.is_empty()
                        || p.is_absolute()
                        || p.components().any(|c| !matches!(c, Component::Normal(_)))
                    {
                        return Err(vol_err(
                            &name,
                            "path must be relative, without '.' or '..'".to_owned(),
                        ));
                    }
                    (
                        name,
                        Source::SandboxPath {
                            sandbox: cfg.sandbox.clone(),
                            path: p.to_owned(),
                        },
                        None,
                    )
                }
                (Type::CsiVolume, Some(s)) => {
                    let csi = s.csi_volume.clone().ok_or_else(|| {
                        vol_err(
                            &format!("volumes[{i}]"),
                            "CSI_VOLUME without csi_volume".to_owned(),
                        )
                    })?;
                    let vid = csi
                        .static_provisioning
                        .as_ref()
                        .map(|sp| sp.volume_id.clone())
                        .unwrap_or_default();
                    let name = format!("CSI volume {}/{}", csi.plugin_name, vid);
                    if self.csi.is_none() {
                        return Err(vol_err(
                            &name,
                            "no CSI plugin configuration directory is set".to_owned(),
                        ));
                    }
                    (
                        name,
                        Source::Csi {
                            plugin: csi.plugin_name.clone(),
                            volume_id: vid,
                        },
                        Some(csi),
                    )
                }
                (Type::DockerVolume, Some(_)) => {
                    let dv = berth_dvdi::spec::from_mesos(v)
                        .map_err(|e| vol_err(&format!("volumes[{i}]"), e.to_string()))?
                        .ok_or_else(|| {
                            vol_err(
                                &format!("volumes[{i}]"),
                                "DOCKER_VOLUME without docker_volume".to_owned(),
                            )
                        })?;
                    let name = format!("Docker volume {}/{}", dv.driver.as_str(), dv.name.as_str());
                    let src = Source::Docker {
                        driver: dv.driver.as_str().to_owned(),
                        name: dv.name.as_str().to_owned(),
                    };
                    docker = Some(dv);
                    (name, src, None)
                }
                (t, _) => {
                    return Err(vol_err(
                        &format!("volumes[{i}]"),
                        format!("volume source {t:?} is not supported here"),
                    ));
                }
            };
            if let Source::HostPath { path } = &src
                && (!path.is_absolute() || !path.exists())
            {
                return Err(vol_err(
                    &name,
                    "host path must be absolute and exist".to_owned(),
                ));
            }
            let (root, rel) = place(&name, &v.container_path)?;
            plan.push(Planned {
                entry: VolumeEntry {
                    name,
                    source: src,
                    root,
                    path_in_root: rel,
                    read_only,
                    bind: true,
                },
                csi,
                docker,
                sandbox_owner: None,
            });
        }

        // The DVDI environment contract (`DVDI_VOLUME_NAME`, `_DRIVER`, `_OPTS`,
        // `_CONTAINERPATH`, `_EXPLICITCREATE`, suffixes 1-9).
        let env = berth_dvdi::spec::from_env(
            cfg.environment
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .map_err(|e| vol_err("DVDI_VOLUME_* environment", e.to_string()))?;
        for w in &env.warnings {
            tracing::warn!(container = %id, warning = %w, "DVDI environment");
        }
        for dv in env.volumes {
            let name = format!(
                "Docker volume {}/{} (DVDI environment)",
                dv.driver.as_str(),
                dv.name.as_str()
            );
            let read_only = dv.mode == berth_dvdi::Mode::Ro;
            let (root, rel, bind) = match &dv.container_path {
                Some(p) => {
                    let text = p
                        .to_str()
                        .ok_or_else(|| vol_err(&name, "container path is not UTF-8".to_owned()))?;
                    let (root, rel) = place(&name, text)?;
                    (root, rel, true)
                }
                None => (cfg.sandbox.clone(), PathBuf::new(), false),
            };
            plan.push(Planned {
                entry: VolumeEntry {
                    name,
                    source: Source::Docker {
                        driver: dv.driver.as_str().to_owned(),
                        name: dv.name.as_str().to_owned(),
                    },
                    root,
                    path_in_root: rel,
                    read_only,
                    bind,
                },
                csi: None,
                docker: Some(dv),
                sandbox_owner: None,
            });
        }
        if self.docker.is_none()
            && let Some(p) = plan.iter().find(|p| p.docker.is_some())
        {
            return Err(vol_err(
                &p.entry.name,
                "Docker volume drivers are not configured".to_owned(),
            ));
        }

        // The same (plugin, volume) twice in one container is refused, as Mesos does.
        let mut csi_keys = BTreeSet::new();
        let mut targets = BTreeSet::new();
        let mut docker_keys = BTreeSet::new();
        for v in plan.iter().map(|p| &p.entry) {
            if let Source::Docker { driver, name } = &v.source
                && !docker_keys.insert((driver.clone(), name.clone()))
            {
                return Err(vol_err(&v.name, "used twice by one container".to_owned()));
            }
            if !v.bind {
                continue;
            }
            if let Source::Csi { plugin, volume_id } = &v.source
                && !csi_keys.insert((plugin.clone(), volume_id.clone()))
            {
                return Err(vol_err(&v.name, "used twice by one container".to_owned()));
            }
            if !targets.insert((v.root.clone(), v.path_in_root.clone())) {
                return Err(vol_err(
                    &v.name,
                    format!(
                        "container path {} is used by another volume",
                        v.path_in_root.display()
                    ),
                ));
            }
        }
        // Parents first, so nested paths are mounted on top of (inside) their parents.
        // Who the task runs as: the sandbox's owner (Mesos gives fresh volumes to that user).
        let owner = std::fs::metadata(&cfg.sandbox).ok().map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            (m.uid(), m.gid())
        });
        for p in &mut plan {
            p.sandbox_owner = owner;
        }
        plan.sort_by(|a, b| {
            let (a, b) = (&a.entry, &b.entry);
            (depth(&a.path_in_root), &a.root, &a.path_in_root).cmp(&(
                depth(&b.path_in_root),
                &b.root,
                &b.path_in_root,
            ))
        });
        Ok(plan)
    }

    /// Prepares every volume of the container: one fsync'd intent record, then for each volume
    /// its source (CSI publish, sandbox directory) and its bind mount. If any volume fails,
    /// everything done for the container is undone and the error names the volume.
    ///
    /// # Errors
    /// [`ContainerError::AlreadyPrepared`], the plan's errors, and the failing volume's.
    pub async fn prepare(&self, cfg: &ContainerConfig) -> Result<Vec<Prepared>> {
        let plan = self.plan(cfg)?;
        let id = cfg.container_id.clone();
        let _ops = self.ops.read().await;
        let _g = self.lock_id(&id).await;
        if self.load(&id)?.is_some() {
            return Err(ContainerError::AlreadyPrepared { container: id });
        }
        let rec = ContainerRecord {
            schema_version: SCHEMA_VERSION,
            container_id: id.clone(),
            state: RecordState::Preparing,
            sandbox: cfg.sandbox.clone(),
            rootfs: cfg.rootfs.clone(),
            volumes: plan.iter().map(|p| p.entry.clone()).collect(),
            last_error: None,
        };
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        let out = self.prepare_locked(&rec, &plan).await;
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        out
    }

    async fn prepare_locked(
        &self,
        rec: &ContainerRecord,
        plan: &[Planned],
    ) -> Result<Vec<Prepared>> {
        let id = rec.container_id.as_str();
        self.persist(rec)?;
        self.hook(HookPoint::Intent {
            container: id,
            step: "preparing",
        });
        let mut done = Vec::with_capacity(plan.len());
        let mut roots = Roots::default();
        for (index, p) in plan.iter().enumerate() {
            let v = &p.entry;
            match self.prepare_one(id, index, p, &mut roots).await {
                Ok(p) => done.push(p),
                Err(e) => {
                    tracing::warn!(container = id, volume = %v.name, error = %e, "prepare failed; undoing the container's volumes");
                    if let Err(undo) = self.teardown(rec).await {
                        tracing::warn!(container = id, error = %undo, "undo incomplete; the record stays for recovery");
                        let mut kept = rec.clone();
                        kept.state = RecordState::Cleaning;
                        kept.last_error = Some(undo.to_string());
                        if let Err(w) = self.persist(&kept) {
                            tracing::warn!(container = id, error = %w, "cannot record the failed undo");
                        }
                        return Err(e);
                    }
                    self.remove_record(id)?;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    async fn prepare_one(
        &self,
        id: &str,
        index: usize,
        p: &Planned,
        roots: &mut Roots,
    ) -> Result<Prepared> {
        let v = &p.entry;
        let mount_err = |source: berth_mount::MountError| ContainerError::Mount {
            container: id.to_owned(),
            volume: v.name.clone(),
            source: Box::new(source),
        };
        let (source, opts) = match &v.source {
            Source::Persistent { path, .. } => {
                self.give_to_task(id, v, path, p.sandbox_owner)?;
                (path.clone(), bind_opts(v.read_only))
            }
            Source::HostPath { path } => (path.clone(), bind_opts(v.read_only)),
            Source::SandboxPath { sandbox, path } => {
                // Created inside the sandbox, confined (a symlink in the sandbox cannot lead out).
                let fd = Resolver::default()
                    .prepare_mount_point_in(
                        &*roots.get(sandbox).map_err(mount_err)?,
                        path,
                        Kind::Dir,
                    )
                    .map_err(mount_err)?;
                let host = berth_mount::path::fd_path(&fd).map_err(mount_err)?;
                self.give_to_task(id, v, &host, p.sandbox_owner)?;
                (host, bind_opts(v.read_only))
            }
            Source::Csi { .. } => {
                let (Some(csi_plugins), Some(csi)) = (&self.csi, &p.csi) else {
                    return Err(ContainerError::Volume {
                        container: id.to_owned(),
                        volume: v.name.clone(),
                        reason: "no CSI plugins".to_owned(),
                    });
                };
                let mode = if v.read_only { Mode::Ro } else { Mode::Rw };
                let path = csi_plugins.publish(csi, id, mode).await.map_err(|source| {
                    ContainerError::Csi {
                        container: id.to_owned(),
                        volume: v.name.clone(),
                        source: Box::new(source),
                    }
                })?;
                (path, BindOptions::external_volume(v.read_only))
            }
            Source::Docker { .. } => {
                let (Some(docker), Some(dv)) = (&self.docker, &p.docker) else {
                    return Err(ContainerError::Volume {
                        container: id.to_owned(),
                        volume: v.name.clone(),
                        reason: "Docker volume drivers are not configured".to_owned(),
                    });
                };
                let path = docker
                    .mount(dv, id)
                    .await
                    .map_err(|source| ContainerError::Dvdi {
                        container: id.to_owned(),
                        volume: v.name.clone(),
                        source: Box::new(source),
                    })?;
                (path, BindOptions::external_volume(v.read_only))
            }
        };
        self.hook(HookPoint::Volume {
            container: id,
            step: "source",
            index,
        });
        if !v.bind {
            // The DVDI contract without a container path: the task uses the host mount point.
            return Ok(Prepared {
                name: v.name.clone(),
                target: source.clone(),
                source,
                read_only: v.read_only,
            });
        }
        let target = self
            .mounter
            .bind_into_dir(
                &source,
                &*roots.get(&v.root).map_err(mount_err)?,
                &v.path_in_root,
                &opts,
            )
            .map_err(mount_err)?;
        self.hook(HookPoint::Volume {
            container: id,
            step: "mounted",
            index,
        });
        Ok(Prepared {
            name: v.name.clone(),
            target,
            source,
            read_only: v.read_only,
        })
    }

    /// The host path a volume's container path resolves to now (confined to its root), if
    /// it exists.
    /// A container path that leads to the root itself (a symlink to `/`) has no target:
    /// nothing is ever mounted over a whole root.
    fn resolve_target(roots: &mut Roots, v: &VolumeEntry) -> Option<PathBuf> {
        let root = roots.get(&v.root).ok()?;
        let (_fd, path) = Resolver {
            mode: ResolveMode::InRoot,
            force_walk: false,
        }
        .open_in_with_path(&root, &v.path_in_root)
        .ok()?;
        (root.host_path().ok()? != path).then_some(path)
    }

    /// Unmounts every volume of the record (nested first) and releases its sources. Keeps
    /// going after an error; returns the first.
    async fn teardown(&self, rec: &ContainerRecord) -> Result<()> {
        let id = rec.container_id.as_str();
        let mut first: Option<ContainerError> = None;
        let mount_err = |volume: &str, source: berth_mount::MountError| ContainerError::Mount {
            container: id.to_owned(),
            volume: volume.to_owned(),
            source: Box::new(source),
        };
        let read_table = || MountTable::read_current().map_err(|e| mount_err("mount table", e));
        let opts = UnmountOptions {
            detach_fallback: true,
            ..UnmountOptions::default()
        };
        // 1. Each volume at its container path (nested first), through the root's descriptor:
        //    a task swapping a directory on the path for a symlink cannot redirect the unmount
        //    outside its sandbox or rootfs. A bind not found mounted at its container path
        //    (moved by the task, or an interrupted prepare) sends step 2 to the mount table.
        let mut failed = BTreeSet::new();
        let mut missing = false;
        let mut opened = Roots::default();
        for (index, v) in rec.volumes.iter().enumerate().rev() {
            if v.bind {
                match Self::resolve_target(&mut opened, v) {
                    None => missing = true,
                    Some(target) => {
                        match self.unmount_under(&mut opened, &v.root, &target, &opts) {
                            Ok(Unmounted::NotMounted) => missing = true,
                            Ok(_) => {}
                            Err(source) => {
                                failed.insert(index);
                                first.get_or_insert(mount_err(&v.name, source));
                                continue;
                            }
                        }
                    }
                }
            }
            self.hook(HookPoint::Volume {
                container: id,
                step: "unmounted",
                index,
            });
        }
        // 2. Whatever of ours is still mounted in the container's sandbox or rootfs (a mount
        //    point the task renamed, or one reached through a replaced symlink), found by its
        //    source's signature. Nothing else there is touched.
        let roots: BTreeSet<&Path> = std::iter::once(rec.sandbox.as_path())
            .chain(rec.rootfs.as_deref())
            .collect();
        let below_roots = |table: &MountTable,
                           signatures: Option<&BTreeSet<(u32, u32, PathBuf)>>|
         -> Vec<PathBuf> {
            roots
                .iter()
                .flat_map(|root| table.unmount_order(root))
                .filter(|e| {
                    e.mount_point() != rec.sandbox && Some(e.mount_point()) != rec.rootfs.as_deref()
                })
                .filter(|e| {
                    signatures
                        .is_none_or(|s| s.contains(&(e.major(), e.minor(), e.root().to_path_buf())))
                })
                .map(|e| e.mount_point().to_path_buf())
                .collect()
        };
        // Mounts in the roots after step 1. In the common case every bind was unmounted where
        // it belongs, and neither the mount table nor signatures are needed.
        let table = if missing || !failed.is_empty() {
            Some(read_table()?)
        } else {
            None
        };
        let mut signatures = BTreeSet::new();
        let mut swept = Vec::new();
        if let Some(table) = table.as_ref().filter(|t| !below_roots(t, None).is_empty()) {
            // What each bind looks like in mountinfo (device and root of its source; the
            // sources are not released yet): how a mount of ours is told from anyone else's,
            // even where the task moved or replaced its mount point.
            for v in rec.volumes.iter().filter(|v| v.bind) {
                if let Some(src) = self.source_path(id, v).await
                    && let Some(sig) = signature(table, &src)
                {
                    signatures.insert(sig);
                }
            }
            swept = below_roots(table, Some(&signatures));
        }
        for mp in &swept {
            tracing::warn!(container = id, mount_point = %mp.display(), "a mount of the container's moved from its container path; unmounting it");
            let root = roots
                .iter()
                .filter(|r| mp.starts_with(r))
                .max_by_key(|r| r.as_os_str().len());
            let Some(root) = root else { continue };
            if let Err(source) = self.unmount_under(&mut opened, root, mp, &opts) {
                first.get_or_insert(mount_err("moved mount", source));
            }
        }
        if !swept.is_empty()
            && let Some(mp) = below_roots(&read_table()?, Some(&signatures)).first()
        {
            // Never report success, nor drop the record, while one of ours is mounted.
            return Err(first.unwrap_or_else(|| {
                mount_err(
                    "moved mount",
                    berth_mount::MountError::StillMounted {
                        target: mp.clone(),
                        mount_id: 0,
                    },
                )
            }));
        }
        // 3. Release the sources of the volumes that are unmounted.
        for (index, v) in rec.volumes.iter().enumerate().rev() {
            if failed.contains(&index) {
                continue;
            }
            if let Err(e) = self.release(id, v).await {
                first.get_or_insert(e);
                continue;
            }
            self.hook(HookPoint::Volume {
                container: id,
                step: "released",
                index,
            });
        }
        first.map_or(Ok(()), Err)
    }

    /// Unmounts the mount point at host path `target` under `root` through the root's
    /// descriptor ([`Mounter::unmount_in_root`]).
    fn unmount_under(
        &self,
        opened: &mut Roots,
        root: &Path,
        target: &Path,
        opts: &UnmountOptions,
    ) -> berth_mount::Result<Unmounted> {
        let dir = opened.get(root)?;
        let rel = dir
            .host_path()
            .ok()
            .and_then(|h| target.strip_prefix(h).ok())
            .or_else(|| target.strip_prefix(root).ok())
            .ok_or_else(|| berth_mount::MountError::Escape {
                root: root.to_path_buf(),
                path: target.to_path_buf(),
                reason: "the mount point is not under the root",
            })?;
        self.mounter.unmount_in_root(&dir, rel, opts)
    }

    /// The host path a volume's bind came from (for its mountinfo signature).
    async fn source_path(&self, id: &str, v: &VolumeEntry) -> Option<PathBuf> {
        let raw = match &v.source {
            Source::Persistent { path, .. } | Source::HostPath { path } => path.clone(),
            Source::SandboxPath { sandbox, path } => sandbox.join(path),
            Source::Csi { plugin, volume_id } => {
                let p = self.csi.as_ref()?.plugin(plugin).await.ok()?;
                let dir = p.manager().mount_dir(volume_id).ok()?;
                dir.join(if v.read_only { "target-ro" } else { "target" })
            }
            Source::Docker { driver, name } => {
                self.docker.as_ref()?.mountpoint(driver, name, id)?
            }
        };
        Some(std::fs::canonicalize(&raw).unwrap_or(raw))
    }

    /// Mesos's ownership rule: a volume directory the task could not write — still owned by
    /// root, as berth created it — is given (not recursively) to the sandbox's owner when that
    /// is not root. A volume already owned by some user is left as it is.
    fn give_to_task(
        &self,
        id: &str,
        v: &VolumeEntry,
        path: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        let Some((uid, gid)) = owner.filter(|(uid, _)| *uid != 0) else {
            return Ok(());
        };
        let meta = std::fs::symlink_metadata(path).map_err(Self::io(id, "stat volume", path))?;
        if meta.uid() != 0 || !meta.is_dir() {
            return Ok(());
        }
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|errno| ContainerError::Volume {
            container: id.to_owned(),
            volume: v.name.clone(),
            reason: format!("chown {} to {uid}:{gid}: {errno}", path.display()),
        })
    }

    /// Gives back a volume's source: the container leaves the CSI volume's or the Docker
    /// volume's consumers (directories and host paths need nothing).
    async fn release(&self, id: &str, v: &VolumeEntry) -> Result<()> {
        let missing = |what: &str| ContainerError::Volume {
            container: id.to_owned(),
            volume: v.name.clone(),
            reason: format!("no {what} configured to release it"),
        };
        match &v.source {
            Source::Docker { driver, name } => {
                let docker = self
                    .docker
                    .as_ref()
                    .ok_or_else(|| missing("Docker volume drivers"))?;
                docker
                    .unmount(driver, name, id)
                    .await
                    .map_err(|source| ContainerError::Dvdi {
                        container: id.to_owned(),
                        volume: v.name.clone(),
                        source: Box::new(source),
                    })
            }
            Source::Csi { plugin, volume_id } => {
                let csi = self.csi.as_ref().ok_or_else(|| missing("CSI plugins"))?;
                csi.unpublish(plugin, volume_id, id)
                    .await
                    .map_err(|source| ContainerError::Csi {
                        container: id.to_owned(),
                        volume: v.name.clone(),
                        source: Box::new(source),
                    })
            }
            Source::Persistent { .. } | Source::SandboxPath { .. } | Source::HostPath { .. } => {
                Ok(())
            }
        }
    }

    /// Undoes exactly what prepare did: one fsync'd `cleaning` intent, every mount of the
    /// container unmounted (nested first), every source released (CSI consumer removed), the
    /// record removed. An unknown container is a no-op. On error the record stays in
    /// `cleaning` and [`Isolator::recover`] (or another cleanup) finishes it.
    ///
    /// # Errors
    /// The first failing volume's error.
    pub async fn cleanup(&self, id: &str) -> Result<()> {
        let _ops = self.ops.read().await;
        let _g = self.lock_id(id).await;
        let Some(mut rec) = self.load(id)? else {
            return Ok(());
        };
        self.cleanup_locked(&mut rec).await
    }

    async fn cleanup_locked(&self, rec: &mut ContainerRecord) -> Result<()> {
        if rec.state != RecordState::Cleaning {
            rec.state = RecordState::Cleaning;
            self.persist(rec)?;
        }
        self.hook(HookPoint::Intent {
            container: &rec.container_id,
            step: "cleaning",
        });
        if let Err(e) = self.teardown(rec).await {
            rec.last_error = Some(e.to_string());
            if let Err(w) = self.persist(rec) {
                tracing::warn!(container = %rec.container_id, error = %w, "cannot record the cleanup error");
            }
            return Err(e);
        }
        self.remove_record(&rec.container_id)
    }

    /// After a restart: every record is read; `live` containers whose volumes are all in place
    /// are kept, an interrupted prepare of a live container is rolled back, `orphans` are
    /// left untouched until their cleanup arrives, every other container is cleaned up, and a
    /// corrupt record is quarantined. Then the CSI plugins recover with the remaining
    /// containers as their live consumers.
    ///
    /// # Errors
    /// [`ContainerError::Io`] when the records directory cannot be listed; per-container
    /// failures are in the report.
    pub async fn recover(&self, live: &[String], orphans: &[String]) -> Result<RecoveryReport> {
        let _ops = self.ops.write().await;
        let mut report = RecoveryReport::default();
        let live: std::collections::HashSet<&str> = live.iter().map(String::as_str).collect();
        let orphans: std::collections::HashSet<&str> = orphans.iter().map(String::as_str).collect();
        self.remove_stale_temps();
        let names = self.record_ids()?;
        let table = MountTable::read_current().map_err(|source| ContainerError::Mount {
            container: String::new(),
            volume: "mount table".to_owned(),
            source: Box::new(source),
        })?;
        let mut remaining: BTreeSet<String> = BTreeSet::new();
        for name in names {
            let rec = match self.load(&name) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    // Its volumes are unknown: its CSI and Docker consumers stay, and nothing
                    // of it is torn down. A record that cannot be parsed is moved aside; one
                    // that cannot be read (I/O) stays for the next attempt.
                    if matches!(e, ContainerError::Record { .. }) {
                        self.quarantine(&name);
                        report.quarantined.push(name.clone());
                    }
                    remaining.insert(name);
                    report.errors.push(e);
                    continue;
                }
            };
            let _g = self.lock_id(&name).await;
            if orphans.contains(name.as_str()) {
                report.orphans_kept.push(name.clone());
                remaining.insert(name);
                continue;
            }
            let mut roots = Roots::default();
            let complete = rec.state == RecordState::Preparing
                && rec.volumes.iter().all(|v| {
                    !v.bind
                        || Self::resolve_target(&mut roots, v)
                            .is_some_and(|t| table.is_mount_point(&t))
                });
            if live.contains(name.as_str()) {
                if !complete {
                    tracing::warn!(container = %name, state = ?rec.state, "live container with a volume not at its container path; kept for its cleanup");
                    report.incomplete.push(name.clone());
                }
                report.kept.push(name.clone());
                remaining.insert(name);
                continue;
            }
            let mut rec = rec;
            match self.cleanup_locked(&mut rec).await {
                Ok(()) => report.cleaned.push(name),
                Err(e) => {
                    remaining.insert(name);
                    report.errors.push(e);
                }
            }
        }
        if let Some(docker) = &self.docker {
            match docker.recover(&remaining).await {
                Ok((_records, errors)) => {
                    report
                        .errors
                        .extend(errors.into_iter().map(|reason| ContainerError::Volume {
                            container: String::new(),
                            volume: "Docker volume recovery".to_owned(),
                            reason,
                        }));
                }
                Err(e) => report.errors.push(ContainerError::Dvdi {
                    container: String::new(),
                    volume: "Docker volume recovery".to_owned(),
                    source: Box::new(e),
                }),
            }
        }
        if let Some(csi) = &self.csi {
            let alive = |c: &str| remaining.contains(c);
            for (_plugin, outcome) in csi.recover(Some(&alive)).await {
                match outcome {
                    Ok(r) => {
                        report.csi_records += r.records;
                        report
                            .errors
                            .extend(r.errors.into_iter().map(|e| ContainerError::Csi {
                                container: String::new(),
                                volume: "CSI recovery".to_owned(),
                                source: Box::new(e),
                            }));
                    }
                    Err(e) => report.errors.push(ContainerError::Csi {
                        container: String::new(),
                        volume: "CSI recovery".to_owned(),
                        source: Box::new(e),
                    }),
                }
            }
        }
        Ok(report)
    }

    /// Temp files of record writes a crash interrupted.
    fn remove_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(self.records_dir()) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(berth_mount::durable::TEMP_PREFIX))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn quarantine(&self, name: &str) {
        let from = self.record_path(name);
        let to_dir = self.work_dir.join("containers-quarantine");
        if std::fs::create_dir_all(&to_dir).is_ok() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let to = to_dir.join(format!("{name}.{stamp}"));
            if let Err(e) = std::fs::rename(&from, &to) {
                tracing::warn!(container = name, error = %e, "cannot move a corrupt record aside");
            } else {
                tracing::warn!(container = name, to = %to.display(), "corrupt container record quarantined");
            }
        }
    }

    /// Every container with a readable record and its record state, without looking at
    /// mounts or plugins (cheap: for start-up and metrics).
    ///
    /// # Errors
    /// [`ContainerError::Io`] when the records directory cannot be listed.
    pub fn record_states(&self) -> Result<Vec<(String, RecordState)>> {
        Ok(self
            .record_ids()?
            .into_iter()
            .filter_map(|id| {
                let state = self.load(&id).ok().flatten()?.state;
                Some((id, state))
            })
            .collect())
    }

    /// Every container with a record: its state and its volumes, mounted or not.
    ///
    /// # Errors
    /// [`ContainerError::Io`] when the records directory cannot be listed.
    pub fn status(&self) -> Result<Vec<ContainerStatus>> {
        let names = self.record_ids()?;
        let table = MountTable::read_current().ok();
        let busy = self
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let records: Vec<ContainerRecord> = names
            .iter()
            .filter_map(|n| self.load(n).ok().flatten())
            .collect();
        // Users of each persistent volume directory, from one pass over the records.
        let mut users: BTreeMap<&Path, Vec<String>> = BTreeMap::new();
        for rec in &records {
            for v in &rec.volumes {
                if let Source::Persistent { path, .. } = &v.source {
                    users
                        .entry(path)
                        .or_default()
                        .push(rec.container_id.clone());
                }
            }
        }
        let mut out = Vec::new();
        for rec in &records {
            let state = match rec.state {
                RecordState::Preparing if busy.contains(&rec.container_id) => "preparing",
                RecordState::Preparing => "prepared",
                RecordState::Cleaning => "cleaning",
            };
            let mut roots = Roots::default();
            let volumes = rec
                .volumes
                .iter()
                .map(|v| {
                    let target = if v.bind {
                        Self::resolve_target(&mut roots, v)
                    } else {
                        None
                    };
                    let mounted = match (&table, &target) {
                        (Some(t), Some(p)) => t.is_mount_point(p),
                        _ => false,
                    };
                    let consumers = match &v.source {
                        Source::Persistent { path, .. } => {
                            users.get(path.as_path()).cloned().unwrap_or_default()
                        }
                        Source::Docker { driver, name } => self
                            .docker
                            .as_ref()
                            .map(|d| d.consumers(driver, name))
                            .unwrap_or_default(),
                        Source::Csi { plugin, volume_id } => self
                            .csi
                            .as_ref()
                            .and_then(|c| c.plugin_now(plugin))
                            .and_then(|p| p.manager().load(volume_id).ok().flatten())
                            .map(|r| r.consumers.into_keys().collect())
                            .unwrap_or_default(),
                        Source::SandboxPath { .. } | Source::HostPath { .. } => {
                            vec![rec.container_id.clone()]
                        }
                    };
                    VolumeStatus {
                        name: v.name.clone(),
                        target,
                        mounted,
                        read_only: v.read_only,
                        consumers,
                    }
                })
                .collect();
            out.push(ContainerStatus {
                container_id: rec.container_id.clone(),
                state,
                volumes,
                last_error: rec.last_error.clone(),
            });
        }
        Ok(out)
    }

    /// Who uses the persistent volume directory `path`: containers whose record has it, any
    /// record that cannot be read (it may: fail closed), and any mount of the volume or of
    /// something inside it that the mount table shows (a container whose record was lost or
    /// quarantined, or a mount made by someone else), named `mount at <path>`.
    #[must_use]
    pub fn users_of(&self, path: &Path) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        // The sandboxes and rootfs of the users found in records: their mounts are accounted for.
        let mut roots: Vec<PathBuf> = Vec::new();
        match self.record_ids() {
            Ok(ids) => {
                for name in ids {
                    match self.load(&name) {
                        Ok(Some(rec)) => {
                            if rec.volumes.iter().any(|v| {
                                matches!(&v.source, Source::Persistent { path: p, .. } if p == path)
                            }) {
                                roots.push(rec.sandbox.clone());
                                roots.extend(rec.rootfs.clone());
                                out.push(name);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => out.push(format!("{name} (unreadable record)")),
                    }
                }
            }
            Err(e) => out.push(format!("unknown ({e})")),
        }
        if let Ok(table) = MountTable::read_current()
            && let Some((major, minor, root)) = signature(&table, path)
        {
            for e in table.iter() {
                if e.major() == major
                    && e.minor() == minor
                    && e.root().starts_with(&root)
                    && e.mount_point() != path
                    && !roots.iter().any(|r| e.mount_point().starts_with(r))
                {
                    out.push(format!("mount at {}", e.mount_point().display()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A held container lock (see `Isolator::lock_id`).
struct IdLock<'a> {
    locks: &'a Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for IdLock<'_> {
    fn drop(&mut self) {
        // Unlock and let go of this holder's reference first; under the map's lock, a count of
        // one is the map's own (every other holder or waiter cloned it under that lock).
        drop(self.guard.take());
        let mut l = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if l.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            l.remove(&self.id);
        }
    }
}

/// The roots (sandbox, rootfs) of one operation, each opened once: one `open` per root for a
/// container's volumes instead of one per volume. Held for one prepare, cleanup or pass only.
#[derive(Default)]
struct Roots(Vec<Arc<RootDir>>);

impl Roots {
    fn get(&mut self, root: &Path) -> berth_mount::Result<Arc<RootDir>> {
        if let Some(r) = self.0.iter().find(|r| r.path() == root) {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(RootDir::open(root)?);
        self.0.push(Arc::clone(&r));
        Ok(r)
    }
}

/// Binds of persistent volumes, sandbox paths and host paths: recursive, read-only when
/// asked, and `rslave` — a mount made later inside one container's view (a nested volume) must
/// not propagate back into the volume's own directory or into other containers sharing it
/// (research `isolators.md` §7.5), while host-side unmounts still reach the container.
fn bind_opts(read_only: bool) -> BindOptions {
    let mut opts = if read_only {
        BindOptions::read_only()
    } else {
        BindOptions::default()
    };
    opts.propagation = Some(berth_mount::Propagation::Slave);
    opts
}

/// How a bind mount of `source` appears in mountinfo: the device of the mount holding
/// `source` and the path of `source` inside that file system.
fn signature(table: &MountTable, source: &Path) -> Option<(u32, u32, PathBuf)> {
    // The deepest mount point holding `source`; of a stack on it, the top (listed last:
    // `max_by_key` returns the last of equal maxima).
    let holder = table
        .iter()
        .filter(|e| source.starts_with(e.mount_point()))
        .max_by_key(|e| e.mount_point().components().count())?;
    let rel = source.strip_prefix(holder.mount_point()).ok()?;
    let root = if rel.as_os_str().is_empty() {
        holder.root().to_path_buf()
    } else {
        holder.root().join(rel)
    };
    Some((holder.major(), holder.minor(), root))
}
