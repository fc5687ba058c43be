//! Per-volume state records and their crash-safe writes.
//!
//! A record lives at `<work_dir>/csi/<type>/<name>/volumes/<enc(volume_id)>/volume.state` (the
//! Mesos location; berth writes versioned JSON instead of Mesos's protobuf). It holds the
//! volume-level stage state, one publication per access mode (read-write / read-only), the
//! persisted consumer set, the boot id of the stage, and secrets as references only.
//!
//! The records are kept by berth's one record store ([`berth_mount::store::RecordStore`]): a
//! record reaches disk through a temp file in the same directory, `fsync`, `rename`, `fsync`
//! of the directory, so a crash leaves either the old or the new record, never a torn one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::secrets::StoredSecret;

/// The record format version.
pub const SCHEMA_VERSION: u32 = 1;

/// The file name of a record inside its volume directory.
pub const RECORD_FILE: &str = "volume.state";

/// Volume-level state (Mesos `VolumeState.State` names, research `isolators.md` §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StageState {
    /// Not staged (stable).
    NodeReady,
    /// Intent: `NodeStageVolume` is about to run or ran without its outcome recorded.
    NodeStage,
    /// Staged in boot `boot_id` (stable). Also the state of a volume whose plugin has no
    /// `STAGE_UNSTAGE_VOLUME` once it is in use.
    VolReady,
    /// Intent: `NodeUnstageVolume`.
    NodeUnstage,
}

/// State of one publication (Mesos names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PublishState {
    /// Intent: `NodePublishVolume`.
    NodePublish,
    /// Published (stable).
    Published,
    /// Intent: `NodeUnpublishVolume`.
    NodeUnpublish,
}

/// Access wanted by a consumer; a volume gets one publication per mode in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read-write.
    Rw,
    /// Read-only (`readonly = true` in NodePublishVolume).
    Ro,
}

/// The CSI volume capability, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Capability {
    /// Block access instead of mount access.
    pub block: bool,
    /// Mount access: file system type.
    pub fs_type: String,
    /// Mount access: mount flags.
    pub mount_flags: Vec<String>,
    /// `AccessMode.Mode` number.
    pub access_mode: i32,
}

/// One publication of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The `target_path` given to the plugin.
    pub target: PathBuf,
    /// Its state.
    pub state: PublishState,
}

/// Everything berth knows about one (plugin, volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Plugin type.
    pub plugin_type: String,
    /// Plugin name.
    pub plugin_name: String,
    /// The CSI volume id, verbatim.
    pub volume_id: String,
    /// Stage state.
    pub stage: StageState,
    /// Boot id of the current stage (`VOL_READY` and later).
    pub boot_id: Option<String>,
    /// `staging_target_path`, when the plugin stages.
    pub staging_path: Option<PathBuf>,
    /// Volume capability.
    pub capability: Capability,
    /// `volume_context`.
    pub volume_context: BTreeMap<String, String>,
    /// `node_stage_secrets`, as references.
    pub stage_secrets: BTreeMap<String, StoredSecret>,
    /// `node_publish_secrets`, as references.
    pub publish_secrets: BTreeMap<String, StoredSecret>,
    /// Publications by mode.
    pub publications: BTreeMap<Mode, Publication>,
    /// Consumers (container ids) and the mode each wants.
    pub consumers: BTreeMap<String, Mode>,
    /// The gid sent as `MountVolume.volume_mount_group` (see [`crate::groups`]): taken and
    /// recorded here before the first `NodeStageVolume` / `NodePublishVolume` that carries
    /// it, released when the record is removed. Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mount_group: Option<u32>,
}

impl VolumeRecord {
    /// Whether the record is where its consumer set wants it: staged, and exactly the wanted
    /// publications, all `PUBLISHED` (no intent pending).
    #[must_use]
    pub fn is_settled(&self) -> bool {
        let wanted: std::collections::BTreeSet<Mode> = self.consumers.values().copied().collect();
        !wanted.is_empty()
            && self.stage == StageState::VolReady
            && self.publications.len() == wanted.len()
            && self
                .publications
                .iter()
                .all(|(m, p)| wanted.contains(m) && p.state == PublishState::Published)
    }

    /// The Mesos-style state of the whole volume: the publication state when there is one
    /// (intents first), the stage state otherwise.
    #[must_use]
    pub fn mesos_state(&self) -> &'static str {
        let pubs = || self.publications.values().map(|p| p.state);
        if pubs().any(|s| s == PublishState::NodeUnpublish) {
            "NODE_UNPUBLISH"
        } else if pubs().any(|s| s == PublishState::NodePublish) {
            "NODE_PUBLISH"
        } else if !self.publications.is_empty() {
            "PUBLISHED"
        } else {
            match self.stage {
                StageState::NodeReady => "NODE_READY",
                StageState::NodeStage => "NODE_STAGE",
                StageState::VolReady => "VOL_READY",
                StageState::NodeUnstage => "NODE_UNSTAGE",
            }
        }
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

/// How many `fsync` calls this process made through berth's durable writes (benchmarks).
pub use berth_mount::durable::fsync_calls;
