//! How full each volume is: `berth-isolator usage`, the gRPC `Usage` call and the
//! `berth_volume_*` gauges.
//!
//! Mesos reports `DiskStatistics` (persistence id, `limit_bytes`, `used_bytes`) per persistent
//! volume from its `disk/du` and `disk/xfs` isolators; berth reports every volume kind it
//! manages, each measured the way its kind allows, and says which way:
//!
//! | volume                               | used                               | limit                | `enforcement` |
//! |--------------------------------------|------------------------------------|----------------------|---------------|
//! | persistent, ROOT/PATH, project quota | the kernel's count (`quotactl`)    | the volume's size    | `project-quota` |
//! | persistent, ROOT or PATH disk        | a walk of the directory (`du`)     | the volume's size    | `du`          |
//! | persistent, MOUNT disk               | `statvfs` of the mount root        | the volume's size    | `statvfs`     |
//! | CSI, plugin with `GET_VOLUME_STATS`  | `NodeGetVolumeStats` (+ condition) | the plugin's total   | `csi`         |
//! | CSI, plugin without it               | —                                  | —                    | `none`        |
//! | Docker volume-driver, mounted        | `statvfs` of the mount point       | the filesystem size  | `statvfs`     |
//!
//! A volume that cannot be measured (a walk that fails, a plugin that errs) is still listed,
//! with the error, and the others are measured: one broken volume never hides the rest.

use std::path::{Path, PathBuf};

use berth_mount::usage::{FsUsage, fs_usage, tree_usage};
use berth_resources::Resources;

use super::Agent;
use crate::resources::{DiskKind, layout};

/// How a volume's usage was measured (and whether its limit is enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// A project quota: measured and enforced by the kernel.
    ProjectQuota,
    /// A walk of the directory: measured, not enforced.
    Du,
    /// The filesystem's own figures (a MOUNT disk, a Docker volume's mount point).
    Statvfs,
    /// The CSI plugin's `NodeGetVolumeStats`.
    Csi,
    /// Not measured.
    None,
}

impl Enforcement {
    /// The name used in output and metrics.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::ProjectQuota => "project-quota",
            Enforcement::Du => "du",
            Enforcement::Statvfs => "statvfs",
            Enforcement::Csi => "csi",
            Enforcement::None => "none",
        }
    }
}

/// How the agent enforces volume sizes: the `--disk-isolation` mode and what it comes to on
/// the work dir's filesystem (where ROOT-disk volumes live).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskIsolationStatus {
    /// `auto`, `project-quota`, `du` or `none`.
    pub mode: &'static str,
    /// On the work dir: `project-quota`, `du`, `none`, or `unsupported` (project quotas
    /// required, and the filesystem has none).
    pub work_dir: &'static str,
}

impl std::fmt::Display for DiskIsolationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (the work dir's filesystem: {})",
            self.mode, self.work_dir
        )
    }
}

/// One volume's usage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeUsage {
    /// `persistent`, `csi` or `docker`.
    pub kind: &'static str,
    /// The persistence id (persistent volumes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence_id: Option<String>,
    /// The volume id: the CSI volume id, or `driver/name` of a Docker volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_id: Option<String>,
    /// The role the volume is reserved for (persistent volumes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Where the data is on this host.
    pub path: PathBuf,
    /// The size promised (persistent volumes) or reported (CSI, Docker), in bytes.
    pub limit_bytes: Option<u64>,
    /// Bytes used.
    pub used_bytes: Option<u64>,
    /// Inodes used.
    pub used_inodes: Option<u64>,
    /// How it was measured.
    pub enforcement: Enforcement,
    /// A CSI plugin's `VolumeCondition` when it reports one: `None` healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abnormal: Option<String>,
    /// Why it could not be measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VolumeUsage {
    fn new(kind: &'static str, path: PathBuf, enforcement: Enforcement) -> Self {
        Self {
            kind,
            persistence_id: None,
            volume_id: None,
            role: None,
            path,
            limit_bytes: None,
            used_bytes: None,
            used_inodes: None,
            enforcement,
            abnormal: None,
            error: None,
        }
    }
}

/// A volume over its size, as a client of `Watch` sees it (Mesos isolators' `watch()`
/// limitation).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limitation {
    /// The persistence id.
    pub persistence_id: String,
    /// The role.
    pub role: Option<String>,
    /// The volume directory.
    pub path: PathBuf,
    /// Its size.
    pub limit_bytes: u64,
    /// What it holds.
    pub used_bytes: u64,
    /// How it was measured.
    pub enforcement: Enforcement,
}

