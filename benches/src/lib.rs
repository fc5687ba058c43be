//! Workloads for berth's criterion benchmarks: Mesos's resource benchmarks
//! (`src/tests/resources_tests.cpp`) and the allocator's `UpdateAllocation` shape, built with
//! `berth-resources` (see `benches/resources.rs` and `README.md`).

use berth_resources::{
    DiskInfo, Label, Labels, Persistence, PersistenceId, Range, Ranges, ReservationInfo, Resource,
    Resources, Role, Scalar, Value, Volume, VolumeMode,
};

/// Any error while building a workload (benches abort on it).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The four unreserved scalars of Mesos's `Arithmetic/0`: `cpus:1;gpus:1;mem:128;disk:256`.
///
/// # Errors
/// Never in practice: the text is fixed.
pub fn scalars() -> Result<Resources, Error> {
    Ok(Resources::parse("cpus:1;gpus:1;mem:128;disk:256", "*")?)
}

/// `Arithmetic/1`: the four scalars pushed with 1 000 distinct dynamic reservations (role `i`,
/// principal `principal_i`, label `key_i: value_i`), i.e. 4 000 resource objects.
///
/// # Errors
/// If a role or reservation is refused.
pub fn reservations(count: usize) -> Result<Resources, Error> {
    let base = scalars()?;
    let mut out = Resources::new();
    for i in 0..count {
        let info =
            ReservationInfo::dynamic(Role::new(&i.to_string())?, Some(&format!("principal_{i}")))
                .with_labels(Labels(vec![Label::new(
                    format!("key_{i}"),
                    format!("value_{i}"),
                )]));
        out += &base.push_reservation(&info)?;
    }
    Ok(out)
}

/// Mesos `createDiskResource(size, role, persistenceId, containerPath, None, shared)`: a disk
/// reserved (legacy form, i.e. statically) to `role` holding a RW persistent volume.
///
/// # Errors
/// If the role or the persistence id is refused.
pub fn persistent_volume(
    size_mb: i64,
    role: &str,
    id: &str,
    container_path: &str,
    shared: bool,
) -> Result<Resource, Error> {
    let mut r = Resource::scalar("disk", Scalar::from_units(size_mb));
    r.reservations
        .push(ReservationInfo::static_(Role::new(role)?));
    r.disk = Some(std::sync::Arc::new(DiskInfo {
        persistence: Some(Persistence {
            id: PersistenceId::new(id)?,
            principal: None,
        }),
        volume: Some(Volume::new(container_path, VolumeMode::Rw)),
        source: None,
    }));
    r.shared = shared;
    Ok(r)
}

/// `Arithmetic/2`: `cpus:1;mem:128` plus a shared 256 MB persistent volume of role `test`
/// (`persistentId` at `/volume`).
///
/// # Errors
/// Never in practice: the inputs are fixed.
pub fn shared_volume() -> Result<Resources, Error> {
    let mut r = Resources::parse("cpus:1;mem:128", "*")?;
    r += persistent_volume(256, "test", "persistentId", "/volume", true)?;
    Ok(r)
}

/// Mesos `createRevocableResource("cpus", "1", "*", true)`.
#[must_use]
pub fn revocable_cpus() -> Resources {
    let mut r = Resource::scalar("cpus", Scalar::from_units(1));
    r.revocable = true;
    Resources::from(r)
}

/// A `ports` resource (unreserved) covering `ranges` (`(begin, end)`, inclusive; invalid pairs
/// are dropped).
#[must_use]
pub fn ports(ranges: impl IntoIterator<Item = (u64, u64)>) -> Resources {
    let ranges = Ranges::new(ranges.into_iter().filter_map(|(b, e)| Range::new(b, e)));
    Resources::from(Resource::new("ports", Value::Ranges(ranges)))
}

/// Mesos `fragment(bounds, n)`: `[begin, end]` with the values `begin + 2i - 1` removed for
/// `i` in `1..n`, i.e. `n` fragments (`[1-16000]`, 8000 → `[1-1,3-3,…,15997-15997,15999-16000]`).
#[must_use]
pub fn fragment(begin: u64, end: u64, fragments: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut start = begin;
    for i in 1..fragments {
        let hole = begin + 2 * i - 1;
        if hole > end {
            break;
        }
        out.push((start, hole - 1));
        start = hole + 1;
    }
    if start <= end {
        out.push((start, end));
    }
    out
}

