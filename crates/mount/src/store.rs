//! The durable record store: berth's one write-ahead record store, shared by the container
//! isolator, the CSI volume manager and the Docker volume manager.
//!
//! A [`RecordStore`] keeps one JSON record per key under a root directory:
//!
//! - [`Layout::Flat`]: `<root>/<key><suffix>` for one-part keys used verbatim (validated as a
//!   path component), e.g. the agent's `<work_dir>/containers/<id>.json`: a record's first
//!   write creates no directory beyond the root.
//! - [`Layout::Nested`]: `<root>/<enc(k1)>/…/<enc(kn)>/<file>`, one directory per record, each
//!   key part encoded by [`crate::names::encode_component`] (so `/`, `.` and `..` never become
//!   components): the CSI manager's `volumes/<enc(id)>/volume.state`, the Docker manager's
//!   `<enc(driver)>/<enc(volume)>/consumers.json`.
//!
//! [`RecordStore::persist`] is the write-ahead write: the record's directory is created
//! durably, then the record goes through [`crate::durable::write_atomic`] (temp file, `fsync`,
//! `rename`, `fsync` of the directory): a crash leaves the old or the new record, never a torn
//! one. [`RecordStore::remove`] unlinks and fsyncs the directory (unless the store was built
//! with [`RecordStore::unsynced_removal`]), then removes a nested record's directory with the
//! temp files of killed writes. [`RecordStore::load`] parses and lets the record type refuse
//! what it cannot use ([`Record::check`]: an unknown schema, a record of another key).
//!
//! [`RecordStore::lock`] takes the per-key async lock that serializes every operation on one
//! record inside the process; its map entry goes with its last holder, so the map only holds
//! keys with an operation under way. [`RecordStore::writes`] and [`RecordStore::removals`]
//! count the store's durable writes for benchmarks and metrics.

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::durable;
use crate::error::MountError;
use crate::names;

/// A failure of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A key part cannot be a path component.
    #[error("record key part {index} ({part:?}) cannot be a path component: {source}")]
    Key {
        /// Which part of the key (0-based).
        index: usize,
        /// The part.
        part: String,
        /// Why.
        source: MountError,
    },
    /// A key with the wrong number of parts for the layout.
    #[error("record key has {got} parts, the layout wants {want}")]
    KeyShape {
        /// Parts given.
        got: usize,
        /// Parts the layout wants.
        want: usize,
    },
    /// A file-system step failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// The step (`read record`, `create record dir`, `write record`, `remove record`,
        /// `fsync record dir`, `list records`).
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A record cannot be encoded, parsed or used.
    #[error("record {}: {reason}", path.display())]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// What is wrong (`parse: …`, `encode: …`, or [`Record::check`]'s reason).
        reason: String,
    },
}

/// A type the store keeps: JSON through serde, and a check of what was read.
pub trait Record: Serialize + DeserializeOwned {
    /// Why a record read at `key` cannot be used (an unknown schema version, a record that
    /// names another key), or `Ok`.
    ///
    /// # Errors
    /// The reason, which becomes [`StoreError::Corrupt`].
    fn check(&self, key: &[&str]) -> Result<(), String>;
}

/// Where a key's record lives under the store's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `<root>/<key><suffix>`: one-part keys, used verbatim after
    /// [`crate::names::validate_component`].
    Flat {
        /// The file name's suffix, e.g. `.json`.
        suffix: &'static str,
    },
    /// `<root>/<enc(k1)>/…/<enc(kn)>/<file>`, `n = depth`.
    Nested {
        /// Key parts (directory levels).
        depth: usize,
        /// The record's file name inside its directory.
        file: &'static str,
    },
}

