//! Fakes, shipped next to the real thing (no root needed):
//!
//! - [`FakeSys`]: a small simulated kernel behind [`Sys`] — a mount list with ids, `ro` flags
//!   and stacking, `MS_REC` binds that copy submounts, `EBUSY` for a parent with submounts —
//!   whose answers can be scripted per call ([`Reply`]). It tests the engine's retry,
//!   fallback and verification logic.
//! - [`RecordingMounter`]: a [`Mounter`] that records every call ([`Recorded`]) and keeps a set
//!   of mount points, with injectable failures, for unit tests of callers (CSI, DVDI, agent).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::error::{MountError, Op, Result};
use crate::mountinfo::{MountTable, escape};
use crate::sys::{MountStat, SetAttr, Sys};
use crate::{BindOptions, MountAttrs, Mounter, Propagation, UnmountOptions, Unmounted};

/// A system call as [`FakeSys`] recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysCall {
    /// `mount(2)` (data is not recorded: it may hold secrets).
    Mount {
        /// Source.
        source: Option<PathBuf>,
        /// Target.
        target: PathBuf,
        /// Filesystem type.
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
    },
    /// `umount2(2)`.
    Umount2 {
        /// Target.
        target: PathBuf,
        /// Flags.
        flags: MntFlags,
    },
    /// `mount_setattr(2)`.
    MountSetattr {
        /// Path (empty with a descriptor).
        path: PathBuf,
        /// `AT_*` flags.
        flags: libc::c_uint,
        /// The attributes.
        attr: SetAttr,
    },
    /// `open_tree(2)`.
    OpenTree {
        /// Path.
        path: PathBuf,
    },
    /// `statx(STATX_MNT_ID)`.
    StatMount {
        /// Path.
        path: PathBuf,
    },
    /// A mountinfo read.
    MountTable,
    /// A pause between retries.
    Sleep(Duration),
}

/// Which system call a scripted [`Reply`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    /// `mount(2)`.
    Mount,
    /// `umount2(2)`.
    Umount2,
    /// `mount_setattr(2)`.
    MountSetattr,
    /// `statx`.
    StatMount,
}

/// A scripted answer, used once, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Fail with this errno, changing nothing.
    Err(Errno),
    /// Fail with this errno, but the effect happens anyway (e.g. a concurrent unmount took the
    /// mount away just before our `umount2`, which then answers `EINVAL`).
    ErrAfterEffect(Errno),
    /// Succeed without any effect (a lying kernel, to test verification).
    OkNoEffect,
}

#[derive(Debug, Clone)]
struct FakeMount {
    id: u64,
    mount_point: PathBuf,
    read_only: bool,
}

#[derive(Debug, Default)]
struct FakeState {
    mounts: Vec<FakeMount>,
    next_id: u64,
    script: HashMap<FakeOp, VecDeque<Reply>>,
    calls: Vec<SysCall>,
    stat_unsupported: bool,
    setattr_unsupported: bool,
}

/// The simulated kernel (see the module docs). Starts with only `/` (mount id 1) mounted.
#[derive(Debug)]
pub struct FakeSys {
    state: Mutex<FakeState>,
}

impl Default for FakeSys {
    fn default() -> Self {
        FakeSys {
            state: Mutex::new(FakeState {
                next_id: 100,
                ..FakeState::default()
            }),
        }
    }
}

fn below(p: &Path, root: &Path) -> bool {
    p.starts_with(root)
}

impl FakeSys {
    /// A kernel with only `/` mounted.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn st(&self) -> MutexGuard<'_, FakeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a mount at `path` (builder).
    #[must_use]
    pub fn with_mount(self, path: &str) -> Self {
        {
            let mut st = self.st();
            let id = st.next_id;
            st.next_id += 1;
            st.mounts.push(FakeMount {
                id,
                mount_point: PathBuf::from(path),
                read_only: false,
            });
        }
        self
    }

    /// Makes `statx` report no mount ids (a pre-5.8 kernel), so the engine reads mountinfo.
    #[must_use]
    pub fn without_statx_mount_id(self) -> Self {
        self.st().stat_unsupported = true;
        self
    }

