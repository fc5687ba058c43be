//! Durable file-system writes, the one way berth's records reach disk.
//!
//! [`write_atomic`]: temp file in the same directory, `fsync`, `rename`, `fsync` of the
//! directory — a crash leaves either the old or the new content, never a torn file.
//! [`create_dir_durable`]: missing directories created one by one, each parent fsync'd.
//! [`fsync_calls`] counts the `fsync`s made here, for benchmarks.

use std::io::Write;
use std::path::{Path, PathBuf};

static FSYNC_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many `fsync` calls this process made through this module (files and directories);
/// benchmarks report it per operation.
#[must_use]
pub fn fsync_calls() -> u64 {
    FSYNC_CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

fn sync(file: &std::fs::File) -> std::io::Result<()> {
    FSYNC_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    file.sync_all()
}

/// Fsyncs a directory (after a rename or unlink in it).
///
/// # Errors
/// The I/O error.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    sync(&std::fs::File::open(dir)?)
}

/// Writes `bytes` to `path` atomically and durably: temp file in the same directory,
/// `fsync`, `rename`, `fsync` of the directory. The directory must exist.
///
/// # Errors
/// The I/O error; on error `path` still holds its previous content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    sync(tmp.as_file())?;
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(dir)
}

/// Creates `dir` and its missing parents, fsyncing each parent whose entry list changed.
///
/// # Errors
/// The I/O error.
pub fn create_dir_durable(dir: &Path) -> std::io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d.to_owned());
        cur = d.parent();
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = d.parent() {
            fsync_dir(p)?;
        }
    }
    Ok(())
}

/// The prefix of [`write_atomic`]'s temporary files.
pub const TEMP_PREFIX: &str = ".berth-tmp.";

/// Removes the temporary files an interrupted [`write_atomic`] left in `dir` (a process killed
/// between creating its temp file and renaming it), then `dir` itself if it is then empty.
/// Returns whether `dir` is gone. Nothing but berth's own temp files is ever removed.
///
/// # Errors
/// The I/O error of listing `dir` or removing a temp file.
pub fn remove_dir_and_stale_temps(dir: &Path) -> std::io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX))
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(std::fs::remove_dir(dir).is_ok())
}
