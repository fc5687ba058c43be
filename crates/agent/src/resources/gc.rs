//! Leftovers of destroyed volumes, and the garbage collector of the volume areas.
//!
//! A DESTROY takes the volume away from its path with one atomic rename into the trash
//! (`<root>/volumes/trash/roles/<role>/<id>.<secs>`; a MOUNT disk's contents move into
//! `<mount root>/.berth-trash/<id>.<secs>` on the same filesystem) and then removes the trash
//! entry. When that removal fails (an immutable file, `EPERM`, an I/O error), the DESTROY still
//! completes: the checkpoint commits, and the trash entry becomes a *leftover*, retried with
//! backoff by `serve` and removed by `berth-isolator gc`. Only failures after the move are
//! deferred; a volume that cannot be moved (in use, a mount inside) is refused as before.
//!
//! Every trash entry has a record, written (fsynced) before the move — the intent that names
//! it — and kept until the entry is gone:
//!
//! ```text
//! <work_dir>/meta/resources/leftovers/<n>.json   {"path", "root", "area", "role", "id", "name",
//!                                                 "volume", "origin", "recorded_at", "attempts",
//!                                                 "first_failure", "last_attempt", "last_error"}
//! ```
//!
//! The record is what finds a leftover on a PATH or MOUNT disk the checkpoint no longer names;
//! its path is recomputed from `root`, `area`, `role` and `name` (each checked as one path
//! component) and never taken from the file, so a corrupt record cannot aim a removal outside
//! a trash directory. Trash entries without a record (an older version's, or one whose record
//! was lost) are found by listing the trash directories of every known root.
//!
//! [`AgentResources::gc`] also handles what no checkpoint explains: volume directories under
//! `<root>/volumes/roles` that neither the committed nor the target checkpoint names
//! (orphans: moved into the trash, then removed; refused while anything is mounted inside),
//! mounts under the volume areas (unmounted — lazily after busy retries — when they lie in the
//! trash, the retained area or an orphan; listed only when inside a checkpointed volume), and
//! retained data (`volumes/retained/roles/<role>/<id>.<secs>`) older than a given age. Every
//! removal is preceded by a record and a rename into the trash; nothing outside the entry is
//! touched and no symlink is followed.

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{self, ResourcesError, Result, Step};
use super::fs::{self, Detached, MOUNT_TRASH};
use super::layout::{DiskKind, VolumeDir};
use super::sync::{read_checkpoint, volume_dirs};
use super::{AgentResources, SyncReport};

/// The directory of the leftover records, relative to the work dir.
pub const LEFTOVER_DIR: &str = "meta/resources/leftovers";

/// Which trash directory a leftover is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Area {
    /// `<root>/volumes/trash/roles/<role>/` of a ROOT or PATH disk.
    Volumes,
    /// `<mount root>/.berth-trash/` of a MOUNT disk.
    Mount,
}

/// How a leftover came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A destroyed volume.
    Destroy,
    /// An orphan volume directory moved away by `gc`.
    Orphan,
    /// Retained data past its age, moved away by `gc`.
    Retained,
    /// A trash entry found without a record (an older version's).
    Found,
}

/// A trash entry waiting for removal, with its record's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    /// Where the data is now (derived from the fields below).
    pub path: PathBuf,
    /// The disk root (the work dir, a PATH or MOUNT disk's root).
    pub root: PathBuf,
    /// Which trash directory.
    pub area: Area,
    /// The role component (`/` encoded as a space); empty for [`Area::Mount`].
    pub role: String,
    /// The persistence id (or the orphan's or retained entry's directory name).
    pub id: String,
    /// The entry's name in the trash directory.
    pub name: String,
    /// Where the volume was.
    pub volume: PathBuf,
    /// How it came to be.
    pub origin: Origin,
    /// When the record was written (unix seconds).
    pub recorded_at: u64,
    /// Failed removal attempts so far.
    pub attempts: u32,
    /// When the first attempt failed (unix seconds).
    #[serde(default)]
    pub first_failure: Option<u64>,
    /// When the last attempt was made (unix seconds).
    #[serde(default)]
    pub last_attempt: Option<u64>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The record file (none for an entry found without one).
    #[serde(skip)]
    pub record: Option<PathBuf>,
}

