//! `PARENT` sandbox paths and `SECRET` volumes (issue 19 items 1 and 2) against the recording
//! fake: the parent's admission and its record tie, the refusal of the parent's cleanup while
//! a nested container holds a bind into its sandbox (and its end), the config's `parent` key,
//! old records and configs still valid; a secret's tmpfs and read-only bind, its value never
//! in a record nor a `Debug`, the tmpfs taken down at cleanup, at the undo of a failed
//! prepare and by recovery. The privileged end-to-end tests are in
//! `bins/berth-isolator/tests/vol_kinds.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_agent::container::{
    ContainerConfig, ContainerError, Isolator, PersistentVolumes, Source,
};
use berth_agent::error::ErrorCode;
use berth_mount::Mounter;
use berth_mount::fake::{Recorded, RecordingMounter};
use berth_resources::proto;
use common::FakeKernel;
use serde_json::{Value, json};

struct NoVolumes;

impl PersistentVolumes for NoVolumes {
    fn volume_path(&self, _: &proto::Resource) -> Result<PathBuf, String> {
        Err("none".into())
    }
}

struct Env {
    _dir: common::TempDir,
    root: PathBuf,
    work: PathBuf,
    kernel: Arc<FakeKernel>,
}

fn env() -> Env {
    let (dir, root) = common::tempdir();
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    Env {
        _dir: dir,
        root,
        work,
        kernel: Arc::new(FakeKernel(RecordingMounter::new())),
    }
}

impl Env {
    fn isolator(&self) -> Isolator {
        Isolator::new(&self.work, Arc::new(NoVolumes), None)
            .with_mounter(Arc::clone(&self.kernel) as Arc<dyn Mounter>)
    }

    fn sandbox(&self, name: &str) -> PathBuf {
        let s = self.root.join(name);
        std::fs::create_dir_all(&s).unwrap();
        s
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cfg(v: &Value) -> ContainerConfig {
    ContainerConfig::from_json(&v.to_string()).unwrap()
}

fn parent_path(path: &str) -> Value {
    json!({"mode": "RW", "container_path": path,
           "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": path}}})
}

fn task(id: &str, sandbox: &Path, parent: &str) -> ContainerConfig {
    cfg(
        &json!({"container_id": id, "sandbox": sandbox, "parent": {"container_id": parent},
                "volumes": [parent_path("shared")]}),
    )
}

