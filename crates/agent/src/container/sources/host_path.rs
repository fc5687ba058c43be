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
