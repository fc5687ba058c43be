//! A FUSE filesystem that never answers: every access below its mount point (lookup,
//! `getattr`, …) blocks until the filesystem goes away — what a hung FUSE or NFS server does
//! to its clients.
//!
//! It needs no FUSE library: the mount is made with an open `/dev/fuse` descriptor that
//! nobody ever reads, so the kernel's first request (INIT) is never answered and every
//! operation waits for it (killably). Dropping the [`HungFuse`] closes the descriptor, which
//! aborts the connection (waiters get `ENOTCONN`), then detaches the mount.

use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// A mounted filesystem that never answers; unmounted when dropped.
#[derive(Debug)]
pub struct HungFuse {
    device: Option<std::fs::File>,
    mount_point: PathBuf,
}

impl HungFuse {
    /// Mounts it at `mount_point` (an existing directory) in the calling thread's mount
    /// namespace.
    ///
    /// # Errors
    /// `/dev/fuse` cannot be opened, or the mount fails.
    pub fn mount(mount_point: &Path) -> std::io::Result<HungFuse> {
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")?;
        let data = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            device.as_raw_fd()
        );
        nix::mount::mount(
            Some("berth-hung"),
            mount_point,
            Some("fuse"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )?;
        Ok(HungFuse {
            device: Some(device),
            mount_point: mount_point.to_owned(),
        })
    }

    /// The mount point.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.mount_point
    }
}

impl Drop for HungFuse {
    fn drop(&mut self) {
        // Closing the device aborts the connection: blocked callers return ENOTCONN.
        drop(self.device.take());
        let _ = nix::mount::umount2(&self.mount_point, MntFlags::MNT_DETACH);
    }
}