fn now_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn valid_component(c: &str) -> bool {
    berth_mount::names::validate_component(c).is_ok()
}

impl Leftover {
    fn new(root: &Path, area: Area, role: &str, id: &str, name: &str, volume: &Path) -> Self {
        let mut l = Leftover {
            path: PathBuf::new(),
            root: root.to_path_buf(),
            area,
            role: role.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            volume: volume.to_path_buf(),
            origin: Origin::Destroy,
            recorded_at: now_secs(SystemTime::now()),
            attempts: 0,
            first_failure: None,
            last_attempt: None,
            last_error: None,
            record: None,
        };
        l.path = l.expected_path();
        l
    }

    /// The leftover of volume `dir` under the trash name `name`.
    fn of_volume(dir: &VolumeDir, name: &str, origin: Origin) -> Self {
        let (area, role) = match dir.kind {
            DiskKind::Mount => (Area::Mount, ""),
            DiskKind::Root | DiskKind::Path => (Area::Volumes, dir.role_component.as_str()),
        };
        let mut l = Self::new(&dir.root, area, role, &dir.id, name, &dir.path);
        l.origin = origin;
        l
    }

    /// The trash directory's components below the root.
    fn components(&self) -> Vec<String> {
        match self.area {
            Area::Volumes => ["volumes", "trash", "roles", self.role.as_str()]
                .map(str::to_owned)
                .to_vec(),
            Area::Mount => vec![MOUNT_TRASH.to_owned()],
        }
    }

    fn expected_path(&self) -> PathBuf {
        let mut p = self.root.clone();
        for c in self.components() {
            p.push(c);
        }
        p.join(&self.name)
    }

    /// Whether the record is one berth could have written: an absolute plain root, single
    /// components, and the path they make.
    fn check(&self) -> std::result::Result<(), &'static str> {
        if !self.root.is_absolute()
            || self
                .root
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err("root is not an absolute plain path");
        }
        if !valid_component(&self.name) {
            return Err("name is not one path component");
        }
        if self.area == Area::Volumes && !valid_component(&self.role) {
            return Err("role is not one path component");
        }
        if self.path != self.expected_path() {
            return Err("path does not match root, area, role and name");
        }
        Ok(())
    }

    /// Whether a new attempt is due under `policy` at `now`: at once after the record was
    /// written, then after the policy's backoff for the attempts made so far.
    #[must_use]
    pub fn is_due(&self, policy: &berth_mount::retry::RetryPolicy, now: SystemTime) -> bool {
        let Some(last) = self.last_attempt else {
            return true;
        };
        let wait = policy.ceiling(self.attempts.saturating_sub(1)).as_secs();
        now_secs(now) >= last.saturating_add(wait)
    }
}

static RECORD_SEQ: AtomicU64 = AtomicU64::new(0);

/// A mount under berth's volume areas that no checkpoint explains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StrayMount {
    /// The mount point.
    pub mount_point: PathBuf,
    /// `unmounted`, `would unmount`, `kept` (inside a checkpointed volume, or under the
    /// container records' directories: listed only) or `failed: ...`.
    pub action: String,
}

/// What [`AgentResources::gc`] should do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// List only; change nothing.
    pub dry_run: bool,
    /// Remove retained destroyed data older than this.
    pub retain_destroyed_data_for: Option<Duration>,
    /// Also handle orphan volume directories and stray mounts (`gc`; the retry loop leaves
    /// them to an operator).
    pub orphans_and_mounts: bool,
    /// Only leftovers whose next attempt is due under this policy (the retry loop).
    pub backoff: Option<berth_mount::retry::RetryPolicy>,
}

/// An entry [`AgentResources::gc`] could not handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcFailure {
    /// The entry.
    pub path: PathBuf,
    /// Why.
    pub error: String,
}

