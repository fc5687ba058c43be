//! Discovery and the protocol client against the fake plugin: Docker's lookup order and
//! roots, v2 names, the request shape Docker sends, cached activation and its retries, every
//! decoding quirk of real plugins, per-call timeouts against a hung plugin, and a plugin that
//! dies (stale socket) and comes back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_dvdi::client::{ClientConfig, PluginClient, RetryPolicy, Timeouts};
use berth_dvdi::discovery::{Addr, Discovery};
use berth_dvdi::protocol::{MIME, Scope};
use berth_dvdi::{DriverName, DvdiError, PluginRegistry};
use common::{ErrStyle, FakePlugin, Fault, Quirks, fast_config};

struct Env {
    _dir: tempfile::TempDir,
    run: PathBuf,
    etc: PathBuf,
    lib: PathBuf,
    root: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_owned();
    for d in ["run", "etc", "lib", "mnt"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    Env {
        run: p.join("run"),
        etc: p.join("etc"),
        lib: p.join("lib"),
        root: p.join("mnt"),
        _dir: dir,
    }
}

fn discovery(e: &Env) -> Discovery {
    Discovery::with_roots(vec![e.run.clone()], vec![e.etc.clone(), e.lib.clone()])
}

fn dn(s: &str) -> DriverName {
    DriverName::new(s).unwrap()
}

fn client(socket: &Path) -> PluginClient {
    PluginClient::new("fake", Addr::Unix(socket.to_owned()), fast_config())
}

#[test]
fn discovery_order_and_roots() {
    let e = env();
    let d = discovery(&e);
    assert!(matches!(
        d.lookup(&dn("p")),
        Err(DvdiError::NotFound { .. })
    ));

    // A regular file named p.sock is not a socket: skipped.
    std::fs::write(e.run.join("p.sock"), "").unwrap();
    assert!(matches!(
        d.lookup(&dn("p")),
        Err(DvdiError::NotFound { .. })
    ));

    // Specs: /usr/lib is searched after /etc; .spec before .json.
    std::fs::write(e.lib.join("p.spec"), "tcp://127.0.0.1:9\n").unwrap();
    assert_eq!(
        d.lookup(&dn("p")).unwrap().addr,
        Addr::Tcp("127.0.0.1:9".into())
    );
    std::fs::write(
        e.etc.join("p.json"),
        r#"{"Name":"p","Addr":"unix:///from/json.sock"}"#,
    )
    .unwrap();
    assert_eq!(
        d.lookup(&dn("p")).unwrap().addr,
        Addr::Unix("/from/json.sock".into())
    );
    std::fs::write(e.etc.join("p.spec"), "  unix:///from/spec.sock  \n").unwrap();
    let found = d.lookup(&dn("p")).unwrap();
    assert_eq!(found.addr, Addr::Unix("/from/spec.sock".into()));
    assert_eq!(found.source, Some(e.etc.join("p.spec")));

    // A socket wins over every spec file: <name>/<name>.sock, then <name>.sock.
    std::fs::remove_file(e.run.join("p.sock")).unwrap();
    std::fs::create_dir(e.run.join("p")).unwrap();
    let _nested = std::os::unix::net::UnixListener::bind(e.run.join("p/p.sock")).unwrap();
    assert_eq!(
        d.lookup(&dn("p")).unwrap().addr,
        Addr::Unix(e.run.join("p/p.sock"))
    );
    let _flat = std::os::unix::net::UnixListener::bind(e.run.join("p.sock")).unwrap();
    assert_eq!(
        d.lookup(&dn("p")).unwrap().addr,
        Addr::Unix(e.run.join("p.sock"))
    );

    // Bad spec files are errors naming the file, not silent misses.
    std::fs::write(e.etc.join("q.spec"), "/no/scheme.sock").unwrap();
    match d.lookup(&dn("q")) {
        Err(DvdiError::Spec { path, .. }) => assert_eq!(path, e.etc.join("q.spec")),
        other => panic!("{other:?}"),
    }
    std::fs::write(
        e.etc.join("t.json"),
        r#"{"Addr":"tcp://h:1","TLSConfig":{"CAFile":"/ca"}}"#,
    )
    .unwrap();
    assert!(matches!(
        d.lookup(&dn("t")),
        Err(DvdiError::Unsupported { .. })
    ));
}

#[test]
fn v2_names_and_registered_addresses() {
    let e = env();
    let mut d = discovery(&e);
    std::fs::create_dir_all(e.run.join("rexray")).unwrap();
    let _l = std::os::unix::net::UnixListener::bind(e.run.join("rexray/ebs:latest.sock")).unwrap();
    assert_eq!(
        d.lookup(&dn("rexray/ebs:latest")).unwrap().addr,
        Addr::Unix(e.run.join("rexray/ebs:latest.sock"))
    );
    // Without a tag the name also means :latest.
    let found = d.lookup(&dn("rexray/ebs")).unwrap();
    assert_eq!(found.addr, Addr::Unix(e.run.join("rexray/ebs:latest.sock")));
    assert_eq!(found.name, "rexray/ebs");
    // Registered addresses win (managed plugins live under an id only dockerd knows).
    d.register(
        &dn("rexray/ebs:latest"),
        Addr::Unix("/run/docker/plugins/abc123/rexray.sock".into()),
    );
    assert_eq!(
        d.lookup(&dn("rexray/ebs:latest")).unwrap().addr,
        Addr::Unix("/run/docker/plugins/abc123/rexray.sock".into())
    );
    // Hostile names never become paths.
    for bad in ["../etc/passwd", "a/../../b", "/abs", ".x", "a b"] {
        assert!(DriverName::new(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_retries_lookup_until_the_plugin_appears() {
    let e = env();
    let cfg = ClientConfig {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            overall: Duration::from_secs(20),
            full_jitter: false,
        },
        ..fast_config()
    };
    let reg = PluginRegistry::new(discovery(&e), cfg);
    let sock = e.run.join("late.sock");
    let root = e.root.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        FakePlugin::start(&sock, &root)
    });
    let c = reg.client(&dn("late")).await.unwrap();
    let fake = starter.join().unwrap();
    c.create("v", &BTreeMap::new()).await.unwrap();
    assert_eq!(fake.with(|s| s.volumes.len()), 1);
    // The client is cached: the same Arc comes back.
    assert!(std::sync::Arc::ptr_eq(
        &c,
        &reg.client(&dn("late")).await.unwrap()
    ));

    // With no retry budget a missing plugin fails at once.
    let reg = PluginRegistry::new(
        discovery(&e),
        ClientConfig {
            retry: RetryPolicy::none(),
            ..fast_config()
        },
    );
    assert!(matches!(
        reg.client(&dn("missing")).await,
        Err(DvdiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn requests_look_like_dockers_and_activation_is_cached() {
    let e = env();
    let sock = e.run.join("p.sock");
    let fake = FakePlugin::start(&sock, &e.root);
    let c = client(&sock);
    let mut opts = BTreeMap::new();
    c.create("v1", &opts).await.unwrap();
    opts.insert("size".to_owned(), "5".to_owned());
    opts.insert("label".to_owned(), "a=b,c".to_owned());
    c.create("v2", &opts).await.unwrap();
    let mp = c.mount("v1", "c1").await.unwrap();
    assert_eq!(mp, e.root.join("v1"));
    assert_eq!(c.path("v1").await.unwrap(), Some(e.root.join("v1")));
    c.unmount("v1", "c1").await.unwrap();
    let names: Vec<String> = c
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names, ["v1", "v2"]);
    let got = c.get("v1").await.unwrap().unwrap();
    assert_eq!(
        (got.name.as_str(), got.mountpoint),
        ("v1", Some(e.root.join("v1")))
    );
    assert_eq!(c.capabilities().await.unwrap().scope, Scope::Local);
    c.remove("v2").await.unwrap();

    fake.with(|s| {
        assert_eq!(s.count("/Plugin.Activate"), 1, "activation is cached");
        let first = &s.calls[0];
        assert_eq!(first.path, "/Plugin.Activate");
        assert!(first.body.is_empty(), "Activate has an empty body");
        for call in &s.calls {
            assert_eq!(call.method, "POST");
            assert_eq!(call.accept, MIME);
            assert_eq!(call.host, "plugin.moby.localhost");
        }
        let creates = s.calls_to("/VolumeDriver.Create");
        assert_eq!(
            creates[0].json(),
            serde_json::json!({"Name": "v1", "Opts": {}}),
            "Opts always sent"
        );
        assert_eq!(
            creates[1].json(),
            serde_json::json!({"Name": "v2", "Opts": {"label": "a=b,c", "size": "5"}})
        );
        assert_eq!(
            s.calls_to("/VolumeDriver.Mount")[0].json(),
            serde_json::json!({"Name": "v1", "ID": "c1"})
        );
        assert_eq!(
            s.calls_to("/VolumeDriver.Unmount")[0].json(),
            serde_json::json!({"Name": "v1", "ID": "c1"})
        );
        assert_eq!(s.calls_to("/VolumeDriver.List")[0].body, "{}");
    });
}

#[tokio::test]
async fn activation_checks_implements_and_retries_until_the_socket_answers() {
    let e = env();
    let sock = e.run.join("p.sock");
    let fake = FakePlugin::start(&sock, &e.root);
    fake.with(|s| s.quirks.implements = vec!["NetworkDriver"]);
    let c = client(&sock);
    match c.create("v", &BTreeMap::new()).await {
        Err(DvdiError::NotAVolumeDriver { plugin, implements }) => {
            assert_eq!(plugin, "fake");
            assert_eq!(implements, ["NetworkDriver"]);
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.is_activated());
    assert_eq!(fake.with(|s| s.count("/VolumeDriver.Create")), 0);
    drop(fake);

    // Nothing listens yet (stale socket file): activation retries until the plugin is up.
    let sock2 = e.run.join("q.sock");
    let _stale = std::os::unix::net::UnixListener::bind(&sock2).map(drop);
    let cfg = ClientConfig {
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            overall: Duration::from_secs(20),
            full_jitter: false,
        },
        ..fast_config()
    };
    let c = PluginClient::new("fake", Addr::Unix(sock2.clone()), cfg);
    let root = e.root.clone();
    let s2 = sock2.clone();
    let starter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        FakePlugin::start(&s2, &root)
    });
    c.activate().await.unwrap();
    let fake = starter.join().unwrap();
    assert!(c.is_activated());
    assert_eq!(fake.with(|s| s.count("/Plugin.Activate")), 1);
}

async fn expect_plugin_error(quirks: Quirks, status: u16) {
    let e = env();
    let sock = e.run.join("p.sock");
    let fake = FakePlugin::start(&sock, &e.root);
    fake.with(|s| s.quirks = quirks.clone());
    let c = client(&sock);
    match c.mount("nosuch", "c1").await {
        Err(DvdiError::Plugin {
            plugin,
            endpoint,
            volume,
            status: st,
            message,
        }) => {
            assert_eq!(plugin, "fake");
            assert_eq!(endpoint, "/VolumeDriver.Mount");
            assert_eq!(volume.as_deref(), Some("nosuch"));
            assert_eq!(st, status, "{quirks:?}");
            assert_eq!(message, "Volume nosuch not found.", "{quirks:?}");
        }
        other => panic!("{quirks:?}: {other:?}"),
    }
}

#[tokio::test]
async fn every_error_style_is_an_error() {
    for err in [
        ErrStyle::Err(200),
        ErrStyle::Err(400),
        ErrStyle::Err(500),
        ErrStyle::Error(200),
        ErrStyle::Error(500),
        ErrStyle::Text(500),
        ErrStyle::Text(400),
    ] {
        let status = match err {
            ErrStyle::Err(s) | ErrStyle::Error(s) | ErrStyle::Text(s) => s,
        };
        expect_plugin_error(
            Quirks {
                err,
                ..Quirks::default()
            },
            status,
        )
        .await;
        expect_plugin_error(
            Quirks {
                err,
                odd_case: true,
                ..Quirks::default()
            },
            status,
        )
        .await;
    }
}

#[tokio::test]
async fn odd_keys_missing_capabilities_null_volume_and_non_json_bodies() {
    let e = env();
    let sock = e.run.join("p.sock");
    let fake = FakePlugin::start(&sock, &e.root);
    fake.with(|s| {
        s.quirks.odd_case = true;
        s.quirks.scope = None;
        s.quirks.content_type = "text/html; charset=UTF-8";
    });
    let c = client(&sock);
    c.create("v", &BTreeMap::new()).await.unwrap();
    assert_eq!(
        c.mount("v", "c1").await.unwrap(),
        e.root.join("v"),
        "MountPoint accepted"
    );
    assert_eq!(
        c.capabilities().await.unwrap().scope,
        Scope::Local,
        "404 = local"
    );
    assert_eq!(
        c.get("nosuch").await.unwrap(),
        None,
        "Volume: null = not found"
    );
    fake.with(|s| s.quirks.scope = Some("GLOBAL"));
    assert_eq!(c.capabilities().await.unwrap().scope, Scope::Global);

    // Get of a missing volume as an error (buttervolume, easyfuse) stays an error here; the
    // manager decides what it means.
    fake.with(|s| s.quirks.get_null = false);
    assert!(matches!(
        c.get("nosuch").await,
        Err(DvdiError::Plugin { .. })
    ));

    // HTML 500 (bottle), an unknown-endpoint 404, a 200 that is not JSON.
    fake.with(|s| {
        s.faults.push_back((
            "/VolumeDriver.Get",
            Fault::Answer(500, "<h1>500 Internal Server Error</h1>"),
        ))
    });
    match c.get("v").await {
        Err(DvdiError::Plugin {
            status: 500,
            message,
            ..
        }) => assert!(message.contains("Internal Server Error")),
        other => panic!("{other:?}"),
    }
    fake.with(|s| {
        s.faults.push_back((
            "/VolumeDriver.Unmount",
            Fault::Answer(404, "404: Not Found"),
        ))
    });
    assert!(matches!(
        c.unmount("v", "c1").await,
        Err(DvdiError::NotImplemented { .. })
    ));
    fake.with(|s| {
        s.faults
            .push_back(("/VolumeDriver.Mount", Fault::Answer(200, "mounted!")))
    });
    assert!(matches!(
        c.mount("v", "c2").await,
        Err(DvdiError::Decode { .. })
    ));
    fake.with(|s| {
        s.faults
            .push_back(("/VolumeDriver.Mount", Fault::Answer(200, r#"{"Err":""}"#)))
    });
    assert!(
        matches!(c.mount("v", "c2").await, Err(DvdiError::Decode { .. })),
        "no Mountpoint"
    );
    fake.with(|s| {
        s.faults
            .push_back(("/VolumeDriver.Unmount", Fault::Answer(200, "")))
    });
    c.unmount("v", "c1").await.unwrap();
}

#[tokio::test]
async fn a_hung_plugin_times_out_per_call_and_the_client_recovers() {
    let e = env();
    let sock = e.run.join("p.sock");
    let fake = FakePlugin::start(&sock, &e.root);
    let cfg = ClientConfig {
        timeouts: Timeouts {
            mount: Duration::from_millis(300),
            ..Timeouts::uniform(Duration::from_secs(5))
        },
        ..fast_config()
    };
    let c = PluginClient::new("fake", Addr::Unix(sock.clone()), cfg);
    c.create("v", &BTreeMap::new()).await.unwrap();
    fake.with(|s| {
        s.faults
            .push_back(("/VolumeDriver.Mount", Fault::Hang(Duration::from_secs(3))))
    });
    match c.mount("v", "c1").await {
        Err(DvdiError::Timeout {
            plugin,
            endpoint,
            after,
        }) => {
            assert_eq!((plugin.as_str(), endpoint), ("fake", "/VolumeDriver.Mount"));
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    // Other endpoints keep their own (longer) timeout, and the next call works.
    fake.with(|s| {
        s.faults
            .push_back(("/VolumeDriver.Get", Fault::Hang(Duration::from_millis(500))))
    });
    assert!(c.get("v").await.unwrap().is_some());
    assert_eq!(c.mount("v", "c2").await.unwrap(), e.root.join("v"));
}

#[tokio::test]
async fn a_plugin_that_dies_is_unavailable_then_reactivated_when_back() {
    let e = env();
    let sock = e.run.join("p.sock");
    let mut fake = FakePlugin::start(&sock, &e.root);
    let c = client(&sock);
    c.create("v", &BTreeMap::new()).await.unwrap();
    c.mount("v", "c1").await.unwrap();
    let state = std::sync::Arc::clone(&fake.state);
    fake.kill();
    assert!(
        sock.exists(),
        "the socket file is stale, as easyfuse leaves it"
    );
    match c.unmount("v", "c1").await {
        Err(e @ DvdiError::Unavailable { .. }) => {
            let DvdiError::Unavailable {
                plugin,
                endpoint,
                attempts,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                (plugin.as_str(), *endpoint),
                ("fake", "/VolumeDriver.Unmount")
            );
            assert!(*attempts >= 2, "connection refused is retried: {attempts}");
            assert!(e.is_transient());
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !c.is_activated(),
        "activation is dropped with the dead plugin"
    );
    let fake = FakePlugin::start_with(&sock, state);
    c.unmount("v", "c1").await.unwrap();
    fake.with(|s| {
        assert_eq!(
            s.count("/Plugin.Activate"),
            2,
            "activated again after the restart"
        );
        assert!(s.ids("v").is_empty());
    });
}
