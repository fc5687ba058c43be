//! Gids of shared persistent volumes (`--volume-gid-range`): how tasks of different non-root
//! users share a volume without a recursive chown, as Mesos's volume gid manager does.
//!
//! - **Which volumes.** Every *shared* persistent volume (`shared` set at CREATE) gets a gid of
//!   its own from `--volume-gid-range BEGIN-END` (Mesos's `--volume_gid_range`, also `[a-b]`),
//!   the lowest free first; two live volumes never share one. An exclusive volume is given to
//!   its task's user as before.
//! - **On disk.** The volume directory gets the gid as its group and mode `2770` (group rwx,
//!   setgid, so what the tasks create inherits the group); nothing below it is touched. A
//!   container that uses the volume must run its task with the gid as a supplementary group:
//!   `prepare` returns the gids (`supplementary_gids`).
//! - **Write-ahead.** A new volume's gid is written into the change's target checkpoint (the
//!   one fsync'd intent of the change, as the volume's project id) before the directory is
//!   made or given the group; the committed checkpoint keeps every live volume's gid
//!   (`"gids": {dir: gid}`), so there is no other record. DESTROY releases the gid with the
//!   volume (the next checkpoint no longer names it). Shared volumes created before the flag
//!   was set get their gid when the agent opens ([`super::AgentResources::reconcile_gids`]),
//!   recorded in the committed checkpoint first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// `--volume-gid-range BEGIN-END` (also Mesos's `[BEGIN-END]`): an inclusive range of gids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GidRange {
    begin: u32,
    end: u32,
}

impl GidRange {
    /// `begin..=end`.
    ///
    /// # Errors
    /// An empty range, or one that includes 0 (root's group).
    pub fn new(begin: u32, end: u32) -> Result<Self, String> {
        if begin == 0 || begin > end {
            return Err(format!(
                "volume gids {begin}-{end}: need 1 <= BEGIN <= END (0 is root's group)"
            ));
        }
        Ok(Self { begin, end })
    }

    /// Whether `gid` is in the range.
    #[must_use]
    pub fn contains(self, gid: u32) -> bool {
        (self.begin..=self.end).contains(&gid)
    }

    /// The first gid.
    #[must_use]
    pub fn begin(self) -> u32 {
        self.begin
    }

    /// The last gid.
    #[must_use]
    pub fn end(self) -> u32 {
        self.end
    }
}

impl FromStr for GidRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (begin, end) = super::quota::parse_id_range(s, "volume gids")?;
        Self::new(begin, end)
    }
}

/// The record of the gids that belong to no volume (`PARENT` sandbox paths), in the
/// resources' meta directory.
pub const TASK_GIDS_FILE: &str = "task-gids.json";
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskGidsRecord {
    schema_version: u32,
    gids: BTreeMap<String, u32>,
}

#[derive(Debug, Default)]
struct Book {
    /// Shared volumes' gids, by volume directory (recorded in the checkpoints).
    volumes: BTreeMap<PathBuf, u32>,
    /// Other holders' gids (`parent <container> <path>`), recorded in [`TASK_GIDS_FILE`].
    others: BTreeMap<String, u32>,
    /// CSI volumes' gids (`volume_mount_group`), by record file (recorded in the records).
    csi: BTreeMap<PathBuf, u32>,
}

impl Book {
    fn taken(&self) -> BTreeSet<u32> {
        self.volumes
            .values()
            .chain(self.others.values())
            .chain(self.csi.values())
            .copied()
            .collect()
    }
}

/// The gids of one agent: its shared volumes' (by volume directory) and those of other
/// holders such as a pod's `PARENT` sandbox paths (by key), and CSI volumes'
/// `volume_mount_group` (by record file, see [`berth_csi::groups`]), all from one range under
/// one lock: never one gid for two holders, even while a CSI publish, a pod's prepare and a
/// resources change run at once. Cheap to clone: clones share the book. The CSI plugins reach
/// it through [`csi_groups`](Self::csi_groups).
#[derive(Debug, Clone)]
pub struct VolumeGids {
    range: GidRange,
    book: Arc<Mutex<Book>>,
    others_path: PathBuf,
}

