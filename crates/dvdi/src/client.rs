//! The protocol client of one plugin: hyper 1's HTTP/1 connection API over a unix socket or a
//! TCP stream (no hand-written HTTP), with kept-alive connections reused between calls.
//!
//! - Every call is `POST /<Endpoint>` with `Accept: application/vnd.docker.plugins.v1.2+json`
//!   and a JSON body (Activate: empty), as Docker's `pkg/plugins` sends it.
//! - `/Plugin.Activate` runs lazily before the first call, checks that `Implements` has
//!   `VolumeDriver`, and is cached; it is redone after the plugin was unreachable (a restart).
//! - Connection failures (refused, missing or stale socket, a kept-alive connection closed
//!   before the request left) are retried with doubling backoff, 1 s then 2 s, 4 s ... until
//!   the next wait would pass the retry budget (30 s), as Docker does. A request that may have
//!   reached the plugin is never re-sent: Mount and Unmount are not idempotent everywhere.
//! - Each call has its own timeout (Create and Mount 120 s, the others 60 s, as Docker's
//!   volume proxy; all configurable); the timeout covers activation, retries and the answer.
//! - Answers are decoded tolerantly ([`crate::protocol`]); bodies over 16 MiB are refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::discovery::Addr;
use crate::error::{DvdiError, Result};
use crate::protocol::{Answer, Capabilities, Endpoint, MIME, UNIX_HOST, VolumeInfo, request_body};

/// The largest response body accepted.
pub const MAX_BODY: usize = 16 << 20;

pub use berth_mount::retry::RetryPolicy;

/// The default backoff of connection retries, Docker's: 1 s doubling, no jitter, stop once
/// elapsed + next wait would reach 30 s.
#[must_use]
pub fn default_retry() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(30),
        overall: Duration::from_secs(30),
        full_jitter: false,
    }
}

/// Per-endpoint timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `/Plugin.Activate` (including its connection retries).
    pub activate: Duration,
    /// `Create`.
    pub create: Duration,
    /// `Remove`.
    pub remove: Duration,
    /// `Mount`.
    pub mount: Duration,
    /// `Unmount`.
    pub unmount: Duration,
    /// `Path`.
    pub path: Duration,
    /// `Get`.
    pub get: Duration,
    /// `List`.
    pub list: Duration,
    /// `Capabilities`.
    pub capabilities: Duration,
}

impl Default for Timeouts {
    /// Docker's: Create and Mount 120 s, everything else 60 s.
    fn default() -> Self {
        let min = Duration::from_secs(60);
        Self {
            activate: min,
            create: 2 * min,
            remove: min,
            mount: 2 * min,
            unmount: min,
            path: min,
            get: min,
            list: min,
            capabilities: min,
        }
    }
}

impl Timeouts {
    /// Mesos's docker/volume isolator values: Mount 120 s, Unmount 10 min (detach of a cloud
    /// disk can take that long, and Unmount cannot be retried safely).
    #[must_use]
    pub fn mesos_compat() -> Self {
        Self {
            unmount: Duration::from_secs(600),
            ..Self::default()
        }
    }

    /// The same timeout for every endpoint.
    #[must_use]
    pub fn uniform(d: Duration) -> Self {
        Self {
            activate: d,
            create: d,
            remove: d,
            mount: d,
            unmount: d,
            path: d,
            get: d,
            list: d,
            capabilities: d,
        }
    }

    /// The timeout of `endpoint`.
    #[must_use]
    pub fn of(&self, endpoint: Endpoint) -> Duration {
        match endpoint {
            Endpoint::Activate => self.activate,
            Endpoint::Create => self.create,
            Endpoint::Remove => self.remove,
            Endpoint::Mount => self.mount,
            Endpoint::Unmount => self.unmount,
            Endpoint::Path => self.path,
            Endpoint::Get => self.get,
            Endpoint::List => self.list,
            Endpoint::Capabilities => self.capabilities,
        }
    }
}

