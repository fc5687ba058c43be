//! Container volumes: `prepare` / `cleanup` / `recover` / `status`.
//!
//! A container's config lists Mesos resources (persistent volumes: disks with `persistence`
//! and `volume.container_path`) and Mesos `Volume`s (`SANDBOX_PATH` of type `SELF` or, for a
//! nested container with a `parent`, `PARENT`; `HOST_PATH`, `CSI_VOLUME`, `SECRET`;
//! `DOCKER_VOLUME` and the `DVDI_VOLUME_*` environment come with the Docker volume bridge). `prepare` resolves each to a host source (the volume directory, a path in the
//! sandbox, a host path, a CSI publication) and bind-mounts it at the container path, inside
//! the sandbox (relative paths) or the rootfs (absolute paths), never outside them.
//!
//! Crash safety: one fsync'd record per container transition, written before any side effect:
//! `preparing` (the full plan) before the first source or mount, `cleaning` before the first
//! unmount; the record is removed when cleanup is complete. Never one write per volume.
//! [`Isolator::recover`] reads every record and, against the mount table, keeps complete
//! prepares of live containers, rolls back incomplete ones, finishes every cleanup, keeps known
//! orphans untouched until their cleanup arrives, and quarantines corrupt records (below).
//!
//! Where Mesos differs (research `isolators.md` §1.3, §1.10, §7.2): an absolute container path
//! without a rootfs is refused instead of being mounted over the host's own path (Mesos mounts
//! it inside the container's mount namespace, which berth, working from outside, does not
//! have); nested container paths are mounted parent first instead of being skipped; duplicate
//! container paths in one container are refused.
//!
//! # Quarantine
//!
//! A record that cannot be parsed is moved to `<work_dir>/containers-quarantine/<id>.<secs>`.
//! Its volumes are unknown, so the container keeps everything it may hold: nothing of it is
//! unmounted, and every later [`Isolator::recover`] reads the quarantine directory and counts
//! it among the live CSI and Docker consumers. [`Isolator::status`] lists it as
//! `quarantined`; a new prepare of the id is refused ([`ContainerError::Quarantined`],
//! `FAILED_PRECONDITION`). [`Isolator::cleanup`] tears it down from its record when that can
//! still be read (a wrong schema version, say), and otherwise refuses; only
//! [`Isolator::force_cleanup`] (`cleanup --force`) then releases its plugin consumers, without
//! locating its binds (the operator unmounts those). A released quarantine file is renamed
//! `<file>.released` and kept.
//!
//! # What `prepare` trusts
//!
//! Nothing in the config (issue 15; Mesos's agent refuses resources it has not checkpointed).
//! Before the record, [`Isolator::plan`] checks, and a refusal is
//! [`ContainerError::Config`] / [`ContainerError::Volume`] (`INVALID_ARGUMENT`) with nothing
//! on disk changed (no record, no directory, no chown, no mount):
//!
//! - the sandbox is an absolute, existing directory, not `/`, not inside the agent's work dir,
//!   and under `--sandbox-root` when one is set ([`PreparePolicy`]); a rootfs is not `/` nor
//!   inside the work dir. Both are compared and then used canonicalized;
//! - a `HOST_PATH` source lies, canonicalized, at or under one of `--allowed-host-paths`
//!   (component-wise; default any, as Mesos);
//! - a persistent volume is one the agent holds: [`PersistentVolumes::volume_path`] refuses
//!   any other (the agent's implementation: Mesos `contains` against the committed
//!   checkpointed set — persistence id, disk source, role and reservations, sharedness and
//!   size; the `volume` field is how the container uses it and is ignored).
//!
//! A DESTROY racing a prepare: the agent holds [`Isolator::hold_prepares`] for the whole of a
//! resources change, and a prepare holds the other side from its plan until its record is
//! durable. So a change either finishes before the plan (which then no longer finds the
//! volume and refuses), or starts after the record is on disk, where
//! [`Isolator::users_of`] names the container and the DESTROY is refused. A change that
//! starts after the plan but before the record cannot happen. (Without the gate the prepare
//! would still fail safe in the common case: the bind of a directory already moved to the
//! trash fails and the prepare undoes; the gate closes the window where the bind wins.)
//!
//! One room per job: `config` parses, `plan` resolves each volume by its kind's planner
//! (`sources/`: persistent, host path, sandbox path, CSI, Docker, behind one `SourceKind`),
//! `prepare` acquires and binds, `teardown` unmounts and releases, `recover` and `status`
//! read the records (`record`, the only code that stores them) against the mount table. The
//! mounter is injected ([`Isolator::with_mounter`]), so every step runs against the recording
//! fake of `berth-mount` without root.