impl Limitation {
    /// The limitation of `u`, when it is a persistent volume measured without enforcement
    /// (`du`) holding more than its size. (A project quota stops writes at the size; a MOUNT
    /// disk is limited by its filesystem.)
    #[must_use]
    pub fn of(u: &VolumeUsage) -> Option<Limitation> {
        if u.kind != "persistent" || u.enforcement != Enforcement::Du {
            return None;
        }
        let (used, limit) = (u.used_bytes?, u.limit_bytes?);
        (used > limit).then(|| Limitation {
            persistence_id: u.persistence_id.clone().unwrap_or_default(),
            role: u.role.clone(),
            path: u.path.clone(),
            limit_bytes: limit,
            used_bytes: used,
            enforcement: u.enforcement,
        })
    }

    /// What a client is told.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "persistent volume {} holds {} bytes, over its size of {} bytes (measured with {})",
            self.persistence_id,
            self.used_bytes,
            self.limit_bytes,
            self.enforcement.as_str()
        )
    }
}

/// The volumes over their size, from the last measurement, and the channel that tells
/// watchers of each one as it is found.
#[derive(Debug)]
pub struct Limitations {
    current: std::sync::Mutex<std::collections::BTreeMap<PathBuf, Limitation>>,
    raised: tokio::sync::broadcast::Sender<Limitation>,
}

impl Default for Limitations {
    fn default() -> Self {
        Self {
            current: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            raised: tokio::sync::broadcast::channel(256).0,
        }
    }
}

impl Limitations {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<PathBuf, Limitation>> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the set with what `usage` shows; every volume newly over its size (or over it
    /// by more than before) is sent to the watchers.
    pub fn update(&self, usage: &[VolumeUsage]) {
        let now: std::collections::BTreeMap<PathBuf, Limitation> = usage
            .iter()
            .filter_map(Limitation::of)
            .map(|l| (l.path.clone(), l))
            .collect();
        let mut current = self.lock();
        for (path, l) in &now {
            let news = current.get(path).is_none_or(|old| {
                old.used_bytes < l.used_bytes || old.limit_bytes != l.limit_bytes
            });
            if news {
                tracing::warn!(volume = %l.persistence_id, path = %path.display(), used = l.used_bytes, limit = l.limit_bytes, "volume over its size");
                // No watcher is fine.
                let _ = self.raised.send(l.clone());
            }
        }
        *current = now;
    }

    /// The volumes over their size now.
    #[must_use]
    pub fn current(&self) -> Vec<Limitation> {
        self.lock().values().cloned().collect()
    }

    /// The limitation of the volume at `path`, if it is over its size.
    #[must_use]
    pub fn of_path(&self, path: &Path) -> Option<Limitation> {
        self.lock().get(path).cloned()
    }

    /// A receiver of the limitations raised from now on.
    #[must_use]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Limitation> {
        self.raised.subscribe()
    }
}

/// MB (Mesos disk units) to bytes, for a scalar in milli-units; negative is none.
fn mb_to_bytes(milli: i64) -> Option<u64> {
    let milli = u64::try_from(milli).ok()?;
    // 1 MB = 2^20 bytes; milli-MB × 2^20 / 1000, rounded down.
    Some(milli.saturating_mul(1 << 20) / 1000)
}

fn statvfs_into(u: &mut VolumeUsage, path: &Path, size_is_limit: bool) {
    match fs_usage(path) {
        Ok(FsUsage {
            total_bytes,
            used_bytes,
            used_inodes,
        }) => {
            u.used_bytes = Some(used_bytes);
            u.used_inodes = Some(used_inodes);
            if size_is_limit {
                u.limit_bytes = Some(total_bytes);
            }
        }
        Err(e) => u.error = Some(e.to_string()),
    }
}

/// The project quotas of persistent volumes, as [`persistent_usage`] reads them.
pub type ProjectQuotas<'a> = (
    &'a std::collections::BTreeMap<PathBuf, crate::resources::quota::Assigned>,
    &'a dyn berth_mount::quota::Quotas,
);

