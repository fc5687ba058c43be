//! What a change of the checkpointed set does to the volume directories ([`Plan`]), and the
//! checkpoint files' encoding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_resources::Resources;
use serde_json::Value as Json;

use super::error::{self, ResourcesError, Result, Step};
use super::layout::{self, VolumeDir};
use super::quota::Assigned;
use super::{VolumeUsers, fs};

/// The volumes of a set, by directory.
pub(super) fn volume_dirs(
    work_dir: &Path,
    set: &Resources,
) -> Result<BTreeMap<PathBuf, VolumeDir>> {
    let mut out: BTreeMap<PathBuf, VolumeDir> = BTreeMap::new();
    for r in set.iter().filter(|r| r.is_persistent_volume()) {
        let dir = layout::volume_dir(work_dir, r)?;
        if let Some(first) = out.get(&dir.path) {
            return Err(ResourcesError::DuplicateVolume {
                path: dir.path.clone(),
                first: first.id.clone(),
                second: dir.id,
            });
        }
        out.insert(dir.path.clone(), dir);
    }
    Ok(out)
}

/// The directories of a set's shared volumes.
pub(super) fn shared_dirs(
    work_dir: &Path,
    set: &Resources,
) -> Result<std::collections::BTreeSet<PathBuf>> {
    set.iter()
        .filter(|r| r.is_persistent_volume() && r.shared)
        .map(|r| Ok(layout::volume_dir(work_dir, r)?.path))
        .collect()
}

/// The sizes of a set's volumes on ROOT and PATH disks (the ones a project quota can
/// limit), in bytes, by directory.
pub(super) fn volume_sizes(work_dir: &Path, set: &Resources) -> Result<BTreeMap<PathBuf, u64>> {
    let mut out = BTreeMap::new();
    for r in set.iter().filter(|r| r.is_persistent_volume()) {
        let dir = layout::volume_dir(work_dir, r)?;
        if dir.kind == layout::DiskKind::Mount {
            continue;
        }
        let milli = r.scalar_value().map_or(0, berth_resources::Scalar::milli);
        // MB (2^20 bytes) in milli-units.
        let bytes = u64::try_from(milli).unwrap_or(0).saturating_mul(1 << 20) / 1000;
        out.insert(dir.path, bytes);
    }
    Ok(out)
}

/// The directory changes between two sets.
pub(super) struct Plan {
    pub(super) create: Vec<VolumeDir>,
    pub(super) destroy: Vec<VolumeDir>,
    /// Volumes on ROOT/PATH disks in both sets whose size changed: (directory, old, new bytes).
    pub(super) resize: Vec<(VolumeDir, u64, u64)>,
    /// The new set's ROOT/PATH volume sizes.
    pub(super) sizes: BTreeMap<PathBuf, u64>,
}

impl Plan {
    pub(super) fn new(work_dir: &Path, old: &Resources, new: &Resources) -> Result<Plan> {
        let old_sizes = volume_sizes(work_dir, old)?;
        let sizes = volume_sizes(work_dir, new)?;
        let old = volume_dirs(work_dir, old)?;
        let new = volume_dirs(work_dir, new)?;
        let resize = new
            .iter()
            .filter_map(|(p, d)| {
                let (was, now) = (old_sizes.get(p)?, sizes.get(p)?);
                (old.contains_key(p) && was != now).then(|| (d.clone(), *was, *now))
            })
            .collect();
        Ok(Plan {
            resize,
            sizes,
            create: new
                .iter()
                .filter(|(p, _)| !old.contains_key(*p))
                .map(|(_, d)| d.clone())
                .collect(),
            destroy: old
                .iter()
                .filter(|(p, _)| !new.contains_key(*p))
                .map(|(_, d)| d.clone())
                .collect(),
        })
    }

    pub(super) fn check_users(&self, users: &dyn VolumeUsers) -> Result<()> {
        for d in &self.destroy {
            let who = users.users(&d.path);
            if !who.is_empty() {
                return Err(ResourcesError::VolumeInUse {
                    id: d.id.clone(),
                    path: d.path.clone(),
                    users: who,
                });
            }
        }
        Ok(())
    }

    pub(super) fn check_paths(&self) -> Result<()> {
        self.create.iter().try_for_each(fs::check_creatable)
    }

