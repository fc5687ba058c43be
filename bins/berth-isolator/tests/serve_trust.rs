//! `berth-isolator serve` as a root service that trusts no caller, through the real binary:
//! the socket's mode whatever the umask, peers checked by `SO_PEERCRED` (a client running as
//! uid 65534 is refused, admitted only by `--socket-group` or `--allow-uid`), a live socket
//! or a regular file at the path never replaced, and a hung filesystem that stalls only the
//! container using it while `Ping`, other containers and `/metrics` go on and SIGTERM still
//! stops the server within its grace period.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_proto::berth::v1 as pb;
use berth_testkit::fuse::HungFuse;
use berth_testkit::{Ns, privileged};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");
/// The environment variable that turns [`peer_client_entry`] into a client.
const CLIENT_ENV: &str = "BERTH_TEST_PEER_SOCKET";
const NOBODY: u32 = 65534;

/// Waits until a server accepts on `path` (a stale file there does not count).
fn wait_for(path: &Path) {
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn client(sock: PathBuf) -> pb::isolator_client::IsolatorClient<tonic::transport::Channel> {
    pb::isolator_client::IsolatorClient::new(berth_testkit::unix_channel(sock).await)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The client half of the peer tests: run (as another user) by [`as_nobody`] through this
/// test binary; prints one line saying how a `Ping` went. Without its variable it is a no-op,
/// which is why it is ignored in normal runs.
#[test]
#[ignore = "a client process started by the peer tests, not a test of its own"]
fn peer_client_entry() {
    let Some(sock) = std::env::var_os(CLIENT_ENV) else {
        return;
    };
    let sock = PathBuf::from(sock);
    let line = rt().block_on(async move {
        let stream = match tokio::net::UnixStream::connect(&sock).await {
            Ok(s) => s,
            Err(e) => return format!("CONNECT {:?}", e.kind()),
        };
        drop(stream);
        match client(sock).await.ping(pb::PingRequest {}).await {
            Ok(_) => "PING ok".to_owned(),
            Err(s) => format!("PING {:?}", s.code()),
        }
    });
    println!("RESULT {line}");
}

/// Pings `sock` from a process running as uid and gid 65534 (nobody): its `RESULT` line.
fn as_nobody(sock: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "peer_client_entry",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLIENT_ENV, sock)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| panic!("no result from the client: {out:?}"))
}

fn ping_as_root(sock: &Path) -> Result<(), tonic::Status> {
    let sock = sock.to_owned();
    rt().block_on(async move { client(sock).await.ping(pb::PingRequest {}).await.map(drop) })
}

/// Starts `serve` in `ns` on `sock` with `extra` flags; its pid.
fn serve(ns: &mut Ns, work: &Path, sock: &Path, extra: &[String]) -> u32 {
    let mut cmd = Command::new(BIN);
    cmd.arg(format!("--work-dir={}", work.display()))
        .arg("serve")
        .arg(format!("--listen=unix:{}", sock.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let pid = ns.spawn(cmd);
    wait_for(sock);
    pid
}

fn sigterm_and_wait(ns: &mut Ns, pid: u32, within: Duration) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let index = ns
        .children
        .iter()
        .position(|c| c.id() == pid)
        .expect("a child of ns");
    let mut child = ns.children.remove(index);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < within,
            "serve did not stop within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn open_dir(root: &Path) {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_socket_is_private_whatever_the_umask_and_peers_are_checked() {
    if !privileged("the_socket_is_private_whatever_the_umask_and_peers_are_checked") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    open_dir(&root);
    let mut ns = Ns::new();
    let sock = root.join("isolator.sock");

    // Started under umask 000: the socket is still 0600.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let mut cmd = Command::new(BIN);
    cmd.arg(format!("--work-dir={}", root.join("work").display()))
        .arg("serve")
        .arg(format!("--listen=unix:{}", sock.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let first = ns.spawn(cmd);
    nix::sys::stat::umask(old);
    wait_for(&sock);
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode under umask 000");
    assert_eq!(meta.uid(), 0);
    ping_as_root(&sock).unwrap();

    // uid 65534 cannot even connect to a 0600 socket...
    assert_eq!(as_nobody(&sock), "CONNECT PermissionDenied");
    // ...and when the mode is widened by mistake, the peer check still refuses it.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(as_nobody(&sock), "PING PermissionDenied");

    // A second server on the same path is refused while the first serves; the first goes on.
    let second = ns.output({
        let mut c = Command::new(BIN);
        c.arg(format!("--work-dir={}", root.join("work2").display()))
            .arg("serve")
            .arg(format!("--listen=unix:{}", sock.display()));
        c
    });
    assert!(!second.status.success(), "{second:?}");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another server is listening"),
        "{second:?}"
    );
    ping_as_root(&sock).unwrap();

    // A regular file at the path is refused and left as it was.
    let file = root.join("not-a-socket");
    std::fs::write(&file, b"operator's file").unwrap();
    let refused = ns.output({
        let mut c = Command::new(BIN);
        c.arg(format!("--work-dir={}", root.join("work3").display()))
            .arg("serve")
            .arg(format!("--listen=unix:{}", file.display()));
        c
    });
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not a socket"),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"operator's file");

    let status = sigterm_and_wait(&mut ns, first, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket is removed on shutdown");

    // A stale socket (its server gone) is replaced; --allow-uid admits uid 65534.
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale);
    assert!(sock.exists());
    let allowed = serve(
        &mut ns,
        &root.join("work"),
        &sock,
        &[format!("--allow-uid={NOBODY}")],
    );
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(as_nobody(&sock), "PING ok");
    assert!(sigterm_and_wait(&mut ns, allowed, Duration::from_secs(20)).success());

    // --socket-group: a missing directory is created 0750 with the group, the socket 0660
    // with the group, and the group's peers are admitted.
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(NOBODY))
        .unwrap()
        .expect("a group with gid 65534 (nogroup)");
    let gsock = root.join("run/berth/isolator.sock");
    let grouped = serve(
        &mut ns,
        &root.join("work"),
        &gsock,
        &[format!("--socket-group={}", group.name)],
    );
    let smeta = std::fs::metadata(&gsock).unwrap();
    assert_eq!(smeta.mode() & 0o777, 0o660);
    assert_eq!(smeta.gid(), NOBODY);
    let dmeta = std::fs::metadata(gsock.parent().unwrap()).unwrap();
    assert_eq!(dmeta.mode() & 0o777, 0o750);
    assert_eq!(dmeta.gid(), NOBODY);
    assert_eq!(as_nobody(&gsock), "PING ok");
    assert!(sigterm_and_wait(&mut ns, grouped, Duration::from_secs(20)).success());
}

fn sandbox_path_volume(name: &str) -> berth_resources::proto::Volume {
    berth_resources::json::from_json_value(&json!({
        "container_path": name,
        "mode": "RW",
        "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": name}}
    }))
    .unwrap()
}