    /// Makes `mount_setattr` answer `ENOSYS` (a pre-5.12 kernel).
    #[must_use]
    pub fn without_mount_setattr(self) -> Self {
        self.st().setattr_unsupported = true;
        self
    }

    /// Queues scripted answers for `op`, used before any real effect.
    pub fn script(&self, op: FakeOp, replies: impl IntoIterator<Item = Reply>) {
        self.st().script.entry(op).or_default().extend(replies);
    }

    /// Every call so far.
    #[must_use]
    pub fn calls(&self) -> Vec<SysCall> {
        self.st().calls.clone()
    }

    /// The pauses the engine asked for.
    #[must_use]
    pub fn sleeps(&self) -> Vec<Duration> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                SysCall::Sleep(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// The `umount2` calls made, with their flags.
    #[must_use]
    pub fn umount_calls(&self) -> Vec<(PathBuf, MntFlags)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                SysCall::Umount2 { target, flags } => Some((target, flags)),
                _ => None,
            })
            .collect()
    }

    /// The current mount points (in mount order) and whether each is read-only.
    #[must_use]
    pub fn mounts(&self) -> Vec<(PathBuf, bool)> {
        self.st()
            .mounts
            .iter()
            .map(|m| (m.mount_point.clone(), m.read_only))
            .collect()
    }

    fn next_reply(st: &mut FakeState, op: FakeOp) -> Option<Reply> {
        st.script.get_mut(&op).and_then(VecDeque::pop_front)
    }
}

fn umount_effect(st: &mut FakeState, target: &Path, flags: MntFlags) -> nix::Result<()> {
    let Some(pos) = st.mounts.iter().rposition(|m| m.mount_point == target) else {
        return Err(Errno::EINVAL);
    };
    if flags.contains(MntFlags::MNT_DETACH) {
        st.mounts.truncate(st.mounts.len());
        let removed_id = st.mounts.get(pos).map(|m| m.id);
        st.mounts.retain(|m| {
            Some(m.id) != removed_id && !(m.mount_point != target && below(&m.mount_point, target))
        });
        return Ok(());
    }
    let has_children = st
        .mounts
        .iter()
        .any(|m| m.mount_point != target && below(&m.mount_point, target));
    if has_children {
        return Err(Errno::EBUSY);
    }
    st.mounts.remove(pos);
    Ok(())
}

