//! A container as `prepare` takes it, parsed and checked once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_mount::names::ContainerId;
use berth_resources::proto;

use super::error::{Result, cfg_err};

/// The longest container id: its record is `<id>.json`, one file name (255 bytes at most).
pub const MAX_ID_LEN: usize = berth_mount::names::MAX_CONTAINER_ID;

/// A container id must be one path component of at most [`MAX_ID_LEN`] bytes.
pub(crate) fn check_id(id: &str) -> Result<ContainerId> {
    ContainerId::new(id).map_err(|e| cfg_err(format!("container_id: {e}")))
}

/// The parent of a nested container (a task of a Mesos task group or Marathon pod, whose
/// parent is the executor's container): where its `SANDBOX_PATH` volumes of type `PARENT`
/// resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentContainer {
    /// The parent container's id: one path component, prepared on this agent (its record
    /// names its sandbox).
    pub container_id: String,
    /// The parent's sandbox as the caller knows it; when given, it must be the one the
    /// parent was prepared with.
    pub sandbox: Option<PathBuf>,
}

/// A container as `prepare` takes it (the JSON config file of `berth-isolator prepare`).
/// Its `Debug` shows every secret value (of `SECRET` volumes, and of CSI volumes' stage and
/// publish secrets) as `<redacted>`.
#[derive(Clone, PartialEq)]
pub struct ContainerConfig {
    /// The container id: one path component.
    pub container_id: String,
    /// The sandbox directory (absolute, existing).
    pub sandbox: PathBuf,
    /// The container's root filesystem, when it has an image.
    pub rootfs: Option<PathBuf>,
    /// Mesos `Resource`s of the container (persistent volumes among them).
    pub resources: Vec<proto::Resource>,
    /// Mesos `Volume`s of the container.
    pub volumes: Vec<proto::Volume>,
    /// The environment (`DVDI_VOLUME_*`).
    pub environment: BTreeMap<String, String>,
    /// The parent container of a nested container (`PARENT` sandbox paths resolve in its
    /// sandbox); `None` for a top-level container.
    pub parent: Option<ParentContainer>,
}

