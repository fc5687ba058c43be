//! Volume sources, one room per kind: a planner (config → [`Planned`]) and one
//! [`SourceKind`] (acquire, release, find and share the host source) for each of persistent
//! volumes, host paths, sandbox paths (the container's own or its parent's), secrets, CSI
//! volumes and Docker volume-driver volumes.

mod csi;
mod docker;
mod host_path;
mod persistent;
pub(crate) mod sandbox_path;
pub(crate) mod secret;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use berth_csi::CsiPlugins;
use berth_mount::names::ContainerPath;
use berth_mount::{BindOptions, Mounter};
use berth_resources::proto;
use serde::{Deserialize, Serialize};

use super::Roots;
use super::config::ContainerConfig;
use super::error::{Result, vol_err};

pub(crate) use docker::plan_env as plan_docker_env;
pub(crate) use persistent::plan as plan_persistent;
pub(crate) use sandbox_path::is_parent;

/// A boxed future, for the object-safe [`DockerVolumes`] and the volume kinds.
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

/// Where persistent volumes live on this agent (implemented by the agent over its checkpointed
/// resources).
///
/// The contract is the Mesos agent's: a persistent volume is mounted only when the agent has
/// it checkpointed (Mesos `Slave::_run` drops a task whose checkpointed resources the agent
/// does not hold). An implementation must therefore refuse (`Err`) every resource the agent
/// does not hold; the planner calls it before anything is written, so a refusal changes
/// nothing on disk.
pub trait PersistentVolumes: Send + Sync {
    /// The host directory of a persistent volume (a disk resource with `persistence`) that
    /// the agent holds.
    ///
    /// # Errors
    /// A description of why the resource has no usable directory: not held by the agent
    /// (unknown persistence id, other role, reservations, disk source or sharedness), or no
    /// directory layout for it.
    fn volume_path(&self, resource: &proto::Resource) -> std::result::Result<PathBuf, String>;
}

/// What `prepare` accepts beyond a config's own rules: the operator's limits on sandboxes and
/// host paths (`--sandbox-root`, `--allowed-host-paths`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparePolicy {
    /// Every sandbox must lie strictly under this directory (compared canonicalized).
    pub sandbox_root: Option<PathBuf>,
    /// `HOST_PATH` sources must lie at or under one of these (canonicalized, compared
    /// component-wise); empty: any host path, as Mesos.
    pub allowed_host_paths: Vec<PathBuf>,
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
    /// `SANDBOX_PATH`: a path inside the container's own sandbox (`SELF`), or inside its
    /// parent container's sandbox (`PARENT`: the volume a pod's tasks share).
    SandboxPath {
        /// The sandbox the path is in: the container's own, or its parent's.
        sandbox: PathBuf,
        /// The path relative to the sandbox.
        path: PathBuf,
        /// `PARENT`: the parent container whose sandbox it is (its cleanup is refused while
        /// this container's record holds the volume).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// `SECRET`: a file holding the secret on the container's own tmpfs
    /// (`<work_dir>/containers-secrets/<id>`, unmounted at cleanup), bound read-only. The
    /// record names the file only; the value is never recorded.
    Secret {
        /// The container's secrets tmpfs.
        dir: PathBuf,
        /// The file in it.
        file: String,
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
    pub(crate) csi: Option<proto::volume::source::CsiVolume>,
    pub(crate) docker: Option<berth_dvdi::DockerVolume>,
    /// The sandbox's owner (uid, gid): the task's user (for a `PARENT` sandbox path, the
    /// parent sandbox's owner).
    pub(crate) sandbox_owner: Option<(u32, u32)>,
    /// A `SECRET` volume's value, resolved at plan time; never recorded nor logged.
    pub(crate) secret: Option<secret::SecretBytes>,
}

impl Planned {
    pub(crate) fn new(entry: VolumeEntry) -> Self {
        Self {
            entry,
            csi: None,
            docker: None,
            sandbox_owner: None,
            secret: None,
        }
    }
}

/// Where volume sources come from: the agent's persistent volumes, its CSI plugins and its
/// Docker volume drivers.
pub(crate) struct Backends {
    /// Persistent volume directories.
    pub(crate) persistent: Arc<dyn PersistentVolumes>,
    /// CSI plugins, when configured.
    pub(crate) csi: Option<Arc<CsiPlugins>>,
    /// Docker volume drivers, when configured.
    pub(crate) docker: Option<Arc<dyn DockerVolumes>>,
    /// `--secret-dir`: where `REFERENCE` secrets are read, one file per name.
    pub(crate) secret_dir: Option<PathBuf>,
    /// The agent's work dir (secrets tmpfs mounts live under it).
    pub(crate) work_dir: PathBuf,
    /// `--volume-gid-range`: the gids of `PARENT` sandbox paths.
    pub(crate) parent_gids: Option<Arc<dyn ParentGids>>,
}

/// Gives a pod's `PARENT` sandbox path its own gid (`--volume-gid-range`), so the pod's tasks
/// of different users share it through a supplementary group.
pub trait ParentGids: Send + Sync {
    /// The gid of path `path` (relative) in the sandbox of parent container `parent`, given
    /// (and recorded, fsync'd) now if it has none.
    ///
    /// # Errors
    /// No gid is free, or the record cannot be written.
    fn gid(&self, parent: &str, path: &Path) -> std::result::Result<u32, String>;
}

/// The key a `PARENT` sandbox path's gid is recorded under.
#[must_use]
pub fn parent_gid_key(parent: &str, path: &Path) -> String {
    format!("parent/{parent}/{}", path.display())
}

/// The parent of a nested container, as its record on this agent has it: what `PARENT`
/// sandbox paths resolve against.
#[derive(Debug, Clone)]
pub(crate) struct ParentPlan {
    /// The parent's id.
    pub(crate) container_id: String,
    /// The parent's sandbox (canonical, as admitted when the parent was prepared).
    pub(crate) sandbox: PathBuf,
}

/// What a planner sees: the config being planned, the backends and the operator's policy.
pub(crate) struct PlanCx<'a> {
    /// The config.
    pub(crate) cfg: &'a ContainerConfig,
    /// The backends.
    pub(crate) backends: &'a Backends,
    /// The operator's limits.
    pub(crate) policy: &'a PreparePolicy,
    /// The parent container, when a `PARENT` sandbox path needs it.
    pub(crate) parent: Option<&'a ParentPlan>,
}