impl Sys for FakeSys {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        _data: Option<&str>,
    ) -> nix::Result<()> {
        let mut st = self.st();
        st.calls.push(SysCall::Mount {
            source: source.map(Path::to_path_buf),
            target: target.to_path_buf(),
            fstype: fstype.map(str::to_owned),
            flags,
        });
        match Self::next_reply(&mut st, FakeOp::Mount) {
            Some(Reply::Err(e) | Reply::ErrAfterEffect(e)) => return Err(e),
            Some(Reply::OkNoEffect) => return Ok(()),
            None => {}
        }
        let propagation =
            MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_SHARED | MsFlags::MS_UNBINDABLE;
        if flags.intersects(propagation) {
            return if st.mounts.iter().any(|m| m.mount_point == target) || target == Path::new("/")
            {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            };
        }
        if flags.contains(MsFlags::MS_REMOUNT) {
            let m = st
                .mounts
                .iter_mut()
                .rev()
                .find(|m| m.mount_point == target)
                .ok_or(Errno::EINVAL)?;
            m.read_only = flags.contains(MsFlags::MS_RDONLY);
            return Ok(());
        }
        let mut new = vec![target.to_path_buf()];
        if flags.contains(MsFlags::MS_BIND | MsFlags::MS_REC)
            && let Some(src) = source
        {
            for m in &st.mounts {
                if m.mount_point != src
                    && let Ok(rel) = m.mount_point.strip_prefix(src)
                {
                    new.push(target.join(rel));
                }
            }
        }
        for mp in new {
            let id = st.next_id;
            st.next_id += 1;
            st.mounts.push(FakeMount {
                id,
                mount_point: mp,
                read_only: flags.contains(MsFlags::MS_RDONLY),
            });
        }
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        let mut st = self.st();
        st.calls.push(SysCall::Umount2 {
            target: target.to_path_buf(),
            flags,
        });
        match Self::next_reply(&mut st, FakeOp::Umount2) {
            Some(Reply::Err(e)) => Err(e),
            Some(Reply::ErrAfterEffect(e)) => {
                let _ = umount_effect(&mut st, target, flags);
                Err(e)
            }
            Some(Reply::OkNoEffect) => Ok(()),
            None => umount_effect(&mut st, target, flags),
        }
    }

    fn mount_setattr(
        &self,
        _dirfd: Option<BorrowedFd<'_>>,
        path: &Path,
        flags: libc::c_uint,
        attr: SetAttr,
    ) -> nix::Result<()> {
        let mut st = self.st();
        st.calls.push(SysCall::MountSetattr {
            path: path.to_path_buf(),
            flags,
            attr,
        });
        if st.setattr_unsupported {
            return Err(Errno::ENOSYS);
        }
        match Self::next_reply(&mut st, FakeOp::MountSetattr) {
            Some(Reply::Err(e) | Reply::ErrAfterEffect(e)) => return Err(e),
            Some(Reply::OkNoEffect) => return Ok(()),
            None => {}
        }
        let recursive = flags & libc::AT_RECURSIVE as libc::c_uint != 0;
        let top = st
            .mounts
            .iter()
            .rposition(|m| m.mount_point == path)
            .ok_or(Errno::EINVAL)?;
        for (i, m) in st.mounts.iter_mut().enumerate() {
            let hit =
                i == top || (recursive && m.mount_point != path && below(&m.mount_point, path));
            if hit && attr.set & libc::MOUNT_ATTR_RDONLY != 0 {
                m.read_only = true;
            }
        }
        Ok(())
    }

    fn open_tree_clone(&self, path: &Path, _recursive: bool) -> nix::Result<OwnedFd> {
        self.st().calls.push(SysCall::OpenTree {
            path: path.to_path_buf(),
        });
        Err(Errno::ENOSYS)
    }

    fn move_mount(&self, _from: BorrowedFd<'_>, _to: BorrowedFd<'_>) -> nix::Result<()> {
        Err(Errno::ENOSYS)
    }

    fn stat_mount(&self, _dirfd: Option<BorrowedFd<'_>>, path: &Path) -> nix::Result<MountStat> {
        let mut st = self.st();
        st.calls.push(SysCall::StatMount {
            path: path.to_path_buf(),
        });
        if st.stat_unsupported {
            return Err(Errno::ENOSYS);
        }
        if let Some(Reply::Err(e) | Reply::ErrAfterEffect(e)) =
            Self::next_reply(&mut st, FakeOp::StatMount)
        {
            return Err(e);
        }
        Ok(
            match st.mounts.iter().rev().find(|m| m.mount_point == path) {
                Some(m) => MountStat {
                    mount_id: m.id,
                    is_mount_root: true,
                },
                None => MountStat {
                    mount_id: 1,
                    is_mount_root: path == Path::new("/"),
                },
            },
        )
    }

    fn mount_table(&self) -> Result<MountTable> {
        let mut st = self.st();
        st.calls.push(SysCall::MountTable);
        let mut text = b"1 1 0:1 / / rw shared:1 - rootfs rootfs rw\n".to_vec();
        for m in &st.mounts {
            text.extend_from_slice(format!("{} 1 0:{} / ", m.id, m.id).as_bytes());
            text.extend_from_slice(&escape(m.mount_point.as_os_str().as_bytes()));
            text.extend_from_slice(if m.read_only { b" ro" } else { b" rw" });
            text.extend_from_slice(b" - tmpfs none rw\n");
        }
        drop(st);
        MountTable::parse(text)
    }

    fn sleep(&self, pause: Duration) {
        self.st().calls.push(SysCall::Sleep(pause));
    }
}

