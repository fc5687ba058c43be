//! Hostile input to the isolator (the real mount and record tests need root and a private
//! mount namespace; skipped with a message otherwise, never in CI):
//!
//! - container paths built from the attacks of the mount engine's escape corpus (`..`
//!   components, absolute paths with and without a rootfs, symlinks in the sandbox or rootfs
//!   to the outside, to `/` and to `..`, symlink loops, paths through files, magic links, NUL
//!   bytes, control characters, very long components and paths, unicode, `.`), for every kind
//!   of volume that is bind-mounted (persistent, `DOCKER_VOLUME`, `DVDI_VOLUME_*`,
//!   `SANDBOX_PATH`, a `HOST_PATH` file), under the sandbox (relative) and the rootfs
//!   (absolute);
//! - container ids from the same corpus;
//! - malformed config files (not JSON, wrong types, unknown or missing keys, bad Mesos
//!   `Resource` / `Volume` JSON) and volumes that cannot be used as asked;
//! - a task that moves its mount points after prepare.
//!
//! Each input gets a typed error naming the volume or key, or is confined to the sandbox /
//! rootfs. After each: nothing is mounted outside the sandbox and rootfs (mountinfo, new mounts
//! only), nothing outside changed, and a refused container has no record, no Docker consumer
//! and no driver mount.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_agent::container::{
    ContainerConfig, ContainerError, DockerVolumes, Isolator, PersistentVolumes,
};
use berth_dvdi::fake::{MemoryDriver, MemoryDrivers};
use berth_dvdi::{Endpoint, ManagerConfig, VolumeDriver, VolumeManager};
use berth_mount::{BindOptions, LinuxMounter, MountTable, Mounter, UnmountOptions};
use berth_resources::proto;
use berth_testkit::{in_ns, privileged};
use serde_json::{Value as Json, json};

const MARKER: &str = "VOLUME-MARKER";
const DRIVER: &str = "memfake";
const DV: &str = "dv-1";
const PV: &str = "pv-1";

/// The agent's real layout: `<work>/volumes/roles/<role>/<persistence id>`, through the same
/// function the binary uses (so hostile persistence ids and roles meet the real checks).
struct Layout(PathBuf);

impl PersistentVolumes for Layout {
    fn volume_path(&self, r: &proto::Resource) -> Result<PathBuf, String> {
        let typed = berth_resources::Resource::from_proto(r).map_err(|e| e.to_string())?;
        berth_agent::resources::volume_path(&self.0, &typed).map_err(|e| e.to_string())
    }
}

fn disk(id: &str, role: &str, mode: &str, container_path: &str) -> Json {
    json!({
        "name": "disk", "type": "SCALAR", "scalar": {"value": 16},
        "reservations": [{"type": "DYNAMIC", "role": role, "principal": "p"}],
        "disk": {"persistence": {"id": id}, "volume": {"mode": mode, "container_path": container_path}}
    })
}

fn docker_volume(name: &str, container_path: &str) -> Json {
    json!({"mode": "RW", "container_path": container_path,
           "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": DRIVER, "name": name}}})
}

/// One isolated set-up: its own work dir, sandbox, rootfs, outside directory, persistent
/// volume, Docker driver and isolator.
struct Env {
    base: PathBuf,
    work: PathBuf,
    sandbox: PathBuf,
    rootfs: PathBuf,
    outside: PathBuf,
    hostfile: PathBuf,
    iso: Isolator,
    manager: Arc<VolumeManager<MemoryDrivers>>,
    driver: MemoryDriver,
}

fn mkdirs(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    p.to_path_buf()
}

async fn env(base: &Path) -> Env {
    let base = mkdirs(base);
    let work = mkdirs(&base.join("work"));
    let sandbox = mkdirs(&base.join("sandbox"));
    let rootfs = mkdirs(&base.join("rootfs"));
    let outside = mkdirs(&base.join("outside"));
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    mkdirs(&outside.join("victim"));
    let pv = mkdirs(&work.join("volumes/roles/db").join(PV));
    std::fs::write(pv.join(MARKER), b"persistent").unwrap();
    let docker = mkdirs(&base.join("docker"));
    std::fs::write(mkdirs(&docker.join(DV)).join(MARKER), b"docker").unwrap();
    let hostfile = base.join("hostfile");
    std::fs::write(&hostfile, b"host file").unwrap();
    // The sandbox-path source, with a marker to find it through the mount.
    std::fs::write(mkdirs(&sandbox.join("src")).join(MARKER), b"sandbox").unwrap();

    let driver = MemoryDriver::new(DRIVER, &docker);
    driver.create(DV, &BTreeMap::new()).await.unwrap();
    let mut cfg = ManagerConfig::new(base.join("dvdi-state"));
    cfg.mountinfo = Some(PathBuf::from("/proc/thread-self/mountinfo"));
    let manager =
        Arc::new(VolumeManager::new(MemoryDrivers::default().with(driver.clone()), cfg).unwrap());
    let docker_volumes: Arc<dyn DockerVolumes> = manager.clone();
    let iso =
        Isolator::new(&work, Arc::new(Layout(work.clone())), None).with_docker(docker_volumes);
    Env {
        base,
        work,
        sandbox,
        rootfs,
        outside,
        hostfile,
        iso,
        manager,
        driver,
    }
}

/// Every file under `dir` with its content (symlinks as their target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            let content = if ft.is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else if ft.is_dir() {
                todo.push(p.clone());
                b"<dir>".to_vec()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.insert(p, content);
        }
    }
    out
}

fn mount_ids() -> BTreeSet<u64> {
    MountTable::read_current()
        .unwrap()
        .iter()
        .map(|e| e.mount_id())
        .collect()
}

/// Mount points that are not in `before`.
fn new_mounts(before: &BTreeSet<u64>) -> Vec<PathBuf> {
    MountTable::read_current()
        .unwrap()
        .iter()
        .filter(|e| !before.contains(&e.mount_id()))
        .map(|e| e.mount_point().to_path_buf())
        .collect()
}

/// The volume a per-volume error names.
fn volume_of(e: &ContainerError) -> Option<&str> {
    match e {
        ContainerError::Volume { volume, .. }
        | ContainerError::Mount { volume, .. }
        | ContainerError::Dvdi { volume, .. }
        | ContainerError::Csi { volume, .. } => Some(volume),
        _ => None,
    }
}

