//! Planning: a container config resolved into its volumes, without side effects.

use std::path::Path;

use super::Isolator;
use super::config::ContainerConfig;
use super::error::{Result, vol_err};
use super::sources::{self, PlanCx, Planned};

fn depth(p: &Path) -> usize {
    p.components().count()
}

impl Isolator {
    /// Validates the config and resolves every volume into a plan, without side effects:
    /// persistent volumes (from the resources), then the Mesos volumes in order, then the DVDI
    /// environment, each by its kind's planner; parents before nested paths, duplicate
    /// container paths refused.
    ///
    /// # Errors
    /// [`ContainerError::Config`](super::ContainerError::Config) /
    /// [`ContainerError::Volume`](super::ContainerError::Volume) naming the volume.
    pub fn plan(&self, cfg: &ContainerConfig) -> Result<Vec<Planned>> {
        cfg.check()?;
        let cx = PlanCx {
            cfg,
            backends: &self.backends,
        };
        let id = cx.id();
        let mut plan = Vec::new();
        for r in &cfg.resources {
            plan.extend(sources::plan_persistent(&cx, r)?);
        }
        for (index, v) in cfg.volumes.iter().enumerate() {
            plan.push(sources::plan_volume(&cx, index, v)?);
        }
        plan.extend(sources::plan_docker_env(&cx)?);
        if self.backends.docker.is_none()
            && let Some(p) = plan.iter().find(|p| p.docker.is_some())
        {
            return Err(vol_err(
                id,
                &p.entry.name,
                "Docker volume drivers are not configured",
            ));
        }
        sources::check_unique(id, &plan)?;
        // Who the task runs as: the sandbox's owner (Mesos gives fresh volumes to that user).
        let owner = std::fs::metadata(&cfg.sandbox).ok().map(|m| {
            use std::os::unix::fs::MetadataExt as _;
            (m.uid(), m.gid())
        });
        for p in &mut plan {
            p.sandbox_owner = owner;
        }
        // Parents first, so nested paths are mounted on top of (inside) their parents.
        plan.sort_by(|a, b| {
            let (a, b) = (&a.entry, &b.entry);
            (depth(&a.path_in_root), &a.root, &a.path_in_root).cmp(&(
                depth(&b.path_in_root),
                &b.root,
                &b.path_in_root,
            ))
        });
        Ok(plan)
    }
}
