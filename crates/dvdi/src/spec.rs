//! The one typed volume spec, [`DockerVolume`], and its three sources:
//!
//! - the DVDI environment contract of mesos-module-dvdi ([`from_env`]): `DVDI_VOLUME_NAME`,
//!   `_DRIVER` (default `rexray`), `_OPTS` (`k=v,k=v`), `_CONTAINERPATH`, `_EXPLICITCREATE`,
//!   each with an optional suffix `1`–`9`;
//! - Mesos `Volume` with `Source.DOCKER_VOLUME` ([`from_mesos`]);
//! - Marathon external volumes with `provider: "dvdi"` ([`from_marathon`], [`from_marathon_app`]).
//!
//! Validation is strict and every error names the variable or field. Where the module was
//! unsafe or lossy berth differs, on purpose:
//! - no character blacklist (nothing reaches a shell), so v2 plugin names with `/` and `:` work;
//! - an option value may contain `=` (split at the first `=` only); an item without `=`, an
//!   empty item and a duplicate key are errors (dvdcli truncated, panicked, or kept the last);
//! - `DVDI_VOLUME_NAME0` is refused (the module silently let it collide with the unsuffixed
//!   slot), as is any other unknown `DVDI_VOLUME_*` variable and a slot with settings but no
//!   name;
//! - `_EXPLICITCREATE` must be `true` or `false` (any case); the module read anything else as
//!   false;
//! - `_CONTAINERPATH` must be absolute and follow berth's one rule set for container paths
//!   ([`berth_mount::names::ContainerPath`]: no `..`, not the root itself); the module
//!   checked nothing and put it into a shell command;
//! - `DVDI_VOLUME_DVDCLI` is ignored with a warning: a task never chooses what the agent runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_mount::names::ContainerPath;
use berth_resources::proto;
use serde_json::Value as Json;

use crate::error::{DvdiError, Result, invalid};
use crate::names::{DriverName, VolumeName};

/// The driver of a DVDI slot without `DVDI_VOLUME_DRIVER`.
pub const DEFAULT_DRIVER: &str = "rexray";

/// How the container sees the volume.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read-write.
    #[default]
    Rw,
    /// Read-only.
    Ro,
}

/// A Docker volume-driver volume as a container asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerVolume {
    /// The plugin.
    pub driver: DriverName,
    /// The volume.
    pub name: VolumeName,
    /// Driver options (sent with `Create` only, as a JSON map).
    pub options: BTreeMap<String, String>,
    /// Where the container wants it; `None`: no isolation (the DVDI contract allows that).
    pub container_path: Option<PathBuf>,
    /// Read-write or read-only.
    pub mode: Mode,
    /// `Some(true)`: the volume must exist; `Some(false)`: create it when missing; `None`:
    /// the manager's default policy.
    pub explicit_create: Option<bool>,
}

/// Result of [`from_env`]: the volumes, in slot order, and warnings for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVolumes {
    /// One volume per active slot (slot 0 = no suffix, then 1–9).
    pub volumes: Vec<DockerVolume>,
    /// Things ignored on purpose (e.g. `DVDI_VOLUME_DVDCLI`).
    pub warnings: Vec<String>,
}

const PREFIX: &str = "DVDI_VOLUME_";

#[derive(Default)]
struct Slot {
    name: Option<(String, String)>,
    driver: Option<(String, String)>,
    opts: Option<(String, String)>,
    path: Option<(String, String)>,
    explicit: Option<(String, String)>,
}

/// Parses an option key: non-empty, no `=`, `,`, whitespace or control characters.
fn check_key(what: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(what, key, "empty option key"));
    }
    if key
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '=' || c == ',')
    {
        return Err(invalid(
            what,
            key,
            "option key contains whitespace, a control character, '=' or ','",
        ));
    }
    Ok(())
}

fn check_value(what: &str, key: &str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(invalid(
            what,
            key,
            "the value of this option contains a control character",
        ));
    }
    Ok(())
}