fn failure(path: PathBuf, error: String) -> GcFailure {
    GcFailure { path, error }
}

/// What [`AgentResources::gc`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The leftovers found (before this pass).
    pub leftovers: Vec<Leftover>,
    /// Volume directories no checkpoint names.
    pub orphans: Vec<PathBuf>,
    /// Retained data past its age.
    pub expired: Vec<PathBuf>,
    /// Mounts under the volume areas that no checkpoint explains.
    pub stray_mounts: Vec<StrayMount>,
    /// Paths removed (trash entries, and orphans and expired data through the trash).
    pub removed: Vec<PathBuf>,
    /// What could not be handled, and why.
    pub failed: Vec<GcFailure>,
    /// The leftovers still there after this pass.
    pub remaining: Vec<Leftover>,
}

/// Parses a duration such as `7d`, `12h`, `30m`, `3600s` or `1h30m` (units `s`, `m`, `h`,
/// `d`, `w`; at least one; no bare numbers).
///
/// # Errors
/// [`ResourcesError::InvalidDuration`].
pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = |reason: &'static str| ResourcesError::InvalidDuration {
        input: text.to_owned(),
        reason,
    };
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(invalid("units are s, m, h, d and w")),
        };
        if digits.is_empty() {
            return Err(invalid("a unit without a number"));
        }
        let n: u64 = digits.parse().map_err(|_| invalid("number too large"))?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| invalid("too large"))?;
    }
    if !digits.is_empty() {
        return Err(invalid("a number without a unit (write 3600s, 60m, 1h)"));
    }
    Ok(Duration::from_secs(total))
}

/// The unix seconds a retained entry's name ends with: `<id>.<secs>` or `<id>.<secs>.<n>`.
#[must_use]
pub fn retained_secs(name: &str) -> Option<u64> {
    let mut parts = name.rsplit('.');
    let last: u64 = parts.next()?.parse().ok()?;
    let before = parts.next()?;
    match before.parse::<u64>() {
        // `.<n>` suffixes are small; a unix time is not.
        Ok(secs) if last < 1_000_000 && parts.next().is_some() => Some(secs),
        _ => Some(last),
    }
}

/// The names in directory `<root>/<components>`, not following symlinks; empty when missing.
fn list(root: &Path, components: &[&str]) -> Vec<(String, bool)> {
    let mut dir = real(root);
    for c in components {
        dir.push(c);
    }
    // Every component below the root must be a directory, not a symlink.
    let mut cur = real(root);
    for c in components {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => return Vec::new(),
        }
    }
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, bool)> = listing
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            Some((name, is_dir))
        })
        .collect();
    out.sort();
    out
}

fn real(root: &Path) -> PathBuf {
    std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())
}

/// The roots whose areas berth looks at.
#[derive(Debug, Default)]
struct Roots {
    /// ROOT and PATH disk roots.
    volumes: Vec<PathBuf>,
    /// MOUNT disk roots.
    mounts: Vec<PathBuf>,
    /// Volume directories the committed or target checkpoint names.
    known: Vec<VolumeDir>,
}

impl AgentResources {
    fn leftover_dir(&self) -> PathBuf {
        self.work_dir.join(LEFTOVER_DIR)
    }

