//! `SECRET` volumes (Mesos's `volume/secret` isolator): the secret in a file on a tmpfs of the
//! container's own, bound read-only at the container path as a file.
//!
//! - `VALUE` secrets carry their bytes in the config; `REFERENCE` secrets are read at plan
//!   time from `--secret-dir`: `<dir>/<name>`, or `<dir>/<name>/<key>` when the reference has
//!   a key (the layout of the CSI secrets resolver), each one path component (no `/`, not `.`
//!   or `..`, no NUL or control character), the last opened without following a symlink, a
//!   regular file of at most [`MAX_SECRET_BYTES`].
//! - The tmpfs is `<work_dir>/containers-secrets/<id>` (mode 0700, `nosuid,nodev,noexec`,
//!   at most [`TMPFS_BYTES`]), mounted after the container's `preparing` record is durable;
//!   each secret is a file there named by its volume's index, mode 0400, owned by the task's
//!   user (the sandbox's owner). The bind is read-only whatever the volume's mode.
//! - The value lives in memory ([`SecretBytes`]: redacted in `Debug`, zeroed on drop) and on
//!   that tmpfs only: never in a record, an error or a log line. Records name the file.
//! - The tmpfs goes (unmounted, its directory removed) when the container is cleaned up,
//!   including by recovery after a crash at any point of its prepare; recovery also sweeps a
//!   tmpfs whose container has no record nor quarantine.
//!
//! Where berth differs from Mesos: Mesos writes the secret under the agent's runtime dir and
//! moves it into a ramfs inside the container's mount namespace with the default file mode;
//! berth, working from outside the container, keeps it on a size-limited tmpfs under the work
//! dir, mode 0400 for the task's user, and refuses a secret too large instead of filling RAM.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use berth_mount::{MountAttrs, UnmountOptions};
use berth_resources::proto;
use berth_resources::proto::secret;

use super::{Acquire, Backends, BoxFuture, PlanCx, Planned, Source, SourceKind, VolumeEntry};
use crate::container::error::{Result, io_err, mount_err, vol_err};
use crate::container::prepare::bind_opts;

/// The largest secret (Kubernetes's limit for one secret, too).
pub const MAX_SECRET_BYTES: u64 = 1 << 20;

/// The size limit of a container's secrets tmpfs.
pub const TMPFS_BYTES: u64 = 16 << 20;

/// The most a container's secrets may take together (the rest of [`TMPFS_BYTES`] is the
/// file system's own room).
const MAX_TOTAL_BYTES: u64 = 8 << 20;

/// Where a container's secrets tmpfs is mounted.
pub(crate) fn dir_of(work_dir: &Path, id: &str) -> PathBuf {
    secrets_root(work_dir).join(id)
}

/// `<work_dir>/containers-secrets`.
pub(crate) fn secrets_root(work_dir: &Path) -> PathBuf {
    work_dir.join("containers-secrets")
}

/// A secret's bytes: never printed, zeroed when dropped.
#[derive(Clone, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        for b in &mut self.0 {
            *b = 0;
        }
        std::hint::black_box(&self.0);
    }
}

/// Plans `SECRET` volume number `index`: the secret resolved (a reference read from
/// `--secret-dir`), the file named, nothing written.
pub(super) fn plan(
    cx: &PlanCx<'_>,
    index: usize,
    v: &proto::Volume,
    s: &proto::volume::Source,
) -> Result<Planned> {
    let name = format!("secret volume {}", v.container_path);
    let sec = s
        .secret
        .as_ref()
        .ok_or_else(|| cx.err(&name, "SECRET without secret"))?;
    let bytes = match (sec.r#type(), &sec.value, &sec.reference) {
        (secret::Type::Value, Some(value), None) => value.data.clone(),
        (secret::Type::Reference, None, Some(r)) => {
            let dir = cx.backends.secret_dir.as_deref().ok_or_else(|| {
                cx.err(&name, "REFERENCE secrets need the isolator's --secret-dir")
            })?;
            read_reference(dir, &r.name, r.key.as_deref())
                .map_err(|reason| cx.err(&name, reason))?
        }
        (secret::Type::Value | secret::Type::Reference, _, _) => {
            return Err(cx.err(
                &name,
                "a VALUE secret needs value (and no reference), a REFERENCE secret reference (and no value)",
            ));
        }
        (secret::Type::Unknown, _, _) => {
            return Err(cx.err(&name, "secret type must be VALUE or REFERENCE"));
        }
    };
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(cx.err(
            &name,
            format!("the secret is larger than {MAX_SECRET_BYTES} bytes"),
        ));
    }
    let (root, rel) = cx.place(&name, &v.container_path)?;
    let mut p = Planned::new(VolumeEntry {
        name,
        source: Source::Secret {
            dir: dir_of(&cx.backends.work_dir, cx.id()),
            file: index.to_string(),
        },
        root,
        path_in_root: rel,
        read_only: true,
        bind: true,
    });
    p.secret = Some(SecretBytes::new(bytes));
    Ok(p)
}

/// The secrets of one plan together fit the tmpfs.
pub(crate) fn check_total(id: &str, plan: &[Planned]) -> Result<()> {
    let total: u64 = plan
        .iter()
        .filter_map(|p| p.secret.as_ref())
        .map(|s| s.bytes().len() as u64)
        .sum();
    if total > MAX_TOTAL_BYTES {
        return Err(vol_err(
            id,
            "secret volumes",
            format!("the container's secrets take more than {MAX_TOTAL_BYTES} bytes together"),
        ));
    }
    Ok(())
}

