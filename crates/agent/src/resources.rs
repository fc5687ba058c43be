//! The agent's checkpointed resources and the persistent-volume directories kept in step with
//! them.
//!
//! A Mesos agent checkpoints the resources it must not forget across restarts — dynamic
//! reservations and persistent volumes (Mesos `needCheckpointing`, research `mesos-rules.md`
//! P-8) — and changes them in two ways, both offered by [`AgentResources`]:
//!
//! - [`AgentResources::checkpoint`]: the master's whole checkpointed set replaces the agent's
//!   (`CheckpointResourcesMessage`);
//! - [`AgentResources::apply_operation`]: one accepted offer operation (RESERVE, UNRESERVE,
//!   CREATE, DESTROY, GROW_VOLUME, SHRINK_VOLUME) is validated as the master does against the
//!   checkpointed set and applied to the agent's **total** resources — those configured with
//!   `--resources` with the checkpointed ones substituted in (Mesos
//!   `applyCheckpointedResources`); the new checkpointed set is the part of the result that
//!   needs checkpointing. An operation that does not apply is refused with a typed error and
//!   nothing changes.
//!
//! Either way the volume directories are synced (Mesos `syncCheckpointedResources`): a new
//! persistent volume gets its directory ([`layout`] has the table: ROOT, PATH and MOUNT disks,
//! role `/` encoded as a space), a volume that disappeared is removed — refused while a
//! container uses it ([`VolumeUsers`]) or while anything is mounted inside it, never following
//! a symlink out of it, and kept instead with [`Options::retain_destroyed_data`]. Volumes are
//! matched by directory, so GROW and SHRINK keep the data of the volume they resize.
//!
//! # On disk
//!
//! ```text
//! <work_dir>/meta/resources/resources.json         committed set: a Mesos JSON array of Resource
//!                                                  (with project quotas: {"resources": [..],
//!                                                  "projects": {dir: {project, hard_bytes}}})
//! <work_dir>/meta/resources/resources.target.json  the intent: the set being synced to (same form)
//! <work_dir>/meta/resources/projects.json          project ids of sandboxes and leftovers (quota)
//! <work_dir>/meta/resources/resources.lock         flock held by the open AgentResources
//! <root>/volumes/roles/<role>/<persistence id>     a volume on a ROOT or PATH disk
//! <work_dir>/meta/resources/leftovers/<n>.json     a trash entry's record (intent, attempts, last error)
//! <root>/volumes/trash/roles/<role>/<id>.<secs>    a destroyed volume while it is removed (a leftover
//!                                                  if its removal failed)
//! <mount root>/.berth-trash/<id>.<secs>            a MOUNT disk's destroyed contents while removed
//! <root>/volumes/retained/roles/<role>/<id>.<secs> a destroyed volume kept by retain_destroyed_data
//! ```
//!
//! The layout mirrors Mesos's `meta/resources/{resources.info,resources.target}` (Mesos writes
//! protobuf there; berth writes the stout-compatible JSON array Mesos's HTTP API uses, in the
//! post-refinement format).
//!
//! # Crash safety
//!
//! Every change first writes the target set durably (temp file, fsync, rename, fsync of the
//! directory): that record is the intent of every side effect that follows. Then new volume
//! directories are created (each new directory's parent fsynced), destroyed volumes are
//! renamed atomically out of `volumes/roles` into the trash (after a leftover record naming
//! the trash entry) and removed from there, and the target is committed by renaming it over
//! the committed file. A removal that fails after the move does not stop the change: the
//! trash entry stays as a leftover ([`gc`]: listed, retried with backoff, removed by
//! `berth-isolator gc`) and the change commits; a volume that cannot be moved (in use, a
//! mount inside) refuses the change as before. A crash at any point leaves
//! the target behind; [`AgentResources::recover`] finishes the sync (every step is idempotent)
//! and commits. Until then, changes are refused with [`ResourcesError::RecoveryRequired`]. A
//! volume that stays in the set is never touched, so no crash loses its data.

pub mod detect;
mod error;
mod fs;
pub mod gc;
pub mod gids;
pub mod layout;
pub mod quota;
mod sync;

use std::path::{Path, PathBuf};

use berth_offers::{AgentCapabilities, Context, Operation};
use berth_resources::{ReservationType, Resource, Resources};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value as Json;

pub use error::{ResourcesError, Result, Step};
pub use gc::{GcOptions, GcReport, Leftover, parse_duration};
pub use layout::{DiskKind, VolumeDir, encode_role};

use fs::Detached;
use sync::{
    Plan, VolumeExtras, encode, read_checkpoint, read_checkpoint_file, shared_dirs, volume_dirs,
};

