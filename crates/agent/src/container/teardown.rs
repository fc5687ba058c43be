//! Teardown: `cleanup` and the undo of a failed prepare. Every mount of the container is
//! unmounted through its root's descriptor (nested first), moved mounts of ours are found by
//! their source's mountinfo signature, and every source is released; the record goes last.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use berth_mount::path::ResolveMode;
use berth_mount::path::Resolver;
use berth_mount::{MountTable, UnmountOptions, Unmounted};

use super::error::{ContainerError, Result};
use super::record::{ContainerRecord, HookPoint, RecordState};
use super::sources::{self, VolumeEntry};
use super::{Isolator, Roots};

impl Isolator {
    /// The host path a volume's container path resolves to now (confined to its root), if
    /// it exists.
    /// A container path that leads to the root itself (a symlink to `/`) has no target:
    /// nothing is ever mounted over a whole root.
    pub(crate) fn resolve_target(roots: &mut Roots, v: &VolumeEntry) -> Option<PathBuf> {
        let root = roots.get(&v.root).ok()?;
        let (_fd, path) = Resolver {
            mode: ResolveMode::InRoot,
            force_walk: false,
        }
        .open_in_with_path(&root, &v.path_in_root)
        .ok()?;
        (root.host_path().ok()? != path).then_some(path)
    }

