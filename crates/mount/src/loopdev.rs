//! Loop devices through the kernel's ioctls (`LOOP_CTL_GET_FREE`, then `LOOP_CONFIGURE`, or
//! `LOOP_SET_FD` + `LOOP_SET_STATUS64` on kernels before 5.8), detached on drop. No
//! `losetup`. The device is configured with `LO_FLAGS_AUTOCLEAR`, so even a leaked handle
//! frees the device once its filesystem is unmounted.
//!
//! The `loopdev` crate was not used: its last release is from 2022 and it needs bindgen and
//! libclang at build time for four ioctls.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::error::{MountError, Result};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)` (linux/fs.h).
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u64 = 7;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, Linux ≥ 5.8).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

fn loop_err(step: &'static str, path: &Path, errno: Errno) -> MountError {
    MountError::Loop {
        step,
        path: path.to_path_buf(),
        errno,
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// An attached loop device; detached when dropped.
#[derive(Debug)]
pub struct LoopDevice {
    dev: File,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `backing` (a regular file) to a free loop device.
    ///
    /// # Errors
    /// [`MountError::Loop`] naming the step.
    pub fn attach(backing: &Path, read_only: bool) -> Result<Self> {
        let ctl_path = Path::new("/dev/loop-control");
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .open(ctl_path)
            .map_err(|e| loop_err("open /dev/loop-control", ctl_path, io_errno(&e)))?;
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(backing)
            .map_err(|e| loop_err("open backing file", backing, io_errno(&e)))?;
        let mut last = Errno::EBUSY;
        for _ in 0..16 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1;
            // `ctl` is an open descriptor for the duration of the call.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
            let n = Errno::result(n).map_err(|e| loop_err("LOOP_CTL_GET_FREE", ctl_path, e))?;
            let n = u32::try_from(n)
                .map_err(|_| loop_err("LOOP_CTL_GET_FREE", ctl_path, Errno::ERANGE))?;
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match open_dev(&path, n) {
                Ok(d) => d,
                Err(e) => return Err(loop_err("open device", &path, e)),
            };
            match configure(&dev, &file, read_only) {
                Ok(()) => return Ok(LoopDevice { dev, path }),
                // Another process took this device between GET_FREE and configure.
                Err(Errno::EBUSY) => last = Errno::EBUSY,
                Err(e) => return Err(loop_err("configure", &path, e)),
            }
        }
        Err(loop_err("find a free device", backing, last))
    }

    /// The device node (`/dev/loopN`).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Detaches now (with autoclear, a device still mounted is detached at its unmount).
    ///
    /// # Errors
    /// [`MountError::Loop`].
    pub fn detach(self) -> Result<()> {
        let r = clear(&self.dev).map_err(|e| loop_err("LOOP_CLR_FD", &self.path, e));
        std::mem::forget(self);
        r
    }
}

fn clear(dev: &File) -> nix::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument; `dev` is open for the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD) };
    Errno::result(r).map(drop)
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = clear(&self.dev)
            && e != Errno::ENXIO
        {
            tracing::warn!(device = %self.path.display(), errno = %e, "loop device detach failed");
        }
    }
}

fn open_dev(path: &Path, n: u32) -> std::result::Result<File, Errno> {
    let open = || OpenOptions::new().read(true).write(true).open(path);
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // /dev without devtmpfs (some containers): make the node.
            nix::sys::stat::mknod(
                path,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o660),
                nix::sys::stat::makedev(LOOP_MAJOR, u64::from(n)),
            )?;
            open().map_err(|e| io_errno(&e))
        }
        Err(e) => Err(io_errno(&e)),
    }
}

fn configure(dev: &File, backing: &File, read_only: bool) -> nix::Result<()> {
    let mut flags = LO_FLAGS_AUTOCLEAR;
    if read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    let info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: flags,
        lo_file_name: [0; 64],
        lo_crypt_name: [0; 64],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| Errno::EBADF)?;
    let config = LoopConfig {
        fd,
        block_size: 0,
        info,
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` (layout checked by the size
    // assertions above) from the pointer, which is valid for the call; both fds are open.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &raw const config) };
    match Errno::result(r) {
        Ok(_) => Ok(()),
        Err(Errno::EINVAL | Errno::ENOTTY) => {
            // Before Linux 5.8: LOOP_SET_FD, then LOOP_SET_STATUS64.
            // SAFETY: LOOP_SET_FD takes the backing descriptor as its integer argument.
            let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) };
            Errno::result(r)?;
            // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64` from the pointer, valid
            // for the call.
            let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &raw const info) };
            if let Err(e) = Errno::result(r) {
                let _ = clear(dev);
                return Err(e);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The size in bytes of the block device open as `dev` (`BLKGETSIZE64`).
///
/// # Errors
/// The ioctl's errno (`ENOTTY`: not a block device).
pub fn device_size(dev: &File) -> std::result::Result<u64, Errno> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at `size`, alive
    // for the call; `dev` is an open descriptor for the duration of the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64, &raw mut size) };
    Errno::result(r).map(|_| size)
}

/// Has the kernel re-read the size of the loop device open as `dev` from its backing file
/// (`LOOP_SET_CAPACITY`), after the file grew.
///
/// # Errors
/// The ioctl's errno (`ENOTTY`/`EINVAL`: not a loop device, `ENXIO`: not attached).
pub fn refresh_capacity(dev: &File) -> std::result::Result<(), Errno> {
    // SAFETY: LOOP_SET_CAPACITY takes no argument; `dev` is an open descriptor for the
    // duration of the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_CAPACITY, 0) };
    Errno::result(r).map(drop)
}