    pub(super) fn check_mounts(&self) -> Result<()> {
        let Some(first) = self.destroy.first() else {
            return Ok(());
        };
        let table =
            berth_mount::MountTable::read_current().map_err(|source| ResourcesError::Mount {
                id: first.id.clone(),
                path: first.path.clone(),
                source,
            })?;
        self.destroy
            .iter()
            .try_for_each(|d| fs::check_no_mounts(d, &table))
    }
}

/// A checkpoint file: the set, and (with project quotas) its volumes' ids and limits.
#[derive(Debug, Default)]
pub(super) struct CheckpointFile {
    pub(super) resources: Resources,
    pub(super) projects: BTreeMap<PathBuf, Assigned>,
    pub(super) gids: BTreeMap<PathBuf, u32>,
}

/// What a checkpoint file records besides the set: the volumes' project quotas and gids.
#[derive(Debug, Default)]
pub(super) struct VolumeExtras {
    pub(super) projects: BTreeMap<PathBuf, Assigned>,
    pub(super) gids: BTreeMap<PathBuf, u32>,
}

/// The object form of a checkpoint file with project quotas (without them the file is the
/// plain Mesos JSON array).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WithProjects {
    resources: Json,
    #[serde(default)]
    projects: BTreeMap<PathBuf, Assigned>,
    #[serde(default)]
    gids: BTreeMap<PathBuf, u32>,
}

/// Reads a checkpoint file (`None` when absent): a Mesos JSON array of resources, or
/// `{"resources": [...], "projects": {dir: {"project", "hard_bytes"}}, "gids": {dir: gid}}`
/// (either map may be absent).
pub(super) fn read_checkpoint_file(path: &Path) -> Result<Option<CheckpointFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error::io(Step::ReadCheckpoint, path, e)),
    };
    let corrupt = |reason: String| ResourcesError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let json: Json = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let (json, projects, gids) = if json.is_object() {
        let w: WithProjects = serde_json::from_value(json).map_err(|e| corrupt(e.to_string()))?;
        (w.resources, w.projects, w.gids)
    } else {
        (json, BTreeMap::new(), BTreeMap::new())
    };
    if let Some((dir, gid)) = gids.iter().find(|(d, g)| !d.is_absolute() || **g == 0) {
        return Err(corrupt(format!(
            "gid {gid} of {}: not a volume's gid",
            dir.display()
        )));
    }
    let set = Resources::from_json(&json).map_err(|e| corrupt(e.to_string()))?;
    if let Some(r) = set.iter().find(|r| !r.needs_checkpointing()) {
        return Err(corrupt(format!(
            "{r} is neither dynamically reserved nor a persistent volume"
        )));
    }
    if let Some((dir, a)) = projects
        .iter()
        .find(|(d, a)| !d.is_absolute() || a.project == 0 || a.container.is_some())
    {
        return Err(corrupt(format!(
            "project {} of {}: not a volume's quota",
            a.project,
            dir.display()
        )));
    }
    Ok(Some(CheckpointFile {
        resources: set,
        projects,
        gids,
    }))
}

/// [`read_checkpoint_file`]'s set.
pub(super) fn read_checkpoint(path: &Path) -> Result<Option<Resources>> {
    Ok(read_checkpoint_file(path)?.map(|c| c.resources))
}

/// A checkpoint file's bytes: the plain array without extras, else the object form.
pub(super) fn encode(set: &Resources, extras: &VolumeExtras) -> Result<Vec<u8>> {
    let invalid = |e: serde_json::Error| ResourcesError::InvalidResources {
        reason: e.to_string(),
    };
    if extras.projects.is_empty() && extras.gids.is_empty() {
        return serde_json::to_vec(&set.to_json()).map_err(invalid);
    }
    let mut object = serde_json::Map::new();
    object.insert("resources".to_owned(), set.to_json());
    if !extras.projects.is_empty() {
        object.insert(
            "projects".to_owned(),
            serde_json::to_value(&extras.projects).map_err(invalid)?,
        );
    }
    if !extras.gids.is_empty() {
        object.insert(
            "gids".to_owned(),
            serde_json::to_value(&extras.gids).map_err(invalid)?,
        );
    }
    serde_json::to_vec(&Json::Object(object)).map_err(invalid)
}