/// After a refusal: no record, no Docker consumer, no driver mount, nothing new mounted.
fn assert_no_trace(e: &Env, id: &str, before: &BTreeSet<u64>, what: &str) {
    assert!(e.iso.load(id).unwrap().is_none(), "{what}: record left");
    let records = e.work.join("containers");
    if records.exists() {
        let left: Vec<_> = std::fs::read_dir(&records)
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{what}: record directories left: {left:?}");
    }
    assert!(
        e.manager.load(DRIVER, DV).unwrap().is_none(),
        "{what}: Docker consumer record left"
    );
    assert!(
        e.driver.mounted_ids(DV).is_empty(),
        "{what}: driver mount left"
    );
    assert_eq!(
        new_mounts(before),
        Vec::<PathBuf>::new(),
        "{what}: mounts left"
    );
    let secrets = e.work.join("containers-secrets").join(id);
    assert!(!secrets.exists(), "{what}: secrets tmpfs dir left");
}

// ------------------------------------------------------------------------------------------
// Malformed config files (no root needed: nothing is mounted).

#[test]
fn malformed_config_files_get_typed_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let sb = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::write(sb.join("file"), b"f").unwrap();
    let sbs = sb.display().to_string();
    let file = sb.join("file").display().to_string();
    let ok = |extra: Json| -> String {
        let mut v = json!({"container_id": "c", "sandbox": sbs});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(String, &str)> = vec![
        // Not JSON at all.
        (String::new(), "not JSON"),
        ("{".into(), "not JSON"),
        ("container_id: c".into(), "not JSON"),
        (format!("{} trailing", ok(json!({}))), "not JSON"),
        ("{\"container_id\": \"c\", }".into(), "not JSON"),
        (deep, "not JSON"),
        ("\u{feff}{}".into(), "not JSON"),
        // Not an object.
        ("[]".into(), "must be a JSON object"),
        ("null".into(), "must be a JSON object"),
        ("\"c\"".into(), "must be a JSON object"),
        ("42".into(), "must be a JSON object"),
        // Missing keys.
        ("{}".into(), "container_id is required"),
        (
            json!({"container_id": null, "sandbox": sbs}).to_string(),
            "container_id is required",
        ),
        (
            json!({"container_id": "c"}).to_string(),
            "sandbox is required",
        ),
        (
            json!({"sandbox": sbs}).to_string(),
            "container_id is required",
        ),
        // Unknown keys (typos, other spellings).
        (ok(json!({"volums": []})), "unknown key \"volums\""),
        (
            ok(json!({"containerId": "c"})),
            "unknown key \"containerId\"",
        ),
        (ok(json!({"Sandbox": sbs})), "unknown key \"Sandbox\""),
        (ok(json!({"": 1})), "unknown key \"\""),
        (ok(json!({"container_id\u{0}": 1})), "unknown key"),
        // Wrong types.
        (
            json!({"container_id": 5, "sandbox": sbs}).to_string(),
            "container_id must be a string",
        ),
        (
            json!({"container_id": ["c"], "sandbox": sbs}).to_string(),
            "container_id must be a string",
        ),
        (
            json!({"container_id": "c", "sandbox": {}}).to_string(),
            "sandbox must be a string",
        ),
        (ok(json!({"rootfs": 1})), "rootfs must be a string"),
        (ok(json!({"resources": {}})), "resources must be an array"),
        (
            ok(json!({"resources": "cpus:1"})),
            "resources must be an array",
        ),
        (ok(json!({"volumes": "x"})), "volumes must be an array"),
        (
            ok(json!({"environment": []})),
            "environment must be an object of strings",
        ),
        (
            ok(json!({"environment": "A=b"})),
            "environment must be an object of strings",
        ),
        (
            ok(json!({"environment": {"A": 1}})),
            "environment.A must be a string",
        ),
        (
            ok(json!({"environment": {"A": "b", "DVDI_VOLUME_NAME": null}})),
            "environment.DVDI_VOLUME_NAME",
        ),
        (
            ok(json!({"environment": {"A": {"b": "c"}}})),
            "environment.A",
        ),
        // Bad directories.
        (
            json!({"container_id": "c", "sandbox": "rel/sb"}).to_string(),
            "sandbox rel/sb must be absolute",
        ),
        (
            json!({"container_id": "c", "sandbox": ""}).to_string(),
            "must be absolute",
        ),
        (
            json!({"container_id": "c", "sandbox": "/nonexistent/berth/sb"}).to_string(),
            "is not a directory",
        ),
        (
            json!({"container_id": "c", "sandbox": file}).to_string(),
            "is not a directory",
        ),
        (
            ok(json!({"rootfs": "relative"})),
            "rootfs relative must be absolute",
        ),
        (
            ok(json!({"rootfs": "/nonexistent/berth/rootfs"})),
            "rootfs /nonexistent/berth/rootfs is not a directory",
        ),
        // Bad Mesos Resource JSON: the element is named by its index.
        (ok(json!({"resources": [5]})), "resources[0]"),
        (ok(json!({"resources": [[]]})), "resources[0]"),
        (
            ok(
                json!({"resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": "lots"}}]}),
            ),
            "resources[0]",
        ),
        (
            ok(
                json!({"resources": [{"name": "cpus", "type": "FLOATING", "scalar": {"value": 1}}]}),
            ),
            "resources[0]",
        ),
        (
            ok(json!({"resources": [{"type": "SCALAR", "scalar": {"value": 1}}]})),
            "resources[0]",
        ),
        (
            ok(json!({"resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 1},
                 "disk": {"persistence": {"principal": "p"}, "volume": {"mode": "RW", "container_path": "d"}}}
            ]})),
            "resources[1]",
        ),
        (
            ok(json!({"resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 1},
                 "disk": {"persistence": {"id": "x"}, "volume": {"mode": "WRITE", "container_path": "d"}}}
            ]})),
            "resources[2]",
        ),
        // Bad Mesos Volume JSON.
        (ok(json!({"volumes": [null]})), "volumes[0]"),
        (ok(json!({"volumes": ["data"]})), "volumes[0]"),
        (
            ok(json!({"volumes": [{"mode": "XX", "container_path": "a"}]})),
            "volumes[0]",
        ),
        (ok(json!({"volumes": [{"mode": "RW"}]})), "volumes[0]"),
        (
            ok(json!({"volumes": [{"container_path": "a"}]})),
            "volumes[0]",
        ),
        (
            ok(json!({"volumes": [{"mode": "RW", "container_path": 7}]})),
            "volumes[0]",
        ),
        (
            ok(json!({"volumes": [{"mode": "RW", "container_path": "a",
            "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": "d", "name": 5}}}]})),
            "volumes[0]",
        ),
        (
            ok(json!({"volumes": [{"mode": "RW", "container_path": "a",
            "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": "d"}}}]})),
            "volumes[0]",
        ),
        (
            ok(json!({"volumes": [{"mode": "RW", "container_path": "a",
            "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF"}}}]})),
            "volumes[0]",
        ),
        // Hostile container ids, as config.
        (ok(json!({"container_id": "../x"})), "container_id"),
        (ok(json!({"container_id": ""})), "container_id"),
        (ok(json!({"container_id": "a/b"})), "container_id"),
        (ok(json!({"container_id": "a\u{0}b"})), "container_id"),
    ];
    for (text, needle) in &cases {
        let what: String = text.chars().take(200).collect();
        match ContainerConfig::from_json(text) {
            Err(ContainerError::Config { reason }) => {
                assert!(
                    reason.contains(needle),
                    "{what:?}: {reason:?} lacks {needle:?}"
                );
            }
            other => panic!("{what:?}: expected a config error naming {needle:?}, got {other:?}"),
        }
    }
    // A duplicated key: whichever value wins, a hostile one is refused.
    let dup = format!(
        "{{\"container_id\": \"ok\", \"container_id\": \"../x\", \"sandbox\": {}}}",
        json!(sbs)
    );
    match ContainerConfig::from_json(&dup) {
        Ok(cfg) => assert_eq!(cfg.container_id, "ok"),
        Err(ContainerError::Config { reason }) => {
            assert!(reason.contains("container_id"), "{reason}")
        }
        Err(other) => panic!("{other:?}"),
    }
    // Unknown fields inside Mesos messages are ignored, as stout does.
    let cfg = ContainerConfig::from_json(&ok(json!({
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "future_field": 1}]
    })))
    .unwrap();
    assert_eq!(cfg.resources.len(), 1);
}

