//! Interned resource metadata: what a [`crate::Resources`] entry points at instead of holding
//! a whole [`Resource`].
//!
//! A resource's *metadata* is everything but its value: name, value type, reservation stack,
//! disk info, labels, revocability, sharedness, allocation and provider. Every structurally
//! identical metadata is held once per process, as a [`Meta`] (an `Arc`), so that a collection
//! entry is a pointer, a value and a few flags, and two entries of one metadata compare by
//! pointer. Interning hashes and compares a metadata once, when a resource enters a collection;
//! collections derived from one another (`clone`, `+`, `-`, filters, `convert`) copy pointers.
//!
//! Interning is by *structure*, not by Mesos equality: Mesos equality ignores a volume's
//! container path and mode, the creator principal, label order and unset-versus-empty labels
//! and roots, and two entries that Mesos finds equal must still print as they were given. The
//! table is keyed by [`Resource::metadata_hash`] (Mesos equality), so metadata that Mesos finds
//! equal share a hash; `Resources` compares such entries with [`Resource::same_metadata`] when
//! their pointers differ.
//!
//! **Memory.** The table holds `Weak` references in 16 mutex-guarded shards. A metadata lives as
//! long as an entry points at it (each shard counts its live metadata: up when interned, down
//! when the last handle drops); a shard's dead slots are swept when it holds more than twice
//! its live metadata plus 1024 slots (amortized O(1) per interning), and its table gives its
//! memory back when most of it was dead, so a long-running process that sees ever new metadata
//! (roles, labels, volumes) holds at most about twice the live metadata plus a constant, never
//! everything it has seen, and a burst that died does not leave a sparse table that misses the
//! cache on every probe. Interning also drops the dead slots it meets in the bucket it scans,
//! so a hash that is interned, dropped and interned again (many equal-by-Mesos metadata in
//! turn) keeps a short bucket between sweeps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, Weak};

use rustc_hash::FxHashMap;

use crate::resource::{DiskInfo, DiskSource, Labels, ReservationInfo, Resource, SourceRoot};
use crate::value::{Value, ValueType};

/// One interned metadata.
#[derive(Debug)]
pub(crate) struct MetaInner {
    /// The metadata, as a resource whose value is the empty value of its type.
    pub(crate) proto: Resource,
    /// [`Resource::metadata_hash`] of `proto`.
    pub(crate) hash: u64,
    /// The shard whose table holds it, or [`NOT_INTERNED`].
    shard: usize,
    /// This metadata with its last reservation popped, once asked for (Mesos
    /// `popReservation`, which RESERVE asks of every resource it reserves).
    popped: OnceLock<Meta>,
}

/// [`MetaInner::shard`] of a metadata made for one look-up, in no table.
const NOT_INTERNED: usize = usize::MAX;

impl MetaInner {
    /// A metadata for one look-up, in no table (`proto`'s value is not used).
    pub(crate) fn probe(proto: Resource, hash: u64) -> MetaInner {
        MetaInner {
            proto,
            hash,
            shard: NOT_INTERNED,
            popped: OnceLock::new(),
        }
    }

    /// This metadata with its last reservation popped, interned (`None` when unreserved).
    /// Worked out once per metadata: it holds the result, which holds nothing back.
    pub(crate) fn popped(&self) -> Option<&Meta> {
        if self.proto.reservations.is_empty() {
            return None;
        }
        Some(self.popped.get_or_init(|| {
            let mut proto = self.proto.clone();
            proto.reservations.pop();
            intern(proto).0
        }))
    }
}

