//! Marathon app and pod definitions (the parts that matter for stateful tasks) and their
//! validation, with Marathon's rules (`research/isolators.md` §5). Every error names the field
//! path (`container.volumes[0].persistent.maxSize`).

use std::collections::BTreeMap;

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use thiserror::Error;

/// A spec that Marathon would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Field path, e.g. `container.volumes[1].persistent.size`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        path: path.into(),
        message: message.into(),
    }
}

/// `persistent.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DiskType {
    /// The agent's root disk.
    #[default]
    Root,
    /// A PATH disk (may be shared by several volumes).
    Path,
    /// A MOUNT disk (taken whole).
    Mount,
}

/// `persistent`: a local persistent volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentInfo {
    /// Disk type; `root` by default (`mount` when a profile is named, as Marathon's RAML says).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DiskType>,
    /// Size in MiB.
    pub size: u64,
    /// Largest MOUNT disk to accept, in MiB (mount only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Storage profile the disk must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_name: Option<String>,
    /// `[["path", "LIKE"|"UNLIKE", regex]]` on the disk's root path.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
}

impl PersistentInfo {
    /// The effective disk type.
    #[must_use]
    pub fn disk_type(&self) -> DiskType {
        self.kind.unwrap_or(if self.profile_name.is_some() {
            DiskType::Mount
        } else {
            DiskType::Root
        })
    }
}

/// `external`: a volume provided by a Docker volume driver (`dvdi`) or a CSI plugin (`csi`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalInfo {
    /// Volume name (DVDI) or volume id (CSI).
    pub name: String,
    /// `dvdi` or `csi`.
    pub provider: String,
    /// Size in GiB (DVDI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Shared by several apps.
    #[serde(default)]
    pub shared: bool,
    /// Provider options: `dvdi/*` strings, or the CSI options object.
    #[serde(default)]
    pub options: BTreeMap<String, Json>,
}

/// One app volume: persistent, external or a host/sandbox path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppVolume {
    /// Path in the container.
    pub container_path: String,
    /// `RW` (default) or `RO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Host path (relative = in the sandbox) for a plain bind volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// Local persistent volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentInfo>,
    /// External volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalInfo>,
}

impl AppVolume {
    /// True for read-write.
    #[must_use]
    pub fn read_write(&self) -> bool {
        self.mode.as_deref().is_none_or(|m| m == "RW")
    }
}

/// `container`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppContainer {
    /// `DOCKER` or `MESOS` (default).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Volumes.
    #[serde(default)]
    pub volumes: Vec<AppVolume>,
}

/// `upgradeStrategy` (apps) / `scheduling.upgrade` (pods).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    /// Fraction of instances kept healthy during an upgrade.
    #[serde(default = "one")]
    pub minimum_health_capacity: f64,
    /// Fraction of extra instances allowed during an upgrade.
    #[serde(default = "one")]
    pub maximum_over_capacity: f64,
}

fn one() -> f64 {
    1.0
}

/// `unreachableStrategy`: `"disabled"` or timeouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UnreachableStrategy {
    /// `"disabled"` (or another string, which is refused).
    Keyword(String),
    /// `{"inactiveAfterSeconds": .., "expungeAfterSeconds": ..}`.
    Timeouts(BTreeMap<String, Json>),
}

impl UnreachableStrategy {
    fn is_disabled(&self) -> bool {
        matches!(self, UnreachableStrategy::Keyword(k) if k == "disabled")
    }
}

fn default_cpus() -> f64 {
    1.0
}

fn default_mem() -> f64 {
    128.0
}

fn default_instances() -> u32 {
    1
}

/// A Marathon app definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    /// App id (`/prod/mysql`).
    pub id: String,
    /// CPUs per instance.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory per instance, MiB.
    #[serde(default = "default_mem")]
    pub mem: f64,
    /// Sandbox disk per instance, MiB.
    #[serde(default)]
    pub disk: f64,
    /// Number of instances.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Container and volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<AppContainer>,
    /// Must be `"disabled"` for resident apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_strategy: Option<UnreachableStrategy>,
    /// Must not over-provision for resident apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_strategy: Option<UpgradeStrategy>,
}

