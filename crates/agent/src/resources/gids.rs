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

/// The gids of one agent's shared volumes, by volume directory.
#[derive(Debug, Clone)]
pub struct VolumeGids {
    range: GidRange,
    by_dir: BTreeMap<PathBuf, u32>,
}

impl VolumeGids {
    /// Gids from `range`, none given yet.
    #[must_use]
    pub fn new(range: GidRange) -> Self {
        Self {
            range,
            by_dir: BTreeMap::new(),
        }
    }

    /// The range.
    #[must_use]
    pub fn range(&self) -> GidRange {
        self.range
    }

    /// The gid of the volume at `dir`.
    #[must_use]
    pub fn gid(&self, dir: &Path) -> Option<u32> {
        self.by_dir.get(dir).copied()
    }

    /// Every volume's gid.
    #[must_use]
    pub fn all(&self) -> &BTreeMap<PathBuf, u32> {
        &self.by_dir
    }

    /// Takes the gids a checkpoint names for `live` volume directories (a gid given twice
    /// keeps its first volume; the other gets a new one from [`assign`](Self::assign)).
    pub(super) fn adopt(&mut self, recorded: &BTreeMap<PathBuf, u32>, live: &BTreeSet<PathBuf>) {
        for (dir, gid) in recorded {
            if !live.contains(dir) || self.by_dir.contains_key(dir) {
                continue;
            }
            if self.by_dir.values().any(|g| g == gid) {
                tracing::warn!(path = %dir.display(), gid, "a checkpointed volume gid is given twice; the volume gets a new one");
                continue;
            }
            self.by_dir.insert(dir.clone(), *gid);
        }
    }

    /// Gives each of `dirs` that has none the lowest free gid; returns the map as it was
    /// (for [`restore`](Self::restore)).
    ///
    /// # Errors
    /// Every gid of the range is taken (`(begin, end)`); nothing is given then.
    pub(super) fn assign<'a>(
        &mut self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> Result<BTreeMap<PathBuf, u32>, (u32, u32)> {
        let before = self.by_dir.clone();
        for dir in dirs {
            if self.by_dir.contains_key(dir) {
                continue;
            }
            let taken: BTreeSet<u32> = self.by_dir.values().copied().collect();
            let Some(gid) = (self.range.begin..=self.range.end).find(|g| !taken.contains(g)) else {
                self.by_dir = before;
                return Err((self.range.begin, self.range.end));
            };
            self.by_dir.insert(dir.clone(), gid);
        }
        Ok(before)
    }

    /// Puts the map back as it was before an [`assign`](Self::assign) whose change was not
    /// written.
    pub(super) fn restore(&mut self, before: BTreeMap<PathBuf, u32>) {
        self.by_dir = before;
    }

    /// Keeps only the volumes in `live` (after a change: destroyed volumes release theirs).
    pub(super) fn retain(&mut self, live: &BTreeSet<PathBuf>) {
        self.by_dir.retain(|d, _| live.contains(d));
    }

    /// The gids of the volumes in `dirs`, for the checkpoint of that set.
    #[must_use]
    pub(super) fn of<'a>(
        &self,
        dirs: impl IntoIterator<Item = &'a PathBuf>,
    ) -> BTreeMap<PathBuf, u32> {
        dirs.into_iter()
            .filter_map(|d| Some((d.clone(), *self.by_dir.get(d)?)))
            .collect()
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
}
