//! What an operator moving a Mesos agent to berth relies on, through the built programs:
//!
//! - `--version` names the crate version and the git revision of the checkout;
//! - without `--resources`, the agent has the resources a Mesos agent detects (cpus online,
//!   memory, the work dir's disk, ports), so a dynamically reserved persistent volume can be
//!   checkpointed at once;
//! - a program named `dvdcli` (the `dvdcli` binary target that `cargo install` installs, and
//!   `berth-isolator` under the name `dvdcli` through a symlink) takes the exact argv of Mesos's
//!   `docker/volume` isolator and of mesos-module-dvdi, against the real
//!   docker-volume-easyfuse plugin, and prints what they parse: the mount point and a newline on
//!   stdout, nothing else; errors on stderr with exit status 1.
//!
//! `BERTH_DVDCLI` points the dvdcli tests at another program (CI sets it to the one
//! `cargo install` put in a temporary root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_mount::MountTable;
use berth_testkit::{Ns, peer_or_skip, peers_dir};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_berth-isolator");

fn dvdcli_program() -> PathBuf {
    std::env::var_os("BERTH_DVDCLI").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_dvdcli")),
        PathBuf::from,
    )
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
fn version_names_the_crate_and_the_revision() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("berth-isolator {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // Built from a checkout (as here and in CI): the revision too, a commit of this checkout
    // that HEAD contains (HEAD itself unless a commit was made after the build).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert_names_a_commit_of_head(&text, &repo);
}

/// `text` holds `(git <rev>)` with `rev` a commit that HEAD contains, when `repo` is a git
/// checkout with git installed.
fn assert_names_a_commit_of_head(text: &str, repo: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo)
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    if git(&["rev-parse", "HEAD"]).is_none() {
        return; // not a checkout, or no git: the version stands alone
    }
    let rev = text
        .split("(git ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{text} names no revision"));
    assert_eq!(rev.len(), 12, "{text}");
    assert!(
        git(&["merge-base", "--is-ancestor", rev, "HEAD"]).is_some(),
        "{text}: {rev} is not a commit HEAD contains"
    );
}

/// Mesos's rule on the work dir's filesystem, computed here from `statvfs` independently.
fn detected_disk_mb(work: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(work).unwrap();
    let total = s.blocks() * s.fragment_size();
    let gib = 1u64 << 30;
    let disk = if total >= 10 * gib {
        total - 5 * gib
    } else {
        total / 2
    };
    disk >> 20
}

fn reserved_volume(size_mb: u64) -> Value {
    json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": size_mb},
        "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "ops"}],
        "disk": {"persistence": {"id": "detected-1", "principal": "ops"},
                 "volume": {"mode": "RW", "container_path": "data"}}
    })
}

fn scalar_of(list: &Value, pred: impl Fn(&Value) -> bool) -> f64 {
    list.as_array()
        .unwrap()
        .iter()
        .filter(|r| pred(r))
        .map(|r| r["scalar"]["value"].as_f64().unwrap())
        .sum()
}

#[test]
fn without_resources_flag_the_agent_detects_them_and_takes_a_reserved_volume() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let work = root.join("work");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg(format!("--work-dir={}", work.display()))
            .args(args)
            .output()
            .unwrap()
    };
    // What the agent has before any checkpoint: every resource a Mesos agent detects.
    let shown = ok(&run(&["resources"]));
    let total = &shown["total"];
    let unreserved = |r: &Value| r.get("reservations").is_none();
    let disk_mb = detected_disk_mb(&work);
    assert!(
        disk_mb > 2048,
        "this test needs more than 2 GiB in {}",
        work.display()
    );
    assert_eq!(
        scalar_of(total, |r| r["name"] == "disk" && unreserved(r)),
        disk_mb as f64,
        "{shown}"
    );
    let cpus = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .unwrap()
        .unwrap();
    assert_eq!(
        scalar_of(total, |r| r["name"] == "cpus"),
        cpus as f64,
        "{shown}"
    );
    assert!(scalar_of(total, |r| r["name"] == "mem") >= 1.0, "{shown}");
    assert!(
        total
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "ports"
                && r["ranges"]["range"][0] == json!({"begin": 31000, "end": 32000})),
        "{shown}"
    );

    // The master's checkpoint of a volume on dynamically reserved disk fits the detected disk.
    let set = root.join("set.json");
    std::fs::write(&set, json!([reserved_volume(2048)]).to_string()).unwrap();
    let out = ok(&run(&[
        "checkpoint-resources",
        "--resources",
        set.to_str().unwrap(),
    ]));
    assert_eq!(out["checkpointed"].as_array().unwrap().len(), 1, "{out}");
    assert!(work.join("volumes/roles/db/detected-1").is_dir());
    let shown = ok(&run(&["resources"]));
    let total = &shown["total"];
    assert_eq!(
        scalar_of(total, |r| r["name"] == "disk" && unreserved(r)),
        (disk_mb - 2048) as f64,
        "the volume came out of the detected disk: {shown}"
    );
    assert_eq!(
        scalar_of(total, |r| r["name"] == "disk" && r.get("disk").is_some()),
        2048.0,
        "{shown}"
    );

    // More than the detected disk is refused, and nothing changes.
    std::fs::write(&set, json!([reserved_volume(disk_mb + 1)]).to_string()).unwrap();
    let refused = run(&["checkpoint-resources", "--resources", set.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not compatible"),
        "{refused:?}"
    );
    assert!(work.join("volumes/roles/db/detected-1").is_dir());
}

