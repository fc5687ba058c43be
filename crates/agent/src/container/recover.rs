//! `recover`: after a restart, every record judged against one consistent mount table.

use std::collections::BTreeSet;

use super::error::{ContainerError, Result};
use super::record::RecordState;
use super::{Isolator, Roots};

/// What [`Isolator::recover`] did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Live containers, kept as they are (a live container is never torn down by recovery).
    pub kept: Vec<String>,
    /// Of `kept`, those with a volume not mounted at its container path now (an interrupted
    /// prepare, or a task that moved a mount point): reported, left to their cleanup.
    pub incomplete: Vec<String>,
    /// Known orphans left untouched.
    pub orphans_kept: Vec<String>,
    /// Containers whose volumes were torn down (dead, interrupted prepare, interrupted cleanup).
    pub cleaned: Vec<String>,
    /// Dead containers kept because live nested containers still bind from their sandbox
    /// (`PARENT` sandbox paths); cleaned up once those are.
    pub kept_for_children: Vec<String>,
    /// Secrets tmpfs mounts of containers without a record or quarantine, taken down.
    pub secrets_swept: Vec<String>,
    /// Records quarantined by this recovery (moved to `<work_dir>/containers-quarantine/`).
    pub quarantined: Vec<String>,
    /// Containers quarantined earlier: everything they hold (binds, CSI publications, Docker
    /// mounts) is kept, as for a live container, until `cleanup --force` releases them.
    pub quarantine_kept: Vec<String>,
    /// CSI volumes recovered, per plugin (records read).
    pub csi_records: usize,
    /// Errors; those records stay for the next attempt.
    pub errors: Vec<ContainerError>,
}

