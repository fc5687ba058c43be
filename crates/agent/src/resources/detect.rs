//! The agent's resources on embedded defaults, as the Mesos agent computes them
//! (`Containerizer::resources` in Mesos's `src/slave/containerizer/containerizer.cpp`).
//!
//! `--resources` is parsed first. Every one of `cpus`, `mem`, `disk` and `ports` that it does
//! not name (by resource name, in any role: `cpus:0` names cpus) is then added, unreserved:
//!
//! | resource | detected | rule | when detection fails |
//! |---|---|---|---|
//! | `cpus` | CPUs online (`sysconf(_SC_NPROCESSORS_ONLN)`) | all of them | 1 |
//! | `mem` | total memory (`sysinfo`) | total ≥ 2 GiB: total − 1 GiB; else half | 1024 MB |
//! | `disk` | size of the work directory's filesystem (`statvfs`: blocks × fragment size) | total ≥ 10 GiB: total − 5 GiB; else half | 10240 MB |
//! | `ports` | — | `[31000-32000]` | — |
//!
//! Sizes are whole megabytes (MiB), truncated, as Mesos does. The probe ([`HostTotals::probe`])
//! is kept apart from the arithmetic ([`agent_resources`]) so the rules are tested on given
//! totals.

use std::path::Path;

use berth_resources::Resources;

use super::error::{ResourcesError, Result};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Mesos `DEFAULT_CPUS`.
pub const DEFAULT_CPUS: u64 = 1;
/// Mesos `DEFAULT_MEM`: 1 GiB.
pub const DEFAULT_MEM_BYTES: u64 = GIB;
/// Mesos `DEFAULT_DISK`: 10 GiB.
pub const DEFAULT_DISK_BYTES: u64 = 10 * GIB;
/// Mesos `DEFAULT_PORTS`.
pub const DEFAULT_PORTS: &str = "[31000-32000]";

/// What the host has, as far as it could be read; `None` where the probe failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTotals {
    /// CPUs online.
    pub cpus: Option<u64>,
    /// Total memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Total size in bytes of the filesystem holding the work directory.
    pub disk_bytes: Option<u64>,
}

impl HostTotals {
    /// Reads the host: CPUs online, total memory, and the size of the filesystem holding
    /// `work_dir` (or, when it does not exist yet, its nearest existing ancestor, where it will
    /// be created). A value that cannot be read is `None` and logged.
    #[must_use]
    pub fn probe(work_dir: &Path) -> HostTotals {
        let cpus = match nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN) {
            Ok(Some(n)) if n > 0 => u64::try_from(n).ok(),
            other => {
                tracing::warn!(?other, "cannot read the number of CPUs online");
                None
            }
        };
        let memory_bytes = match nix::sys::sysinfo::sysinfo() {
            Ok(info) => Some(info.ram_total()),
            Err(errno) => {
                tracing::warn!(%errno, "cannot read the total memory");
                None
            }
        };
        let existing = work_dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(work_dir);
        let disk_bytes = match nix::sys::statvfs::statvfs(existing) {
            Ok(s) => s.blocks().checked_mul(s.fragment_size()),
            Err(errno) => {
                tracing::warn!(%errno, path = %existing.display(), "cannot read the work directory's filesystem size");
                None
            }
        };
        HostTotals {
            cpus,
            memory_bytes,
            disk_bytes,
        }
    }
}

/// Mesos's memory rule: leave 1 GiB when there are at least 2 GiB, else use half. Bytes.
#[must_use]
pub fn mem_bytes(total: Option<u64>) -> u64 {
    match total {
        None => DEFAULT_MEM_BYTES,
        Some(t) if t >= 2 * GIB => t - GIB,
        Some(t) => t / 2,
    }
}

/// Mesos's disk rule: leave 5 GiB when there are at least 10 GiB, else use half. Bytes.
#[must_use]
pub fn disk_bytes(total: Option<u64>) -> u64 {
    match total {
        None => DEFAULT_DISK_BYTES,
        Some(t) if t >= 10 * GIB => t - 5 * GIB,
        Some(t) => t / 2,
    }
}