/// Reads `<dir>/<name>` (or `<dir>/<name>/<key>`): names confined to one component, the last
/// not a symlink, a regular file of at most [`MAX_SECRET_BYTES`]. Errors name the reference,
/// never the content.
fn read_reference(
    dir: &Path,
    name: &str,
    key: Option<&str>,
) -> std::result::Result<Vec<u8>, String> {
    let name_ok = berth_mount::names::validate_component(name)
        .map_err(|e| format!("secret reference name {name:?}: {e}"))?;
    let mut path = dir.join(name_ok);
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        let key_ok = berth_mount::names::validate_component(key)
            .map_err(|e| format!("secret reference {name:?} key {key:?}: {e}"))?;
        path.push(key_ok);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| format!("secret reference {name:?}: open {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("secret reference {name:?}: stat {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "secret reference {name:?}: {} is not a regular file",
            path.display()
        ));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "secret reference {name:?}: {} is larger than {MAX_SECRET_BYTES} bytes",
            path.display()
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("secret reference {name:?}: read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "secret reference {name:?}: {} is larger than {MAX_SECRET_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

/// Makes `dir` (and its parent), mode 0700, and mounts the container's secrets tmpfs on it
/// unless one is mounted there already (an earlier secret of the same prepare).
fn ensure_tmpfs(cx: &Acquire<'_>, dir: &Path) -> Result<()> {
    let v = &cx.planned.entry;
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700);
    for d in [dir.parent().unwrap_or(dir), dir] {
        match b.create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta =
                    std::fs::symlink_metadata(d).map_err(io_err(cx.id, "stat secrets dir", d))?;
                if !meta.is_dir() {
                    return Err(vol_err(
                        cx.id,
                        &v.name,
                        format!("{} is not a directory", d.display()),
                    ));
                }
            }
            Err(e) => return Err(io_err(cx.id, "create secrets dir", d)(e)),
        }
    }
    let merr = |e| mount_err(cx.id, &v.name, e);
    if cx.mounter.mount_table().map_err(merr)?.is_mount_point(dir) {
        return Ok(());
    }
    let attrs = MountAttrs {
        read_only: false,
        nosuid: true,
        nodev: true,
        noexec: true,
    };
    let data = format!("mode=0700,size={TMPFS_BYTES},nr_inodes=4096");
    cx.mounter
        .mount_filesystem(Path::new("tmpfs"), dir, "tmpfs", attrs, Some(&data))
        .map_err(merr)?;
    // Never write a secret anywhere but on that tmpfs.
    if !cx.mounter.mount_table().map_err(merr)?.is_mount_point(dir) {
        return Err(vol_err(
            cx.id,
            &v.name,
            format!("the secrets tmpfs is not mounted at {}", dir.display()),
        ));
    }
    Ok(())
}

/// Writes the secret to a new file, mode 0400, owned by `owner`.
fn write_secret(
    id: &str,
    v: &VolumeEntry,
    path: &Path,
    value: &SecretBytes,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path).map_err(io_err(id, "remove stale secret file", path))?;
            open()
        }
        other => other,
    }
    .map_err(io_err(id, "create secret file", path))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| {
            vol_err(
                id,
                &v.name,
                format!("chown {} to {uid}:{gid}: {e}", path.display()),
            )
        })?;
    }
    file.write_all(value.bytes())
        .map_err(io_err(id, "write secret file", path))?;
    Ok(())
}

/// The secret kind.
pub(super) struct SecretKind;

impl SourceKind for SecretKind {
    fn acquire<'a>(
        &'a self,
        cx: Acquire<'a>,
    ) -> BoxFuture<'a, Result<(PathBuf, berth_mount::BindOptions)>> {
        Box::pin(async move {
            let v = &cx.planned.entry;
            let Source::Secret { dir, file } = &v.source else {
                return Err(vol_err(cx.id, &v.name, "not a secret"));
            };
            let value = cx
                .planned
                .secret
                .as_ref()
                .ok_or_else(|| vol_err(cx.id, &v.name, "the secret was not resolved"))?;
            berth_mount::names::validate_component(file)
                .map_err(|e| mount_err(cx.id, &v.name, e))?;
            ensure_tmpfs(&cx, dir)?;
            let path = dir.join(file);
            write_secret(cx.id, v, &path, value, cx.planned.sandbox_owner)?;
            Ok((path, bind_opts(true)))
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
                Source::Secret { dir, file } => Some(dir.join(file)),
                _ => None,
            }
        })
    }
}

/// Takes a container's secrets tmpfs down: every mount at or below `dir` unmounted (verified),
/// then whatever is left in the directory (only files of ours, were the tmpfs never
/// mounted) removed, and the directory. Idempotent.
pub(crate) fn remove_tmpfs(mounter: &dyn berth_mount::Mounter, id: &str, dir: &Path) -> Result<()> {
    let opts = UnmountOptions {
        detach_fallback: true,
        ..UnmountOptions::default()
    };
    mounter
        .unmount_all_at_or_below(dir, &opts)
        .map_err(|e| mount_err(id, "secrets tmpfs", e))?;
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(id, "list secrets dir", dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(id, "list secrets dir", dir))?;
        let p = e.path();
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(id, "remove secret file", &p)(err)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(id, "remove secrets dir", dir)(e)),
    }
}

/// Whether a record's volume is a secret.
pub(crate) fn is_secret(v: &VolumeEntry) -> bool {
    matches!(v.source, Source::Secret { .. })
}
