//! `SANDBOX_PATH` volumes (`SELF`): a directory inside the container's own sandbox, created
//! there confined to the sandbox.

use std::path::{Component, Path, PathBuf};

use berth_mount::path::{Kind, Resolver};
use berth_resources::proto;

use super::persistent::give_to_task;
use super::{
    Acquire, Backends, BoxFuture, PlanCx, Planned, Source, SourceKind, VolumeEntry, mode_ro,
};
use crate::container::error::{Result, mount_err, vol_err};
use crate::container::prepare::bind_opts;

/// Plans `SANDBOX_PATH` volume number `index`.
pub(super) fn plan(
    cx: &PlanCx<'_>,
    index: usize,
    v: &proto::Volume,
    s: &proto::volume::Source,
) -> Result<Planned> {
    let sp = s.sandbox_path.as_ref().ok_or_else(|| {
        cx.err(
            &format!("volumes[{index}]"),
            "SANDBOX_PATH without sandbox_path",
        )
    })?;
    let name = format!("sandbox path {}", sp.path);
    if sp.r#type() == proto::volume::source::sandbox_path::Type::Parent {
        return Err(cx.err(
            &name,
            "PARENT sandbox paths need a parent container; berth supports SELF",
        ));
    }
    let p = Path::new(&sp.path);
    if sp.path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(cx.err(&name, "path must be relative, without '.' or '..'"));
    }
    let (root, rel) = cx.place(&name, &v.container_path)?;
    Ok(Planned::new(VolumeEntry {
        name,
        source: Source::SandboxPath {
            sandbox: cx.cfg.sandbox.clone(),
            path: p.to_owned(),
        },
        root,
        path_in_root: rel,
        read_only: mode_ro(v.mode),
        bind: true,
    }))
}

/// The sandbox path kind.
pub(super) struct SandboxPath;

impl SourceKind for SandboxPath {
    fn acquire<'a>(
        &'a self,
        cx: Acquire<'a>,
    ) -> BoxFuture<'a, Result<(PathBuf, berth_mount::BindOptions)>> {
        Box::pin(async move {
            let v = &cx.planned.entry;
            let Source::SandboxPath { sandbox, path } = &v.source else {
                return Err(vol_err(cx.id, &v.name, "not a sandbox path"));
            };
            let merr = |e| mount_err(cx.id, &v.name, e);
            // Created inside the sandbox, confined (a symlink in the sandbox cannot lead out).
            let root = cx.roots.get(sandbox).map_err(merr)?;
            let fd = Resolver::default()
                .prepare_mount_point_in(&root, path, Kind::Dir)
                .map_err(merr)?;
            let host = berth_mount::path::fd_path(&fd).map_err(merr)?;
            give_to_task(cx.id, v, &host, cx.planned.sandbox_owner)?;
            Ok((host, bind_opts(v.read_only)))
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
                Source::SandboxPath { sandbox, path } => Some(sandbox.join(path)),
                _ => None,
            }
        })
    }
}
