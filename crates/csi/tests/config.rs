//! `CSIPluginInfo` directory loading.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::path::PathBuf;

use berth_csi::CsiError;
use berth_csi::config::{PluginKind, load_dir};

#[test]
fn empty_dir_is_valid() {
    let d = tempfile::tempdir().unwrap();
    let c = load_dir(d.path()).unwrap();
    assert!(c.plugins.is_empty() && c.errors.is_empty());
}

#[test]
fn missing_dir_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        load_dir(&d.path().join("nope")),
        Err(CsiError::Config { .. })
    ));
}

#[test]
fn bad_files_are_reported_and_skipped() {
    let d = tempfile::tempdir().unwrap();
    let w = |n: &str, t: &str| std::fs::write(d.path().join(n), t).unwrap();
    w(
        "a-good.json",
        r#"{"type":"org.apache.mesos.csi.test","endpoints":[{"csi_service":"NODE_SERVICE","endpoint":"unix:///run/p.sock"}],"target_path_root":"/mnt/csi","target_path_exists":true}"#,
    );
    w("b-syntax.json", "{not json");
    w("c-neither.json", r#"{"type":"t.neither"}"#);
    w(
        "d-both.json",
        r#"{"type":"t.both","endpoints":[{"csi_service":"NODE_SERVICE","endpoint":"/p.sock"}],"containers":[{"services":["NODE_SERVICE"],"command":{"value":"/bin/p"}}]}"#,
    );
    w(
        "e-dup.json",
        r#"{"type":"org.apache.mesos.csi.test","endpoints":[{"csi_service":"NODE_SERVICE","endpoint":"/other.sock"}]}"#,
    );
    w(
        "f-managed.json",
        r#"{"type":"t.managed","name":"n1","containers":[{"services":["CONTROLLER_SERVICE","NODE_SERVICE"],"command":{"shell":false,"value":"/usr/bin/plugin","arguments":["plugin","--v"]}}]}"#,
    );
    w(
        "g-relroot.json",
        r#"{"type":"t.rel","endpoints":[{"csi_service":"NODE_SERVICE","endpoint":"/p.sock"}],"target_path_root":"rel"}"#,
    );
    w(
        "h-badep.json",
        r#"{"type":"t.ep","endpoints":[{"csi_service":"NODE_SERVICE","endpoint":"tcp://x:1"}]}"#,
    );
    w(
        "i-dots.json",
        r#"{"type":"..","endpoints":[{"csi_service":"NODE_SERVICE","endpoint":"/p.sock"}]}"#,
    );
    w(
        "j-nonode.json",
        r#"{"type":"t.ctl","endpoints":[{"csi_service":"CONTROLLER_SERVICE","endpoint":"/p.sock"}]}"#,
    );
    std::fs::create_dir(d.path().join("subdir")).unwrap();
    let c = load_dir(d.path()).unwrap();
    assert_eq!(
        c.plugins.keys().collect::<Vec<_>>(),
        ["org.apache.mesos.csi.test", "t.managed"]
    );
    let good = &c.plugins["org.apache.mesos.csi.test"];
    assert_eq!(good.name, "default");
    assert_eq!(
        good.kind,
        PluginKind::Unmanaged {
            node_socket: PathBuf::from("/run/p.sock")
        }
    );
    assert_eq!(
        good.target_path_root.as_deref(),
        Some(std::path::Path::new("/mnt/csi"))
    );
    assert!(good.target_path_exists);
    assert_eq!(c.plugins["t.managed"].name, "n1");
    assert!(matches!(
        c.plugins["t.managed"].kind,
        PluginKind::Managed { .. }
    ));
    let bad: Vec<String> = c
        .errors
        .iter()
        .map(|e| match e {
            CsiError::Config { path, .. } => {
                path.file_name().unwrap().to_string_lossy().into_owned()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        bad,
        [
            "b-syntax.json",
            "c-neither.json",
            "d-both.json",
            "e-dup.json",
            "g-relroot.json",
            "h-badep.json",
            "i-dots.json",
            "j-nonode.json"
        ]
    );
}
