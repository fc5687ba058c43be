//! Issue 19 items 1 and 2 through the `berth-isolator` binary, as root, in a private mount
//! namespace, with real task users (this test binary re-executed as `task_child` under
//! another uid and gid):
//!
//! - a pod: a parent container and two nested containers of different non-root users sharing
//!   a `PARENT` sandbox path, each reading and writing the other's files; the parent's cleanup
//!   refused (`FAILED_PRECONDITION` by gRPC, exit 1 on the command line) while a nested
//!   container holds a bind into its sandbox; recovery cleaning a dead pod's tasks first and
//!   keeping a dead pod whose task lives;
//! - `SECRET` volumes: `VALUE` and `--secret-dir` `REFERENCE` secrets, a read-only file of
//!   mode 0400 for the task's user, readable by no other user nor container, never in a
//!   record, a log line (at `trace`) or the status, gone after cleanup and after a SIGKILL at
//!   every write-ahead point of prepare and cleanup followed by `recover`; bad references
//!   refused with nothing changed.
//!
//! The two task users share the PARENT path through its own gid from `--volume-gid-range`:
//! prepare makes the directory `root:<gid>`, mode 2770, and returns the gid, which the tasks
//! run with as a supplementary group (a task without it is refused); the gid is recorded with
//! the pod and released at the pod's cleanup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_testkit::{Ns, privileged};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");

/// The two task users of the pod and their shared group.
const UID_A: u32 = 2001;
const UID_B: u32 = 2002;
const GROUP: u32 = 3000;
/// A user outside the group.
const UID_OTHER: u32 = 2003;

/// `--volume-gid-range` of the pod test: the shared path gets the first.
const GID_RANGE: &str = "--volume-gid-range=30000-30009";
const POD_GID: u32 = 30_000;

/// The child half of the task helpers ([`berth_testkit::task`]).
#[test]
fn task_child() {
    berth_testkit::task::child();
}

/// Runs `op` on `path` as `uid`:`gid` (no supplementary groups) in the namespace: the
/// content read (or empty), or the errno.
fn task(ns: &Ns, uid: u32, gid: u32, op: &str, path: &Path, data: &str) -> Result<String, i32> {
    let user = berth_testkit::task::TaskUser {
        uid,
        gid,
        groups: &[],
    };
    berth_testkit::task::run(user, op, path, data, |c| ns.output(c))
}

/// Runs `op` on `path` as `uid` (primary group `uid`) with the supplementary `groups`, as a
/// containerizer runs a task with the gids `prepare` returned.
fn task_in_groups(
    ns: &Ns,
    uid: u32,
    groups: &[u32],
    op: &str,
    path: &Path,
    data: &str,
) -> Result<String, i32> {
    let user = berth_testkit::task::TaskUser {
        uid,
        gid: uid,
        groups,
    };
    berth_testkit::task::run(user, op, path, data, |c| ns.output(c))
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
    ns: Ns,
    global: Vec<String>,
    /// Everything the binary wrote to stderr (at `RUST_LOG=trace`).
    logs: std::cell::RefCell<Vec<u8>>,
}