mod config;
mod error;
mod plan;
mod prepare;
mod record;
mod recover;
mod sources;
mod status;
mod teardown;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_csi::CsiPlugins;
use berth_mount::path::RootDir;
use berth_mount::{LinuxMounter, Mounter};

pub use config::{ContainerConfig, MAX_ID_LEN, ParentContainer};
pub use error::{ContainerError, Result};
pub use record::{ContainerRecord, Hook, HookPoint, Phase, RecordState, SCHEMA_VERSION};
pub use recover::RecoveryReport;
pub(crate) use sources::sandbox_path::is_parent as is_parent_sandbox_path;
pub use sources::secret::{MAX_SECRET_BYTES, SecretBytes, TMPFS_BYTES};
pub use sources::{
    BoxFuture, DockerVolumes, PersistentVolumes, Planned, PreparePolicy, Source, VolumeEntry,
};
pub use sources::{ParentGids, parent_gid_key};
pub use status::{ContainerStatus, VolumeStatus};

use record::RecordStore;
use sources::Backends;

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

/// The per-agent container volume isolator.
pub struct Isolator {
    mounter: Arc<dyn Mounter>,
    backends: Backends,
    records: RecordStore,
    work_dir: PathBuf,
    /// Prepares and cleanups hold it shared, `recover` exclusively: recovery judges every
    /// record against one consistent mount table and set of records.
    ops: tokio::sync::RwLock<()>,
    /// Prepares hold it shared from their plan until their record is durable; a change of
    /// the agent's resources holds it exclusively ([`Isolator::hold_prepares`]).
    plan_gate: tokio::sync::RwLock<()>,
    policy: PreparePolicy,
    busy: Mutex<BTreeSet<String>>,
    /// Held (briefly, never across an await) while a nested container's prepare checks its
    /// parent and writes its record, and while a cleanup checks for nested containers and
    /// writes its `cleaning` record: a parent's cleanup and a child's prepare never pass
    /// each other.
    family: Mutex<()>,
    hook: Option<Hook>,
}

