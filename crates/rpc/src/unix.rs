//! A unix socket bound safely for a root service.
//!
//! [`BoundSocket::bind`] creates the socket's directory 0750 when it is missing (with the
//! group, when one is given), refuses a path that holds anything but a socket, probes a socket
//! file for a live server (refused: "another server is listening") and replaces one nobody
//! accepts on (a server that died), then binds under a umask of 0177, so the socket is never
//! reachable beyond 0600 even for an instant, and opens it to 0660 for the group when one is
//! given. containerd and Docker create theirs the same way (0660 with a configured group).
//! Dropping the [`BoundSocket`]'s file removes the path only if it is still the very file
//! bound (device and inode), never a successor's.

use std::io::ErrorKind;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::Gid;

/// How long probing an existing socket file for a live server may take.
pub const PROBE: Duration = Duration::from_secs(1);

/// Why a socket cannot be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A filesystem step failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The error (with its errno).
        #[source]
        source: std::io::Error,
    },
    /// Changing an owner or mode failed.
    #[error("{step} {}: {errno}", path.display())]
    Sys {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: PathBuf,
        /// The errno.
        errno: nix::Error,
    },
    /// The path holds something that is not a socket: it is never replaced.
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// A server accepts connections on the socket at the path.
    #[error(
        "another server is listening on {}; stop it or choose another path",
        path.display()
    )]
    Live {
        /// The path.
        path: PathBuf,
    },
    /// A group named by the configuration does not exist.
    #[error("no group named '{name}'")]
    NoSuchGroup {
        /// The name.
        name: String,
    },
    /// Looking a group up failed.
    #[error("looking up group '{name}': {errno}")]
    GroupLookup {
        /// The name.
        name: String,
        /// The errno.
        errno: nix::Error,
    },
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SocketError {
    let path = path.to_owned();
    move |source| SocketError::Io { step, path, source }
}

fn sys(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SocketError {
    let path = path.to_owned();
    move |errno| SocketError::Sys { step, path, errno }
}

/// The gid of group `name`.
///
/// # Errors
/// [`SocketError::NoSuchGroup`], [`SocketError::GroupLookup`].
pub fn group_gid(name: &str) -> Result<Gid, SocketError> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(SocketError::NoSuchGroup {
            name: name.to_owned(),
        }),
        Err(errno) => Err(SocketError::GroupLookup {
            name: name.to_owned(),
            errno,
        }),
    }
}

/// A bound listening socket and the file it made.
#[derive(Debug)]
pub struct BoundSocket {
    /// The listener.
    pub listener: tokio::net::UnixListener,
    /// The socket file (removed when dropped, if still ours).
    pub file: SocketFile,
}

impl BoundSocket {
    /// Binds `path` as the module docs say: 0600, or 0660 with `group` as its group. Must run
    /// inside a tokio runtime with I/O and time enabled.
    ///
    /// # Errors
    /// The path holds something else or a live server ([`SocketError::NotASocket`],
    /// [`SocketError::Live`]), or a filesystem step fails.
    pub async fn bind(path: &Path, group: Option<Gid>) -> Result<BoundSocket, SocketError> {
        create_dir(path, group)?;
        clear_stale(path).await?;
        let listener = bind_restricted(path, group)?;
        let file = SocketFile::of(path)?;
        Ok(BoundSocket { listener, file })
    }
}

/// Creates the socket's directory when it is missing: every directory created is 0750 and,
/// with `group`, that group's, so the group can reach the socket and nobody else can.
fn create_dir(path: &Path, group: Option<Gid>) -> Result<(), SocketError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o750).create(d) {
            Ok(()) => {}
            // Made by someone else meanwhile: theirs, left as it is.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("creating", d)(e)),
        }
        // The umask may have taken bits away; 0750 is what is meant.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750))
            .map_err(io("setting the mode of", d))?;
        if let Some(gid) = group {
            nix::unistd::chown(d, None, Some(gid)).map_err(sys("giving its group to", d))?;
        }
    }
    Ok(())
}

