//! Faults never stop the agent, through the `berth-isolator` binary as root in a private mount
//! namespace: a DESTROY whose data cannot be removed (immutable files and a 100,000-deep
//! directory chain on an XFS loop device) answers success and the volume is gone at once;
//! `serve` starts over the leftover and reports it (gRPC `Status`, `/metrics`); `gc --dry-run`
//! lists it and removes nothing; after `chattr -i`, `gc` removes it; nothing outside the
//! volume changes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_testkit::{Ns, privileged};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");
const DEPTH: usize = 100_000;

fn run(ns: &Ns, args: &[String]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    ns.output(cmd)
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "berth-isolator failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn volume(id: &str) -> Value {
    json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": 64},
        "reservations": [{"type": "STATIC", "role": "db"}],
        "disk": {"persistence": {"id": id, "principal": "p"},
                 "volume": {"mode": "RW", "container_path": "data"}}
    })
}

fn chattr(flag: &str, path: &Path) {
    let out = Command::new(berth_testkit::vm::tool("chattr"))
        .arg(flag)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chattr {flag} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every entry below `root` with its content, without following symlinks.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                todo.push(p.clone());
                out.insert(p, None);
            } else {
                out.insert(p.clone(), Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// A 100,000-deep chain with an immutable file at the bottom and one at the top; the bottom
/// file's path through this process's descriptor of its directory, and the descriptor.
fn poison(v: &Path) -> (PathBuf, OwnedFd) {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut cur: OwnedFd = nix::fcntl::open(v, flags, Mode::empty()).unwrap();
    for i in 0..DEPTH {
        let name = if i == 0 { "chain" } else { "d" };
        mkdirat(&cur, name, Mode::from_bits_truncate(0o755)).unwrap();
        cur = openat(&cur, name, flags, Mode::empty()).unwrap();
    }
    let file = openat(
        &cur,
        "immutable",
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    nix::unistd::write(&file, b"bottom").unwrap();
    drop(file);
    let bottom = PathBuf::from(format!(
        "/proc/{}/fd/{}/immutable",
        std::process::id(),
        cur.as_raw_fd()
    ));
    chattr("+i", &bottom);
    std::fs::create_dir_all(v.join("locked")).unwrap();
    std::fs::write(v.join("locked/immutable"), b"cannot go").unwrap();
    chattr("+i", &v.join("locked/immutable"));
    (bottom, cur)
}

fn wait_for(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{} never appeared", path.display());
}

fn grpc_status(ns: &Ns, sock: &Path) -> berth_proto::berth::v1::StatusResponse {
    let sock = sock.to_path_buf();
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                use berth_proto::berth::v1 as pb;
                let channel = berth_testkit::unix_channel(sock.clone()).await;
                let mut c = pb::isolator_client::IsolatorClient::new(channel);
                c.status(pb::StatusRequest {}).await.unwrap().into_inner()
            })
    })
}

fn metrics(port: u16) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut conn, &mut text).unwrap();
    text
}

