//! Managed-plugin supervision: word splitting and expansion, start → ready, restart after a
//! crash, backoff, shutdown and drop, typed errors.
//!
//! The fake plugin is this test binary itself: re-executed with the filter
//! `fake_plugin_entry` and `BERTH_FAKE_MODE` in the plugin's configured environment, that
//! test binds the socket named by its `unix://` argument (the expanded `${CSI_ENDPOINT}`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_csi::config::{PluginConfig, PluginKind};
use berth_csi::supervisor::{
    PluginState, PluginSupervisor, SplitError, SupervisorError, SupervisorOptions, launch_spec,
    split_words,
};
use berth_resources::proto::environment::Variable;
use berth_resources::proto::{
    CommandInfo, CsiPluginContainerInfo, Environment, csi_plugin_container_info,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

// ---------------------------------------------------------------- the fake plugin

/// Does nothing in a normal test run; acts as the plugin when re-executed with
/// `BERTH_FAKE_MODE` set.
#[test]
fn fake_plugin_entry() {
    let Ok(mode) = std::env::var("BERTH_FAKE_MODE") else {
        return;
    };
    let endpoint = std::env::args()
        .find(|a| a.starts_with("unix://"))
        .expect("endpoint argument");
    assert_eq!(std::env::var("CSI_ENDPOINT").unwrap(), endpoint);
    let path = endpoint.strip_prefix("unix://").unwrap();
    match mode.as_str() {
        "exit" => std::process::exit(7),
        "slow" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        "ignore-term" => {
            // Registering a SIGTERM listener replaces the default action (terminate) for the
            // whole process with tokio's handler, through a safe API; nobody reads the
            // listener, so SIGTERM is ignored and the supervisor must escalate to SIGKILL.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let listener = rt
                .block_on(async {
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                })
                .unwrap();
            std::mem::forget(listener);
            std::mem::forget(rt);
        }
        m if m.starts_with("once:") => {
            let marker = Path::new(&m["once:".len()..]);
            if marker.exists() {
                std::process::exit(3);
            }
            std::fs::write(marker, b"").unwrap();
        }
        _ => {}
    }
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    for conn in listener.incoming() {
        drop(conn);
    }
}

fn plugin(mode: &str) -> PluginConfig {
    let exe = std::env::current_exe().unwrap();
    let value = format!(
        "'{}' fake_plugin_entry --exact --quiet \"${{CSI_ENDPOINT}}\"",
        exe.display()
    );
    command_plugin(CommandInfo {
        value: Some(value),
        environment: Some(env(&[("BERTH_FAKE_MODE", mode)])),
        ..Default::default()
    })
}

fn env(vars: &[(&str, &str)]) -> Environment {
    Environment {
        variables: vars
            .iter()
            .map(|(k, v)| Variable {
                name: (*k).to_owned(),
                value: Some((*v).to_owned()),
                ..Default::default()
            })
            .collect(),
    }
}

fn command_plugin(command: CommandInfo) -> PluginConfig {
    PluginConfig {
        plugin_type: "fake".to_owned(),
        name: "default".to_owned(),
        kind: PluginKind::Managed {
            container: Box::new(CsiPluginContainerInfo {
                services: vec![csi_plugin_container_info::Service::NodeService as i32],
                command: Some(command),
                ..Default::default()
            }),
        },
        target_path_root: None,
        target_path_exists: false,
        source: PathBuf::from("/etc/csi/fake.json"),
    }
}

fn fast() -> SupervisorOptions {
    SupervisorOptions {
        ready_timeout: Duration::from_secs(1),
        ready_poll: Duration::from_millis(5),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        reset_after: Duration::from_secs(60),
        stop_grace: Duration::from_millis(500),
    }
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_ok()
}

async fn connects(p: &Path) -> bool {
    tokio::net::UnixStream::connect(p).await.is_ok()
}

// ---------------------------------------------------------------- splitting (pure)

fn vars() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("CSI_ENDPOINT".to_owned(), "unix:///run/a b.sock".to_owned()),
        ("LEVEL".to_owned(), "5".to_owned()),
    ])
}

#[test]
fn split_plain_words_and_blanks() {
    assert_eq!(
        split_words("  /bin/plugin   -v\t--x ", &vars()).unwrap(),
        ["/bin/plugin", "-v", "--x"]
    );
    assert!(split_words("   ", &vars()).unwrap().is_empty());
}