/// Parses one `k=v` option (split at the first `=`).
///
/// # Errors
/// [`DvdiError::Invalid`] for a missing `=`, a bad key or a control character in the value.
pub fn parse_option(what: &str, item: &str) -> Result<(String, String)> {
    let Some((k, v)) = item.split_once('=') else {
        // The item may be a value: do not echo it.
        return Err(invalid(
            what,
            "<redacted>",
            "option without '=' (expected key=value)",
        ));
    };
    check_key(what, k)?;
    check_value(what, k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_opts(var: &str, raw: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    for item in raw.split(',') {
        if item.is_empty() {
            return Err(invalid(var, "<redacted>", "empty option (stray ',')"));
        }
        let (k, v) = parse_option(var, item)?;
        if out.contains_key(&k) {
            return Err(invalid(var, &k, "duplicate option key"));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// Validates a container path: berth's one rule set for container paths
/// ([`berth_mount::names::ContainerPath`]), plus the Docker volume specs' own rules: no control
/// characters, and absolute when `absolute` (the DVDI environment contract).
fn container_path(what: &str, raw: &str, absolute: bool) -> Result<PathBuf> {
    if raw.chars().any(char::is_control) {
        return Err(invalid(what, raw, "contains a control character"));
    }
    let path = ContainerPath::parse(raw).map_err(|e| {
        let rule = ContainerPath::rule(&e).map_or_else(|| e.to_string(), str::to_owned);
        invalid(what, raw, format!("container path {rule}"))
    })?;
    if absolute && !path.is_absolute() {
        return Err(invalid(what, raw, "must be an absolute path"));
    }
    Ok(path.as_path().to_owned())
}

fn parse_bool(var: &str, raw: &str) -> Result<bool> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(invalid(var, raw, "must be 'true' or 'false'")),
    }
}

/// Reads the DVDI environment contract from the variables of `ExecutorInfo.command.environment`
/// (or any `name → value` list). Variables not starting with `DVDI_VOLUME_` are ignored.
///
/// # Errors
/// [`DvdiError::Invalid`] naming the variable: an unknown `DVDI_VOLUME_*` name or suffix, a
/// setting for a slot without a name, a bad option list, container path or boolean, an
/// invalid driver or volume name, or the same (driver, volume) twice.
pub fn from_env<'a, I>(vars: I) -> Result<EnvVolumes>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut slots: BTreeMap<u8, Slot> = BTreeMap::new();
    let mut warnings = Vec::new();
    for (key, value) in vars {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let (base, slot) = match rest.as_bytes().last() {
            Some(d @ b'0'..=b'9') => {
                let base = rest.get(..rest.len() - 1).unwrap_or("");
                if *d == b'0' {
                    return Err(invalid(
                        key,
                        value_for_error(base, value),
                        "suffix 0 is not allowed: the unsuffixed name is slot 0, suffixes are 1-9",
                    ));
                }
                (base, d - b'0')
            }
            _ => (rest, 0),
        };
        let entry = slots.entry(slot).or_default();
        let v = Some((key.to_owned(), value.to_owned()));
        let dup = match base {
            "NAME" => entry.name.replace(v.clone().unwrap_or_default()).is_some(),
            "DRIVER" => entry
                .driver
                .replace(v.clone().unwrap_or_default())
                .is_some(),
            "OPTS" => entry.opts.replace(v.clone().unwrap_or_default()).is_some(),
            "CONTAINERPATH" => entry.path.replace(v.clone().unwrap_or_default()).is_some(),
            "EXPLICITCREATE" => entry
                .explicit
                .replace(v.clone().unwrap_or_default())
                .is_some(),
            "DVDCLI" => {
                let w = format!(
                    "{key} is ignored: berth speaks the plugin protocol itself and never runs an executable named by a task"
                );
                tracing::warn!("{w}");
                warnings.push(w);
                false
            }
            _ => {
                return Err(invalid(
                    key,
                    value_for_error(base, value),
                    "unknown DVDI variable (expected DVDI_VOLUME_{NAME,DRIVER,OPTS,CONTAINERPATH,EXPLICITCREATE} with an optional suffix 1-9)",
                ));
            }
        };
        if dup {
            return Err(invalid(key, value_for_error(base, value), "set twice"));
        }
    }

    let mut volumes: Vec<DockerVolume> = Vec::new();
    for (_, slot) in slots {
        let name = slot.name.as_ref().filter(|(_, v)| !v.trim().is_empty());
        let Some((name_var, name_raw)) = name else {
            if let Some((var, _)) = [&slot.driver, &slot.opts, &slot.path, &slot.explicit]
                .into_iter()
                .flatten()
                .next()
            {
                return Err(invalid(
                    var,
                    "",
                    "set for a volume slot whose DVDI_VOLUME_NAME is missing or empty",
                ));
            }
            continue;
        };
        let name = VolumeName::new(name_raw.trim()).map_err(|e| rename(e, name_var))?;
        let driver = match &slot.driver {
            Some((var, d)) if !d.trim().is_empty() => {
                DriverName::new(d.trim()).map_err(|e| rename(e, var))?
            }
            _ => DriverName::new(DEFAULT_DRIVER)?,
        };
        let options = match &slot.opts {
            Some((var, o)) => parse_opts(var, o)?,
            None => BTreeMap::new(),
        };
        let container_path = match &slot.path {
            Some((_, p)) if p.is_empty() => None,
            Some((var, p)) => Some(container_path(var, p, true)?),
            None => None,
        };
        let explicit = match &slot.explicit {
            Some((var, e)) => parse_bool(var, e)?,
            None => false,
        };
        if volumes.iter().any(|v| v.driver == driver && v.name == name) {
            return Err(invalid(
                name_var,
                name.as_str(),
                format!("volume {name} of driver {driver} is named twice"),
            ));
        }
        volumes.push(DockerVolume {
            driver,
            name,
            options,
            container_path,
            mode: Mode::Rw,
            // The contract's default is dvdcli's: create when missing.
            explicit_create: Some(explicit),
        });
    }
    Ok(EnvVolumes { volumes, warnings })
}

/// The value to show in an error about variable `base`: OPTS may carry secrets.
fn value_for_error<'a>(base: &str, value: &'a str) -> &'a str {
    if base == "OPTS" { "<redacted>" } else { value }
}

