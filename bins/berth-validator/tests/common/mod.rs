//! Helpers shared by the `serve` test binaries: a temp dir, a `berth-validator serve` process,
//! a client runtime and channel.

#![allow(dead_code, clippy::panic, clippy::unwrap_used, clippy::expect_used)] // not every binary uses every helper; setup errors abort

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use berth_proto::berth::v1::validator_client::ValidatorClient;
use tonic::transport::Channel;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "berth-serve-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `berth-validator serve`, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// The address from its `listening on ...` line.
    pub(crate) address: String,
}

impl Server {
    pub(crate) fn start(listen: &str) -> Server {
        Server::start_with(listen, &[])
    }

    /// `serve --listen LISTEN` with more arguments.
    pub(crate) fn start_with(listen: &str, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth-validator"))
            .args(["serve", "--listen", listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Some(address) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("server did not start: stdout {line:?}, stderr {err:?}");
        };
        Server {
            address: address.to_owned(),
            child,
        }
    }

    pub(crate) fn signal(&self, name: &str) {
        use nix::sys::signal::{Signal, kill};
        let signal = match name {
            "TERM" => Signal::SIGTERM,
            "INT" => Signal::SIGINT,
            other => panic!("unknown signal {other}"),
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        kill(pid, signal).unwrap();
    }

    pub(crate) fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server still running");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to completion: (exit code, stderr).
pub(crate) fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub(crate) async fn connect(address: &str) -> ValidatorClient<Channel> {
    // `unix:PATH` is understood by tonic as is; TCP needs a scheme.
    let uri = match address.strip_prefix("tcp:") {
        Some(addr) => format!("http://{addr}"),
        None => address.to_owned(),
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    ValidatorClient::new(channel)
}
