//! The per-(driver, volume) consumer record and its durable writes.
//!
//! A record lives at `<state_dir>/<enc(driver)>/<enc(volume)>/consumers.json`, `enc` being
//! [`berth_mount::names::encode_component`] (so `rexray/ebs:latest` and hostile volume names
//! stay one component each). It holds:
//! - `consumers`: every consumer (container id) using the volume, the mount `ID` it uses and
//!   whether it is leaving;
//! - `mounts`: every `ID` berth has mounted (or is mounting / unmounting) at the plugin, with
//!   the intent state and whether the intent's call may be in flight.
//!
//! The records are kept by berth's one record store ([`berth_mount::store::RecordStore`]): a
//! record reaches disk through a temp file in the same directory, `fsync`, `rename`, `fsync`
//! of the directory, so a crash leaves the old or the new record.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::Mode;

/// The record format version.
pub const SCHEMA_VERSION: u32 = 1;

/// The file name of a record inside its volume directory.
pub const RECORD_FILE: &str = "consumers.json";

/// The state of one plugin-side mount (one `ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MountState {
    /// Intent: `Get`/`Create` and `Mount` are about to run (or ran without their outcome
    /// recorded).
    Mounting,
    /// Mounted (stable).
    Mounted,
    /// Intent: `Unmount` is about to run (or ran without its outcome recorded, or failed).
    Unmounting,
}

/// One `ID` mounted at the plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMount {
    /// Its state.
    pub state: MountState,
    /// The intent's call may have reached the plugin without us seeing the outcome (written
    /// `true` before every call, `false` once a call came back with an error).
    pub in_flight: bool,
    /// The mount point the plugin returned.
    pub mountpoint: Option<PathBuf>,
    /// The mount point was a mount point in mountinfo right after `Mount` (FUSE, block
    /// devices); recovery then checks it still is.
    pub was_mount_point: bool,
    /// The last error of this intent's call.
    pub last_error: Option<String>,
}

/// One consumer of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// The `ID` of the plugin mount it uses (its own id, or `agent:<id>` in the
    /// compatibility mode).
    pub mount_id: String,
    /// How it uses the volume.
    pub mode: Mode,
    /// It asked to leave (or recovery found it gone); removed once its mount is released.
    pub leaving: bool,
}

/// Everything berth knows about one (driver, volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The plugin name.
    pub driver: String,
    /// The volume name.
    pub name: String,
    /// Consumers by id.
    pub consumers: BTreeMap<String, Consumer>,
    /// Plugin mounts by `ID`.
    pub mounts: BTreeMap<String, PluginMount>,
}

impl VolumeRecord {
    /// An empty record.
    #[must_use]
    pub fn new(driver: &str, name: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            driver: driver.to_owned(),
            name: name.to_owned(),
            consumers: BTreeMap::new(),
            mounts: BTreeMap::new(),
        }
    }

    /// Nothing left: no consumer and no mount.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty() && self.mounts.is_empty()
    }

    /// Whether some consumer that is not leaving uses mount `id`.
    #[must_use]
    pub fn wanted(&self, id: &str) -> bool {
        self.consumers
            .values()
            .any(|c| !c.leaving && c.mount_id == id)
    }
}

impl berth_mount::store::Record for VolumeRecord {
    fn check(&self, _key: &[&str]) -> Result<(), String> {
        if self.schema_version == SCHEMA_VERSION {
            Ok(())
        } else {
            Err(format!("unknown schema_version {}", self.schema_version))
        }
    }
}
