//! The one error type of `berth-dvdi`.
//!
//! Every variant that comes from talking to a plugin names the plugin and the endpoint
//! (`/VolumeDriver.Mount`, ...); messages the plugin sent are kept (trimmed to a bounded
//! length, control characters replaced) so an operator sees what the plugin said. Option
//! values are never put into an error or a log line.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in discovery, the protocol client, a volume spec or the mount manager.
#[derive(Debug, thiserror::Error)]
pub enum DvdiError {
    /// A plugin name, volume name, option, consumer id or container path is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was being validated (`plugin name`, `volume name`, `DVDI_VOLUME_OPTS1`, ...).
        what: String,
        /// The offending value (never an option value: those are replaced by `<redacted>`).
        value: String,
        /// Which rule it broke.
        reason: String,
    },
    /// No socket or spec file for the plugin in any discovery root (after the lookup retries).
    #[error("plugin {plugin}: not found in {searched:?}")]
    NotFound {
        /// The plugin name.
        plugin: String,
        /// The directories searched.
        searched: Vec<PathBuf>,
    },
    /// A `.spec` or `.json` file exists but is unusable.
    #[error("plugin {plugin}: spec file {path}: {reason}")]
    Spec {
        /// The plugin name.
        plugin: String,
        /// The spec file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The address needs a transport this crate does not speak (e.g. `https://` with TLS).
    #[error("plugin {plugin}: unsupported address {addr}: {reason}")]
    Unsupported {
        /// The plugin name.
        plugin: String,
        /// The address.
        addr: String,
        /// Why.
        reason: &'static str,
    },
    /// The plugin could not be reached (connection refused, stale or missing socket, the
    /// connection closed before an answer), after the connection retries.
    #[error("plugin {plugin}: {endpoint}: unavailable after {attempts} attempt(s): {message}")]
    Unavailable {
        /// The plugin name.
        plugin: String,
        /// The endpoint, e.g. `/VolumeDriver.Mount`.
        endpoint: &'static str,
        /// Connection attempts made.
        attempts: u32,
        /// The last transport error.
        message: String,
    },
    /// The call did not finish within its timeout.
    #[error("plugin {plugin}: {endpoint}: timed out after {after:?}")]
    Timeout {
        /// The plugin name.
        plugin: String,
        /// The endpoint.
        endpoint: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// The plugin answered with an error: a non-empty `Err`/`Error` (any HTTP status), or a
    /// non-2xx status (the body text is the message when it is not JSON).
    #[error("plugin {plugin}: {endpoint}{}: HTTP {status}: {message}", vol(.volume))]
    Plugin {
        /// The plugin name.
        plugin: String,
        /// The endpoint.
        endpoint: &'static str,
        /// The volume, for volume calls.
        volume: Option<String>,
        /// The HTTP status.
        status: u16,
        /// The plugin's message.
        message: String,
    },
    /// The plugin answered 404 for the endpoint: it does not implement it.
    #[error("plugin {plugin}: {endpoint}: not implemented by the plugin (HTTP 404)")]
    NotImplemented {
        /// The plugin name.
        plugin: String,
        /// The endpoint.
        endpoint: &'static str,
    },
    /// The plugin's `Implements` list lacks `VolumeDriver`.
    #[error("plugin {plugin}: does not implement VolumeDriver (implements {implements:?})")]
    NotAVolumeDriver {
        /// The plugin name.
        plugin: String,
        /// What it says it implements.
        implements: Vec<String>,
    },
    /// A successful answer whose body cannot be understood (not JSON, a missing `Mountpoint`).
    #[error("plugin {plugin}: {endpoint}: bad response: {reason}")]
    Decode {
        /// The plugin name.
        plugin: String,
        /// The endpoint.
        endpoint: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The volume does not exist and the create policy forbids creating it.
    #[error("plugin {plugin}: volume {volume:?} does not exist and may not be created (explicit create){}", with_cause(.cause))]
    NoSuchVolume {
        /// The plugin name.
        plugin: String,
        /// The volume.
        volume: String,
        /// The plugin's answer to `Get`, when it was an error.
        cause: Option<String>,
    },
    /// Remove was refused: the volume still has consumers or mounts in our record.
    #[error("plugin {plugin}: volume {volume:?} is in use by {consumers:?}; Remove refused")]
    InUse {
        /// The plugin name.
        plugin: String,
        /// The volume.
        volume: String,
        /// Consumers still recorded.
        consumers: Vec<String>,
    },
    /// The mount `ID` has an interrupted call whose outcome is unknown (a pending rollback or
    /// unmount); it must be resolved (`retry_pending`, `recover`) before it is mounted again.
    #[error("plugin {plugin}: volume {volume:?}: ID {id:?} has a pending operation: {last_error}")]
    Pending {
        /// The plugin name.
        plugin: String,
        /// The volume.
        volume: String,
        /// The mount `ID`.
        id: String,
        /// The last error of the pending call.
        last_error: String,
    },
    /// A file-system step on our own state failed.
    #[error("{step} {path}: {source}")]
    Io {
        /// The step, e.g. `write consumer record`.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A consumer record exists but cannot be parsed; that volume is left alone.
    #[error("consumer record {path}: {reason}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading mountinfo failed.
    #[error("mountinfo: {0}")]
    Mountinfo(#[source] berth_mount::MountError),
}

fn vol(v: &Option<String>) -> String {
    v.as_ref()
        .map(|v| format!(" (volume {v:?})"))
        .unwrap_or_default()
}

fn with_cause(c: &Option<String>) -> String {
    c.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
}

impl DvdiError {
    /// True when the plugin itself answered (with an error), as opposed to a transport failure,
    /// a timeout or a local problem. An answered call reached the plugin's logic.
    #[must_use]
    pub fn is_plugin_answer(&self) -> bool {
        matches!(
            self,
            Self::Plugin { .. } | Self::NotImplemented { .. } | Self::Decode { .. }
        )
    }

    /// True for failures that may succeed on a later try without any change on our side
    /// (plugin unreachable, timed out).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }
}

/// `Result` with [`DvdiError`].
pub type Result<T, E = DvdiError> = std::result::Result<T, E>;

/// Builds [`DvdiError::Invalid`].
pub(crate) fn invalid(
    what: impl Into<String>,
    value: &str,
    reason: impl Into<String>,
) -> DvdiError {
    DvdiError::Invalid {
        what: what.into(),
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Makes a plugin-supplied message safe to store and print: control characters become spaces,
/// surrounding whitespace goes, and it is cut at 1 KiB (on a character boundary).
pub(crate) fn clean_message(raw: &str) -> String {
    const MAX: usize = 1024;
    let trimmed = raw.trim();
    let mut out = String::with_capacity(trimmed.len().min(MAX + 3));
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}
