//! What the isolator knows now: record states, per-container status, and who uses a
//! persistent volume directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use serde::Serialize;

use super::error::Result;
use super::record::{ContainerRecord, RecordState};
use super::sources::{self, Source};
use super::teardown::signature;
use super::{Isolator, Roots};

/// One container in [`Isolator::status`].
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    /// The container.
    pub container_id: String,
    /// `preparing`, `prepared`, `cleaning`, or `quarantined` (a corrupt record moved aside:
    /// its volumes are unknown and everything it holds is kept).
    pub state: &'static str,
    /// Its volumes.
    pub volumes: Vec<VolumeStatus>,
    /// Why the last teardown attempt failed, if it did.
    pub last_error: Option<String>,
    /// The parent container whose sandbox it binds from (`PARENT` sandbox paths); not in
    /// the JSON when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The nested containers binding from its sandbox; not in the JSON when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
}

/// One volume in [`ContainerStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct VolumeStatus {
    /// The volume's name.
    pub name: String,
    /// The container path's host path, when it resolves.
    pub target: Option<PathBuf>,
    /// Whether a mount is at the target now.
    pub mounted: bool,
    /// Read-only.
    pub read_only: bool,
    /// Every container using the volume now (persistent: containers with it in their
    /// record; CSI and Docker: the consumer sets of those managers).
    pub consumers: Vec<String>,
}

impl Isolator {
    /// Every container with a readable record and its record state, without looking at
    /// mounts or plugins (cheap: for start-up and metrics).
    ///
    /// # Errors
    /// [`ContainerError::Io`](super::ContainerError::Io) when the records directory cannot be
    /// listed.
    pub fn record_states(&self) -> Result<Vec<(String, RecordState)>> {
        Ok(self
            .records
            .ids()?
            .into_iter()
            .filter_map(|id| {
                let state = self.records.load(&id).ok().flatten()?.state;
                Some((id, state))
            })
            .collect())
    }

    /// Every container with a record: its state and its volumes, mounted or not; then every
    /// quarantined container (state `quarantined`, no volumes).
    ///
    /// # Errors
    /// [`ContainerError::Io`](super::ContainerError::Io) when the records directory cannot be
    /// listed.
    pub fn status(&self) -> Result<Vec<ContainerStatus>> {
        let names = self.records.ids()?;
        let table = self.mounter.mount_table().ok();
        let busy = self
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let records: Vec<ContainerRecord> = names
            .iter()
            .filter_map(|n| self.records.load(n).ok().flatten())
            .collect();
        // Users of each persistent volume directory, from one pass over the records.
        let mut users: BTreeMap<&Path, Vec<String>> = BTreeMap::new();
        for rec in &records {
            for v in &rec.volumes {
                if let Source::Persistent { path, .. } = &v.source {
                    users
                        .entry(path)
                        .or_default()
                        .push(rec.container_id.clone());
                }
            }
        }
        let mut children_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for rec in &records {
            if let Some(p) = rec.parent() {
                children_of
                    .entry(p)
                    .or_default()
                    .push(rec.container_id.clone());
            }
        }
        let mut out = Vec::new();
        for rec in &records {
            let state = match rec.state {
                RecordState::Preparing if busy.contains(&rec.container_id) => "preparing",
                RecordState::Preparing => "prepared",
                RecordState::Cleaning => "cleaning",
            };
            let mut roots = Roots::default();
            let volumes = rec
                .volumes
                .iter()
                .map(|v| {
                    let target = if v.bind {
                        Self::resolve_target(&mut roots, v)
                    } else {
                        None
                    };
                    let mounted = match (&table, &target) {
                        (Some(t), Some(p)) => t.is_mount_point(p),
                        _ => false,
                    };
                    let consumers = sources::kind(&v.source).consumers(
                        &self.backends,
                        &rec.container_id,
                        v,
                        &users,
                    );
                    VolumeStatus {
                        name: v.name.clone(),
                        target,
                        mounted,
                        read_only: v.read_only,
                        consumers,
                    }
                })
                .collect();
            let children = children_of
                .get(rec.container_id.as_str())
                .cloned()
                .unwrap_or_default();
            out.push(ContainerStatus {
                container_id: rec.container_id.clone(),
                state,
                volumes,
                last_error: rec.last_error.clone(),
                parent: rec.parent().map(str::to_owned),
                children,
            });
        }
        // Quarantined containers: their volumes are unknown, everything they hold is kept.
        for (id, file) in self.records.quarantined() {
            if out.iter().any(|c| c.container_id == id) {
                continue;
            }
            out.push(ContainerStatus {
                container_id: id.clone(),
                state: "quarantined",
                volumes: Vec::new(),
                last_error: Some(format!(
                    "record corrupt, quarantined at {}; its mounts and plugin consumers are kept until `berth-isolator cleanup --container-id {id} --force`",
                    file.display()
                )),
                parent: None,
                children: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Who uses the persistent volume directory `path`: containers whose record has it, any
    /// record that cannot be read (it may: fail closed), and any mount of the volume or of
    /// something inside it that the mount table shows (a container whose record was lost or
    /// quarantined, or a mount made by someone else), named `mount at <path>`.
    #[must_use]
    pub fn users_of(&self, path: &Path) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        // The sandboxes and rootfs of the users found in records: their mounts are accounted for.
        let mut roots: Vec<PathBuf> = Vec::new();
        match self.records.ids() {
            Ok(ids) => {
                for name in ids {
                    match self.records.load(&name) {
                        Ok(Some(rec)) => {
                            if rec.volumes.iter().any(|v| {
                                matches!(&v.source, Source::Persistent { path: p, .. } if p == path)
                            }) {
                                roots.push(rec.sandbox.clone());
                                roots.extend(rec.rootfs.clone());
                                out.push(name);
                            }
                        }
                        Ok(None) => {}
                        Err(_) => out.push(format!("{name} (unreadable record)")),
                    }
                }
            }
            Err(e) => out.push(format!("unknown ({e})")),
        }
        if let Ok(table) = self.mounter.mount_table()
            && let Some((major, minor, root)) = signature(&table, path)
        {
            for e in table.iter() {
                if e.major() == major
                    && e.minor() == minor
                    && e.root().starts_with(&root)
                    && e.mount_point() != path
                    && !roots.iter().any(|r| e.mount_point().starts_with(r))
                {
                    out.push(format!("mount at {}", e.mount_point().display()));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