/// A pod-level volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodVolume {
    /// Name referenced by `volumeMounts`.
    pub name: String,
    /// Local persistent volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<PersistentInfo>,
    /// Host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A container's mount of a pod volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// Pod volume name.
    pub name: String,
    /// Path in the container.
    pub mount_path: String,
    /// Read-only mount.
    #[serde(default)]
    pub read_only: bool,
}

/// Container resources of a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodResources {
    /// CPUs.
    #[serde(default)]
    pub cpus: f64,
    /// Memory, MiB.
    #[serde(default)]
    pub mem: f64,
    /// Disk, MiB.
    #[serde(default)]
    pub disk: f64,
}

/// A pod container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodContainer {
    /// Name.
    pub name: String,
    /// Resources.
    #[serde(default)]
    pub resources: PodResources,
    /// Volume mounts.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
}

/// `scaling`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodScaling {
    /// `fixed`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Instances.
    #[serde(default = "default_instances")]
    pub instances: u32,
}

/// `scheduling`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodScheduling {
    /// Must be `"disabled"` for resident pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_strategy: Option<UnreachableStrategy>,
    /// Upgrade strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStrategy>,
}

/// A Marathon pod definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// Pod id.
    pub id: String,
    /// Pod volumes.
    #[serde(default)]
    pub volumes: Vec<PodVolume>,
    /// Scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<PodScaling>,
    /// Scheduling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<PodScheduling>,
    /// Containers.
    #[serde(default)]
    pub containers: Vec<PodContainer>,
    /// Resources of the pod's executor (Marathon's default: 0.1 cpus, 32 MiB, 10 MiB disk).
    #[serde(default = "default_executor_resources")]
    pub executor_resources: PodResources,
}

fn default_executor_resources() -> PodResources {
    PodResources {
        cpus: 0.1,
        mem: 32.0,
        disk: 10.0,
    }
}

/// An app or a pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RunSpec {
    /// A pod (has `containers`).
    Pod(Pod),
    /// An app.
    App(App),
}

/// A local persistent volume of a run spec, as planning needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalVolume {
    /// Name used in the persistence id (the pod volume name, or the app's containerPath).
    pub name: String,
    /// Container paths it is mounted at (several for pods).
    pub container_paths: Vec<String>,
    /// The persistent spec.
    pub persistent: PersistentInfo,
}

/// A non-persistent volume mounted into the task (external or host path).
#[derive(Clone, Debug, PartialEq)]
pub enum TaskVolume {
    /// External (DVDI or CSI).
    External {
        /// Container path.
        container_path: String,
        /// Read-write.
        read_write: bool,
        /// The spec.
        external: ExternalInfo,
    },
    /// A host or sandbox path.
    HostPath {
        /// Container path.
        container_path: String,
        /// Host path.
        host_path: String,
        /// Read-write.
        read_write: bool,
    },
}

impl RunSpec {
    /// Parses Marathon JSON (an app, or a pod when it has `containers`).
    ///
    /// # Errors
    /// [`SpecError`] with path `$` for JSON that is not an app or pod.
    pub fn from_json(text: &str) -> Result<RunSpec, SpecError> {
        let json: Json = serde_json::from_str(text).map_err(|e| err("$", e.to_string()))?;
        if json.get("containers").is_some() {
            serde_json::from_value(json)
                .map(RunSpec::Pod)
                .map_err(|e| err("$", e.to_string()))
        } else {
            serde_json::from_value(json)
                .map(RunSpec::App)
                .map_err(|e| err("$", e.to_string()))
        }
    }

    /// The run spec id.
    #[must_use]
    pub fn id(&self) -> &str {
        match self {
            RunSpec::App(a) => &a.id,
            RunSpec::Pod(p) => &p.id,
        }
    }