/// The agent's resources: `flag` (Mesos agent text or a JSON array; `None` when
/// `--resources` is absent) with every one of `cpus`, `mem`, `disk` and `ports` it does not
/// name added from `host` by Mesos's rules (module docs).
///
/// # Errors
/// [`ResourcesError::InvalidConfigured`] for a flag that does not parse, or a result that is
/// not valid (e.g. `disk(db):10;disk:{a}`, one name with two types).
pub fn agent_resources(flag: Option<&str>, host: &HostTotals) -> Result<Resources> {
    let text = flag.unwrap_or("");
    let invalid = |reason: String| ResourcesError::InvalidConfigured {
        input: text.to_owned(),
        reason,
    };
    let listed = Resources::parse_list(text, "*").map_err(|e| invalid(e.to_string()))?;
    let names: Vec<&str> = listed.iter().map(|r| r.name.as_str()).collect();
    let mut detected = Vec::new();
    if !names.contains(&"cpus") {
        detected.push(format!("cpus:{}", host.cpus.unwrap_or(DEFAULT_CPUS)));
    }
    if !names.contains(&"mem") {
        detected.push(format!("mem:{}", mem_bytes(host.memory_bytes) / MIB));
    }
    if !names.contains(&"disk") {
        detected.push(format!("disk:{}", disk_bytes(host.disk_bytes) / MIB));
    }
    if !names.contains(&"ports") {
        detected.push(format!("ports:{DEFAULT_PORTS}"));
    }
    let mut all = Resources::from_proto_list(&listed).map_err(|e| invalid(e.to_string()))?;
    if !detected.is_empty() {
        let added =
            Resources::parse(&detected.join(";"), "*").map_err(|e| invalid(e.to_string()))?;
        all.add_all(&added);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use berth_resources::Scalar;

    use super::*;

    const MB: u64 = MIB;

    fn host(cpus: u64, mem: u64, disk: u64) -> HostTotals {
        HostTotals {
            cpus: Some(cpus),
            memory_bytes: Some(mem),
            disk_bytes: Some(disk),
        }
    }

    #[test]
    fn memory_leaves_one_gib_from_two_gib_up_and_halves_below() {
        assert_eq!(mem_bytes(Some(24 * GIB)), 23 * GIB);
        assert_eq!(mem_bytes(Some(2 * GIB)), GIB); // the edge: >= 2 GiB leaves 1 GiB
        assert_eq!(mem_bytes(Some(2 * GIB - 1)), (2 * GIB - 1) / 2);
        assert_eq!(mem_bytes(Some(512 * MB)), 256 * MB);
        assert_eq!(mem_bytes(Some(1)), 0);
        assert_eq!(mem_bytes(None), GIB);
    }

    #[test]
    fn disk_leaves_five_gib_from_ten_gib_up_and_halves_below() {
        assert_eq!(disk_bytes(Some(252 * GIB)), 247 * GIB);
        assert_eq!(disk_bytes(Some(10 * GIB)), 5 * GIB); // the edge: >= 10 GiB leaves 5 GiB
        assert_eq!(disk_bytes(Some(10 * GIB - 1)), (10 * GIB - 1) / 2);
        assert_eq!(disk_bytes(Some(64 * MB)), 32 * MB);
        assert_eq!(disk_bytes(None), 10 * GIB);
    }

    #[test]
    fn everything_is_detected_without_the_flag() {
        // 3 GiB + 1.5 MiB of memory: 2049.5 MiB, truncated to whole MiB as Mesos does.
        let r = agent_resources(None, &host(2, 3 * GIB + 3 * MB / 2, 100 * GIB)).unwrap();
        assert_eq!(r.cpus(), Some(Scalar::from_units(2)));
        assert_eq!(r.mem(), Some(Scalar::from_units(2049)));
        assert_eq!(r.disk(), Some(Scalar::from_units(95 * 1024)));
        assert_eq!(r.ports().map(|p| p.len()), Some(1001));
        assert_eq!(r.unreserved(), r, "detected resources are unreserved");
    }

    #[test]
    fn small_machines_get_half() {
        let r = agent_resources(None, &host(1, 1536 * MB, 6 * GIB)).unwrap();
        assert_eq!(r.mem(), Some(Scalar::from_units(768)));
        assert_eq!(r.disk(), Some(Scalar::from_units(3 * 1024)));
    }

    #[test]
    fn failed_probes_fall_back_to_mesos_defaults() {
        let r = agent_resources(None, &HostTotals::default()).unwrap();
        assert_eq!(r.cpus(), Some(Scalar::from_units(1)));
        assert_eq!(r.mem(), Some(Scalar::from_units(1024)));
        assert_eq!(r.disk(), Some(Scalar::from_units(10240)));
    }

    #[test]
    fn the_flag_overrides_per_resource() {
        let h = host(8, 32 * GIB, 500 * GIB);
        // disk named (reserved for db): no unreserved disk is detected; cpus, mem, ports are.
        let r = agent_resources(Some("disk(db):10000"), &h).unwrap();
        assert_eq!(
            r.reserved(Some("db")).disk(),
            Some(Scalar::from_units(10000))
        );
        assert_eq!(r.unreserved().disk(), None);
        assert_eq!(r.cpus(), Some(Scalar::from_units(8)));
        assert_eq!(r.mem(), Some(Scalar::from_units(31 * 1024)));
        // cpus:0 names cpus: none are detected (Mesos checks the names, not the values).
        let r = agent_resources(Some("cpus:0;mem:100;ports:[1-2]"), &h).unwrap();
        assert_eq!(r.cpus(), None);
        assert_eq!(r.mem(), Some(Scalar::from_units(100)));
        assert_eq!(r.ports().map(|p| p.len()), Some(2));
        assert_eq!(r.disk(), Some(Scalar::from_units(495 * 1024)));
        // A JSON array works the same way.
        let r = agent_resources(
            Some(r#"[{"name":"cpus","type":"SCALAR","scalar":{"value":3}}]"#),
            &h,
        )
        .unwrap();
        assert_eq!(r.cpus(), Some(Scalar::from_units(3)));
        assert_eq!(r.mem(), Some(Scalar::from_units(31 * 1024)));
    }

    #[test]
    fn a_bad_flag_is_a_typed_error() {
        let h = host(1, GIB, GIB);
        for bad in ["cpus", "disk(db:1", "mem:lots", "disk:1;disk:{a}"] {
            assert!(
                matches!(
                    agent_resources(Some(bad), &h),
                    Err(ResourcesError::InvalidConfigured { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_probe_reads_this_host() {
        let dir = std::env::temp_dir().join("berth-detect-missing/a/b");
        let h = HostTotals::probe(&dir);
        let cpus = h.cpus.expect("cpus online");
        assert!(cpus >= 1);
        assert!(h.memory_bytes.expect("memory") > 64 * MB);
        assert!(h.disk_bytes.expect("disk of /tmp's filesystem") > 0);
    }
}
