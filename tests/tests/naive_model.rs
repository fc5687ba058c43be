//! `Resources` against a naive model: a plain list of `(resource, copies)` entries with Mesos's
//! rules for adding, subtracting and containing (`Resources::operator+=`, `-=`, `contains`,
//! `addable`, `subtractable`, `Resource_::contains`), written here again from those rules. Random
//! sequences of `+=`, `-=`, `+`, `-`, `contains`, conversions (what `apply` does) and codec round
//! trips run on both; after every step both hold the same entries (compared as multisets of
//! structurally identical resources with their copy counts). The pool of resources makes
//! collisions likely, and one step adds many identical MOUNT disks (entries that never merge and
//! share their metadata). Other steps add, subtract and convert runs of resources reserved to
//! many roles (many metadata, each entry alone with its own), so that entries of the collection
//! empty out and fill again in every order, in collections large enough to be indexed.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)] // test helpers abort on setup errors; indexes come from the pool's own range

use std::sync::Arc;

use berth_resources::{
    DiskInfo, DiskSource, DiskSourceType, Persistence, PersistenceId, Range, Ranges,
    ReservationInfo, Resource, Resources, Role, Scalar, Value, Volume, VolumeMode,
};
use proptest::prelude::*;

/// Mesos: disks used whole (MOUNT, BLOCK, RAW with an id) and persistent volumes.
fn used_whole(r: &Resource) -> bool {
    let Some(disk) = &r.disk else { return false };
    disk.persistence.is_some()
        || disk.source.as_ref().is_some_and(|s| {
            matches!(s.kind, DiskSourceType::Mount | DiskSourceType::Block)
                || (s.kind == DiskSourceType::Raw && s.id.is_some())
        })
}

/// Mesos `addable(left, right)`.
fn addable(l: &Resource, r: &Resource) -> bool {
    if l.shared || r.shared {
        return l.shared && r.shared && l == r;
    }
    l.same_metadata(r) && !used_whole(l)
}

/// Mesos `subtractable(left, right)`.
fn subtractable(l: &Resource, r: &Resource) -> bool {
    if l.shared || r.shared {
        return l.shared && r.shared && l == r;
    }
    l.same_metadata(r) && (!used_whole(l) || l == r)
}

fn negative_or_empty(r: &Resource) -> bool {
    r.is_empty() || matches!(r.value, Value::Scalar(s) if s < Scalar::ZERO)
}

/// Mesos's `Resources`: a plain list of `Resource_` (a resource and its shared count).
#[derive(Clone, Debug, Default)]
struct Naive(Vec<(Resource, u64)>);

impl Naive {
    fn add(&mut self, r: &Resource, copies: u64) {
        if !r.is_valid() || r.is_empty() || copies == 0 {
            return;
        }
        for (l, count) in &mut self.0 {
            if addable(l, r) {
                if l.shared {
                    *count += copies;
                } else {
                    l.value.add_assign(&r.value);
                }
                return;
            }
        }
        self.0.push((r.clone(), copies));
    }

    /// Subtracts; false when no entry was subtractable.
    fn subtract(&mut self, r: &Resource, copies: u64) -> bool {
        if !r.is_valid() || r.is_empty() {
            return true;
        }
        let Some(i) = self.0.iter().position(|(l, _)| subtractable(l, r)) else {
            return false;
        };
        let (l, count) = &mut self.0[i];
        let gone = if l.shared {
            *count = count.saturating_sub(copies);
            *count == 0
        } else {
            l.value.sub_assign(&r.value);
            negative_or_empty(l)
        };
        if gone {
            self.0.remove(i);
        }
        true
    }

    /// Mesos `Resource_::contains` over the entries.
    fn contains_one(&self, r: &Resource, copies: u64) -> bool {
        self.0.iter().any(|(l, count)| {
            if l.shared || r.shared {
                l.shared && r.shared && *count >= copies && l == r
            } else {
                subtractable(l, r) && r.value.le(&l.value)
            }
        })
    }

    /// Mesos `contains(Resources)`: matched persistent volumes are taken away as it goes.
    fn contains(&self, other: &Naive) -> bool {
        let mut remaining = self.clone();
        for (r, copies) in &other.0 {
            if !remaining.contains_one(r, *copies) {
                return false;
            }
            if r.is_persistent_volume() {
                remaining.subtract(r, *copies);
            }
        }
        true
    }