    /// Instances.
    #[must_use]
    pub fn instances(&self) -> u32 {
        match self {
            RunSpec::App(a) => a.instances,
            RunSpec::Pod(p) => p.scaling.as_ref().map_or(1, |s| s.instances),
        }
    }

    /// Total (cpus, mem, sandbox disk) per instance.
    #[must_use]
    pub fn resources(&self) -> (f64, f64, f64) {
        match self {
            RunSpec::App(a) => (a.cpus, a.mem, a.disk),
            // Marathon's aggregate: the executor plus every container.
            RunSpec::Pod(p) => p.containers.iter().fold(
                (
                    p.executor_resources.cpus,
                    p.executor_resources.mem,
                    p.executor_resources.disk,
                ),
                |(c, m, d), x| {
                    (
                        c + x.resources.cpus,
                        m + x.resources.mem,
                        d + x.resources.disk,
                    )
                },
            ),
        }
    }

    /// The local persistent volumes.
    #[must_use]
    pub fn local_volumes(&self) -> Vec<LocalVolume> {
        match self {
            RunSpec::App(a) => a
                .container
                .iter()
                .flat_map(|c| c.volumes.iter())
                .filter_map(|v| {
                    v.persistent.as_ref().map(|p| LocalVolume {
                        name: v.container_path.clone(),
                        container_paths: vec![v.container_path.clone()],
                        persistent: p.clone(),
                    })
                })
                .collect(),
            RunSpec::Pod(p) => p
                .volumes
                .iter()
                .filter_map(|v| {
                    v.persistent.as_ref().map(|pi| LocalVolume {
                        name: v.name.clone(),
                        container_paths: p
                            .containers
                            .iter()
                            .flat_map(|c| c.volume_mounts.iter())
                            .filter(|m| m.name == v.name)
                            .map(|m| m.mount_path.clone())
                            .collect(),
                        persistent: pi.clone(),
                    })
                })
                .collect(),
        }
    }

    /// External and host-path volumes (apps only; pod host volumes are mapped too).
    #[must_use]
    pub fn task_volumes(&self) -> Vec<TaskVolume> {
        match self {
            RunSpec::App(a) => a
                .container
                .iter()
                .flat_map(|c| c.volumes.iter())
                .filter(|v| v.persistent.is_none())
                .filter_map(|v| match (&v.external, &v.host_path) {
                    (Some(e), _) => Some(TaskVolume::External {
                        container_path: v.container_path.clone(),
                        read_write: v.read_write(),
                        external: e.clone(),
                    }),
                    (None, Some(h)) => Some(TaskVolume::HostPath {
                        container_path: v.container_path.clone(),
                        host_path: h.clone(),
                        read_write: v.read_write(),
                    }),
                    (None, None) => None,
                })
                .collect(),
            RunSpec::Pod(p) => p
                .volumes
                .iter()
                .filter_map(|v| v.host.as_ref().map(|h| (v, h)))
                .flat_map(|(v, h)| {
                    p.containers
                        .iter()
                        .flat_map(|c| c.volume_mounts.iter())
                        .filter(|m| m.name == v.name)
                        .map(move |m| TaskVolume::HostPath {
                            container_path: m.mount_path.clone(),
                            host_path: h.clone(),
                            read_write: !m.read_only,
                        })
                })
                .collect(),
        }
    }

    /// Validates with Marathon's rules.
    ///
    /// # Errors
    /// The first [`SpecError`], naming the field path.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_id(self.id())?;
        match self {
            RunSpec::App(a) => validate_app(a),
            RunSpec::Pod(p) => validate_pod(p),
        }
    }
}

static PATH_SEGMENT: LazyLock<Result<Regex, regex::Error>> = LazyLock::new(|| {
    Regex::new(
        r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$",
    )
});
static LABEL: LazyLock<Result<Regex, regex::Error>> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static DVDI_KEY: LazyLock<Result<Regex, regex::Error>> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?/[A-Za-z0-9](?:[-A-Za-z0-9\._:]*[A-Za-z0-9])?$")
});

