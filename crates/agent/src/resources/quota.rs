//! Project quotas of persistent volumes: the size a volume promises, enforced by the kernel.
//!
//! Mesos's `disk/xfs` isolator gives every persistent volume (and sandbox) an XFS project
//! quota from `--xfs_project_range`; berth does the same on XFS and on ext4 (project quotas
//! since Linux 4.5), through `berth_mount::quota` (no `xfs_quota`, no `setquota`).
//!
//! - **Which volumes.** `--disk-isolation auto` (the default) puts a quota on a volume whose
//!   filesystem accounts and enforces project quotas and falls back to `du` accounting
//!   elsewhere; `project-quota` requires them (a volume elsewhere is refused); `du` and `none`
//!   never set one. MOUNT disks are their own filesystem and get none (their size is the
//!   filesystem's).
//! - **Project ids** come from `--project-ids BEGIN-END` (Mesos's `--xfs_project_range`, same
//!   default `[5000-10000]`), the lowest free one first; two live volumes never share one.
//! - **Write-ahead.** A new volume's id and limit, and a resized volume's new limit, are
//!   written into the change's target checkpoint (`resources.target.json`, fsync'd, the one
//!   intent of the change) *before* the directory is tagged or the limit set, and the
//!   committed checkpoint keeps them; [`VolumeQuotas::adopt`] takes them back after a
//!   restart, and a crash in between leaves a recorded id that [`VolumeQuotas::reconcile`]
//!   finishes or releases. `meta/resources/projects.json` (fsync'd, atomically) records what
//!   is no live volume's: sandboxes' ids and the ids kept by a destroyed volume's leftovers,
//!   and every release.
//!   An id is released only when the volume's data is gone, so a new volume never inherits
//!   the bytes of an old one still being removed.
//! - **Limits.** Hard limit = the volume's size; `--quota-headroom BYTES` adds a soft limit
//!   that much below it (Mesos's headroom, as a warning threshold: the kernel reports the
//!   grace period, writes fail only at the hard limit). A resize sets the new limit; a shrink
//!   below what the volume holds is refused with the usage in the error.
//! - **Reconciliation** (recovery): every live volume's directory carries its recorded id and
//!   limit (fixed if not); recorded ids of volumes that are gone are released; an id found on
//!   a volume directory that the record does not give it is reported and cleared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use berth_mount::quota::{Limits, QuotaError, Quotas, Support, Usage};
use serde::{Deserialize, Serialize};

/// The record's file name (in the resources' meta directory).
pub const PROJECTS_FILE: &str = "projects.json";
const SCHEMA_VERSION: u32 = 1;

/// `--disk-isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskIsolation {
    /// Project quotas where the filesystem has them, else `du` accounting.
    #[default]
    Auto,
    /// Project quotas, required.
    ProjectQuota,
    /// `du` accounting only.
    Du,
    /// Nothing measured or enforced.
    None,
}

impl FromStr for DiskIsolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "project-quota" | "project_quota" | "xfs" => Ok(Self::ProjectQuota),
            "du" => Ok(Self::Du),
            "none" => Ok(Self::None),
            other => Err(format!(
                "--disk-isolation: expected auto, project-quota, du or none, got {other:?}"
            )),
        }
    }
}

/// `--project-ids BEGIN-END` (also Mesos's `[BEGIN-END]`): an inclusive range of project ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectRange {
    begin: u32,
    end: u32,
}

impl ProjectRange {
    /// Mesos's default `--xfs_project_range`, `[5000-10000]`.
    pub const MESOS_DEFAULT: ProjectRange = ProjectRange {
        begin: 5000,
        end: 10000,
    };

    /// `begin..=end`.
    ///
    /// # Errors
    /// An empty range, or one that includes 0 (the id of files without a project).
    pub fn new(begin: u32, end: u32) -> Result<Self, String> {
        if begin == 0 || begin > end {
            return Err(format!(
                "project ids {begin}-{end}: need 1 <= BEGIN <= END (0 means no project)"
            ));
        }
        Ok(Self { begin, end })
    }

    /// Whether `id` is in the range.
    #[must_use]
    pub fn contains(self, id: u32) -> bool {
        (self.begin..=self.end).contains(&id)
    }
}

impl Default for ProjectRange {
    fn default() -> Self {
        Self::MESOS_DEFAULT
    }
}

