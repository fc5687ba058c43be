//! `CSIPluginInfo` configuration: the `--csi_plugin_config_dir` directory as Mesos reads it.
//!
//! Every non-directory entry is one Mesos-JSON `CSIPluginInfo` (`type`, `name` = `"default"`,
//! `containers` for managed plugins, `endpoints` for unmanaged ones, `target_path_root`,
//! `target_path_exists`). Plugins are keyed by `type` (a volume's `plugin_name` matches the
//! `type`, not the `name`); a second file with a known `type` is skipped.
//!
//! Differences from Mesos, on purpose (research `isolators.md` §1.1, §7.3(14)): one bad file
//! is reported and skipped instead of failing the whole load; an empty directory is valid; a
//! config with neither or both of `containers`/`endpoints` is a config error, not an abort.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_resources::proto::{CsiPluginContainerInfo, CsiPluginInfo, csi_plugin_container_info};

use crate::client::parse_endpoint;
use crate::error::{CsiError, Result};

/// How berth reaches a plugin's node service.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginKind {
    /// `endpoints`: an already running plugin at this socket.
    Unmanaged {
        /// The node service's socket path.
        node_socket: PathBuf,
    },
    /// `containers`: berth starts the plugin itself (the container serving `NODE_SERVICE`).
    Managed {
        /// The container entry serving the node service.
        container: Box<CsiPluginContainerInfo>,
    },
}

/// One validated plugin configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `CSIPluginInfo.type`: what a volume's `plugin_name` refers to; a path component.
    pub plugin_type: String,
    /// `CSIPluginInfo.name` (default `"default"`); a path component.
    pub name: String,
    /// How to reach it.
    pub kind: PluginKind,
    /// `target_path_root`: mounts live under `<root>/<enc(id)>/` instead of the work dir.
    pub target_path_root: Option<PathBuf>,
    /// `target_path_exists`: berth creates the target itself and does not require the plugin
    /// to remove it on unpublish (workaround for non-compliant plugins).
    pub target_path_exists: bool,
    /// The file it came from.
    pub source: PathBuf,
}

/// The outcome of loading a directory: the plugins that are valid, and one error per file
/// that was skipped.
#[derive(Debug, Default)]
pub struct LoadedConfig {
    /// Valid plugins by `type`.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Files skipped, each with its reason.
    pub errors: Vec<CsiError>,
}

fn bad(path: &Path, reason: impl Into<String>) -> CsiError {
    CsiError::Config {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Validates one parsed `CSIPluginInfo`.
///
/// # Errors
/// [`CsiError::Config`] naming `path` and the rule that failed.
pub fn validate(path: &Path, info: &CsiPluginInfo) -> Result<PluginConfig> {
    let plugin_type = berth_mount::names::validate_component(&info.r#type)
        .map_err(|e| bad(path, format!("type: {e}")))?
        .to_owned();
    let name = berth_mount::names::validate_component(info.name())
        .map_err(|e| bad(path, format!("name: {e}")))?
        .to_owned();
    let kind = match (info.containers.is_empty(), info.endpoints.is_empty()) {
        (false, false) => return Err(bad(path, "both containers and endpoints are set")),
        (true, true) => return Err(bad(path, "neither containers nor endpoints is set")),
        (true, false) => {
            let node = csi_plugin_container_info::Service::NodeService as i32;
            let ep = info
                .endpoints
                .iter()
                .find(|e| e.csi_service == node)
                .ok_or_else(|| bad(path, "no endpoint serves NODE_SERVICE"))?;
            let node_socket =
                parse_endpoint(&plugin_type, &ep.endpoint).map_err(|e| bad(path, e.to_string()))?;
            PluginKind::Unmanaged { node_socket }
        }
        (false, true) => {
            let node = csi_plugin_container_info::Service::NodeService as i32;
            let c = info
                .containers
                .iter()
                .find(|c| c.services.contains(&node))
                .ok_or_else(|| bad(path, "no container serves NODE_SERVICE"))?;
            if c.command.is_none() {
                return Err(bad(path, "the NODE_SERVICE container has no command"));
            }
            PluginKind::Managed {
                container: Box::new(c.clone()),
            }
        }
    };
    let target_path_root = match info.target_path_root.as_deref() {
        None => None,
        Some(r) if r.starts_with('/') && !r.contains('\0') => Some(PathBuf::from(r)),
        Some(_) => return Err(bad(path, "target_path_root is not an absolute path")),
    };
    Ok(PluginConfig {
        plugin_type,
        name,
        kind,
        target_path_root,
        target_path_exists: info.target_path_exists(),
        source: path.to_owned(),
    })
}

/// Parses and validates one file.
///
/// # Errors
/// [`CsiError::Config`] for unreadable files, bad JSON, or an invalid config.
pub fn load_file(path: &Path) -> Result<PluginConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("read: {e}")))?;
    let info: CsiPluginInfo = berth_resources::json::from_json_str(&text)
        .map_err(|e| bad(path, format!("parse: {e}")))?;
    validate(path, &info)
}

/// Loads every non-directory file of `dir` (sorted by file name). Bad files and duplicate
/// `type`s are reported in [`LoadedConfig::errors`] and skipped; an empty directory is valid.
///
/// # Errors
/// [`CsiError::Config`] only when `dir` itself cannot be listed.
pub fn load_dir(dir: &Path) -> Result<LoadedConfig> {
    let entries = std::fs::read_dir(dir).map_err(|e| bad(dir, format!("list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| bad(dir, format!("list: {e}")))?;
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            _ => files.push(path),
        }
    }
    files.sort();
    let mut out = LoadedConfig::default();
    for path in files {
        match load_file(&path) {
            Ok(cfg) => {
                if let Some(first) = out.plugins.get(&cfg.plugin_type) {
                    let reason = format!(
                        "duplicate type {:?} (already configured by {})",
                        cfg.plugin_type,
                        first.source.display()
                    );
                    tracing::warn!(path = %path.display(), %reason, "skipping CSI plugin config");
                    out.errors.push(bad(&path, reason));
                } else {
                    out.plugins.insert(cfg.plugin_type.clone(), cfg);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "skipping CSI plugin config");
                out.errors.push(e);
            }
        }
    }
    Ok(out)
}