    /// berth's conversion: `consumed` contained, and each of its entries really taken away
    /// (stricter than Mesos for a whole disk listed twice), then `converted` added.
    fn convert(&mut self, consumed: &Naive, converted: &Naive) -> bool {
        if !self.contains(consumed) {
            return false;
        }
        let mut next = self.clone();
        for (r, copies) in &consumed.0 {
            if !next.subtract(r, *copies) {
                return false;
            }
        }
        for (r, copies) in &converted.0 {
            next.add(r, *copies);
        }
        *self = next;
        true
    }

    fn of(list: &[Resource]) -> Naive {
        let mut n = Naive::default();
        for r in list {
            n.add(r, 1);
        }
        n
    }
}

fn engine_of(list: &[Resource]) -> Resources {
    list.iter().cloned().collect()
}

/// Same entries, same copy counts, whatever the order.
fn assert_same(engine: &Resources, naive: &Naive, step: &str) {
    let mut left: Vec<(Resource, u64)> = engine
        .iter_with_counts()
        .map(|(r, c)| (r.clone(), c))
        .collect();
    assert_eq!(
        left.len(),
        naive.0.len(),
        "{step}: engine [{engine}] vs model {:?}",
        naive.0
    );
    for (r, c) in &naive.0 {
        let Some(i) = left
            .iter()
            .position(|(l, lc)| lc == c && l.identical(r) && l.value == r.value)
        else {
            panic!("{step}: model entry {r} x{c} not in engine [{engine}]");
        };
        left.swap_remove(i);
    }
}

fn disk(source: Option<DiskSource>, size: i64) -> Resource {
    let mut r = Resource::scalar("disk", Scalar::from_units(size));
    if source.is_some() {
        r.disk = Some(Arc::new(DiskInfo {
            persistence: None,
            volume: None,
            source,
        }));
    }
    r
}

fn reserved(mut r: Resource, role: &str) -> Resource {
    r.reservations.push(ReservationInfo::dynamic(
        Role::new(role).unwrap(),
        Some("ops"),
    ));
    r
}

fn volume(id: &str, shared: bool, path: &str) -> Resource {
    let mut r = reserved(disk(None, 10), "db");
    r.disk = Some(Arc::new(DiskInfo {
        persistence: Some(Persistence {
            id: PersistenceId::new(id).unwrap(),
            principal: Some("ops".into()),
        }),
        volume: Some(Volume::new(path, VolumeMode::Rw)),
        source: None,
    }));
    r.shared = shared;
    r
}

