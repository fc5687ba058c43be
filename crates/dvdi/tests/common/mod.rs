//! A fake Docker volume plugin (axum on a unix socket) with every quirk real plugins have,
//! and fault knobs (hang, fixed answers). It runs on its own thread and runtime, so `kill`
//! ends it like a dead process: every connection closes, the socket file stays (stale).
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_dvdi::client::{ClientConfig, RetryPolicy, Timeouts};
use serde_json::{Value as Json, json};

/// How the fake says "error".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrStyle {
    /// `{"Err": ".."}` with the given status (go-plugins-helpers 500, buttervolume 200, easyfuse 400).
    Err(u16),
    /// `{"Error": ".."}` with the given status (REX-Ray).
    Error(u16),
    /// A plain-text body with the given status.
    Text(u16),
}

#[derive(Debug, Clone)]
pub struct Quirks {
    pub err: ErrStyle,
    /// Send `MountPoint` instead of `Mountpoint`, `err` instead of `Err`, etc.
    pub odd_case: bool,
    /// Capabilities answer; `None`: 404 (endpoint missing).
    pub scope: Option<&'static str>,
    /// `Get` of a missing volume answers `{"Volume": null}` (else an error).
    pub get_null: bool,
    /// Create without `Opts` is refused (easyfuse, pyvolume).
    pub require_opts: bool,
    /// Create of an existing volume is an error (easyfuse).
    pub create_strict: bool,
    /// `Content-Type` of answers.
    pub content_type: &'static str,
    /// `Implements`.
    pub implements: Vec<&'static str>,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            err: ErrStyle::Err(200),
            odd_case: false,
            scope: Some("local"),
            get_null: true,
            require_opts: true,
            create_strict: true,
            content_type: "text/plain; charset=utf-8",
            implements: vec!["VolumeDriver"],
        }
    }
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Sleep, then answer normally.
    Hang(Duration),
    /// Answer this status and body without doing anything.
    Answer(u16, &'static str),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub accept: String,
    pub host: String,
    pub body: String,
    /// The answer's status.
    pub status: u16,
}

impl Call {
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body).unwrap_or(Json::Null)
    }
    pub fn id(&self) -> String {
        self.json()["ID"].as_str().unwrap_or("").to_owned()
    }
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub quirks: Quirks,
    pub root: PathBuf,
    /// Volume → mounted IDs.
    pub volumes: BTreeMap<String, BTreeSet<String>>,
    /// Options each volume was created with.
    pub created_opts: BTreeMap<String, Json>,
    pub calls: Vec<Call>,
    /// (endpoint path or "*", fault): the next matching call gets it.
    pub faults: VecDeque<(&'static str, Fault)>,
}

impl FakeState {
    pub fn count(&self, path: &str) -> usize {
        self.calls.iter().filter(|c| c.path == path).count()
    }
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }
    pub fn ids(&self, volume: &str) -> BTreeSet<String> {
        self.volumes.get(volume).cloned().unwrap_or_default()
    }
}

pub type Shared = Arc<Mutex<FakeState>>;

fn err_response(q: &Quirks, msg: &str) -> (u16, String) {
    let key = if q.odd_case { "err" } else { "Err" };
    match q.err {
        ErrStyle::Err(s) => (s, json!({ key: msg }).to_string()),
        ErrStyle::Error(s) => (s, json!({"Error": msg}).to_string()),
        ErrStyle::Text(s) => (s, msg.to_owned()),
    }
}

fn ok(q: &Quirks, mut v: Json) -> (u16, String) {
    let key = if q.odd_case { "err" } else { "Err" };
    v[key] = json!("");
    (200, v.to_string())
}

