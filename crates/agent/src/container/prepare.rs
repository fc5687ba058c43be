//! `prepare`: one fsync'd intent record, then every volume's source and bind mount; on any
//! failure everything done for the container is undone.

use std::sync::PoisonError;

use berth_mount::BindOptions;

use super::config::{ContainerConfig, check_id};
use super::error::{ContainerError, Result, mount_err};
use super::record::{ContainerRecord, HookPoint, RecordState, SCHEMA_VERSION};
use super::sources::{self, Acquire, Planned};
use super::{Isolator, Prepared, Roots};

impl Isolator {
    /// Prepares every volume of the container: one fsync'd intent record, then for each volume
    /// its source (CSI publish, sandbox directory) and its bind mount. If any volume fails,
    /// everything done for the container is undone and the error names the volume.
    ///
    /// # Errors
    /// [`ContainerError::AlreadyPrepared`], the plan's errors, and the failing volume's.
    pub async fn prepare(&self, cfg: &ContainerConfig) -> Result<Vec<Prepared>> {
        let id = check_id(&cfg.container_id)?.as_str().to_owned();
        let _ops = self.ops.read().await;
        let _g = self.lock_id(&id).await;
        // Held from the plan (which asks the agent whether it holds each persistent volume)
        // until the record is durable, so no resources change falls between them; taken last,
        // so nothing is awaited while it is held but the record's write.
        let gate = self.plan_gate.read().await;
        let (cfg, plan) = self.plan_admitted(cfg)?;
        if self.records.load(&id)?.is_some() {
            return Err(ContainerError::AlreadyPrepared { container: id });
        }
        if let Some(path) = self.records.quarantined_files(&id).into_iter().next() {
            return Err(ContainerError::Quarantined {
                container: id,
                path,
                what: "prepare refused",
            });
        }
        let rec = ContainerRecord {
            schema_version: SCHEMA_VERSION,
            container_id: id.clone(),
            state: RecordState::Preparing,
            sandbox: cfg.sandbox.clone(),
            rootfs: cfg.rootfs.clone(),
            volumes: plan.iter().map(|p| p.entry.clone()).collect(),
            last_error: None,
        };
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone());
        let out = self.prepare_locked(&rec, &plan, gate).await;
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        out
    }

    async fn prepare_locked(
        &self,
        rec: &ContainerRecord,
        plan: &[Planned],
        gate: tokio::sync::RwLockReadGuard<'_, ()>,
    ) -> Result<Vec<Prepared>> {
        let id = rec.container_id.as_str();
        self.save_intent(rec)?;
        drop(gate);
        self.hook(HookPoint::intent(&[id], "preparing"));
        let mut done = Vec::with_capacity(plan.len());
        let mut roots = Roots::default();
        for (index, p) in plan.iter().enumerate() {
            let v = &p.entry;
            match self.prepare_one(id, index, p, &mut roots).await {
                Ok(p) => done.push(p),
                Err(e) => {
                    tracing::warn!(container = id, volume = %v.name, error = %e, "prepare failed; undoing the container's volumes");
                    if let Err(undo) = self.teardown(rec).await {
                        tracing::warn!(container = id, error = %undo, "undo incomplete; the record stays for recovery");
                        let mut kept = rec.clone();
                        kept.state = RecordState::Cleaning;
                        kept.last_error = Some(undo.to_string());
                        if let Err(w) = self.records.save(&kept) {
                            tracing::warn!(container = id, error = %w, "cannot record the failed undo");
                        }
                        return Err(e);
                    }
                    self.records.remove(id)?;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Writes the `preparing` record; for a nested container with `PARENT` sandbox paths,
    /// under the family lock, after checking again that its parent is prepared with the
    /// sandbox planned (a parent's cleanup holds the same lock while it looks for nested
    /// containers and marks itself `cleaning`).
    fn save_intent(&self, rec: &ContainerRecord) -> Result<()> {
        let Some(parent) = rec.parent() else {
            return self.records.save(rec);
        };
        let _family = self.family.lock().unwrap_or_else(PoisonError::into_inner);
        let not_ready = |reason: &str| ContainerError::ParentNotReady {
            container: rec.container_id.clone(),
            parent: parent.to_owned(),
            reason: reason.to_owned(),
        };
        let planned = rec.volumes.iter().find_map(|v| match &v.source {
            super::sources::Source::SandboxPath {
                sandbox,
                parent: Some(_),
                ..
            } => Some(sandbox),
            _ => None,
        });
        match self.records.load(parent)? {
            None => {
                return Err(not_ready(
                    "not prepared on this agent (prepare the parent first)",
                ));
            }
            Some(p) if p.state != RecordState::Preparing => return Err(not_ready("cleaning up")),
            Some(p) if Some(&p.sandbox) != planned => {
                return Err(not_ready("prepared again with another sandbox"));
            }
            Some(_) => {}
        }
        if self
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(parent)
        {
            return Err(not_ready("still preparing"));
        }
        self.records.save(rec)
    }

    async fn prepare_one(
        &self,
        id: &str,
        index: usize,
        p: &Planned,
        roots: &mut Roots,
    ) -> Result<Prepared> {
        let v = &p.entry;
        let (source, opts) = sources::kind(&v.source)
            .acquire(Acquire {
                backends: &self.backends,
                id,
                planned: p,
                roots: &mut *roots,
                mounter: self.mounter.as_ref(),
            })
            .await?;
        self.hook(HookPoint::step(&[id], "source", index));
        if !v.bind {
            // The DVDI contract without a container path: the task uses the host mount point.
            return Ok(Prepared {
                name: v.name.clone(),
                target: source.clone(),
                source,
                read_only: v.read_only,
            });
        }
        let root = roots.get(&v.root).map_err(|e| mount_err(id, &v.name, e))?;
        let target = self
            .mounter
            .bind_into_dir(&source, &root, &v.path_in_root, &opts)
            .map_err(|e| mount_err(id, &v.name, e))?;
        self.hook(HookPoint::step(&[id], "mounted", index));
        Ok(Prepared {
            name: v.name.clone(),
            target,
            source,
            read_only: v.read_only,
        })
    }
}

/// Binds of persistent volumes, sandbox paths and host paths: recursive, read-only when
/// asked, and `rslave` — a mount made later inside one container's view (a nested volume) must
/// not propagate back into the volume's own directory or into other containers sharing it
/// (research `isolators.md` §7.5), while host-side unmounts still reach the container.
pub(crate) fn bind_opts(read_only: bool) -> BindOptions {
    let mut opts = if read_only {
        BindOptions::read_only()
    } else {
        BindOptions::default()
    };
    opts.propagation = Some(berth_mount::Propagation::Slave);
    opts
}