// ------------------------------------------------------------------------------------------
// Volumes that cannot be used as asked: refused before (or undone after) any mount, named.

/// What a case adds to the base config (see [`with`]).
type Extra = Vec<(&'static str, Json)>;

/// A valid base (persistent `pv-1` at `data`, Docker `dv-1` at `ext`) plus `extra`:
/// `(key, value)` appended to `resources` / `volumes`, or merged into `environment`.
fn with(e: &Env, id: &str, extra: &[(&str, Json)]) -> ContainerConfig {
    let mut v = json!({
        "container_id": id,
        "sandbox": e.sandbox,
        "resources": [disk(PV, "db", "RW", "data")],
        "volumes": [docker_volume(DV, "ext")],
        "environment": {},
    });
    for (k, x) in extra {
        match *k {
            "rootfs" => v["rootfs"] = x.clone(),
            "environment" => {
                for (ek, ev) in x.as_object().unwrap() {
                    v["environment"][ek] = ev.clone();
                }
            }
            _ => v[*k].as_array_mut().unwrap().push(x.clone()),
        }
    }
    ContainerConfig::from_json(&v.to_string()).unwrap()
}

#[test]
fn volumes_that_cannot_be_used_are_refused_naming_them_and_leave_nothing() {
    if !privileged("volumes_that_cannot_be_used_are_refused_naming_them_and_leave_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    in_ns(|| async move {
        // (what is added, the volume the error must name, a word of the reason).
        let cases: Vec<(Extra, &str, &str)> = vec![
            (
                vec![("resources", disk("pv-missing", "db", "RW", "m"))],
                "persistent volume pv-missing",
                "does not exist",
            ),
            // Hostile persistence ids and roles: the real layout refuses them; the volume
            // directory would otherwise be the outside directory.
            (
                vec![("resources", disk("../../../../outside", "db", "RW", "m"))],
                "persistent volume ../../../../outside",
                "",
            ),
            (
                vec![("resources", disk("..", "db", "RW", "m"))],
                "persistent volume ..",
                "",
            ),
            (
                vec![("resources", disk("pv-1", "../../../..", "RW", "m"))],
                "persistent volume pv-1",
                "",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "s", "source": {"type": "SANDBOX_PATH"}}),
                )],
                "volumes[1]",
                "without sandbox_path",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "s",
                           "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "p"}}}),
                )],
                "sandbox path p",
                "PARENT",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "s",
                           "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "../outside"}}}),
                )],
                "sandbox path ../outside",
                "'..'",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "s",
                           "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "/etc"}}}),
                )],
                "sandbox path /etc",
                "relative",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "s",
                           "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": ""}}}),
                )],
                "sandbox path ",
                "relative",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RO", "container_path": "h",
                           "source": {"type": "HOST_PATH", "host_path": {"path": "etc"}}}),
                )],
                "host path etc",
                "absolute and exist",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RO", "container_path": "h",
                           "source": {"type": "HOST_PATH", "host_path": {"path": "/nonexistent/berth"}}}),
                )],
                "host path /nonexistent/berth",
                "absolute and exist",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RO", "container_path": "h", "host_path": "relative/legacy"}),
                )],
                "host path relative/legacy",
                "absolute and exist",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "d", "source": {"type": "DOCKER_VOLUME"}}),
                )],
                "volumes[1]",
                "docker_volume",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "d",
                           "source": {"type": "DOCKER_VOLUME", "docker_volume": {"name": "v"}}}),
                )],
                "volumes[1]",
                "driver",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "d",
                           "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": "../../bin/sh", "name": "v"}}}),
                )],
                "volumes[1]",
                "plugin name",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "d",
                           "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": DRIVER, "name": ".."}}}),
                )],
                "volumes[1]",
                "volume name",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "d",
                           "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": DRIVER, "name": "v",
                               "driver_options": {"parameter": [{"key": "a b", "value": "c"}]}}}}),
                )],
                "volumes[1]",
                "option key",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "c",
                           "source": {"type": "CSI_VOLUME", "csi_volume": {"plugin_name": "p",
                               "static_provisioning": {"volume_id": "v", "volume_capability": {"mount": {}, "access_mode": {"mode": "SINGLE_NODE_WRITER"}}}}}}),
                )],
                "CSI volume p/v",
                "no CSI plugin",
            ),
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "i",
                           "source": {"type": "SECRET", "secret": {"type": "REFERENCE", "reference": {"name": "db"}}}}),
                )],
                "secret volume i",
                "--secret-dir",
            ),
            (
                vec![("volumes", json!({"mode": "RW", "container_path": "i"}))],
                "volumes[1]",
                "not supported",
            ),
            // An unknown source type is dropped by the Mesos JSON codec (an optional enum), as
            // stout does; the plan then refuses the volume.
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "b", "source": {"type": "NO_SUCH_TYPE"}}),
                )],
                "volumes[1]",
                "not supported",
            ),
            (
                vec![("volumes", docker_volume(DV, "other"))],
                "Docker volume memfake/dv-1",
                "used twice",
            ),
            (
                vec![("resources", disk(PV, "db", "RO", "ext"))],
                "Docker volume memfake/dv-1",
                "used by another volume",
            ),
            (
                vec![("environment", json!({"DVDI_VOLUME_NAME0": "x"}))],
                "DVDI_VOLUME_* environment",
                "DVDI_VOLUME_NAME0",
            ),
            (
                vec![(
                    "environment",
                    json!({"DVDI_VOLUME_NAME": "x", "DVDI_VOLUME_CONTAINERPATH": "relative"}),
                )],
                "DVDI_VOLUME_* environment",
                "DVDI_VOLUME_CONTAINERPATH",
            ),
            (
                vec![(
                    "environment",
                    json!({"DVDI_VOLUME_NAME": "x", "DVDI_VOLUME_CONTAINERPATH": "/a/../../etc"}),
                )],
                "DVDI_VOLUME_* environment",
                "DVDI_VOLUME_CONTAINERPATH",
            ),
            (
                vec![("environment", json!({"DVDI_VOLUME_DRIVER": DRIVER}))],
                "DVDI_VOLUME_* environment",
                "DVDI_VOLUME_DRIVER",
            ),
            (
                vec![(
                    "environment",
                    json!({"DVDI_VOLUME_NAME": "x", "DVDI_VOLUME_EXPLICITCREATE": "maybe"}),
                )],
                "DVDI_VOLUME_* environment",
                "DVDI_VOLUME_EXPLICITCREATE",
            ),
            (
                vec![(
                    "environment",
                    json!({"DVDI_VOLUME_NAME": "x", "DVDI_VOLUME_DRIVER": DRIVER,
                                            "DVDI_VOLUME_CONTAINERPATH": "/mnt/x"}),
                )],
                "Docker volume memfake/x (DVDI environment)",
                "without a rootfs",
            ),
            // Failures after other volumes are mounted: everything is undone.
            (
                vec![(
                    "volumes",
                    json!({"mode": "RW", "container_path": "zz",
                    "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": "nope", "name": "v"}}}),
                )],
                "Docker volume nope/v",
                "",
            ),
            (
                vec![("volumes", docker_volume("missing", "zz"))],
                "Docker volume memfake/missing",
                "",
            ),
        ];
        for (n, (extra, volume, needle)) in cases.iter().enumerate() {
            let e = env(&base.join(format!("v{n}"))).await;
            let before = mount_ids();
            let outside = snapshot(&e.outside);
            let cfg = with(&e, "c", extra);
            let err = e.iso.prepare(&cfg).await.unwrap_err();
            let what = format!("case {n} ({volume})");
            assert_eq!(volume_of(&err), Some(*volume), "{what}: {err:?}");
            let text = err.to_string();
            assert!(
                text.contains(volume) && text.contains(needle),
                "{what}: {text}"
            );
            assert_no_trace(&e, "c", &before, &what);
            assert_eq!(snapshot(&e.outside), outside, "{what}");
        }

        // A driver that refuses Mount after the persistent volume is mounted: undone, named.
        let e = env(&base.join("mount-fails")).await;
        let before = mount_ids();
        e.driver.fail(Endpoint::Mount, Some("backend down"));
        let err = e.iso.prepare(&with(&e, "c", &[])).await.unwrap_err();
        assert!(
            matches!(&err, ContainerError::Dvdi { volume, .. } if volume == "Docker volume memfake/dv-1"),
            "{err:?}"
        );
        assert!(err.to_string().contains("backend down"), "{err}");
        assert_no_trace(&e, "c", &before, "mount fails");
        e.driver.fail(Endpoint::Mount, None);
        // The driver mounts, but its mount point does not exist: the bind fails, and the
        // driver's Mount is balanced by an Unmount.
        let e2 = env(&base.join("no-mount-point")).await;
        let before2 = mount_ids();
        e2.driver.create("nodir", &BTreeMap::new()).await.unwrap();
        let err = e2
            .iso
            .prepare(&with(
                &e2,
                "c",
                &[("volumes", docker_volume("nodir", "zz"))],
            ))
            .await
            .unwrap_err();
        assert_eq!(
            volume_of(&err),
            Some("Docker volume memfake/nodir"),
            "{err:?}"
        );
        assert_no_trace(&e2, "c", &before2, "no mount point");
        assert!(e2.driver.mounted_ids("nodir").is_empty());
        assert!(e2.manager.load(DRIVER, "nodir").unwrap().is_none());
        let calls: Vec<_> = e2
            .driver
            .calls()
            .into_iter()
            .filter(|(ep, _, _)| matches!(ep, Endpoint::Mount | Endpoint::Unmount))
            .collect();
        assert_eq!(
            calls,
            [
                (Endpoint::Mount, DV.to_owned(), "c".to_owned()),
                (Endpoint::Mount, "nodir".to_owned(), "c".to_owned()),
                (Endpoint::Unmount, "nodir".to_owned(), "c".to_owned()),
                (Endpoint::Unmount, DV.to_owned(), "c".to_owned()),
            ]
        );
        // And then it works.
        e.iso.prepare(&with(&e, "c", &[])).await.unwrap();
        e.iso.cleanup("c").await.unwrap();
        assert_no_trace(&e, "c", &before, "after the retry");
    });
}