/// A call recorded by [`RecordingMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// [`Mounter::bind`].
    Bind {
        /// Source.
        source: PathBuf,
        /// Target.
        target: PathBuf,
        /// Options.
        opts: BindOptions,
    },
    /// [`Mounter::bind_into`].
    BindInto {
        /// Source.
        source: PathBuf,
        /// Root.
        root: PathBuf,
        /// Path inside the root.
        path_in_root: PathBuf,
        /// Options.
        opts: BindOptions,
    },
    /// [`Mounter::mount_filesystem`] (data not recorded).
    MountFilesystem {
        /// Source.
        source: PathBuf,
        /// Target.
        target: PathBuf,
        /// Filesystem type.
        fstype: String,
        /// Flags.
        attrs: MountAttrs,
    },
    /// [`Mounter::set_attrs`].
    SetAttrs {
        /// Target.
        target: PathBuf,
        /// Flags.
        attrs: MountAttrs,
        /// Recursive.
        recursive: bool,
    },
    /// [`Mounter::set_propagation`].
    SetPropagation {
        /// Target.
        target: PathBuf,
        /// Type.
        propagation: Propagation,
        /// Recursive.
        recursive: bool,
    },
    /// [`Mounter::unmount`].
    Unmount {
        /// Target.
        target: PathBuf,
    },
    /// [`Mounter::unmount_all_at_or_below`].
    UnmountAll {
        /// Path.
        path: PathBuf,
    },
    /// [`Mounter::detach_all_in_root`].
    DetachAllInRoot {
        /// Root.
        root: PathBuf,
    },
}

#[derive(Debug, Default)]
struct RecState {
    calls: Vec<Recorded>,
    mounted: BTreeMap<PathBuf, u32>,
    fail: HashMap<Op, VecDeque<Errno>>,
}

/// A [`Mounter`] for callers' tests: records calls, tracks mount points, fails on demand.
#[derive(Debug, Default)]
pub struct RecordingMounter {
    state: Mutex<RecState>,
}

impl RecordingMounter {
    /// Nothing mounted, nothing recorded.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn st(&self) -> MutexGuard<'_, RecState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes the next call of `op` fail with `errno` (queued, in order). `Op::Bind` covers
    /// `bind` and `bind_into`, `Op::Unmount` both unmount methods.
    pub fn fail_next(&self, op: Op, errno: Errno) {
        self.st().fail.entry(op).or_default().push_back(errno);
    }

    /// Every call so far.
    #[must_use]
    pub fn calls(&self) -> Vec<Recorded> {
        self.st().calls.clone()
    }

    /// Whether `path` is mounted (as far as this fake knows).
    #[must_use]
    pub fn is_mounted(&self, path: &Path) -> bool {
        self.st().mounted.get(path).is_some_and(|&n| n > 0)
    }

    /// The mounted paths.
    #[must_use]
    pub fn mounted(&self) -> Vec<PathBuf> {
        self.st().mounted.keys().cloned().collect()
    }

    fn begin(&self, rec: Recorded, op: Op, target: &Path) -> Result<MutexGuard<'_, RecState>> {
        let mut st = self.st();
        st.calls.push(rec);
        if let Some(errno) = st.fail.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(MountError::Syscall {
                op,
                source_path: None,
                target: target.to_path_buf(),
                errno,
            });
        }
        Ok(st)
    }
}

impl Mounter for RecordingMounter {
    fn bind(&self, source: &Path, target: &Path, opts: &BindOptions) -> Result<()> {
        let rec = Recorded::Bind {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            opts: *opts,
        };
        let mut st = self.begin(rec, Op::Bind, target)?;
        *st.mounted.entry(target.to_path_buf()).or_default() += 1;
        Ok(())
    }

    fn bind_into(
        &self,
        source: &Path,
        root: &Path,
        path_in_root: &Path,
        opts: &BindOptions,
    ) -> Result<PathBuf> {
        let comps = crate::path::components_in_root(root, path_in_root)?;
        let host: PathBuf = std::iter::once(root.as_os_str()).chain(comps).collect();
        let rec = Recorded::BindInto {
            source: source.to_path_buf(),
            root: root.to_path_buf(),
            path_in_root: path_in_root.to_path_buf(),
            opts: *opts,
        };
        let mut st = self.begin(rec, Op::Bind, &host)?;
        *st.mounted.entry(host.clone()).or_default() += 1;
        Ok(host)
    }