impl World {
    fn new(extra: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        // Task users must reach their sandboxes.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(root.join("configs")).unwrap();
        std::fs::set_permissions(root.join("configs"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        let mut global = vec![
            "--work-dir".to_owned(),
            root.join("work").display().to_string(),
        ];
        global.extend_from_slice(extra);
        Self {
            _dir: dir,
            root,
            ns: Ns::new(),
            global,
            logs: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.global)
            .args(args)
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.ns.output(self.command(args));
        self.logs.borrow_mut().extend_from_slice(&out.stderr);
        self.logs.borrow_mut().extend_from_slice(&out.stdout);
        out
    }

    /// Runs the binary with the failpoint at `n`; `true` when it was killed there.
    fn run_killed_at(&self, n: usize, args: &[&str]) -> bool {
        let mut cmd = self.command(args);
        cmd.env("BERTH_ISOLATOR_KILL_AT", n.to_string());
        let out = self.ns.output(cmd);
        self.logs.borrow_mut().extend_from_slice(&out.stderr);
        self.logs.borrow_mut().extend_from_slice(&out.stdout);
        match out.status.code() {
            Some(0) => false,
            None => true,
            Some(c) => panic!(
                "exit {c} at point {n} of {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// A config file (kept out of every directory the tests search for secrets).
    fn config(&self, name: &str, v: &Value) -> String {
        let p = self.root.join("configs").join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p.display().to_string()
    }

    fn sandbox(&self, name: &str, uid: u32, gid: u32) -> PathBuf {
        let s = self.root.join(name);
        std::fs::create_dir(&s).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        nix::unistd::chown(
            &s,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .unwrap();
        s
    }

    fn prepare(&self, id: &str, cfg: &Value) -> Value {
        let file = self.config(&format!("{id}.json"), cfg);
        ok(&self.run(&["prepare", "--container-id", id, "--config", &file]))
    }

    fn prepare_refused(&self, id: &str, cfg: &Value, says: &[&str]) {
        let file = self.config(&format!("{id}.json"), cfg);
        refused(
            &self.run(&["prepare", "--container-id", id, "--config", &file]),
            says,
        );
    }

    fn record(&self, id: &str) -> PathBuf {
        self.root.join(format!("work/containers/{id}.json"))
    }

    fn secrets_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!("work/containers-secrets/{id}"))
    }

    fn mounted(&self, p: &Path) -> bool {
        let p = p.to_owned();
        self.ns.run(move || {
            berth_mount::MountTable::read_current()
                .unwrap()
                .is_mount_point(&p)
        })
    }

    fn fs_type(&self, p: &Path) -> Option<String> {
        let p = p.to_owned();
        self.ns.run(move || {
            let t = berth_mount::MountTable::read_current().unwrap();
            t.top_mount_at(&p)
                .map(|e| e.fs_type().to_string_lossy().into_owned())
        })
    }

    fn assert_nothing_mounted(&self, what: &str) {
        let left = self.ns.mounts_below(&self.root);
        assert!(left.is_empty(), "{what}: mounts left: {left:?}");
    }

    fn status(&self) -> Value {
        berth_testkit::status_parts(&ok(&self.run(&["status", "--json"])))
    }
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

fn refused(out: &Output, says: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "stderr does not say {s:?}: {stderr}");
    }
}

fn parent_path(path: &str, container_path: &str) -> Value {
    json!({"mode": "RW", "container_path": container_path,
           "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": path}}})
}

fn value_secret(container_path: &str, value: &[u8]) -> Value {
    use base64::Engine as _;
    json!({"mode": "RO", "container_path": container_path,
           "source": {"type": "SECRET", "secret": {"type": "VALUE",
               "value": {"data": base64::engine::general_purpose::STANDARD.encode(value)}}}})
}

fn reference_secret(container_path: &str, name: &str, key: Option<&str>) -> Value {
    let mut reference = json!({"name": name});
    if let Some(k) = key {
        reference["key"] = json!(k);
    }
    json!({"mode": "RO", "container_path": container_path,
           "source": {"type": "SECRET", "secret": {"type": "REFERENCE", "reference": reference}}})
}

/// Every regular file under `dir` (not following symlinks).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                out.extend(walk_files(&e.path()));
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The files under `dirs` (read in the namespace, where the mounts are) holding `secret`.
fn files_with(ns: &Ns, dirs: &[PathBuf], secret: &[u8]) -> Vec<PathBuf> {
    let dirs = dirs.to_vec();
    let secret = secret.to_vec();
    ns.run(move || {
        dirs.iter()
            .flat_map(|d| walk_files(d))
            .filter(|f| std::fs::read(f).is_ok_and(|b| contains(&b, &secret)))
            .collect()
    })
}

#[test]
fn a_pods_tasks_share_a_parent_sandbox_path_and_the_pod_outlives_them() {
    if !privileged("a_pods_tasks_share_a_parent_sandbox_path_and_the_pod_outlives_them") {
        return;
    }
    let w = World::new(&[GID_RANGE.to_owned()]);
    // The pod (the executor's container): root's sandbox, no volumes of its own. The shared
    // path is made by the first task's prepare, with the pod's own gid.
    let pod = w.sandbox("sandbox-pod", 0, 0);
    let shared = pod.join("shared");
    let sa = w.sandbox("sandbox-a", UID_A, UID_A);
    let sb = w.sandbox("sandbox-b", UID_B, UID_B);
    let task_cfg = |id: &str, sandbox: &Path, parent: Value| {
        json!({"container_id": id, "sandbox": sandbox, "parent": parent,
               "volumes": [parent_path("shared", "shared")]})
    };

    // Before the pod is prepared, a task's PARENT path is refused, nothing written.
    w.prepare_refused(
        "task-a",
        &task_cfg("task-a", &sa, json!({"container_id": "pod"})),
        &["parent container pod", "not prepared on this agent"],
    );
    assert!(!w.record("task-a").exists());
    // Without a parent at all, too.
    w.prepare_refused(
        "task-a",
        &json!({"container_id": "task-a", "sandbox": sa, "volumes": [parent_path("shared", "shared")]}),
        &["sandbox path shared", "PARENT", "parent.container_id"],
    );
    let _ = w.prepare("pod", &json!({"container_id": "pod", "sandbox": pod}));
    // A parent sandbox other than the pod's is refused.
    w.prepare_refused(
        "task-a",
        &task_cfg("task-a", &sa, json!({"container_id": "pod", "sandbox": sb})),
        &["parent.sandbox", "was prepared with"],
    );
    assert!(!w.record("task-a").exists());
    assert!(w.ns.mounts_below(&sa).is_empty());

    let out = w.prepare(
        "task-a",
        &task_cfg(
            "task-a",
            &sa,
            json!({"container_id": "pod", "sandbox": pod}),
        ),
    );
    assert_eq!(
        out["mounts"][0]["target"],
        json!(sa.join("shared")),
        "{out}"
    );
    assert_eq!(out["mounts"][0]["source"], json!(shared), "{out}");
    // The path's own gid, which the task must run with.
    assert_eq!(out["supplementary_gids"], json!([POD_GID]), "{out}");
    let meta = std::fs::metadata(&shared).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o7777), (POD_GID, 0o2770));
    let out = w.prepare(
        "task-b",
        &task_cfg("task-b", &sb, json!({"container_id": "pod"})),
    );
    assert_eq!(
        out["supplementary_gids"],
        json!([POD_GID]),
        "the same gid: {out}"
    );
    assert!(w.mounted(&sa.join("shared")) && w.mounted(&sb.join("shared")));

    // Each task, running as its own user with the pod's gid as a supplementary group (what
    // prepare returned), writes through its own container path and reads the other's file;
    // B adds to A's file.
    let (a, b) = (sa.join("shared"), sb.join("shared"));
    let pod_groups = [POD_GID];
    task_in_groups(
        &w.ns,
        UID_A,
        &pod_groups,
        "write",
        &a.join("from-a"),
        "hello from a\n",
    )
    .unwrap();
    task_in_groups(
        &w.ns,
        UID_B,
        &pod_groups,
        "write",
        &b.join("from-b"),
        "hello from b\n",
    )
    .unwrap();
    assert_eq!(
        task_in_groups(&w.ns, UID_B, &pod_groups, "read", &b.join("from-a"), "").unwrap(),
        "hello from a\n"
    );
    assert_eq!(
        task_in_groups(&w.ns, UID_A, &pod_groups, "read", &a.join("from-b"), "").unwrap(),
        "hello from b\n"
    );
    task_in_groups(
        &w.ns,
        UID_B,
        &pod_groups,
        "append",
        &b.join("from-a"),
        "and b\n",
    )
    .unwrap();
    assert_eq!(
        task_in_groups(&w.ns, UID_A, &pod_groups, "read", &a.join("from-a"), "").unwrap(),
        "hello from a\nand b\n"
    );
    let meta = std::fs::metadata(shared.join("from-a")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (UID_A, POD_GID),
        "setgid: the pod's group"
    );
    // Without the pod's gid, a task of the same user cannot; nor can another user.
    assert_eq!(
        task_in_groups(&w.ns, UID_B, &[], "read", &b.join("from-a"), ""),
        Err(nix::libc::EACCES)
    );
    assert_eq!(
        task(&w.ns, UID_OTHER, UID_OTHER, "read", &a.join("from-a"), ""),
        Err(nix::libc::EACCES)
    );

    // Status ties them together.
    let status = w.status();
    let by_id = |id: &str| {
        status["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["container_id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("task-a")["parent"], "pod", "{status}");
    assert_eq!(
        by_id("pod")["children"],
        json!(["task-a", "task-b"]),
        "{status}"
    );
    assert!(by_id("pod").get("parent").is_none(), "{status}");

    // The pod's cleanup is refused while its tasks hold binds into its sandbox: by the
    // command line (exit 1, nothing changed) and by gRPC (FAILED_PRECONDITION).
    refused(
        &w.run(&["cleanup", "--container-id", "pod"]),
        &["cleanup refused", "task-a, task-b"],
    );
    assert!(w.record("pod").exists());
    assert!(w.mounted(&a) && w.mounted(&b));
    assert_eq!(
        by_id("pod")["state"],
        w.status()["containers"][0]["state"],
        "still prepared"
    );
    grpc_cleanup_refused(&w, "pod");

    // One task gone: still refused for the other; both gone: the pod's cleanup goes through,
    // and the shared data stays in the pod's sandbox (the containerizer removes sandboxes).
    let _ = ok(&w.run(&["cleanup", "--container-id", "task-a"]));
    assert!(!w.mounted(&a));
    refused(
        &w.run(&["cleanup", "--container-id", "pod"]),
        &["cleanup refused", "task-b"],
    );
    let _ = ok(&w.run(&["cleanup", "--container-id", "task-b"]));
    let gids_record = || -> Value {
        serde_json::from_slice(
            &std::fs::read(w.root.join("work/meta/resources/task-gids.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        gids_record()["gids"],
        json!({"parent/pod/shared": POD_GID}),
        "recorded with the pod"
    );
    let _ = ok(&w.run(&["cleanup", "--container-id", "pod"]));
    assert_eq!(gids_record()["gids"], json!({}), "released with the pod");
    w.assert_nothing_mounted("after the pod's cleanup");
    assert_eq!(
        std::fs::read_to_string(shared.join("from-b")).unwrap(),
        "hello from b\n"
    );
    assert_eq!(w.status(), json!({"containers": [], "leftovers": []}));
}

/// The parent's cleanup by gRPC: `FAILED_PRECONDITION` naming the nested containers.
fn grpc_cleanup_refused(w: &World, id: &str) {
    use berth_proto::berth::v1 as pb;
    let sock = w.root.join("isolator.sock");
    let mut args = w.global.clone();
    args.extend([
        "serve".to_owned(),
        format!("--listen=unix:{}", sock.display()),
    ]);
    let mut cmd = Command::new(BIN);
    cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = w.ns.run(move || cmd.spawn().unwrap());
    for _ in 0..600 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = id.to_owned();
    let s2 = sock.clone();
    let (status, family) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let channel = berth_testkit::unix_channel(s2).await;
            let mut c = pb::isolator_client::IsolatorClient::new(channel);
            let refused = c
                .cleanup(pb::CleanupRequest {
                    container_id: id.clone(),
                    force: false,
                })
                .await
                .unwrap_err();
            // The family as the gRPC status shows it.
            let containers = c
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner()
                .containers;
            let family: Vec<(String, String, Vec<String>)> = containers
                .into_iter()
                .map(|c| (c.container_id, c.parent, c.children))
                .collect();
            (refused, family)
        });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("task-a"), "{status:?}");
    let pod = family.iter().find(|(c, _, _)| c == "pod").unwrap();
    assert_eq!(pod.2, ["task-a", "task-b"], "{family:?}");
    let task_a = family.iter().find(|(c, _, _)| c == "task-a").unwrap();
    assert_eq!(task_a.1, "pod", "{family:?}");
}

