//! `SANDBOX_PATH` volumes: a directory inside the container's own sandbox (`SELF`), or inside
//! its parent container's sandbox (`PARENT`, how the tasks of a Mesos task group or a
//! Marathon pod share an ephemeral volume), created there confined to that sandbox.
//!
//! `PARENT` is Mesos's semantics for a nested container: the path resolves against the parent
//! container's sandbox, and a directory created there is given to the parent sandbox's owner.
//! berth knows the parent's sandbox from the parent's own record (the parent must be prepared
//! on this agent first, and not be preparing or cleaning up); the child's record names the
//! parent, and the parent's cleanup is refused while a child's record holds such a volume.

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
    let parent = if is_parent(v) {
        let name = format!("sandbox path {}", sp.path);
        let Some(parent) = cx.parent else {
            return Err(cx.err(
                &name,
                "a PARENT sandbox path needs the container's parent (config key parent.container_id)",
            ));
        };
        Some(parent)
    } else {
        None
    };
    let name = match parent {
        Some(_) => format!("parent sandbox path {}", sp.path),
        None => format!("sandbox path {}", sp.path),
    };
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
            sandbox: parent.map_or_else(|| cx.cfg.sandbox.clone(), |p| p.sandbox.clone()),
            path: p.to_owned(),
            parent: parent.map(|p| p.container_id.clone()),
        },
        root,
        path_in_root: rel,
        read_only: mode_ro(v.mode),
        bind: true,
    }))
}

/// Whether `v` is a `SANDBOX_PATH` volume of type `PARENT`.
pub(crate) fn is_parent(v: &proto::Volume) -> bool {
    v.source.as_ref().is_some_and(|s| {
        s.r#type() == proto::volume::source::Type::SandboxPath
            && s.sandbox_path
                .as_ref()
                .is_some_and(|sp| sp.r#type() == proto::volume::source::sandbox_path::Type::Parent)
    })
}

/// Gives the directory open as `fd` (confined: the descriptor, not a path) group `gid` and
/// mode `2770`, through its `/proc/self/fd` link (the descriptor may be `O_PATH`).
fn share_with_group(id: &str, v: &VolumeEntry, fd: &std::os::fd::OwnedFd, gid: u32) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::PermissionsExt as _;
    let link = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let fail = |what: &str, e: String| vol_err(id, &v.name, format!("{what} (gid {gid}): {e}"));
    nix::unistd::chown(&link, None, Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(|e| fail("chgrp", e.to_string()))?;
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o2770))
        .map_err(|e| fail("chmod 2770", e.to_string()))
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
            let Source::SandboxPath { sandbox, path, .. } = &v.source else {
                return Err(vol_err(cx.id, &v.name, "not a sandbox path"));
            };
            let merr = |e| mount_err(cx.id, &v.name, e);
            // Created inside the sandbox, confined (a symlink in the sandbox cannot lead out).
            let root = cx.roots.get(sandbox).map_err(merr)?;
            let fd = Resolver::default()
                .prepare_mount_point_in(&root, path, Kind::Dir)
                .map_err(merr)?;
            let host = berth_mount::path::fd_path(&fd).map_err(merr)?;
            if let (
                Source::SandboxPath {
                    parent: Some(parent),
                    ..
                },
                Some(gids),
            ) = (&v.source, &cx.backends.parent_gids)
            {
                let gid = gids
                    .gid(parent, path)
                    .map_err(|reason| vol_err(cx.id, &v.name, reason))?;
                share_with_group(cx.id, v, &fd, gid)?;
            }
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
                Source::SandboxPath { sandbox, path, .. } => Some(sandbox.join(path)),
                _ => None,
            }
        })
    }
}