// ------------------------------------------------------------------------------------------
// Container paths from the escape corpus.

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Mounted at this path relative to the root (`MIRROR`: the outside directory's path
    /// inside the root).
    Inside(&'static str),
    /// Refused with an error naming the volume.
    Refused,
    /// Either, as long as it is confined and cleaned up.
    Confined,
}

struct Case {
    name: &'static str,
    path: String,
    setup: fn(&Setup),
    expect: Expect,
    /// The path has control characters (the Docker volume specs refuse them).
    control: bool,
}

/// What a case's set-up sees: the root the container path resolves in, and the outside.
struct Setup {
    root: PathBuf,
    outside: PathBuf,
}

fn none(_: &Setup) {}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap().to_path_buf()
}

fn dir_cases() -> Vec<Case> {
    use Expect::{Confined, Inside, Refused};
    let c = |name, path: &str, setup: fn(&Setup), expect| Case {
        name,
        path: path.to_owned(),
        setup,
        expect,
        control: false,
    };
    let long_component = "x".repeat(256);
    let long_path = vec!["d".repeat(200); 24].join("/");
    // Under PATH_MAX inside the root (4090 bytes), over it as a host path.
    let mut near_limit = vec!["e".repeat(200); 20];
    near_limit.push("e".repeat(70));
    let near_limit = near_limit.join("/");
    assert_eq!(near_limit.len(), 4090);
    vec![
        c("dotdot", "../x", none, Refused),
        c("dotdot after a component", "a/../../x", none, Refused),
        c("dotdot deep", "a/b/../../../x", none, Refused),
        c("dotdot at the end", "a/..", none, Refused),
        c("dot then dotdot", "./../x", none, Refused),
        // Refused in the sandbox (a leading `.`); `/./x` is `/x` in the rootfs.
        c("dot first", "./x", none, Confined),
        c("the root itself", ".", none, Refused),
        c("the root itself, with a slash", "./", none, Refused),
        c("empty path", "", none, Refused),
        c("plain", "data", none, Inside("data")),
        c(
            "nested, created",
            "data/nested/deep",
            none,
            Inside("data/nested/deep"),
        ),
        c(
            "redundant separators and inner dots",
            "a/./b//c/",
            none,
            Inside("a/b/c"),
        ),
        c(
            "absolute symlink to the outside (dangling inside)",
            "abs",
            |s| symlink(&s.outside, s.root.join("abs")).unwrap(),
            Refused,
        ),
        c(
            "below an absolute symlink to the outside",
            "abs/victim",
            |s| symlink(&s.outside, s.root.join("abs")).unwrap(),
            Refused,
        ),
        c(
            "absolute symlink confined to its mirror inside the root",
            "abs_mirror",
            |s| {
                symlink(&s.outside, s.root.join("abs_mirror")).unwrap();
                mkdirs(&s.root.join(rel(&s.outside)));
            },
            Inside("MIRROR"),
        ),
        c(
            "relative symlink climbing (dangling inside)",
            "rel",
            |s| symlink("../outside", s.root.join("rel")).unwrap(),
            Refused,
        ),
        c(
            "relative symlink climbing far, clamped at the root",
            "rel_deep",
            |s| {
                symlink(
                    "../../../../../../../../../../outside",
                    s.root.join("rel_deep"),
                )
                .unwrap();
                mkdirs(&s.root.join("outside"));
            },
            Inside("outside"),
        ),
        c(
            "nested symlink climbing to a victim",
            "dir/up",
            |s| {
                mkdirs(&s.root.join("dir"));
                symlink("../../outside/victim", s.root.join("dir/up")).unwrap();
            },
            Refused,
        ),
        c(
            "symlink to a file outside",
            "sneaky",
            |s| symlink("../outside/precious", s.root.join("sneaky")).unwrap(),
            Refused,
        ),
        c(
            "symlink to a host file, as a directory",
            "passwd/x",
            |s| symlink("/etc/passwd", s.root.join("passwd")).unwrap(),
            Refused,
        ),
        c(
            "symlink loop",
            "loop1",
            |s| {
                symlink("loop2", s.root.join("loop1")).unwrap();
                symlink("loop1", s.root.join("loop2")).unwrap();
            },
            Refused,
        ),
        c(
            "self loop under a component",
            "self/x",
            |s| symlink("self", s.root.join("self")).unwrap(),
            Refused,
        ),
        c(
            "symlink to /",
            "to_root",
            |s| symlink("/", s.root.join("to_root")).unwrap(),
            Refused,
        ),
        c(
            "symlink to ..",
            "dotdot_link",
            |s| symlink("..", s.root.join("dotdot_link")).unwrap(),
            Refused,
        ),
        c(
            "through a symlink to / into a new directory",
            "via_root/data2",
            |s| symlink("/", s.root.join("via_root")).unwrap(),
            Inside("data2"),
        ),
        c(
            "through a symlink to /etc (dangling inside)",
            "etc_link/x",
            |s| symlink("/etc", s.root.join("etc_link")).unwrap(),
            Refused,
        ),
        c(
            "through a symlink to /etc, confined to the root's etc",
            "etc_link/x",
            |s| {
                mkdirs(&s.root.join("etc"));
                symlink("/etc", s.root.join("etc_link")).unwrap();
            },
            Inside("etc/x"),
        ),
        c(
            "intermediate absolute symlink to an existing directory",
            "intermediate/sub",
            |s| {
                mkdirs(&s.root.join("existing"));
                symlink("/existing", s.root.join("intermediate")).unwrap();
            },
            Inside("existing/sub"),
        ),
        c(
            "existing file where a directory is needed",
            "existing_file",
            |s| std::fs::write(s.root.join("existing_file"), b"f").unwrap(),
            Refused,
        ),
        c(
            "a file in the middle of the path",
            "not_a_dir/child",
            |s| std::fs::write(s.root.join("not_a_dir"), b"f").unwrap(),
            Refused,
        ),
        c(
            "magic link through a procfs inside the root",
            "m/x",
            |s| {
                use std::os::unix::ffi::OsStrExt;
                let proc_in_root = mkdirs(&s.root.join("proc"));
                LinuxMounter::new()
                    .bind(Path::new("/proc"), &proc_in_root, &BindOptions::default())
                    .unwrap();
                let mut target = b"/proc/self/root".to_vec();
                target.extend_from_slice(s.outside.as_os_str().as_bytes());
                symlink(std::ffi::OsStr::from_bytes(&target), s.root.join("m")).unwrap();
            },
            Refused,
        ),
        c("NUL byte", "a\0b", none, Refused),
        c(
            "component longer than 255 bytes",
            &long_component,
            none,
            Refused,
        ),
        c("path longer than PATH_MAX", &long_path, none, Confined),
        c(
            "path within PATH_MAX in the root, beyond it on the host",
            &near_limit,
            none,
            Confined,
        ),
        c(
            "unicode",
            "ünïcödé/データ/😀",
            none,
            Inside("ünïcödé/データ/😀"),
        ),
        Case {
            name: "spaces, newline, tab, backslash",
            path: "with space/and\nnewline\tand\\back".to_owned(),
            setup: none,
            expect: Inside("with space/and\nnewline\tand\\back"),
            control: true,
        },
    ]
}

