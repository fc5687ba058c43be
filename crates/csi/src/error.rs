//! The one error type of `berth-csi`.
//!
//! Every variant names the plugin (its `CSIPluginInfo.type`), and where there is one the
//! volume id and the failing step. No variant ever carries a CSI secret: messages coming back
//! from a plugin are scrubbed of the secret values sent in the same call before they are stored
//! here (see [`crate::client`]).

use std::path::PathBuf;

/// What went wrong in the CSI client, the configuration loader or the volume manager.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// The endpoint string is not `unix:///p`, `unix:/p` or an absolute path.
    #[error("plugin {plugin}: bad endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// Plugin type.
        plugin: String,
        /// The endpoint as configured.
        endpoint: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The plugin answered a call with a non-OK gRPC status (after retries, when retryable).
    #[error("plugin {plugin}: {step}{} failed after {attempts} attempt(s): {code:?}: {message}", vol(.volume_id))]
    Rpc {
        /// Plugin type.
        plugin: String,
        /// The RPC, e.g. `NodePublishVolume`.
        step: &'static str,
        /// The volume, for node calls.
        volume_id: Option<String>,
        /// The gRPC status code.
        code: tonic::Code,
        /// The plugin's message, with any secret value sent in the call redacted.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// A call (including its retries) did not finish before its deadline.
    #[error("plugin {plugin}: {step}{} timed out after {attempts} attempt(s)", vol(.volume_id))]
    Timeout {
        /// Plugin type.
        plugin: String,
        /// The RPC.
        step: &'static str,
        /// The volume, for node calls.
        volume_id: Option<String>,
        /// How many attempts were made.
        attempts: u32,
    },
    /// `Probe` never said ready before the readiness deadline.
    #[error("plugin {plugin}: not ready: {last}")]
    NotReady {
        /// Plugin type.
        plugin: String,
        /// The last answer or error seen.
        last: String,
    },
    /// A `CSIPluginInfo` file could not be read or is invalid.
    #[error("CSI plugin config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A volume id, plugin type or name cannot become a path component.
    #[error("plugin {plugin}: volume {volume_id:?}: invalid id: {source}")]
    InvalidId {
        /// Plugin type.
        plugin: String,
        /// The offending id.
        volume_id: String,
        /// The reason from the name encoder.
        source: berth_mount::MountError,
    },
    /// The volume spec is unusable (e.g. RW consumer of a read-only access mode).
    #[error("plugin {plugin}: volume {volume_id}: {step}: {reason}")]
    Spec {
        /// Plugin type.
        plugin: String,
        /// The volume.
        volume_id: String,
        /// The step that refused it.
        step: &'static str,
        /// Why.
        reason: String,
    },
    /// A secret could not be resolved (the value is never included).
    #[error("plugin {plugin}: volume {volume_id}: secret {key:?}: {reason}")]
    Secret {
        /// Plugin type.
        plugin: String,
        /// The volume.
        volume_id: String,
        /// The key of the secret in the volume spec.
        key: String,
        /// Why it cannot be resolved (never the value).
        reason: String,
    },
    /// A file-system step on our own state or mount directories failed.
    #[error("plugin {plugin}: volume {volume_id}: {step} {path}: {source}")]
    Io {
        /// Plugin type.
        plugin: String,
        /// The volume (empty for plugin-level steps).
        volume_id: String,
        /// The step, e.g. `write intent`, `mkdir staging`.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A state record exists but cannot be parsed; the volume is left alone (quarantined).
    #[error("plugin {plugin}: state record {path}: {reason}")]
    Record {
        /// Plugin type.
        plugin: String,
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// After `NodeUnpublishVolume` succeeded the target path still exists (spec: the plugin
    /// must remove it), or after `NodePublishVolume` it does not exist.
    #[error("plugin {plugin}: volume {volume_id}: {step}: target {path}: {reason}")]
    Target {
        /// Plugin type.
        plugin: String,
        /// The volume.
        volume_id: String,
        /// The step.
        step: &'static str,
        /// The target path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading the mount table or unmounting what a plugin left behind failed.
    #[error("plugin {plugin}: volume {volume_id}: {step}: {source}")]
    Mount {
        /// Plugin type.
        plugin: String,
        /// The volume (empty for plugin-level steps).
        volume_id: String,
        /// The step, e.g. `read mountinfo`, `unmount leftover`.
        step: &'static str,
        /// The mount engine's error (boxed: it is large and rare).
        source: Box<berth_mount::MountError>,
    },
    /// The plugin does not advertise the node capability a call needs (`EXPAND_VOLUME`).
    #[error("plugin {plugin}: volume {volume_id}: the plugin does not advertise {capability}")]
    NotCapable {
        /// The plugin type.
        plugin: String,
        /// The volume.
        volume_id: String,
        /// The capability (`EXPAND_VOLUME`).
        capability: &'static str,
    },
    /// The volume is not published on this node (a call that needs its published path).
    #[error("plugin {plugin}: volume {volume_id}: not published on this node")]
    NotPublished {
        /// The plugin type.
        plugin: String,
        /// The volume.
        volume_id: String,
    },
    /// The plugin type named by a volume is not configured (or failed to start).
    #[error("plugin {plugin}: not configured{}", if .reason.is_empty() { String::new() } else { format!(": {}", .reason) })]
    UnknownPlugin {
        /// The plugin type asked for.
        plugin: String,
        /// Why it is unavailable (empty: no config names it).
        reason: String,
    },
}

fn vol(v: &Option<String>) -> String {
    v.as_ref()
        .map(|v| format!(" (volume {v:?})"))
        .unwrap_or_default()
}

impl CsiError {
    /// The gRPC code when this is an [`CsiError::Rpc`].
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `Result` with [`CsiError`].
pub type Result<T, E = CsiError> = std::result::Result<T, E>;
