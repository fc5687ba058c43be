//! Project quotas for real: XFS and ext4 on loop devices, mounted `prjquota` in a private mount
//! namespace; a directory tagged with a project id and a 16 MiB hard limit; a non-root process
//! writing 32 MiB through it stops at about 16 MiB (ENOSPC on XFS, EDQUOT on ext4); a raised
//! limit lets the same write through; usage is what the kernel counts.
//!
//! Where the tests run: the kernel must mount XFS and ext4 with `prjquota` (`CONFIG_XFS_QUOTA`,
//! `CONFIG_QFMT_V2`). When the running kernel can, the cases run here. When it cannot (this
//! project's CI machines), `vm_tier` boots Debian's `linux-image-amd64` under qemu with
//! virtme-ng (`scripts/install-vm.sh`, run by `scripts/test.sh` as root) and runs every case
//! of this binary inside it, in one boot, sharing the host's filesystem; its output is printed
//! and its exit status asserted. Under `CI=true` or `BERTH_REQUIRE_QUOTA=1` a missing kernel
//! or VM tool fails instead of skipping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use berth_testkit::vm::{
    in_vm, kernel_has_project_quotas, mount_prjquota, quota_fs, quota_required as required,
    run_in_vm,
};
use std::path::Path;

use berth_mount::quota::{Limits, LinuxQuotas, Quotas, Support};

const MIB: u64 = 1 << 20;
/// The unprivileged writer's uid and gid (nobody).
const TASK_UID: u32 = 65534;

/// Writes `bytes` to `file` in 1 MiB pieces as the unprivileged task user, in a child process
/// (this test binary re-executed as `writer_child`); returns (bytes written, errno of the
/// failed write or 0).
fn write_as_task(file: &Path, bytes: u64) -> (u64, i32) {
    berth_testkit::vm::write_as_task(file, bytes, TASK_UID, |mut c| c.output().unwrap())
}

/// The writer child: only acts when `BERTH_QUOTA_WRITE` names a file (the parent's
/// re-execution); a no-op otherwise.
#[test]
fn writer_child() {
    berth_testkit::vm::writer_child();
}

/// The whole story on one filesystem type.
fn enforced_on(fstype: &str, over_limit_errno: i32) {
    let dir = tempfile::tempdir().unwrap();
    let d = std::fs::canonicalize(dir.path()).unwrap();
    let dev = quota_fs(&d, fstype, 128);
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let devp = dev.path().to_owned();
    let fs = fstype.to_owned();
    berth_mount::ns::in_private_mount_namespace(move || {
        mount_prjquota(&devp, &mnt, &fs).unwrap();
        let q = LinuxQuotas::new();
        assert_eq!(q.support(&mnt).unwrap(), Support::Enforced, "{fs}");

        // A volume directory owned by the task user, tagged with project 4242, limit 16 MiB.
        let vol = mnt.join("volumes/roles/db/pv-1");
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("before.txt"), b"data that was there first").unwrap();
        nix::unistd::chown(&vol, Some(TASK_UID.into()), Some(TASK_UID.into())).unwrap();
        assert_eq!(q.project_of(&vol).unwrap(), 0);
        q.assign(&vol, 4242).unwrap();
        assert_eq!(q.project_of(&vol).unwrap(), 4242);
        assert_eq!(
            q.project_of(&vol.join("before.txt")).unwrap(),
            4242,
            "existing files too"
        );
        let limit = Limits {
            hard_bytes: 16 * MIB,
            soft_bytes: 0,
        };
        q.set_limits(&vol, 4242, limit).unwrap();
        assert_eq!(q.usage(&vol, 4242).unwrap().limits, limit);

        // A new subdirectory inherits the project; the task's write stops at the limit.
        std::fs::create_dir(vol.join("sub")).unwrap();
        nix::unistd::chown(
            &vol.join("sub"),
            Some(TASK_UID.into()),
            Some(TASK_UID.into()),
        )
        .unwrap();
        assert_eq!(q.project_of(&vol.join("sub")).unwrap(), 4242, "PROJINHERIT");
        let (written, errno) = write_as_task(&vol.join("sub/big"), 32 * MIB);
        assert_eq!(
            errno, over_limit_errno,
            "{fs}: wrote {written} then errno {errno}"
        );
        assert!(
            (14 * MIB..=16 * MIB).contains(&written),
            "{fs}: stopped after {written} bytes, not at about 16 MiB"
        );
        let used = q.usage(&vol, 4242).unwrap();
        assert!(
            used.used_bytes >= 14 * MIB && used.used_bytes <= 16 * MIB + MIB,
            "{fs}: usage {used:?}"
        );
        assert!(used.used_inodes >= 3, "{fs}: {used:?}");

        // GROW: the limit follows, the same write goes through.
        q.set_limits(
            &vol,
            4242,
            Limits {
                hard_bytes: 48 * MIB,
                soft_bytes: 40 * MIB,
            },
        )
        .unwrap();
        std::fs::remove_file(vol.join("sub/big")).unwrap();
        let (written, errno) = write_as_task(&vol.join("sub/big"), 32 * MIB);
        assert_eq!(
            (written, errno),
            (32 * MIB, 0),
            "{fs}: after the limit was raised"
        );
        assert!(q.usage(&vol, 4242).unwrap().used_bytes >= 32 * MIB);

        // Another project's directory is not counted against this one.
        let other = mnt.join("volumes/roles/db/pv-2");
        std::fs::create_dir_all(&other).unwrap();
        q.assign(&other, 4243).unwrap();
        std::fs::write(other.join("x"), vec![1_u8; 1 << 20]).unwrap();
        let u = q.usage(&vol, 4243).unwrap();
        assert!(u.used_bytes >= MIB && u.used_bytes < 2 * MIB, "{fs}: {u:?}");

        // Clearing: limits off, project 0 (an id given back at DESTROY).
        q.set_limits(&vol, 4242, Limits::default()).unwrap();
        q.assign(&vol, 0).unwrap();
        assert_eq!(q.project_of(&vol.join("sub/big")).unwrap(), 0);
        assert_eq!(q.usage(&vol, 4242).unwrap().limits, Limits::default());
        nix::mount::umount(&mnt).unwrap();
    })
    .unwrap();
}