fn file_cases() -> Vec<Case> {
    use Expect::{Inside, Refused};
    let c = |name, path: &str, setup: fn(&Setup), expect| Case {
        name,
        path: path.to_owned(),
        setup,
        expect,
        control: false,
    };
    vec![
        c(
            "file at a new file mount point",
            "etc/hosts",
            none,
            Inside("etc/hosts"),
        ),
        c(
            "file over an existing file",
            "existing_file",
            |s| std::fs::write(s.root.join("existing_file"), b"f").unwrap(),
            Inside("existing_file"),
        ),
        c(
            "file through an absolute symlink to a host file",
            "passwd",
            |s| symlink("/etc/passwd", s.root.join("passwd")).unwrap(),
            Refused,
        ),
        c(
            "file through a relative symlink to an outside file",
            "sneaky",
            |s| symlink("../outside/precious", s.root.join("sneaky")).unwrap(),
            Refused,
        ),
        c(
            "file where a directory is",
            "a_dir",
            |s| {
                mkdirs(&s.root.join("a_dir"));
            },
            Refused,
        ),
        c("file at ..", "../hostfile", none, Refused),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Persistent,
    DockerVolume,
    DvdiEnv,
    SandboxPath,
    HostFile,
    Secret,
}

impl Kind {
    /// The names an error about this volume may carry.
    fn names(self, e: &Env) -> Vec<String> {
        match self {
            Self::Persistent => vec![format!("persistent volume {PV}")],
            Self::DockerVolume => vec![format!("Docker volume {DRIVER}/{DV}"), "volumes[0]".into()],
            Self::DvdiEnv => vec![
                format!("Docker volume {DRIVER}/{DV} (DVDI environment)"),
                "DVDI_VOLUME_* environment".into(),
            ],
            Self::SandboxPath => vec!["sandbox path src".into()],
            Self::HostFile => vec![format!("host path {}", e.hostfile.display())],
            // Named by its container path (see `run_path_case`).
            Self::Secret => Vec::new(),
        }
    }

    /// What the mount shows (a marker file in the source, or the file itself).
    fn marker(self) -> &'static [u8] {
        match self {
            Self::Persistent => b"persistent",
            Self::DockerVolume | Self::DvdiEnv => b"docker",
            Self::SandboxPath => b"sandbox",
            Self::HostFile => b"host file",
            Self::Secret => b"secret file",
        }
    }
}