fn host_path_volume(path: &Path) -> berth_resources::proto::Volume {
    berth_resources::json::from_json_value(&json!({
        "container_path": "data",
        "mode": "RW",
        "source": {"type": "HOST_PATH", "host_path": {"path": path.display().to_string()}}
    }))
    .unwrap()
}

async fn get_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).await.unwrap();
    text
}

#[test]
fn a_hung_filesystem_stalls_only_the_container_that_uses_it() {
    if !privileged("a_hung_filesystem_stalls_only_the_container_that_uses_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut ns = Ns::new();
    let hung = root.join("hung");
    std::fs::create_dir_all(&hung).unwrap();
    let fuse = {
        let hung = hung.clone();
        ns.run(move || HungFuse::mount(&hung).unwrap())
    };
    let work = root.join("work");
    let sock = root.join("isolator.sock");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pid = serve(
        &mut ns,
        &work,
        &sock,
        &[format!("--metrics={port}"), "--shutdown-grace=2".to_owned()],
    );
    for sb in ["sb-stuck", "sb-free"] {
        std::fs::create_dir_all(root.join(sb)).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Container "stuck" uses a host path on the hung filesystem: its prepare never returns.
    let stuck = {
        let sock = sock.clone();
        let req = pb::PrepareRequest {
            container_id: "stuck".into(),
            sandbox: root.join("sb-stuck").display().to_string(),
            volumes: vec![host_path_volume(&hung.join("data"))],
            ..Default::default()
        };
        rt.spawn(async move { client(sock).await.prepare(req).await })
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!stuck.is_finished(), "the hung filesystem answered");

    let bound = Duration::from_secs(1);
    let sb_free = root.join("sb-free");
    rt.block_on(async {
        let mut c = client(sock.clone()).await;
        tokio::time::timeout(bound, c.ping(pb::PingRequest {}))
            .await
            .expect("Ping within 1 s while a call hangs")
            .unwrap();
        let prepared = tokio::time::timeout(
            bound,
            c.prepare(pb::PrepareRequest {
                container_id: "free".into(),
                sandbox: sb_free.display().to_string(),
                volumes: vec![sandbox_path_volume("scratch")],
                ..Default::default()
            }),
        )
        .await
        .expect("another container's prepare within 1 s")
        .unwrap()
        .into_inner();
        assert_eq!(prepared.mounts.len(), 1);
        let metrics = tokio::time::timeout(bound, get_metrics(port))
            .await
            .expect("/metrics within 1 s");
        assert!(
            metrics
                .contains("berth_isolator_operations_total{operation=\"prepare\",result=\"ok\"} 1"),
            "{metrics}"
        );
        tokio::time::timeout(
            bound,
            c.cleanup(pb::CleanupRequest {
                container_id: "free".into(),
                ..Default::default()
            }),
        )
        .await
        .expect("another container's cleanup within 1 s")
        .unwrap();
    });
    assert!(
        ns.mounts_below(&sb_free).is_empty(),
        "the free container's volume is unmounted"
    );

    // SIGTERM with a call still hung: the server stops after its 2 s grace period anyway.
    let status = sigterm_and_wait(&mut ns, pid, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "the socket is removed on shutdown");
    let answer = rt.block_on(stuck).unwrap();
    assert!(answer.is_err(), "the hung prepare cannot have succeeded");

    // The records are consistent: a new server starts, and no container is left behind.
    let again = serve(&mut ns, &work, &sock, &[]);
    let st = rt.block_on(async {
        client(sock.clone())
            .await
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    assert!(st.containers.is_empty(), "{st:?}");
    assert!(sigterm_and_wait(&mut ns, again, Duration::from_secs(20)).success());
    ns.run(move || drop(fuse));
}