/// The directory of the resource checkpoints, relative to the work dir.
pub const META_DIR: &str = "meta/resources";
/// The committed checkpoint's file name (in [`META_DIR`]).
pub const CHECKPOINT_FILE: &str = "resources.json";
/// The target (intent) checkpoint's file name (in [`META_DIR`]).
pub const TARGET_FILE: &str = "resources.target.json";
/// The lock file's name (in [`META_DIR`]).
pub const LOCK_FILE: &str = "resources.lock";

/// Who uses a persistent volume's directory: implemented by the container module, consulted
/// before a volume is destroyed.
pub trait VolumeUsers {
    /// The ids of the containers that use the volume whose host directory is `path` (as
    /// returned by [`volume_path`]); empty when none does.
    fn users(&self, path: &Path) -> Vec<String>;
}

impl<F: Fn(&Path) -> Vec<String>> VolumeUsers for F {
    fn users(&self, path: &Path) -> Vec<String> {
        self(path)
    }
}

/// No container uses any volume (tests, or an agent with no containers).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUsers;

impl VolumeUsers for NoUsers {
    fn users(&self, _path: &Path) -> Vec<String> {
        Vec::new()
    }
}

/// Settings of [`AgentResources`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep the data of destroyed volumes (`--retain-destroyed-data`; Mesos has no such flag and
    /// always deletes). ROOT/PATH volumes are moved to
    /// `<root>/volumes/retained/roles/<role>/<id>.<unix seconds>`, so a new volume with the
    /// same id starts empty; a MOUNT disk's data stays where it is.
    pub retain_destroyed_data: bool,
}

/// The crash hook of a resources change: the shared `berth_mount::hook` type. Its points:
/// the intent `target written` (the target set is durable, nothing else changed yet); the steps
/// `volume created`, `volume limited` (its project quota set, with quotas only), `volume
/// detached` (moved into the trash or the retained area) and `volume removed`, whose subject
/// is the volume's path; the done point `committed`.
pub use berth_mount::hook::{Hook, HookPoint, Phase};

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Directories of volumes that entered the set (created, or found already there).
    pub created: Vec<PathBuf>,
    /// Directories of volumes that left the set and whose data was removed.
    pub removed: Vec<PathBuf>,
    /// Volumes that left the set with [`Options::retain_destroyed_data`]: the volume path and
    /// where its data is now (the same path for a MOUNT disk).
    pub retained: Vec<(PathBuf, PathBuf)>,
    /// True when `recover` finished an interrupted change.
    pub recovered: bool,
    /// Destroyed volumes whose data could not be removed after it was moved into the trash:
    /// the volume path and the leftover's path (see [`gc`]). The change still committed.
    pub deferred: Vec<(PathBuf, PathBuf)>,
    /// `recover` only: volumes of the committed set whose directory does not exist (data lost
    /// outside berth, or a MOUNT disk that is not mounted). Reported, never recreated silently.
    pub missing: Vec<PathBuf>,
}

/// The host directory of persistent volume `volume` for an agent with `work_dir` (joined
/// lexically; pass the work dir the agent runs with). Used by the container module; needs no
/// lock.
///
/// # Errors
/// As [`layout::volume_dir`].
pub fn volume_path(work_dir: &Path, volume: &Resource) -> Result<PathBuf> {
    Ok(layout::volume_dir(work_dir, volume)?.path)
}

/// Parses `--resources` (Mesos agent text such as `cpus:4;mem:4096;disk(db):10000`, or a JSON
/// array); resources without a role are unreserved.
///
/// # Errors
/// [`ResourcesError::InvalidConfigured`].
pub fn parse_configured(flag: &str) -> Result<Resources> {
    Resources::parse(flag, "*").map_err(|e| ResourcesError::InvalidConfigured {
        input: flag.to_owned(),
        reason: e.to_string(),
    })
}

/// Parses a JSON array of Mesos resources (either reservation format), e.g. the master's
/// checkpointed set.
///
/// # Errors
/// [`ResourcesError::InvalidResources`].
pub fn parse_resources_json(text: &str) -> Result<Resources> {
    let json: Json = serde_json::from_str(text).map_err(|e| ResourcesError::InvalidResources {
        reason: e.to_string(),
    })?;
    Resources::from_json(&json).map_err(|e| ResourcesError::InvalidResources {
        reason: e.to_string(),
    })
}

/// Parses a Mesos `Offer.Operation` in JSON (the master's first step: body present, common
/// validation, upgrade to the post-refinement format).
///
/// # Errors
/// [`ResourcesError::InvalidOperation`].
pub fn parse_operation(json: &Json) -> Result<Operation> {
    berth_offers::pipeline::read_operation(json)
        .map_err(|e| ResourcesError::InvalidOperation { reason: e.message })
}

/// Reads a Mesos `Offer.Operation` message as the master's first step does (body present,
/// common validation, upgrade to the post-refinement format), with no format round trip.
///
/// # Errors
/// [`ResourcesError::InvalidOperation`].
pub fn read_operation(op: &berth_resources::proto::offer::Operation) -> Result<Operation> {
    Operation::from_proto(op).map_err(|e| ResourcesError::InvalidOperation {
        reason: e.to_string(),
    })
}