impl PlanCx<'_> {
    /// The container id.
    pub(crate) fn id(&self) -> &str {
        &self.cfg.container_id
    }

    /// A volume that cannot be used as asked.
    pub(crate) fn err(
        &self,
        volume: &str,
        reason: impl Into<String>,
    ) -> crate::container::ContainerError {
        vol_err(self.id(), volume, reason)
    }

    /// Where a container path is: its root (the sandbox for a relative path, the rootfs for an
    /// absolute one) and its path inside that root, after the one rule set of
    /// [`ContainerPath`]. An absolute path without a rootfs is refused: berth mounts from
    /// outside the container and would cover the host's own path.
    pub(crate) fn place(&self, name: &str, container_path: &str) -> Result<(PathBuf, PathBuf)> {
        let parsed = ContainerPath::parse(container_path);
        // Malformed paths first; then, for an absolute path, the missing rootfs (it says what
        // to do instead), before the root itself or an overlong component.
        let rule = parsed
            .as_ref()
            .err()
            .map(|e| ContainerPath::rule(e).map_or_else(|| e.to_string(), str::to_owned));
        let malformed = rule
            .as_deref()
            .is_some_and(|r| r != ContainerPath::ROOT && r != ContainerPath::LONG_COMPONENT);
        if !malformed && Path::new(container_path).is_absolute() && self.cfg.rootfs.is_none() {
            return Err(self.err(
                name,
                format!(
                    "absolute container_path {container_path:?} without a rootfs: berth mounts from outside the container and would cover the host's own path; use a relative path (under the sandbox) or give the container a rootfs"
                ),
            ));
        }
        let path = match (parsed, rule) {
            (Ok(p), _) => p,
            (Err(e), rule) => {
                let rule = rule.unwrap_or_else(|| e.to_string());
                return Err(self.err(name, format!("container_path {container_path:?} {rule}")));
            }
        };
        let root = match &self.cfg.rootfs {
            Some(rootfs) if path.is_absolute() => rootfs.clone(),
            _ => self.cfg.sandbox.clone(),
        };
        Ok((root, path.in_root().to_owned()))
    }
}

/// Whether a Mesos volume mode is read-only.
pub(crate) fn mode_ro(mode: i32) -> bool {
    mode == proto::volume::Mode::Ro as i32
}

