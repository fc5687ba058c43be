//! The container records: one fsync'd JSON file per container, `<work_dir>/containers/<id>.json`,
//! written before every transition's first side effect and removed when cleanup is complete.
//!
//! Everything about where and how records are stored is in this file, behind the narrow
//! [`RecordStore`] (load, save, remove, list, quarantine, sweep), so the store can be swapped
//! without touching the lifecycle code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use berth_mount::store::{KeyGuard, Layout, StoreError};
use serde::{Deserialize, Serialize};

use super::config::check_id;
use super::error::{ContainerError, Result, io_err};
use super::sources::{Source, VolumeEntry};

/// The record schema version.
pub const SCHEMA_VERSION: u32 = 1;

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

pub use berth_mount::hook::{Hook, HookPoint, Phase};

impl ContainerRecord {
    /// The parent container whose sandbox this container binds from (`PARENT` sandbox
    /// paths), if any.
    #[must_use]
    pub fn parent(&self) -> Option<&str> {
        self.volumes.iter().find_map(|v| match &v.source {
            Source::SandboxPath {
                parent: Some(p), ..
            } => Some(p.as_str()),
            _ => None,
        })
    }
}

impl berth_mount::store::Record for ContainerRecord {
    fn check(&self, key: &[&str]) -> std::result::Result<(), String> {
        if self.schema_version != SCHEMA_VERSION || key != [self.container_id.as_str()] {
            return Err(format!(
                "schema {} for container {:?}",
                self.schema_version, self.container_id
            ));
        }
        Ok(())
    }
}

/// Where records live: `berth_mount::store::RecordStore` with the flat layout
/// (`<work_dir>/containers/<id>.json`, so a record's first write needs no new directory
/// beyond `containers/`) and unsynced removals (a lost unlink brings back a `cleaning`
/// record whose replay finds nothing left to do). This adapter only maps the store's errors
/// to the container's.
#[derive(Debug)]
pub(crate) struct RecordStore {
    store: berth_mount::store::RecordStore<ContainerRecord>,
    quarantine_dir: PathBuf,
    /// Nested container → its parent, for every record with a `PARENT` sandbox path: built
    /// from the records at its first use, then kept in step by `save`, `remove` and
    /// `quarantine` (the records stay the truth; this spares a cleanup reading them all).
    family: Mutex<Option<BTreeMap<String, String>>>,
}

fn store_err(id: &str, e: StoreError) -> ContainerError {
    match e {
        StoreError::Io { step, path, source } => io_err(id, step, &path)(source),
        StoreError::Corrupt { path, reason } => ContainerError::Record {
            container: id.to_owned(),
            path,
            reason,
        },
        other @ (StoreError::Key { .. } | StoreError::KeyShape { .. }) => ContainerError::Record {
            container: id.to_owned(),
            path: PathBuf::new(),
            reason: other.to_string(),
        },
    }
}

impl RecordStore {
    /// The store under `<work_dir>/containers` (quarantine: `<work_dir>/containers-quarantine`).
    pub(crate) fn new(work_dir: &Path) -> Self {
        Self {
            store: berth_mount::store::RecordStore::new(
                work_dir.join("containers"),
                Layout::Flat { suffix: ".json" },
            )
            .unsynced_removal(),
            quarantine_dir: work_dir.join("containers-quarantine"),
            family: Mutex::new(None),
        }
    }

