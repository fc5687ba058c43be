//! `HOST_PATH` volumes (and the legacy `Volume.host_path`): an existing host path, bound as it
//! is.

use std::path::PathBuf;

use berth_resources::proto;

use super::{
    Acquire, Backends, BoxFuture, PlanCx, Planned, Source, SourceKind, VolumeEntry, mode_ro,
};
use crate::container::error::{Result, vol_err};
use crate::container::prepare::bind_opts;

/// Plans a volume with the legacy `host_path` field and no source.
pub(super) fn plan_legacy(cx: &PlanCx<'_>, v: &proto::Volume) -> Result<Planned> {
    planned(cx, v, v.host_path.clone().unwrap_or_default())
}

/// Plans a `HOST_PATH` volume.
pub(super) fn plan(
    cx: &PlanCx<'_>,
    v: &proto::Volume,
    s: &proto::volume::Source,
) -> Result<Planned> {
    let hp = s
        .host_path
        .as_ref()
        .map(|h| h.path.clone())
        .unwrap_or_default();
    planned(cx, v, hp)
}

fn planned(cx: &PlanCx<'_>, v: &proto::Volume, hp: String) -> Result<Planned> {
    let name = format!("host path {hp}");
    let path = PathBuf::from(hp);
    if !path.is_absolute() || !path.exists() {
        return Err(cx.err(&name, "host path must be absolute and exist"));
    }
    let path = allowed(cx, &name, path)?;
    let (root, rel) = cx.place(&name, &v.container_path)?;
    Ok(Planned::new(VolumeEntry {
        name,
        source: Source::HostPath { path },
        root,
        path_in_root: rel,
        read_only: mode_ro(v.mode),
        bind: true,
    }))
}

/// `--allowed-host-paths`: with prefixes configured, the host path, canonicalized (every
/// symlink resolved), must lie at or under one of them (canonicalized too), compared
/// component by component (`/data` allows `/data/x`, never `/database`). The canonical path
/// is what is recorded and bound, so a symlink that points out of a prefix is refused and
/// cannot be swapped between the check and the bind. Without prefixes the path is used as
/// given (Mesos allows any host path).
fn allowed(cx: &PlanCx<'_>, name: &str, path: PathBuf) -> Result<PathBuf> {
    let prefixes = &cx.policy.allowed_host_paths;
    if prefixes.is_empty() {
        return Ok(path);
    }
    let real = std::fs::canonicalize(&path)
        .map_err(|e| cx.err(name, format!("cannot resolve the host path: {e}")))?;
    let ok = prefixes.iter().any(|p| {
        std::fs::canonicalize(p)
            .ok()
            .is_some_and(|p| real.starts_with(p))
    });
    if !ok {
        return Err(cx.err(
            name,
            format!(
                "host path {} is not under an allowed host path (--allowed-host-paths)",
                real.display()
            ),
        ));
    }
    Ok(real)
}

/// The host path kind.
pub(super) struct HostPath;

impl SourceKind for HostPath {
    fn acquire<'a>(
        &'a self,
        cx: Acquire<'a>,
    ) -> BoxFuture<'a, Result<(PathBuf, berth_mount::BindOptions)>> {
        Box::pin(async move {
            let v = &cx.planned.entry;
            let Source::HostPath { path } = &v.source else {
                return Err(vol_err(cx.id, &v.name, "not a host path"));
            };
            Ok((path.clone(), bind_opts(v.read_only)))
        })
    }

    fn source_path<'a>(
        &'a self,
        _backends: &'a Backends,
        _id: &'a str,
        v: &'a VolumeEntry,
    ) -> BoxFuture<'a, Option<PathBuf>> {
        Box::pin(async move {
            match &v.source {
                Source::HostPath { path } => Some(path.clone()),
                _ => None,
            }
        })
    }
}