/// The usage of every persistent volume in `checkpointed` (blocking: walks directories):
/// volumes with a project quota (`quotas`) by the kernel's count, the others by a walk.
#[must_use]
pub fn persistent_usage(
    work_dir: &Path,
    checkpointed: &Resources,
    quotas: Option<ProjectQuotas<'_>>,
) -> Vec<VolumeUsage> {
    let mut out = Vec::new();
    for r in checkpointed.iter() {
        let Some(id) = r.persistence_id() else {
            continue;
        };
        let dir = match layout::volume_dir(work_dir, r) {
            Ok(d) => d,
            Err(e) => {
                let mut u = VolumeUsage::new("persistent", PathBuf::new(), Enforcement::None);
                u.persistence_id = Some(id.as_str().to_owned());
                u.error = Some(e.to_string());
                out.push(u);
                continue;
            }
        };
        let mount = dir.kind == DiskKind::Mount;
        let mut u = VolumeUsage::new(
            "persistent",
            dir.path.clone(),
            if mount {
                Enforcement::Statvfs
            } else {
                Enforcement::Du
            },
        );
        u.persistence_id = Some(id.as_str().to_owned());
        u.role = r.reservation_role().map(|role| role.as_str().to_owned());
        u.limit_bytes = r.scalar_value().and_then(|s| mb_to_bytes(s.milli()));
        let quota = quotas.and_then(|(map, calls)| Some((map.get(&dir.path)?, calls)));
        if mount {
            statvfs_into(&mut u, &dir.path, false);
        } else if let Some((assigned, calls)) = quota {
            u.enforcement = Enforcement::ProjectQuota;
            match calls.usage(&dir.path, assigned.project) {
                Ok(q) => {
                    u.used_bytes = Some(q.used_bytes);
                    u.used_inodes = Some(q.used_inodes);
                }
                Err(e) => u.error = Some(e.to_string()),
            }
        } else {
            match tree_usage(&dir.path) {
                Ok(t) => {
                    u.used_bytes = Some(t.bytes);
                    u.used_inodes = Some(t.inodes);
                }
                Err(e) => u.error = Some(e.to_string()),
            }
        }
        out.push(u);
    }
    out
}

impl Agent {
    /// Measures every volume ([`Agent::usage`]) and updates the limitations (a server's
    /// periodic measurement).
    pub async fn measure(&self) -> Vec<VolumeUsage> {
        let usage = self.usage().await;
        self.limitations.update(&usage);
        usage
    }

    /// The volumes over their size and their watchers' channel.
    #[must_use]
    pub fn limitations(&self) -> &Limitations {
        &self.limitations
    }

    /// With `--enforce-disk-limits`, refuses a container that would use a persistent volume
    /// over its size (as last measured).
    pub(super) fn check_disk_limits(
        &self,
        cfg: &crate::container::ContainerConfig,
    ) -> super::Result<()> {
        if !self.settings.enforce_disk_limits {
            return Ok(());
        }
        for r in &cfg.resources {
            let Ok(typed) = berth_resources::Resource::from_proto(r) else {
                continue;
            };
            if typed.persistence_id().is_none() {
                continue;
            }
            let Ok(path) = crate::resources::volume_path(&self.settings.work_dir, &typed) else {
                continue;
            };
            if let Some(l) = self.limitations.of_path(&path) {
                return Err(super::AgentError::OverDiskLimit {
                    persistence_id: l.persistence_id,
                    path: l.path,
                    used_bytes: l.used_bytes,
                    limit_bytes: l.limit_bytes,
                });
            }
        }
        Ok(())
    }

