//! The dvdcli-compatible command line against the fake plugin: output and exit codes as
//! dvdcli, Mesos's repeated `mount` / single `unmount` made balanced, options never split,
//! `--explicitCreate` accepted, errors on stderr with exit 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use berth_dvdi::PluginRegistry;
use berth_dvdi::cli::dvdcli;
use berth_dvdi::discovery::Discovery;
use berth_dvdi::manager::{ManagerConfig, MountMode, VolumeManager};
use common::{FakePlugin, fast_config};

struct Out {
    code: i32,
    out: String,
    err: String,
}

async fn run(m: &VolumeManager<PluginRegistry>, args: &[&str]) -> Out {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = dvdcli(&args, m, &mut out, &mut err).await;
    Out {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

#[tokio::test]
async fn dvdcli_commands() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let fake = FakePlugin::start(&dir.path().join("run/fake.sock"), &dir.path().join("mnt"));
    let reg = PluginRegistry::new(
        Discovery::with_roots(vec![dir.path().join("run")], vec![]),
        fast_config(),
    );
    let m = VolumeManager::new(
        reg,
        ManagerConfig {
            state_dir: dir.path().join("state"),
            mode: MountMode::PerAgent {
                agent_id: "a1".into(),
            },
            create_missing: false,
            mountinfo: None,
        },
    )
    .unwrap();
    let mp = format!("{}\n", dir.path().join("mnt/v1").display());

    // mount creates implicitly (dvdcli's default) with the options as given, prints the path.
    let r = run(
        &m,
        &[
            "mount",
            "--volumedriver=fake",
            "--volumename",
            "v1",
            "--volumeopts=size=5",
            "--volumeopts",
            "label=a=b,c",
        ],
    )
    .await;
    assert_eq!(
        (r.code, r.out.as_str(), r.err.as_str()),
        (0, mp.as_str(), "")
    );
    // Mesos calls mount once per container: the plugin still sees one Mount.
    let r = run(&m, &["mount", "--volumedriver=fake", "--volumename=v1"]).await;
    assert_eq!((r.code, r.out.as_str()), (0, mp.as_str()));
    fake.with(|s| {
        assert_eq!(
            s.created_opts["v1"],
            serde_json::json!({"size": "5", "label": "a=b,c"})
        );
        assert_eq!(s.count("/VolumeDriver.Mount"), 1);
        assert_eq!(s.calls_to("/VolumeDriver.Mount")[0].id(), "agent:a1");
    });
    let r = run(&m, &["path", "--volumedriver=fake", "--volumename=v1"]).await;
    assert_eq!((r.code, r.out.as_str()), (0, mp.as_str()));
    let r = run(&m, &["get", "--volumedriver=fake", "--volumename=v1"]).await;
    assert_eq!((r.code, r.out.as_str()), (0, "v1\n"));
    let r = run(
        &m,
        &[
            "create",
            "--volumedriver=fake",
            "--volumename=v2",
            "--volumeopts=k=v",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.err);
    let r = run(&m, &["list", "--volumedriver=fake"]).await;
    assert_eq!((r.code, r.out.as_str()), (0, "v1\nv2\n"));

    // remove is refused while mounted; unmount once; then remove works.
    let r = run(&m, &["remove", "--volumedriver=fake", "--volumename=v1"]).await;
    assert_eq!(r.code, 1);
    assert!(r.err.contains("in use"), "{}", r.err);
    let r = run(&m, &["unmount", "--volumedriver=fake", "--volumename=v1"]).await;
    assert_eq!((r.code, r.out.as_str()), (0, ""));
    assert_eq!(
        fake.with(|s| s.calls_to("/VolumeDriver.Unmount")[0].id()),
        "agent:a1"
    );
    assert!(fake.with(|s| s.ids("v1").is_empty()));
    let r = run(&m, &["remove", "--volumedriver=fake", "--volumename=v1"]).await;
    assert_eq!(r.code, 0, "{}", r.err);

    // --explicitcreate (and the module's --explicitCreate) never creates.
    for flag in ["--explicitcreate", "--explicitCreate=true"] {
        let r = run(
            &m,
            &["mount", "--volumedriver=fake", "--volumename=nope", flag],
        )
        .await;
        assert_eq!((r.code, r.out.as_str()), (1, ""));
        assert!(r.err.contains("does not exist"), "{}", r.err);
    }
    assert!(!fake.with(|s| s.volumes.contains_key("nope")));

    // Usage and plugin errors: exit 1, message on stderr, nothing on stdout.
    for args in [
        &["mount", "--volumename=v"][..],
        &["bogus", "--volumedriver=fake"],
        &[],
        &[
            "mount",
            "--volumedriver=fake",
            "--volumename=v",
            "--volumeopts=novalue",
        ],
        &["get", "--volumedriver=fake", "--volumename=missing"],
        &["mount", "--volumedriver=../x", "--volumename=v"],
        &["mount", "--volumedriver=absent", "--volumename=v"],
    ] {
        let r = run(&m, args).await;
        assert_eq!((r.code, r.out.as_str()), (1, ""), "{args:?}");
        assert!(r.err.starts_with("error: "), "{args:?}: {}", r.err);
    }
    let r = run(&m, &["version"]).await;
    assert_eq!(r.code, 0);
    let r = run(&m, &["--help"]).await;
    assert!(r.out.starts_with("usage: dvdcli"));
}