impl ContainerConfig {
    /// Parses the JSON config: keys `container_id`, `sandbox`, `rootfs` (optional),
    /// `resources` (Mesos Resource JSON array), `volumes` (Mesos Volume JSON array),
    /// `environment` (object of strings), `parent` (optional object: `container_id`, and
    /// optionally `sandbox`). Unknown keys are refused (typos).
    ///
    /// # Errors
    /// [`ContainerError::Config`](super::ContainerError::Config) naming the key or element.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| cfg_err(format!("not JSON: {e}")))?;
        Self::from_json_value(&value)
    }

    /// [`ContainerConfig::from_json`] of a parsed JSON value (no text round trip).
    ///
    /// # Errors
    /// [`ContainerError::Config`](super::ContainerError::Config) naming the key or element.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| cfg_err("must be a JSON object"))?;
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "container_id"
                    | "sandbox"
                    | "rootfs"
                    | "resources"
                    | "volumes"
                    | "environment"
                    | "parent"
            ) {
                return Err(cfg_err(format!("unknown key {key:?}")));
            }
        }
        let string = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(cfg_err(format!("{key} must be a string"))),
            }
        };
        let container_id =
            string("container_id")?.ok_or_else(|| cfg_err("container_id is required"))?;
        let sandbox = string("sandbox")?.ok_or_else(|| cfg_err("sandbox is required"))?;
        let rootfs = string("rootfs")?;
        let list = |key: &str| -> Result<&[serde_json::Value]> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(&[]),
                Some(serde_json::Value::Array(a)) => Ok(a),
                Some(_) => Err(cfg_err(format!("{key} must be an array"))),
            }
        };
        let resources = list("resources")?
            .iter()
            .enumerate()
            .map(|(i, r)| {
                berth_resources::json::from_json_value::<proto::Resource>(r)
                    .map_err(|e| cfg_err(format!("resources[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let volumes = list("volumes")?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                berth_resources::json::from_json_value::<proto::Volume>(v)
                    .map_err(|e| cfg_err(format!("volumes[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut environment = BTreeMap::new();
        match obj.get("environment") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(env)) => {
                for (k, v) in env {
                    let v = v
                        .as_str()
                        .ok_or_else(|| cfg_err(format!("environment.{k} must be a string")))?;
                    environment.insert(k.clone(), v.to_owned());
                }
            }
            Some(_) => return Err(cfg_err("environment must be an object of strings")),
        }
        let parent = match obj.get("parent") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Object(p)) => Some(parse_parent(p)?),
            Some(_) => return Err(cfg_err("parent must be an object")),
        };
        let cfg = Self {
            container_id,
            sandbox: PathBuf::from(sandbox),
            rootfs: rootfs.map(PathBuf::from),
            resources,
            volumes,
            environment,
            parent,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Checks the id and the directories; the checked id.
    ///
    /// # Errors
    /// [`ContainerError::Config`](super::ContainerError::Config).
    pub fn check(&self) -> Result<ContainerId> {
        let id = check_id(&self.container_id)?;
        if let Some(parent) = &self.parent {
            ContainerId::new(&parent.container_id)
                .map_err(|e| cfg_err(format!("parent.container_id: {e}")))?;
            if parent.container_id == self.container_id {
                return Err(cfg_err("parent.container_id is the container itself"));
            }
            if let Some(s) = &parent.sandbox
                && !s.is_absolute()
            {
                return Err(cfg_err(format!(
                    "parent.sandbox {} must be absolute",
                    s.display()
                )));
            }
        }
        for (key, dir) in std::iter::once(("sandbox", &self.sandbox))
            .chain(self.rootfs.iter().map(|r| ("rootfs", r)))
        {
            if !dir.is_absolute() {
                return Err(cfg_err(format!("{key} {} must be absolute", dir.display())));
            }
            if !dir.is_dir() {
                return Err(cfg_err(format!(
                    "{key} {} is not a directory",
                    dir.display()
                )));
            }
        }
        Ok(id)
    }
}

impl std::fmt::Debug for ContainerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let volumes: Vec<proto::Volume> = self.volumes.iter().map(redacted).collect();
        f.debug_struct("ContainerConfig")
            .field("container_id", &self.container_id)
            .field("sandbox", &self.sandbox)
            .field("rootfs", &self.rootfs)
            .field("resources", &self.resources)
            .field("volumes", &volumes)
            .field("environment", &self.environment)
            .field("parent", &self.parent)
            .finish()
    }
}

/// A volume with every secret value replaced by `<redacted>`.
fn redacted(v: &proto::Volume) -> proto::Volume {
    let mut v = v.clone();
    let hide = |s: &mut proto::Secret| {
        if let Some(value) = s.value.as_mut() {
            value.data = b"<redacted>".to_vec();
        }
    };
    if let Some(source) = v.source.as_mut() {
        if let Some(s) = source.secret.as_mut() {
            hide(s);
        }
        if let Some(sp) = source
            .csi_volume
            .as_mut()
            .and_then(|c| c.static_provisioning.as_mut())
        {
            sp.node_stage_secrets.values_mut().for_each(hide);
            sp.node_publish_secrets.values_mut().for_each(hide);
        }
    }
    v
}

/// The `parent` object of a config: `container_id` (required), `sandbox` (optional).
fn parse_parent(p: &serde_json::Map<String, serde_json::Value>) -> Result<ParentContainer> {
    if let Some(key) = p
        .keys()
        .find(|k| !matches!(k.as_str(), "container_id" | "sandbox"))
    {
        return Err(cfg_err(format!("parent: unknown key {key:?}")));
    }
    let string = |key: &str| -> Result<Option<String>> {
        match p.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(cfg_err(format!("parent.{key} must be a string"))),
        }
    };
    Ok(ParentContainer {
        container_id: string("container_id")?
            .ok_or_else(|| cfg_err("parent.container_id is required"))?,
        sandbox: string("sandbox")?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    })
}