impl FromStr for ProjectRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (begin, end) = parse_id_range(s, "project ids")?;
        Self::new(begin, end)
    }
}

/// `BEGIN-END` or Mesos's `[BEGIN-END]` (`--project-ids`, `--volume-gid-range`): the two
/// numbers, unchecked; `what` names the flag in errors.
///
/// # Errors
/// Not two numbers joined by `-`.
pub(crate) fn parse_id_range(s: &str, what: &str) -> Result<(u32, u32), String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(s.trim());
    let (b, e) = inner
        .split_once('-')
        .ok_or_else(|| format!("{what}: expected BEGIN-END, got {s:?}"))?;
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|e| format!("{what} {s:?}: {e}"))
    };
    Ok((num(b)?, num(e)?))
}

/// How project quotas are used (the agent's flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaConfig {
    /// `--disk-isolation`.
    pub isolation: DiskIsolation,
    /// `--project-ids`.
    pub range: ProjectRange,
    /// `--quota-headroom`: the soft limit sits this far below the hard one (0: no soft limit).
    pub headroom_bytes: u64,
}

/// Why a quota step failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaFailure {
    /// The kernel refused a quota call.
    #[error(transparent)]
    Kernel(#[from] QuotaError),
    /// Reading or writing the record failed.
    #[error("{step} {}: {source}", path.display())]
    Record {
        /// What was being done.
        step: &'static str,
        /// The record's path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The record is not what berth writes.
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The record's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Every id of the range is taken.
    #[error("no free project id in {begin}-{end}: every one is held by a live volume")]
    Exhausted {
        /// The range's first id.
        begin: u32,
        /// The range's last id.
        end: u32,
    },
    /// `--disk-isolation project-quota` and the volume's filesystem has no enforced project
    /// quotas.
    #[error(
        "{}: the filesystem does not enforce project quotas (XFS or ext4 mounted with prjquota); \
         --disk-isolation project-quota requires them",
        dir.display()
    )]
    Unsupported {
        /// The volume directory.
        dir: PathBuf,
    },
    /// A shrink below what the volume already holds.
    #[error(
        "{}: cannot shrink to {new_bytes} bytes: the volume holds {used_bytes} bytes",
        dir.display()
    )]
    ShrinkBelowUsage {
        /// The volume directory.
        dir: PathBuf,
        /// The bytes it holds.
        used_bytes: u64,
        /// The size asked for.
        new_bytes: u64,
    },
}

/// One volume's (or sandbox's) recorded quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// Its project id.
    pub project: u32,
    /// Its hard limit in bytes.
    pub hard_bytes: u64,
    /// For a container's sandbox: the container (released at its cleanup; a sandbox quota
    /// whose container has no record is released when the agent opens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    schema_version: u32,
    /// By volume directory.
    volumes: BTreeMap<PathBuf, Assigned>,
}

/// What [`VolumeQuotas::reconcile`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Live volumes whose directory's id or limit was set again.
    pub fixed: Vec<PathBuf>,
    /// Recorded ids of volumes that are gone, released.
    pub released: Vec<(PathBuf, u32)>,
    /// Ids found on volume directories that the record does not give them, cleared.
    pub cleared: Vec<(PathBuf, u32)>,
}

/// The record as it was before [`VolumeQuotas::reserve`] (for [`VolumeQuotas::restore`]).
#[derive(Debug)]
#[must_use]
pub struct Reserved(BTreeMap<PathBuf, Assigned>);

/// The project quotas of one agent's persistent volumes.
pub struct VolumeQuotas {
    config: QuotaConfig,
    quotas: Arc<dyn Quotas>,
    path: PathBuf,
    record: Record,
}

impl std::fmt::Debug for VolumeQuotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeQuotas")
            .field("config", &self.config)
            .field("path", &self.path)
            .field("volumes", &self.record.volumes)
            .finish_non_exhaustive()
    }
}

/// How a volume's usage is measured and its size enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeEnforcement {
    /// A project quota.
    ProjectQuota,
    /// A walk of the directory.
    Du,
    /// Nothing.
    None,
}