/// The per-key async locks of a store (see the module docs).
#[derive(Debug, Default)]
pub struct KeyLocks {
    map: Mutex<HashMap<Vec<String>, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held per-key lock; dropping it unlocks, and the key's map entry goes with its last
/// holder or waiter.
#[derive(Debug)]
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Vec<String>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    /// Takes the lock of `key`, waiting for its holder.
    pub async fn lock(&self, key: &[&str]) -> KeyGuard<'_> {
        let key: Vec<String> = key.iter().map(|s| (*s).to_owned()).collect();
        let lock = {
            let mut m = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(m.entry(key.clone()).or_default())
        };
        KeyGuard {
            locks: self,
            key,
            guard: Some(lock.lock_owned().await),
        }
    }

    /// How many keys' locks are held or awaited now (0 when idle).
    #[must_use]
    pub fn in_use(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // Unlock and let go of this holder's reference first; under the map's lock, a count of
        // one is the map's own (every other holder or waiter cloned it under that lock).
        drop(self.guard.take());
        let mut m = self
            .locks
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if m.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            m.remove(&self.key);
        }
    }
}

/// The durable record store of one record type (see the module docs).
#[derive(Debug)]
pub struct RecordStore<R> {
    root: PathBuf,
    layout: Layout,
    fsync_removal: bool,
    locks: KeyLocks,
    writes: AtomicU64,
    removals: AtomicU64,
    _record: PhantomData<fn() -> R>,
}

fn io_err<'a>(step: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

