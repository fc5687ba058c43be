//! The container records: one fsync'd JSON file per container, `<work_dir>/containers/<id>.json`,
//! written before every transition's first side effect and removed when cleanup is complete.
//!
//! Everything about where and how records are stored is in this file, behind the narrow
//! [`RecordStore`] (load, save, remove, list, quarantine, sweep), so the store can be swapped
//! without touching the lifecycle code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::config::check_id;
use super::error::{ContainerError, Result, io_err};
use super::sources::VolumeEntry;

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

/// Where a test hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint<'a> {
    /// The intent record of `step` (`preparing`, `cleaning`) is durable.
    Intent {
        /// The container.
        container: &'a str,
        /// The step.
        step: &'static str,
    },
    /// Volume number `index` of the plan got its source / its mount / was unmounted / released.
    Volume {
        /// The container.
        container: &'a str,
        /// `source`, `mounted`, `unmounted`, `released`.
        step: &'static str,
        /// Index in the plan.
        index: usize,
    },
}

/// A test hook (crash injection).
pub type Hook = Arc<dyn Fn(HookPoint<'_>) + Send + Sync>;

/// Where records live, and the only code that touches them.
#[derive(Debug)]
pub(crate) struct RecordStore {
    dir: PathBuf,
    quarantine_dir: PathBuf,
    writes: AtomicU64,
}

impl RecordStore {
    /// The store under `<work_dir>/containers` (quarantine: `<work_dir>/containers-quarantine`).
    pub(crate) fn new(work_dir: &Path) -> Self {
        Self {
            dir: work_dir.join("containers"),
            quarantine_dir: work_dir.join("containers-quarantine"),
            writes: AtomicU64::new(0),
        }
    }

    /// How many fsync'd record writes this store made.
    pub(crate) fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// `<work_dir>/containers/<id>.json`: flat, so a record's first write needs no new
    /// directory (and no fsync of one) beyond `containers/` itself.
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// The ids of every record (file names `<id>.json`; berth's own temp files and anything
    /// else are skipped), sorted.
    pub(crate) fn ids(&self) -> Result<Vec<String>> {
        let dir = &self.dir;
        let mut ids: Vec<String> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with(berth_mount::durable::TEMP_PREFIX))
                .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("", "list records", dir)(e)),
        };
        ids.sort();
        Ok(ids)
    }

    /// Reads a container's record (`None` when there is none).
    pub(crate) fn load(&self, id: &str) -> Result<Option<ContainerRecord>> {
        check_id(id)?;
        let path = self.path(id);
        let bad = |reason: String| ContainerError::Record {
            container: id.to_owned(),
            path: path.clone(),
            reason,
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(id, "read record", &path)(e)),
        };
        let rec: ContainerRecord =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("parse: {e}")))?;
        if rec.schema_version != SCHEMA_VERSION || rec.container_id != id {
            return Err(bad(format!(
                "schema {} for container {:?}",
                rec.schema_version, rec.container_id
            )));
        }
        Ok(Some(rec))
    }

    /// Writes a record durably (atomic replace, fsync'd).
    pub(crate) fn save(&self, rec: &ContainerRecord) -> Result<()> {
        let id = &rec.container_id;
        let dir = &self.dir;
        if !dir.is_dir() {
            berth_mount::durable::create_dir_durable(dir).map_err(io_err(
                id,
                "create records dir",
                dir,
            ))?;
        }
        let path = self.path(id);
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| ContainerError::Record {
            container: id.clone(),
            path: path.clone(),
            reason: format!("encode: {e}"),
        })?;
        berth_mount::durable::write_atomic(&path, &bytes).map_err(io_err(
            id,
            "write record",
            &path,
        ))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes a record once everything it describes is undone. The unlink is not fsync'd:
    /// if a crash loses it, the `cleaning` record comes back and recovery replays a teardown
    /// that finds nothing left to do.
    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(id, "remove record", &path)(e)),
        }
    }

    /// Removes the temp files of record writes a crash interrupted.
    pub(crate) fn remove_stale_temps(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(berth_mount::durable::TEMP_PREFIX))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Moves a corrupt record aside, to `<work_dir>/containers-quarantine/<id>.<seconds>`.
    pub(crate) fn quarantine(&self, name: &str) {
        let from = self.path(name);
        let to_dir = &self.quarantine_dir;
        if std::fs::create_dir_all(to_dir).is_ok() {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let to = to_dir.join(format!("{name}.{stamp}"));
            if let Err(e) = std::fs::rename(&from, &to) {
                tracing::warn!(container = name, error = %e, "cannot move a corrupt record aside");
            } else {
                tracing::warn!(container = name, to = %to.display(), "corrupt container record quarantined");
            }
        }
    }
}