fn compiled(
    re: &'static LazyLock<Result<Regex, regex::Error>>,
    path: &str,
) -> Result<&'static Regex, SpecError> {
    re.as_ref().map_err(|e| err(path, e.to_string()))
}

fn validate_id(id: &str) -> Result<(), SpecError> {
    let segment = compiled(&PATH_SEGMENT, "id")?;
    let trimmed = id.strip_prefix('/').unwrap_or(id);
    if trimmed.is_empty() || trimmed.split('/').any(|s| !segment.is_match(s)) {
        return Err(err(
            "id",
            format!("'{id}' is not a valid path id (segments of a-z, 0-9, '-' and '.')"),
        ));
    }
    Ok(())
}

fn validate_persistent(p: &PersistentInfo, path: &str) -> Result<(), SpecError> {
    if p.size == 0 {
        return Err(err(format!("{path}.size"), "must be greater than 0"));
    }
    let kind = p.disk_type();
    if let Some(max) = p.max_size {
        if kind != DiskType::Mount {
            return Err(err(
                format!("{path}.maxSize"),
                "is only allowed for volumes of type mount",
            ));
        }
        if max <= p.size {
            return Err(err(format!("{path}.maxSize"), "must be greater than size"));
        }
    }
    if p.profile_name.as_deref() == Some("") {
        return Err(err(format!("{path}.profileName"), "must not be empty"));
    }
    if !p.constraints.is_empty() && kind == DiskType::Root {
        return Err(err(
            format!("{path}.constraints"),
            "are not allowed on root volumes",
        ));
    }
    for (i, c) in p.constraints.iter().enumerate() {
        let cpath = format!("{path}.constraints[{i}]");
        let [field, op, value] = c.as_slice() else {
            return Err(err(
                cpath,
                "must be [\"path\", \"LIKE\"|\"UNLIKE\", \"<regex>\"]",
            ));
        };
        if field != "path" {
            return Err(err(
                cpath,
                format!("unsupported field '{field}': only 'path'"),
            ));
        }
        if op != "LIKE" && op != "UNLIKE" {
            return Err(err(
                cpath,
                format!("unsupported operator '{op}': LIKE or UNLIKE"),
            ));
        }
        Regex::new(&format!("^(?:{value})$"))
            .map_err(|e| err(cpath, format!("invalid regex: {e}")))?;
    }
    Ok(())
}

fn validate_mount_path(p: &str, path: &str) -> Result<(), SpecError> {
    if p.is_empty() || p == "." || p == ".." || p.contains('/') {
        return Err(err(
            path,
            format!(
                "'{p}' must be a single-level relative path (no '/', not '.' or '..') for a local volume"
            ),
        ));
    }
    Ok(())
}

fn validate_resident(
    unreachable: Option<&UnreachableStrategy>,
    upgrade: Option<&UpgradeStrategy>,
    prefix: &str,
    upgrade_name: &str,
) -> Result<(), SpecError> {
    if let Some(u) = unreachable
        && !u.is_disabled()
    {
        return Err(err(
            format!("{prefix}unreachableStrategy"),
            "must be \"disabled\" for stateful tasks",
        ));
    }
    if let Some(u) = upgrade {
        if u.maximum_over_capacity != 0.0 {
            return Err(err(
                format!("{prefix}{upgrade_name}.maximumOverCapacity"),
                "must be 0 for stateful tasks (they cannot over-provision their reservations)",
            ));
        }
        if !(0.0..=1.0).contains(&u.minimum_health_capacity) {
            return Err(err(
                format!("{prefix}{upgrade_name}.minimumHealthCapacity"),
                "must be between 0 and 1",
            ));
        }
    }
    Ok(())
}

fn label_ok(s: &str) -> bool {
    LABEL.as_ref().is_ok_and(|r| r.is_match(s))
}