impl VolumeGids {
    /// Gids from `range`, none given yet; other holders' gids are recorded at `others_path`.
    #[must_use]
    pub fn new(range: GidRange, others_path: PathBuf) -> Self {
        Self {
            range,
            book: Arc::new(Mutex::new(Book::default())),
            others_path,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The range.
    #[must_use]
    pub fn range(&self) -> GidRange {
        self.range
    }

    /// The gid of the volume at `dir`.
    #[must_use]
    pub fn gid(&self, dir: &Path) -> Option<u32> {
        self.book().volumes.get(dir).copied()
    }

    /// Every volume's gid.
    #[must_use]
    pub fn all(&self) -> BTreeMap<PathBuf, u32> {
        self.book().volumes.clone()
    }

    /// Every CSI volume's gid, by record file.
    #[must_use]
    pub fn csi(&self) -> BTreeMap<PathBuf, u32> {
        self.book().csi.clone()
    }

    /// Takes the gids the CSI volume records hold ([`berth_csi::groups::recorded`]), before
    /// the checkpoints' are adopted and before any CSI plugin starts: a gid in use by a staged
    /// volume cannot be changed, so it wins over a persistent volume's (which then gets a new
    /// one from [`AgentResources::reconcile_gids`](super::AgentResources::reconcile_gids)).
    /// A gid two records name (only a damaged work dir) is logged and kept by the first.
    pub fn adopt_csi(&self, recorded: &BTreeMap<PathBuf, u32>) {
        let mut b = self.book();
        for (record, gid) in recorded {
            if b.csi.contains_key(record) {
                continue;
            }
            if b.taken().contains(gid) {
                tracing::warn!(record = %record.display(), gid, "a CSI volume's volume_mount_group is given twice (a damaged work dir); its consumers share the group");
                continue;
            }
            b.csi.insert(record.clone(), *gid);
        }
    }

    /// The handle the CSI plugins take gids from (see [`berth_csi::MountGroups`]).
    #[must_use]
    pub fn csi_groups(&self) -> Arc<dyn berth_csi::MountGroups> {
        Arc::new(CsiGroups {
            range: self.range,
            book: Arc::clone(&self.book),
        })
    }

    /// Reads the other holders' record (absent: none).
    ///
    /// # Errors
    /// The record cannot be read or is not what berth writes.
    pub fn load_others(&self) -> std::io::Result<()> {
        let record: TaskGidsRecord = match std::fs::read(&self.others_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if record.schema_version != SCHEMA_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "schema version {} is not {SCHEMA_VERSION}",
                    record.schema_version
                ),
            ));
        }
        self.book().others = record.gids;
        Ok(())
    }

    fn persist_others(&self, others: &BTreeMap<String, u32>) -> std::io::Result<()> {
        let record = TaskGidsRecord {
            schema_version: SCHEMA_VERSION,
            gids: others.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        berth_mount::durable::write_atomic(&self.others_path, &bytes)
    }

    /// The gid of holder `key`, given now (the lowest free one, recorded fsync'd before it is
    /// returned) if it has none.
    ///
    /// # Errors
    /// Every gid is taken, or the record cannot be written (nothing given then).
    pub fn take_other(&self, key: &str) -> Result<u32, String> {
        let mut book = self.book();
        if let Some(g) = book.others.get(key) {
            return Ok(*g);
        }
        let taken = book.taken();
        let gid = (self.range.begin..=self.range.end)
            .find(|g| !taken.contains(g))
            .ok_or_else(|| {
                format!(
                    "no free volume gid in {}-{}",
                    self.range.begin, self.range.end
                )
            })?;
        let mut others = book.others.clone();
        others.insert(key.to_owned(), gid);
        self.persist_others(&others)
            .map_err(|e| format!("{}: {e}", self.others_path.display()))?;
        book.others = others;
        Ok(gid)
    }

    /// The gid of holder `key`.
    #[must_use]
    pub fn other(&self, key: &str) -> Option<u32> {
        self.book().others.get(key).copied()
    }

    /// Releases the other holders `release` picks (recorded first); returns them.
    ///
    /// # Errors
    /// The record cannot be written (nothing released then).
    pub fn release_others(
        &self,
        release: impl Fn(&str) -> bool,
    ) -> std::io::Result<Vec<(String, u32)>> {
        let mut book = self.book();
        let gone: Vec<(String, u32)> = book
            .others
            .iter()
            .filter(|(k, _)| release(k))
            .map(|(k, g)| (k.clone(), *g))
            .collect();
        if gone.is_empty() {
            return Ok(gone);
        }
        let mut others = book.others.clone();
        for (k, _) in &gone {
            others.remove(k);
        }
        self.persist_others(&others)?;
        book.others = others;
        Ok(gone)
    }

    /// Takes the gids a checkpoint names for `live` volume directories (a gid given twice
    /// keeps its first holder; the volume gets a new one from [`assign`](Self::assign)).
    pub(super) fn adopt(&self, recorded: &BTreeMap<PathBuf, u32>, live: &BTreeSet<PathBuf>) {
        let mut book = self.book();
        for (dir, gid) in recorded {
            if !live.contains(dir) || book.volumes.contains_key(dir) {
                continue;
            }
            if book.taken().contains(gid) {
                tracing::warn!(path = %dir.display(), gid, "a checkpointed volume gid is given twice; the volume gets a new one");
                continue;
            }
            book.volumes.insert(dir.clone(), *gid);
        }
    }

    /// Gives each of `dirs` that has none the lowest free gid; returns the volumes' map as it
    /// was (for [`restore`](Self::restore)).
    ///
    /// # Errors
    /// Every gid of the range is taken (`(begin, end)`); nothing is given then.
    pub(super) fn assign<'a>(
        &self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> Result<BTreeMap<PathBuf, u32>, (u32, u32)> {
        let mut book = self.book();
        let before = book.volumes.clone();
        for dir in dirs {
            if book.volumes.contains_key(dir) {
                continue;
            }
            let taken = book.taken();
            let Some(gid) = (self.range.begin..=self.range.end).find(|g| !taken.contains(g)) else {
                book.volumes = before;
                return Err((self.range.begin, self.range.end));
            };
            book.volumes.insert(dir.clone(), gid);
        }
        Ok(before)
    }

    /// Puts the volumes' map back as it was before an [`assign`](Self::assign) whose change
    /// was not written.
    pub(super) fn restore(&self, before: BTreeMap<PathBuf, u32>) {
        self.book().volumes = before;
    }

    /// Keeps only the volumes in `live` (after a change: destroyed volumes release theirs).
    pub(super) fn retain(&self, live: &BTreeSet<PathBuf>) {
        self.book().volumes.retain(|d, _| live.contains(d));
    }

    /// The gids of the volumes in `dirs`, for the checkpoint of that set.
    #[must_use]
    pub(super) fn of<'a>(
        &self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> BTreeMap<PathBuf, u32> {
        let book = self.book();
        dirs.into_iter()
            .filter_map(|d| Some((d.clone(), *book.volumes.get(d)?)))
            .collect()
    }
}

