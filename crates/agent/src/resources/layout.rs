//! Where a persistent volume lives on the agent: Mesos's `paths::getPersistentVolumePath`.
//!
//! | disk | directory |
//! |---|---|
//! | ROOT (no `source`) | `<work_dir>/volumes/roles/<role>/<persistence id>` |
//! | PATH | `<source.path.root>/volumes/roles/<role>/<persistence id>` (a relative root is under the work dir) |
//! | MOUNT | `<source.mount.root>` itself (the whole filesystem is the volume; relative → under the work dir) |
//!
//! `<role>` is the reservation role (the role of the *last* reservation for refined
//! reservations, `*` for an unreserved volume) with every `/` replaced by a space, exactly as
//! Mesos encodes hierarchical roles (roles cannot contain whitespace, so this is reversible).
//! Both components are checked again with [`berth_mount::names::validate_component`] before
//! they touch a path, and disk roots must be plain paths (no `..`, no empty root).

use std::path::{Component, Path, PathBuf};

use berth_resources::{DiskSourceType, Resource};

use super::error::{ResourcesError, Result};

/// The kind of disk a persistent volume is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DiskKind {
    /// The agent's root disk (no `DiskInfo.source`): under the work dir.
    Root,
    /// A PATH disk: under `source.path.root`.
    Path,
    /// A MOUNT disk: the mount root itself.
    Mount,
}

/// A persistent volume's host directory and what it is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeDir {
    /// The directory holding the volume's data.
    pub path: PathBuf,
    /// The disk root (`work_dir`, `source.path.root` or `source.mount.root`, made absolute).
    pub root: PathBuf,
    /// The disk kind.
    pub kind: DiskKind,
    /// The role component as it appears on disk (`/` encoded as a space).
    pub role_component: String,
    /// The persistence id.
    pub id: String,
}

impl VolumeDir {
    /// The components below the root (`volumes`, `roles`, role, id); empty for MOUNT disks.
    pub(crate) fn relative(&self) -> Vec<&str> {
        match self.kind {
            DiskKind::Mount => Vec::new(),
            DiskKind::Root | DiskKind::Path => {
                vec!["volumes", "roles", &self.role_component, &self.id]
            }
        }
    }
}

/// Mesos's role encoding for volume paths: `/` becomes a space (`eng/db` → `eng db`).
#[must_use]
pub fn encode_role(role: &str) -> String {
    role.replace('/', " ")
}

fn component(id: &str, name: &str) -> Result<()> {
    berth_mount::names::validate_component(name)
        .map(drop)
        .map_err(|e| ResourcesError::InvalidComponent {
            id: id.to_owned(),
            component: name.to_owned(),
            reason: e.to_string(),
        })
}

fn disk_root(work_dir: &Path, id: &str, root: Option<&str>) -> Result<PathBuf> {
    let invalid = |reason| ResourcesError::InvalidRoot {
        id: id.to_owned(),
        root: root.unwrap_or_default().to_owned(),
        reason,
    };
    let Some(root) = root.filter(|r| !r.is_empty()) else {
        return Err(invalid("the disk source has no root"));
    };
    if root.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    let p = Path::new(root);
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || root.split('/').any(|c| c == "." || c == "..")
    {
        return Err(invalid("'.' and '..' components are not allowed"));
    }
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        work_dir.join(p)
    })
}

/// The host directory of persistent volume `volume` on an agent whose work dir is `work_dir`.
///
/// # Errors
/// [`ResourcesError::NotPersistentVolume`], [`ResourcesError::UnsupportedVolume`] (BLOCK/RAW
/// disks, resource-provider volumes), [`ResourcesError::InvalidRoot`],
/// [`ResourcesError::InvalidComponent`].
pub fn volume_dir(work_dir: &Path, volume: &Resource) -> Result<VolumeDir> {
    let Some(id) = volume.persistence_id() else {
        return Err(ResourcesError::NotPersistentVolume {
            resource: volume.to_string(),
        });
    };
    let id = id.as_str();
    if volume.provider_id.is_some() {
        return Err(ResourcesError::UnsupportedVolume {
            id: id.to_owned(),
            reason: "resource-provider (CSI) volumes are published by the CSI path",
        });
    }
    let role = volume
        .reservation_role()
        .map_or_else(|| "*".to_owned(), |r| r.as_str().to_owned());
    let role_component = encode_role(&role);
    component(id, &role_component)?;
    component(id, id)?;
    let (kind, root) = match volume.disk_source() {
        None => (DiskKind::Root, work_dir.to_path_buf()),
        Some(source) => match source.kind {
            DiskSourceType::Path => (DiskKind::Path, disk_root(work_dir, id, source.root())?),
            DiskSourceType::Mount => (DiskKind::Mount, disk_root(work_dir, id, source.root())?),
            DiskSourceType::Block | DiskSourceType::Raw => {
                return Err(ResourcesError::UnsupportedVolume {
                    id: id.to_owned(),
                    reason: "BLOCK and RAW disks have no directory",
                });
            }
        },
    };
    let mut dir = VolumeDir {
        path: root.clone(),
        root,
        kind,
        role_component,
        id: id.to_owned(),
    };
    let mut path = dir.root.clone();
    for c in dir.relative() {
        path.push(c);
    }
    dir.path = path;
    Ok(dir)
}