    /// Writes `l`'s record durably (a new record file when it has none).
    pub(super) fn write_record(&self, l: &mut Leftover) -> Result<()> {
        let dir = self.leftover_dir();
        fs::create_trusted_dir(&dir)?;
        let file = match &l.record {
            Some(f) => f.clone(),
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let seq = RECORD_SEQ.fetch_add(1, Ordering::Relaxed);
                dir.join(format!("{nanos}.{}.{seq}.json", std::process::id()))
            }
        };
        let bytes = serde_json::to_vec_pretty(&*l).map_err(|e| ResourcesError::Io {
            step: Step::WriteRecord,
            path: file.clone(),
            source: std::io::Error::other(e),
        })?;
        berth_mount::durable::write_atomic(&file, &bytes)
            .map_err(|e| error::io(Step::WriteRecord, &file, e))?;
        l.record = Some(file);
        Ok(())
    }

    fn remove_record(&self, l: &Leftover) -> Result<()> {
        let Some(file) = &l.record else {
            return Ok(());
        };
        match std::fs::remove_file(file) {
            Ok(()) => fs::fsync_dir(&self.leftover_dir()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(error::io(Step::Remove, file, e)),
        }
    }

    /// The leftover records; a record that does not parse or fails the checks is skipped
    /// with a warning (never acted on).
    fn records(&self) -> Vec<Leftover> {
        let dir = self.leftover_dir();
        let Ok(listing) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in listing.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let path = e.path();
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Leftover>(&b).map_err(|e| e.to_string()))
                .and_then(|l| l.check().map(|()| l).map_err(str::to_owned));
            match parsed {
                Ok(mut l) => {
                    l.record = Some(path);
                    out.push(l);
                }
                Err(reason) => {
                    tracing::warn!(record = %path.display(), %reason, "leftover record skipped");
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Tries to remove leftover `l` now. On success its record goes; on failure the record
    /// counts the attempt and keeps the error.
    fn purge(&self, l: &mut Leftover) -> Result<()> {
        let components = l.components();
        match fs::remove_in(&l.root, &components, &l.name, &l.id) {
            Ok(_) => self.remove_record(l),
            Err(e) => {
                let now = now_secs(SystemTime::now());
                l.attempts = l.attempts.saturating_add(1);
                l.first_failure.get_or_insert(now);
                l.last_attempt = Some(now);
                l.last_error = Some(error_chain(&e));
                self.write_record(l)?;
                Err(e)
            }
        }
    }

    /// Removes a destroyed volume's data: record (the intent naming the trash entry), move
    /// into the trash, removal. A failure to move is returned (nothing changed but an
    /// empty trash directory); a failure to remove leaves a leftover and is reported in
    /// [`SyncReport::deferred`].
    pub(super) fn destroy_volume(
        &self,
        d: &VolumeDir,
        origin: Origin,
        report: &mut SyncReport,
    ) -> Result<()> {
        let name = fs::trash_name(d)?;
        let mut l = Leftover::of_volume(d, &name, origin);
        self.write_record(&mut l)?;
        let detached = match fs::detach(d, false, &name) {
            Ok(x) => x,
            Err(e) => {
                if let Err(r) = self.remove_record(&l) {
                    tracing::warn!(error = %r, "leftover record of a refused move not removed");
                }
                return Err(e);
            }
        };
        if matches!(detached, Detached::Trashed) {
            self.volume_step("volume detached", &d.path);
        }
        match self.purge(&mut l) {
            Ok(()) => report.removed.push(d.path.clone()),
            Err(e) => {
                tracing::warn!(id = %d.id, volume = %d.path.display(), leftover = %l.path.display(), error = %error_chain(&e), "destroyed volume's data could not be removed: left in the trash for gc and the retry loop");
                report.deferred.push((d.path.clone(), l.path.clone()));
            }
        }
        Ok(())
    }

    /// Before destroying `d`: removes what earlier attempts at the same volume left (records
    /// naming it, and an older version's `trash/roles/<role>/<id>`). What still cannot be
    /// removed stays a leftover; only a failure to write a record is an error.
    pub(super) fn settle_previous(&self, d: &VolumeDir) -> Result<()> {
        let mut mine: Vec<Leftover> = self
            .records()
            .into_iter()
            .filter(|l| l.root == d.root && l.volume == d.path && l.id == d.id)
            .collect();
        if d.kind != DiskKind::Mount {
            let legacy = Leftover::of_volume(d, &d.id, Origin::Found);
            let components = legacy.components();
            if !mine.iter().any(|l| l.path == legacy.path)
                && fs::exists_in(&d.root, &components, &d.id)?
            {
                let mut legacy = legacy;
                self.write_record(&mut legacy)?;
                mine.push(legacy);
            }
        }
        for mut l in mine {
            if let Err(e) = self.purge(&mut l) {
                tracing::warn!(leftover = %l.path.display(), error = %error_chain(&e), "earlier leftover of a destroyed volume still not removable");
            }
        }
        Ok(())
    }

    fn roots(&self) -> Result<Roots> {
        let mut roots = Roots {
            volumes: vec![self.work_dir.clone()],
            ..Roots::default()
        };
        let mut sets = vec![self.checkpointed.clone()];
        if let Some(target) = read_checkpoint(&self.target_path())? {
            sets.push(target);
        }
        for set in &sets {
            for d in volume_dirs(&self.work_dir, set)?.into_values() {
                let list = if d.kind == DiskKind::Mount {
                    &mut roots.mounts
                } else {
                    &mut roots.volumes
                };
                if !list.contains(&d.root) {
                    list.push(d.root.clone());
                }
                roots.known.push(d);
            }
        }
        for l in self.records() {
            let list = match l.area {
                Area::Mount => &mut roots.mounts,
                Area::Volumes => &mut roots.volumes,
            };
            if !list.contains(&l.root) {
                list.push(l.root.clone());
            }
        }
        Ok(roots)
    }

    /// Every leftover: the records whose entry exists, and trash entries without a record
    /// under every known root (except the trash of a MOUNT disk that holds a volume now:
    /// that is inside the volume, and only recorded entries there are berth's).
    ///
    /// # Errors
    /// An unreadable target checkpoint, invalid volume paths in it.
    pub fn leftovers(&self) -> Result<Vec<Leftover>> {
        let roots = self.roots()?;
        let mut out: Vec<Leftover> = Vec::new();
        for l in self.records() {
            if fs::exists_in(&l.root, &l.components(), &l.name).unwrap_or(true)
                && !out.iter().any(|o| o.path == l.path)
            {
                out.push(l);
            }
        }
        let mut found = Vec::new();
        for root in &roots.volumes {
            for (role, is_dir) in list(root, &["volumes", "trash", "roles"]) {
                if !is_dir {
                    continue;
                }
                for (name, _) in list(root, &["volumes", "trash", "roles", &role]) {
                    found.push(Leftover::new(
                        root,
                        Area::Volumes,
                        &role,
                        &name,
                        &name,
                        root,
                    ));
                }
            }
        }
        for root in &roots.mounts {
            // A MOUNT disk that holds a volume now: its `.berth-trash` is inside that volume,
            // so only what a record names there is berth's.
            if roots
                .known
                .iter()
                .any(|k| k.kind == DiskKind::Mount && k.root == *root)
            {
                continue;
            }
            for (name, _) in list(root, &[MOUNT_TRASH]) {
                found.push(Leftover::new(root, Area::Mount, "", &name, &name, root));
            }
        }
        for mut l in found {
            if l.check().is_ok() && !out.iter().any(|o| o.path == l.path) {
                l.origin = Origin::Found;
                out.push(l);
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// One garbage-collection pass: leftovers (all, or those due under
    /// [`GcOptions::backoff`]), retained data past [`GcOptions::retain_destroyed_data_for`],
    /// and with [`GcOptions::orphans_and_mounts`] stray mounts and orphan volume directories.
    /// With [`GcOptions::dry_run`] nothing changes. Failures are reported per entry.
    ///
    /// # Errors
    /// [`ResourcesError::RecoveryRequired`] while a change is pending; an unreadable
    /// checkpoint.
    pub fn gc(&mut self, opts: &GcOptions) -> Result<GcReport> {
        self.ensure_settled()?;
        let now = SystemTime::now();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        if !opts.dry_run {
            // Records whose entry is gone (a move that never happened: a crash before it).
            for l in self.records() {
                if matches!(fs::exists_in(&l.root, &l.components(), &l.name), Ok(false)) {
                    self.remove_record(&l)?;
                }
            }
        }
        let roots = self.roots()?;
        let mut orphan_dirs = Vec::new();
        if opts.orphans_and_mounts {
            orphan_dirs = self.find_orphans(&roots);
            report.orphans = orphan_dirs.iter().map(|d| d.path.clone()).collect();
            self.stray_mounts(&roots, &orphan_dirs, opts.dry_run, &mut report);
        }
        report.leftovers = self.leftovers()?;
        for l in &report.leftovers {
            if opts.dry_run || opts.backoff.as_ref().is_some_and(|p| !l.is_due(p, now)) {
                continue;
            }
            let mut l = l.clone();
            // An entry found without a record gets one first: the intent of its removal.
            let step = if l.record.is_none() {
                self.write_record(&mut l)
            } else {
                Ok(())
            }
            .and_then(|()| self.purge(&mut l));
            match step {
                Ok(()) => report.removed.push(l.path.clone()),
                Err(e) => report.failed.push(failure(l.path.clone(), error_chain(&e))),
            }
        }
        if let Some(age) = opts.retain_destroyed_data_for {
            self.expire_retained(&roots, age, now, opts.dry_run, &mut report);
        }
        for d in &orphan_dirs {
            if opts.dry_run {
                continue;
            }
            let mut sync = SyncReport::default();
            match self.destroy_volume(d, Origin::Orphan, &mut sync) {
                Ok(()) => {
                    report.removed.extend(sync.removed);
                    for (_, leftover) in sync.deferred {
                        report.failed.push(failure(
                            leftover,
                            "left in the trash as a leftover".to_owned(),
                        ));
                    }
                }
                Err(e) => report.failed.push(failure(d.path.clone(), error_chain(&e))),
            }
        }
        report.remaining = self.leftovers()?;
        Ok(report)
    }

    /// Directories under `<root>/volumes/roles/<role>/` of ROOT/PATH roots that no checkpoint
    /// names. Role entries that are not directories are skipped (never followed).
    fn find_orphans(&self, roots: &Roots) -> Vec<VolumeDir> {
        let mut out = Vec::new();
        for root in &roots.volumes {
            let kind = if *root == self.work_dir {
                DiskKind::Root
            } else {
                DiskKind::Path
            };
            for (role, is_dir) in list(root, &["volumes", "roles"]) {
                if !is_dir || !valid_component(&role) {
                    continue;
                }
                for (id, _) in list(root, &["volumes", "roles", &role]) {
                    if !valid_component(&id) {
                        continue;
                    }
                    let path = root.join("volumes").join("roles").join(&role).join(&id);
                    let known = roots.known.iter().any(|k| {
                        k.path == path
                            || (k.root == *root && k.role_component == role && k.id == id)
                    });
                    if !known {
                        out.push(VolumeDir {
                            path,
                            root: root.clone(),
                            kind,
                            role_component: role.clone(),
                            id,
                        });
                    }
                }
            }
        }
        out
    }

    /// Mounts strictly below `<root>/volumes` (ROOT/PATH roots), `<root>/.berth-trash`
    /// (MOUNT roots) and the work dir's `containers` and `containers-quarantine`. Those in the
    /// trash, the retained area or an orphan are unmounted (deepest first; lazily after busy
    /// retries, through the area's descriptor with no symlink followed); the others are
    /// listed only.
    fn stray_mounts(
        &self,
        roots: &Roots,
        orphans: &[VolumeDir],
        dry_run: bool,
        report: &mut GcReport,
    ) {
        let table = match berth_mount::MountTable::read_current() {
            Ok(t) => t,
            Err(e) => {
                report.failed.push(failure(
                    PathBuf::from("/proc/self/mountinfo"),
                    e.to_string(),
                ));
                return;
            }
        };
        let mut areas: Vec<PathBuf> = roots
            .volumes
            .iter()
            .map(|r| real(r).join("volumes"))
            .collect();
        areas.extend(roots.mounts.iter().map(|r| real(r).join(MOUNT_TRASH)));
        // The container records' directories hold files only: any mount there is listed
        // (never unmounted: a container's state is the container module's business).
        let listed_only: Vec<PathBuf> = ["containers", "containers-quarantine"]
            .iter()
            .map(|d| self.work_dir.join(d))
            .collect();
        areas.extend(listed_only.iter().cloned());
        let disk_roots: Vec<PathBuf> = roots
            .known
            .iter()
            .filter(|k| k.kind == DiskKind::Mount)
            .map(|k| real(&k.root))
            .collect();
        let known: Vec<PathBuf> = roots.known.iter().map(fs::real_path).collect();
        let orphan_paths: Vec<PathBuf> = orphans.iter().map(fs::real_path).collect();
        let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
        for m in table.iter() {
            let mp = m.mount_point();
            let Some(area) = areas
                .iter()
                .find(|a| mp.starts_with(a) && mp != a.as_path())
            else {
                continue;
            };
            // A MOUNT disk's root is the disk itself, not a stray.
            if disk_roots.iter().any(|r| r == mp) {
                continue;
            }
            if !found.iter().any(|(p, _)| p == mp) {
                found.push((mp.to_path_buf(), area.clone()));
            }
        }
        // Deepest first.
        found.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        let mounter = berth_mount::LinuxMounter::new();
        let opts = berth_mount::UnmountOptions {
            detach_fallback: true,
            ..berth_mount::UnmountOptions::default()
        };
        for (mp, area) in found {
            let in_known = known.iter().any(|k| mp.starts_with(k));
            let removable = !in_known
                && !listed_only.contains(&area)
                && (mp.starts_with(area.join("trash"))
                    || mp.starts_with(area.join("retained"))
                    || area.ends_with(MOUNT_TRASH)
                    || orphan_paths.iter().any(|o| mp.starts_with(o)));
            let action = if !removable {
                "kept".to_owned()
            } else if dry_run {
                "would unmount".to_owned()
            } else {
                match unmount_in(&mounter, &area, &mp, &opts) {
                    Ok(()) => "unmounted".to_owned(),
                    Err(e) => format!("failed: {e}"),
                }
            };
            report.stray_mounts.push(StrayMount {
                mount_point: mp,
                action,
            });
        }
    }

    /// Retained entries older than `age` are moved into the trash (after their record) and
    /// removed.
    fn expire_retained(
        &self,
        roots: &Roots,
        age: Duration,
        now: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) {
        let now = now_secs(now);
        for root in &roots.volumes {
            for (role, is_dir) in list(root, &["volumes", "retained", "roles"]) {
                if !is_dir || !valid_component(&role) {
                    continue;
                }
                for (name, _) in list(root, &["volumes", "retained", "roles", &role]) {
                    let Some(secs) = retained_secs(&name) else {
                        continue;
                    };
                    if now.saturating_sub(secs) < age.as_secs() || !valid_component(&name) {
                        continue;
                    }
                    let from = root
                        .join("volumes")
                        .join("retained")
                        .join("roles")
                        .join(&role)
                        .join(&name);
                    report.expired.push(from.clone());
                    if dry_run {
                        continue;
                    }
                    match self.expire_one(root, &role, &name, &from) {
                        Ok(Some(path)) => report.removed.push(path),
                        Ok(None) => {}
                        Err(e) => report.failed.push(failure(from, error_chain(&e))),
                    }
                }
            }
        }
    }

    fn expire_one(
        &self,
        root: &Path,
        role: &str,
        name: &str,
        from: &Path,
    ) -> Result<Option<PathBuf>> {
        let d = VolumeDir {
            path: from.to_path_buf(),
            root: root.to_path_buf(),
            kind: DiskKind::Path,
            role_component: role.to_owned(),
            id: name.to_owned(),
        };
        let trash_name = fs::trash_name(&d)?;
        let mut l = Leftover::of_volume(&d, &trash_name, Origin::Retained);
        self.write_record(&mut l)?;
        let components = l.components();
        let retained: Vec<String> = ["volumes", "retained", "roles", role]
            .map(str::to_owned)
            .to_vec();
        match fs::move_in(root, &retained, name, &components, &trash_name, name) {
            Ok(true) => {}
            Ok(false) => {
                self.remove_record(&l)?;
                return Ok(None);
            }
            Err(e) => {
                self.remove_record(&l)?;
                return Err(e);
            }
        }
        self.purge(&mut l)?;
        Ok(Some(from.to_path_buf()))
    }
}

/// Unmounts the mount at `mp` confined to `area` (no component below it followed).
fn unmount_in(
    mounter: &berth_mount::LinuxMounter,
    area: &Path,
    mp: &Path,
    opts: &berth_mount::UnmountOptions,
) -> std::result::Result<(), berth_mount::MountError> {
    use berth_mount::Mounter as _;
    let rel = mp.strip_prefix(area).unwrap_or(mp);
    let root = berth_mount::path::RootDir::open(area)?;
    mounter.unmount_in_root(&root, rel, opts).map(drop)
}

/// An error with its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_documented() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1_800));
        assert_eq!(parse_duration("3600s").unwrap(), Duration::from_secs(3_600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(1_209_600)
        );
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "1h30",
            "-1h",
            "1.5h",
            " 1h",
            "99999999999999999999s",
        ] {
            assert!(
                matches!(
                    parse_duration(bad),
                    Err(ResourcesError::InvalidDuration { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(parse_duration("18446744073709551615w").is_err());
    }

    #[test]
    fn retained_names_give_their_time() {
        assert_eq!(retained_secs("v1.1700000000"), Some(1_700_000_000));
        assert_eq!(retained_secs("v1.1700000000.2"), Some(1_700_000_000));
        assert_eq!(retained_secs("a.b.1700000000"), Some(1_700_000_000));
        assert_eq!(retained_secs("a.123.1700000000"), Some(1_700_000_000));
        assert_eq!(retained_secs("v1"), None);
        assert_eq!(retained_secs("v1.x"), None);
    }

    fn sample() -> Leftover {
        Leftover::new(
            Path::new("/work"),
            Area::Volumes,
            "eng db",
            "v1",
            "v1.1700000000",
            Path::new("/work/volumes/roles/eng db/v1"),
        )
    }

    #[test]
    fn a_leftover_record_round_trips_and_is_checked() {
        let mut l = sample();
        assert_eq!(
            l.path,
            Path::new("/work/volumes/trash/roles/eng db/v1.1700000000")
        );
        l.attempts = 3;
        l.first_failure = Some(5);
        l.last_attempt = Some(9);
        l.last_error = Some("EPERM".into());
        let text = serde_json::to_string(&l).unwrap();
        let back: Leftover = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
        assert!(back.check().is_ok());
        let m = Leftover::new(
            Path::new("/mnt/d"),
            Area::Mount,
            "",
            "v2",
            "v2.1",
            Path::new("/mnt/d"),
        );
        assert_eq!(m.path, Path::new("/mnt/d/.berth-trash/v2.1"));
        assert!(m.check().is_ok());

        // A record that would aim a removal anywhere else is refused.
        let mut bad = sample();
        bad.path = PathBuf::from("/etc");
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.name = "../../etc".into();
        bad.path = bad.expected_path();
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.role = "..".into();
        bad.path = bad.expected_path();
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.root = PathBuf::from("work");
        bad.path = bad.expected_path();
        assert!(bad.check().is_err());
        let mut bad = sample();
        bad.root = PathBuf::from("/work/../etc");
        bad.path = bad.expected_path();
        assert!(bad.check().is_err());
    }

    #[test]
    fn attempts_back_off() {
        let policy = berth_mount::retry::RetryPolicy {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(100),
            overall: Duration::MAX,
            full_jitter: false,
        };
        let mut l = sample();
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert!(l.is_due(&policy, t(0)), "a new record is due at once");
        l.attempts = 1;
        l.last_attempt = Some(1000);
        assert!(!l.is_due(&policy, t(1009)));
        assert!(l.is_due(&policy, t(1010)));
        l.attempts = 3;
        assert!(!l.is_due(&policy, t(1039)));
        assert!(l.is_due(&policy, t(1040)));
        l.attempts = 30;
        assert!(!l.is_due(&policy, t(1099)));
        assert!(l.is_due(&policy, t(1100)));
    }
}
