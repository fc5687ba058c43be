//! A task's file access as another user: the calling test binary re-executed as its
//! `task_child` test (which calls [`child`]), dropping to the task's uid, gid and
//! supplementary groups itself (std's `Command::uid` clears the supplementary groups, and a
//! containerizer runs a task with the gids `prepare` returned), with umask 007, then doing one
//! file operation and reporting it on stdout.

// `serde_json::Value` indexing yields `Null` for what is missing; `unwrap` then says so.
#![allow(clippy::indexing_slicing)]

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const TASK_VAR: &str = "BERTH_TESTKIT_TASK";

/// The user a task runs as.
#[derive(Debug, Clone, Copy)]
pub struct TaskUser<'a> {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: &'a [u32],
}

/// The child half of [`run`]: with the variable set, drops to the user, then does the
/// operation (`write`: a new file of mode 0660; `append`; `read`) and prints
/// `TASK {"ok": <content>}` or `TASK {"errno": <n>}`; without it, nothing.
///
/// # Panics
/// A malformed variable, or the user cannot be taken.
pub fn child() {
    let Ok(spec) = std::env::var(TASK_VAR) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let num = |k: &str| u32::try_from(v[k].as_u64().unwrap()).unwrap();
    let groups: Vec<nix::unistd::Gid> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(u32::try_from(g.as_u64().unwrap()).unwrap()))
        .collect();
    nix::unistd::setgroups(&groups).unwrap();
    nix::unistd::setgid(nix::unistd::Gid::from_raw(num("gid"))).unwrap();
    nix::unistd::setuid(nix::unistd::Uid::from_raw(num("uid"))).unwrap();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o007));
    let path = Path::new(v["path"].as_str().unwrap());
    let data = v["data"].as_str().unwrap();
    let r: std::io::Result<String> = match v["op"].as_str().unwrap() {
        "write" => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o660)
            .open(path)
            .and_then(|mut f| f.write_all(data.as_bytes()))
            .map(|()| String::new()),
        "append" => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(data.as_bytes()))
            .map(|()| String::new()),
        "read" => std::fs::read_to_string(path),
        other => panic!("unknown op {other}"),
    };
    let out = match r {
        Ok(s) => serde_json::json!({"ok": s}),
        Err(e) => serde_json::json!({"errno": e.raw_os_error().unwrap_or(-1)}),
    };
    println!("\nTASK {out}");
}

/// Does `op` (`write`, `append`, `read`) on `path` as `user`, in a child process started by
/// `start` (e.g. in a mount namespace): the content read (empty for a write), or the errno.
///
/// # Panics
/// The child does not report.
pub fn run(
    user: TaskUser<'_>,
    op: &str,
    path: &Path,
    data: &str,
    start: impl FnOnce(Command) -> Output,
) -> Result<String, i32> {
    let spec = serde_json::json!({"uid": user.uid, "gid": user.gid, "groups": user.groups,
        "op": op, "path": path, "data": data});
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "task_child", "--nocapture", "--test-threads=1"])
        .env(TASK_VAR, spec.to_string())
        .stdin(Stdio::null());
    let out = start(c);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("TASK "))
        .unwrap_or_else(|| panic!("task child said nothing: {out:?}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    match v.get("ok") {
        Some(s) => Ok(s.as_str().unwrap().to_owned()),
        None => Err(i32::try_from(v["errno"].as_i64().unwrap()).unwrap()),
    }
}
