//! Planning: a container config resolved into its volumes, without side effects.

use std::path::{Path, PathBuf};

use std::sync::PoisonError;

use super::Isolator;
use super::config::ContainerConfig;
use super::error::{ContainerError, Result, cfg_err, vol_err};
use super::record::RecordState;
use super::sources::{self, ParentPlan, PlanCx, Planned, Source};

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
    /// [`ContainerError::Config`] /
    /// [`ContainerError::Volume`] naming the volume.
    pub fn plan(&self, cfg: &ContainerConfig) -> Result<Vec<Planned>> {
        Ok(self.plan_admitted(cfg)?.1)
    }

    /// The sandbox and rootfs checked against the work dir and `--sandbox-root`, and
    /// canonicalized: the config as it is planned, recorded and mounted into. Canonical roots
    /// mean a symlinked sandbox cannot be re-pointed between this check and the mounts.
    ///
    /// A sandbox must be an absolute, existing directory, not `/`, not inside the agent's
    /// work dir (berth's own records and volumes), and with `--sandbox-root` strictly under
    /// it; a rootfs must not be `/` (absolute container paths would land on the host's own)
    /// nor inside the work dir.
    fn admit(&self, cfg: &ContainerConfig) -> Result<ContainerConfig> {
        cfg.check()?;
        let canon = |key: &str, p: &Path| -> Result<PathBuf> {
            std::fs::canonicalize(p)
                .map_err(|e| cfg_err(format!("{key} {}: cannot resolve: {e}", p.display())))
        };
        let work = std::fs::canonicalize(&self.work_dir).unwrap_or_else(|_| self.work_dir.clone());
        let mut out = cfg.clone();
        out.sandbox = canon("sandbox", &cfg.sandbox)?;
        out.rootfs = cfg
            .rootfs
            .as_deref()
            .map(|r| canon("rootfs", r))
            .transpose()?;
        for (key, dir) in std::iter::once(("sandbox", &out.sandbox))
            .chain(out.rootfs.iter().map(|r| ("rootfs", r)))
        {
            if dir.parent().is_none() {
                return Err(cfg_err(format!(
                    "{key} must not be the host's root directory"
                )));
            }
            if dir.starts_with(&work) {
                return Err(cfg_err(format!(
                    "{key} {} is inside the agent's work dir {}",
                    dir.display(),
                    work.display()
                )));
            }
        }
        if let Some(root) = &self.policy.sandbox_root {
            let real = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            if out.sandbox == real || !out.sandbox.starts_with(&real) {
                return Err(cfg_err(format!(
                    "sandbox {} is not under the sandbox root {} (--sandbox-root)",
                    out.sandbox.display(),
                    real.display()
                )));
            }
        }
        Ok(out)
    }

    /// [`Isolator::plan`] with the admitted config it planned.
    pub(crate) fn plan_admitted(
        &self,
        cfg: &ContainerConfig,
    ) -> Result<(ContainerConfig, Vec<Planned>)> {
        let cfg = self.admit(cfg)?;
        let plan = self.plan_checked(&cfg)?;
        Ok((cfg, plan))
    }

    /// The parent of a nested container with `PARENT` sandbox paths, from the parent's own
    /// record: it must be prepared on this agent (not preparing, not cleaning up), and a
    /// sandbox the config names for it must be the one it was prepared with. `None` when
    /// no volume needs the parent.
    ///
    /// # Errors
    /// [`ContainerError::ParentNotReady`], [`ContainerError::Config`] (another sandbox).
    pub(crate) fn admit_parent(&self, cfg: &ContainerConfig) -> Result<Option<ParentPlan>> {
        let Some(parent) = &cfg.parent else {
            return Ok(None);
        };
        if !cfg.volumes.iter().any(sources::is_parent) {
            return Ok(None);
        }
        let not_ready = |reason: &str| ContainerError::ParentNotReady {
            container: cfg.container_id.clone(),
            parent: parent.container_id.clone(),
            reason: reason.to_owned(),
        };
        let rec = self
            .records
            .load(&parent.container_id)?
            .ok_or_else(|| not_ready("not prepared on this agent (prepare the parent first)"))?;
        if rec.state != RecordState::Preparing {
            return Err(not_ready("cleaning up"));
        }
        if self
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&parent.container_id)
        {
            return Err(not_ready("still preparing"));
        }
        if let Some(given) = &parent.sandbox {
            let real = std::fs::canonicalize(given).map_err(|e| {
                cfg_err(format!(
                    "parent.sandbox {}: cannot resolve: {e}",
                    given.display()
                ))
            })?;
            if real != rec.sandbox {
                return Err(cfg_err(format!(
                    "parent.sandbox {} is not the sandbox {} parent container {} was prepared with",
                    real.display(),
                    rec.sandbox.display(),
                    parent.container_id
                )));
            }
        }
        Ok(Some(ParentPlan {
            container_id: parent.container_id.clone(),
            sandbox: rec.sandbox,
        }))
    }

    fn plan_checked(&self, cfg: &ContainerConfig) -> Result<Vec<Planned>> {
        let parent = self.admit_parent(cfg)?;
        let cx = PlanCx {
            cfg,
            backends: &self.backends,
            policy: &self.policy,
            parent: parent.as_ref(),
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
        sources::secret::check_total(id, &plan)?;
        // Who the task runs as: the sandbox's owner (Mesos gives fresh volumes to that user;
        // a fresh directory of a PARENT sandbox path to the parent sandbox's owner).
        let owner_of = |dir: &Path| {
            std::fs::metadata(dir).ok().map(|m| {
                use std::os::unix::fs::MetadataExt as _;
                (m.uid(), m.gid())
            })
        };
        let owner = owner_of(&cfg.sandbox);
        let parent_owner = parent.as_ref().and_then(|p| owner_of(&p.sandbox));
        for p in &mut plan {
            p.sandbox_owner = match &p.entry.source {
                Source::SandboxPath {
                    parent: Some(_), ..
                } => parent_owner,
                _ => owner,
            };
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