impl Drop for MetaInner {
    fn drop(&mut self) {
        if let Some(live) = LIVE.get(self.shard) {
            live.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A handle on an interned metadata; equal handles point at one object.
pub(crate) type Meta = Arc<MetaInner>;

const SHARDS: usize = 16;

/// Dead slots a shard may hold beyond twice its live metadata before it is swept.
const SWEEP_FLOOR: usize = 1024;

#[derive(Default)]
struct Shard {
    table: FxHashMap<u64, Vec<Weak<MetaInner>>>,
    /// Slots in `table`, live or dead.
    slots: usize,
}

/// A shard's live metadata: counted up when interned (under the shard's lock), down when
/// the last handle drops (without it). One cache line each.
#[repr(align(64))]
struct Live(AtomicUsize);

static LIVE: [Live; SHARDS] = [const { Live(AtomicUsize::new(0)) }; SHARDS];

static TABLE: LazyLock<[Mutex<Shard>; SHARDS]> =
    LazyLock::new(|| std::array::from_fn(|_| Mutex::new(Shard::default())));

/// The shard of `hash`: its top bits (FxHash mixes them best).
fn shard_index(hash: u64) -> usize {
    usize::try_from(hash >> 60).unwrap_or(0) % SHARDS
}

fn shard(hash: u64) -> MutexGuard<'static, Shard> {
    let i = shard_index(hash);
    let [first, ..] = &*TABLE;
    let m = TABLE.get(i).unwrap_or(first);
    // A panic while holding a shard cannot leave it inconsistent (every change is one insert
    // or one retain), so a poisoned lock is still good.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The empty value of type `t`.
pub(crate) fn empty_value(t: ValueType) -> Value {
    match t {
        ValueType::Scalar => Value::Scalar(crate::Scalar::ZERO),
        ValueType::Ranges => Value::Ranges(crate::Ranges::default()),
        ValueType::Set => Value::Set(crate::Set::default()),
    }
}

/// Interns `resource`'s metadata (its value is replaced by the empty value of its type);
/// returns the handle and the value taken out.
pub(crate) fn intern(mut resource: Resource) -> (Meta, Value) {
    let empty = empty_value(resource.value_type());
    let value = std::mem::replace(&mut resource.value, empty);
    let hash = resource.metadata_hash();
    let meta = intern_with(resource, hash, |r| r);
    (meta, value)
}

/// Interns `resource`'s metadata, copying it only when it is new (its value is ignored).
pub(crate) fn intern_ref(resource: &Resource) -> Meta {
    let hash = resource.metadata_hash();
    intern_with(resource, hash, proto_of)
}

/// A copy of `resource`'s metadata: the resource with the empty value of its type.
pub(crate) fn proto_of(resource: &Resource) -> Resource {
    let mut proto = resource.clone();
    proto.value = empty_value(resource.value_type());
    proto
}

/// The interned metadata structurally equal to `resource`'s, or `proto(resource)` (the
/// metadata with an empty value) interned; `hash` is `resource.metadata_hash()`.
fn intern_with<R: std::borrow::Borrow<Resource>>(
    resource: R,
    hash: u64,
    proto: impl FnOnce(R) -> Resource,
) -> Meta {
    let mut guard = shard(hash);
    let s = &mut *guard;
    if let Some(bucket) = s.table.get_mut(&hash) {
        let mut i = 0;
        while let Some(w) = bucket.get(i) {
            match w.upgrade() {
                Some(m) if same_structure(&m.proto, resource.borrow()) => return m,
                Some(_) => i += 1,
                None => {
                    bucket.swap_remove(i);
                    s.slots = s.slots.saturating_sub(1);
                }
            }
        }
    }
    let i = shard_index(hash);
    let m = Arc::new(MetaInner {
        proto: proto(resource),
        hash,
        shard: i,
        popped: OnceLock::new(),
    });
    s.table.entry(hash).or_default().push(Arc::downgrade(&m));
    s.slots += 1;
    let live = LIVE
        .get(i)
        .map_or(0, |l| l.0.fetch_add(1, Ordering::Relaxed) + 1);
    if s.slots > 2 * live + SWEEP_FLOOR {
        sweep(s);
    }
    m
}

/// The interned metadata structurally equal to `resource`'s (its value is ignored), if any
/// entry holds one; `hash` is `resource.metadata_hash()`. Interns nothing.
pub(crate) fn lookup(resource: &Resource, hash: u64) -> Option<Meta> {
    let s = shard(hash);
    s.table
        .get(&hash)?
        .iter()
        .filter_map(Weak::upgrade)
        .find(|m| same_structure(&m.proto, resource))
}

/// Drops the dead slots of a shard, and gives back the table's memory when most of it held
/// dead slots (after a burst of metadata that died: a sparse table misses the cache on every
/// probe).
fn sweep(s: &mut Shard) {
    s.table.retain(|_, bucket| {
        bucket.retain(|w| w.strong_count() > 0);
        !bucket.is_empty()
    });
    s.slots = s.table.values().map(Vec::len).sum();
    if s.table.capacity() > 4 * s.table.len() + 64 {
        s.table.shrink_to(2 * s.table.len());
    }
}

/// Slots the shards' tables have room for (for tests of their memory).
#[cfg(test)]
pub(crate) fn capacity() -> usize {
    TABLE
        .iter()
        .map(|m| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .table
                .capacity()
        })
        .sum()
}

/// Slots held by the table, live or dead (for tests of its bound).
#[cfg(test)]
pub(crate) fn slots() -> usize {
    TABLE
        .iter()
        .map(|m| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .slots
        })
        .sum()
}

fn labels_strict(a: Option<&Labels>, b: Option<&Labels>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.0 == b.0,
        (None, None) => true,
        _ => false,
    }
}

fn reservation_strict(a: &ReservationInfo, b: &ReservationInfo) -> bool {
    a.kind == b.kind
        && a.role == b.role
        && a.principal == b.principal
        && labels_strict(a.labels.as_ref(), b.labels.as_ref())
}

fn root_strict(a: Option<&SourceRoot>, b: Option<&SourceRoot>) -> bool {
    a.map(|r| &r.root) == b.map(|r| &r.root)
}