    fn mount_filesystem(
        &self,
        source: &Path,
        target: &Path,
        fstype: &str,
        attrs: MountAttrs,
        _data: Option<&str>,
    ) -> Result<()> {
        let rec = Recorded::MountFilesystem {
            source: source.to_path_buf(),
            target: target.to_path_buf(),
            fstype: fstype.to_owned(),
            attrs,
        };
        let mut st = self.begin(rec, Op::MountFilesystem, target)?;
        *st.mounted.entry(target.to_path_buf()).or_default() += 1;
        Ok(())
    }

    fn set_attrs(&self, target: &Path, attrs: MountAttrs, recursive: bool) -> Result<()> {
        let rec = Recorded::SetAttrs {
            target: target.to_path_buf(),
            attrs,
            recursive,
        };
        self.begin(rec, Op::SetAttr, target).map(drop)
    }

    fn set_propagation(
        &self,
        target: &Path,
        propagation: Propagation,
        recursive: bool,
    ) -> Result<()> {
        let rec = Recorded::SetPropagation {
            target: target.to_path_buf(),
            propagation,
            recursive,
        };
        self.begin(rec, Op::Propagation, target).map(drop)
    }

    fn unmount(&self, target: &Path, _opts: &UnmountOptions) -> Result<Unmounted> {
        let rec = Recorded::Unmount {
            target: target.to_path_buf(),
        };
        let mut st = self.begin(rec, Op::Unmount, target)?;
        match st.mounted.get_mut(target) {
            Some(n) if *n > 1 => {
                *n -= 1;
                Ok(Unmounted::Unmounted { attempts: 1 })
            }
            Some(_) => {
                st.mounted.remove(target);
                Ok(Unmounted::Unmounted { attempts: 1 })
            }
            None => Ok(Unmounted::NotMounted),
        }
    }

    fn unmount_all_at_or_below(&self, path: &Path, _opts: &UnmountOptions) -> Result<Vec<PathBuf>> {
        let rec = Recorded::UnmountAll {
            path: path.to_path_buf(),
        };
        let mut st = self.begin(rec, Op::Unmount, path)?;
        let mut gone: Vec<PathBuf> = st
            .mounted
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for p in &gone {
            st.mounted.remove(p);
        }
        gone.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(gone)
    }

    fn detach_all_in_root(&self, root: &Path) -> Result<Vec<PathBuf>> {
        let rec = Recorded::DetachAllInRoot {
            root: root.to_path_buf(),
        };
        let mut st = self.begin(rec, Op::Detach, root)?;
        let mut gone: Vec<PathBuf> = st
            .mounted
            .keys()
            .filter(|p| p.starts_with(root) && p.as_path() != root)
            .cloned()
            .collect();
        for p in &gone {
            st.mounted.remove(p);
        }
        gone.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(gone)
    }

    fn mount_table(&self) -> Result<MountTable> {
        let st = self.st();
        let mut text = b"1 1 0:1 / / rw - rootfs rootfs rw\n".to_vec();
        let mut id = 100u64;
        for (p, n) in &st.mounted {
            for _ in 0..*n {
                id += 1;
                text.extend_from_slice(format!("{id} 1 0:{id} / ").as_bytes());
                text.extend_from_slice(&escape(p.as_os_str().as_bytes()));
                text.extend_from_slice(b" rw - none none rw\n");
            }
        }
        drop(st);
        MountTable::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Engine, Verify};

    fn opts() -> UnmountOptions {
        UnmountOptions {
            busy_retries: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(25),
            detach_fallback: false,
            verify: Verify::MountId,
        }
    }