fn handle_call(s: &mut FakeState, path: &str, body: &str) -> (u16, String) {
    let q = s.quirks.clone();
    let req: Json = if body.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(body) {
            Ok(v) => v,
            Err(_) => return (400, "malformed request".into()),
        }
    };
    let name = req
        .get("Name")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_owned();
    let mp_key = if q.odd_case {
        "MountPoint"
    } else {
        "Mountpoint"
    };
    let mp = s.root.join(&name).display().to_string();
    match path {
        "/Plugin.Activate" => (200, json!({"Implements": q.implements}).to_string()),
        "/VolumeDriver.Capabilities" => match q.scope {
            Some(sc) => (200, json!({"Capabilities": {"Scope": sc}}).to_string()),
            None => (404, "404: Not Found".into()),
        },
        "/VolumeDriver.Create" => {
            if q.require_opts && req.get("Opts").is_none() {
                return err_response(&q, "Missing option: 'Opts'");
            }
            if s.volumes.contains_key(&name) {
                if q.create_strict {
                    return err_response(
                        &q,
                        &format!("Volume {name} already exist, remove it first."),
                    );
                }
                return ok(&q, json!({}));
            }
            s.volumes.insert(name.clone(), BTreeSet::new());
            s.created_opts
                .insert(name, req.get("Opts").cloned().unwrap_or(Json::Null));
            ok(&q, json!({}))
        }
        "/VolumeDriver.Remove" => {
            if s.volumes.remove(&name).is_none() {
                return err_response(&q, &format!("{name}: no such volume"));
            }
            ok(&q, json!({}))
        }
        "/VolumeDriver.Mount" => {
            let id = req
                .get("ID")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned();
            let Some(ids) = s.volumes.get_mut(&name) else {
                return err_response(&q, &format!("Volume {name} not found."));
            };
            ids.insert(id);
            ok(&q, json!({ mp_key: mp }))
        }
        "/VolumeDriver.Unmount" => {
            let id = req
                .get("ID")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_owned();
            if s.volumes.get_mut(&name).is_some_and(|ids| ids.remove(&id)) {
                ok(&q, json!({}))
            } else {
                err_response(&q, &format!("Volume ID {id} not found."))
            }
        }
        "/VolumeDriver.Path" => {
            if s.volumes.contains_key(&name) {
                ok(&q, json!({ mp_key: mp }))
            } else {
                err_response(&q, &format!("{name}: no such volume"))
            }
        }
        "/VolumeDriver.Get" => {
            if s.volumes.contains_key(&name) {
                ok(
                    &q,
                    json!({"Volume": {"Name": name, mp_key: mp, "Status": {"Mounted": !s.ids(&name).is_empty()}}}),
                )
            } else if q.get_null {
                ok(&q, json!({"Volume": null}))
            } else {
                err_response(&q, &format!("Missing option: '{name}'"))
            }
        }
        "/VolumeDriver.List" => {
            let vols: Vec<Json> = s
                .volumes
                .keys()
                .map(|n| json!({"Name": n, mp_key: s.root.join(n).display().to_string()}))
                .collect();
            ok(&q, json!({"Volumes": vols}))
        }
        _ => (404, "404: Not Found".into()),
    }
}

async fn handler(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body = String::from_utf8_lossy(&body).into_owned();
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let fault = {
        let mut s = state.lock().unwrap();
        let idx = s.faults.iter().position(|(p, _)| *p == path || *p == "*");
        idx.and_then(|i| s.faults.remove(i)).map(|(_, f)| f)
    };
    let forced = match fault {
        Some(Fault::Hang(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(Fault::Answer(st, b)) => Some((st, b.to_owned())),
        None => None,
    };
    let (status, text, ct) = {
        let mut s = state.lock().unwrap();
        let ct = s.quirks.content_type;
        let (status, text) = match forced {
            Some(a) => a,
            None if method != Method::POST => (405, "method not allowed".into()),
            None => handle_call(&mut s, &path, &body),
        };
        s.calls.push(Call {
            method: method.to_string(),
            path: path.clone(),
            accept: h("accept"),
            host: h("host"),
            body,
            status,
        });
        (status, text, ct)
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", ct)],
        text,
    )
        .into_response()
}

/// A running fake plugin.
pub struct FakePlugin {
    pub socket: PathBuf,
    pub state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakePlugin {
    /// Starts a fake with default quirks at `socket`; mount points under `root`.
    pub fn start(socket: &Path, root: &Path) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            root: root.to_owned(),
            ..FakeState::default()
        }));
        Self::start_with(socket, state)
    }

    /// Starts a fake serving `state` (a restart keeps the state, like a plugin's own db).
    pub fn start_with(socket: &Path, state: Shared) -> Self {
        let _ = std::fs::remove_file(socket);
        let std_listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(std_listener).unwrap();
                let app = Router::new().fallback(handler).with_state(st);
                let serve = axum::serve(listener, app);
                tokio::select! {
                    _ = serve => {}
                    _ = rx => {}
                }
            });
            // Dropping the runtime drops every connection task: the peer sees them close.
            drop(rt);
        });
        Self {
            socket: socket.to_owned(),
            state,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Ends the plugin like a dead process: connections close, the socket file stays.
    pub fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Client settings for tests: short timeouts and retries.
pub fn fast_config() -> ClientConfig {
    ClientConfig {
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
        retry: RetryPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            overall: Duration::from_millis(400),
            full_jitter: false,
        },
        max_idle: 4,
    }
}