/// A small pool, so that sequences collide: mergeable scalars and PATH disks, identical and
/// distinct MOUNT disks, ports, persistent volumes and a shared volume. (Two volumes equal for
/// Mesos but not identical — the same id at two container paths — are left out: which of them
/// a subtraction takes depends on entry order, which neither Mesos nor berth specifies.)
fn pool() -> Vec<Resource> {
    vec![
        Resource::scalar("cpus", Scalar::from_milli(1500)),
        Resource::scalar("cpus", Scalar::from_units(4)),
        reserved(Resource::scalar("mem", Scalar::from_units(128)), "db"),
        disk(Some(DiskSource::mount("/m")), 100),
        disk(Some(DiskSource::mount("/m")), 100),
        disk(Some(DiskSource::mount("/m")), 50),
        disk(Some(DiskSource::mount("/m2")), 100),
        reserved(disk(Some(DiskSource::mount("/m")), 100), "db"),
        disk(Some(DiskSource::path("/p")), 30),
        disk(Some(DiskSource::path("/p")), 70),
        Resource::new("ports", Value::Ranges(Ranges::new(Range::new(10, 20)))),
        Resource::new("ports", Value::Ranges(Ranges::new(Range::new(15, 30)))),
        volume("v1", false, "data"),
        volume("v2", false, "data"),
        volume("s1", true, "data"),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Add(usize),
    /// `n` copies of the pool's resource (many identical MOUNT disks when it is one).
    AddMany(usize, usize),
    Subtract(usize),
    SubtractMany(usize, usize),
    AddAll(Vec<usize>),
    SubtractAll(Vec<usize>),
    Contains(Vec<usize>),
    ContainsOne(usize),
    Convert(Vec<usize>, Vec<usize>),
    /// `cpus` (or `ports` when odd) reserved to roles `r<first>`..`r<first + n>`.
    AddRoles(usize, usize),
    SubtractRoles(usize, usize),
    /// RESERVE-like: the unreserved form of the run converted to the reserved one, or back.
    ConvertRoles(usize, usize, bool),
    JsonRoundTrip,
    /// Through `serde` (`Serialize`, then the streaming `Deserialize`).
    SerdeRoundTrip,
    ProtoRoundTrip,
}

fn step() -> impl Strategy<Value = Step> {
    let n = pool().len();
    let ix = 0..n;
    let list = || prop::collection::vec(0..n, 0..6);
    prop_oneof![
        3 => ix.clone().prop_map(Step::Add),
        2 => (3usize..6, 1usize..80).prop_map(|(i, k)| Step::AddMany(i, k)),
        1 => (ix.clone(), 1usize..20).prop_map(|(i, k)| Step::AddMany(i, k)),
        3 => ix.clone().prop_map(Step::Subtract),
        2 => (3usize..6, 1usize..80).prop_map(|(i, k)| Step::SubtractMany(i, k)),
        2 => list().prop_map(Step::AddAll),
        2 => list().prop_map(Step::SubtractAll),
        2 => list().prop_map(Step::Contains),
        1 => ix.prop_map(Step::ContainsOne),
        2 => (list(), list()).prop_map(|(a, b)| Step::Convert(a, b)),
        2 => (0usize..ROLES, 1usize..ROLES).prop_map(|(a, n)| Step::AddRoles(a, n)),
        2 => (0usize..ROLES, 1usize..ROLES).prop_map(|(a, n)| Step::SubtractRoles(a, n)),
        2 => (0usize..ROLES, 1usize..ROLES, any::<bool>())
            .prop_map(|(a, n, back)| Step::ConvertRoles(a, n, back)),
        1 => Just(Step::JsonRoundTrip),
        1 => Just(Step::SerdeRoundTrip),
        1 => Just(Step::ProtoRoundTrip),
    ]
}

/// Roles of the runs of `AddRoles`, `SubtractRoles` and `ConvertRoles`.
const ROLES: usize = 48;

/// Resource `k` of a run: `cpus:2` reserved to role `r<k>` (or its unreserved form), or for odd
/// `k` the port `1000 + k`.
fn of_role(k: usize, reserve: bool) -> Resource {
    let k = k % ROLES;
    let base = if k % 2 == 1 {
        let port = 1000 + k as u64;
        Resource::new("ports", Value::Ranges(Ranges::new(Range::new(port, port))))
    } else {
        Resource::scalar("cpus", Scalar::from_units(2))
    };
    if reserve {
        reserved(base, &format!("r{k}"))
    } else {
        base
    }
}

fn run_of(first: usize, n: usize, reserve: bool) -> Vec<Resource> {
    (first..first + n).map(|k| of_role(k, reserve)).collect()
}

fn pick(pool: &[Resource], ix: &[usize]) -> Vec<Resource> {
    ix.iter().map(|&i| pool[i % pool.len()].clone()).collect()
}

fn run(steps: &[Step]) {
    let pool = pool();
    let mut engine = Resources::new();
    let mut naive = Naive::default();
    for (k, s) in steps.iter().enumerate() {
        let what = format!("step {k} {s:?}");
        match s {
            Step::Add(i) => {
                engine += pool[*i].clone();
                naive.add(&pool[*i], 1);
            }
            Step::AddMany(i, n) => {
                for _ in 0..*n {
                    engine.add_resource(pool[*i].clone());
                    naive.add(&pool[*i], 1);
                }
            }
            Step::Subtract(i) => {
                engine -= &pool[*i];
                naive.subtract(&pool[*i], 1);
            }
            Step::SubtractMany(i, n) => {
                for _ in 0..*n {
                    engine.subtract_resource(&pool[*i]);
                    naive.subtract(&pool[*i], 1);
                }
            }
            Step::AddAll(ix) => {
                let list = pick(&pool, ix);
                engine = &engine + &engine_of(&list);
                for (r, c) in &Naive::of(&list).0 {
                    naive.add(r, *c);
                }
            }
            Step::SubtractAll(ix) => {
                let list = pick(&pool, ix);
                engine = &engine - &engine_of(&list);
                for (r, c) in &Naive::of(&list).0 {
                    naive.subtract(r, *c);
                }
            }
            Step::Contains(ix) => {
                let list = pick(&pool, ix);
                assert_eq!(
                    engine.contains(&engine_of(&list)),
                    naive.contains(&Naive::of(&list)),
                    "{what}"
                );
            }
            Step::ContainsOne(i) => {
                assert_eq!(
                    engine.contains_resource(&pool[*i]),
                    naive.contains_one(&pool[*i], 1),
                    "{what}"
                );
            }
            Step::Convert(a, b) => {
                let (consumed, converted) = (pick(&pool, a), pick(&pool, b));
                assert_eq!(
                    engine.convert(&engine_of(&consumed), &engine_of(&converted)),
                    naive.convert(&Naive::of(&consumed), &Naive::of(&converted)),
                    "{what}"
                );
            }
            Step::AddRoles(first, n) => {
                let list = run_of(*first, *n, true);
                engine += &engine_of(&list);
                for (r, c) in &Naive::of(&list).0 {
                    naive.add(r, *c);
                }
            }
            Step::SubtractRoles(first, n) => {
                let list = run_of(*first, *n, true);
                engine -= &engine_of(&list);
                for (r, c) in &Naive::of(&list).0 {
                    naive.subtract(r, *c);
                }
            }
            Step::ConvertRoles(first, n, back) => {
                let (unreserved, reserved) = (run_of(*first, *n, false), run_of(*first, *n, true));
                let (consumed, converted) = if *back {
                    (reserved, unreserved)
                } else {
                    (unreserved, reserved)
                };
                assert_eq!(
                    engine.convert(&engine_of(&consumed), &engine_of(&converted)),
                    naive.convert(&Naive::of(&consumed), &Naive::of(&converted)),
                    "{what}"
                );
            }
            Step::JsonRoundTrip => {
                engine = Resources::from_json(&engine.to_json()).unwrap();
            }
            Step::SerdeRoundTrip => {
                let text = serde_json::to_string(&engine).unwrap();
                engine = serde_json::from_str(&text).unwrap();
            }
            Step::ProtoRoundTrip => {
                engine = Resources::from_proto_list(&engine.to_proto_list()).unwrap();
            }
        }
        assert_same(&engine, &naive, &what);
        // Equality is mutual containment, on both sides.
        assert!(engine == engine.clone(), "{what}");
        assert_eq!(
            engine.len(),
            naive.0.len(),
            "{what}: entries counted once each"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resources_follow_the_naive_model(steps in prop::collection::vec(step(), 1..40)) {
        run(&steps);
    }
}

/// Many identical MOUNT disks: each is its own entry, subtracted one at a time, and a
/// conversion of all of them (what RESERVE does) takes each away once.
#[test]
fn many_identical_mount_disks() {
    let d = disk(Some(DiskSource::mount("/m")), 100);
    let n = 2_000;
    let list = vec![d.clone(); n];
    let mut engine = engine_of(&list);
    let naive = Naive::of(&list);
    assert_same(&engine, &naive, "built");
    assert_eq!(engine.len(), n);
    let converted: Vec<Resource> = list.iter().map(|r| reserved(r.clone(), "db")).collect();
    assert!(engine.convert(&engine_of(&list), &engine_of(&converted)));
    assert_eq!(engine.reserved(Some("db")).len(), n);
    assert_eq!(engine.unreserved().len(), 0);
    // One more than held cannot be converted.
    let mut more = list.clone();
    more.push(d.clone());
    let mut back = engine_of(&list);
    assert!(!back.convert(&engine_of(&more), &Resources::new()));
    assert_eq!(back.len(), n);
    for k in 0..n {
        back -= &d;
        assert_eq!(back.len(), n - k - 1);
    }
    assert!(back.is_empty());
}

/// Shrunk from a failure of a broken index (a removal that did not re-point the entry moved
/// into the freed position): an indexed collection, then a removal that moves an entry.
#[test]
fn regression_a_removal_repoints_the_moved_entry() {
    run(&[
        Step::AddMany(3, 5),
        Step::AddAll(vec![0, 2, 5]),
        Step::Subtract(0),
    ]);
}