/// Mesos `Parse` input: `res0:0;res1:1;…` with `count` scalar resources.
#[must_use]
pub fn parse_text(count: usize) -> String {
    (0..count)
        .map(|i| format!("res{i}:{i}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// `ArithmeticOverlapping/n` operand: `n` port ranges `[first + 10k, last + 10k]`.
#[must_use]
pub fn overlapping_ports(n: u64, first: u64, last: u64) -> Resources {
    ports((0..n).map(|k| (first + 10 * k, last + 10 * k)))
}

/// Mesos `Resources::apply(ResourceConversion)` on one collection: refuse unless `consumed` is
/// held, then replace it by `converted` (`Resources::convert` does the `contains`, `-=` and
/// `+=` of Mesos's code in one pass).
pub fn apply_conversion(
    resources: &mut Resources,
    consumed: &Resources,
    converted: &Resources,
) -> bool {
    resources.convert(consumed, converted)
}

/// The allocator `UpdateAllocation/{0,1,2}` shape: one agent whose resources are split
/// between `roles` frameworks (one role each); each framework holds
/// `cpus:100;mem:100;disk:100;ports:[p-p]` and can RESERVE it for its role (dynamic, with a
/// principal and one label with a 36-character value) or UNRESERVE it again.
#[derive(Clone, Debug)]
pub struct Allocation {
    /// The agent's total resources.
    pub agent: Resources,
    /// Each framework's allocation.
    pub frameworks: Vec<Resources>,
    /// Each framework's unreserved and reserved forms.
    pub conversions: Vec<(Resources, Resources)>,
}

impl Allocation {
    /// The agent with `roles` frameworks, everything unreserved. Framework `i` gets port
    /// `2 + i` (Mesos gives each `[2-2]`, which cannot be held unreserved by several frameworks
    /// on one agent once ranges are unioned).
    ///
    /// # Errors
    /// If a role or reservation is refused.
    pub fn new(roles: usize) -> Result<Allocation, Error> {
        let mut agent = Resources::new();
        let mut frameworks = Vec::with_capacity(roles);
        let mut conversions = Vec::with_capacity(roles);
        for i in 0..roles {
            let port = 2 + u64::try_from(i)?;
            let mut unreserved = Resources::parse("cpus:100;mem:100;disk:100", "*")?;
            unreserved += &ports([(port, port)]);
            let label = format!("{i:08x}-0000-4000-8000-{i:012x}");
            let info = ReservationInfo::dynamic(
                Role::new(&format!("role{i}"))?,
                Some(&format!("principal{i}")),
            )
            .with_labels(Labels(vec![Label::new("key", label)]));
            let reserved = unreserved.push_reservation(&info)?;
            agent += &unreserved;
            frameworks.push(unreserved.clone());
            conversions.push((unreserved, reserved));
        }
        Ok(Allocation {
            agent,
            frameworks,
            conversions,
        })
    }

    /// One `updateAllocation(RESERVE)` per framework: the agent and the framework's allocation
    /// both convert. False if a conversion is refused.
    pub fn reserve_all(&mut self) -> bool {
        let mut ok = true;
        for (fw, (unreserved, reserved)) in self.frameworks.iter_mut().zip(&self.conversions) {
            ok &= apply_conversion(&mut self.agent, unreserved, reserved);
            ok &= apply_conversion(fw, unreserved, reserved);
        }
        ok
    }

    /// One `updateAllocation(UNRESERVE)` per framework (the reverse of [`Allocation::reserve_all`]).
    pub fn unreserve_all(&mut self) -> bool {
        let mut ok = true;
        for (fw, (unreserved, reserved)) in self.frameworks.iter_mut().zip(&self.conversions) {
            ok &= apply_conversion(&mut self.agent, reserved, unreserved);
            ok &= apply_conversion(fw, reserved, unreserved);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_have_mesos_shapes() {
        assert_eq!(scalars().unwrap().len(), 4);
        assert_eq!(reservations(1000).unwrap().len(), 4000);
        let shared = shared_volume().unwrap();
        assert_eq!(shared.len(), 3);
        assert_eq!(shared.shared().len(), 1);
        assert_eq!(revocable_cpus().revocable().len(), 1);

        let f = fragment(1, 16000, 8000);
        assert_eq!(f.len(), 8000);
        assert_eq!(f[0], (1, 1));
        assert_eq!(f[7998], (15997, 15997));
        assert_eq!(f[7999], (15999, 16000));
        assert_eq!(ports(f).ports().unwrap().ranges().len(), 8000);

        let text = parse_text(100);
        assert!(text.starts_with("res0:0;res1:1;"));
        assert!(text.ends_with(";res99:99"));
        assert_eq!(Resources::parse(&text, "*").unwrap().len(), 99);

        assert_eq!(
            overlapping_ports(10, 1, 6).ports().unwrap().ranges().len(),
            10
        );
    }

    #[test]
    fn allocation_round_trips() {
        let mut a = Allocation::new(50).unwrap();
        let start = a.agent.clone();
        assert_eq!(start.len(), 4);
        assert!(a.reserve_all());
        assert_eq!(a.agent.len(), 200);
        assert!(a.unreserve_all());
        assert_eq!(a.agent, start);
        assert!(
            a.frameworks
                .iter()
                .zip(&a.conversions)
                .all(|(f, (u, _))| f == u)
        );
    }
}