fn path_config(e: &Env, kind: Kind, path: &str, absolute: bool) -> ContainerConfig {
    let mut v = json!({
        "container_id": "c",
        "sandbox": e.sandbox,
        "rootfs": if absolute { json!(e.rootfs) } else { Json::Null },
    });
    match kind {
        Kind::Persistent => v["resources"] = json!([disk(PV, "db", "RO", path)]),
        Kind::DockerVolume => v["volumes"] = json!([docker_volume(DV, path)]),
        Kind::DvdiEnv => {
            v["environment"] = json!({
                "DVDI_VOLUME_NAME": DV, "DVDI_VOLUME_DRIVER": DRIVER, "DVDI_VOLUME_CONTAINERPATH": path,
            });
        }
        Kind::SandboxPath => {
            v["volumes"] = json!([{"mode": "RO", "container_path": path,
                "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "src"}}}]);
        }
        Kind::HostFile => {
            v["volumes"] = json!([{"mode": "RO", "container_path": path,
                "source": {"type": "HOST_PATH", "host_path": {"path": e.hostfile}}}]);
        }
        Kind::Secret => {
            // "secret file"
            v["volumes"] = json!([{"mode": "RO", "container_path": path,
                "source": {"type": "SECRET", "secret": {"type": "VALUE", "value": {"data": "c2VjcmV0IGZpbGU="}}}}]);
        }
    }
    ContainerConfig::from_json(&v.to_string()).unwrap()
}

/// Runs one (case, kind, relative/absolute) in a fresh set-up under `base`.
async fn run_path_case(base: &Path, case: &Case, kind: Kind, absolute: bool) {
    let e = env(base).await;
    let root = if absolute { &e.rootfs } else { &e.sandbox };
    let setup = Setup {
        root: root.clone(),
        outside: e.outside.clone(),
    };
    (case.setup)(&setup);
    let path = if absolute {
        format!("/{}", case.path)
    } else {
        case.path.clone()
    };
    let what = format!(
        "case {:?} ({path:?}), {kind:?}, {}",
        case.name,
        if absolute {
            "in the rootfs"
        } else {
            "in the sandbox"
        }
    );
    let outside = snapshot(&e.outside);
    let before = mount_ids();

    let got = e.iso.prepare(&path_config(&e, kind, &path, absolute)).await;

    // Whatever the outcome: nothing outside changed, nothing mounted outside the root (but
    // a secret's own tmpfs under the work dir).
    assert_eq!(snapshot(&e.outside), outside, "{what}: outside changed");
    let secrets = e.work.join("containers-secrets/c");
    for m in new_mounts(&before) {
        assert!(
            m.starts_with(root) || (kind == Kind::Secret && m == secrets),
            "{what}: new mount {} is outside the root",
            m.display()
        );
    }
    assert!(
        !MountTable::read_current()
            .unwrap()
            .is_mount_point(Path::new("/etc/passwd")),
        "{what}"
    );
    let docker_like = matches!(kind, Kind::DockerVolume | Kind::DvdiEnv);
    let expect = if docker_like && case.control {
        Expect::Refused
    } else {
        case.expect
    };
    match got {
        Err(err) => {
            if expect == Expect::Confined {
                eprintln!("{what}: refused: {err}");
            }
            if let Expect::Inside(want) = expect {
                panic!("{what}: expected a mount at {want:?}, got {err}");
            }
            let names = if kind == Kind::Secret {
                vec![format!("secret volume {path}")]
            } else {
                kind.names(&e)
            };
            let named = volume_of(&err).unwrap_or_else(|| panic!("{what}: untyped {err:?}"));
            assert!(
                names.iter().any(|n| n == named),
                "{what}: names {named:?}: {err}"
            );
            assert!(err.to_string().contains(named), "{what}: {err}");
            assert_no_trace(&e, "c", &before, &what);
        }
        Ok(prepared) => {
            assert!(
                expect != Expect::Refused,
                "{what}: expected a refusal, got {prepared:?}"
            );
            assert_eq!(prepared.len(), 1, "{what}");
            let target = &prepared[0].target;
            assert!(target.starts_with(root), "{what}: {}", target.display());
            if expect == Expect::Confined {
                eprintln!("{what}: mounted at {}", target.display());
            }
            if let Expect::Inside(want) = expect {
                let want = if want == "MIRROR" {
                    root.join(rel(&e.outside))
                } else {
                    root.join(want)
                };
                assert_eq!(target, &want, "{what}");
            }
            let t = MountTable::read_current().unwrap();
            assert!(
                t.is_mount_point(target),
                "{what}: not mounted at {}",
                target.display()
            );
            // (A target longer than PATH_MAX cannot be opened by path; the mount table has it.)
            if target.as_os_str().len() < 4000 {
                let seen = if matches!(kind, Kind::HostFile | Kind::Secret) {
                    std::fs::read(target)
                } else {
                    std::fs::read(target.join(MARKER))
                };
                assert_eq!(seen.unwrap(), kind.marker(), "{what}");
            }
            if docker_like {
                assert_eq!(
                    e.driver.mounted_ids(DV),
                    BTreeSet::from(["c".to_owned()]),
                    "{what}"
                );
            }
            e.iso
                .cleanup("c")
                .await
                .unwrap_or_else(|err| panic!("{what}: cleanup: {err}"));
            assert_no_trace(&e, "c", &before, &format!("{what}, cleaned up"));
        }
    }
    assert_eq!(snapshot(&e.outside), outside, "{what}: outside changed");
    // The set-up's own mounts (the procfs of the magic-link case).
    LinuxMounter::new()
        .unmount_all_at_or_below(&e.base, &UnmountOptions::default())
        .unwrap();
}

#[test]
fn hostile_container_paths_are_refused_or_confined_for_every_volume_kind() {
    if !privileged("hostile_container_paths_are_refused_or_confined_for_every_volume_kind") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    in_ns(|| async move {
        let mut n = 0;
        let cases = dir_cases();
        assert!(cases.len() >= 30, "{} cases", cases.len());
        for case in &cases {
            for kind in [
                Kind::Persistent,
                Kind::DockerVolume,
                Kind::SandboxPath,
                Kind::DvdiEnv,
            ] {
                // The DVDI contract only has absolute container paths.
                for absolute in [false, true] {
                    if kind == Kind::DvdiEnv && !absolute {
                        continue;
                    }
                    n += 1;
                    run_path_case(&base.join(format!("p{n}")), case, kind, absolute).await;
                }
            }
        }
        for case in &file_cases() {
            for kind in [Kind::HostFile, Kind::Secret] {
                for absolute in [false, true] {
                    n += 1;
                    run_path_case(&base.join(format!("p{n}")), case, kind, absolute).await;
                }
            }
        }
        eprintln!("{n} hostile container paths checked");
    });
}

#[test]
fn absolute_container_paths_need_a_rootfs_and_never_cover_the_host() {
    if !privileged("absolute_container_paths_need_a_rootfs_and_never_cover_the_host") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    in_ns(|| async move {
        let mut n = 0;
        for path in ["/etc", "/tmp/x", "/", "//", "/."] {
            for kind in [
                Kind::Persistent,
                Kind::DockerVolume,
                Kind::SandboxPath,
                Kind::DvdiEnv,
            ] {
                for with_rootfs in [false, true] {
                    if with_rootfs && !matches!(path, "/" | "//" | "/.") {
                        continue;
                    }
                    n += 1;
                    let e = env(&base.join(format!("a{n}"))).await;
                    let before = mount_ids();
                    let what = format!("{path:?} {kind:?} rootfs {with_rootfs}");
                    let err = e
                        .iso
                        .prepare(&path_config(&e, kind, path, with_rootfs))
                        .await
                        .unwrap_err();
                    let named = volume_of(&err).unwrap_or_else(|| panic!("{what}: {err:?}"));
                    assert!(kind.names(&e).iter().any(|x| x == named), "{what}: {err}");
                    let text = err.to_string();
                    if !with_rootfs && named != "volumes[0]" && named != "DVDI_VOLUME_* environment"
                    {
                        assert!(text.contains("without a rootfs"), "{what}: {text}");
                    }
                    assert_no_trace(&e, "c", &before, &what);
                }
            }
        }
    });
}

// ------------------------------------------------------------------------------------------
// Container ids from the escape corpus.

#[test]
fn hostile_container_ids_are_refused_before_any_side_effect() {
    if !privileged("hostile_container_ids_are_refused_before_any_side_effect") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    in_ns(|| async move {
        let refused = [
            String::new(),
            ".".into(),
            "..".into(),
            "../x".into(),
            "../../outside".into(),
            "a/b".into(),
            "/abs".into(),
            "a/".into(),
            "a\0b".into(),
            "with\nnewline".into(),
            "tab\there".into(),
            "esc\u{1b}[31m".into(),
            "del\u{7f}".into(),
            "x".repeat(256),
            "😀".repeat(64),
            // One file name holds the record `<id>.json`: ids are limited to 250 bytes.
            "x".repeat(251),
        ];
        for (n, id) in refused.iter().enumerate() {
            let e = env(&base.join(format!("r{n}"))).await;
            // Sentinels where a hostile id could point the record directory.
            std::fs::write(e.work.join("x"), b"keep").unwrap();
            mkdirs(&e.work.join("containers"));
            std::fs::write(e.work.join("containers/sentinel"), b"keep").unwrap();
            let outside = snapshot(&e.outside);
            let work_before = snapshot(&e.work);
            let before = mount_ids();
            let what = format!("id {id:?}");
            // Built in code, past `from_json`'s own check: `prepare` checks the id itself.
            let mut cfg = with(&e, "ok", &[]);
            cfg.container_id.clone_from(id);
            let err = e.iso.prepare(&cfg).await.unwrap_err();
            assert!(
                matches!(&err, ContainerError::Config { reason } if reason.contains("container_id")),
                "{what}: {err:?}"
            );
            // cleanup and load refuse it too, touching nothing.
            let err = e.iso.cleanup(id).await.unwrap_err();
            assert!(err.to_string().contains("container_id"), "{what}: {err}");
            assert!(e.iso.load(id).is_err(), "{what}");
            assert_eq!(
                snapshot(&e.work),
                work_before,
                "{what}: the work dir changed"
            );
            assert_eq!(snapshot(&e.outside), outside, "{what}");
            assert!(
                e.driver
                    .calls()
                    .iter()
                    .all(|(ep, _, _)| *ep == Endpoint::Create),
                "{what}: {:?}",
                e.driver.calls()
            );
            assert!(e.manager.load(DRIVER, DV).unwrap().is_none(), "{what}");
            assert_eq!(new_mounts(&before), Vec::<PathBuf>::new(), "{what}");
            assert!(e.iso.status().unwrap().is_empty(), "{what}");
        }
    });
}

#[test]
fn odd_but_valid_container_ids_are_prepared_and_cleaned_under_their_own_name() {
    if !privileged("odd_but_valid_container_ids_are_prepared_and_cleaned_under_their_own_name") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    in_ns(|| async move {
        let ids = [
            "with space".to_owned(),
            "ünïcödé-データ-😀".into(),
            ".hidden".into(),
            "...".into(),
            "-rf".into(),
            "a:b".into(),
            "back\\slash".into(),
            "parent.child".into(),
            "x".repeat(250),
            format!("{}ab", "😀".repeat(62)),
        ];
        for (n, id) in ids.iter().enumerate() {
            let e = env(&base.join(format!("i{n}"))).await;
            let outside = snapshot(&e.outside);
            let before = mount_ids();
            let what = format!("id {id:?}");
            let prepared = e
                .iso
                .prepare(&with(&e, id, &[]))
                .await
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_eq!(prepared.len(), 2, "{what}");
            for p in &prepared {
                assert!(p.target.starts_with(&e.sandbox), "{what}: {p:?}");
            }
            // The record is the container's own file, directly under `containers`.
            assert!(
                e.work
                    .join("containers")
                    .join(format!("{id}.json"))
                    .is_file(),
                "{what}"
            );
            assert_eq!(e.iso.load(id).unwrap().unwrap().container_id, *id);
            assert_eq!(e.iso.status().unwrap()[0].container_id, *id);
            let rec = e.manager.load(DRIVER, DV).unwrap().unwrap();
            assert_eq!(rec.consumers.keys().collect::<Vec<_>>(), [id], "{what}");
            assert_eq!(
                e.driver.mounted_ids(DV),
                BTreeSet::from([id.clone()]),
                "{what}"
            );
            e.iso
                .cleanup(id)
                .await
                .unwrap_or_else(|err| panic!("{what}: {err}"));
            assert_no_trace(&e, id, &before, &what);
            let calls: Vec<(Endpoint, String)> = e
                .driver
                .calls()
                .into_iter()
                .filter(|(ep, _, _)| matches!(ep, Endpoint::Mount | Endpoint::Unmount))
                .map(|(ep, _, cid)| (ep, cid))
                .collect();
            assert_eq!(
                calls,
                [
                    (Endpoint::Mount, id.clone()),
                    (Endpoint::Unmount, id.clone())
                ],
                "{what}"
            );
            assert_eq!(snapshot(&e.outside), outside, "{what}");
        }
    });
}

// ------------------------------------------------------------------------------------------
// The task moves things around after prepare.

/// A task renames the (non-mount-point) parent of its mount point after prepare, and may put a
/// symlink to the outside in its place. Cleanup must still take the mount away (or keep the
/// record and say so), never lose it, and never unmount anything outside.
#[test]
fn cleanup_after_the_task_moved_its_mount_point_leaves_nothing_mounted() {
    if !privileged("cleanup_after_the_task_moved_its_mount_point_leaves_nothing_mounted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    in_ns(|| async move {
        for (n, plant_symlink) in [true, false].into_iter().enumerate() {
            let e = env(&base.join(format!("m{n}"))).await;
            let before = mount_ids();
            let what = format!("symlink planted: {plant_symlink}");
            let prepared = e
                .iso
                .prepare(&path_config(&e, Kind::Persistent, "a/b", false))
                .await
                .unwrap();
            assert_eq!(prepared[0].target, e.sandbox.join("a/b"));
            // What the task can do inside its sandbox: `a` is not a mount point.
            std::fs::rename(e.sandbox.join("a"), e.sandbox.join("moved")).unwrap();
            if plant_symlink {
                mkdirs(&e.outside.join("b"));
                symlink(&e.outside, e.sandbox.join("a")).unwrap();
            }
            let outside = snapshot(&e.outside);
            let cleaned = e.iso.cleanup("c").await;
            assert_eq!(snapshot(&e.outside), outside, "{what}");
            let left = new_mounts(&before);
            for m in &left {
                assert!(m.starts_with(&e.sandbox), "{what}: {}", m.display());
            }
            match cleaned {
                Ok(()) => {
                    assert!(
                        left.is_empty(),
                        "{what}: cleanup reported success, removed the record ({}), but left {left:?} mounted",
                        if e.iso.load("c").unwrap().is_none() {
                            "gone"
                        } else {
                            "kept"
                        }
                    );
                    assert!(e.iso.load("c").unwrap().is_none(), "{what}");
                }
                Err(err) => {
                    assert_eq!(
                        volume_of(&err),
                        Some("persistent volume pv-1"),
                        "{what}: {err}"
                    );
                    assert!(
                        e.iso.load("c").unwrap().is_some(),
                        "{what}: error but no record"
                    );
                }
            }
            LinuxMounter::new()
                .unmount_all_at_or_below(&e.base, &UnmountOptions::default())
                .unwrap();
        }
    });
}