    /// Unmounts every volume of the record (nested first) and releases its sources. Keeps
    /// going after an error; returns the first.
    pub(crate) async fn teardown(&self, rec: &ContainerRecord) -> Result<()> {
        let id = rec.container_id.as_str();
        let mut first: Option<ContainerError> = None;
        let mount_err = |volume: &str, source: berth_mount::MountError| ContainerError::Mount {
            container: id.to_owned(),
            volume: volume.to_owned(),
            source: Box::new(source),
        };
        let read_table = || {
            self.mounter
                .mount_table()
                .map_err(|e| mount_err("mount table", e))
        };
        let opts = UnmountOptions {
            detach_fallback: true,
            ..UnmountOptions::default()
        };
        // 1. Each volume at its container path (nested first), through the root's descriptor:
        //    a task swapping a directory on the path for a symlink cannot redirect the unmount
        //    outside its sandbox or rootfs. A bind not found mounted at its container path
        //    (moved by the task, or an interrupted prepare) sends step 2 to the mount table.
        let mut failed = BTreeSet::new();
        let mut missing = false;
        let mut opened = Roots::default();
        for (index, v) in rec.volumes.iter().enumerate().rev() {
            if v.bind {
                match Self::resolve_target(&mut opened, v) {
                    None => missing = true,
                    Some(target) => {
                        match self.unmount_under(&mut opened, &v.root, &target, &opts) {
                            Ok(Unmounted::NotMounted) => missing = true,
                            Ok(_) => {}
                            Err(source) => {
                                failed.insert(index);
                                first.get_or_insert(mount_err(&v.name, source));
                                continue;
                            }
                        }
                    }
                }
            }
            self.hook(HookPoint::step(&[id], "unmounted", index));
        }
        // 2. Whatever of ours is still mounted in the container's sandbox or rootfs (a mount
        //    point the task renamed, or one reached through a replaced symlink), found by its
        //    source's signature. Nothing else there is touched.
        let roots: BTreeSet<&Path> = std::iter::once(rec.sandbox.as_path())
            .chain(rec.rootfs.as_deref())
            .collect();
        let below_roots = |table: &MountTable,
                           signatures: Option<&BTreeSet<(u32, u32, PathBuf)>>|
         -> Vec<PathBuf> {
            roots
                .iter()
                .flat_map(|root| table.unmount_order(root))
                .filter(|e| {
                    e.mount_point() != rec.sandbox && Some(e.mount_point()) != rec.rootfs.as_deref()
                })
                .filter(|e| {
                    signatures
                        .is_none_or(|s| s.contains(&(e.major(), e.minor(), e.root().to_path_buf())))
                })
                .map(|e| e.mount_point().to_path_buf())
                .collect()
        };
        // Mounts in the roots after step 1. In the common case every bind was unmounted where
        // it belongs, and neither the mount table nor signatures are needed.
        let table = if missing || !failed.is_empty() {
            Some(read_table()?)
        } else {
            None
        };
        let mut signatures = BTreeSet::new();
        let mut swept = Vec::new();
        if let Some(table) = table.as_ref().filter(|t| !below_roots(t, None).is_empty()) {
            // What each bind looks like in mountinfo (device and root of its source; the
            // sources are not released yet): how a mount of ours is told from anyone else's,
            // even where the task moved or replaced its mount point.
            for v in rec.volumes.iter().filter(|v| v.bind) {
                if let Some(src) = self.source_path(id, v).await
                    && let Some(sig) = signature(table, &src)
                {
                    signatures.insert(sig);
                }
            }
            swept = below_roots(table, Some(&signatures));
        }
        for mp in &swept {
            tracing::warn!(container = id, mount_point = %mp.display(), "a mount of the container's moved from its container path; unmounting it");
            let root = roots
                .iter()
                .filter(|r| mp.starts_with(r))
                .max_by_key(|r| r.as_os_str().len());
            let Some(root) = root else { continue };
            if let Err(source) = self.unmount_under(&mut opened, root, mp, &opts) {
                first.get_or_insert(mount_err("moved mount", source));
            }
        }
        if !swept.is_empty()
            && let Some(mp) = below_roots(&read_table()?, Some(&signatures)).first()
        {
            // Never report success, nor drop the record, while one of ours is mounted.
            return Err(first.unwrap_or_else(|| {
                mount_err(
                    "moved mount",
                    berth_mount::MountError::StillMounted {
                        target: mp.clone(),
                        mount_id: 0,
                    },
                )
            }));
        }
        // 3. Release the sources of the volumes that are unmounted.
        for (index, v) in rec.volumes.iter().enumerate().rev() {
            if failed.contains(&index) {
                continue;
            }
            if let Err(e) = self.release(id, v).await {
                first.get_or_insert(e);
                continue;
            }
            self.hook(HookPoint::step(&[id], "released", index));
        }
        // 4. The secrets tmpfs, once no bind of a secret is left: the secrets go with it.
        if rec.volumes.iter().any(sources::secret::is_secret)
            && !failed
                .iter()
                .any(|i| rec.volumes.get(*i).is_some_and(sources::secret::is_secret))
        {
            let dir = sources::secret::dir_of(&self.work_dir, id);
            if let Err(e) = sources::secret::remove_tmpfs(self.mounter.as_ref(), id, &dir) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Unmounts the mount point at host path `target` under `root` through the root's
    /// descriptor ([`Mounter::unmount_in_root`]).
    fn unmount_under(
        &self,
        opened: &mut Roots,
        root: &Path,
        target: &Path,
        opts: &UnmountOptions,
    ) -> berth_mount::Result<Unmounted> {
        let dir = opened.get(root)?;
        let rel = dir
            .host_path()
            .ok()
            .and_then(|h| target.strip_prefix(h).ok())
            .or_else(|| target.strip_prefix(root).ok())
            .ok_or_else(|| berth_mount::MountError::Escape {
                root: root.to_path_buf(),
                path: target.to_path_buf(),
                reason: "the mount point is not under the root",
            })?;
        self.mounter.unmount_in_root(&dir, rel, opts)
    }

    /// The host path a volume's bind came from (for its mountinfo signature).
    async fn source_path(&self, id: &str, v: &VolumeEntry) -> Option<PathBuf> {
        let raw = sources::kind(&v.source)
            .source_path(&self.backends, id, v)
            .await?;
        Some(std::fs::canonicalize(&raw).unwrap_or(raw))
    }

    /// Gives back a volume's source (see [`sources::SourceKind::release`]).
    async fn release(&self, id: &str, v: &VolumeEntry) -> Result<()> {
        sources::kind(&v.source)
            .release(&self.backends, id, v)
            .await
    }

    /// Undoes exactly what prepare did: one fsync'd `cleaning` intent, every mount of the
    /// container unmounted (nested first), every source released (CSI consumer removed), the
    /// record removed. An unknown container is a no-op. On error the record stays in
    /// `cleaning` and [`Isolator::recover`] (or another cleanup) finishes it.
    ///
    /// A quarantined container (its record was corrupt) is cleaned up from what can still be
    /// read of its record: when it parses as a record once its id and schema version are
    /// taken as given, and names an absolute sandbox other than `/`, it is written back as a
    /// `cleaning` intent, its quarantine ends, and it is torn down as any other. When nothing
    /// usable can be read, berth cannot tell which mounts are its own, and the cleanup is
    /// refused with [`ContainerError::Quarantined`] (`FAILED_PRECONDITION`): releasing its
    /// plugin volumes under binds that may still be live is the operator's call
    /// ([`Isolator::force_cleanup`]).
    ///
    /// # Errors
    /// The first failing volume's error; [`ContainerError::Quarantined`].
    pub async fn cleanup(&self, id: &str) -> Result<()> {
        self.cleanup_with(id, false).await
    }

    /// `cleanup --force`: [`Isolator::cleanup`], and for a quarantined container whose
    /// record cannot be read at all (a corrupt record found now is quarantined first): its
    /// quarantine ends (the file is renamed `<file>.released`, kept), and every CSI and
    /// Docker consumer of it is released through the plugins' recovery, with every other
    /// container that has a record or a quarantine kept. Its binds cannot be located without
    /// a record: they are not unmounted (a released plugin volume whose bind is still in a
    /// sandbox is the operator's to unmount).
    ///
    /// # Errors
    /// As [`Isolator::cleanup`], and the plugins' errors.
    pub async fn force_cleanup(&self, id: &str) -> Result<()> {
        self.cleanup_with(id, true).await
    }

    async fn cleanup_with(&self, id: &str, force: bool) -> Result<()> {
        {
            let _ops = self.ops.read().await;
            let _g = self.lock_id(id).await;
            match self.records.load(id) {
                Ok(Some(mut rec)) => return self.cleanup_locked(&mut rec).await,
                Ok(None) => {}
                Err(ContainerError::Record { .. }) if force => self.records.quarantine(id),
                Err(e) => return Err(e),
            }
            let files = self.records.quarantined_files(id);
            let Some(first) = files.first() else {
                return Ok(());
            };
            if let Some(mut rec) = files.iter().rev().find_map(|f| readable(id, f)) {
                tracing::warn!(
                    container = id,
                    "cleaning up a quarantined container from its readable record"
                );
                rec.state = RecordState::Cleaning;
                self.records.save(&rec)?;
                self.records.release_quarantine(id, &files)?;
                return self.cleanup_locked(&mut rec).await;
            }
            if !force {
                return Err(ContainerError::Quarantined {
                    container: id.to_owned(),
                    path: first.clone(),
                    what: "cleanup cannot tell which mounts are its own",
                });
            }
        }
        // Forced, without a record: judged against every record and quarantine at once.
        let _ops = self.ops.write().await;
        let _g = self.lock_id(id).await;
        let files = self.records.quarantined_files(id);
        if files.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            container = id,
            "forced cleanup of a quarantined container: releasing its CSI and Docker consumers; its binds, if any, are not located"
        );
        self.records.release_quarantine(id, &files)?;
        let holders = self.consumer_holders()?;
        let mut errors = Vec::new();
        self.release_consumers_but(&holders, &mut errors).await;
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    pub(crate) async fn cleanup_locked(&self, rec: &mut ContainerRecord) -> Result<()> {
        {
            // Under the family lock: no nested container's prepare passes between the check
            // and the `cleaning` record (after which it finds the parent cleaning up).
            let _family = self.family.lock().unwrap_or_else(PoisonError::into_inner);
            let children = self.children_holding(rec)?;
            if !children.is_empty() {
                return Err(ContainerError::HasChildren {
                    container: rec.container_id.clone(),
                    children,
                });
            }
            if rec.state != RecordState::Cleaning {
                rec.state = RecordState::Cleaning;
                self.records.save(rec)?;
            }
        }
        self.hook(HookPoint::intent(&[&rec.container_id], "cleaning"));
        if let Err(e) = self.teardown(rec).await {
            rec.last_error = Some(e.to_string());
            if let Err(w) = self.records.save(rec) {
                tracing::warn!(container = %rec.container_id, error = %w, "cannot record the cleanup error");
            }
            return Err(e);
        }
        self.records.remove(&rec.container_id)
    }
}

impl Isolator {
    /// The nested containers whose records hold `PARENT` sandbox paths in `rec`'s sandbox;
    /// and, while a quarantined record (whose volumes are unknown) exists, every mount the
    /// mount table shows of something in that sandbox outside the container's own sandbox
    /// and rootfs (`mount at <path>`): fail closed.
    fn children_holding(&self, rec: &ContainerRecord) -> Result<Vec<String>> {
        let mut out = self.records.children_of(&rec.container_id)?;
        if out.is_empty()
            && !self.records.quarantined().is_empty()
            && let Ok(table) = self.mounter.mount_table()
            && let Some((major, minor, root)) = signature(&table, &rec.sandbox)
        {
            for e in table.iter() {
                let mp = e.mount_point();
                if e.major() == major
                    && e.minor() == minor
                    && e.root().starts_with(&root)
                    && !mp.starts_with(&rec.sandbox)
                    && !rec.rootfs.as_deref().is_some_and(|r| mp.starts_with(r))
                {
                    out.push(format!("mount at {}", mp.display()));
                }
            }
        }
        Ok(out)
    }
}

/// How a bind mount of `source` appears in mountinfo: the device of the mount holding
/// `source` and the path of `source` inside that file system.
pub(crate) fn signature(table: &MountTable, source: &Path) -> Option<(u32, u32, PathBuf)> {
    // The deepest mount point holding `source`; of a stack on it, the top (listed last:
    // `max_by_key` returns the last of equal maxima).
    let holder = table
        .iter()
        .filter(|e| source.starts_with(e.mount_point()))
        .max_by_key(|e| e.mount_point().components().count())?;
    let rel = source.strip_prefix(holder.mount_point()).ok()?;
    let root = if rel.as_os_str().is_empty() {
        holder.root().to_path_buf()
    } else {
        holder.root().join(rel)
    };
    Some((holder.major(), holder.minor(), root))
}

/// What can be read of a quarantined record: the record, with its id and schema version taken
/// as given, when it parses and names an absolute sandbox other than `/`.
fn readable(id: &str, file: &Path) -> Option<ContainerRecord> {
    let bytes = std::fs::read(file).ok()?;
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let obj = value.as_object_mut()?;
    obj.insert("container_id".into(), id.into());
    obj.insert(
        "schema_version".into(),
        super::record::SCHEMA_VERSION.into(),
    );
    let rec: ContainerRecord = serde_json::from_value(value).ok()?;
    (rec.sandbox.is_absolute() && rec.sandbox.parent().is_some()).then_some(rec)
}