/// The agent's total resources: `configured` with every checkpointed resource substituted for
/// the configured resource it came from (Mesos `applyCheckpointedResources`: strip the dynamic
/// reservations and the volume, which must be contained, then replace).
///
/// # Errors
/// [`ResourcesError::Incompatible`] naming the first checkpointed resource not contained.
pub fn total_resources(configured: &Resources, checkpointed: &Resources) -> Result<Resources> {
    let mut total = configured.clone();
    for r in checkpointed.iter() {
        let mut base = r.stripped_volume();
        while base
            .current_reservation()
            .is_some_and(|x| x.kind == ReservationType::Dynamic)
        {
            base.reservations.pop();
        }
        let mut copy = r.clone();
        copy.allocation_info = None;
        if !total.convert(&Resources::from(base), &Resources::from(copy)) {
            return Err(ResourcesError::Incompatible {
                resource: r.to_string(),
                configured: total.to_string(),
            });
        }
    }
    Ok(total)
}

/// The checkpointed resources of one agent work dir and its volume directories. Holds an
/// exclusive lock on the work dir's resource checkpoints while it lives.
pub struct AgentResources {
    work_dir: PathBuf,
    meta_dir: PathBuf,
    configured: Resources,
    checkpointed: Resources,
    total: Resources,
    options: Options,
    hook: Option<Hook>,
    quotas: Option<quota::VolumeQuotas>,
    gids: Option<gids::VolumeGids>,
    _lock: Flock<std::fs::File>,
}

impl std::fmt::Debug for AgentResources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentResources")
            .field("work_dir", &self.work_dir)
            .field("checkpointed", &self.checkpointed.to_string())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Clears the allocation info of every resource of `op` (checkpoints hold none).
fn unallocated(op: &Operation) -> Operation {
    let mut op = op.clone();
    let clear = |list: &mut Vec<Resource>| list.iter_mut().for_each(|r| r.allocation_info = None);
    match &mut op {
        Operation::Reserve { source, resources } => {
            clear(source);
            clear(resources);
        }
        Operation::Unreserve { resources } => clear(resources),
        Operation::Create { volumes } | Operation::Destroy { volumes } => clear(volumes),
        Operation::GrowVolume { volume, addition } => {
            volume.allocation_info = None;
            addition.allocation_info = None;
        }
        Operation::ShrinkVolume { volume, .. } => volume.allocation_info = None,
        Operation::Launch { .. } => {}
    }
    op
}

