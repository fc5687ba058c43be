//! The work directory's lock: one process acts on a work directory at a time.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::AgentError;

/// Takes an exclusive lock on `<work_dir>/.lock`, waiting up to `wait` for another holder
/// (a one-shot command, or a server) to let go.
pub(super) async fn lock_work_dir(
    work_dir: &Path,
    wait: Duration,
) -> Result<Flock<std::fs::File>, AgentError> {
    let lock_path = work_dir.join(".lock");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|source| AgentError::WorkDir {
            step: "open",
            path: lock_path.clone(),
            source,
        })?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) if tokio::time::Instant::now() < deadline => {
                file = f;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err((_, errno)) => {
                return Err(AgentError::Locked {
                    work_dir: work_dir.to_path_buf(),
                    lock: lock_path,
                    errno,
                    waited: wait,
                });
            }
        }
    }
}