impl std::fmt::Debug for Isolator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Isolator")
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl Isolator {
    /// An isolator with state under `<work_dir>/containers`, mounting with the real
    /// [`LinuxMounter`].
    #[must_use]
    pub fn new(
        work_dir: impl Into<PathBuf>,
        persistent: Arc<dyn PersistentVolumes>,
        csi: Option<Arc<CsiPlugins>>,
    ) -> Self {
        let work_dir = work_dir.into();
        Self {
            mounter: Arc::new(LinuxMounter::new()),
            backends: Backends {
                persistent,
                csi,
                docker: None,
                secret_dir: None,
                work_dir: work_dir.clone(),
                parent_gids: None,
            },
            records: RecordStore::new(&work_dir),
            work_dir,
            ops: tokio::sync::RwLock::new(()),
            plan_gate: tokio::sync::RwLock::new(()),
            policy: PreparePolicy::default(),
            busy: Mutex::new(BTreeSet::new()),
            family: Mutex::new(()),
            hook: None,
        }
    }

    /// Mounts, unmounts and reads the mount table through `mounter` (tests: the recording
    /// fake of `berth-mount`).
    #[must_use]
    pub fn with_mounter(mut self, mounter: Arc<dyn Mounter>) -> Self {
        self.mounter = mounter;
        self
    }

    /// Limits sandboxes and host paths (`--sandbox-root`, `--allowed-host-paths`).
    #[must_use]
    pub fn with_policy(mut self, policy: PreparePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Waits for every prepare between its plan and its durable record, and holds new ones
    /// before their plan, while the guard lives: a change of the agent's persistent volumes
    /// holds it, so each prepare's plan sees the set either before the change (and its record
    /// is then on disk for [`Isolator::users_of`] to see) or after it.
    pub async fn hold_prepares(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.plan_gate.write().await
    }

    /// Reads `REFERENCE` secrets of `SECRET` volumes from `dir` (`--secret-dir`): one file
    /// per secret name (`<dir>/<name>`, or `<dir>/<name>/<key>` for a reference with a key).
    /// Without it, only `VALUE` secrets can be used.
    #[must_use]
    pub fn with_secret_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.backends.secret_dir = dir;
        self
    }

    /// Gives `PARENT` sandbox paths a gid each from `gids` (`--volume-gid-range`): the
    /// directory gets that group and mode `2770` when a task of the pod first uses it.
    #[must_use]
    pub fn with_parent_gids(mut self, gids: Option<Arc<dyn sources::ParentGids>>) -> Self {
        self.backends.parent_gids = gids;
        self
    }

    /// Adds Docker volume-driver volumes (`DOCKER_VOLUME`, `DVDI_VOLUME_*`).
    #[must_use]
    pub fn with_docker(mut self, docker: Arc<dyn DockerVolumes>) -> Self {
        self.backends.docker = Some(docker);
        self
    }

    /// Installs a hook called at every intent and volume step (tests: crash injection).
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    /// How many fsync'd record writes this isolator made.
    #[must_use]
    pub fn record_writes(&self) -> u64 {
        self.records.writes()
    }

    /// The CSI plugins, if configured.
    #[must_use]
    pub fn csi(&self) -> Option<&Arc<CsiPlugins>> {
        self.backends.csi.as_ref()
    }

    fn hook(&self, p: HookPoint<'_>) {
        berth_mount::hook::fire(self.hook.as_ref(), p);
    }

    /// Reads a container's record (`None` when there is none).
    ///
    /// # Errors
    /// [`ContainerError::Config`] for an invalid id, [`ContainerError::Record`] for an
    /// unreadable or corrupt record.
    pub fn load(&self, id: &str) -> Result<Option<ContainerRecord>> {
        self.records.load(id)
    }

    /// Takes a container's operation lock. Its entry goes with its last holder (or waiter),
    /// so the store's lock map holds only containers with an operation under way.
    async fn lock_id(&self, id: &str) -> berth_mount::store::KeyGuard<'_> {
        self.records.lock(id).await
    }

    /// The ids of the quarantined containers (corrupt records kept aside until `cleanup
    /// --force`).
    #[must_use]
    pub fn quarantined_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .records
            .quarantined()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// How many containers' operation locks are held or awaited now (0 when idle).
    #[must_use]
    pub fn locks_in_use(&self) -> usize {
        self.records.locks_in_use()
    }
}

/// The roots (sandbox, rootfs) of one operation, each opened once: one `open` per root for a
/// container's volumes instead of one per volume. Held for one prepare, cleanup or pass only.
#[derive(Default)]
pub(crate) struct Roots(Vec<Arc<RootDir>>);

impl Roots {
    pub(crate) fn get(&mut self, root: &Path) -> berth_mount::Result<Arc<RootDir>> {
        if let Some(r) = self.0.iter().find(|r| r.path() == root) {
            return Ok(Arc::clone(r));
        }
        let r = Arc::new(RootDir::open(root)?);
        self.0.push(Arc::clone(&r));
        Ok(r)
    }
}
