//! `volume_mount_group`: a gid per CSI mount volume, for tasks of different users to share it.
//!
//! - **When.** A volume gets a gid when its plugin advertises the node capability
//!   `VOLUME_MOUNT_GROUP`, it is a mount volume (the CSI spec defines `volume_mount_group`
//!   for `MountVolume` only; block volumes never get one) and the manager was given a
//!   [`MountGroups`] (the agent's `--volume-gid-range`). Otherwise `volume_mount_group` is
//!   sent empty, as before.
//! - **One per volume.** The gid is taken when the volume is about to be staged (or, for a
//!   plugin without `STAGE_UNSTAGE_VOLUME`, published) for its first consumer; every
//!   publication and every consumer of the volume shares it. A volume that was already in use
//!   without one keeps none until it is staged again.
//! - **Write-ahead.** The gid is stored in the volume's record
//!   ([`VolumeRecord::volume_mount_group`](crate::record::VolumeRecord::volume_mount_group))
//!   by the same fsync'd write as the `NODE_STAGE` / `NODE_PUBLISH` intent, so no RPC ever
//!   carries a gid the record does not hold. It is released when the record is removed
//!   (the last consumer gone, everything torn down).
//! - **Who gives it.** The range is the agent's, shared with its shared persistent volumes,
//!   so berth-csi does not pick gids itself: a [`MountGroups`] gives them. The agent's one
//!   implementation keeps both kinds of gid under one lock, and is seeded at open with the
//!   gids of every CSI record on disk ([`recorded`]) before any plugin starts, so a recovered
//!   volume's gid is never given to anything else. A gid taken but not yet recorded is lost
//!   with the process, which is harmless: it was sent to no plugin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_mount::store::{Layout, RecordStore};

use crate::record::{RECORD_FILE, VolumeRecord};

/// Gives CSI volumes their `volume_mount_group` gids. A volume is named by its record file
/// (unique per plugin and volume; what [`recorded`] returns).
pub trait MountGroups: Send + Sync + std::fmt::Debug {
    /// The gid of the volume recorded at `record`: the one it holds already, else a free one,
    /// held from now on and never given to anything else until [`release`](Self::release).
    ///
    /// # Errors
    /// Every gid is taken; the reason names the range.
    fn take(&self, record: &Path) -> Result<u32, String>;

    /// Frees the gid of the volume recorded at `record` (its record was removed).
    fn release(&self, record: &Path);
}

/// The `volume_mount_group` gids recorded by every CSI volume record under `work_dir`
/// (`<work_dir>/csi/<type>/<name>/volumes/…`), by record file. Records that cannot be read
/// are left out (logged): the manager reports them at recovery.
#[must_use]
pub fn recorded(work_dir: &Path) -> BTreeMap<PathBuf, u32> {
    let mut out = BTreeMap::new();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(p) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    for type_dir in dirs(&work_dir.join("csi")) {
        for name_dir in dirs(&type_dir) {
            let volumes = name_dir.join("volumes");
            if !volumes.is_dir() {
                continue;
            }
            let store: RecordStore<VolumeRecord> = RecordStore::new(
                volumes,
                Layout::Nested {
                    depth: 1,
                    file: RECORD_FILE,
                },
            );
            let Ok(keys) = store.list() else {
                continue;
            };
            for k in keys {
                let key: Vec<&str> = k.iter().map(String::as_str).collect();
                match (store.load(&key), store.path(&key)) {
                    (Ok(Some(rec)), Ok(path)) => {
                        if let Some(gid) = rec.volume_mount_group {
                            out.insert(path, gid);
                        }
                    }
                    (Ok(None), _) => {}
                    (Err(e), _) | (_, Err(e)) => {
                        tracing::warn!(error = %e, "a CSI volume record is unreadable; its volume_mount_group (if any) is not known");
                    }
                }
            }
        }
    }
    out
}