/// Client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Per-endpoint timeouts.
    pub timeouts: Timeouts,
    /// Connection retries.
    pub retry: RetryPolicy,
    /// Idle kept-alive connections kept per plugin (0: a new connection per call).
    pub max_idle: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            retry: default_retry(),
            max_idle: 4,
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// Why one attempt failed.
enum Attempt {
    /// The request certainly did not reach the plugin: retrying is safe.
    NotSent(String),
    /// The request may have reached the plugin; the answer was lost.
    Lost(String),
}

/// A client of one plugin (see the module docs). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct PluginClient {
    name: String,
    addr: Addr,
    config: ClientConfig,
    idle: Mutex<Vec<Sender>>,
    active: AtomicBool,
    activation: tokio::sync::Mutex<()>,
    calls: std::sync::atomic::AtomicU64,
}

impl PluginClient {
    /// A client of plugin `name` at `addr`. Nothing is connected yet.
    #[must_use]
    pub fn new(name: &str, addr: Addr, config: ClientConfig) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            config,
            idle: Mutex::new(Vec::new()),
            active: AtomicBool::new(false),
            activation: tokio::sync::Mutex::new(()),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many endpoint calls this client made (activation not counted), for metrics.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The plugin name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin address.
    #[must_use]
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Whether the activation handshake is cached.
    #[must_use]
    pub fn is_activated(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Drops the cached activation and the idle connections (the next call activates again).
    pub fn reset(&self) {
        self.active.store(false, Ordering::Release);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn unavailable(&self, endpoint: Endpoint, attempts: u32, message: String) -> DvdiError {
        DvdiError::Unavailable {
            plugin: self.name.clone(),
            endpoint: endpoint.path(),
            attempts,
            message,
        }
    }

    async fn connect(&self) -> std::result::Result<Sender, String> {
        match &self.addr {
            Addr::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| format!("connect {}: {e}", p.display()))?;
                handshake(TokioIo::new(s)).await
            }
            Addr::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(|e| format!("connect tcp {a}: {e}"))?;
                let _ = s.set_nodelay(true);
                handshake(TokioIo::new(s)).await
            }
        }
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.config.max_idle {
            idle.push(s);
        }
    }

    fn request(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
    ) -> std::result::Result<http::Request<Full<Bytes>>, String> {
        let host = match &self.addr {
            Addr::Unix(_) => UNIX_HOST,
            Addr::Tcp(a) => a.as_str(),
        };
        http::Request::post(endpoint.path())
            .header(http::header::HOST, host)
            .header(http::header::ACCEPT, MIME)
            .header(http::header::CONTENT_TYPE, MIME)
            .body(Full::new(body.clone()))
            .map_err(|e| format!("build request: {e}"))
    }

    /// One attempt: a pooled connection when there is one (falling back to a new connection
    /// when the pooled one turns out closed before the request left), else a new one.
    async fn attempt(
        &self,
        endpoint: Endpoint,
        body: &Bytes,
    ) -> std::result::Result<(u16, Bytes), Attempt> {
        if !self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            // Let the runtime poll the I/O driver first, so a kept-alive connection the plugin
            // closed (it restarted or died) is seen as closed before a request is written to
            // it: after that a failure could not tell "not sent" from "lost".
            tokio::task::yield_now().await;
        }
        let mut pooled = self.take_idle();
        loop {
            let from_pool = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(s) => s,
                None => self.connect().await.map_err(Attempt::NotSent)?,
            };
            if let Err(e) = sender.ready().await {
                if from_pool {
                    continue;
                }
                return Err(Attempt::NotSent(format!("connection not ready: {e}")));
            }
            let req = self.request(endpoint, body).map_err(Attempt::NotSent)?;
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let collected = Limited::new(resp.into_body(), MAX_BODY)
                        .collect()
                        .await
                        .map_err(|e| Attempt::Lost(format!("reading the answer: {e}")))?;
                    self.put_idle(sender);
                    return Ok((status, collected.to_bytes()));
                }
                Err(mut e) => {
                    if e.take_message().is_some() {
                        if from_pool {
                            continue;
                        }
                        return Err(Attempt::NotSent(format!("request not sent: {}", e.error())));
                    }
                    return Err(Attempt::Lost(format!(
                        "connection failed after the request was sent: {}",
                        e.error()
                    )));
                }
            }
        }
    }

    /// Sends with connection retries until `deadline_budget` (the retry policy) runs out.
    async fn send_retrying(&self, endpoint: Endpoint, body: &Bytes) -> Result<(u16, Bytes)> {
        self.config
            .retry
            .run(
                |_| self.attempt(endpoint, body),
                |e, attempt| {
                    self.active.store(false, Ordering::Release);
                    match e {
                        Attempt::Lost(_) => false,
                        Attempt::NotSent(m) => {
                            tracing::debug!(plugin = %self.name, endpoint = endpoint.path(), attempt, error = %m, "plugin unreachable");
                            true
                        }
                    }
                },
            )
            .await
            .map_err(|x| {
                let (Attempt::Lost(m) | Attempt::NotSent(m)) = x.error;
                self.unavailable(endpoint, x.attempts, m)
            })
    }

    async fn activate_inner(&self) -> Result<()> {
        if self.is_activated() {
            return Ok(());
        }
        let _guard = self.activation.lock().await;
        if self.is_activated() {
            return Ok(());
        }
        let (status, body) = self
            .send_retrying(Endpoint::Activate, &Bytes::new())
            .await?;
        let implements = Answer {
            plugin: &self.name,
            endpoint: Endpoint::Activate,
            volume: None,
            status,
            body: &body,
        }
        .implements()?;
        if !implements.iter().any(|i| i == "VolumeDriver") {
            return Err(DvdiError::NotAVolumeDriver {
                plugin: self.name.clone(),
                implements,
            });
        }
        tracing::debug!(plugin = %self.name, addr = %self.addr, "plugin activated");
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// The `/Plugin.Activate` handshake (a no-op when cached).
    ///
    /// # Errors
    /// [`DvdiError::Unavailable`], [`DvdiError::Timeout`] (the activate timeout),
    /// [`DvdiError::NotAVolumeDriver`], or the plugin's error.
    pub async fn activate(&self) -> Result<()> {
        let t = self.config.timeouts.activate;
        tokio::time::timeout(t, self.activate_inner())
            .await
            .map_err(|_| self.timeout(Endpoint::Activate, t))?
    }

    fn timeout(&self, endpoint: Endpoint, after: Duration) -> DvdiError {
        DvdiError::Timeout {
            plugin: self.name.clone(),
            endpoint: endpoint.path(),
            after,
        }
    }

    /// Calls `endpoint` (activating first) and returns the HTTP status and body.
    async fn call(&self, endpoint: Endpoint, body: Vec<u8>) -> Result<(u16, Bytes)> {
        let t = self.config.timeouts.of(endpoint);
        let body = Bytes::from(body);
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::timeout(t, async {
            self.activate_inner().await?;
            self.send_retrying(endpoint, &body).await
        })
        .await
        .map_err(|_| {
            // A hung call's connection is dropped with the future; do not trust the others.
            self.reset();
            self.timeout(endpoint, t)
        })?
    }

    /// `Create {Name, Opts}` (`Opts` always sent, `{}` when empty).
    ///
    /// # Errors
    /// Transport errors, the timeout, or the plugin's error.
    pub async fn create(&self, name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
        let (status, body) = self
            .call(
                Endpoint::Create,
                request_body(Endpoint::Create, Some(name), None, Some(opts)),
            )
            .await?;
        self.answer(Endpoint::Create, Some(name), status, &body)
            .check()?;
        Ok(())
    }

    /// `Remove {Name}`.
    ///
    /// # Errors
    /// As [`PluginClient::create`].
    pub async fn remove(&self, name: &str) -> Result<()> {
        let (status, body) = self
            .call(
                Endpoint::Remove,
                request_body(Endpoint::Remove, Some(name), None, None),
            )
            .await?;
        self.answer(Endpoint::Remove, Some(name), status, &body)
            .check()?;
        Ok(())
    }

    /// `Mount {Name, ID}`: the host mount point.
    ///
    /// # Errors
    /// As [`PluginClient::create`]; [`DvdiError::Decode`] without a usable `Mountpoint`.
    pub async fn mount(&self, name: &str, id: &str) -> Result<PathBuf> {
        let (status, body) = self
            .call(
                Endpoint::Mount,
                request_body(Endpoint::Mount, Some(name), Some(id), None),
            )
            .await?;
        self.answer(Endpoint::Mount, Some(name), status, &body)
            .mountpoint()
    }

    /// `Unmount {Name, ID}`.
    ///
    /// # Errors
    /// As [`PluginClient::create`].
    pub async fn unmount(&self, name: &str, id: &str) -> Result<()> {
        let (status, body) = self
            .call(
                Endpoint::Unmount,
                request_body(Endpoint::Unmount, Some(name), Some(id), None),
            )
            .await?;
        self.answer(Endpoint::Unmount, Some(name), status, &body)
            .check()?;
        Ok(())
    }

    /// `Path {Name}`: the mount point, `None` when the plugin gives none.
    ///
    /// # Errors
    /// As [`PluginClient::create`].
    pub async fn path(&self, name: &str) -> Result<Option<PathBuf>> {
        let (status, body) = self
            .call(
                Endpoint::Path,
                request_body(Endpoint::Path, Some(name), None, None),
            )
            .await?;
        match self
            .answer(Endpoint::Path, Some(name), status, &body)
            .mountpoint()
        {
            Ok(p) => Ok(Some(p)),
            Err(DvdiError::Decode { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `Get {Name}`: `None` for `"Volume": null`.
    ///
    /// # Errors
    /// As [`PluginClient::create`] (many plugins answer a missing volume with an error).
    pub async fn get(&self, name: &str) -> Result<Option<VolumeInfo>> {
        let (status, body) = self
            .call(
                Endpoint::Get,
                request_body(Endpoint::Get, Some(name), None, None),
            )
            .await?;
        self.answer(Endpoint::Get, Some(name), status, &body)
            .volume()
    }

    /// `List {}`.
    ///
    /// # Errors
    /// As [`PluginClient::create`].
    pub async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let (status, body) = self
            .call(
                Endpoint::List,
                request_body(Endpoint::List, None, None, None),
            )
            .await?;
        self.answer(Endpoint::List, None, status, &body).volumes()
    }

    /// `Capabilities {}`; a plugin without the endpoint (404) or answering with an error has
    /// scope `local`, as Docker decides.
    ///
    /// # Errors
    /// Transport errors and the timeout only.
    pub async fn capabilities(&self) -> Result<Capabilities> {
        let (status, body) = self
            .call(
                Endpoint::Capabilities,
                request_body(Endpoint::Capabilities, None, None, None),
            )
            .await?;
        match self
            .answer(Endpoint::Capabilities, None, status, &body)
            .capabilities()
        {
            Ok(c) => Ok(c),
            Err(e) if e.is_plugin_answer() => {
                tracing::debug!(plugin = %self.name, error = %e, "Capabilities unsupported; scope local");
                Ok(Capabilities::default())
            }
            Err(e) => Err(e),
        }
    }

    fn answer<'a>(
        &'a self,
        endpoint: Endpoint,
        volume: Option<&'a str>,
        status: u16,
        body: &'a [u8],
    ) -> Answer<'a> {
        Answer {
            plugin: &self.name,
            endpoint,
            volume,
            status,
            body,
        }
    }
}

async fn handshake<I>(io: I) -> std::result::Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "plugin connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = default_retry();
        assert_eq!(r.backoff(0), Duration::from_secs(1));
        assert_eq!(r.backoff(3), Duration::from_secs(8));
        assert_eq!(r.backoff(10), Duration::from_secs(30));
        assert_eq!(r.backoff(100), Duration::from_secs(30));
        assert_eq!(RetryPolicy::none().backoff(0), Duration::ZERO);
    }

    #[test]
    fn timeouts() {
        let t = Timeouts::default();
        assert_eq!(t.of(Endpoint::Mount), Duration::from_secs(120));
        assert_eq!(t.of(Endpoint::Create), Duration::from_secs(120));
        assert_eq!(t.of(Endpoint::Unmount), Duration::from_secs(60));
        assert_eq!(Timeouts::mesos_compat().unmount, Duration::from_secs(600));
    }
}
