//! The volume-driver seam: the [`VolumeDriver`] trait (one plugin's endpoints), the
//! [`Drivers`] trait (a plugin by name), and their real implementations: [`PluginClient`]
//! and [`PluginRegistry`], which discovers plugins as Docker does and keeps one client per
//! plugin (so activation and kept-alive connections are shared by every caller).
//!
//! Discovery is retried like Docker's lookup (a plugin may be starting or socket-activated):
//! with the client's retry policy, until the next wait would pass its budget.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use crate::client::{ClientConfig, PluginClient};
use crate::discovery::Discovery;
use crate::error::{DvdiError, Result};
use crate::names::DriverName;
use crate::protocol::{Capabilities, VolumeInfo};

/// A boxed, sendable future (the traits here are used as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The endpoints of one Docker volume plugin.
pub trait VolumeDriver: Send + Sync {
    /// The plugin name (for errors and records).
    fn name(&self) -> &str;
    /// `Create {Name, Opts}`.
    fn create<'a>(
        &'a self,
        volume: &'a str,
        opts: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>>;
    /// `Remove {Name}`.
    fn remove<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<()>>;
    /// `Mount {Name, ID}`: the host mount point.
    fn mount<'a>(&'a self, volume: &'a str, id: &'a str) -> BoxFuture<'a, Result<PathBuf>>;
    /// `Unmount {Name, ID}`.
    fn unmount<'a>(&'a self, volume: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// `Path {Name}`.
    fn path<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<Option<PathBuf>>>;
    /// `Get {Name}`: `None` when the plugin says there is no such volume.
    fn get<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<Option<VolumeInfo>>>;
    /// `List {}`.
    fn list(&self) -> BoxFuture<'_, Result<Vec<VolumeInfo>>>;
    /// `Capabilities {}`.
    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities>>;
}

impl VolumeDriver for PluginClient {
    fn name(&self) -> &str {
        PluginClient::name(self)
    }
    fn create<'a>(
        &'a self,
        volume: &'a str,
        opts: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(PluginClient::create(self, volume, opts))
    }
    fn remove<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(PluginClient::remove(self, volume))
    }
    fn mount<'a>(&'a self, volume: &'a str, id: &'a str) -> BoxFuture<'a, Result<PathBuf>> {
        Box::pin(PluginClient::mount(self, volume, id))
    }
    fn unmount<'a>(&'a self, volume: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(PluginClient::unmount(self, volume, id))
    }
    fn path<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<Option<PathBuf>>> {
        Box::pin(PluginClient::path(self, volume))
    }
    fn get<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<Option<VolumeInfo>>> {
        Box::pin(PluginClient::get(self, volume))
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<VolumeInfo>>> {
        Box::pin(PluginClient::list(self))
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities>> {
        Box::pin(PluginClient::capabilities(self))
    }
}

/// Plugins by name.
pub trait Drivers: Send + Sync {
    /// The driver named `name`.
    fn driver<'a>(&'a self, name: &'a DriverName) -> BoxFuture<'a, Result<Arc<dyn VolumeDriver>>>;
}

/// Discovers plugins and keeps one [`PluginClient`] per plugin name.
#[derive(Debug)]
pub struct PluginRegistry {
    discovery: Discovery,
    config: ClientConfig,
    clients: Mutex<HashMap<String, Arc<PluginClient>>>,
}

impl PluginRegistry {
    /// A registry over `discovery`, with clients configured by `config`.
    #[must_use]
    pub fn new(discovery: Discovery, config: ClientConfig) -> Self {
        Self {
            discovery,
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The discovery settings.
    #[must_use]
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// Endpoint calls made per plugin so far (for metrics).
    #[must_use]
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, c)| (name.clone(), c.calls()))
            .collect()
    }

    /// The client of plugin `name`, discovering it on first use (with lookup retries). A
    /// client whose socket file has since disappeared or changed is looked up again.
    ///
    /// # Errors
    /// [`DvdiError::NotFound`] after the retries; spec-file errors at once.
    pub async fn client(&self, name: &DriverName) -> Result<Arc<PluginClient>> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name.as_str())
        {
            return Ok(Arc::clone(c));
        }
        let found = self
            .config
            .retry
            .run(
                |_| async { self.discovery.lookup(name) },
                |e, _| {
                    let missing = matches!(e, DvdiError::NotFound { .. });
                    if missing {
                        tracing::info!(plugin = %name, "unable to locate plugin");
                    }
                    missing
                },
            )
            .await
            .map_err(|x| x.error)?;
        let client = Arc::new(PluginClient::new(name.as_str(), found.addr, self.config));
        let mut map = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(
            map.entry(name.as_str().to_owned()).or_insert(client),
        ))
    }

    /// Forgets the cached client of `name` (the next use discovers it again).
    pub fn forget(&self, name: &DriverName) {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name.as_str());
    }
}

impl Drivers for PluginRegistry {
    fn driver<'a>(&'a self, name: &'a DriverName) -> BoxFuture<'a, Result<Arc<dyn VolumeDriver>>> {
        Box::pin(async move {
            let c: Arc<dyn VolumeDriver> = self.client(name).await?;
            Ok(c)
        })
    }
}