impl Isolator {
    /// After a restart: every record is read; `live` containers whose volumes are all in place
    /// are kept, an interrupted prepare of a live container is rolled back, `orphans` are
    /// left untouched until their cleanup arrives, every other container is cleaned up, and a
    /// corrupt record is quarantined. Then the CSI plugins and Docker volume drivers recover
    /// with the remaining containers as their live consumers — quarantined containers among
    /// them, this time and every later time, until `cleanup --force` ends their quarantine.
    ///
    /// # Errors
    /// [`ContainerError::Io`] when the records directory cannot be listed; per-container
    /// failures are in the report.
    pub async fn recover(&self, live: &[String], orphans: &[String]) -> Result<RecoveryReport> {
        let _ops = self.ops.write().await;
        let mut report = RecoveryReport::default();
        let live: std::collections::HashSet<&str> = live.iter().map(String::as_str).collect();
        let orphans: std::collections::HashSet<&str> = orphans.iter().map(String::as_str).collect();
        self.records.remove_stale_temps();
        let names = self.records.ids()?;
        let table = self
            .mounter
            .mount_table()
            .map_err(|source| ContainerError::Mount {
                container: String::new(),
                volume: "mount table".to_owned(),
                source: Box::new(source),
            })?;
        let mut remaining: BTreeSet<String> = BTreeSet::new();
        // Nested containers before their parents, so a dead pod's tasks are cleaned up
        // before the pod's own cleanup looks for them.
        let mut loaded: Vec<(String, Result<Option<super::ContainerRecord>>)> = names
            .into_iter()
            .map(|n| {
                let r = self.records.load(&n);
                (n, r)
            })
            .collect();
        let parents: std::collections::HashMap<String, String> = loaded
            .iter()
            .filter_map(|(n, r)| {
                let p = r.as_ref().ok()?.as_ref()?.parent()?;
                Some((n.clone(), p.to_owned()))
            })
            .collect();
        let depth = |n: &str| {
            let mut d = 0usize;
            let mut at = n;
            while let Some(p) = parents.get(at) {
                d += 1;
                at = p;
                if d > parents.len() {
                    break;
                }
            }
            d
        };
        loaded.sort_by_cached_key(|(n, _)| std::cmp::Reverse(depth(n)));
        for (name, loaded) in loaded {
            let rec = match loaded {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    // Its volumes are unknown: its CSI and Docker consumers stay, and nothing
                    // of it is torn down. A record that cannot be parsed is moved aside; one
                    // that cannot be read (I/O) stays for the next attempt.
                    if matches!(e, ContainerError::Record { .. }) {
                        self.records.quarantine(&name);
                        report.quarantined.push(name.clone());
                    }
                    remaining.insert(name);
                    report.errors.push(e);
                    continue;
                }
            };
            let _g = self.lock_id(&name).await;
            if orphans.contains(name.as_str()) {
                report.orphans_kept.push(name.clone());
                remaining.insert(name);
                continue;
            }
            let mut roots = Roots::default();
            let complete = rec.state == RecordState::Preparing
                && rec.volumes.iter().all(|v| {
                    !v.bind
                        || Self::resolve_target(&mut roots, v)
                            .is_some_and(|t| table.is_mount_point(&t))
                });
            if live.contains(name.as_str()) {
                if !complete {
                    tracing::warn!(container = %name, state = ?rec.state, "live container with a volume not at its container path; kept for its cleanup");
                    report.incomplete.push(name.clone());
                }
                report.kept.push(name.clone());
                remaining.insert(name);
                continue;
            }
            let mut rec = rec;
            match self.cleanup_locked(&mut rec).await {
                Ok(()) => report.cleaned.push(name),
                Err(ContainerError::HasChildren { children, .. }) => {
                    tracing::warn!(container = %name, children = ?children, "dead container kept: live nested containers bind from its sandbox");
                    report.kept_for_children.push(name.clone());
                    remaining.insert(name);
                }
                Err(e) => {
                    remaining.insert(name);
                    report.errors.push(e);
                }
            }
        }
        // A quarantined container's volumes are unknown: it keeps every consumer, in this and
        // every later recovery, until `cleanup --force` ends its quarantine.
        for (id, _) in self.records.quarantined() {
            if remaining.insert(id.clone()) {
                report.quarantine_kept.push(id);
            }
        }
        report.csi_records += self
            .release_consumers_but(&remaining, &mut report.errors)
            .await;
        self.sweep_secrets(&remaining, &mut report);
        Ok(report)
    }

    /// Takes down every secrets tmpfs (`<work_dir>/containers-secrets/<id>`) whose container
    /// has neither a record nor a quarantine (in `remaining`): its secrets are no one's.
    fn sweep_secrets(&self, remaining: &BTreeSet<String>, report: &mut RecoveryReport) {
        let root = super::sources::secret::secrets_root(&self.work_dir);
        let rd = match std::fs::read_dir(&root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                report
                    .errors
                    .push(super::error::io_err("", "list secrets dir", &root)(e));
                return;
            }
        };
        for entry in rd.flatten() {
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            if remaining.contains(&id) || super::config::check_id(&id).is_err() {
                continue;
            }
            let dir = entry.path();
            match super::sources::secret::remove_tmpfs(self.mounter.as_ref(), &id, &dir) {
                Ok(()) => report.secrets_swept.push(id),
                Err(e) => report.errors.push(e),
            }
        }
    }

    /// Every container that may hold a CSI or Docker consumer: those with a record (readable
    /// or not) and the quarantined ones.
    pub(crate) fn consumer_holders(&self) -> Result<BTreeSet<String>> {
        let mut out: BTreeSet<String> = self.records.ids()?.into_iter().collect();
        out.extend(self.records.quarantined().into_iter().map(|(id, _)| id));
        Ok(out)
    }

    /// The plugins' recovery with `remaining` as the live consumers: every CSI and Docker
    /// consumer not in it is released. The number of CSI records read; errors are appended.
    pub(crate) async fn release_consumers_but(
        &self,
        remaining: &BTreeSet<String>,
        errors: &mut Vec<ContainerError>,
    ) -> usize {
        let mut csi_records = 0;
        if let Some(docker) = &self.backends.docker {
            match docker.recover(remaining).await {
                Ok((_records, errs)) => {
                    errors.extend(errs.into_iter().map(|reason| ContainerError::Volume {
                        container: String::new(),
                        volume: "Docker volume recovery".to_owned(),
                        reason,
                    }));
                }
                Err(e) => errors.push(ContainerError::Dvdi {
                    container: String::new(),
                    volume: "Docker volume recovery".to_owned(),
                    source: Box::new(e),
                }),
            }
        }
        if let Some(csi) = &self.backends.csi {
            let alive = |c: &str| remaining.contains(c);
            for (_plugin, outcome) in csi.recover(Some(&alive)).await {
                match outcome {
                    Ok(r) => {
                        csi_records += r.records;
                        errors.extend(r.errors.into_iter().map(|e| ContainerError::Csi {
                            container: String::new(),
                            volume: "CSI recovery".to_owned(),
                            source: Box::new(e),
                        }));
                    }
                    Err(e) => errors.push(ContainerError::Csi {
                        container: String::new(),
                        volume: "CSI recovery".to_owned(),
                        source: Box::new(e),
                    }),
                }
            }
        }
        csi_records
    }
}