impl VolumeQuotas {
    /// Opens the record in `meta_dir` (an absent record is an empty one).
    ///
    /// # Errors
    /// [`QuotaFailure::Record`], [`QuotaFailure::Corrupt`].
    pub fn open(
        meta_dir: &Path,
        config: QuotaConfig,
        quotas: Arc<dyn Quotas>,
    ) -> Result<Self, QuotaFailure> {
        let path = meta_dir.join(PROJECTS_FILE);
        let record = match std::fs::read(&path) {
            Ok(bytes) => {
                let r: Record =
                    serde_json::from_slice(&bytes).map_err(|e| QuotaFailure::Corrupt {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if r.schema_version != SCHEMA_VERSION {
                    return Err(QuotaFailure::Corrupt {
                        path,
                        reason: format!(
                            "schema version {} is not {SCHEMA_VERSION}",
                            r.schema_version
                        ),
                    });
                }
                r
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record {
                schema_version: SCHEMA_VERSION,
                volumes: BTreeMap::new(),
            },
            Err(source) => {
                return Err(QuotaFailure::Record {
                    step: "reading",
                    path,
                    source,
                });
            }
        };
        Ok(Self {
            config,
            quotas,
            path,
            record,
        })
    }

    /// The quota calls (for measuring usage without holding the agent's resources).
    #[must_use]
    pub fn calls(&self) -> Arc<dyn Quotas> {
        Arc::clone(&self.quotas)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> QuotaConfig {
        self.config
    }

    /// The recorded quota of the volume at `dir`.
    #[must_use]
    pub fn assigned(&self, dir: &Path) -> Option<Assigned> {
        self.record.volumes.get(dir).cloned()
    }

    /// The recorded sandbox quotas: (sandbox, container).
    #[must_use]
    pub fn sandboxes(&self) -> Vec<(PathBuf, String)> {
        self.record
            .volumes
            .iter()
            .filter_map(|(p, a)| Some((p.clone(), a.container.clone()?)))
            .collect()
    }

    /// Every recorded quota.
    #[must_use]
    pub fn all(&self) -> &BTreeMap<PathBuf, Assigned> {
        &self.record.volumes
    }

    /// How the volume at `dir` (an existing directory) is measured and enforced.
    ///
    /// # Errors
    /// [`QuotaFailure::Unsupported`] under `project-quota` on a filesystem without them.
    pub fn enforcement(&self, dir: &Path) -> Result<VolumeEnforcement, QuotaFailure> {
        match self.config.isolation {
            DiskIsolation::None => Ok(VolumeEnforcement::None),
            DiskIsolation::Du => Ok(VolumeEnforcement::Du),
            DiskIsolation::Auto => Ok(
                if matches!(self.quotas.support(dir), Ok(Support::Enforced)) {
                    VolumeEnforcement::ProjectQuota
                } else {
                    VolumeEnforcement::Du
                },
            ),
            DiskIsolation::ProjectQuota => match self.quotas.support(dir) {
                Ok(Support::Enforced) => Ok(VolumeEnforcement::ProjectQuota),
                _ => Err(QuotaFailure::Unsupported {
                    dir: dir.to_owned(),
                }),
            },
        }
    }

    fn persist(&self) -> Result<(), QuotaFailure> {
        let bytes = serde_json::to_vec_pretty(&self.record).map_err(|e| QuotaFailure::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        berth_mount::durable::write_atomic(&self.path, &bytes).map_err(|source| {
            QuotaFailure::Record {
                step: "writing",
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Takes, in memory, the ids and limits a change is about to give: `creates` (new volume
    /// directories with the directory their filesystem is judged by) and `resizes` (volumes
    /// keeping their directory, with a new size). Nothing is written here: the caller writes
    /// them into the change's target checkpoint ([`live_volumes`](Self::live_volumes)), the
    /// one fsync'd intent of the change, before any directory is tagged or limit set; a
    /// restart takes them back from there ([`adopt`](Self::adopt)). [`limit`](Self::limit)
    /// then finds every entry in place and writes nothing. Returns the record as it was, for
    /// [`restore`](Self::restore) when the target cannot be written.
    ///
    /// # Errors
    /// [`QuotaFailure::Unsupported`], [`QuotaFailure::Exhausted`] (nothing taken).
    pub fn reserve(
        &mut self,
        creates: &[(PathBuf, PathBuf, u64)],
        resizes: &[(PathBuf, u64)],
    ) -> Result<Reserved, QuotaFailure> {
        let before = self.record.volumes.clone();
        let mut run = || -> Result<(), QuotaFailure> {
            for (dir, root, size) in creates {
                if self.record.volumes.contains_key(dir)
                    || self.enforcement(root)? != VolumeEnforcement::ProjectQuota
                {
                    continue;
                }
                let project = self.free_id()?;
                self.record.volumes.insert(
                    dir.clone(),
                    Assigned {
                        project,
                        hard_bytes: *size,
                        container: None,
                    },
                );
            }
            for (dir, size) in resizes {
                if let Some(a) = self.record.volumes.get_mut(dir) {
                    a.hard_bytes = *size;
                }
            }
            Ok(())
        };
        match run() {
            Ok(()) => Ok(Reserved(before)),
            Err(e) => {
                self.record.volumes = before;
                Err(e)
            }
        }
    }

    /// Puts the record back as it was before a [`reserve`](Self::reserve) whose change was
    /// not written.
    pub fn restore(&mut self, before: Reserved) {
        self.record.volumes = before.0;
    }

    /// The recorded quotas of the volumes in `dirs` (a checkpointed set's volume directories),
    /// for the checkpoint of that set.
    #[must_use]
    pub fn live_volumes<'a>(
        &self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> BTreeMap<PathBuf, Assigned> {
        dirs.into_iter()
            .filter_map(|d| {
                let a = self.record.volumes.get(d)?;
                a.container.is_none().then(|| (d.clone(), a.clone()))
            })
            .collect()
    }

    /// Takes the volumes' quotas a checkpoint holds (the committed one, then a pending
    /// target's) into the record. The checkpoint is where a new volume's id and every new
    /// limit are written ahead of their use, so its limit wins, and its id for a volume the
    /// record does not know; a volume the record knows keeps the record's id (only a
    /// reconciliation, which writes `projects.json` ahead, gives a live volume another id).
    /// An id the record gives to something else (a sandbox, a leftover) is never given
    /// twice: such an entry is left out and returned, and reconciliation gives the volume a
    /// fresh id. Writes the record when it changed.
    ///
    /// # Errors
    /// The record.
    pub fn adopt(
        &mut self,
        from_checkpoint: &BTreeMap<PathBuf, Assigned>,
    ) -> Result<Vec<(PathBuf, u32)>, QuotaFailure> {
        let mut refused = Vec::new();
        let mut changed = false;
        for (dir, a) in from_checkpoint {
            if let Some(known) = self.record.volumes.get_mut(dir) {
                if known.hard_bytes != a.hard_bytes {
                    known.hard_bytes = a.hard_bytes;
                    changed = true;
                }
                continue;
            }
            let taken = self.record.volumes.values().any(|o| o.project == a.project);
            if taken || a.container.is_some() || !self.config.range.contains(a.project) {
                refused.push((dir.clone(), a.project));
                continue;
            }
            self.record.volumes.insert(dir.clone(), a.clone());
            changed = true;
        }
        if changed {
            self.persist()?;
        }
        Ok(refused)
    }

    fn free_id(&self) -> Result<u32, QuotaFailure> {
        let taken: std::collections::BTreeSet<u32> =
            self.record.volumes.values().map(|a| a.project).collect();
        let ProjectRange { begin, end } = self.config.range;
        (begin..=end)
            .find(|id| !taken.contains(id))
            .ok_or(QuotaFailure::Exhausted { begin, end })
    }

    fn limits(&self, hard_bytes: u64) -> Limits {
        Limits {
            hard_bytes,
            soft_bytes: if self.config.headroom_bytes == 0 {
                0
            } else {
                hard_bytes.saturating_sub(self.config.headroom_bytes).max(1)
            },
        }
    }

    /// Gives the volume at `dir` (an existing directory) a quota of `size_bytes`, or sets its
    /// quota to that size: the id and limit are recorded first (write-ahead), then the
    /// directory is tagged and the limit set. Idempotent. `Ok(None)` when the volume gets no
    /// quota (see [`VolumeQuotas::enforcement`]).
    ///
    /// # Errors
    /// [`QuotaFailure`]: no support under `project-quota`, no free id, the record or the
    /// kernel.
    pub fn limit(&mut self, dir: &Path, size_bytes: u64) -> Result<Option<u32>, QuotaFailure> {
        self.limit_for(dir, size_bytes, None)
    }

    /// [`limit`](Self::limit) of a container's sandbox (Mesos's `disk/xfs` gives the sandbox a
    /// quota of the container's non-persistent `disk`), recorded with the container's id.
    ///
    /// # Errors
    /// As [`limit`](Self::limit).
    pub fn limit_sandbox(
        &mut self,
        sandbox: &Path,
        size_bytes: u64,
        container: &str,
    ) -> Result<Option<u32>, QuotaFailure> {
        self.limit_for(sandbox, size_bytes, Some(container.to_owned()))
    }

    /// Clears a sandbox's project id (its files are no container's any more) and releases
    /// its quota; nothing recorded: nothing to do.
    ///
    /// # Errors
    /// The kernel or the record.
    pub fn release_sandbox(&mut self, sandbox: &Path) -> Result<Option<u32>, QuotaFailure> {
        if self.assigned(sandbox).is_none() {
            return Ok(None);
        }
        if sandbox.is_dir() {
            self.untag(sandbox)?;
        }
        let fs_dir = sandbox
            .ancestors()
            .find(|d| d.is_dir())
            .unwrap_or(Path::new("/"))
            .to_owned();
        self.release(sandbox, &fs_dir)
    }

    fn limit_for(
        &mut self,
        dir: &Path,
        size_bytes: u64,
        container: Option<String>,
    ) -> Result<Option<u32>, QuotaFailure> {
        let existing = self.assigned(dir);
        if existing.is_none() && self.enforcement(dir)? != VolumeEnforcement::ProjectQuota {
            return Ok(None);
        }
        let project = match &existing {
            Some(a) => a.project,
            None => self.free_id()?,
        };
        let wanted = Assigned {
            project,
            hard_bytes: size_bytes,
            container: container.or_else(|| existing.as_ref().and_then(|a| a.container.clone())),
        };
        if existing.as_ref() != Some(&wanted) {
            self.record.volumes.insert(dir.to_owned(), wanted);
            if let Err(e) = self.persist() {
                // Not recorded: not assigned (the record on disk is the previous one).
                match existing {
                    Some(a) => self.record.volumes.insert(dir.to_owned(), a),
                    None => self.record.volumes.remove(dir),
                };
                return Err(e);
            }
        }
        if self.quotas.project_of(dir)? != project {
            self.quotas.assign(dir, project)?;
        }
        self.quotas
            .set_limits(dir, project, self.limits(size_bytes))?;
        Ok(Some(project))
    }

    /// Refuses a shrink of the volume at `dir` to `new_bytes` below what it holds (volumes
    /// without a quota: nothing to check here; the caller may measure with `du`).
    ///
    /// # Errors
    /// [`QuotaFailure::ShrinkBelowUsage`], or the kernel's error reading the usage.
    pub fn check_shrink(&self, dir: &Path, new_bytes: u64) -> Result<(), QuotaFailure> {
        let Some(a) = self.assigned(dir) else {
            return Ok(());
        };
        let used = self.quotas.usage(dir, a.project)?.used_bytes;
        if used > new_bytes {
            return Err(QuotaFailure::ShrinkBelowUsage {
                dir: dir.to_owned(),
                used_bytes: used,
                new_bytes,
            });
        }
        Ok(())
    }

    /// The usage the kernel counts for the volume at `dir` (`None` without a quota).
    ///
    /// # Errors
    /// The kernel's error.
    pub fn usage(&self, dir: &Path) -> Result<Option<Usage>, QuotaFailure> {
        match self.assigned(dir) {
            Some(a) => Ok(Some(self.quotas.usage(dir, a.project)?)),
            None => Ok(None),
        }
    }

    /// Moves the record of `from` to `to` (a destroyed volume's data moved into the trash and
    /// left there): the id stays taken, with no limit, until `to` is gone.
    ///
    /// # Errors
    /// The kernel or the record.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Result<(), QuotaFailure> {
        let Some(mut a) = self.assigned(from) else {
            return Ok(());
        };
        let fs_dir = to
            .ancestors()
            .find(|d| d.is_dir())
            .unwrap_or(Path::new("/"))
            .to_owned();
        self.quotas
            .set_limits(&fs_dir, a.project, Limits::default())?;
        a.hard_bytes = 0;
        let old = self.record.volumes.remove(from);
        self.record.volumes.insert(to.to_owned(), a);
        if let Err(e) = self.persist() {
            self.record.volumes.remove(to);
            if let Some(o) = old {
                self.record.volumes.insert(from.to_owned(), o);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Clears the project id of `dir` and everything below it (data that is no volume any
    /// more, such as a destroyed volume's retained data).
    ///
    /// # Errors
    /// The kernel's error.
    pub fn untag(&self, dir: &Path) -> Result<(), QuotaFailure> {
        Ok(self.quotas.assign(dir, 0)?)
    }

    /// Releases the quota of a volume whose data is gone (`dir` need not exist): its limit is
    /// cleared on `fs_dir` (a directory on the same filesystem, e.g. the disk root), then its
    /// id leaves the record. Nothing recorded: nothing to do.
    ///
    /// # Errors
    /// The kernel or the record.
    pub fn release(&mut self, dir: &Path, fs_dir: &Path) -> Result<Option<u32>, QuotaFailure> {
        let Some(a) = self.assigned(dir) else {
            return Ok(None);
        };
        self.quotas
            .set_limits(fs_dir, a.project, Limits::default())?;
        let project = a.project;
        self.record.volumes.remove(dir);
        if let Err(e) = self.persist() {
            self.record.volumes.insert(dir.to_owned(), a);
            return Err(e);
        }
        Ok(Some(project))
    }

    /// After a restart: `live` maps every checkpointed volume directory on a ROOT or PATH disk
    /// to its size and disk root; `gone(dir)` says whether a recorded volume's data is gone
    /// (not in the trash or a leftover). Every live volume gets its quota as recorded (set
    /// again when its directory or limit differs; a volume without a record gets one when the
    /// isolation mode asks for it); recorded volumes that are gone are released; an id on a
    /// live directory that the record does not give it is cleared first.
    ///
    /// # Errors
    /// The first failure that stops reconciliation (the record); per-volume kernel failures
    /// are returned too, as the error, after the other volumes were reconciled.
    pub fn reconcile(
        &mut self,
        live: &BTreeMap<PathBuf, (u64, PathBuf)>,
        gone: &dyn Fn(&Path) -> bool,
    ) -> Result<ReconcileReport, QuotaFailure> {
        let mut report = ReconcileReport::default();
        let mut first_error = None;
        // Sandboxes are the agent's to settle (by their containers' records).
        let recorded: Vec<(PathBuf, Assigned)> = self
            .record
            .volumes
            .iter()
            .filter(|(_, a)| a.container.is_none())
            .map(|(p, a)| (p.clone(), a.clone()))
            .collect();
        for (dir, a) in recorded {
            if live.contains_key(&dir) {
                continue;
            }
            if !gone(&dir) {
                continue;
            }
            let fs_dir = dir
                .ancestors()
                .find(|d| d.is_dir())
                .unwrap_or(Path::new("/"))
                .to_owned();
            match self.release(&dir, &fs_dir) {
                Ok(_) => report.released.push((dir, a.project)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for (dir, (size, _root)) in live {
            let before = self.assigned(dir);
            let on_dir = self.quotas.project_of(dir).unwrap_or(0);
            if on_dir != 0 && before.as_ref().is_none_or(|a| a.project != on_dir) {
                // Not ours (an id berth did not record, or a stale one): cleared.
                if let Err(e) = self.quotas.assign(dir, 0) {
                    first_error.get_or_insert(e.into());
                    continue;
                }
                report.cleared.push((dir.clone(), on_dir));
            }
            let kernel_limit = before
                .as_ref()
                .and_then(|a| self.quotas.usage(dir, a.project).ok())
                .map(|u| u.limits.hard_bytes);
            let in_place = before.as_ref().is_some_and(|a| {
                a.hard_bytes == *size && on_dir == a.project && kernel_limit == Some(*size)
            });
            if in_place {
                continue;
            }
            match self.limit(dir, *size) {
                Ok(Some(_)) => report.fixed.push(dir.clone()),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use berth_mount::quota::FakeQuotas;

    fn open(dir: &Path, fake: &Arc<FakeQuotas>, config: QuotaConfig) -> VolumeQuotas {
        VolumeQuotas::open(dir, config, Arc::clone(fake) as Arc<dyn Quotas>).unwrap()
    }

    fn cfg(isolation: DiskIsolation) -> QuotaConfig {
        QuotaConfig {
            isolation,
            range: ProjectRange::new(7, 9).unwrap(),
            headroom_bytes: 0,
        }
    }

    #[test]
    fn flags_parse_in_both_spellings() {
        assert_eq!(
            "[5000-10000]".parse::<ProjectRange>().unwrap(),
            ProjectRange::MESOS_DEFAULT
        );
        assert_eq!(
            "100-200".parse::<ProjectRange>().unwrap(),
            ProjectRange::new(100, 200).unwrap()
        );
        assert!("0-10".parse::<ProjectRange>().is_err());
        assert!("10-5".parse::<ProjectRange>().is_err());
        assert!("10".parse::<ProjectRange>().is_err());
        assert_eq!("auto".parse::<DiskIsolation>(), Ok(DiskIsolation::Auto));
        assert_eq!(
            "project-quota".parse::<DiskIsolation>(),
            Ok(DiskIsolation::ProjectQuota)
        );
        assert!("xfs_quota".parse::<DiskIsolation>().is_err());
    }

    #[test]
    fn ids_are_recorded_before_they_are_set_and_never_shared() {
        let meta = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeQuotas::new(Support::Enforced));
        let mut q = open(meta.path(), &fake, cfg(DiskIsolation::Auto));
        let (a, b) = (PathBuf::from("/v/a"), PathBuf::from("/v/b"));
        assert_eq!(q.limit(&a, 1000).unwrap(), Some(7));
        assert_eq!(q.limit(&b, 2000).unwrap(), Some(8));
        // Recorded on disk: a reopened record knows both.
        let again = open(meta.path(), &fake, cfg(DiskIsolation::Auto));
        assert_eq!(again.assigned(&a).unwrap().project, 7);
        assert_eq!(again.assigned(&b).unwrap().hard_bytes, 2000);
        assert_eq!(fake.limits_of(8).unwrap().hard_bytes, 2000);
        // A resize keeps the id and moves the limit.
        assert_eq!(q.limit(&b, 3000).unwrap(), Some(8));
        assert_eq!(fake.limits_of(8).unwrap().hard_bytes, 3000);
        // Released only by release; then the id is free again, lowest first.
        assert_eq!(q.release(&a, Path::new("/v")).unwrap(), Some(7));
        assert_eq!(fake.limits_of(7), None);
        assert_eq!(q.limit(Path::new("/v/c"), 5).unwrap(), Some(7));
        assert_eq!(q.limit(Path::new("/v/d"), 5).unwrap(), Some(9));
        let e = q.limit(Path::new("/v/e"), 5).unwrap_err();
        assert!(
            matches!(e, QuotaFailure::Exhausted { begin: 7, end: 9 }),
            "{e}"
        );
        assert!(
            q.assigned(Path::new("/v/e")).is_none(),
            "nothing recorded on failure"
        );
    }

    #[test]
    fn adopt_takes_new_ids_and_limits_from_the_checkpoint_but_never_shares_an_id() {
        let meta = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeQuotas::new(Support::Enforced));
        let mut q = open(meta.path(), &fake, cfg(DiskIsolation::Auto));
        let (a, b, c, d) = (
            PathBuf::from("/v/a"),
            PathBuf::from("/v/b"),
            PathBuf::from("/v/c"),
            PathBuf::from("/v/d"),
        );
        assert_eq!(q.limit(&a, 1000).unwrap(), Some(7));
        let entry = |project, hard_bytes| Assigned {
            project,
            hard_bytes,
            container: None,
        };
        let checkpoint = BTreeMap::from([
            // Known: the record's id stays, the checkpoint's (newer) limit is taken.
            (a.clone(), entry(9, 4000)),
            // New: taken as written ahead.
            (b.clone(), entry(8, 2000)),
            // Id 7 is a's: refused, never shared.
            (c.clone(), entry(7, 10)),
            // Outside the range: refused.
            (d.clone(), entry(70, 10)),
        ]);
        let refused = q.adopt(&checkpoint).unwrap();
        assert_eq!(refused, vec![(c.clone(), 7), (d.clone(), 70)]);
        assert_eq!(q.assigned(&a).unwrap(), entry(7, 4000));
        assert_eq!(q.assigned(&b).unwrap(), entry(8, 2000));
        assert!(q.assigned(&c).is_none() && q.assigned(&d).is_none());
        // Written: a reopened record has them.
        let again = open(meta.path(), &fake, cfg(DiskIsolation::Auto));
        assert_eq!(again.assigned(&b).unwrap(), entry(8, 2000));
        // Nothing new: nothing refused, nothing changed.
        let mut again = again;
        assert!(
            again
                .adopt(&BTreeMap::from([(b.clone(), entry(8, 2000))]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn headroom_makes_a_soft_limit_below_the_hard_one() {
        let meta = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeQuotas::new(Support::Enforced));
        let mut config = cfg(DiskIsolation::Auto);
        config.headroom_bytes = 100;
        let mut q = open(meta.path(), &fake, config);
        q.limit(Path::new("/v/a"), 1000).unwrap();
        assert_eq!(
            fake.limits_of(7).unwrap(),
            Limits {
                hard_bytes: 1000,
                soft_bytes: 900
            }
        );
    }

    #[test]
    fn isolation_modes_decide_who_gets_a_quota() {
        let meta = tempfile::tempdir().unwrap();
        let none = Arc::new(FakeQuotas::new(Support::None));
        let mut auto = open(meta.path(), &none, cfg(DiskIsolation::Auto));
        assert_eq!(auto.limit(Path::new("/v/a"), 10).unwrap(), None);
        assert_eq!(
            auto.enforcement(Path::new("/v/a")).unwrap(),
            VolumeEnforcement::Du
        );
        let mut required = open(meta.path(), &none, cfg(DiskIsolation::ProjectQuota));
        assert!(matches!(
            required.limit(Path::new("/v/a"), 10).unwrap_err(),
            QuotaFailure::Unsupported { .. }
        ));
        let enforced = Arc::new(FakeQuotas::new(Support::Enforced));
        let mut du = open(meta.path(), &enforced, cfg(DiskIsolation::Du));
        assert_eq!(du.limit(Path::new("/v/a"), 10).unwrap(), None);
        assert!(enforced.calls().is_empty());
    }

    #[test]
    fn a_shrink_below_usage_is_refused_with_the_usage() {
        let meta = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeQuotas::new(Support::Enforced));
        let mut q = open(meta.path(), &fake, cfg(DiskIsolation::Auto));
        let a = PathBuf::from("/v/a");
        q.limit(&a, 1000).unwrap();
        fake.set_used(7, 600, 3);
        q.check_shrink(&a, 600).unwrap();
        let e = q.check_shrink(&a, 500).unwrap_err();
        assert!(
            matches!(
                e,
                QuotaFailure::ShrinkBelowUsage {
                    used_bytes: 600,
                    new_bytes: 500,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("holds 600 bytes"), "{e}");
    }

    #[test]
    fn reconcile_fixes_live_volumes_releases_gone_ones_and_clears_strangers() {
        let meta = tempfile::tempdir().unwrap();
        let fake = Arc::new(FakeQuotas::new(Support::Enforced));
        let mut q = open(meta.path(), &fake, cfg(DiskIsolation::Auto));
        let (a, b, c) = (
            PathBuf::from("/v/a"),
            PathBuf::from("/v/b"),
            PathBuf::from("/v/c"),
        );
        q.limit(&a, 1000).unwrap();
        q.limit(&b, 2000).unwrap();
        // A crash after the record and before the limit: the kernel lost a's limit.
        fake.set_limits(&a, 7, Limits::default()).unwrap();
        // c carries an id nobody recorded.
        fake.assign(&c, 42).unwrap();
        let live: BTreeMap<PathBuf, (u64, PathBuf)> = [
            (a.clone(), (1000, PathBuf::from("/v"))),
            (c.clone(), (500, PathBuf::from("/v"))),
        ]
        .into();
        let report = q.reconcile(&live, &|d| d == b.as_path()).unwrap();
        assert_eq!(report.released, vec![(b.clone(), 8)]);
        assert_eq!(report.cleared, vec![(c.clone(), 42)]);
        assert!(
            report.fixed.contains(&a) && report.fixed.contains(&c),
            "{report:?}"
        );
        assert_eq!(fake.limits_of(7).unwrap().hard_bytes, 1000);
        assert_eq!(
            fake.project_of(&c).unwrap(),
            q.assigned(&c).unwrap().project
        );
        assert!(q.assigned(&b).is_none());
        // A second pass has nothing to do.
        let again = q.reconcile(&live, &|_| true).unwrap();
        assert_eq!(again, ReconcileReport::default());
    }
}