fn validate_external(
    v: &AppVolume,
    e: &ExternalInfo,
    docker: bool,
    path: &str,
) -> Result<(), SpecError> {
    if !label_ok(&e.provider) {
        return Err(err(format!("{path}.provider"), "must be a label"));
    }
    if e.name.is_empty() {
        return Err(err(format!("{path}.name"), "must not be empty"));
    }
    if let Some(0) = e.size {
        return Err(err(format!("{path}.size"), "must be greater than 0"));
    }
    match e.provider.as_str() {
        "dvdi" => {
            let key = compiled(&DVDI_KEY, path)?;
            for (k, value) in &e.options {
                let opath = format!("{path}.options[\"{k}\"]");
                if !key.is_match(k) {
                    return Err(err(opath, "option keys must look like 'provider/option'"));
                }
                if !value.is_string() {
                    return Err(err(opath, "DVDI option values must be strings"));
                }
            }
            let opt = |k: &str| e.options.get(k).and_then(Json::as_str).map(str::trim);
            let Some(driver) = opt("dvdi/driver") else {
                return Err(err(
                    format!("{path}.options[\"dvdi/driver\"]"),
                    "is required",
                ));
            };
            if !label_ok(driver) {
                return Err(err(
                    format!("{path}.options[\"dvdi/driver\"]"),
                    "must be a label (no '/' or ':')",
                ));
            }
            if driver == "rexray" {
                for k in ["dvdi/volumetype", "dvdi/newfstype"] {
                    if opt(k).is_some_and(|v| !label_ok(v)) {
                        return Err(err(format!("{path}.options[\"{k}\"]"), "must be a label"));
                    }
                }
                if opt("dvdi/iops").is_some_and(|v| v.parse::<u64>().map_or(true, |n| n == 0)) {
                    return Err(err(
                        format!("{path}.options[\"dvdi/iops\"]"),
                        "must be a positive integer",
                    ));
                }
                if opt("dvdi/overwritefs").is_some_and(|v| v != "true" && v != "false") {
                    return Err(err(
                        format!("{path}.options[\"dvdi/overwritefs\"]"),
                        "must be true or false",
                    ));
                }
            }
            if docker {
                if e.options.keys().any(|k| k != "dvdi/driver") {
                    return Err(err(
                        format!("{path}.options"),
                        "a DOCKER container may only set dvdi/driver",
                    ));
                }
                if e.size.is_some() {
                    return Err(err(
                        format!("{path}.size"),
                        "must be unset for a DOCKER container",
                    ));
                }
            } else {
                if !v.read_write() {
                    return Err(err(
                        path.replace(".external", ".mode"),
                        "must be RW for a DVDI volume",
                    ));
                }
                if v.container_path == "." || v.container_path == ".." {
                    return Err(err(
                        path.replace(".external", ".containerPath"),
                        "must not be '.' or '..'",
                    ));
                }
            }
        }
        "csi" => {
            let mode = e
                .options
                .get("capability")
                .and_then(|c| c.get("accessMode"))
                .and_then(Json::as_str)
                .unwrap_or("SINGLE_NODE_WRITER");
            if v.read_write()
                && matches!(mode, "SINGLE_NODE_READER_ONLY" | "MULTI_NODE_READER_ONLY")
            {
                return Err(err(
                    format!("{path}.options.capability.accessMode"),
                    "a RW mount needs a writable access mode",
                ));
            }
            if e.options
                .get("pluginName")
                .and_then(Json::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(err(format!("{path}.options.pluginName"), "is required"));
            }
        }
        other => {
            return Err(err(
                format!("{path}.provider"),
                format!("unsupported provider '{other}': dvdi or csi"),
            ));
        }
    }
    Ok(())
}