fn source_strict(a: &DiskSource, b: &DiskSource) -> bool {
    a.kind == b.kind
        && root_strict(a.path.as_ref(), b.path.as_ref())
        && root_strict(a.mount.as_ref(), b.mount.as_ref())
        && a.id == b.id
        && labels_strict(a.metadata.as_ref(), b.metadata.as_ref())
        && a.profile == b.profile
        && a.vendor == b.vendor
}

fn disk_strict(a: &DiskInfo, b: &DiskInfo) -> bool {
    a.persistence == b.persistence
        && a.volume == b.volume
        && match (&a.source, &b.source) {
            (Some(x), Some(y)) => source_strict(x, y),
            (None, None) => true,
            _ => false,
        }
}

/// Structural equality of metadata: every field but the value, as written (label order,
/// unset versus empty, volume, creator principal).
pub(crate) fn same_structure(a: &Resource, b: &Resource) -> bool {
    a.name == b.name
        && a.value_type() == b.value_type()
        && a.revocable == b.revocable
        && a.shared == b.shared
        && a.allocation_info == b.allocation_info
        && a.provider_id == b.provider_id
        && (a.reservations.same_object(&b.reservations)
            || (a.reservations.len() == b.reservations.len()
                && a.reservations
                    .iter()
                    .zip(b.reservations.iter())
                    .all(|(x, y)| reservation_strict(x, y))))
        && match (&a.disk, &b.disk) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y) || disk_strict(x, y),
            (None, None) => true,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Label, ReservationInfo};
    use crate::{Role, Scalar};

    fn cpus(role: &str, labels: Vec<Label>) -> Resource {
        let mut r = Resource::scalar("cpus", Scalar::from_units(1));
        let info =
            ReservationInfo::dynamic(Role::new(role).unwrap_or_else(|_| unreachable!()), None)
                .with_labels(Labels(labels));
        r.reservations.push(info);
        r
    }

    #[test]
    fn identical_metadata_is_held_once_and_values_are_taken_out() {
        let (a, va) = intern(cpus("x", vec![Label::new("k", "v")]));
        let (b, vb) = intern(cpus("x", vec![Label::new("k", "v")]));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(va, Value::Scalar(Scalar::from_units(1)));
        assert_eq!(vb, va);
        assert!(a.proto.value.is_empty());
    }

    /// Mesos finds these equal; the interner keeps them apart so each prints as written.
    #[test]
    fn metadata_equal_only_to_mesos_is_held_apart() {
        let one = cpus("y", vec![Label::new("a", "1"), Label::new("b", "2")]);
        let other = cpus("y", vec![Label::new("b", "2"), Label::new("a", "1")]);
        assert!(one.same_metadata(&other));
        let (a, _) = intern(one);
        let (b, _) = intern(other);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a.hash, b.hash);
        assert_eq!(
            b.proto.reservations[0]
                .labels
                .as_ref()
                .map(|l| l.0[0].key.as_str()),
            Some("b")
        );
    }

    /// Threads interning the same metadata at once all get the one object.
    #[test]
    fn threads_share_one_object() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    (0..2000)
                        .map(|i| intern(cpus(&format!("t{}", i % 50), vec![])).0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let got: Vec<Vec<Meta>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
        assert_eq!(got.len(), 8);
        for metas in &got {
            assert_eq!(metas.len(), 2000);
            for (i, m) in metas.iter().enumerate() {
                let first = got.first().and_then(|g| g.get(i));
                assert!(first.is_some_and(|f| Arc::ptr_eq(f, m)), "entry {i}");
            }
        }
    }

    /// The tests that measure the whole table, one at a time.
    static TABLE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A process that sees ever new metadata and drops it holds a bounded table.
    #[test]
    fn the_table_does_not_grow_with_dead_metadata() {
        let _one = TABLE_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for i in 0..50_000 {
            let (m, _) = intern(cpus(&format!("gone{i}"), vec![]));
            drop(m);
        }
        // Other tests intern concurrently, but far fewer than this bound.
        let held = slots();
        assert!(held < SHARDS * (2 * SWEEP_FLOOR) + 10_000, "{held} slots");
    }

    /// A table that a burst of metadata grew gives its memory back once the burst died.
    #[test]
    fn a_burst_that_died_gives_its_table_memory_back() {
        let _one = TABLE_TESTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let burst: Vec<Meta> = (0..60_000)
            .map(|i| intern(cpus(&format!("burst{i}"), vec![])).0)
            .collect();
        assert!(capacity() >= 60_000, "{} slots of room", capacity());
        drop(burst);
        // The next internings in each shard sweep it and shrink its table.
        let after: Vec<Meta> = (0..2_000)
            .map(|i| intern(cpus(&format!("after{i}"), vec![])).0)
            .collect();
        // Other tests intern concurrently, but far fewer than this bound.
        let room = capacity();
        assert!(room < 30_000, "{room} slots of room");
        drop(after);
    }
}