/// Binds under a umask of 0177 (never beyond 0600), then opens the socket to `group`.
fn bind_restricted(
    path: &Path,
    group: Option<Gid>,
) -> Result<tokio::net::UnixListener, SocketError> {
    use nix::sys::stat::{Mode, umask};
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = tokio::net::UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(io("binding", path))?;
    // Whatever the umask was, the mode is set explicitly.
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid)).map_err(sys("giving its group to", path))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("setting the mode of", path))?;
    Ok(listener)
}

/// Refuses a path that is not a socket or that a live server accepts on; removes a socket
/// file nobody accepts on.
async fn clear_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("inspecting", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_owned(),
        });
    }
    match tokio::time::timeout(PROBE, tokio::net::UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(io("removing the stale socket", path))?;
            tracing::info!(path = %path.display(), "removed a stale socket");
            Ok(())
        }
        // Connected, or a backlog so full that connect hangs: somebody serves there.
        Ok(Ok(_)) | Err(_) => Err(SocketError::Live {
            path: path.to_owned(),
        }),
        Ok(Err(e)) => Err(io("probing the existing socket", path)(e)),
    }
}

/// The socket file a server bound; removed on drop if the path still holds that very file.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &Path) -> Result<SocketFile, SocketError> {
        let meta =
            std::fs::symlink_metadata(path).map_err(io("inspecting the bound socket", path))?;
        Ok(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the socket");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn bound_0600_under_any_umask_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/deeper/s.sock");
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let bound = rt().block_on(BoundSocket::bind(&path, None));
        nix::sys::stat::umask(old);
        let bound = bound.unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        for d in [path.parent().unwrap(), &dir.path().join("sub")] {
            assert_eq!(std::fs::metadata(d).unwrap().mode() & 0o777, 0o750);
        }
        drop(bound);
        assert!(!path.exists());
    }

    #[test]
    fn group_socket_is_0660_with_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let gid = nix::unistd::getegid();
        let _bound = rt().block_on(BoundSocket::bind(&path, Some(gid))).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid.as_raw());
    }

    #[test]
    fn live_refused_stale_replaced_other_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let path = dir.path().join("s.sock");
        let first = rt.block_on(BoundSocket::bind(&path, None)).unwrap();
        let second = rt.block_on(BoundSocket::bind(&path, None)).unwrap_err();
        assert!(matches!(second, SocketError::Live { .. }), "{second}");
        // The refused attempt left the live server's socket alone.
        assert!(rt.block_on(tokio::net::UnixStream::connect(&path)).is_ok());
        // A dead server's socket file (listener closed, file left) is replaced.
        let BoundSocket { listener, file } = first;
        drop(listener);
        std::mem::forget(file);
        let again = rt.block_on(BoundSocket::bind(&path, None)).unwrap();
        drop(again);
        // A regular file is never deleted.
        let regular = dir.path().join("file.sock");
        std::fs::write(&regular, b"keep").unwrap();
        let e = rt.block_on(BoundSocket::bind(&regular, None)).unwrap_err();
        assert!(matches!(e, SocketError::NotASocket { .. }), "{e}");
        assert_eq!(std::fs::read(&regular).unwrap(), b"keep");
    }

    #[test]
    fn a_successor_socket_is_not_removed_by_the_predecessor() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let path = dir.path().join("s.sock");
        let first = rt.block_on(BoundSocket::bind(&path, None)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let second = rt.block_on(BoundSocket::bind(&path, None)).unwrap();
        drop(first);
        assert!(path.exists(), "the successor's socket stays");
        drop(second);
        assert!(!path.exists());
    }

    #[test]
    fn unknown_group_is_a_typed_error() {
        let e = group_gid("berth-no-such-group-x").unwrap_err();
        assert!(matches!(e, SocketError::NoSuchGroup { .. }), "{e}");
    }
}