fn which(exe: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

/// The program run as Mesos runs it: argv without a shell, stdin from /dev/null, stdout and
/// stderr captured, with berth's environment only.
fn dvdcli(ns: &Ns, program: &Path, d: &Path, args: &[String]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("BERTH_WORK_DIR", d.join("work"))
        .env("BERTH_DOCKER_PLUGIN_DIRS", d.join("run"))
        .stdin(Stdio::null());
    ns.output(cmd)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

#[test]
fn dvdcli_drop_in_mounts_and_unmounts_a_real_plugin_volume_with_mesos_argv() {
    let venv = peers_dir().join("docker-volume-easyfuse");
    let python = venv.join("bin/python");
    let root = nix::unistd::geteuid().is_root();
    if !peer_or_skip(
        "dvdcli drop-in",
        &[
            ("root", root),
            (
                "docker-volume-easyfuse",
                python.is_file() && venv.join("VERSION").is_file(),
            ),
            ("bindfs", which("bindfs").is_some()),
            ("/dev/fuse", Path::new("/dev/fuse").exists()),
        ],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    for sub in ["run", "src", "mnt", "db", "work", "bin"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("src/hello.txt"), "hello-through-dvdcli").unwrap();
    // berth-isolator under the name dvdcli (multicall).
    let symlink = d.join("bin/dvdcli");
    std::os::unix::fs::symlink(BIN, &symlink).unwrap();

    let mut ns = Ns::new();
    let log = d.join("easyfuse.log");
    let mut plugin = Command::new(&python);
    plugin
        .args(["-m", "easyfuse", "-s"])
        .arg(d.join("run/easyfuse.sock"))
        .arg("-m")
        .arg(d.join("mnt"))
        .arg("-d")
        .arg(d.join("db/mntdb.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let pid = ns.spawn(plugin);
    let mountinfo = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let sock = d.join("run/easyfuse.sock");
    for _ in 0..600 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        sock.exists(),
        "easyfuse never bound its socket: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let is_mounted = |p: &Path| MountTable::read_file(&mountinfo).unwrap().is_mount_point(p);
    let device = format!("--volumeopts=device=bindfs#{}", d.join("src").display());

    for (program, name) in [
        (dvdcli_program(), "mesos-vol"),
        (symlink.clone(), "module-vol"),
    ] {
        // Mesos docker/volume isolator: mount with one --volumeopts per driver option, no
        // --explicitcreate (the volume is created implicitly).
        let mut mount = s(&[
            "mount",
            "--volumedriver=easyfuse",
            &format!("--volumename={name}"),
        ]);
        mount.push(device.clone());
        mount.push("--volumeopts=o=allow_other".to_owned());
        if program == symlink {
            // mesos-module-dvdi's spelling of the flag, with false: create when missing.
            mount.push("--explicitCreate=false".to_owned());
        }
        let out = dvdcli(&ns, &program, &d, &mount);
        let mountpoint = d.join("mnt").join(name);
        assert!(
            out.status.success(),
            "{}: {out:?}\nplugin log: {}",
            program.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Byte for byte what the callers parse: the path and a newline, nothing else.
        assert_eq!(
            String::from_utf8(out.stdout.clone()).unwrap(),
            format!("{}\n", mountpoint.display()),
            "{}",
            program.display()
        );
        assert!(is_mounted(&mountpoint), "the plugin's FUSE mount is there");
        let mp = mountpoint.clone();
        assert_eq!(
            ns.run(move || std::fs::read_to_string(mp.join("hello.txt")).unwrap()),
            "hello-through-dvdcli"
        );

        // Mesos's unmount argv: no options. Nothing on stdout; the mount goes.
        let out = dvdcli(
            &ns,
            &program,
            &d,
            &s(&[
                "unmount",
                "--volumedriver=easyfuse",
                &format!("--volumename={name}"),
            ]),
        );
        assert!(out.status.success(), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        assert!(!is_mounted(&mountpoint), "unmounted after the last Unmount");
    }

    // mesos-module-dvdi with --explicitCreate=true on a volume that does not exist: an error on
    // stderr only, exit status 1, nothing on stdout, nothing mounted.
    let out = dvdcli(
        &ns,
        &symlink,
        &d,
        &s(&[
            "mount",
            "--volumedriver=easyfuse",
            "--volumename=never-created",
            "--explicitCreate=true",
        ]),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error"),
        "{out:?}"
    );
    assert!(!is_mounted(&d.join("mnt/never-created")));

    // A caller's mistake: exit 1, usage on stderr, stdout empty.
    let out = dvdcli(&ns, &dvdcli_program(), &d, &s(&["mount", "--volumename=x"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("volume driver"),
        "{out:?}"
    );
}