impl AgentResources {
    /// Opens the checkpointed resources of `work_dir` (created if missing) for an agent
    /// configured with `configured` (`--resources`, see [`parse_configured`]), and takes the
    /// work dir's resources lock. A pending interrupted change is detected but not resumed:
    /// call [`recover`](Self::recover).
    ///
    /// # Errors
    /// [`ResourcesError::Locked`] when another process has it open,
    /// [`ResourcesError::Corrupt`] for an unreadable checkpoint (left untouched),
    /// [`ResourcesError::Incompatible`] when the committed set does not fit `configured`,
    /// [`ResourcesError::Io`].
    pub fn open(work_dir: &Path, configured: Resources, options: Options) -> Result<Self> {
        fs::create_trusted_dir(work_dir)?;
        let work_dir = std::fs::canonicalize(work_dir)
            .map_err(|e| error::io(Step::Canonicalize, work_dir, e))?;
        let meta_dir = work_dir.join(META_DIR);
        fs::create_trusted_dir(&meta_dir)?;
        let lock_path = meta_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| error::io(Step::Lock, &lock_path, e))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(ResourcesError::Locked { path: lock_path });
            }
            Err((_, e)) => return Err(error::errno(Step::Lock, &lock_path, e)),
        };
        let checkpointed = read_checkpoint(&meta_dir.join(CHECKPOINT_FILE))?.unwrap_or_default();
        // A corrupt target is reported now, not at recovery.
        read_checkpoint(&meta_dir.join(TARGET_FILE))?;
        let total = total_resources(&configured, &checkpointed)?;
        Ok(AgentResources {
            work_dir,
            meta_dir,
            configured,
            checkpointed,
            total,
            options,
            hook: None,
            quotas: None,
            gids: None,
            _lock: lock,
        })
    }

    /// Gives volumes on ROOT and PATH disks project quotas as `config` says (see [`quota`]),
    /// with `quotas` making the calls. Call [`reconcile_quotas`](Self::reconcile_quotas) next.
    ///
    /// # Errors
    /// The record of project ids cannot be read.
    pub fn set_quotas(
        &mut self,
        config: quota::QuotaConfig,
        quotas: std::sync::Arc<dyn berth_mount::quota::Quotas>,
    ) -> Result<()> {
        let record_error = |source| ResourcesError::Quota {
            path: self.meta_dir.join(quota::PROJECTS_FILE),
            source,
        };
        let mut q =
            quota::VolumeQuotas::open(&self.meta_dir, config, quotas).map_err(record_error)?;
        // The ids written ahead in the checkpoints: the committed set's, then a pending
        // change's (newer), each only for the volumes of its own set.
        for path in [self.checkpoint_path(), self.target_path()] {
            let Some(file) = read_checkpoint_file(&path)? else {
                continue;
            };
            let dirs = volume_dirs(&self.work_dir, &file.resources)?;
            let projects = file
                .projects
                .into_iter()
                .filter(|(d, _)| dirs.contains_key(d))
                .collect();
            for (dir, project) in q.adopt(&projects).map_err(record_error)? {
                tracing::warn!(path = %dir.display(), project, checkpoint = %path.display(), "a checkpointed project id is taken by another entry of the record; the volume gets a new one");
            }
        }
        self.quotas = Some(q);
        Ok(())
    }

    /// Gives shared volumes gids from `range` (see [`gids`]), taking those the checkpoints
    /// record. Call [`reconcile_gids`](Self::reconcile_gids) after recovery.
    ///
    /// # Errors
    /// A checkpoint or the record of other holders' gids cannot be read.
    pub fn set_gid_range(&mut self, range: gids::GidRange) -> Result<()> {
        self.set_gids(gids::VolumeGids::new(
            range,
            self.meta_dir.join(gids::TASK_GIDS_FILE),
        ))
    }

    /// As [`set_gid_range`](Self::set_gid_range) with a book of gids made beforehand (the
    /// agent's, already holding the CSI volumes' gids and shared with the CSI plugins; its
    /// record of other holders is [`gids::TASK_GIDS_FILE`] in this meta directory).
    ///
    /// # Errors
    /// A checkpoint or the record of other holders' gids cannot be read.
    pub fn set_gids(&mut self, g: gids::VolumeGids) -> Result<()> {
        g.load_others().map_err(|e| ResourcesError::Corrupt {
            path: self.meta_dir.join(gids::TASK_GIDS_FILE),
            reason: e.to_string(),
        })?;
        for path in [self.checkpoint_path(), self.target_path()] {
            if let Some(file) = read_checkpoint_file(&path)? {
                let live = shared_dirs(&self.work_dir, &file.resources)?;
                g.adopt(&file.gids, &live);
            }
        }
        self.gids = Some(g);
        Ok(())
    }

    /// The shared volumes' gids, when a range is set.
    #[must_use]
    pub fn gids(&self) -> Option<&gids::VolumeGids> {
        self.gids.as_ref()
    }

    /// After recovery: gives every committed shared volume without a gid one (recorded in the
    /// committed checkpoint first), and every shared volume's directory its gid and mode
    /// again (a crash may have come between the record and the directory). Without a range,
    /// nothing. Returns the volumes that got a new gid.
    ///
    /// # Errors
    /// [`ResourcesError::RecoveryRequired`] with a change pending,
    /// [`ResourcesError::GidsExhausted`], the checkpoint write, `fchown`/`fchmod`.
    pub fn reconcile_gids(&mut self) -> Result<Vec<PathBuf>> {
        if self.gids.is_none() {
            return Ok(Vec::new());
        }
        self.ensure_settled()?;
        let shared = shared_dirs(&self.work_dir, &self.checkpointed)?;
        let Some(g) = &mut self.gids else {
            return Ok(Vec::new());
        };
        g.retain(&shared);
        let missing: Vec<PathBuf> = shared
            .iter()
            .filter(|d| g.gid(d).is_none())
            .cloned()
            .collect();
        if !missing.is_empty() {
            if let Err((begin, end)) = g.assign(&missing) {
                return Err(ResourcesError::GidsExhausted {
                    path: missing.first().cloned().unwrap_or_default(),
                    begin,
                    end,
                });
            }
            let checkpointed = self.checkpointed.clone();
            let bytes = encode(&checkpointed, &self.extras(&checkpointed)?)?;
            fs::write_atomic(&self.checkpoint_path(), &bytes)?;
            tracing::info!(volumes = missing.len(), "gave shared volumes their gids");
        }
        for dir in volume_dirs(&self.work_dir, &self.checkpointed)?.into_values() {
            let gid = self.gids.as_ref().and_then(|g| g.gid(&dir.path));
            if let Some(gid) = gid
                && std::fs::symlink_metadata(&dir.path).is_ok()
            {
                fs::set_volume_group(&dir, gid)?;
            }
        }
        Ok(missing)
    }

    /// Gives the change's new shared volumes their gids; the map as it was, to restore if the
    /// target cannot be written.
    fn assign_gids(
        &mut self,
        plan: &Plan,
        new: &Resources,
    ) -> Result<Option<std::collections::BTreeMap<PathBuf, u32>>> {
        let Some(g) = &mut self.gids else {
            return Ok(None);
        };
        let shared = shared_dirs(&self.work_dir, new)?;
        let created: Vec<&PathBuf> = plan
            .create
            .iter()
            .map(|d| &d.path)
            .filter(|p| shared.contains(*p))
            .collect();
        g.assign(created.iter().copied())
            .map(Some)
            .map_err(|(begin, end)| ResourcesError::GidsExhausted {
                path: created.first().map(|p| (*p).clone()).unwrap_or_default(),
                begin,
                end,
            })
    }

    fn restore_gids(&mut self, before: Option<std::collections::BTreeMap<PathBuf, u32>>) {
        if let (Some(g), Some(b)) = (&mut self.gids, before) {
            g.restore(b);
        }
    }

    /// What the checkpoint of `set` records besides it: its volumes' project quotas and
    /// shared volumes' gids.
    fn extras(&self, set: &Resources) -> Result<VolumeExtras> {
        let dirs = volume_dirs(&self.work_dir, set)?;
        Ok(VolumeExtras {
            projects: self
                .quotas
                .as_ref()
                .map(|q| q.live_volumes(dirs.keys()))
                .unwrap_or_default(),
            gids: self
                .gids
                .as_ref()
                .map(|g| g.of(dirs.keys()))
                .unwrap_or_default(),
        })
    }

    /// The project quotas, when set.
    #[must_use]
    pub fn quotas(&self) -> Option<&quota::VolumeQuotas> {
        self.quotas.as_ref()
    }

    /// Brings every committed volume's quota in line with the record and the checkpoint (after
    /// a restart; see [`quota::VolumeQuotas::reconcile`]). Without quotas, nothing.
    ///
    /// # Errors
    /// [`ResourcesError::RecoveryRequired`] with a change pending; the quota failure.
    pub fn reconcile_quotas(&mut self) -> Result<quota::ReconcileReport> {
        self.ensure_settled()?;
        let sizes = sync::volume_sizes(&self.work_dir, &self.checkpointed)?;
        let dirs = volume_dirs(&self.work_dir, &self.checkpointed)?;
        let live: std::collections::BTreeMap<PathBuf, (u64, PathBuf)> = sizes
            .into_iter()
            .filter(|(p, _)| p.is_dir())
            .filter_map(|(p, size)| {
                let root = dirs.get(&p)?.root.clone();
                Some((p, (size, root)))
            })
            .collect();
        let Some(q) = &mut self.quotas else {
            return Ok(quota::ReconcileReport::default());
        };
        // A recorded volume is gone when it is not live and its directory does not exist.
        let report = q
            .reconcile(&live, &|d: &Path| std::fs::symlink_metadata(d).is_err())
            .map_err(|source| ResourcesError::Quota {
                path: self.meta_dir.join(quota::PROJECTS_FILE),
                source,
            })?;
        if report != quota::ReconcileReport::default() {
            tracing::info!(?report, "reconciled the volumes' project quotas");
        }
        Ok(report)
    }

    /// Refuses a shrink below the volume's usage (its quota's count, or a walk of the
    /// directory). A new volume that needs a project quota its filesystem lacks, or an id
    /// when none is free, is refused by [`reserve_quotas`](Self::reserve_quotas), also before
    /// the target is written.
    fn check_quotas(&self, plan: &Plan) -> Result<()> {
        for (d, old, new) in &plan.resize {
            if new >= old {
                continue;
            }
            if let Some(q) = self
                .quotas
                .as_ref()
                .filter(|q| q.assigned(&d.path).is_some())
            {
                q.check_shrink(&d.path, *new)
                    .map_err(|source| ResourcesError::Quota {
                        path: d.path.clone(),
                        source,
                    })?;
            } else if let Ok(used) = berth_mount::usage::tree_usage(&d.path)
                && used.bytes > *new
            {
                return Err(ResourcesError::ShrinkBelowUsage {
                    path: d.path.clone(),
                    used_bytes: used.bytes,
                    new_bytes: *new,
                });
            }
        }
        Ok(())
    }

    /// Takes the ids and limits the change gives, for its target to record (see
    /// [`quota::VolumeQuotas::reserve`]); the record as it was, to restore if the target
    /// cannot be written.
    fn reserve_quotas(&mut self, plan: &Plan) -> Result<Option<quota::Reserved>> {
        let Some(q) = &mut self.quotas else {
            return Ok(None);
        };
        let creates: Vec<(PathBuf, PathBuf, u64)> = plan
            .create
            .iter()
            .filter(|d| d.kind != DiskKind::Mount)
            .filter_map(|d| Some((d.path.clone(), d.root.clone(), *plan.sizes.get(&d.path)?)))
            .collect();
        let resizes: Vec<(PathBuf, u64)> = plan
            .resize
            .iter()
            .map(|(d, _, new)| (d.path.clone(), *new))
            .collect();
        q.reserve(&creates, &resizes)
            .map(Some)
            .map_err(|source| ResourcesError::Quota {
                path: self.meta_dir.join(quota::PROJECTS_FILE),
                source,
            })
    }

    /// Gives the volume at `path` its quota of `bytes`, firing the `volume limited` step
    /// point when it has one (nothing without quotas).
    fn limit(&mut self, path: &Path, bytes: u64) -> Result<()> {
        let Some(q) = &mut self.quotas else {
            return Ok(());
        };
        let project = q
            .limit(path, bytes)
            .map_err(|source| ResourcesError::Quota {
                path: path.to_owned(),
                source,
            })?;
        if project.is_some() {
            self.volume_step("volume limited", path);
        }
        Ok(())
    }

    /// Moves the quota record of a destroyed volume to the leftover holding its data (the id
    /// stays taken until that data is gone; reconciliation then releases it).
    fn quota_follows(&mut self, volume: &Path, leftover: &Path) -> Result<()> {
        if let Some(q) = &mut self.quotas {
            q.rename(volume, leftover)
                .map_err(|source| ResourcesError::Quota {
                    path: volume.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Gives `container`'s sandbox a project quota of `bytes` (its non-persistent `disk`, as
    /// Mesos's `disk/xfs` does) when project quotas apply to the sandbox's filesystem;
    /// `Ok(false)` when they do not.
    ///
    /// # Errors
    /// The quota failure (`--disk-isolation project-quota` on a filesystem without them, no
    /// free id, the kernel).
    pub fn limit_sandbox(&mut self, sandbox: &Path, bytes: u64, container: &str) -> Result<bool> {
        let Some(q) = &mut self.quotas else {
            return Ok(false);
        };
        let project = q
            .limit_sandbox(sandbox, bytes, container)
            .map_err(|source| ResourcesError::Quota {
                path: sandbox.to_owned(),
                source,
            })?;
        Ok(project.is_some())
    }

    /// Releases the sandbox quota of `container` (untagging the sandbox), if it has one.
    ///
    /// # Errors
    /// The quota failure.
    pub fn release_sandbox_of(&mut self, container: &str) -> Result<()> {
        let Some(q) = &mut self.quotas else {
            return Ok(());
        };
        for (sandbox, _) in q
            .sandboxes()
            .into_iter()
            .filter(|(_, c)| c.as_str() == container)
        {
            q.release_sandbox(&sandbox)
                .map_err(|source| ResourcesError::Quota {
                    path: sandbox.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The containers with a sandbox quota.
    #[must_use]
    pub fn sandbox_quota_containers(&self) -> Vec<String> {
        self.quotas
            .as_ref()
            .map(|q| q.sandboxes().into_iter().map(|(_, c)| c).collect())
            .unwrap_or_default()
    }

    /// Releases the quota of a destroyed volume whose data is gone (`fs_dir`: a directory on
    /// its filesystem).
    fn release(&mut self, path: &Path, fs_dir: &Path) -> Result<()> {
        if let Some(q) = &mut self.quotas {
            q.release(path, fs_dir)
                .map_err(|source| ResourcesError::Quota {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Installs a callback run at every [`HookPoint`] (tests: crash injection).
    pub fn set_hook(&mut self, hook: Hook) {
        self.hook = Some(hook);
    }

    fn hook(&self, point: HookPoint<'_>) {
        berth_mount::hook::fire(self.hook.as_ref(), point);
    }

    /// A step point about the volume at `path`.
    fn volume_step(&self, step: &'static str, path: &Path) {
        if self.hook.is_some() {
            let shown = path.to_string_lossy();
            self.hook(HookPoint {
                phase: Phase::Step,
                subject: &[shown.as_ref()],
                step,
                index: None,
            });
        }
    }

    /// The work dir (canonical).
    #[must_use]
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The committed checkpointed resources.
    #[must_use]
    pub fn checkpointed(&self) -> &Resources {
        &self.checkpointed
    }

    /// The resources configured with `--resources`.
    #[must_use]
    pub fn configured(&self) -> &Resources {
        &self.configured
    }

    /// The agent's total resources: configured, with the checkpointed ones substituted.
    #[must_use]
    pub fn total(&self) -> &Resources {
        &self.total
    }

    /// The path of the committed checkpoint.
    #[must_use]
    pub fn checkpoint_path(&self) -> PathBuf {
        self.meta_dir.join(CHECKPOINT_FILE)
    }

    /// The path of the target (intent) checkpoint; it exists only while a change is pending.
    #[must_use]
    pub fn target_path(&self) -> PathBuf {
        self.meta_dir.join(TARGET_FILE)
    }

    /// Whether an interrupted change waits for [`recover`](Self::recover).
    #[must_use]
    pub fn is_pending(&self) -> bool {
        self.target_path().exists()
    }

    /// The host directory of persistent volume `volume` on this agent.
    ///
    /// # Errors
    /// As [`layout::volume_dir`].
    pub fn volume_path(&self, volume: &Resource) -> Result<PathBuf> {
        volume_path(&self.work_dir, volume)
    }

    /// Replaces the checkpointed set with `new` (the master's whole set), then syncs the volume
    /// directories. Allocation info is dropped.
    ///
    /// # Errors
    /// [`ResourcesError::RecoveryRequired`], [`ResourcesError::NotCheckpointable`],
    /// [`ResourcesError::Incompatible`], volume path errors, [`ResourcesError::VolumeInUse`]
    /// and [`ResourcesError::MountedInside`] (nothing changed), or a failure during the sync
    /// (the change stays pending for [`recover`](Self::recover)).
    pub fn checkpoint(&mut self, new: &Resources, users: &dyn VolumeUsers) -> Result<SyncReport> {
        self.ensure_settled()?;
        let new = new.unallocate();
        if let Some(r) = new.iter().find(|r| !r.needs_checkpointing()) {
            return Err(ResourcesError::NotCheckpointable {
                resource: r.to_string(),
            });
        }
        let total = total_resources(&self.configured, &new)?;
        self.change(new, total, users)
    }

    /// Applies one accepted operation to the total resources: validated as the master does
    /// against the checkpointed set (operator API, every agent capability), applied, and the
    /// part of the result that needs checkpointing becomes the new checkpointed set.
    ///
    /// # Errors
    /// [`ResourcesError::RecoveryRequired`], [`ResourcesError::UnsupportedOperation`] (LAUNCH),
    /// [`ResourcesError::OperationRefused`], [`ResourcesError::OperationNotApplicable`] (nothing
    /// changed), then as [`checkpoint`](Self::checkpoint).
    pub fn apply_operation(
        &mut self,
        op: &Operation,
        users: &dyn VolumeUsers,
    ) -> Result<SyncReport> {
        self.ensure_settled()?;
        let operation = op.kind();
        if matches!(op, Operation::Launch { .. }) {
            return Err(ResourcesError::UnsupportedOperation { operation });
        }
        let op = unallocated(op);
        let ctx = Context {
            agent: AgentCapabilities::all(),
            checkpointed: self.checkpointed.clone(),
            ..Context::operator()
        };
        berth_offers::validate(&op, &ctx)
            .map_err(|source| ResourcesError::OperationRefused { operation, source })?;
        let after = berth_offers::apply(&self.total, &op)
            .map_err(|source| ResourcesError::OperationNotApplicable { operation, source })?;
        let new = after.filter(Resource::needs_checkpointing);
        let total = total_resources(&self.configured, &new)?;
        self.change(new, total, users)
    }

    /// [`apply_operation`](Self::apply_operation) of an operation in Mesos JSON.
    ///
    /// # Errors
    /// [`ResourcesError::InvalidOperation`], then as `apply_operation`.
    pub fn apply_operation_json(
        &mut self,
        op: &Json,
        users: &dyn VolumeUsers,
    ) -> Result<SyncReport> {
        let op = parse_operation(op)?;
        self.apply_operation(&op, users)
    }

    /// Finishes an interrupted change: syncs the directories from the committed set to the
    /// pending target (every step idempotent) and commits it. Without a pending change it
    /// reports the committed volumes whose directories are missing. Stray temp files of
    /// interrupted checkpoint writes are removed.
    ///
    /// # Errors
    /// [`ResourcesError::VolumeInUse`] (the change stays pending), [`ResourcesError::Corrupt`],
    /// [`ResourcesError::Incompatible`], [`ResourcesError::MountedInside`], I/O errors.
    pub fn recover(&mut self, users: &dyn VolumeUsers) -> Result<SyncReport> {
        self.remove_temp_files()?;
        let target_path = self.target_path();
        let Some(target) = read_checkpoint(&target_path)? else {
            let mut report = SyncReport::default();
            for dir in volume_dirs(&self.work_dir, &self.checkpointed)?.into_values() {
                if std::fs::symlink_metadata(&dir.path).is_err() {
                    report.missing.push(dir.path);
                }
            }
            return Ok(report);
        };
        tracing::info!(target = %target_path.display(), "finishing an interrupted change of the agent resources");
        let total = total_resources(&self.configured, &target)?;
        let plan = Plan::new(&self.work_dir, &self.checkpointed, &target)?;
        plan.check_users(users)?;
        let mut report = self.sync(&plan)?;
        report.recovered = true;
        self.commit(target, total)?;
        Ok(report)
    }

    fn ensure_settled(&self) -> Result<()> {
        let target = self.target_path();
        if target.exists() {
            return Err(ResourcesError::RecoveryRequired { target });
        }
        Ok(())
    }

    fn remove_temp_files(&self) -> Result<()> {
        let listing = std::fs::read_dir(&self.meta_dir)
            .map_err(|e| error::io(Step::OpenDir, &self.meta_dir, e))?;
        for entry in listing.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".resources.tmp.")
            {
                std::fs::remove_file(entry.path())
                    .map_err(|e| error::io(Step::Remove, entry.path(), e))?;
            }
        }
        Ok(())
    }

    fn change(
        &mut self,
        new: Resources,
        total: Resources,
        users: &dyn VolumeUsers,
    ) -> Result<SyncReport> {
        let plan = Plan::new(&self.work_dir, &self.checkpointed, &new)?;
        plan.check_paths()?;
        plan.check_users(users)?;
        plan.check_mounts()?;
        self.check_quotas(&plan)?;
        let gids_before = self.assign_gids(&plan, &new)?;
        let before = match self.reserve_quotas(&plan) {
            Ok(b) => b,
            Err(e) => {
                self.restore_gids(gids_before);
                return Err(e);
            }
        };
        // The ids, limits and gids just taken are written ahead in the target itself: one
        // fsync'd intent for the whole change.
        let written = self
            .extras(&new)
            .and_then(|extras| encode(&new, &extras))
            .and_then(|bytes| fs::write_atomic(&self.target_path(), &bytes));
        if let Err(e) = written {
            if let (Some(q), Some(before)) = (&mut self.quotas, before) {
                q.restore(before);
            }
            self.restore_gids(gids_before);
            return Err(e);
        }
        self.hook(HookPoint::intent(&[], "target written"));
        let report = self.sync(&plan)?;
        self.commit(new, total)?;
        Ok(report)
    }

    fn sync(&mut self, plan: &Plan) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        // New volumes first, as Mesos does: a failure leaves every old volume in place.
        for d in &plan.create {
            fs::create_volume_dir(d)?;
            tracing::info!(id = %d.id, path = %d.path.display(), "created persistent volume directory");
            report.created.push(d.path.clone());
            self.volume_step("volume created", &d.path);
            if let Some(bytes) = plan.sizes.get(&d.path) {
                self.limit(&d.path, *bytes)?;
            }
            if let Some(gid) = self.gids.as_ref().and_then(|g| g.gid(&d.path)) {
                fs::set_volume_group(d, gid)?;
                self.volume_step("volume grouped", &d.path);
            }
        }
        // GROW and SHRINK: the limit follows the size, before the new size is committed.
        for (d, _, new) in &plan.resize {
            self.limit(&d.path, *new)?;
        }
        for d in &plan.destroy {
            // What earlier attempts at the same volume left (an interrupted change, a failed
            // removal, an older version's trash entry): removed now, or left for gc.
            self.settle_previous(d)?;
            if self.options.retain_destroyed_data {
                match fs::detach(d, true, &d.id)? {
                    Detached::Retained(to) => {
                        self.volume_step("volume detached", &d.path);
                        // Kept data is no volume any more: untagged, its id released.
                        if let Some(q) = self
                            .quotas
                            .as_ref()
                            .filter(|q| q.assigned(&d.path).is_some())
                        {
                            if let Err(e) = q.untag(&to) {
                                tracing::warn!(path = %to.display(), error = %e, "cannot clear the project id of retained data");
                            }
                            self.release(&d.path, &d.root)?;
                        }
                        tracing::info!(id = %d.id, path = %d.path.display(), kept = %to.display(), "retained destroyed persistent volume");
                        report.retained.push((d.path.clone(), to));
                    }
                    Detached::KeptInPlace => {
                        report.retained.push((d.path.clone(), d.path.clone()));
                    }
                    Detached::Trashed
                    | Detached::Cleared
                    | Detached::Unlinked
                    | Detached::Absent => {
                        report.removed.push(d.path.clone());
                        self.release(&d.path, &d.root)?;
                    }
                }
            } else {
                self.destroy_volume(d, gc::Origin::Destroy, &mut report)?;
                // The quota: its data gone, the id may serve another volume; data left in
                // the trash keeps the id (under the leftover's path) until it is gone too.
                if let Some((_, leftover)) = report.deferred.iter().find(|(v, _)| v == &d.path) {
                    let leftover = leftover.clone();
                    self.quota_follows(&d.path, &leftover)?;
                } else {
                    self.release(&d.path, &d.root)?;
                }
            }
            tracing::info!(id = %d.id, path = %d.path.display(), "destroyed persistent volume directory");
            self.volume_step("volume removed", &d.path);
        }
        Ok(report)
    }

    fn commit(&mut self, new: Resources, total: Resources) -> Result<()> {
        let target = self.target_path();
        let committed = self.checkpoint_path();
        std::fs::rename(&target, &committed).map_err(|e| error::io(Step::Commit, &target, e))?;
        fs::fsync_dir(&self.meta_dir)?;
        if let Some(g) = &mut self.gids {
            g.retain(&shared_dirs(&self.work_dir, &new)?);
        }
        self.checkpointed = new;
        self.total = total;
        self.hook(HookPoint::done(&[], "committed"));
        Ok(())
    }
}