fn validate_app(a: &App) -> Result<(), SpecError> {
    for (name, v) in [("cpus", a.cpus), ("mem", a.mem), ("disk", a.disk)] {
        if !v.is_finite() || v < 0.0 {
            return Err(err(name, "must be a non-negative number"));
        }
    }
    let volumes = a
        .container
        .as_ref()
        .map(|c| c.volumes.as_slice())
        .unwrap_or_default();
    let docker = a.container.as_ref().and_then(|c| c.kind.as_deref()) == Some("DOCKER");
    let mut resident = false;
    let mut external_names: Vec<&str> = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let path = format!("container.volumes[{i}]");
        if let Some(m) = v.mode.as_deref()
            && m != "RW"
            && m != "RO"
        {
            return Err(err(format!("{path}.mode"), "must be RW or RO"));
        }
        match (&v.persistent, &v.external) {
            (Some(_), Some(_)) => {
                return Err(err(
                    path,
                    "a volume is either persistent or external, not both",
                ));
            }
            (Some(p), None) => {
                resident = true;
                validate_persistent(p, &format!("{path}.persistent"))?;
                validate_mount_path(&v.container_path, &format!("{path}.containerPath"))?;
                if !v.read_write() {
                    return Err(err(
                        format!("{path}.mode"),
                        "local persistent volumes must be RW",
                    ));
                }
                if v.host_path.is_some() {
                    return Err(err(
                        format!("{path}.hostPath"),
                        "must be unset for a persistent volume",
                    ));
                }
            }
            (None, Some(e)) => {
                validate_external(v, e, docker, &format!("{path}.external"))?;
                if e.provider == "dvdi" || e.provider == "csi" {
                    let shareable = e
                        .options
                        .get("capability")
                        .and_then(|c| c.get("accessMode"))
                        .and_then(Json::as_str)
                        .is_some_and(|m| {
                            m.starts_with("MULTI_NODE")
                                && !(m == "MULTI_NODE_SINGLE_WRITER" && v.read_write())
                        });
                    if a.instances > 1 && !shareable {
                        return Err(err(
                            "instances",
                            "must be at most 1 with an external volume",
                        ));
                    }
                }
                if external_names.contains(&e.name.as_str()) && !e.shared {
                    return Err(err(
                        format!("{path}.external.name"),
                        "is used twice in this app",
                    ));
                }
                external_names.push(&e.name);
            }
            (None, None) => {
                if v.container_path.is_empty() {
                    return Err(err(format!("{path}.containerPath"), "must not be empty"));
                }
            }
        }
    }
    if resident || !external_names.is_empty() {
        validate_resident(
            a.unreachable_strategy.as_ref(),
            a.upgrade_strategy.as_ref(),
            "",
            "upgradeStrategy",
        )?;
    }
    Ok(())
}

fn validate_pod(p: &Pod) -> Result<(), SpecError> {
    let mut resident = false;
    for (i, v) in p.volumes.iter().enumerate() {
        let path = format!("volumes[{i}]");
        if v.name.is_empty() {
            return Err(err(format!("{path}.name"), "must not be empty"));
        }
        if p.volumes.iter().filter(|x| x.name == v.name).count() > 1 {
            return Err(err(
                format!("{path}.name"),
                format!("'{}' is defined twice", v.name),
            ));
        }
        if let Some(per) = &v.persistent {
            resident = true;
            validate_persistent(per, &format!("{path}.persistent"))?;
        }
    }
    for (ci, c) in p.containers.iter().enumerate() {
        for (mi, m) in c.volume_mounts.iter().enumerate() {
            let path = format!("containers[{ci}].volumeMounts[{mi}]");
            let Some(v) = p.volumes.iter().find(|v| v.name == m.name) else {
                return Err(err(
                    format!("{path}.name"),
                    format!("no pod volume named '{}'", m.name),
                ));
            };
            if v.persistent.is_some() {
                validate_mount_path(&m.mount_path, &format!("{path}.mountPath"))?;
                if m.read_only {
                    return Err(err(
                        format!("{path}.readOnly"),
                        "local persistent volumes must be mounted read-write",
                    ));
                }
            }
        }
    }
    if resident {
        let s = p.scheduling.clone().unwrap_or_default();
        validate_resident(
            s.unreachable_strategy.as_ref(),
            s.upgrade.as_ref(),
            "scheduling.",
            "upgrade",
        )?;
    }
    Ok(())
}