#[test]
fn the_config_takes_a_parent_and_old_configs_stay_valid() {
    let e = env();
    let sb = e.sandbox("sb");
    let old = cfg(&json!({"container_id": "c", "sandbox": sb}));
    assert_eq!(old.parent, None);
    let c = cfg(&json!({"container_id": "c", "sandbox": sb,
                        "parent": {"container_id": "pod", "sandbox": sb}}));
    let p = c.parent.unwrap();
    assert_eq!(
        (p.container_id.as_str(), p.sandbox),
        ("pod", Some(sb.clone()))
    );
    for (bad, says) in [
        (json!({"container_id": "pod", "typo": 1}), "unknown key"),
        (json!({"sandbox": "/x"}), "parent.container_id is required"),
        (json!({"container_id": "../x"}), "parent.container_id"),
        (json!({"container_id": "c"}), "the container itself"),
        (
            json!({"container_id": "pod", "sandbox": "rel"}),
            "must be absolute",
        ),
        (json!("pod"), "parent must be an object"),
    ] {
        let err = ContainerConfig::from_json(
            &json!({"container_id": "c", "sandbox": sb, "parent": bad}).to_string(),
        )
        .unwrap_err();
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_parent_path_binds_from_the_parents_sandbox_and_holds_the_parents_cleanup() {
    let e = env();
    let iso = e.isolator();
    let rt = rt();
    let (pod, sa, sb) = (e.sandbox("pod"), e.sandbox("a"), e.sandbox("b"));
    // No parent in the config; a parent not prepared.
    let no_parent =
        cfg(&json!({"container_id": "a", "sandbox": sa, "volumes": [parent_path("shared")]}));
    let err = iso.plan(&no_parent).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument, "{err}");
    let err = rt
        .block_on(iso.prepare(&task("a", &sa, "pod")))
        .unwrap_err();
    assert!(
        matches!(&err, ContainerError::ParentNotReady { parent, .. } if parent == "pod"),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert!(iso.load("a").unwrap().is_none());

    rt.block_on(iso.prepare(&cfg(&json!({"container_id": "pod", "sandbox": pod}))))
        .unwrap();
    let writes = iso.record_writes();
    let prepared = rt.block_on(iso.prepare(&task("a", &sa, "pod"))).unwrap();
    assert_eq!(iso.record_writes(), writes + 1, "one intent record");
    assert_eq!(prepared[0].source, pod.join("shared"));
    assert_eq!(prepared[0].target, sa.join("shared"));
    assert!(pod.join("shared").is_dir(), "made in the parent's sandbox");
    rt.block_on(iso.prepare(&task("b", &sb, "pod"))).unwrap();
    let rec = iso.load("a").unwrap().unwrap();
    assert_eq!(rec.parent(), Some("pod"));
    assert_eq!(
        rec.volumes[0].source,
        Source::SandboxPath {
            sandbox: pod.clone(),
            path: "shared".into(),
            parent: Some("pod".into()),
        }
    );
    let status = iso.status().unwrap();
    let pod_status = status.iter().find(|c| c.container_id == "pod").unwrap();
    assert_eq!(pod_status.children, ["a", "b"]);

    // The parent's cleanup is refused, and changes nothing: no record write, no unmount.
    let writes = iso.record_writes();
    let err = rt.block_on(iso.cleanup("pod")).unwrap_err();
    assert!(
        matches!(&err, ContainerError::HasChildren { children, .. } if children == &["a", "b"]),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    assert_eq!(iso.record_writes(), writes);
    assert_eq!(
        iso.status()
            .unwrap()
            .iter()
            .find(|c| c.container_id == "pod")
            .unwrap()
            .state,
        "prepared"
    );
    // A new process (index rebuilt from the records) refuses too.
    let again = e.isolator();
    assert!(matches!(
        rt.block_on(again.cleanup("pod")),
        Err(ContainerError::HasChildren { .. })
    ));
    rt.block_on(again.cleanup("a")).unwrap();
    assert!(matches!(
        rt.block_on(again.cleanup("pod")),
        Err(ContainerError::HasChildren { children, .. }) if children == ["b"]
    ));
    rt.block_on(again.cleanup("b")).unwrap();
    rt.block_on(again.cleanup("pod")).unwrap();
    assert_eq!(e.kernel.0.mounted(), Vec::<PathBuf>::new());
    // A parent cleaning up takes no new child.
    rt.block_on(iso.prepare(&cfg(&json!({"container_id": "pod", "sandbox": pod}))))
        .unwrap();
    let mut rec = iso.load("pod").unwrap().unwrap();
    rec.state = berth_agent::container::RecordState::Cleaning;
    std::fs::write(
        e.work.join("containers/pod.json"),
        serde_json::to_vec(&rec).unwrap(),
    )
    .unwrap();
    let err = e.isolator().plan(&task("a", &sa, "pod")).unwrap_err();
    assert!(err.to_string().contains("cleaning up"), "{err}");
}

#[test]
fn a_record_without_the_parent_field_still_loads() {
    let e = env();
    let sb = e.sandbox("sb");
    std::fs::create_dir_all(e.work.join("containers")).unwrap();
    let old = json!({"schema_version": 1, "container_id": "old", "state": "preparing",
        "sandbox": sb, "rootfs": null, "volumes": [{"name": "sandbox path tmp",
        "source": {"kind": "sandbox_path", "sandbox": sb, "path": "tmp"},
        "root": sb, "path_in_root": "tmp", "read_only": false}]});
    std::fs::write(e.work.join("containers/old.json"), old.to_string()).unwrap();
    let rec = e.isolator().load("old").unwrap().unwrap();
    assert_eq!(rec.parent(), None);
    // And is written back the same way (no `parent: null`).
    let text = serde_json::to_string(&rec).unwrap();
    assert!(!text.contains("parent"), "{text}");
}

const SECRET: &[u8] = b"fake-SECRET-value-42";

fn secret_cfg(id: &str, sandbox: &Path, paths: &[&str]) -> ContainerConfig {
    use base64::Engine as _;
    let volumes: Vec<Value> = paths
        .iter()
        .map(|p| {
            json!({"mode": "RW", "container_path": p, "source": {"type": "SECRET", "secret": {
                "type": "VALUE",
                "value": {"data": base64::engine::general_purpose::STANDARD.encode(SECRET)}}}})
        })
        .collect();
    cfg(&json!({"container_id": id, "sandbox": sandbox, "volumes": volumes}))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_secret_gets_a_tmpfs_and_a_read_only_bind_and_is_never_recorded() {
    let e = env();
    let iso = e.isolator();
    let rt = rt();
    let sb = e.sandbox("sb");
    let c = secret_cfg("c", &sb, &["one", "two"]);
    let plan = iso.plan(&c).unwrap();
    assert!(!format!("{plan:?}").contains("fake-SECRET"), "{plan:?}");
    let shown = format!("{c:?}");
    // (prost shows bytes as a list of numbers)
    assert!(
        shown.contains(&format!("{:?}", b"<redacted>".as_slice()))
            && !shown.contains(&format!("{SECRET:?}")),
        "{shown}"
    );
    rt.block_on(iso.prepare(&c)).unwrap();
    let dir = e.work.join("containers-secrets/c");
    let calls = e.kernel.0.calls();
    let tmpfs: Vec<_> = calls
        .iter()
        .filter_map(|r| match r {
            Recorded::MountFilesystem {
                target,
                fstype,
                attrs,
                ..
            } => Some((
                target.clone(),
                fstype.clone(),
                attrs.nosuid && attrs.nodev && attrs.noexec,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        tmpfs,
        [(dir.clone(), "tmpfs".to_owned(), true)],
        "one tmpfs for both"
    );
    let binds: Vec<_> = calls
        .iter()
        .filter_map(|r| match r {
            Recorded::BindInto { source, opts, .. } => Some((source.clone(), opts.attrs.read_only)),
            _ => None,
        })
        .collect();
    assert_eq!(binds, [(dir.join("0"), true), (dir.join("1"), true)]);
    let rec = std::fs::read(e.work.join("containers/c.json")).unwrap();
    assert!(!contains(&rec, SECRET), "{}", String::from_utf8_lossy(&rec));
    let status = iso.status().unwrap();
    assert!(
        status[0].volumes.iter().all(|v| v.read_only && v.mounted),
        "{status:?}"
    );

    rt.block_on(iso.cleanup("c")).unwrap();
    assert!(
        e.kernel
            .0
            .calls()
            .iter()
            .any(|r| matches!(r, Recorded::UnmountAll { path } if path == &dir))
    );
    assert_eq!(e.kernel.0.mounted(), Vec::<PathBuf>::new());
    assert!(!dir.exists());
}

#[test]
fn a_failed_prepare_and_recovery_take_the_secrets_tmpfs_down() {
    let e = env();
    let iso = e.isolator();
    let rt = rt();
    let sb = e.sandbox("sb");
    // A bind fails: the undo takes the other bind and the tmpfs down.
    let err = rt
        .block_on(iso.prepare(&secret_cfg("c", &sb, &["one", "boom"])))
        .unwrap_err();
    assert!(matches!(err, ContainerError::Mount { .. }), "{err}");
    assert_eq!(e.kernel.0.mounted(), Vec::<PathBuf>::new());
    assert!(!e.work.join("containers-secrets/c").exists());
    assert!(iso.load("c").unwrap().is_none());

    // A crash left a tmpfs without its record (a hand-removed record, say): recovery sweeps
    // it; a dead container's secrets go with its cleanup; a live one keeps them.
    rt.block_on(iso.prepare(&secret_cfg("dead", &sb, &["d"])))
        .unwrap();
    let live_sb = e.sandbox("live");
    rt.block_on(iso.prepare(&secret_cfg("live", &live_sb, &["l"])))
        .unwrap();
    let stray = e.work.join("containers-secrets/stray");
    std::fs::create_dir_all(&stray).unwrap();
    e.kernel
        .mount_filesystem(
            Path::new("tmpfs"),
            &stray,
            "tmpfs",
            Default::default(),
            None,
        )
        .unwrap();
    let report = rt
        .block_on(e.isolator().recover(&["live".to_owned()], &[]))
        .unwrap();
    assert_eq!(report.kept, ["live"]);
    assert_eq!(report.cleaned, ["dead"]);
    assert_eq!(report.secrets_swept, ["stray"]);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mounted = e.kernel.0.mounted();
    assert!(
        mounted.contains(&e.work.join("containers-secrets/live")),
        "{mounted:?}"
    );
    assert!(
        !mounted
            .iter()
            .any(|m| m.starts_with(&stray) || m.ends_with("dead"))
    );
    assert!(!stray.exists() && !e.work.join("containers-secrets/dead").exists());
}

#[test]
fn secret_volumes_refuse_what_they_cannot_use() {
    let e = env();
    let iso = e.isolator();
    let sb = e.sandbox("sb");
    let secret = |s: Value| {
        cfg(&json!({"container_id": "c", "sandbox": sb, "volumes": [
            {"mode": "RO", "container_path": "s", "source": {"type": "SECRET", "secret": s}}]}))
    };
    for (s, says) in [
        (
            json!({"type": "REFERENCE", "reference": {"name": "db"}}),
            "--secret-dir",
        ),
        (json!({"type": "VALUE"}), "VALUE secret needs value"),
        (json!({}), "VALUE or REFERENCE"),
    ] {
        let err = iso.plan(&secret(s.clone())).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument, "{s}: {err}");
        assert!(err.to_string().contains(says), "{s}: {err}");
    }
    let no_source = cfg(&json!({"container_id": "c", "sandbox": sb, "volumes": [
        {"mode": "RO", "container_path": "s", "source": {"type": "SECRET"}}]}));
    assert!(
        iso.plan(&no_source)
            .unwrap_err()
            .to_string()
            .contains("SECRET without secret")
    );
    // Too large: refused before anything is written.
    let dir = e.root.join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big"), vec![b'x'; (1 << 20) + 1]).unwrap();
    let iso = e.isolator().with_secret_dir(Some(dir));
    let err = iso
        .plan(&secret(
            json!({"type": "REFERENCE", "reference": {"name": "big"}}),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
}