/// Replaces the `what` of an [`DvdiError::Invalid`] with the variable name.
fn rename(e: DvdiError, var: &str) -> DvdiError {
    match e {
        DvdiError::Invalid { value, reason, .. } => DvdiError::Invalid {
            what: var.to_owned(),
            value,
            reason,
        },
        other => other,
    }
}

/// Reads the DVDI contract from a Mesos `Environment` (variables of type `VALUE`; a
/// `DVDI_VOLUME_*` variable of another type is an error).
///
/// # Errors
/// As [`from_env`].
pub fn from_mesos_environment(env: &proto::Environment) -> Result<EnvVolumes> {
    use proto::environment::variable::Type;
    for v in &env.variables {
        if v.name.starts_with(PREFIX) && v.r#type() == Type::Secret {
            return Err(invalid(
                &v.name,
                "",
                "a DVDI variable must be a plain VALUE, not a SECRET",
            ));
        }
    }
    from_env(
        env.variables
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or(""))),
    )
}

/// The spec of a Mesos `Volume` whose source is `DOCKER_VOLUME`; `Ok(None)` for any other
/// volume. `driver` is required (as in Mesos's isolator); a repeated option key keeps the last
/// value (as Mesos does). The container path may be relative (to the sandbox) or absolute.
///
/// # Errors
/// [`DvdiError::Invalid`] for a missing `docker_volume` or driver, or an invalid name, option
/// or container path.
pub fn from_mesos(volume: &proto::Volume) -> Result<Option<DockerVolume>> {
    use proto::volume::source::Type;
    let Some(source) = &volume.source else {
        return Ok(None);
    };
    if source.r#type() != Type::DockerVolume {
        return Ok(None);
    }
    let Some(dv) = &source.docker_volume else {
        return Err(invalid(
            "Volume.source",
            "",
            "type DOCKER_VOLUME without docker_volume",
        ));
    };
    let driver = match dv.driver.as_deref() {
        Some(d) if !d.is_empty() => DriverName::new(d)?,
        _ => {
            return Err(invalid(
                "Volume.source.docker_volume.driver",
                "",
                "required for DOCKER_VOLUME volumes",
            ));
        }
    };
    let name = VolumeName::new(&dv.name)?;
    let mut options = BTreeMap::new();
    for p in dv.driver_options.iter().flat_map(|o| o.parameter.iter()) {
        check_key("Volume.source.docker_volume.driver_options", &p.key)?;
        check_value(
            "Volume.source.docker_volume.driver_options",
            &p.key,
            &p.value,
        )?;
        options.insert(p.key.clone(), p.value.clone());
    }
    let container_path = container_path("Volume.container_path", &volume.container_path, false)?;
    let mode = match volume.mode() {
        proto::volume::Mode::Ro => Mode::Ro,
        proto::volume::Mode::Rw => Mode::Rw,
    };
    Ok(Some(DockerVolume {
        driver,
        name,
        options,
        container_path: Some(container_path),
        mode,
        explicit_create: None,
    }))
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
        && b.iter().all(|c| ok(c) || *c == b'-')
}

fn is_marathon_option_key(k: &str) -> bool {
    let Some((ns, opt)) = k.split_once('/') else {
        return false;
    };
    let ob = opt.as_bytes();
    is_label(ns)
        && !ob.is_empty()
        && ob.first().is_some_and(u8::is_ascii_alphanumeric)
        && ob.last().is_some_and(u8::is_ascii_alphanumeric)
        && ob
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b':'))
}