fn may_run(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        assert!(!required(), "{test}: needs root");
        eprintln!("SKIPPED {test}: needs root");
        return false;
    }
    if in_vm() || kernel_has_project_quotas() {
        return true;
    }
    eprintln!("SKIPPED {test} here: this kernel cannot mount prjquota; vm_tier runs it in a VM");
    false
}

#[test]
fn xfs_project_quota_stops_a_task_at_its_limit() {
    if may_run("xfs_project_quota_stops_a_task_at_its_limit") {
        enforced_on("xfs", libc::ENOSPC);
    }
}

#[test]
fn ext4_project_quota_stops_a_task_at_its_limit() {
    if may_run("ext4_project_quota_stops_a_task_at_its_limit") {
        enforced_on("ext4", libc::EDQUOT);
    }
}

#[test]
fn ext4_without_the_project_feature_has_no_project_quotas() {
    if !may_run("ext4_without_the_project_feature_has_no_project_quotas") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let dev = common::loop_fs(&d, "ext4");
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let devp = dev.path().to_owned();
    berth_mount::ns::in_private_mount_namespace(move || {
        nix::mount::mount(
            Some(&devp),
            &mnt,
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let q = LinuxQuotas::new();
        assert_eq!(q.support(&mnt).unwrap(), Support::None);
        assert!(
            q.set_limits(
                &mnt,
                7,
                Limits {
                    hard_bytes: MIB,
                    soft_bytes: 0
                }
            )
            .is_err()
        );
        nix::mount::umount(&mnt).unwrap();
    })
    .unwrap();
}

/// Runs every other case of this binary inside a VM whose kernel has project quotas, when this
/// kernel has none.
#[test]
fn vm_tier() {
    if in_vm() || !nix::unistd::geteuid().is_root() || kernel_has_project_quotas() {
        return; // the cases run (or skip) natively
    }
    let exe = std::env::current_exe().unwrap();
    let Some(run) = run_in_vm(
        &exe,
        &["--test-threads=1", "--skip", "vm_tier"],
        &[("BERTH_REQUIRE_QUOTA", "1")],
    ) else {
        assert!(
            !required(),
            "vm_tier: this kernel has no project quotas and the VM tools are missing \
             (scripts/install-vm.sh: linux-image-amd64, qemu-system-x86, busybox-static, virtme-ng)"
        );
        eprintln!("SKIPPED vm_tier: no VM tools (scripts/install-vm.sh)");
        return;
    };
    println!(
        "vm_tier: {} ran for {:.0?}; the cases' output:\n{}",
        run.kernel.display(),
        run.elapsed,
        run.output
    );
    assert_eq!(
        run.status, "0",
        "the quota cases failed in the VM:\n{}\nvng stderr: {}",
        run.output, run.vng_stderr
    );
    assert!(
        run.output
            .contains("test xfs_project_quota_stops_a_task_at_its_limit ... ok")
            && run
                .output
                .contains("test ext4_project_quota_stops_a_task_at_its_limit ... ok"),
        "the cases did not run in the VM:\n{}",
        run.output
    );
    assert!(
        !run.output.contains("SKIPPED"),
        "a case skipped in the VM:\n{}",
        run.output
    );
}