#[test]
fn split_quotes() {
    assert_eq!(
        split_words(r#"a 'b c' "d e" f'g h'i "" '' x\ y"#, &vars()).unwrap(),
        ["a", "b c", "d e", "fg hi", "", "", "x y"]
    );
    assert_eq!(
        split_words(r#""say \"hi\" \$HOME \n""#, &vars()).unwrap(),
        [r#"say "hi" $HOME \n"#]
    );
}

#[test]
fn split_expands_only_known_variables() {
    assert_eq!(
        split_words(
            "p --endpoint=$CSI_ENDPOINT -v=${LEVEL}x $HOME ${PATH} '$LEVEL' \"$LEVEL\"",
            &vars()
        )
        .unwrap(),
        [
            "p",
            "--endpoint=unix:///run/a b.sock",
            "-v=5x",
            "$HOME",
            "${PATH}",
            "$LEVEL",
            "5"
        ]
    );
    // A lone `$` and `$` before a non-name character stay literal.
    assert_eq!(split_words("a$ $-", &vars()).unwrap(), ["a$", "$-"]);
}

#[test]
fn split_errors() {
    assert_eq!(
        split_words("a 'b", &vars()),
        Err(SplitError::UnterminatedQuote('\''))
    );
    assert_eq!(
        split_words("a \"b", &vars()),
        Err(SplitError::UnterminatedQuote('"'))
    );
    assert_eq!(
        split_words("a\\", &vars()),
        Err(SplitError::TrailingBackslash)
    );
    assert_eq!(
        split_words("${CSI_ENDPOINT", &vars()),
        Err(SplitError::UnterminatedBrace)
    );
}

// ---------------------------------------------------------------- launch specs (pure)

#[test]
fn spec_shell_true_splits_and_sets_endpoint() {
    let p = command_plugin(CommandInfo {
        value: Some("/opt/plugin --endpoint=$CSI_ENDPOINT --name \"$N\"".to_owned()),
        environment: Some(env(&[("N", "x y"), ("CSI_ENDPOINT", "overridden")])),
        ..Default::default()
    });
    let s = launch_spec(&p, "unix:///s/fake.sock").unwrap();
    assert_eq!(s.program, "/opt/plugin");
    assert_eq!(s.arg0, None);
    assert_eq!(s.args, ["--endpoint=unix:///s/fake.sock", "--name", "x y"]);
    assert_eq!(s.env["CSI_ENDPOINT"], "unix:///s/fake.sock");
    assert_eq!(s.env["N"], "x y");
}

#[test]
fn spec_shell_false_uses_arguments_as_argv() {
    let p = command_plugin(CommandInfo {
        shell: Some(false),
        value: Some("/opt/my plugin".to_owned()),
        arguments: vec!["plugin".to_owned(), "$CSI_ENDPOINT".to_owned()],
        ..Default::default()
    });
    let s = launch_spec(&p, "unix:///s/fake.sock").unwrap();
    assert_eq!(s.program, "/opt/my plugin");
    assert_eq!(s.arg0.as_deref(), Some("plugin"));
    assert_eq!(s.args, ["$CSI_ENDPOINT"]);
}

#[test]
fn spec_refusals_are_typed() {
    let cases = [
        CommandInfo {
            value: Some("   ".to_owned()),
            ..Default::default()
        },
        CommandInfo {
            value: Some("p 'x".to_owned()),
            ..Default::default()
        },
        CommandInfo {
            value: Some("p".to_owned()),
            user: Some("root".to_owned()),
            ..Default::default()
        },
        CommandInfo {
            shell: Some(false),
            ..Default::default()
        },
    ];
    for c in cases {
        let e = launch_spec(&command_plugin(c), "unix:///s").unwrap_err();
        assert!(
            matches!(&e, SupervisorError::Command { plugin, .. } if plugin == "fake"),
            "{e}"
        );
    }
    let mut p = command_plugin(CommandInfo::default());
    p.kind = PluginKind::Unmanaged {
        node_socket: PathBuf::from("/s"),
    };
    assert!(matches!(
        launch_spec(&p, "unix:///s"),
        Err(SupervisorError::NotManaged { .. })
    ));
}

// ---------------------------------------------------------------- processes

#[tokio::test]
async fn start_is_ready_and_shutdown_stops_it() {
    let d = tempfile::tempdir().unwrap();
    // A long grace period: a quick stop proves SIGTERM alone ended the plugin.
    let opts = SupervisorOptions {
        stop_grace: Duration::from_secs(20),
        ..fast()
    };
    let sup = PluginSupervisor::start(&plugin("serve"), d.path(), opts)
        .await
        .unwrap();
    assert_eq!(sup.socket(), d.path().join("fake-default.sock"));
    assert_eq!(sup.endpoint(), format!("unix://{}", sup.socket().display()));
    let st = sup.status();
    assert_eq!(st.state, PluginState::Ready);
    assert_eq!(st.restarts, 0);
    let pid = st.pid.unwrap();
    assert!(alive(pid));
    assert!(connects(sup.socket()).await);
    let t = Instant::now();
    sup.shutdown().await;
    // Well under the 20 s grace period: SIGTERM was enough, no SIGKILL was needed.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(!alive(pid));
}

#[tokio::test]
async fn killed_plugin_is_restarted() {
    let d = tempfile::tempdir().unwrap();
    let sup = PluginSupervisor::start(&plugin("serve"), d.path(), fast())
        .await
        .unwrap();
    let pid = sup.status().pid.unwrap();
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
    let st = sup
        .wait_for(Duration::from_secs(2), |s| {
            s.restarts >= 1 && s.state == PluginState::Ready
        })
        .await
        .unwrap();
    let new_pid = st.pid.unwrap();
    assert_ne!(new_pid, pid);
    assert!(st.last_exit.as_deref().unwrap().contains("9"), "{st:?}");
    assert_eq!(st.consecutive_failures, 0);
    assert!(connects(sup.socket()).await);
    sup.shutdown().await;
    assert!(!alive(new_pid));
}

#[tokio::test]
async fn crashing_plugin_backs_off_up_to_the_cap() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("started-once");
    let sup = PluginSupervisor::start(
        &plugin(&format!("once:{}", marker.display())),
        &d.path().join("sock"),
        fast(),
    )
    .await
    .unwrap();
    let mut rx = sup.subscribe();
    let pid = sup.status().pid.unwrap();
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGTERM).unwrap();
    // Every restart now exits at once with status 3: delays 20, 40, 80, 80, ... ms.
    let mut delays = Vec::new();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while delays.len() < 5 {
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .unwrap()
            .unwrap();
        let st = rx.borrow_and_update().clone();
        if let PluginState::BackingOff { delay } = st.state
            && st.consecutive_failures != seen
        {
            seen = st.consecutive_failures;
            delays.push(delay);
        }
    }
    assert_eq!(delays[0], Duration::from_millis(20));
    assert!(delays.iter().all(|d| *d <= Duration::from_millis(80)));
    assert_eq!(*delays.last().unwrap(), Duration::from_millis(80));
    let st = sup.status();
    assert!(st.restarts >= 2, "{st:?}");
    assert!(st.consecutive_failures >= 3, "{st:?}");
    assert!(st.last_exit.as_deref().unwrap().contains('3'), "{st:?}");
    let err = st.last_error.unwrap();
    assert!(
        err.contains("plugin fake") && err.contains("exited"),
        "{err}"
    );
    sup.shutdown().await;
}

#[tokio::test]
async fn command_exiting_at_once_is_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let e = PluginSupervisor::start(&plugin("exit"), d.path(), fast())
        .await
        .unwrap_err();
    match e {
        SupervisorError::Exited { plugin, status } => {
            assert_eq!(plugin, "fake");
            assert!(status.contains('7'), "{status}");
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn missing_executable_is_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let p = command_plugin(CommandInfo {
        value: Some("/nonexistent/berth-plugin --endpoint=$CSI_ENDPOINT".to_owned()),
        ..Default::default()
    });
    let e = PluginSupervisor::start(&p, d.path(), fast())
        .await
        .unwrap_err();
    match &e {
        SupervisorError::Spawn {
            plugin,
            program,
            source,
        } => {
            assert_eq!(plugin, "fake");
            assert_eq!(program, "/nonexistent/berth-plugin");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(e.to_string().contains("plugin fake"));
}

#[tokio::test]
async fn socket_never_ready_is_a_bounded_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let opts = SupervisorOptions {
        ready_timeout: Duration::from_millis(300),
        stop_grace: Duration::from_millis(200),
        ..fast()
    };
    let t = Instant::now();
    let e = PluginSupervisor::start(&plugin("slow"), d.path(), opts)
        .await
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    match e {
        SupervisorError::NotReady {
            plugin,
            socket,
            timeout,
        } => {
            assert_eq!(plugin, "fake");
            assert_eq!(socket, d.path().join("fake-default.sock"));
            assert_eq!(timeout, Duration::from_millis(300));
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn sigterm_ignored_gets_sigkill_after_grace() {
    let d = tempfile::tempdir().unwrap();
    let opts = SupervisorOptions {
        stop_grace: Duration::from_millis(200),
        ..fast()
    };
    let sup = PluginSupervisor::start(&plugin("ignore-term"), d.path(), opts)
        .await
        .unwrap();
    let pid = sup.status().pid.unwrap();
    let t = Instant::now();
    sup.shutdown().await;
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(!alive(pid));
}

#[tokio::test]
async fn drop_stops_the_plugin() {
    let d = tempfile::tempdir().unwrap();
    let sup = PluginSupervisor::start(&plugin("serve"), d.path(), fast())
        .await
        .unwrap();
    let pid = sup.status().pid.unwrap();
    drop(sup);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(pid) {
        assert!(Instant::now() < deadline, "plugin still running after drop");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