    /// The usage of every volume on this agent: persistent volumes (checkpointed), CSI
    /// volumes (published), Docker volume-driver volumes (mounted). Blocking (directory
    /// walks, `statvfs`, plugin calls): a server runs it off its serving threads.
    pub async fn usage(&self) -> Vec<VolumeUsage> {
        let (checkpointed, quotas) = {
            let r = self.resources.lock().await;
            let quotas = r.quotas().map(|q| (q.all().clone(), q.calls()));
            (r.checkpointed().clone(), quotas)
        };
        let mut out = persistent_usage(
            &self.settings.work_dir,
            &checkpointed,
            quotas.as_ref().map(|(map, calls)| (map, calls.as_ref())),
        );
        if let Some(csi) = &self.csi {
            for plugin in csi.started().await {
                let manager = plugin.manager();
                let caps = manager.node().node_capabilities().await;
                for rec in manager.records() {
                    let published = rec
                        .publications
                        .values()
                        .find(|p| p.state == berth_csi::record::PublishState::Published)
                        .map(|p| p.target.clone());
                    let Some(path) = published.or_else(|| rec.staging_path.clone()) else {
                        continue;
                    };
                    let mut u = VolumeUsage::new("csi", path.clone(), Enforcement::None);
                    u.volume_id = Some(rec.volume_id.clone());
                    match &caps {
                        Ok(c) if c.get_volume_stats => {
                            u.enforcement = Enforcement::Csi;
                            match manager
                                .node()
                                .node_volume_stats(
                                    &rec.volume_id,
                                    &path,
                                    rec.staging_path.as_deref(),
                                )
                                .await
                            {
                                Ok(s) => {
                                    if let Some(b) = s.bytes {
                                        u.used_bytes = b.used;
                                        u.limit_bytes = b.total;
                                    }
                                    u.used_inodes = s.inodes.and_then(|i| i.used);
                                    u.abnormal =
                                        s.condition.filter(|c| c.abnormal).map(|c| c.message);
                                }
                                Err(e) => u.error = Some(e.to_string()),
                            }
                        }
                        Ok(_) => {}
                        Err(e) => u.error = Some(e.to_string()),
                    }
                    out.push(u);
                }
            }
        }
        if let Ok(volumes) = self.docker.volumes() {
            for (driver, name) in volumes {
                let Ok(Some(rec)) = self.docker.load(&driver, &name) else {
                    continue;
                };
                for m in rec.mounts.values() {
                    let (berth_dvdi::record::MountState::Mounted, Some(point)) =
                        (&m.state, &m.mountpoint)
                    else {
                        continue;
                    };
                    let mut u = VolumeUsage::new("docker", point.clone(), Enforcement::Statvfs);
                    u.volume_id = Some(format!("{driver}/{name}"));
                    statvfs_into(&mut u, point, true);
                    out.push(u);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn megabytes_are_mebibytes() {
        assert_eq!(mb_to_bytes(2048 * 1000), Some(2048 << 20));
        assert_eq!(mb_to_bytes(500), Some(524_288));
        assert_eq!(mb_to_bytes(-1), None);
    }

    #[test]
    fn root_disk_volumes_are_walked_and_their_size_is_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let work = std::fs::canonicalize(dir.path()).unwrap();
        let set = crate::resources::parse_resources_json(
            r#"[{"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
                 "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
                 "disk": {"persistence": {"id": "v1"}, "volume": {"container_path": "d", "mode": "RW"}}}]"#,
        )
        .unwrap();
        let path = work.join("volumes/roles/db/v1");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("f"), vec![7u8; 100_000]).unwrap();
        let usage = persistent_usage(&work, &set, None);
        assert_eq!(usage.len(), 1);
        let u = &usage[0];
        assert_eq!(u.persistence_id.as_deref(), Some("v1"));
        assert_eq!(u.role.as_deref(), Some("db"));
        assert_eq!(u.path, path);
        assert_eq!(u.limit_bytes, Some(64 << 20));
        assert_eq!(u.enforcement, Enforcement::Du);
        assert!(u.used_bytes.unwrap() >= 100_000, "{u:?}");
        assert_eq!(u.used_inodes, Some(2), "the directory and its file");
        assert!(u.error.is_none());
    }

    #[test]
    fn a_volume_that_cannot_be_walked_is_listed_with_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let work = std::fs::canonicalize(dir.path()).unwrap();
        let set = crate::resources::parse_resources_json(
            r#"[{"name": "disk", "type": "SCALAR", "scalar": {"value": 8},
                 "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
                 "disk": {"persistence": {"id": "gone"}, "volume": {"container_path": "d", "mode": "RW"}}},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 8},
                 "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
                 "disk": {"persistence": {"id": "here"}, "volume": {"container_path": "e", "mode": "RW"}}}]"#,
        )
        .unwrap();
        std::fs::create_dir_all(work.join("volumes/roles/db/here")).unwrap();
        let usage = persistent_usage(&work, &set, None);
        assert_eq!(usage.len(), 2);
        let gone = usage
            .iter()
            .find(|u| u.persistence_id.as_deref() == Some("gone"))
            .unwrap();
        assert!(
            gone.error.is_some() && gone.used_bytes.is_none(),
            "{gone:?}"
        );
        let here = usage
            .iter()
            .find(|u| u.persistence_id.as_deref() == Some("here"))
            .unwrap();
        assert_eq!(here.used_inodes, Some(1));
    }
}