#[test]
fn recovery_cleans_a_dead_pods_tasks_first_and_keeps_a_dead_pod_with_a_live_task() {
    if !privileged("recovery_cleans_a_dead_pods_tasks_first_and_keeps_a_dead_pod_with_a_live_task")
    {
        return;
    }
    let w = World::new(&[]);
    // Ids that sort the pod first: recovery must still take its task down before it.
    let pod = w.sandbox("sandbox-pod", 0, 0);
    let task = w.sandbox("sandbox-task", UID_A, GROUP);
    let _ = w.prepare("a-pod", &json!({"container_id": "a-pod", "sandbox": pod}));
    let _ = w.prepare(
        "z-task",
        &json!({"container_id": "z-task", "sandbox": task, "parent": {"container_id": "a-pod"},
                "volumes": [parent_path("shared", "shared")]}),
    );
    assert!(w.mounted(&task.join("shared")));

    // The task lives, the pod is dead: the pod is kept for it, and that is no error.
    let r = ok(&w.run(&["recover", "--live", "z-task"]));
    assert_eq!(r["kept"], json!(["z-task"]), "{r}");
    assert_eq!(r["kept_for_children"], json!(["a-pod"]), "{r}");
    assert_eq!(r["errors"], json!([]), "{r}");
    assert!(w.record("a-pod").exists());
    assert!(w.mounted(&task.join("shared")));

    // Both dead: the task first, then the pod.
    let r = ok(&w.run(&["recover"]));
    assert_eq!(r["cleaned"], json!(["z-task", "a-pod"]), "{r}");
    w.assert_nothing_mounted("after recovery");
    assert_eq!(w.status(), json!({"containers": [], "leftovers": []}));
}

