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
//! - **CSI volumes.** A CSI mount volume of a plugin that advertises `VOLUME_MOUNT_GROUP`
//!   gets one gid from the same range as `volume_mount_group` (see [`berth_csi::groups`]),
//!   shared by all its consumers and recorded in its CSI volume record. Both kinds live in
//!   one book under one lock ([`VolumeGids`]), so neither ever gets a gid the other holds;
//!   the agent seeds the book with the CSI records' gids at open
//!   ([`VolumeGids::adopt_csi`]), before the checkpoints' are adopted and before any plugin
//!   starts. `prepare` returns a task's CSI volumes' gids beside its shared volumes'.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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
        let inner = s
            .trim()
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(s.trim());
        let (b, e) = inner
            .split_once('-')
            .ok_or_else(|| format!("volume gids: expected BEGIN-END, got {s:?}"))?;
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|e| format!("volume gids {s:?}: {e}"))
        };
        Self::new(num(b)?, num(e)?)
    }
}

/// What [`VolumeGids`] holds, under one lock: the shared persistent volumes' gids and the CSI
/// volumes' (`volume_mount_group`, by record file).
#[derive(Debug, Default)]
struct Book {
    by_dir: BTreeMap<PathBuf, u32>,
    csi: BTreeMap<PathBuf, u32>,
}

impl Book {
    fn taken(&self, gid: u32) -> bool {
        self.by_dir
            .values()
            .chain(self.csi.values())
            .any(|g| *g == gid)
    }

    fn lowest_free(&self, range: GidRange) -> Option<u32> {
        let taken: BTreeSet<u32> = self
            .by_dir
            .values()
            .chain(self.csi.values())
            .copied()
            .collect();
        (range.begin..=range.end).find(|g| !taken.contains(g))
    }
}

/// The gids of one agent's volumes from `--volume-gid-range`: shared persistent volumes by
/// volume directory, and CSI volumes (`volume_mount_group`, see [`berth_csi::groups`]) by
/// record file — one range, one lock, so the two kinds never get the same gid even while a
/// CSI publish and a resources change run at once. The CSI side reaches it through
/// [`csi_groups`](Self::csi_groups), the handle given to the CSI plugins at open.
#[derive(Debug)]
pub struct VolumeGids {
    range: GidRange,
    book: Arc<Mutex<Book>>,
}

impl VolumeGids {
    /// Gids from `range`, none given yet.
    #[must_use]
    pub fn new(range: GidRange) -> Self {
        Self {
            range,
            book: Arc::default(),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The range.
    #[must_use]
    pub fn range(&self) -> GidRange {
        self.range
    }

    /// The gid of the volume at `dir`.
    #[must_use]
    pub fn gid(&self, dir: &Path) -> Option<u32> {
        self.book().by_dir.get(dir).copied()
    }

    /// Every shared persistent volume's gid.
    #[must_use]
    pub fn all(&self) -> BTreeMap<PathBuf, u32> {
        self.book().by_dir.clone()
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
            if b.taken(*gid) {
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

    /// Takes the gids a checkpoint names for `live` volume directories (a gid given twice,
    /// or held by a CSI volume, keeps its first owner; the other volume gets a new one from
    /// [`assign`](Self::assign)).
    pub(super) fn adopt(&mut self, recorded: &BTreeMap<PathBuf, u32>, live: &BTreeSet<PathBuf>) {
        let mut b = self.book();
        for (dir, gid) in recorded {
            if !live.contains(dir) || b.by_dir.contains_key(dir) {
                continue;
            }
            if b.taken(*gid) {
                tracing::warn!(path = %dir.display(), gid, "a checkpointed volume gid is given twice; the volume gets a new one");
                continue;
            }
            b.by_dir.insert(dir.clone(), *gid);
        }
    }

    /// Gives each of `dirs` that has none the lowest free gid (free of persistent and CSI
    /// volumes alike); returns the map as it was (for [`restore`](Self::restore)).
    ///
    /// # Errors
    /// Every gid of the range is taken (`(begin, end)`); nothing is given then.
    pub(super) fn assign<'a>(
        &mut self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> Result<BTreeMap<PathBuf, u32>, (u32, u32)> {
        let range = self.range;
        let mut b = self.book();
        let before = b.by_dir.clone();
        for dir in dirs {
            if b.by_dir.contains_key(dir) {
                continue;
            }
            let Some(gid) = b.lowest_free(range) else {
                b.by_dir = before;
                return Err((range.begin, range.end));
            };
            b.by_dir.insert(dir.clone(), gid);
        }
        Ok(before)
    }

    /// Puts the persistent volumes' map back as it was before an [`assign`](Self::assign)
    /// whose change was not written (the CSI side is not touched).
    pub(super) fn restore(&mut self, before: BTreeMap<PathBuf, u32>) {
        self.book().by_dir = before;
    }

    /// Keeps only the volumes in `live` (after a change: destroyed volumes release theirs).
    pub(super) fn retain(&mut self, live: &BTreeSet<PathBuf>) {
        self.book().by_dir.retain(|d, _| live.contains(d));
    }

    /// The gids of the volumes in `dirs`, for the checkpoint of that set.
    #[must_use]
    pub(super) fn of<'a>(
        &self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> BTreeMap<PathBuf, u32> {
        let b = self.book();
        dirs.into_iter()
            .filter_map(|d| Some((d.clone(), *b.by_dir.get(d)?)))
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
        let gid = b.lowest_free(self.range).ok_or_else(|| {
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
        let mut g = VolumeGids::new(GidRange::new(7, 8).unwrap());
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
        let mut h = VolumeGids::new(GidRange::new(7, 9).unwrap());
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
    fn csi_volumes_and_shared_volumes_share_the_range_and_never_a_gid() {
        let (a, b) = (PathBuf::from("/v/a"), PathBuf::from("/v/b"));
        let (r1, r2, r3) = (
            PathBuf::from("/w/csi/t/n/volumes/1/volume.state"),
            PathBuf::from("/w/csi/t/n/volumes/2/volume.state"),
            PathBuf::from("/w/csi/t/n/volumes/3/volume.state"),
        );
        let mut g = VolumeGids::new(GidRange::new(10, 13).unwrap());
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