    #[test]
    fn ebusy_then_success() {
        let sys = FakeSys::new().with_mount("/sb/vol");
        sys.script(
            FakeOp::Umount2,
            [Reply::Err(Errno::EBUSY), Reply::Err(Errno::EBUSY)],
        );
        let e = Engine::with_sys(sys);
        let r = e.unmount(Path::new("/sb/vol"), &opts()).unwrap();
        assert_eq!(r, Unmounted::Unmounted { attempts: 3 });
        assert_eq!(
            e.sys().sleeps(),
            vec![Duration::from_millis(10), Duration::from_millis(20)]
        );
        assert!(e.sys().mounts().is_empty());
        let flags: Vec<_> = e.sys().umount_calls().into_iter().map(|c| c.1).collect();
        assert_eq!(flags, vec![MntFlags::UMOUNT_NOFOLLOW; 3]);
    }

    #[test]
    fn ebusy_forever_fails_with_busy_and_leaves_the_mount() {
        let sys = FakeSys::new().with_mount("/sb/vol");
        sys.script(FakeOp::Umount2, [Reply::Err(Errno::EBUSY); 10]);
        let e = Engine::with_sys(sys);
        match e.unmount(Path::new("/sb/vol"), &opts()) {
            Err(MountError::Busy { target, attempts }) => {
                assert_eq!(target, Path::new("/sb/vol"));
                assert_eq!(attempts, 4);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.sys().sleeps(),
            vec![
                Duration::from_millis(10),
                Duration::from_millis(20),
                Duration::from_millis(25)
            ],
            "backoff doubles and is capped"
        );
        assert_eq!(e.sys().mounts().len(), 1);
        assert!(
            !e.sys()
                .umount_calls()
                .iter()
                .any(|c| c.1.contains(MntFlags::MNT_DETACH))
        );
    }

    #[test]
    fn ebusy_forever_with_detach_fallback_detaches() {
        let sys = FakeSys::new().with_mount("/sb/vol");
        sys.script(FakeOp::Umount2, [Reply::Err(Errno::EBUSY); 4]);
        let e = Engine::with_sys(sys);
        let o = UnmountOptions {
            detach_fallback: true,
            ..opts()
        };
        assert_eq!(
            e.unmount(Path::new("/sb/vol"), &o).unwrap(),
            Unmounted::Detached { attempts: 4 }
        );
        let last = e.sys().umount_calls().last().cloned().unwrap();
        assert!(last.1.contains(MntFlags::MNT_DETACH));
        assert!(e.sys().mounts().is_empty());
    }

    #[test]
    fn einval_not_mounted_is_success() {
        // Someone unmounted it between our check and our call: umount2 says EINVAL.
        let sys = FakeSys::new().with_mount("/sb/vol");
        sys.script(FakeOp::Umount2, [Reply::ErrAfterEffect(Errno::EINVAL)]);
        let e = Engine::with_sys(sys);
        assert_eq!(
            e.unmount(Path::new("/sb/vol"), &opts()).unwrap(),
            Unmounted::NotMounted
        );
        // And a path that never was a mount point needs no umount2 at all.
        assert_eq!(
            e.unmount(Path::new("/sb/other"), &opts()).unwrap(),
            Unmounted::NotMounted
        );
        assert_eq!(e.sys().umount_calls().len(), 1);
    }

    #[test]
    fn einval_while_mountinfo_shows_the_mount_is_an_error() {
        let sys = FakeSys::new().with_mount("/sb/vol");
        sys.script(FakeOp::Umount2, [Reply::Err(Errno::EINVAL)]);
        let e = Engine::with_sys(sys);
        match e.unmount(Path::new("/sb/vol"), &opts()) {
            Err(MountError::Syscall {
                op: Op::Unmount,
                target,
                errno: Errno::EINVAL,
                ..
            }) => {
                assert_eq!(target, Path::new("/sb/vol"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verification_catches_a_lying_success() {
        for verify in [Verify::MountId, Verify::MountInfo] {
            let sys = FakeSys::new().with_mount("/sb/vol");
            sys.script(FakeOp::Umount2, [Reply::OkNoEffect]);
            let e = Engine::with_sys(sys);
            let o = UnmountOptions { verify, ..opts() };
            assert!(
                matches!(
                    e.unmount(Path::new("/sb/vol"), &o),
                    Err(MountError::StillMounted { .. })
                ),
                "{verify:?}"
            );
        }
        // Without statx mount ids, mountinfo is used for both the check and the verification.
        let sys = FakeSys::new()
            .with_mount("/sb/vol")
            .without_statx_mount_id();
        let e = Engine::with_sys(sys);
        assert_eq!(
            e.unmount(Path::new("/sb/vol"), &opts()).unwrap(),
            Unmounted::Unmounted { attempts: 1 }
        );
        assert!(e.sys().calls().contains(&SysCall::MountTable));
    }

    #[test]
    fn stacked_mount_unmounts_only_the_top() {
        let sys = FakeSys::new().with_mount("/sb/vol").with_mount("/sb/vol");
        let e = Engine::with_sys(sys);
        assert_eq!(
            e.unmount(Path::new("/sb/vol"), &opts()).unwrap(),
            Unmounted::Unmounted { attempts: 1 }
        );
        assert_eq!(e.sys().mounts().len(), 1);
    }

    #[test]
    fn unmount_all_goes_deepest_first_and_verifies() {
        let sys = FakeSys::new()
            .with_mount("/sb")
            .with_mount("/sb/a")
            .with_mount("/sb/a/b")
            .with_mount("/sb/a/b")
            .with_mount("/sb/c")
            .with_mount("/sbx");
        let e = Engine::with_sys(sys);
        let done = e
            .unmount_all_at_or_below(Path::new("/sb"), &opts())
            .unwrap();
        assert_eq!(done.len(), 5);
        let order: Vec<_> = e.sys().umount_calls().into_iter().map(|c| c.0).collect();
        assert_eq!(order.first().unwrap(), Path::new("/sb/a/b"));
        assert_eq!(order.last().unwrap(), Path::new("/sb"));
        assert_eq!(e.sys().mounts(), vec![(PathBuf::from("/sbx"), false)]);
    }

    #[test]
    fn unmount_all_reports_what_is_left() {
        let sys = FakeSys::new().with_mount("/sb").with_mount("/sb/a");
        sys.script(FakeOp::Umount2, [Reply::OkNoEffect]);
        let e = Engine::with_sys(sys);
        assert!(matches!(
            e.unmount_all_at_or_below(Path::new("/sb"), &opts()),
            Err(MountError::StillMounted { .. }) | Err(MountError::Busy { .. })
        ));
    }

    #[test]
    fn recursive_read_only_uses_mount_setattr_recursive() {
        let sys = FakeSys::new().with_mount("/src").with_mount("/src/sub");
        let e = Engine::with_sys(sys);
        e.bind(
            Path::new("/src"),
            Path::new("/t"),
            &BindOptions::read_only(),
        )
        .unwrap();
        let setattr = e
            .sys()
            .calls()
            .into_iter()
            .find_map(|c| match c {
                SysCall::MountSetattr { flags, attr, .. } => Some((flags, attr)),
                _ => None,
            })
            .unwrap();
        assert!(setattr.0 & libc::AT_RECURSIVE as libc::c_uint != 0);
        assert_eq!(setattr.1.set, libc::MOUNT_ATTR_RDONLY);
        let t: Vec<_> = e
            .sys()
            .mounts()
            .into_iter()
            .filter(|m| m.0.starts_with("/t"))
            .collect();
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|m| m.1), "every submount read-only: {t:?}");
    }

    #[test]
    fn recursive_read_only_fallback_remounts_every_submount() {
        let sys = FakeSys::new()
            .with_mount("/src")
            .with_mount("/src/sub")
            .with_mount("/src/sub/deeper")
            .without_mount_setattr();
        let e = Engine::with_sys(sys);
        e.bind(
            Path::new("/src"),
            Path::new("/t"),
            &BindOptions::read_only(),
        )
        .unwrap();
        let remounts: Vec<_> = e
            .sys()
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                SysCall::Mount { target, flags, .. } if flags.contains(MsFlags::MS_REMOUNT) => {
                    assert!(flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY));
                    Some(target)
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            remounts,
            vec![
                PathBuf::from("/t"),
                PathBuf::from("/t/sub"),
                PathBuf::from("/t/sub/deeper")
            ]
        );
        let t: Vec<_> = e
            .sys()
            .mounts()
            .into_iter()
            .filter(|m| m.0.starts_with("/t"))
            .collect();
        assert!(t.iter().all(|m| m.1), "{t:?}");
    }

    #[test]
    fn failed_attribute_step_rolls_the_bind_back() {
        let sys = FakeSys::new().with_mount("/src");
        sys.script(FakeOp::MountSetattr, [Reply::Err(Errno::EPERM)]);
        let e = Engine::with_sys(sys);
        let err = e
            .bind(
                Path::new("/src"),
                Path::new("/t"),
                &BindOptions::read_only(),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                MountError::Syscall {
                    op: Op::SetAttr,
                    errno: Errno::EPERM,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            !e.sys().mounts().iter().any(|m| m.0.starts_with("/t")),
            "nothing half-made"
        );
        let msg = err.to_string();
        assert!(msg.contains("/t") && msg.contains("EPERM"), "{msg}");
    }

    #[test]
    fn bind_error_names_operation_source_target_errno() {
        let sys = FakeSys::new();
        sys.script(FakeOp::Mount, [Reply::Err(Errno::ENOENT)]);
        let e = Engine::with_sys(sys);
        let msg = e
            .bind(
                Path::new("/volumes/pv 1"),
                Path::new("/sb/data"),
                &BindOptions::default(),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "bind mount /volumes/pv 1 -> /sb/data: ENOENT: No such file or directory"
        );
    }

    #[test]
    fn mount_filesystem_refuses_odd_fstypes_and_hides_data() {
        let e = Engine::with_sys(FakeSys::new());
        assert!(matches!(
            e.mount_filesystem(
                Path::new("x"),
                Path::new("/t"),
                "ext4 -o x",
                MountAttrs::default(),
                None
            ),
            Err(MountError::InvalidFsType { .. })
        ));
        e.sys().script(FakeOp::Mount, [Reply::Err(Errno::EINVAL)]);
        let msg = e
            .mount_filesystem(
                Path::new("/dev/x"),
                Path::new("/t"),
                "ext4",
                MountAttrs::default(),
                Some("secret=hunter2"),
            )
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn recording_mounter_records_and_fails_on_demand() {
        let m = RecordingMounter::new();
        let host = m
            .bind_into(
                Path::new("/v"),
                Path::new("/sb/root"),
                Path::new("/data/db"),
                &BindOptions::read_only(),
            )
            .unwrap();
        assert_eq!(host, Path::new("/sb/root/data/db"));
        assert!(m.is_mounted(&host));
        assert!(
            m.bind_into(
                Path::new("/v"),
                Path::new("/r"),
                Path::new("../x"),
                &BindOptions::default()
            )
            .is_err()
        );
        m.fail_next(Op::Unmount, Errno::EBUSY);
        assert!(m.unmount(&host, &UnmountOptions::default()).is_err());
        assert_eq!(
            m.unmount(&host, &UnmountOptions::default()).unwrap(),
            Unmounted::Unmounted { attempts: 1 }
        );
        assert_eq!(
            m.unmount(&host, &UnmountOptions::default()).unwrap(),
            Unmounted::NotMounted
        );
        assert_eq!(m.calls().len(), 4);
        m.bind(Path::new("/a"), Path::new("/sb/x"), &BindOptions::default())
            .unwrap();
        m.bind(
            Path::new("/a"),
            Path::new("/sb/x/y"),
            &BindOptions::default(),
        )
        .unwrap();
        assert!(
            m.mount_table()
                .unwrap()
                .is_mount_point(Path::new("/sb/x/y"))
        );
        let gone = m
            .unmount_all_at_or_below(Path::new("/sb"), &UnmountOptions::default())
            .unwrap();
        assert_eq!(gone, vec![PathBuf::from("/sb/x/y"), PathBuf::from("/sb/x")]);
        assert!(m.mounted().is_empty());
    }
}