    fn family(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<String, String>>> {
        self.family.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The nested containers whose records hold `PARENT` sandbox paths in `parent`'s sandbox,
    /// sorted. A record that cannot be read is not counted (recovery quarantines it).
    pub(crate) fn children_of(&self, parent: &str) -> Result<Vec<String>> {
        let mut family = self.family();
        if family.is_none() {
            let mut map = BTreeMap::new();
            for id in self.ids()? {
                if let Ok(Some(rec)) = self.load(&id)
                    && let Some(p) = rec.parent()
                {
                    map.insert(id, p.to_owned());
                }
            }
            *family = Some(map);
        }
        Ok(family
            .as_ref()
            .map(|m| {
                m.iter()
                    .filter(|(_, p)| p.as_str() == parent)
                    .map(|(c, _)| c.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// How many fsync'd record writes this store made.
    pub(crate) fn writes(&self) -> u64 {
        self.store.writes()
    }

    /// Takes a container's operation lock; its entry goes with its last holder.
    pub(crate) async fn lock(&self, id: &str) -> KeyGuard<'_> {
        self.store.lock(&[id]).await
    }

    /// How many containers' operation locks are held or awaited now.
    pub(crate) fn locks_in_use(&self) -> usize {
        self.store.locks_in_use()
    }

    /// The ids of every record (berth's own temp files and anything else are skipped), sorted.
    pub(crate) fn ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = self
            .store
            .list()
            .map_err(|e| store_err("", e))?
            .into_iter()
            .filter_map(|key| key.into_iter().next())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads a container's record (`None` when there is none).
    pub(crate) fn load(&self, id: &str) -> Result<Option<ContainerRecord>> {
        check_id(id)?;
        self.store.load(&[id]).map_err(|e| store_err(id, e))
    }

    /// Writes a record durably (atomic replace, fsync'd).
    pub(crate) fn save(&self, rec: &ContainerRecord) -> Result<()> {
        let id = rec.container_id.as_str();
        self.store
            .persist(&[id], rec)
            .map_err(|e| store_err(id, e))?;
        if let Some(map) = self.family().as_mut() {
            match rec.parent() {
                Some(p) => map.insert(id.to_owned(), p.to_owned()),
                None => map.remove(id),
            };
        }
        Ok(())
    }

    /// Removes a record once everything it describes is undone (unlink not fsync'd).
    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        self.store.remove(&[id]).map_err(|e| store_err(id, e))?;
        if let Some(map) = self.family().as_mut() {
            map.remove(id);
        }
        Ok(())
    }

    /// Removes the temp files of record writes a crash interrupted.
    pub(crate) fn remove_stale_temps(&self) {
        self.store.remove_stale_temps();
    }

    /// The quarantined records of `id` still in force: `containers-quarantine/<id>.<seconds>`
    /// (a released one has a `.released` suffix and no longer counts).
    pub(crate) fn quarantined_files(&self, id: &str) -> Vec<PathBuf> {
        self.quarantined()
            .into_iter()
            .filter(|(i, _)| i == id)
            .map(|(_, p)| p)
            .collect()
    }

    /// Every quarantined record in force: (container id, file), by file name. A missing
    /// directory is none; an unreadable one is logged and read as none.
    pub(crate) fn quarantined(&self) -> Vec<(String, PathBuf)> {
        let rd = match std::fs::read_dir(&self.quarantine_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(dir = %self.quarantine_dir.display(), error = %e, "cannot list quarantined records");
                return Vec::new();
            }
        };
        let mut out: Vec<(String, PathBuf)> = rd
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let (id, stamp) = name.rsplit_once('.')?;
                (!stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
                check_id(id).ok()?;
                Some((id.to_owned(), e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// Ends the quarantine of `files` (renamed to `<file>.released`, kept for the operator;
    /// the directory is fsynced).
    pub(crate) fn release_quarantine(&self, id: &str, files: &[PathBuf]) -> Result<()> {
        for f in files {
            let mut to = f.clone().into_os_string();
            to.push(".released");
            std::fs::rename(f, &to).map_err(io_err(id, "release quarantined record", f))?;
        }
        berth_mount::durable::fsync_dir(&self.quarantine_dir).map_err(io_err(
            id,
            "fsync quarantine dir",
            &self.quarantine_dir,
        ))
    }

    /// Moves a corrupt record aside, to `<work_dir>/containers-quarantine/<id>.<seconds>`.
    pub(crate) fn quarantine(&self, name: &str) {
        if let Some(map) = self.family().as_mut() {
            map.remove(name);
        }
        match self.store.quarantine(&[name], &self.quarantine_dir) {
            Ok(to) => {
                tracing::warn!(container = name, to = %to.display(), "corrupt container record quarantined");
            }
            Err(e) => {
                tracing::warn!(container = name, error = %e, "cannot move a corrupt record aside");
            }
        }
    }
}