#[test]
fn a_poisoned_destroy_answers_serve_starts_and_gc_removes_the_leftover() {
    if !privileged("a_poisoned_destroy_answers_serve_starts_and_gc_removes_the_leftover") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let mut ns = Ns::new();
    let fs = root.join("fs");
    let (image_dir, target) = (root.clone(), fs.clone());
    let _dev = ns.run(move || {
        let dev = berth_testkit::vm::quota_fs(&image_dir, "xfs", 512);
        std::fs::create_dir_all(&target).unwrap();
        nix::mount::mount(
            Some(dev.path()),
            &target,
            Some("xfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        dev
    });
    let work = fs.join("work");
    let global = vec![
        format!("--work-dir={}", work.display()),
        "--resources=disk(db):1024".to_owned(),
    ];
    let cmd = |args: &[&str]| -> Vec<String> {
        let mut all = global.clone();
        all.extend(args.iter().map(|s| (*s).to_owned()));
        all
    };
    let write = |name: &str, v: &Value| -> String {
        let p = root.join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.display().to_string()
    };
    let create = write(
        "create.json",
        &json!({"type": "CREATE", "create": {"volumes": [volume("v1"), volume("v2")]}}),
    );
    let _ = ok(&run(
        &ns,
        &cmd(&["apply-operation", "--operation", &create]),
    ));
    let v1 = work.join("volumes/roles/db/v1");
    let v2 = work.join("volumes/roles/db/v2");
    let (p1, p2, w) = (v1.clone(), v2.clone(), work.clone());
    let (bottom, deepest, before) = ns.run(move || {
        let (bottom, deepest) = poison(&p1);
        std::fs::write(p2.join("sibling.txt"), b"keep me").unwrap();
        std::fs::create_dir_all(w.join("volumes/trash")).unwrap();
        std::fs::write(w.join("volumes/beside-trash.txt"), b"keep me too").unwrap();
        let mut before = snapshot(&p2);
        before.insert(
            w.join("volumes/beside-trash.txt"),
            Some(std::fs::read(w.join("volumes/beside-trash.txt")).unwrap()),
        );
        (bottom, deepest, before)
    });

    // DESTROY answers success; the volume is gone from the resources at once.
    let destroy = write(
        "destroy.json",
        &json!({"type": "DESTROY", "destroy": {"volumes": [volume("v1")]}}),
    );
    let out = ok(&run(
        &ns,
        &cmd(&["apply-operation", "--operation", &destroy]),
    ));
    let ids = |v: &Value| -> Vec<String> {
        v["checkpointed"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["disk"]["persistence"]["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(ids(&out), ["v2"], "{out}");
    assert_eq!(ids(&ok(&run(&ns, &cmd(&["resources"])))), ["v2"]);
    let status = ok(&run(&ns, &cmd(&["status", "--json"])));
    assert_eq!(status["containers"], json!([]), "{status}");
    let leftovers = status["leftovers"].as_array().unwrap();
    assert_eq!(leftovers.len(), 1, "{status}");
    let left = PathBuf::from(leftovers[0]["path"].as_str().unwrap());
    assert!(
        left.starts_with(work.join("volumes/trash/roles/db")),
        "{status}"
    );
    assert_eq!(leftovers[0]["volume"], json!(v1), "{status}");
    assert_eq!(leftovers[0]["attempts"], 1, "{status}");
    let text = run(&ns, &cmd(&["status"]));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("leftovers of destroyed volumes (1;"),
        "{text:?}"
    );

    // serve starts over the leftover, serves, and reports it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sock = root.join("isolator.sock");
    let mut serve = Command::new(BIN);
    serve
        .args(cmd(&[
            "serve",
            &format!("--listen=unix:{}", sock.display()),
            &format!("--metrics=127.0.0.1:{port}"),
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let pid = ns.spawn(serve);
    wait_for(&sock);
    let st = grpc_status(&ns, &sock);
    assert!(st.containers.is_empty());
    let [l] = st.leftovers.as_slice() else {
        panic!("{st:?}")
    };
    assert_eq!(Path::new(&l.path), left);
    assert_eq!(l.id, "v1");
    assert_eq!(l.origin, "destroy");
    assert!(l.attempts >= 1 && l.first_failure_unix > 0, "{l:?}");
    assert!(!l.last_error.is_empty());
    let text = metrics(port);
    assert!(text.contains("berth_destroyed_leftovers 1"), "{text}");
    assert!(
        text.contains(&format!(
            "berth_destroyed_leftover_attempts{{path=\"{}\"",
            left.display()
        )),
        "{text}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let code = ns.children.pop().unwrap().wait().unwrap();
    assert!(code.success(), "{code:?}");

    // gc --dry-run lists the leftover and removes nothing.
    let dry = ok(&run(&ns, &cmd(&["gc", "--dry-run", "--json"])));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["leftovers"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["removed"], json!([]), "{dry}");
    let l2 = left.clone();
    assert!(ns.run(move || l2.join("chain/d").is_dir() && l2.join("locked/immutable").exists()));

    // Still immutable: gc fails on it and says so.
    let failed = run(&ns, &cmd(&["gc"]));
    assert!(!failed.status.success(), "{failed:?}");
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("could not remove 1 entry"),
        "{failed:?}"
    );

    // After chattr -i, gc removes it all, the 100,000-deep chain included.
    let l3 = left.clone();
    ns.run(move || {
        chattr("-i", &l3.join("locked/immutable"));
        chattr("-i", &bottom);
        drop(deepest);
    });
    let done = ok(&run(&ns, &cmd(&["gc", "--json"])));
    assert_eq!(done["removed"], json!([left]), "{done}");
    assert_eq!(done["remaining"], json!([]), "{done}");
    let status = ok(&run(&ns, &cmd(&["status", "--json"])));
    assert_eq!(
        berth_testkit::status_parts(&status),
        json!({"containers": [], "leftovers": []})
    );

    // Nothing outside the volume was touched.
    let (l4, p2, w) = (left.clone(), v2.clone(), work.clone());
    let after = ns.run(move || {
        assert!(std::fs::symlink_metadata(&l4).is_err());
        let mut after = snapshot(&p2);
        after.insert(
            w.join("volumes/beside-trash.txt"),
            Some(std::fs::read(w.join("volumes/beside-trash.txt")).unwrap()),
        );
        after
    });
    assert_eq!(after, before);
    ns.run(move || {
        nix::mount::umount2(&fs, nix::mount::MntFlags::MNT_DETACH).unwrap();
    });
}

#[test]
fn gc_expires_retained_data_by_the_flag_and_lists_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let work = root.join("work");
    let run = |args: &[&str]| -> Output {
        Command::new(BIN)
            .arg(format!("--work-dir={}", work.display()))
            .arg("--resources=disk(db):1024")
            .args(args)
            .output()
            .unwrap()
    };
    let create = root.join("create.json");
    std::fs::write(
        &create,
        json!({"type": "CREATE", "create": {"volumes": [volume("v1")]}}).to_string(),
    )
    .unwrap();
    let destroy = root.join("destroy.json");
    std::fs::write(
        &destroy,
        json!({"type": "DESTROY", "destroy": {"volumes": [volume("v1")]}}).to_string(),
    )
    .unwrap();
    let _ = ok(&run(&[
        "apply-operation",
        "--operation",
        create.to_str().unwrap(),
    ]));
    let _ = ok(&run(&[
        "--retain-destroyed-data",
        "apply-operation",
        "--operation",
        destroy.to_str().unwrap(),
    ]));
    let retained = work.join("volumes/retained/roles/db");
    let recent = std::fs::read_dir(&retained)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let old = retained.join("v0.1000000000");
    std::fs::create_dir_all(old.join("nested")).unwrap();
    let orphan = work.join("volumes/roles/db/stale");
    std::fs::create_dir_all(&orphan).unwrap();

    // A malformed duration is a usage error.
    let bad = run(&["--retain-destroyed-data-for=7", "gc"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("a number without a unit"),
        "{bad:?}"
    );

    let dry = ok(&run(&[
        "--retain-destroyed-data-for=7d",
        "gc",
        "--dry-run",
        "--json",
    ]));
    assert_eq!(dry["expired"], json!([old]), "{dry}");
    assert_eq!(dry["orphans"], json!([orphan]), "{dry}");
    assert!(old.exists() && orphan.exists());
    let text = run(&["--retain-destroyed-data-for=7d", "gc", "--dry-run"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("dry run: nothing changed"), "{text}");
    assert!(text.contains("orphan volume directories: 1"), "{text}");

    let done = ok(&run(&["--retain-destroyed-data-for=7d", "gc", "--json"]));
    assert_eq!(done["failed"], json!([]), "{done}");
    assert!(!old.exists() && !orphan.exists());
    assert!(recent.is_dir(), "data retained just now stays");
}