impl<R: Record> RecordStore<R> {
    /// A store under `root` (created on the first write, not here).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>, layout: Layout) -> Self {
        Self {
            root: root.into(),
            layout,
            fsync_removal: true,
            locks: KeyLocks::default(),
            writes: AtomicU64::new(0),
            removals: AtomicU64::new(0),
            _record: PhantomData,
        }
    }

    /// Removals are not fsync'd: a crash may bring a removed record back, so use it only for
    /// records whose replay finds nothing left to do (the agent's `cleaning` records).
    #[must_use]
    pub fn unsynced_removal(mut self) -> Self {
        self.fsync_removal = false;
        self
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`'s record.
    ///
    /// # Errors
    /// [`StoreError::Key`] / [`StoreError::KeyShape`] for a key that cannot be a path.
    pub fn path(&self, key: &[&str]) -> Result<PathBuf, StoreError> {
        match self.layout {
            Layout::Flat { suffix } => {
                let [part] = key else {
                    return Err(StoreError::KeyShape {
                        got: key.len(),
                        want: 1,
                    });
                };
                let name = format!("{part}{suffix}");
                names::validate_component(part)
                    .and_then(|_| names::validate_component(&name))
                    .map_err(|source| StoreError::Key {
                        index: 0,
                        part: (*part).to_owned(),
                        source,
                    })?;
                Ok(self.root.join(name))
            }
            Layout::Nested { depth, file } => Ok(self.dir(key, depth)?.join(file)),
        }
    }

    fn dir(&self, key: &[&str], depth: usize) -> Result<PathBuf, StoreError> {
        if key.len() != depth {
            return Err(StoreError::KeyShape {
                got: key.len(),
                want: depth,
            });
        }
        let mut dir = self.root.clone();
        for (index, part) in key.iter().enumerate() {
            let enc = names::encode_component(part).map_err(|source| StoreError::Key {
                index,
                part: (*part).to_owned(),
                source,
            })?;
            dir.push(enc);
        }
        Ok(dir)
    }

    /// Takes `key`'s lock (see [`KeyLocks`]).
    pub async fn lock(&self, key: &[&str]) -> KeyGuard<'_> {
        self.locks.lock(key).await
    }

    /// How many keys' locks are held or awaited now.
    #[must_use]
    pub fn locks_in_use(&self) -> usize {
        self.locks.in_use()
    }

    /// Records written by [`RecordStore::persist`] so far.
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// [`RecordStore::remove`] calls so far.
    #[must_use]
    pub fn removals(&self) -> u64 {
        self.removals.load(Ordering::Relaxed)
    }

    /// Reads `key`'s record; `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Io`] (`read record`) when it cannot be read, [`StoreError::Corrupt`] when
    /// it cannot be parsed or [`Record::check`] refuses it; key errors.
    pub fn load(&self, key: &[&str]) -> Result<Option<R>, StoreError> {
        let path = self.path(key)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(io_err("read record", &path)(e)),
        };
        let rec: R = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: format!("parse: {e}"),
        })?;
        rec.check(key)
            .map_err(|reason| StoreError::Corrupt { path, reason })?;
        Ok(Some(rec))
    }

    /// Writes `key`'s record durably (the write-ahead write): its directory is created (each
    /// new level fsync'd in its parent), then temp file, `fsync`, `rename`, `fsync` of the
    /// directory. On error the previous record is intact.
    ///
    /// # Errors
    /// [`StoreError::Io`] (`create record dir`, `write record`), [`StoreError::Corrupt`] when
    /// the record cannot be encoded; key errors.
    pub fn persist(&self, key: &[&str], rec: &R) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        if !dir.is_dir() {
            durable::create_dir_durable(dir).map_err(io_err("create record dir", dir))?;
        }
        let bytes = serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: format!("encode: {e}"),
        })?;
        durable::write_atomic(&path, &bytes).map_err(io_err("write record", &path))?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes `key`'s record (a missing one is fine): unlink, `fsync` of its directory, then
    /// for a nested layout the record's directory with the temp files of killed writes (left
    /// when it holds anything else; its `rmdir` is not fsync'd, see [`RecordStore::sweep`]).
    ///
    /// # Errors
    /// [`StoreError::Io`] (`remove record`, `fsync record dir`); key errors.
    pub fn remove(&self, key: &[&str]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.removals.fetch_add(1, Ordering::Relaxed);
        let dir = path.parent().unwrap_or(&self.root);
        let unlinked = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if not_found(&e) => false,
            Err(e) => return Err(io_err("remove record", &path)(e)),
        };
        if unlinked && self.fsync_removal {
            durable::fsync_dir(dir).map_err(io_err("fsync record dir", dir))?;
        }
        if matches!(self.layout, Layout::Nested { .. }) {
            Self::remove_record_dir(dir);
        }
        Ok(())
    }

    /// Removes a nested record's directory with the temp files of killed writes. Not
    /// fsync'd: a crash that loses the `rmdir` leaves an empty record directory, which
    /// [`RecordStore::list`] skips and [`RecordStore::sweep`] removes.
    fn remove_record_dir(dir: &Path) -> bool {
        durable::remove_dir_and_stale_temps(dir).unwrap_or(false)
    }

    /// For a nested layout: removes `key`'s record directory when it holds no record (a
    /// removal a crash interrupted between the unlink and the `rmdir`), with the temp files
    /// of killed writes. Call it holding `key`'s lock. Returns whether a directory went.
    ///
    /// # Errors
    /// Key errors.
    pub fn sweep(&self, key: &[&str]) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        if !matches!(self.layout, Layout::Nested { .. }) || path.exists() {
            return Ok(false);
        }
        let dir = path.parent().unwrap_or(&self.root);
        if !dir.is_dir() {
            return Ok(false);
        }
        Ok(Self::remove_record_dir(dir))
    }

    /// Every key with a record, decoded, sorted. Names that are not the layout's encoding
    /// (berth's temp files, anything else) are skipped.
    ///
    /// # Errors
    /// [`StoreError::Io`] (`list records`) when a directory cannot be listed; a missing root
    /// is an empty store.
    pub fn list(&self) -> Result<Vec<Vec<String>>, StoreError> {
        self.walk(true)
    }

    /// For a nested layout: every key whose record directory exists without a record (see
    /// [`RecordStore::sweep`]), sorted.
    ///
    /// # Errors
    /// As [`RecordStore::list`].
    pub fn list_empty(&self) -> Result<Vec<Vec<String>>, StoreError> {
        if matches!(self.layout, Layout::Flat { .. }) {
            return Ok(Vec::new());
        }
        self.walk(false)
    }

    fn walk(&self, with_record: bool) -> Result<Vec<Vec<String>>, StoreError> {
        let mut out = Vec::new();
        match self.layout {
            Layout::Flat { suffix } => {
                // Regular files only, by the listing's own types: one `getdents` for the
                // directory, no `stat` per record.
                for name in entries(&self.root, Want::Files)? {
                    if let Some(key) = name.strip_suffix(suffix)
                        && !name.starts_with(durable::TEMP_PREFIX)
                    {
                        out.push(vec![key.to_owned()]);
                    }
                }
            }
            Layout::Nested { depth, file } => {
                let mut level: Vec<(PathBuf, Vec<String>)> = vec![(self.root.clone(), Vec::new())];
                for _ in 0..depth {
                    let mut next = Vec::new();
                    for (dir, key) in level {
                        for name in entries(&dir, Want::Dirs)? {
                            let Ok(part) = names::decode_component(&name) else {
                                continue;
                            };
                            if names::encode_component(&part).ok().as_deref() != Some(&name) {
                                continue;
                            }
                            let mut k = key.clone();
                            k.push(part);
                            next.push((dir.join(&name), k));
                        }
                    }
                    level = next;
                }
                out.extend(
                    level
                        .into_iter()
                        .filter(|(dir, _)| dir.join(file).is_file() == with_record)
                        .map(|(_, k)| k),
                );
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the temp files of killed writes: in the root (flat layout) or in every record
    /// directory (nested). Best effort; returns how many went.
    pub fn remove_stale_temps(&self) -> usize {
        let dirs: Vec<PathBuf> = match self.layout {
            Layout::Flat { .. } => vec![self.root.clone()],
            Layout::Nested { depth, .. } => {
                let mut level = vec![self.root.clone()];
                for _ in 0..depth {
                    level = level
                        .iter()
                        .flat_map(|d| {
                            entries(d, Want::Dirs)
                                .unwrap_or_default()
                                .into_iter()
                                .map(|n| d.join(n))
                        })
                        .collect();
                }
                level
            }
        };
        let mut n = 0;
        for dir in dirs {
            for name in entries(&dir, Want::Any).unwrap_or_default() {
                let p = dir.join(&name);
                if name.starts_with(durable::TEMP_PREFIX)
                    && p.is_file()
                    && std::fs::remove_file(&p).is_ok()
                {
                    n += 1;
                }
            }
        }
        n
    }

    /// Moves `key`'s record (one that cannot be parsed) aside into `to_dir` as
    /// `<name>.<unix seconds>`, `name` being the key's parts joined with `.`. Returns where it
    /// went.
    ///
    /// # Errors
    /// The I/O error of creating `to_dir` or of the rename; [`StoreError::Key`].
    pub fn quarantine(&self, key: &[&str], to_dir: &Path) -> Result<PathBuf, StoreError> {
        let from = self.path(key)?;
        std::fs::create_dir_all(to_dir).map_err(io_err("create quarantine dir", to_dir))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let to = to_dir.join(format!("{}.{stamp}", key.join(".")));
        std::fs::rename(&from, &to).map_err(io_err("quarantine record", &from))?;
        Ok(to)
    }
}

/// Names in `dir` (directories only when `dirs`), as UTF-8; a missing `dir` is empty.
/// Which directory entries [`entries`] returns, judged by the entry's own type (never through
/// a symlink, and without a `stat` where the file system reports the type in the listing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Any,
    Dirs,
    Files,
}

fn entries(dir: &Path, want: Want) -> Result<Vec<String>, StoreError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list records", dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("list records", dir))?;
        let keep = match want {
            Want::Any => true,
            Want::Dirs => e.file_type().is_ok_and(|t| t.is_dir()),
            Want::Files => e.file_type().is_ok_and(|t| t.is_file()),
        };
        if !keep {
            continue;
        }
        if let Ok(n) = e.file_name().into_string() {
            out.push(n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        v: u32,
        key: String,
    }

    impl Record for Rec {
        fn check(&self, key: &[&str]) -> Result<(), String> {
            if self.v != 1 {
                return Err(format!("unknown schema_version {}", self.v));
            }
            if key.last() != Some(&self.key.as_str()) {
                return Err("another key".to_owned());
            }
            Ok(())
        }
    }

    fn rec(key: &str) -> Rec {
        Rec {
            v: 1,
            key: key.to_owned(),
        }
    }

    #[test]
    fn nested_round_trip_list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s: RecordStore<Rec> = RecordStore::new(
            dir.path().join("r"),
            Layout::Nested {
                depth: 2,
                file: "rec.json",
            },
        );
        assert_eq!(s.list().unwrap(), Vec::<Vec<String>>::new());
        s.persist(&["d/1", "a b"], &rec("a b")).unwrap();
        s.persist(&["d/1", ".."], &rec("..")).unwrap();
        assert_eq!(s.load(&["d/1", "a b"]).unwrap(), Some(rec("a b")));
        assert_eq!(s.load(&["d/1", "x"]).unwrap(), None);
        assert_eq!(
            s.list().unwrap(),
            vec![
                vec!["d/1".to_owned(), "..".to_owned()],
                vec!["d/1".to_owned(), "a b".to_owned()]
            ]
        );
        assert_eq!(s.writes(), 2);
        let p = s.path(&["d/1", "a b"]).unwrap();
        s.remove(&["d/1", "a b"]).unwrap();
        assert!(!p.exists() && !p.parent().unwrap().exists());
        s.remove(&["d/1", "a b"]).unwrap();
        assert_eq!(s.removals(), 2);
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(matches!(
            s.persist(&["x"], &rec("x")),
            Err(StoreError::KeyShape { got: 1, want: 2 })
        ));
    }

    #[test]
    fn corrupt_and_refused_records_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s: RecordStore<Rec> = RecordStore::new(dir.path(), Layout::Flat { suffix: ".json" });
        std::fs::write(dir.path().join("a.json"), b"{not json").unwrap();
        assert!(
            matches!(s.load(&["a"]), Err(StoreError::Corrupt { reason, .. }) if reason.starts_with("parse: "))
        );
        s.persist(&["b"], &rec("c")).unwrap();
        assert!(
            matches!(s.load(&["b"]), Err(StoreError::Corrupt { reason, .. }) if reason == "another key")
        );
        assert!(matches!(s.load(&["../x"]), Err(StoreError::Key { .. })));
        let q = s.quarantine(&["a"], &dir.path().join("q")).unwrap();
        assert!(q.exists() && !dir.path().join("a.json").exists());
    }

    #[test]
    fn stale_temps_and_empty_dirs_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let s: RecordStore<Rec> = RecordStore::new(
            dir.path(),
            Layout::Nested {
                depth: 1,
                file: "rec.json",
            },
        );
        s.persist(&["v"], &rec("v")).unwrap();
        let vdir = dir.path().join("v");
        std::fs::write(vdir.join(format!("{}x", durable::TEMP_PREFIX)), b"torn").unwrap();
        std::fs::create_dir(dir.path().join("w")).unwrap();
        std::fs::write(
            dir.path()
                .join("w")
                .join(format!("{}y", durable::TEMP_PREFIX)),
            b"",
        )
        .unwrap();
        assert_eq!(s.list_empty().unwrap(), vec![vec!["w".to_owned()]]);
        assert!(s.sweep(&["w"]).unwrap());
        assert!(!s.sweep(&["v"]).unwrap());
        assert_eq!(s.remove_stale_temps(), 1);
        assert_eq!(s.list().unwrap(), vec![vec!["v".to_owned()]]);
        // A flat store lists only its records, never temp files.
        let f: RecordStore<Rec> =
            RecordStore::new(dir.path().join("f"), Layout::Flat { suffix: ".json" })
                .unsynced_removal();
        f.persist(&["c1"], &rec("c1")).unwrap();
        std::fs::write(
            dir.path()
                .join("f")
                .join(format!("{}z.json", durable::TEMP_PREFIX)),
            b"",
        )
        .unwrap();
        assert_eq!(f.list().unwrap(), vec![vec!["c1".to_owned()]]);
        assert_eq!(f.remove_stale_temps(), 1);
        f.remove(&["c1"]).unwrap();
        assert!(f.list().unwrap().is_empty());
    }

    #[test]
    fn lock_entries_go_with_their_last_holder() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let locks = KeyLocks::default();
            let g = locks.lock(&["a"]).await;
            let h = locks.lock(&["b"]).await;
            assert_eq!(locks.in_use(), 2);
            drop(g);
            assert_eq!(locks.in_use(), 1);
            drop(h);
            assert_eq!(locks.in_use(), 0);
        });
    }
}