#[test]
fn a_value_secret_is_a_0400_file_of_its_task_only_and_leaves_no_trace() {
    if !privileged("a_value_secret_is_a_0400_file_of_its_task_only_and_leaves_no_trace") {
        return;
    }
    let w = World::new(&[]);
    let secret = b"s3cret-VALUE-7d1e0c9a".as_slice();
    let sa = w.sandbox("sandbox-a", UID_A, GROUP);
    let sb = w.sandbox("sandbox-b", UID_B, GROUP);
    let out = w.prepare(
        "c-a",
        &json!({"container_id": "c-a", "sandbox": sa,
                "volumes": [value_secret("secrets/db-password", secret)]}),
    );
    let target = sa.join("secrets/db-password");
    assert_eq!(out["mounts"][0]["target"], json!(target), "{out}");
    assert_eq!(out["mounts"][0]["read_only"], json!(true), "{out}");
    let _ = w.prepare(
        "c-b",
        &json!({"container_id": "c-b", "sandbox": sb, "volumes": [
            {"mode": "RW", "container_path": "scratch",
             "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "scratch"}}}]}),
    );

    // A file, mode 0400, owned by the task's user, on the container's own tmpfs (mode 0700),
    // bound read-only.
    assert!(w.mounted(&target));
    let dir = w.secrets_dir("c-a");
    assert_eq!(w.fs_type(&dir).as_deref(), Some("tmpfs"));
    let t2 = target.clone();
    let (meta, write) = w.ns.run(move || {
        let m = std::fs::metadata(&t2).unwrap();
        let write = std::fs::OpenOptions::new()
            .write(true)
            .open(&t2)
            .map_err(|e| e.raw_os_error());
        (
            (m.is_file(), m.mode() & 0o7777, m.uid(), m.gid()),
            write.map(|_| ()),
        )
    });
    assert_eq!(meta, (true, 0o400, UID_A, GROUP));
    assert_eq!(write, Err(Some(nix::libc::EROFS)), "the bind is read-only");
    let d2 = dir.clone();
    let tmpfs_root = w.ns.run(move || {
        let m = std::fs::metadata(&d2).unwrap();
        (m.mode() & 0o7777, m.uid())
    });
    assert_eq!(tmpfs_root, (0o700, 0), "the tmpfs root");
    assert_eq!(
        task(&w.ns, UID_A, GROUP, "read", &target, "")
            .unwrap()
            .as_bytes(),
        secret
    );
    // Not another user (even of the same group), nor another container.
    assert_eq!(
        task(&w.ns, UID_B, GROUP, "read", &target, ""),
        Err(nix::libc::EACCES)
    );
    assert_eq!(
        task(&w.ns, UID_B, GROUP, "read", &dir.join("0"), ""),
        Err(nix::libc::EACCES)
    );
    assert!(files_with(&w.ns, std::slice::from_ref(&sb), secret).is_empty());
    assert!(!sb.join("secrets").exists());
    // Not in the records, the status or the logs.
    let records = w.root.join("work/containers");
    assert!(files_with(&w.ns, &[records], secret).is_empty());
    let status = w.status();
    assert!(!status.to_string().contains("s3cret"), "{status}");
    let c_a = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container_id"] == "c-a")
        .cloned()
        .unwrap();
    assert_eq!(c_a["volumes"][0]["mounted"], json!(true), "{status}");
    assert_eq!(c_a["volumes"][0]["read_only"], json!(true), "{status}");

    // Cleanup: the bind and the tmpfs gone, no trace anywhere.
    let _ = ok(&w.run(&["cleanup", "--container-id", "c-a"]));
    let _ = ok(&w.run(&["cleanup", "--container-id", "c-b"]));
    w.assert_nothing_mounted("after cleanup");
    assert!(!dir.exists(), "the secrets dir stays");
    let everywhere = [w.root.join("work"), sa, sb];
    assert_eq!(
        files_with(&w.ns, &everywhere, secret),
        Vec::<PathBuf>::new()
    );
    assert!(
        !contains(&w.logs.borrow(), secret),
        "the secret is in the logs"
    );
    assert!(
        contains(&w.logs.borrow(), b"INFO"),
        "no logs were captured (RUST_LOG=trace)"
    );
}

#[test]
fn reference_secrets_come_from_the_secret_dir_and_bad_names_are_refused() {
    if !privileged("reference_secrets_come_from_the_secret_dir_and_bad_names_are_refused") {
        return;
    }
    let sd = tempfile::tempdir().unwrap();
    let secret_dir = std::fs::canonicalize(sd.path()).unwrap();
    std::fs::write(secret_dir.join("db"), b"ref-secret-db-51f0").unwrap();
    std::fs::create_dir(secret_dir.join("tls")).unwrap();
    std::fs::write(secret_dir.join("tls/key"), b"ref-secret-tls-key-09a2").unwrap();
    let outside = sd
        .path()
        .parent()
        .unwrap()
        .join(format!("berth-outside-{}", std::process::id()));
    std::fs::write(&outside, b"outside-the-secret-dir").unwrap();
    std::os::unix::fs::symlink(&outside, secret_dir.join("link")).unwrap();
    let w = World::new(&[format!("--secret-dir={}", secret_dir.display())]);
    let sa = w.sandbox("sandbox-a", UID_A, GROUP);

    // Names are one component: no '/', not '..'; a symlink is not followed; a missing file,
    // an empty name and an inline value with a reference are refused. Nothing is written.
    for (name, key, says) in [
        ("../db", None, "secret reference name"),
        ("..", None, "'.' and '..' are not names"),
        ("tls/key", None, "contains '/'"),
        ("", None, "empty"),
        ("tls", Some(".."), "key"),
        ("link", None, "open"),
        ("missing", None, "open"),
    ] {
        w.prepare_refused(
            "c-a",
            &json!({"container_id": "c-a", "sandbox": sa,
                    "volumes": [reference_secret("s", name, key)]}),
            &["secret volume s", says],
        );
        assert!(!w.record("c-a").exists(), "{name:?}");
        assert!(!w.secrets_dir("c-a").exists(), "{name:?}");
        assert!(w.ns.mounts_below(&w.root).is_empty(), "{name:?}");
    }
    let mut both = reference_secret("s", "db", None);
    both["source"]["secret"]["value"] = json!({"data": "eA=="});
    w.prepare_refused(
        "c-a",
        &json!({"container_id": "c-a", "sandbox": sa, "volumes": [both]}),
        &["REFERENCE secret reference (and no value)"],
    );
    let outsider = World::new(&[]);
    let so = outsider.sandbox("sandbox-o", UID_A, GROUP);
    outsider.prepare_refused(
        "c-o",
        &json!({"container_id": "c-o", "sandbox": so,
                "volumes": [reference_secret("s", "db", None)]}),
        &["--secret-dir"],
    );

    // Good references, with and without a key.
    let _ = w.prepare(
        "c-a",
        &json!({"container_id": "c-a", "sandbox": sa, "volumes": [
            reference_secret("db-password", "db", None),
            reference_secret("tls.key", "tls", Some("key"))]}),
    );
    assert_eq!(
        task(&w.ns, UID_A, GROUP, "read", &sa.join("db-password"), "").unwrap(),
        "ref-secret-db-51f0"
    );
    assert_eq!(
        task(&w.ns, UID_A, GROUP, "read", &sa.join("tls.key"), "").unwrap(),
        "ref-secret-tls-key-09a2"
    );
    assert!(files_with(&w.ns, &[w.root.join("work/containers")], b"ref-secret").is_empty());
    let _ = ok(&w.run(&["cleanup", "--container-id", "c-a"]));
    w.assert_nothing_mounted("after cleanup");
    assert!(!w.secrets_dir("c-a").exists());
    assert!(files_with(&w.ns, &[w.root.join("work"), sa], b"ref-secret").is_empty());
    assert!(!contains(&w.logs.borrow(), b"ref-secret"));
    std::fs::remove_file(&outside).unwrap();
}

#[test]
fn a_secret_survives_no_sigkill_of_prepare_or_cleanup_once_recovered() {
    if !privileged("a_secret_survives_no_sigkill_of_prepare_or_cleanup_once_recovered") {
        return;
    }
    let w = World::new(&[]);
    let secret = b"killed-SECRET-3b8e".as_slice();
    let sa = w.sandbox("sandbox-a", UID_A, GROUP);
    let cfg = w.config(
        "c-a.json",
        &json!({"container_id": "c-a", "sandbox": sa, "volumes": [
            value_secret("one", secret),
            {"mode": "RW", "container_path": "scratch",
             "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "scratch"}}},
            value_secret("nested/two", secret)]}),
    );
    let prepare = ["prepare", "--container-id", "c-a", "--config", cfg.as_str()];
    let assert_gone = |what: &str| {
        w.assert_nothing_mounted(what);
        assert!(!w.secrets_dir("c-a").exists(), "{what}: secrets dir left");
        assert_eq!(
            files_with(&w.ns, &[w.root.join("work"), sa.clone()], secret),
            Vec::<PathBuf>::new(),
            "{what}"
        );
        assert_eq!(
            w.status(),
            json!({"containers": [], "leftovers": []}),
            "{what}"
        );
    };
    // Killed at every write-ahead point of prepare, then recovered (the container is dead).
    let mut points = 0;
    for n in 1.. {
        if !w.run_killed_at(n, &prepare) {
            let _ = ok(&w.run(&["cleanup", "--container-id", "c-a"]));
            break;
        }
        points += 1;
        let r = ok(&w.run(&["recover"]));
        assert_eq!(r["errors"], json!([]), "{r}");
        assert_gone(&format!("prepare killed at point {n}"));
    }
    assert!(points >= 4, "only {points} points in prepare");
    // Killed at every point of cleanup, then recovered.
    for n in 1.. {
        let _ = ok(&w.run(&prepare));
        assert!(w.mounted(&sa.join("one")) && w.mounted(&sa.join("nested/two")));
        let killed = w.run_killed_at(n, &["cleanup", "--container-id", "c-a"]);
        let r = ok(&w.run(&["recover"]));
        assert_eq!(r["errors"], json!([]), "{r}");
        assert_gone(&format!("cleanup killed at point {n}"));
        if !killed {
            break;
        }
    }
    // A live container keeps its secret through recovery.
    let _ = ok(&w.run(&prepare));
    let r = ok(&w.run(&["recover", "--live", "c-a"]));
    assert_eq!(r["kept"], json!(["c-a"]), "{r}");
    assert_eq!(
        task(&w.ns, UID_A, GROUP, "read", &sa.join("one"), "")
            .unwrap()
            .as_bytes(),
        secret
    );
    let _ = ok(&w.run(&["cleanup", "--container-id", "c-a"]));
    assert_gone("after the last cleanup");
    assert!(
        !contains(&w.logs.borrow(), secret),
        "the secret is in the logs"
    );
}
