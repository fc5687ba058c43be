//! Persistent volumes: disk resources with `persistence` and `volume.container_path`, bound
//! from their volume directory on this agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_resources::proto;

use super::{
    Acquire, Backends, BoxFuture, PlanCx, Planned, Source, SourceKind, VolumeEntry, mode_ro,
};
use crate::container::error::{Result, io_err, vol_err};
use crate::container::prepare::bind_opts;

/// Plans resource `r` when it is a persistent volume (`None` for any other resource).
pub(crate) fn plan(cx: &PlanCx<'_>, r: &proto::Resource) -> Result<Option<Planned>> {
    let Some(disk) = &r.disk else {
        return Ok(None);
    };
    let (Some(persistence), Some(volume)) = (&disk.persistence, &disk.volume) else {
        return Ok(None);
    };
    let name = format!("persistent volume {}", persistence.id);
    let path = cx
        .backends
        .persistent
        .volume_path(r)
        .map_err(|reason| cx.err(&name, reason))?;
    if !path.is_dir() {
        return Err(cx.err(
            &name,
            format!(
                "volume directory {} does not exist (was the volume created on this agent?)",
                path.display()
            ),
        ));
    }
    let (root, rel) = cx.place(&name, &volume.container_path)?;
    Ok(Some(Planned::new(VolumeEntry {
        name,
        source: Source::Persistent {
            path,
            persistence_id: persistence.id.clone(),
        },
        root,
        path_in_root: rel,
        read_only: mode_ro(volume.mode),
        bind: true,
    })))
}

/// Mesos's ownership rule: a volume directory the task could not write — still owned by
/// root, as berth created it — is given (not recursively) to the sandbox's owner when that
/// is not root. A volume already owned by some user, or shared through a volume gid, is left
/// as it is.
pub(super) fn give_to_task(
    id: &str,
    v: &VolumeEntry,
    path: &Path,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let Some((uid, gid)) = owner.filter(|(uid, _)| *uid != 0) else {
        return Ok(());
    };
    let meta = std::fs::symlink_metadata(path).map_err(io_err(id, "stat volume", path))?;
    if meta.uid() != 0 || !meta.is_dir() {
        return Ok(());
    }
    // A shared volume with a gid (`--volume-gid-range`: setgid, group-writable) belongs to
    // every task of its group, not to the first one.
    if meta.mode() & 0o2000 != 0 && meta.gid() != 0 {
        return Ok(());
    }
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|errno| {
        vol_err(
            id,
            &v.name,
            format!("chown {} to {uid}:{gid}: {errno}", path.display()),
        )
    })
}

/// The persistent volume kind.
pub(super) struct Persistent;

impl SourceKind for Persistent {
    fn acquire<'a>(
        &'a self,
        cx: Acquire<'a>,
    ) -> BoxFuture<'a, Result<(PathBuf, berth_mount::BindOptions)>> {
        Box::pin(async move {
            let v = &cx.planned.entry;
            let Source::Persistent { path, .. } = &v.source else {
                return Err(vol_err(cx.id, &v.name, "not a persistent volume"));
            };
            give_to_task(cx.id, v, path, cx.planned.sandbox_owner)?;
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
                Source::Persistent { path, .. } => Some(path.clone()),
                _ => None,
            }
        })
    }

    fn consumers(
        &self,
        _backends: &Backends,
        _id: &str,
        v: &VolumeEntry,
        users: &BTreeMap<&Path, Vec<String>>,
    ) -> Vec<String> {
        match &v.source {
            Source::Persistent { path, .. } => {
                users.get(path.as_path()).cloned().unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}
