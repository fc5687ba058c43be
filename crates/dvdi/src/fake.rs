//! An in-memory [`VolumeDriver`] that records every call, for callers' unit tests (the
//! isolator core). It behaves like a strict reference-counting plugin: `Mount` adds the `ID`
//! to the volume's set, `Unmount` of an unknown `ID` is an error, `Remove` of a mounted
//! volume is an error, `Get` of a missing volume answers `None`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::driver::{BoxFuture, Drivers, VolumeDriver};
use crate::error::{DvdiError, Result};
use crate::names::DriverName;
use crate::protocol::{Capabilities, Endpoint, VolumeInfo};

/// One recorded call: endpoint, volume, `ID`.
pub type Call = (Endpoint, String, String);

#[derive(Debug, Default)]
struct State {
    volumes: BTreeMap<String, BTreeSet<String>>,
    calls: Vec<Call>,
    fail: HashMap<Endpoint, String>,
}

/// The in-memory driver (see the module docs). Clones share state.
#[derive(Debug, Clone)]
pub struct MemoryDriver {
    name: String,
    root: PathBuf,
    state: Arc<Mutex<State>>,
}

impl MemoryDriver {
    /// A driver named `name` whose mount points are `<root>/<volume>`.
    #[must_use]
    pub fn new(name: &str, root: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            root: root.into(),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.st().calls.clone()
    }

    /// The `ID`s currently mounted on `volume`.
    #[must_use]
    pub fn mounted_ids(&self, volume: &str) -> BTreeSet<String> {
        self.st().volumes.get(volume).cloned().unwrap_or_default()
    }

    /// Makes every later call of `endpoint` fail with `message` (`None` clears it).
    pub fn fail(&self, endpoint: Endpoint, message: Option<&str>) {
        let mut s = self.st();
        match message {
            Some(m) => s.fail.insert(endpoint, m.to_owned()),
            None => s.fail.remove(&endpoint),
        };
    }

    fn enter(
        &self,
        endpoint: Endpoint,
        volume: &str,
        id: &str,
    ) -> Result<std::sync::MutexGuard<'_, State>> {
        let mut s = self.st();
        s.calls.push((endpoint, volume.to_owned(), id.to_owned()));
        if let Some(m) = s.fail.get(&endpoint) {
            return Err(self.err(endpoint, volume, m.clone()));
        }
        Ok(s)
    }

    fn err(&self, endpoint: Endpoint, volume: &str, message: String) -> DvdiError {
        DvdiError::Plugin {
            plugin: self.name.clone(),
            endpoint: endpoint.path(),
            volume: Some(volume.to_owned()),
            status: 200,
            message,
        }
    }
}

impl VolumeDriver for MemoryDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn create<'a>(
        &'a self,
        volume: &'a str,
        _opts: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut s = self.enter(Endpoint::Create, volume, "")?;
            s.volumes.entry(volume.to_owned()).or_default();
            Ok(())
        })
    }
    fn remove<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut s = self.enter(Endpoint::Remove, volume, "")?;
            match s.volumes.get(volume) {
                None => Err(self.err(Endpoint::Remove, volume, "no such volume".into())),
                Some(ids) if !ids.is_empty() => {
                    Err(self.err(Endpoint::Remove, volume, "volume is mounted".into()))
                }
                Some(_) => {
                    s.volumes.remove(volume);
                    Ok(())
                }
            }
        })
    }
    fn mount<'a>(&'a self, volume: &'a str, id: &'a str) -> BoxFuture<'a, Result<PathBuf>> {
        Box::pin(async move {
            let mut s = self.enter(Endpoint::Mount, volume, id)?;
            let Some(ids) = s.volumes.get_mut(volume) else {
                return Err(self.err(Endpoint::Mount, volume, "no such volume".into()));
            };
            ids.insert(id.to_owned());
            Ok(self.root.join(volume))
        })
    }
    fn unmount<'a>(&'a self, volume: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut s = self.enter(Endpoint::Unmount, volume, id)?;
            if s.volumes.get_mut(volume).is_some_and(|ids| ids.remove(id)) {
                Ok(())
            } else {
                Err(self.err(Endpoint::Unmount, volume, format!("ID {id} not mounted")))
            }
        })
    }
    fn path<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<Option<PathBuf>>> {
        Box::pin(async move {
            let s = self.enter(Endpoint::Path, volume, "")?;
            Ok(s.volumes
                .contains_key(volume)
                .then(|| self.root.join(volume)))
        })
    }
    fn get<'a>(&'a self, volume: &'a str) -> BoxFuture<'a, Result<Option<VolumeInfo>>> {
        Box::pin(async move {
            let s = self.enter(Endpoint::Get, volume, "")?;
            Ok(s.volumes.contains_key(volume).then(|| VolumeInfo {
                name: volume.to_owned(),
                mountpoint: Some(self.root.join(volume)),
                created_at: None,
                status: None,
            }))
        })
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<VolumeInfo>>> {
        Box::pin(async move {
            let s = self.enter(Endpoint::List, "", "")?;
            Ok(s.volumes
                .keys()
                .map(|v| VolumeInfo {
                    name: v.clone(),
                    mountpoint: None,
                    created_at: None,
                    status: None,
                })
                .collect())
        })
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<Capabilities>> {
        Box::pin(async move {
            drop(self.enter(Endpoint::Capabilities, "", "")?);
            Ok(Capabilities::default())
        })
    }
}

/// [`Drivers`] over a fixed set of [`MemoryDriver`]s.
#[derive(Debug, Clone, Default)]
pub struct MemoryDrivers {
    drivers: BTreeMap<String, MemoryDriver>,
}

impl MemoryDrivers {
    /// Adds a driver.
    #[must_use]
    pub fn with(mut self, driver: MemoryDriver) -> Self {
        self.drivers.insert(driver.name.clone(), driver);
        self
    }
}

impl Drivers for MemoryDrivers {
    fn driver<'a>(&'a self, name: &'a DriverName) -> BoxFuture<'a, Result<Arc<dyn VolumeDriver>>> {
        Box::pin(async move {
            match self.drivers.get(name.as_str()) {
                Some(d) => {
                    let d: Arc<dyn VolumeDriver> = Arc::new(d.clone());
                    Ok(d)
                }
                None => Err(DvdiError::NotFound {
                    plugin: name.as_str().to_owned(),
                    searched: Vec::new(),
                }),
            }
        })
    }
}