/// A planned volume being acquired: what [`SourceKind::acquire`] works with.
pub(crate) struct Acquire<'a> {
    /// The backends.
    pub(crate) backends: &'a Backends,
    /// The container.
    pub(crate) id: &'a str,
    /// The volume.
    pub(crate) planned: &'a Planned,
    /// The container's roots, opened once for the operation.
    pub(crate) roots: &'a mut Roots,
    /// The mounter (a secrets tmpfs is mounted through it).
    pub(crate) mounter: &'a dyn Mounter,
}

/// One kind of volume source: how its host source is acquired for a container, released
/// again, found for a bind's mountinfo signature, and shared with other containers.
pub(crate) trait SourceKind: Sync {
    /// Acquires the host source of a planned volume: its host path and the bind options.
    fn acquire<'a>(&'a self, cx: Acquire<'a>) -> BoxFuture<'a, Result<(PathBuf, BindOptions)>>;

    /// Gives the source back: the container leaves the volume's consumers (directories and
    /// host paths need nothing).
    fn release<'a>(
        &'a self,
        _backends: &'a Backends,
        _id: &'a str,
        _v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The host path the volume's bind came from, as recorded (not canonicalized).
    fn source_path<'a>(
        &'a self,
        backends: &'a Backends,
        id: &'a str,
        v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Option<PathBuf>>;

    /// Every container using the volume now; `users` maps persistent volume directories to
    /// the containers with them in their records.
    fn consumers(
        &self,
        _backends: &Backends,
        id: &str,
        _v: &VolumeEntry,
        _users: &BTreeMap<&Path, Vec<String>>,
    ) -> Vec<String> {
        vec![id.to_owned()]
    }
}

/// The kind behind a recorded source.
pub(crate) fn kind(source: &Source) -> &'static dyn SourceKind {
    match source {
        Source::Persistent { .. } => &persistent::Persistent,
        Source::SandboxPath { .. } => &sandbox_path::SandboxPath,
        Source::HostPath { .. } => &host_path::HostPath,
        Source::Secret { .. } => &secret::SecretKind,
        Source::Docker { .. } => &docker::Docker,
        Source::Csi { .. } => &csi::Csi,
    }
}

/// Plans Mesos volume number `index` by its source type.
pub(crate) fn plan_volume(cx: &PlanCx<'_>, index: usize, v: &proto::Volume) -> Result<Planned> {
    use proto::volume::source::Type;
    let source = v.source.as_ref();
    let kind = source.map_or(Type::Unknown, |s| s.r#type());
    match (kind, source) {
        (Type::Unknown, _) if v.host_path.is_some() => host_path::plan_legacy(cx, v),
        (Type::HostPath, Some(s)) => host_path::plan(cx, v, s),
        (Type::SandboxPath, Some(s)) => sandbox_path::plan(cx, index, v, s),
        (Type::CsiVolume, Some(s)) => csi::plan(cx, index, v, s),
        (Type::DockerVolume, Some(_)) => docker::plan(cx, index, v),
        (Type::Secret, Some(s)) => secret::plan(cx, index, v, s),
        (t, _) => Err(cx.err(
            &format!("volumes[{index}]"),
            format!("volume source {t:?} is not supported here"),
        )),
    }
}

/// The same (plugin, volume) or Docker volume twice in one container is refused, as Mesos
/// does, and so is one container path for two volumes.
pub(crate) fn check_unique(id: &str, plan: &[Planned]) -> Result<()> {
    let mut csi_keys = BTreeSet::new();
    let mut targets = BTreeSet::new();
    let mut docker_keys = BTreeSet::new();
    for v in plan.iter().map(|p| &p.entry) {
        if let Source::Docker { driver, name } = &v.source
            && !docker_keys.insert((driver.clone(), name.clone()))
        {
            return Err(vol_err(id, &v.name, "used twice by one container"));
        }
        if !v.bind {
            continue;
        }
        if let Source::Csi { plugin, volume_id } = &v.source
            && !csi_keys.insert((plugin.clone(), volume_id.clone()))
        {
            return Err(vol_err(id, &v.name, "used twice by one container"));
        }
        if !targets.insert((v.root.clone(), v.path_in_root.clone())) {
            return Err(vol_err(
                id,
                &v.name,
                format!(
                    "container path {} is used by another volume",
                    v.path_in_root.display()
                ),
            ));
        }
    }
    Ok(())
}