/// The CSI plugins' view of [`VolumeGids`]: gids for `volume_mount_group` from the same range
/// and book as the shared persistent volumes'.
#[derive(Debug)]
struct CsiGroups {
    range: GidRange,
    book: Arc<Mutex<Book>>,
}

impl berth_csi::MountGroups for CsiGroups {
    fn take(&self, record: &Path) -> Result<u32, String> {
        let mut b = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gid) = b.csi.get(record) {
            return Ok(*gid);
        }
        let taken = b.taken();
        let gid = (self.range.begin..=self.range.end)
            .find(|g| !taken.contains(g))
            .ok_or_else(|| {
                format!(
                    "every gid of --volume-gid-range {}-{} is taken",
                    self.range.begin, self.range.end
                )
            })?;
        b.csi.insert(record.to_owned(), gid);
        Ok(gid)
    }

    fn release(&self, record: &Path) {
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .csi
            .remove(record);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_parse_in_both_spellings_and_refuse_root() {
        assert_eq!(
            "10000-10002".parse::<GidRange>().unwrap(),
            GidRange::new(10000, 10002).unwrap()
        );
        assert_eq!(
            "[10000-10002]".parse::<GidRange>().unwrap(),
            GidRange::new(10000, 10002).unwrap()
        );
        assert!("0-5".parse::<GidRange>().is_err());
        assert!("9-5".parse::<GidRange>().is_err());
        assert!("x".parse::<GidRange>().is_err());
    }

    #[test]
    fn gids_are_lowest_free_first_never_shared_and_released_with_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let g = VolumeGids::new(
            GidRange::new(7, 8).unwrap(),
            dir.path().join(TASK_GIDS_FILE),
        );
        let (a, b, c) = (
            PathBuf::from("/v/a"),
            PathBuf::from("/v/b"),
            PathBuf::from("/v/c"),
        );
        g.assign([&a, &b]).unwrap();
        assert_eq!((g.gid(&a), g.gid(&b)), (Some(7), Some(8)));
        // Full: nothing given, nothing changed.
        assert_eq!(g.assign([&c]).unwrap_err(), (7, 8));
        assert_eq!(g.gid(&c), None);
        assert_eq!(g.all().len(), 2);
        // a destroyed: its gid is free again.
        g.retain(&BTreeSet::from([b.clone()]));
        g.assign([&c]).unwrap();
        assert_eq!(g.gid(&c), Some(7));
        assert_eq!(
            g.of([&b, &c]),
            BTreeMap::from([(b.clone(), 8), (c.clone(), 7)])
        );
        // Adopted from a checkpoint: only live volumes, never a gid twice.
        let h = VolumeGids::new(GidRange::new(7, 9).unwrap(), dir.path().join("h.json"));
        h.adopt(
            &BTreeMap::from([(a.clone(), 9), (b.clone(), 9), (c.clone(), 7)]),
            &BTreeSet::from([a.clone(), b.clone()]),
        );
        assert_eq!(h.gid(&a), Some(9));
        assert_eq!(h.gid(&b), None, "9 is a's");
        assert_eq!(h.gid(&c), None, "not live");
        let before = h.assign([&b]).unwrap();
        assert_eq!(h.gid(&b), Some(7));
        h.restore(before);
        assert_eq!(h.gid(&b), None);
    }

    #[test]
    fn other_holders_share_the_range_are_recorded_first_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TASK_GIDS_FILE);
        let g = VolumeGids::new(GidRange::new(7, 9).unwrap(), path.clone());
        let a = PathBuf::from("/v/a");
        g.assign([&a]).unwrap();
        // The volume has 7: the pod's path gets 8, the same again when asked again.
        assert_eq!(g.take_other("parent p1 shared"), Ok(8));
        assert_eq!(g.take_other("parent p1 shared"), Ok(8));
        assert_eq!(g.take_other("parent p2 x"), Ok(9));
        assert!(
            g.take_other("parent p3 y")
                .unwrap_err()
                .contains("no free volume gid")
        );
        // Nor does a volume get one the pods hold.
        assert_eq!(g.assign([&PathBuf::from("/v/b")]).unwrap_err(), (7, 9));
        // Recorded: a new book reads them back.
        let again = VolumeGids::new(GidRange::new(7, 9).unwrap(), path.clone());
        again.load_others().unwrap();
        assert_eq!(again.other("parent p1 shared"), Some(8));
        // Released by predicate, recorded.
        let gone = g.release_others(|k| k.starts_with("parent p1 ")).unwrap();
        assert_eq!(gone, vec![("parent p1 shared".to_owned(), 8)]);
        let again = VolumeGids::new(GidRange::new(7, 9).unwrap(), path);
        again.load_others().unwrap();
        assert_eq!(again.other("parent p1 shared"), None);
        assert_eq!(again.other("parent p2 x"), Some(9));
    }

    #[test]
    fn csi_volumes_and_shared_volumes_share_the_range_and_never_a_gid() {
        let (a, b) = (PathBuf::from("/v/a"), PathBuf::from("/v/b"));
        let (r1, r2, r3) = (
            PathBuf::from("/w/csi/t/n/volumes/1/volume.state"),
            PathBuf::from("/w/csi/t/n/volumes/2/volume.state"),
            PathBuf::from("/w/csi/t/n/volumes/3/volume.state"),
        );
        let dir = tempfile::tempdir().unwrap();
        let g = VolumeGids::new(
            GidRange::new(10, 13).unwrap(),
            dir.path().join(TASK_GIDS_FILE),
        );
        // Seeded from the CSI records first: 11 is r1's.
        g.adopt_csi(&BTreeMap::from([(r1.clone(), 11)]));
        // A checkpoint naming 11 for a: CSI keeps it, a gets a new one.
        g.adopt(
            &BTreeMap::from([(a.clone(), 11)]),
            &BTreeSet::from([a.clone(), b.clone()]),
        );
        assert_eq!(g.gid(&a), None);
        g.assign([&a]).unwrap();
        assert_eq!(g.gid(&a), Some(10));
        let csi = g.csi_groups();
        // The CSI side skips both kinds; asking again for one record gives its gid again.
        assert_eq!(csi.take(&r1).unwrap(), 11);
        assert_eq!(csi.take(&r2).unwrap(), 12);
        assert_eq!(csi.take(&r2).unwrap(), 12);
        // The persistent side skips the CSI gids.
        g.assign([&b]).unwrap();
        assert_eq!(g.gid(&b), Some(13));
        assert_eq!(
            csi.take(&r3).unwrap_err(),
            "every gid of --volume-gid-range 10-13 is taken"
        );
        // Released with its record: free for either side.
        csi.release(&r2);
        assert_eq!(g.csi(), BTreeMap::from([(r1.clone(), 11)]));
        assert_eq!(csi.take(&r3).unwrap(), 12);
        // A destroyed shared volume frees its gid for a CSI volume too.
        g.retain(&BTreeSet::from([b.clone()]));
        csi.release(&r1);
        assert_eq!(csi.take(&r1).unwrap(), 10);
    }
}