/// The spec of one Marathon app volume
/// (`{"containerPath", "mode", "external": {"name", "provider": "dvdi", "options", "size"}}`);
/// `Ok(None)` for a volume that is not external or whose provider is not `dvdi`.
///
/// Options are every `dvdi/*` key except `dvdi/driver`, prefix removed and value trimmed (as
/// Marathon's `DVDIProvider` builds `driver_options`); `size` overrides `dvdi/size`. Keys of
/// other namespaces are ignored, as Marathon ignores them. `dvdi/driver` is required. The
/// volume is created when missing, as with Marathon and dvdcli.
///
/// # Errors
/// [`DvdiError::Invalid`] naming the JSON field.
pub fn from_marathon(volume: &Json) -> Result<Option<DockerVolume>> {
    let Some(obj) = volume.as_object() else {
        return Err(invalid("volume", "", "not a JSON object"));
    };
    let Some(ext) = obj.get("external") else {
        return Ok(None);
    };
    let Some(ext) = ext.as_object() else {
        return Err(invalid("external", "", "not a JSON object"));
    };
    let provider = ext.get("provider").and_then(Json::as_str).unwrap_or("");
    if provider != "dvdi" {
        return Ok(None);
    }
    let name = match ext.get("name").and_then(Json::as_str) {
        Some(n) => VolumeName::new(n).map_err(|e| rename(e, "external.name"))?,
        None => return Err(invalid("external.name", "", "required")),
    };
    let mut driver = None;
    let mut options = BTreeMap::new();
    if let Some(opts) = ext.get("options") {
        let Some(opts) = opts.as_object() else {
            return Err(invalid("external.options", "", "not a JSON object"));
        };
        for (k, v) in opts {
            if !is_marathon_option_key(k) {
                return Err(invalid(
                    "external.options",
                    k,
                    "key must be a namespaced option such as dvdi/size",
                ));
            }
            let Some(v) = v.as_str() else {
                return Err(invalid("external.options", k, "value must be a string"));
            };
            if k == "dvdi/driver" {
                driver = Some(
                    DriverName::new(v.trim())
                        .map_err(|e| rename(e, "external.options.dvdi/driver"))?,
                );
            } else if let Some(opt) = k.strip_prefix("dvdi/") {
                check_value("external.options", k, v)?;
                options.insert(opt.to_owned(), v.trim().to_owned());
            }
        }
    }
    let Some(driver) = driver else {
        return Err(invalid("external.options.dvdi/driver", "", "required"));
    };
    match ext.get("size") {
        None | Some(Json::Null) => {}
        Some(s) => match s.as_u64() {
            Some(n) if n > 0 => {
                options.insert("size".to_owned(), n.to_string());
            }
            _ => {
                return Err(invalid(
                    "external.size",
                    &s.to_string(),
                    "must be an integer > 0",
                ));
            }
        },
    }
    let container_path = match obj.get("containerPath").and_then(Json::as_str) {
        Some(p) => container_path("containerPath", p, false)?,
        None => return Err(invalid("containerPath", "", "required")),
    };
    let mode = match obj.get("mode").and_then(Json::as_str) {
        None | Some("RW") => Mode::Rw,
        Some("RO") => Mode::Ro,
        Some(m) => return Err(invalid("mode", m, "must be RW or RO")),
    };
    Ok(Some(DockerVolume {
        driver,
        name,
        options,
        container_path: Some(container_path),
        mode,
        explicit_create: Some(false),
    }))
}

/// Every DVDI external volume of a Marathon app definition (`container.volumes[*]`).
///
/// # Errors
/// As [`from_marathon`], plus a volume named twice.
pub fn from_marathon_app(app: &Json) -> Result<Vec<DockerVolume>> {
    let mut out: Vec<DockerVolume> = Vec::new();
    let vols = app
        .get("container")
        .and_then(|c| c.get("volumes"))
        .and_then(Json::as_array);
    for v in vols.into_iter().flatten() {
        if let Some(dv) = from_marathon(v)? {
            if out
                .iter()
                .any(|o| o.driver == dv.driver && o.name == dv.name)
            {
                return Err(invalid(
                    "external.name",
                    dv.name.as_str(),
                    "a volume may appear at most once per app",
                ));
            }
            out.push(dv);
        }
    }
    Ok(out)
}

impl DockerVolume {
    /// A spec with no options, no container path, read-write, default create policy.
    #[must_use]
    pub fn new(driver: DriverName, name: VolumeName) -> Self {
        Self {
            driver,
            name,
            options: BTreeMap::new(),
            container_path: None,
            mode: Mode::Rw,
            explicit_create: None,
        }
    }
}
