//! Helpers shared by berth's privileged test tiers. A dev-dependency only: no library or
//! binary of berth links it.
//!
//! - [`privileged`]: the skip rule of every root-only test — run as root; otherwise print a
//!   skip, except under `CI=true`, where a privileged test must run and fails instead.
//! - [`in_ns`]: an async test body on a current-thread runtime on a dedicated thread inside a
//!   new private mount namespace, so the mounts it makes (and those of processes it spawns)
//!   vanish with it.
//! - [`Ns`]: a long-lived namespace thread that runs jobs and starts processes in it.
//! - [`mounts_below`]: the mount points at or below a path in the calling thread's namespace.
//! - [`peers_dir`] / [`peer_or_skip`]: where `scripts/install-peers.sh` put the real plugins,
//!   and the skip rule for them (`BERTH_REQUIRE_PEERS=1` turns a skip into a failure).
//! - [`csi`]: a CSI node plugin for raw block volumes (loop devices), with `NodeExpandVolume`.
//! - [`task`]: a task's file access as another user with supplementary groups.
//! - [`fuse`]: a FUSE filesystem that never answers (a hung server), for liveness tests.
//! - [`vm`]: running a binary in a VM whose kernel has project quotas, and quota-enabled
//!   test filesystems.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::mpsc;

pub mod csi;
pub mod fuse;
pub mod task;
pub mod vm;

/// Whether a root-only test may run: root, or a printed skip — except under `CI=true`, where
/// the test fails loudly instead of skipping.
///
/// # Panics
/// Not root under `CI=true`.
#[must_use]
pub fn privileged(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "{test}: needs root and CI=true: refusing to skip"
    );
    eprintln!("SKIPPED {test}: needs root (real mounts in a private mount namespace)");
    false
}

/// Runs `f` on a current-thread runtime on a dedicated thread inside a new private mount
/// namespace; a panic in `f` fails the caller with its message.
///
/// # Panics
/// When the namespace cannot be made, or `f` panics.
pub fn in_ns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    berth_mount::ns::in_private_mount_namespace(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    })
    .unwrap();
}

/// Mount points at or below `path` in the calling thread's mount namespace.
///
/// # Panics
/// When mountinfo cannot be read.
#[must_use]
pub fn mounts_below(path: &Path) -> Vec<PathBuf> {
    berth_mount::MountTable::read_current()
        .unwrap()
        .mounts_at_or_below(path)
        .map(|e| e.mount_point().to_path_buf())
        .collect()
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread in a private mount namespace that runs jobs; processes started from it share the
/// namespace. Dropping it kills the processes it started, and the namespace goes with them.
#[derive(Debug)]
pub struct Ns {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The processes started with [`Ns::spawn`].
    pub children: Vec<Child>,
}

impl Default for Ns {
    fn default() -> Self {
        Self::new()
    }
}

impl Ns {
    /// A new namespace thread.
    ///
    /// # Panics
    /// When the namespace cannot be made.
    #[must_use]
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ok_tx, ok_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            ok_tx
                .send(berth_mount::ns::enter_private_mount_namespace().map_err(|e| e.to_string()))
                .unwrap();
            for job in rx {
                job();
            }
        });
        ok_rx.recv().unwrap().expect("private mount namespace");
        Self {
            tx: Some(tx),
            thread: Some(thread),
            children: Vec::new(),
        }
    }

    /// Runs `f` on the namespace thread; its panic is resumed here.
    ///
    /// # Panics
    /// When `f` panics.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
            }))
            .unwrap();
        match rx.recv().unwrap() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Starts a process in the namespace (killed when the namespace is dropped); its pid.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn spawn(&mut self, mut cmd: Command) -> u32 {
        let child = self.run(move || cmd.spawn().expect("spawn"));
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Runs a command to completion in the namespace.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn output(&self, mut cmd: Command) -> Output {
        self.run(move || cmd.output().expect("run"))
    }

    /// [`mounts_below`] in the namespace.
    #[must_use]
    pub fn mounts_below(&self, path: &Path) -> Vec<PathBuf> {
        let path = path.to_owned();
        self.run(move || mounts_below(&path))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where `scripts/install-peers.sh` installs the real plugins (`BERTH_PEERS_DIR`, default
/// `/opt/berth-peers`).
#[must_use]
pub fn peers_dir() -> PathBuf {
    std::env::var_os("BERTH_PEERS_DIR")
        .map_or_else(|| PathBuf::from("/opt/berth-peers"), PathBuf::from)
}

/// `true` when every peer requirement holds; otherwise a printed skip, or a failure under
/// `BERTH_REQUIRE_PEERS=1` (CI, after the install) naming what is missing.
///
/// # Panics
/// A requirement missing under `BERTH_REQUIRE_PEERS=1`.
#[must_use]
pub fn peer_or_skip(test: &str, requirements: &[(&str, bool)]) -> bool {
    let missing: Vec<&str> = requirements
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("BERTH_REQUIRE_PEERS").as_deref() != Ok("1"),
        "{test}: BERTH_REQUIRE_PEERS=1 but missing: {missing:?} (run scripts/install-peers.sh)"
    );
    eprintln!("SKIPPED {test}: missing {missing:?} (scripts/install-peers.sh)");
    false
}

/// A gRPC channel to a server on the unix socket at `path` (authority `localhost`), connected
/// now.
///
/// # Panics
/// The socket does not accept the connection.
pub async fn unix_channel(path: impl Into<PathBuf>) -> tonic::transport::Channel {
    let path = path.into();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

/// A `berth-isolator status --json` without its `disk_isolation` (which depends on the
/// machine's filesystem): `{"containers", "leftovers"}`.
#[must_use]
pub fn status_parts(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"containers": v["containers"], "leftovers": v["leftovers"]})
}
