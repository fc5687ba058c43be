//! [`Resources`]: a combined collection of resources with Mesos's arithmetic (`research` A-4…A-10).
//!
//! * Adding merges a resource into the entry it is *addable* to (same metadata; scalars add,
//!   ranges and sets union, identical shared volumes count copies), else appends it. Invalid or
//!   empty resources are ignored, as in Mesos.
//! * Subtracting takes from the entry it is *subtractable* from; an entry that becomes empty or
//!   negative is removed; subtracting something absent is a no-op.
//! * MOUNT and BLOCK disks, RAW disks with an id and persistent volumes never merge, and are only
//!   subtracted whole.
//! * `contains` consumes matched persistent volumes so one volume cannot satisfy two requests;
//!   equality is mutual containment.
//!
//! An entry is not a [`Resource`] but a small value: a handle on the resource's interned
//! metadata (see `intern`: name, type, reservations, disk, flags, hashed and compared once, when
//! the resource enters a collection), its value, its copy count and a few flags, 64 bytes in
//! all. Collections made from one another share metadata handles, so walking two of them side
//! by side (`+=`, `-=`, `contains`, `convert`) compares pointers, and copying one copies small
//! entries. What [`Resources::iter`] lends is built from the entries on the first call after a
//! change and kept until the next change.
//!
//! Lookups go through a hash index of resource metadata once a collection has more than a few
//! entries, so adding or subtracting a collection of `n` resources costs `O(n)`, not `O(n²)`
//! as in Mesos. The index is built once a few look-ups have walked the collection (a walk is
//! some 30 times cheaper than building it) and is not copied by `clone`: walks side by side
//! try the entry after the last match first and mostly never need it. Entry order is insertion
//! order until something is removed.
//!
//! A mergeable entry (one per metadata) that becomes empty is kept, vacant, where it is: the
//! next resource with its metadata fills it again without moving entries, touching the index
//! or allocating, which is what a scheduler's RESERVE/UNRESERVE loop does all the time.
//! Vacant entries are invisible (not counted, iterated or matched) and are dropped once they
//! outnumber the live ones.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

use crate::intern::{Meta, MetaInner, intern};
use crate::resource::{DiskSourceType, ReservationInfo, ReservationType, Resource};
use crate::value::{Ranges, Value};
use crate::{Role, Scalar};

/// Conversions of at most this many mergeable entries take the short path
/// (`Resources::convert_mergeable`).
const FAST_CONVERT: usize = 8;

/// Look-ups that walk a collection before it builds its index: building one costs some 30
/// walks (a hash insert per entry against a compare), and a collection that is cloned, looked
/// up a few times and dropped (an offer operation applied to a copy) never needs it.
const SCANS_BEFORE_INDEX: u32 = 8;

/// Collections at least this long keep a hash index.
const INDEX_THRESHOLD: usize = 16;

/// An entry: interned metadata, a value and a few flags (64 bytes), so that walking and
/// copying a collection touches little memory and copying an entry is a pointer copy (one
/// reference count) and a value copy.
#[derive(Clone, Debug)]
struct Entry {
    /// The metadata, interned.
    meta: Meta,
    /// The value (of the metadata's type).
    value: Value,
    /// [`Resource::metadata_hash`] (the metadata's), cached here to compare without a load.
    hash: u64,
    /// Number of copies of a shared resource; 1 for others; 0 for a vacant entry.
    count: u64,
    /// Never merged with another entry (a disk used whole, or a shared volume), so that
    /// entries with equal metadata may be many; a mergeable entry is alone with its metadata.
    single: bool,
    /// A shared resource (copies are counted).
    shared: bool,
    /// A persistent volume (consumed by `contains`).
    volume: bool,
}

impl Entry {
    /// One copy of `value` with the metadata `meta`; the flags follow from the metadata.
    fn new(meta: Meta, value: Value) -> Entry {
        let r = &meta.proto;
        Entry {
            single: r.shared || whole_only(r),
            shared: r.shared,
            volume: r.is_persistent_volume(),
            hash: meta.hash,
            meta,
            value,
            count: 1,
        }
    }

    #[inline]
    fn is_vacant(&self) -> bool {
        self.count == 0
    }

    /// The entry as a resource.
    fn resource(&self) -> Resource {
        let mut r = self.meta.proto.clone();
        r.value = self.value.clone();
        r
    }

    /// The metadata (with an empty value).
    fn proto(&self) -> &Resource {
        &self.meta.proto
    }
}

/// A bucket slot whose entry was removed.
const TOMBSTONE: u32 = u32::MAX;

/// Entry positions sharing one metadata hash, in the order the entries were added; almost
/// always exactly one. Entries that never merge (MOUNT disks, persistent volumes) and have
/// the same metadata share a bucket however many there are, so every operation on a bucket is
/// O(1) (amortized): each entry knows its slot, a removal leaves a tombstone, the first live
/// slot is kept, and the slots are compacted once tombstones outnumber live entries.
#[derive(Clone, Debug)]
enum Bucket {
    One(u32),
    /// Boxed: rare, and it keeps the index's entries small (copied with every clone).
    Many(Box<Slots>),
}

/// The positions of a bucket of more than one entry.
#[derive(Clone, Debug)]
struct Slots {
    /// Entry positions by slot (`TOMBSTONE` for removed entries).
    slots: Vec<u32>,
    /// The first live slot.
    head: usize,
    /// Live slots.
    live: usize,
}

impl Bucket {
    /// The live positions, first added first.
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        let slots = match self {
            Bucket::One(i) => std::slice::from_ref(i),
            Bucket::Many(m) => m.slots.get(m.head..).unwrap_or_default(),
        };
        slots
            .iter()
            .filter(|&&i| i != TOMBSTONE)
            .map(|&i| i as usize)
    }

    /// Appends position `i`; returns its slot. `first_slot` is set to the slot of the first
    /// entry when a one-entry bucket grows.
    fn push(&mut self, i: u32, first_slot: &mut Option<(u32, u32)>) -> u32 {
        match self {
            Bucket::One(first) => {
                *first_slot = Some((*first, 0));
                *self = Bucket::Many(Box::new(Slots {
                    slots: vec![*first, i],
                    head: 0,
                    live: 2,
                }));
                1
            }
            Bucket::Many(m) => {
                m.slots.push(i);
                m.live += 1;
                check_u32(m.slots.len() - 1)
            }
        }
    }

    /// Points `slot` at position `to` (the entry there was moved).
    fn set(&mut self, slot: u32, to: u32) {
        match self {
            Bucket::One(x) => *x = to,
            Bucket::Many(m) => {
                if let Some(x) = m.slots.get_mut(slot as usize) {
                    *x = to;
                }
            }
        }
    }
}

/// A combined collection of resources.
#[derive(Default)]
pub struct Resources {
    entries: Vec<Entry>,
    /// Built by a look-up in a collection of at least [`INDEX_THRESHOLD`] entries once
    /// [`SCANS_BEFORE_INDEX`] look-ups have walked it, then kept up to date; not copied by
    /// `clone` (a copy that is only walked side by side with others never needs it).
    index: OnceLock<Box<Index>>,
    /// Look-ups that walked the entries for want of an index.
    scans: AtomicU32,
    /// Vacant entries in `entries`.
    vacant: usize,
    /// The most live entries held at once since the vacant ones were last dropped.
    peak: usize,
    /// Entries that never merge (`Entry::single`; never vacant), so that a conversion of
    /// mergeable entries only knows it without a walk.
    singles: usize,
    /// Where the last conversion stopped taking and adding (the positions after the last
    /// entry it subtracted from and added to): where the next one most likely starts, when a
    /// scheduler converts one framework's or task's resources after another's. Only a guess,
    /// always checked.
    cursor: (usize, usize),
    /// The live entries as resources, made on the first [`Resources::iter`] after a change
    /// (entries hold interned metadata, not resources, so what `iter` lends is built here).
    view: OnceLock<Box<[Resource]>>,
}

impl Clone for Resources {
    fn clone(&self) -> Resources {
        Resources {
            entries: self.entries.clone(),
            index: OnceLock::new(),
            scans: AtomicU32::new(0),
            vacant: self.vacant,
            peak: self.peak,
            singles: self.singles,
            cursor: self.cursor,
            view: OnceLock::new(),
        }
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter_with_counts()).finish()
    }
}

/// Vacant entries beyond `peak` that a collection keeps before it drops them all: so a
/// collection that swings between few and many entries (a scheduler's RESERVE/UNRESERVE loop)
/// keeps its entries in place, while one that sees ever new metadata stays bounded by its
/// largest size, as a vector's capacity is.
const VACANT_SLACK: usize = 16;

/// Equal metadata (Mesos A-3): the cached hashes first, then the interned handles; metadata
/// interned apart (equal to Mesos, not in structure) is compared field by field.
#[inline]
fn same_meta(l: &Entry, r: &Entry) -> bool {
    l.hash == r.hash
        && l.single == r.single
        && (Arc::ptr_eq(&l.meta, &r.meta) || l.meta.proto.same_metadata(&r.meta.proto))
}

/// Mesos `addable(l, r)`: a shared volume to an identical one (copies count), anything else
/// mergeable to its metadata's entry.
#[inline]
fn addable(l: &Entry, r: &Entry) -> bool {
    if r.shared {
        same_meta(l, r) && l.value == r.value
    } else {
        !r.single && same_meta(l, r)
    }
}

/// Disks that are used whole: never merged, only subtracted when equal.
fn whole_only(r: &Resource) -> bool {
    let Some(disk) = &r.disk else { return false };
    if disk.persistence.is_some() {
        return true;
    }
    match &disk.source {
        Some(s) => match s.kind {
            DiskSourceType::Mount | DiskSourceType::Block => true,
            DiskSourceType::Raw => s.id.is_some(),
            DiskSourceType::Path => false,
        },
        None => false,
    }
}

/// Mesos `subtractable(l, r)`: same metadata, and equal when never merged (whole disks,
/// shared volumes).
#[inline]
fn subtractable(l: &Entry, r: &Entry) -> bool {
    same_meta(l, r) && (!l.single || l.value == r.value)
}

/// Mesos `Resource_::contains` (a vacant entry contains nothing).
#[inline(always)]
fn entry_contains(l: &Entry, r: &Entry) -> bool {
    if l.is_vacant() || !subtractable(l, r) {
        return false;
    }
    if l.shared {
        l.count >= r.count
    } else {
        r.value.le(&l.value)
    }
}

fn check_u32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The hash index of a collection: entry positions by metadata hash, and where each entry's
/// position is kept in its bucket.
#[derive(Debug, Default)]
struct Index {
    map: FxHashMap<u64, Bucket>,
    /// `slots[i]`: the slot of the entry at position `i` in its bucket.
    slots: Vec<u32>,
}

impl Index {
    /// The index of `entries`.
    fn build(entries: &[Entry]) -> Index {
        let mut index = Index {
            map: FxHashMap::default(),
            slots: Vec::with_capacity(entries.len()),
        };
        index.map.reserve(entries.len());
        for e in entries {
            index.push(e.hash);
        }
        index
    }

    /// Files the next position, whose entry has metadata hash `hash`.
    fn push(&mut self, hash: u64) {
        let i = self.slots.len();
        let position = check_u32(i);
        let mut first = None;
        let slot = match self.map.get_mut(&hash) {
            Some(bucket) => bucket.push(position, &mut first),
            None => {
                self.map.insert(hash, Bucket::One(position));
                0
            }
        };
        if let Some((p, s)) = first
            && let Some(x) = self.slots.get_mut(p as usize)
        {
            *x = s;
        }
        self.slots.push(slot);
    }

    /// The positions of the entries with metadata hash `hash`, first added first.
    fn positions(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        self.map.get(&hash).into_iter().flat_map(Bucket::positions)
    }

    /// Forgets the entry at `i` (hash `removed`), whose place the last entry (hash `moved`,
    /// if there was one after it) takes.
    fn swap_remove(&mut self, i: usize, removed: u64, moved: Option<u64>) {
        let removed_slot = self.slots.get(i).copied().unwrap_or(0);
        // The former last entry, now at `i`, keeps its slot (and so its place in its bucket).
        if let Some(hash) = moved
            && let Some(&slot) = self.slots.last()
            && let Some(bucket) = self.map.get_mut(&hash)
        {
            bucket.set(slot, check_u32(i));
        }
        self.slots.swap_remove(i);
        let Some(bucket) = self.map.get_mut(&removed) else {
            return;
        };
        let Bucket::Many(m) = bucket else {
            self.map.remove(&removed);
            return;
        };
        let Slots { slots, head, live } = &mut **m;
        if let Some(x) = slots.get_mut(removed_slot as usize) {
            *x = TOMBSTONE;
        }
        *live = live.saturating_sub(1);
        while slots.get(*head) == Some(&TOMBSTONE) {
            *head += 1;
        }
        if *live <= 1 {
            match slots.get(*head).copied() {
                Some(only) if *live == 1 => {
                    *bucket = Bucket::One(only);
                    if let Some(x) = self.slots.get_mut(only as usize) {
                        *x = 0;
                    }
                }
                _ => {
                    self.map.remove(&removed);
                }
            }
        } else if slots.len() - *live > *live + 8 {
            // Compact: keep the live slots in order, and tell their entries where they are.
            let kept: Vec<u32> = slots
                .get(*head..)
                .unwrap_or_default()
                .iter()
                .copied()
                .filter(|&p| p != TOMBSTONE)
                .collect();
            for (slot, &p) in kept.iter().enumerate() {
                if let Some(x) = self.slots.get_mut(p as usize) {
                    *x = check_u32(slot);
                }
            }
            *slots = kept;
            *head = 0;
        }
    }
}

impl Resources {
    /// An empty collection.
    #[must_use]
    pub fn new() -> Resources {
        Resources::default()
    }

    /// An empty collection with room for `n` entries (and their index).
    fn with_capacity(n: usize) -> Resources {
        Resources {
            entries: Vec::with_capacity(n),
            ..Resources::default()
        }
    }

    /// Number of distinct entries (identical shared copies are one entry).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len() - self.vacant
    }

    /// True when nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live entries.
    fn live(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter().filter(|e| !e.is_vacant())
    }

    /// The live entries as resources, built once after each change.
    fn view(&self) -> &[Resource] {
        self.view
            .get_or_init(|| self.live().map(Entry::resource).collect())
    }

    /// Forgets the view: called by everything that changes an entry.
    #[inline]
    fn touch(&mut self) {
        if self.view.get().is_some() {
            self.view = OnceLock::new();
        }
    }

    /// The entries, each once.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.view().iter()
    }

    /// The entries with their copy counts (1 for non-shared resources).
    pub fn iter_with_counts(&self) -> impl Iterator<Item = (&Resource, u64)> + '_ {
        self.view().iter().zip(self.live().map(|e| e.count))
    }

    /// Every resource, a shared one repeated once per copy.
    pub fn iter_expanded(&self) -> impl Iterator<Item = &Resource> + '_ {
        self.iter_with_counts().flat_map(|(r, count)| {
            std::iter::repeat_n(r, usize::try_from(count).unwrap_or(usize::MAX))
        })
    }

    /// Copies of a shared resource held (0 if absent); 1 or 0 for others.
    #[must_use]
    pub fn count(&self, r: &Resource) -> u64 {
        let hash = r.metadata_hash();
        self.candidates(hash)
            .find(|&i| {
                self.entries.get(i).is_some_and(|e| {
                    !e.is_vacant() && e.value == r.value && e.proto().same_metadata(r)
                })
            })
            .and_then(|i| self.entries.get(i))
            .map_or(0, |e| e.count)
    }

    fn candidates(&self, hash: u64) -> Box<dyn Iterator<Item = usize> + '_> {
        match self.index() {
            Some(index) => Box::new(index.positions(hash)),
            None => Box::new(
                self.entries
                    .iter()
                    .enumerate()
                    .filter(move |(_, e)| e.hash == hash)
                    .map(|(i, _)| i),
            ),
        }
    }

    fn find(&self, hash: u64, pred: impl Fn(&Entry) -> bool) -> Option<usize> {
        self.find_at(hash, |_, e| pred(e))
    }

    /// [`Resources::find`] for `entry`, trying position `guess` first. A mergeable entry is
    /// alone with its metadata, so if the entry at `guess` satisfies `pred` (which compares
    /// metadata) it is the one the index would give. Collections made from one another keep
    /// their order, so walking two of them side by side mostly hits without hashing.
    fn find_near(
        &self,
        guess: usize,
        entry: &Entry,
        pred: impl Fn(&Entry) -> bool,
    ) -> Option<usize> {
        if !entry.single
            && let Some(l) = self.entries.get(guess)
            && l.hash == entry.hash
            && pred(l)
        {
            return Some(guess);
        }
        self.find(entry.hash, pred)
    }

    /// The first entry with metadata hash `hash` for which `pred(position, entry)` holds.
    fn find_at(&self, hash: u64, pred: impl Fn(usize, &Entry) -> bool) -> Option<usize> {
        match self.index() {
            Some(index) => match index.map.get(&hash) {
                None => None,
                // Almost always: one entry with this hash.
                Some(&Bucket::One(i)) => {
                    let i = i as usize;
                    self.entries.get(i).is_some_and(|e| pred(i, e)).then_some(i)
                }
                Some(bucket) => bucket
                    .positions()
                    .find(|&i| self.entries.get(i).is_some_and(|e| pred(i, e))),
            },
            None => self
                .entries
                .iter()
                .enumerate()
                .position(|(i, e)| e.hash == hash && pred(i, e)),
        }
    }

    /// The index, built now if the collection is long enough to need one.
    fn index(&self) -> Option<&Index> {
        if let Some(index) = self.index.get() {
            return Some(index);
        }
        if self.entries.len() < INDEX_THRESHOLD
            || self.scans.fetch_add(1, Ordering::Relaxed) < SCANS_BEFORE_INDEX
        {
            return None;
        }
        Some(
            self.index
                .get_or_init(|| Box::new(Index::build(&self.entries))),
        )
    }

    fn push(&mut self, entry: Entry) {
        self.touch();
        let hash = entry.hash;
        self.singles += usize::from(entry.single);
        self.entries.push(entry);
        self.peak = self.peak.max(self.len());
        if let Some(index) = self.index.get_mut() {
            index.push(hash);
        }
    }

    /// Removes the entry at `i`; the last entry takes its place.
    fn remove(&mut self, i: usize) -> Option<Entry> {
        if i >= self.entries.len() {
            return None;
        }
        self.touch();
        let removed = self.entries.swap_remove(i);
        self.singles = self.singles.saturating_sub(usize::from(removed.single));
        if let Some(index) = self.index.get_mut() {
            let moved = self.entries.get(i).map(|e| e.hash);
            index.swap_remove(i, removed.hash, moved);
        }
        Some(removed)
    }

    fn add_entry(&mut self, entry: &Entry) {
        self.add_entry_near(usize::MAX, entry);
    }

    /// Adds `entry`, looking at position `guess` first; returns the position it went to.
    fn add_entry_near(&mut self, guess: usize, entry: &Entry) -> Option<usize> {
        if entry.value.is_empty() || entry.count == 0 {
            return None;
        }
        // A disk used whole is addable to nothing (what it could merge with has its metadata,
        // so is used whole too): skip the search, which for many equal disks is the whole bucket.
        if entry.single && !entry.shared {
            self.push(entry.clone());
            return None;
        }
        let found = self.find_near(guess, entry, |e| addable(e, entry));
        if found.is_some() {
            self.touch();
        }
        match found.and_then(|i| self.entries.get_mut(i)) {
            Some(e) if e.is_vacant() => {
                // The entry of this metadata, kept empty: it takes the resource again (with
                // its metadata, which may differ in what Mesos does not compare).
                if !Arc::ptr_eq(&e.meta, &entry.meta) {
                    e.meta = Arc::clone(&entry.meta);
                }
                e.value.assign_from(&entry.value);
                e.count = 1;
                self.vacant = self.vacant.saturating_sub(1);
                self.peak = self.peak.max(self.len());
            }
            Some(e) => {
                if e.shared {
                    e.count = e.count.saturating_add(entry.count);
                } else {
                    e.value.add_assign(&entry.value);
                }
            }
            None => {
                self.push(entry.clone());
                return None;
            }
        }
        found
    }

    /// Drops the vacant entries once there are more of them than the collection ever held
    /// live entries (amortized O(1) per vacancy). Never called while positions are held.
    fn settle(&mut self) {
        if self.vacant > self.peak + VACANT_SLACK {
            self.compact();
        }
    }

    /// Drops every vacant entry and rebuilds the index.
    fn compact(&mut self) {
        self.touch();
        self.entries.retain(|e| !e.is_vacant());
        self.vacant = 0;
        self.peak = self.entries.len();
        self.index = OnceLock::new();
    }

    /// Subtracts `entry`; false when nothing was subtractable (a no-op, as in Mesos).
    fn subtract_entry(&mut self, entry: &Entry) -> bool {
        self.subtract_entry_near(usize::MAX, entry).is_some()
    }

    /// Subtracts `entry`, looking at position `guess` first; the position subtracted from, or
    /// `None` when nothing was subtractable (`Some(usize::MAX)` for an empty `entry`).
    fn subtract_entry_near(&mut self, guess: usize, entry: &Entry) -> Option<usize> {
        if entry.value.is_empty() {
            return Some(usize::MAX);
        }
        let i = self.find_near(guess, entry, |e| !e.is_vacant() && subtractable(e, entry))?;
        self.subtract_at(i, entry);
        Some(i)
    }

    /// [`Resources::subtract_at`] for a mergeable `entry` (so the entry at `i` is mergeable
    /// too, and is kept, vacant, if it becomes empty), inlined into the loops that walk
    /// collections side by side.
    #[inline]
    fn subtract_mergeable_at(&mut self, i: usize, entry: &Entry) {
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        let gone = match (&mut e.value, &entry.value) {
            (Value::Scalar(a), Value::Scalar(b)) => {
                *a -= *b;
                *a <= Scalar::ZERO
            }
            (value, other) => {
                value.sub_assign(other);
                value.is_empty()
            }
        };
        if gone {
            e.value.clear();
            e.count = 0;
            self.vacant += 1;
        }
    }

    /// Subtracts `entry` from the entry at `i` (which must be subtractable from it).
    fn subtract_at(&mut self, i: usize, entry: &Entry) {
        if self.view.get().is_some() {
            self.view = OnceLock::new();
        }
        let Some(e) = self.entries.get_mut(i) else {
            return;
        };
        let gone = if e.shared {
            e.count = e.count.saturating_sub(entry.count);
            e.count == 0
        } else {
            e.value.sub_assign(&entry.value);
            e.value.is_empty() || matches!(e.value, Value::Scalar(s) if s < Scalar::ZERO)
        };
        if !gone {
            return;
        }
        if e.single {
            self.remove(i);
        } else {
            // Alone with its metadata: kept, vacant, for the next resource with it.
            e.value.clear();
            e.count = 0;
            self.vacant += 1;
        }
    }

    fn contains_entry(&self, entry: &Entry) -> bool {
        self.find(entry.hash, |e| entry_contains(e, entry))
            .is_some()
    }

    /// The entry of `resource`, its metadata interned.
    fn entry_of(resource: Resource) -> Entry {
        let (meta, value) = intern(resource);
        Entry::new(meta, value)
    }

    /// The entry of `resource`, its metadata interned (copied only if it is new).
    fn entry_of_ref(resource: &Resource) -> Entry {
        Entry::new(crate::intern::intern_ref(resource), resource.value.clone())
    }

    /// An entry to look `resource` up with: its interned metadata if there is one (then
    /// entries holding it compare by pointer), else a copy that is not interned (it is not kept).
    fn probe_of(resource: &Resource) -> Entry {
        let hash = resource.metadata_hash();
        let meta = crate::intern::lookup(resource, hash)
            .unwrap_or_else(|| Arc::new(MetaInner::probe(crate::intern::proto_of(resource), hash)));
        Entry::new(meta, resource.value.clone())
    }

    /// Adds one resource; invalid or empty resources are ignored (Mesos `+=`).
    pub fn add_resource(&mut self, resource: Resource) {
        if resource.is_valid() && !resource.is_empty() {
            self.add_entry(&Resources::entry_of(resource));
        }
    }

    /// Subtracts one resource; invalid, empty or absent resources are ignored (Mesos `-=`).
    pub fn subtract_resource(&mut self, resource: &Resource) {
        if resource.is_valid() {
            self.subtract_entry(&Resources::probe_of(resource));
            self.settle();
        }
    }

    /// Adds every entry of `other`.
    pub fn add_all(&mut self, other: &Resources) {
        if self.entries.is_empty() {
            // Nothing to merge with, and `other`'s entries are already combined: copied as
            // they are, without look-ups.
            self.touch();
            self.entries.reserve(other.len());
            self.entries.extend(other.live().cloned());
            self.singles = other.singles;
            self.peak = self.len();
            self.index = OnceLock::new();
            return;
        }
        self.add_all_guessing(other, [0, usize::MAX]);
    }

    /// [`Resources::add_all`] into a non-empty collection, with two guesses at where the
    /// first entry of `other` goes; returns the position after the last entry added to.
    fn add_all_guessing(&mut self, other: &Resources, guesses: [usize; 2]) -> usize {
        self.touch();
        let [mut guess, second] = guesses;
        if let Some(e) = other.live().next()
            && !self
                .entries
                .get(guess)
                .is_some_and(|l| Arc::ptr_eq(&l.meta, &e.meta))
        {
            guess = second;
        }
        for e in other.live() {
            if e.single {
                guess = self.add_entry_near(guess, e).map_or(usize::MAX, |i| i + 1);
                continue;
            }
            // The entry at `guess` with the same interned metadata (so the same hash and
            // flags) is the one the look-up would find: its metadata's only entry.
            // Else the first entry (collections often start with what they hold longest,
            // an agent's unreserved pool) before the look-up.
            let at = match (self.entries.get(guess), self.entries.first()) {
                (Some(l), _) if Arc::ptr_eq(&l.meta, &e.meta) => Some(guess),
                (_, Some(l)) if Arc::ptr_eq(&l.meta, &e.meta) => Some(0),
                _ => self.find_mergeable(e),
            };
            match at {
                Some(i) => {
                    self.merge_at(i, e);
                    guess = i + 1;
                }
                None => {
                    if !e.value.is_empty() {
                        self.push(e.clone());
                    }
                    guess = usize::MAX;
                }
            }
        }
        // Adding only fills entries: the live count is highest now.
        self.peak = self.peak.max(self.len());
        guess
    }

    /// The entry a mergeable `entry` merges with (its metadata's only entry, live or vacant).
    #[inline]
    fn find_mergeable(&self, entry: &Entry) -> Option<usize> {
        let same = |l: &Entry| {
            l.hash == entry.hash
                && !l.single
                && (Arc::ptr_eq(&l.meta, &entry.meta)
                    || l.meta.proto.same_metadata(&entry.meta.proto))
        };
        match self.index() {
            Some(index) => match index.map.get(&entry.hash)? {
                Bucket::One(i) => {
                    let i = *i as usize;
                    self.entries.get(i).is_some_and(same).then_some(i)
                }
                bucket => bucket
                    .positions()
                    .find(|&i| self.entries.get(i).is_some_and(same)),
            },
            None => self.entries.iter().position(same),
        }
    }

    /// Merges the mergeable `entry` into the entry at `i`, its metadata's: added to it, or
    /// filling it again if it is vacant (taking `entry`'s metadata, which may differ in what
    /// Mesos does not compare). The caller updates `peak`.
    #[inline]
    fn merge_at(&mut self, i: usize, entry: &Entry) {
        let Some(l) = self.entries.get_mut(i) else {
            return;
        };
        if l.count != 0 {
            l.value.add_assign(&entry.value);
        } else if let (Value::Scalar(a), Value::Scalar(b)) = (&mut l.value, &entry.value)
            && !b.is_zero()
        {
            // A vacant scalar entry (the common case) taking a (non-zero: live) scalar.
            if !Arc::ptr_eq(&l.meta, &entry.meta) {
                l.meta = Arc::clone(&entry.meta);
            }
            *a = *b;
            l.count = 1;
            self.vacant = self.vacant.saturating_sub(1);
        } else if !entry.value.is_empty() {
            if !Arc::ptr_eq(&l.meta, &entry.meta) {
                l.meta = Arc::clone(&entry.meta);
            }
            l.value.assign_from(&entry.value);
            l.count = 1;
            self.vacant = self.vacant.saturating_sub(1);
        }
    }

    /// Subtracts every entry of `other`.
    pub fn subtract_all(&mut self, other: &Resources) {
        let mut guess = 0;
        for e in other.live() {
            // As in `add_all`: the entry at `guess` with the same interned metadata.
            if !e.single
                && let Some(l) = self.entries.get(guess)
                && l.count != 0
                && Arc::ptr_eq(&l.meta, &e.meta)
            {
                self.subtract_at(guess, e);
                guess += 1;
                continue;
            }
            guess = match self.subtract_entry_near(guess, e) {
                Some(i) if i < self.entries.len() => i + 1,
                _ => guess,
            };
        }
        self.settle();
    }

    /// Mesos `contains(Resource)`: valid and held by one entry.
    #[must_use]
    pub fn contains_resource(&self, resource: &Resource) -> bool {
        resource.is_valid() && self.contains_entry(&Resources::probe_of(resource))
    }

    /// Mesos `contains(Resources)`: every entry of `other` is held; each matched persistent
    /// volume is consumed.
    #[must_use]
    pub fn contains(&self, other: &Resources) -> bool {
        if !other.live().any(|e| e.volume) {
            let mut guess = 0;
            return other.live().all(|e| {
                match self.find_near(guess, e, |l| entry_contains(l, e)) {
                    Some(i) => {
                        guess = i + 1;
                        true
                    }
                    None => false,
                }
            });
        }
        // Matched persistent volumes are consumed (copies taken per entry), without copying
        // the collection: Mesos subtracts them from a copy.
        let mut taken: Vec<(usize, u64)> = Vec::new();
        for e in other.live() {
            let volume = e.volume;
            let already = |i: usize| taken.iter().find(|(j, _)| *j == i).map_or(0, |(_, c)| *c);
            let found = self.find_at(e.hash, |i, l| {
                if !volume {
                    return entry_contains(l, e);
                }
                let left = l.count.saturating_sub(already(i));
                if l.shared {
                    e.shared && left >= e.count && same_meta(l, e) && l.value == e.value
                } else {
                    left > 0 && entry_contains(l, e)
                }
            });
            let Some(i) = found else { return false };
            if volume {
                let copies = if e.shared { e.count } else { 1 };
                match taken.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, c)) => *c += copies,
                    None => taken.push((i, copies)),
                }
            }
        }
        true
    }

    /// Mesos's resource conversion in one pass: if `consumed` is held, replace it by `converted`
    /// and return true; otherwise change nothing and return false. Equivalent to `contains`,
    /// `-=`, `+=` with one lookup per consumed entry instead of two, except that every consumed
    /// entry must really be removed: Mesos's `contains` lets one MOUNT disk "contain" the same
    /// disk listed twice (research Q-4), which would make resources out of nothing.
    pub fn convert(&mut self, consumed: &Resources, converted: &Resources) -> bool {
        debug_assert_eq!(
            consumed.singles,
            consumed.entries.iter().filter(|e| e.single).count(),
            "the count of entries used whole"
        );
        if consumed.singles == 0 && consumed.entries.len() <= FAST_CONVERT {
            return self.convert_mergeable(consumed, converted);
        }
        if consumed.live().any(|e| e.volume) {
            return self.convert_volumes(consumed, converted);
        }
        // 1. Mergeable entries have metadata of their own (on both sides), so each is taken
        //    from its own entry: all checked before anything changes.
        let mut first = [0usize; 8];
        let mut guess = 0;
        for (k, e) in consumed.live().filter(|e| !e.single).enumerate() {
            let Some(i) = self.find_near(guess, e, |l| entry_contains(l, e)) else {
                return false;
            };
            if let Some(p) = first.get_mut(k) {
                *p = i;
            }
            guess = i + 1;
        }
        // 2. Entries used whole (MOUNT and BLOCK disks, RAW disks with an id). When each finds
        //    an entry of its own, those are marked and removed highest position first (removing
        //    one moves the last entry, never a marked one, into its place), with no copy.
        let mut marked: Vec<u64> = Vec::new();
        let mut distinct = true;
        for e in consumed.live().filter(|e| e.single) {
            let Some(i) = self.find(e.hash, |l| entry_contains(l, e)) else {
                return false;
            };
            if marked.is_empty() {
                marked = vec![0; self.entries.len().div_ceil(64)];
            }
            if let Some(word) = marked.get_mut(i / 64) {
                let bit = 1u64 << (i % 64);
                distinct &= *word & bit == 0;
                *word |= bit;
            }
        }
        let mut taken: Vec<Entry> = Vec::new();
        if distinct {
            for (w, word) in marked.iter().enumerate().rev() {
                let mut bits = *word;
                while bits != 0 {
                    let b = 63 - bits.leading_zeros() as usize;
                    bits &= !(1u64 << b);
                    self.remove(w * 64 + b);
                }
            }
        } else {
            // Equal ones (identical disks) found the same entry: take them out one by one, so
            // that they need as many held copies (stricter than `contains`, research Q-4); if
            // one is missing, those taken go back and nothing has changed.
            for e in consumed.live().filter(|e| e.single) {
                let Some(i) = self.find(e.hash, |l| entry_contains(l, e)) else {
                    for x in taken {
                        self.push(x);
                    }
                    return false;
                };
                taken.extend(self.remove(i));
            }
        }
        let moved = !marked.is_empty();
        drop(taken);
        // 3. The mergeable entries, where step 1 found them unless step 2 moved entries.
        let mut guess = 0;
        for (k, e) in consumed.live().filter(|e| !e.single).enumerate() {
            let at = match first.get(k) {
                Some(&i) if !moved => Some(i),
                _ => self.find_near(guess, e, |l| entry_contains(l, e)),
            };
            if let Some(i) = at {
                self.subtract_at(i, e);
                guess = i + 1;
            }
        }
        self.add_all(converted);
        self.settle();
        true
    }

    /// [`Resources::convert`] of a few mergeable entries (a RESERVE or UNRESERVE of a task's
    /// resources, what allocators do all the time): each consumed entry has metadata of its
    /// own here too, so it is found and checked, then subtracted where it was found, in two
    /// short walks. Each is looked for at the position after the one before (the first where
    /// the last conversion stopped taking, or else at the start) before the look-up.
    fn convert_mergeable(&mut self, consumed: &Resources, converted: &Resources) -> bool {
        let mut at = [usize::MAX; FAST_CONVERT];
        // Where the last conversion stopped taking (or else the first entry).
        let mut guess = self.cursor.0;
        if let Some(e) = consumed.live().next()
            && !self
                .entries
                .get(guess)
                .is_some_and(|l| Arc::ptr_eq(&l.meta, &e.meta))
        {
            guess = 0;
        }
        for (e, slot) in consumed.entries.iter().zip(at.iter_mut()) {
            if e.is_vacant() {
                continue;
            }
            let i = match self.entries.get(guess) {
                // The entry of this interned metadata (mergeable, so alone with it).
                Some(l) if Arc::ptr_eq(&l.meta, &e.meta) && !l.is_vacant() => {
                    if !e.value.le(&l.value) {
                        return false;
                    }
                    guess
                }
                _ => match self.find_mergeable(e) {
                    Some(i) if self.entries.get(i).is_some_and(|l| entry_contains(l, e)) => i,
                    _ => return false,
                },
            };
            *slot = i;
            guess = i + 1;
        }
        self.touch();
        for (e, &i) in consumed.entries.iter().zip(&at) {
            if i != usize::MAX {
                self.subtract_mergeable_at(i, e);
            }
        }
        // What a conversion makes is looked for where the last one stopped adding, then
        // right after what this one took (a framework's reserved resources after its
        // unreserved ones).
        let added = if self.entries.is_empty() {
            self.add_all(converted);
            usize::MAX
        } else {
            self.add_all_guessing(converted, [self.cursor.1, guess])
        };
        self.cursor = (guess, added);
        self.settle();
        true
    }

    /// [`Resources::convert`] of persistent volumes: consumed one copy at a time, by Mesos's
    /// `contains`, then subtracted from a copy that replaces `self` only if every consumed entry
    /// was really taken.
    fn convert_volumes(&mut self, consumed: &Resources, converted: &Resources) -> bool {
        if !self.contains(consumed) {
            return false;
        }
        let mut next = self.clone();
        if !consumed.live().all(|e| next.subtract_entry(e)) {
            return false;
        }
        *self = next;
        self.add_all(converted);
        self.settle();
        true
    }

    /// The entries that satisfy `pred` (copy counts kept).
    #[must_use]
    pub fn filter(&self, pred: impl Fn(&Resource) -> bool) -> Resources {
        let mut out = Resources::new();
        for (e, _) in self.live().zip(self.view()).filter(|(_, r)| pred(r)) {
            out.push(e.clone());
        }
        out
    }

    /// The entries whose metadata satisfies `pred` (given the metadata with an empty value;
    /// copy counts kept), without building resources.
    fn filter_meta(&self, pred: impl Fn(&Resource) -> bool) -> Resources {
        let mut out = Resources::new();
        for e in self.live().filter(|e| pred(e.proto())) {
            out.push(e.clone());
        }
        out
    }

    /// Unreserved resources.
    #[must_use]
    pub fn unreserved(&self) -> Resources {
        self.filter_meta(Resource::is_unreserved)
    }

    /// Reserved resources, to `role` if given.
    #[must_use]
    pub fn reserved(&self, role: Option<&str>) -> Resources {
        self.filter_meta(|r| r.is_reserved(role))
    }

    /// Revocable resources.
    #[must_use]
    pub fn revocable(&self) -> Resources {
        self.filter_meta(|r| r.revocable)
    }

    /// Non-revocable resources.
    #[must_use]
    pub fn non_revocable(&self) -> Resources {
        self.filter_meta(|r| !r.revocable)
    }

    /// Shared resources.
    #[must_use]
    pub fn shared(&self) -> Resources {
        self.filter_meta(|r| r.shared)
    }

    /// Non-shared resources.
    #[must_use]
    pub fn non_shared(&self) -> Resources {
        self.filter_meta(|r| !r.shared)
    }

    /// Persistent volumes.
    #[must_use]
    pub fn persistent_volumes(&self) -> Resources {
        self.filter_meta(Resource::is_persistent_volume)
    }

    /// Resources that may be allocated to `role` (unreserved, or reserved to it or an ancestor).
    #[must_use]
    pub fn allocatable_to(&self, role: &str) -> Resources {
        self.filter_meta(|r| r.is_allocatable_to(role))
    }

    /// Rebuilds the collection with every entry's metadata mapped by `f` (re-combining).
    fn map(&self, f: impl Fn(&Resource) -> Resource) -> Resources {
        let mut out = Resources::with_capacity(self.len());
        for e in self.live() {
            let mut r = f(e.proto());
            r.value = e.value.clone();
            out.add_entry(&Entry {
                count: e.count,
                ..Resources::entry_of(r)
            });
        }
        out
    }

    /// Every reservation removed (Mesos `toUnreserved`).
    #[must_use]
    pub fn to_unreserved(&self) -> Resources {
        self.map(|r| {
            let mut r = r.clone();
            r.reservations.clear();
            r
        })
    }

    /// The last reservation of every entry removed (Mesos `popReservation`); unreserved entries
    /// stay as they are.
    #[must_use]
    pub fn pop_reservation(&self) -> Resources {
        let mut out = Resources::with_capacity(self.len());
        for e in self.live() {
            // The stack is not part of what the flags depend on (sharedness, a disk used
            // whole, a persistent volume), so they carry over.
            let meta = e
                .meta
                .popped()
                .map_or_else(|| Arc::clone(&e.meta), Arc::clone);
            out.add_entry(&Entry {
                hash: meta.hash,
                meta,
                value: e.value.clone(),
                count: e.count,
                single: e.single,
                shared: e.shared,
                volume: e.volume,
            });
        }
        out
    }

    /// `reservation` pushed on every entry (Mesos `pushReservation`).
    ///
    /// # Errors
    /// The first entry that the new stack would make invalid (e.g. not a refinement).
    pub fn push_reservation(
        &self,
        reservation: &ReservationInfo,
    ) -> Result<Resources, crate::ResourceError> {
        let mut out = Resources::with_capacity(self.len());
        for e in self.live() {
            let mut r = e.resource();
            r.reservations.push(reservation.clone());
            r.validate()?;
            out.add_entry(&Entry {
                count: e.count,
                ..Resources::entry_of(r)
            });
        }
        Ok(out)
    }

    /// Allocation info removed (Mesos `unallocate`).
    #[must_use]
    pub fn unallocate(&self) -> Resources {
        self.map(|r| {
            let mut r = r.clone();
            r.allocation_info = None;
            r
        })
    }

    /// Allocated to `role` (Mesos `allocate`).
    #[must_use]
    pub fn allocate(&self, role: &str) -> Resources {
        self.map(|r| {
            let mut r = r.clone();
            r.allocation_info = Some(crate::resource::AllocationInfo {
                role: Some(std::sync::Arc::from(role)),
            });
            r
        })
    }

    /// Total of the scalar resources named `name` (shared copies counted once, as in Mesos).
    #[must_use]
    pub fn scalar(&self, name: &str) -> Option<Scalar> {
        let mut total = None;
        for e in self.live().filter(|e| &*e.proto().name == name) {
            if let Value::Scalar(s) = e.value {
                total = Some(total.unwrap_or(Scalar::ZERO) + s);
            }
        }
        total
    }

    /// Union of the range resources named `name`.
    #[must_use]
    pub fn ranges(&self, name: &str) -> Option<Ranges> {
        let mut total: Option<Ranges> = None;
        for e in self.live().filter(|e| &*e.proto().name == name) {
            if let Value::Ranges(x) = &e.value {
                total = Some(total.map_or_else(|| x.clone(), |t| t.union(x)));
            }
        }
        total
    }

    /// Total `cpus`.
    #[must_use]
    pub fn cpus(&self) -> Option<Scalar> {
        self.scalar("cpus")
    }

    /// Total `mem` (MB).
    #[must_use]
    pub fn mem(&self) -> Option<Scalar> {
        self.scalar("mem")
    }

    /// Total `disk` (MB).
    #[must_use]
    pub fn disk(&self) -> Option<Scalar> {
        self.scalar("disk")
    }

    /// Total `gpus`.
    #[must_use]
    pub fn gpus(&self) -> Option<Scalar> {
        self.scalar("gpus")
    }

    /// All `ports`.
    #[must_use]
    pub fn ports(&self) -> Option<Ranges> {
        self.ranges("ports")
    }

    /// Roles of the current reservations present.
    #[must_use]
    pub fn reservation_roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = self
            .live()
            .filter_map(|e| e.proto().reservation_role().cloned())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }
}

impl Resource {
    /// Fast structural validity check used when adding to a collection: the invariants the
    /// types do not already guarantee (see [`Resource::validate`] for the error).
    #[must_use]
    pub fn is_valid(&self) -> bool {
        if self.name.is_empty() {
            return false;
        }
        if matches!(self.value, Value::Scalar(s) if s < Scalar::ZERO) {
            return false;
        }
        if let Some(disk) = &self.disk {
            if &*self.name != "disk" {
                return false;
            }
            if let Some(s) = &disk.source
                && matches!(s.kind, DiskSourceType::Block | DiskSourceType::Raw)
                && (s.path.is_some() || s.mount.is_some())
            {
                return false;
            }
        }
        if self.shared && !self.is_persistent_volume() {
            return false;
        }
        self.reservations.windows(2).all(|w| match w {
            [parent, child] => {
                child.kind == ReservationType::Dynamic
                    && child.role.is_strict_subrole_of(&parent.role)
            }
            _ => true,
        })
    }
}

impl FromIterator<Resource> for Resources {
    fn from_iter<I: IntoIterator<Item = Resource>>(iter: I) -> Resources {
        let iter = iter.into_iter();
        let mut out = Resources::with_capacity(iter.size_hint().0);
        for r in iter {
            out.add_resource(r);
        }
        out
    }
}

/// Collects borrowed resources: a metadata already interned is not copied.
impl<'a> FromIterator<&'a Resource> for Resources {
    fn from_iter<I: IntoIterator<Item = &'a Resource>>(iter: I) -> Resources {
        let iter = iter.into_iter();
        let mut out = Resources::with_capacity(iter.size_hint().0);
        for r in iter {
            if r.is_valid() && !r.is_empty() {
                out.add_entry(&Resources::entry_of_ref(r));
            }
        }
        out
    }
}

impl From<Resource> for Resources {
    fn from(r: Resource) -> Resources {
        let mut out = Resources::new();
        out.add_resource(r);
        out
    }
}

impl PartialEq for Resources {
    /// Mesos `==`: each contains the other.
    fn eq(&self, other: &Resources) -> bool {
        self.contains(other) && other.contains(self)
    }
}

impl AddAssign<&Resources> for Resources {
    fn add_assign(&mut self, rhs: &Resources) {
        self.add_all(rhs);
    }
}

impl SubAssign<&Resources> for Resources {
    fn sub_assign(&mut self, rhs: &Resources) {
        self.subtract_all(rhs);
    }
}

impl AddAssign<Resource> for Resources {
    fn add_assign(&mut self, rhs: Resource) {
        self.add_resource(rhs);
    }
}

impl SubAssign<&Resource> for Resources {
    fn sub_assign(&mut self, rhs: &Resource) {
        self.subtract_resource(rhs);
    }
}

impl Add<&Resources> for &Resources {
    type Output = Resources;
    fn add(self, rhs: &Resources) -> Resources {
        let mut out = self.clone();
        out.add_all(rhs);
        out
    }
}

impl Sub<&Resources> for &Resources {
    type Output = Resources;
    fn sub(self, rhs: &Resources) -> Resources {
        let mut out = self.clone();
        out.subtract_all(rhs);
        out
    }
}

impl Add<&Resources> for Resources {
    type Output = Resources;
    fn add(mut self, rhs: &Resources) -> Resources {
        self.add_all(rhs);
        self
    }
}

impl Sub<&Resources> for Resources {
    type Output = Resources;
    fn sub(mut self, rhs: &Resources) -> Resources {
        self.subtract_all(rhs);
        self
    }
}

impl fmt::Display for Resources {
    /// `a; b; c` as Mesos prints a collection.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for r in self.iter_expanded() {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            r.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::ReservationInfo;

    fn cpus_of(role: usize) -> Resource {
        let mut r = Resource::scalar("cpus", Scalar::from_units(1));
        if let Ok(role) = Role::new(&format!("r{role}")) {
            r.reservations
                .push(ReservationInfo::dynamic(role, Some("p")));
        }
        r
    }

    /// Emptied entries are kept for their metadata, but never more of them than the most live
    /// entries held at once (plus a constant): a long-running collection that sees ever new
    /// metadata stays bounded.
    #[test]
    fn vacant_entries_stay_bounded() {
        let mut all = Resources::new();
        all.add_resource(Resource::scalar("mem", Scalar::from_units(1)));
        for k in 0..10_000 {
            all.add_resource(cpus_of(k));
            all.subtract_resource(&cpus_of(k));
            assert_eq!(all.len(), 1);
            assert!(
                all.entries.len() <= 1 + VACANT_SLACK + 2,
                "{}",
                all.entries.len()
            );
        }
        // A swing to many entries and back keeps them (bounded by the largest size held)...
        let many: Resources = (0..1000).map(cpus_of).collect();
        all += &many;
        all -= &many;
        assert_eq!(all.len(), 1);
        let kept = all.entries.len();
        assert!((1001..=1001 + VACANT_SLACK + 2).contains(&kept), "{kept}");
        assert_eq!(all.iter().count(), 1);
        all += &many;
        assert_eq!(all.entries.len(), kept);
        assert_eq!(all.len(), 1001);
        all -= &many;
        // ...until more vacant entries than that pile up.
        for k in 1000..3000 {
            all.add_resource(cpus_of(k));
            all.subtract_resource(&cpus_of(k));
            assert!(all.entries.len() <= 2 * 1001 + VACANT_SLACK + 2);
        }
        assert!(all.entries.len() < 1001);
        assert_eq!(all.len(), 1);
    }

    /// Collecting borrowed resources gives what collecting copies gives (invalid and empty
    /// ones dropped, equal ones merged, labels kept as written), sharing interned metadata.
    #[test]
    fn collecting_borrowed_resources_is_collecting_copies() {
        let mut list: Vec<Resource> = (0..40).map(|k| cpus_of(k % 20)).collect();
        list.push(Resource::scalar("mem", Scalar::ZERO));
        list.push(Resource::scalar("cpus", Scalar::from_units(-1)));
        list.push(Resource::scalar("cpus", Scalar::from_units(3)));
        let borrowed: Resources = list.iter().collect();
        let copied: Resources = list.iter().cloned().collect();
        assert_eq!(borrowed, copied);
        assert_eq!(borrowed.to_string(), copied.to_string());
        assert_eq!(borrowed.len(), 21);
        for (a, b) in borrowed.entries.iter().zip(&copied.entries) {
            assert!(Arc::ptr_eq(&a.meta, &b.meta));
        }
    }

    /// `pop_reservation` of a collection is each resource's `pop_reservation` collected (equal
    /// results merged, unreserved ones kept), and a metadata's popped form is worked out once.
    #[test]
    fn popping_reservations_is_popping_each_resource() {
        let mut list: Vec<Resource> = (0..10).map(cpus_of).collect();
        let mut refined = cpus_of(3);
        if let Ok(role) = Role::new("r3/sub") {
            refined
                .reservations
                .push(ReservationInfo::dynamic(role, Some("p")));
        }
        list.push(refined);
        list.push(Resource::scalar("mem", Scalar::from_units(64)));
        let all: Resources = list.iter().collect();
        let popped = all.pop_reservation();
        let each: Resources = list
            .iter()
            .map(|r| r.pop_reservation().unwrap_or_else(|| r.clone()))
            .collect();
        assert_eq!(popped, each);
        assert_eq!(popped.to_string(), each.to_string());
        let again = all.pop_reservation();
        for (a, b) in popped.entries.iter().zip(&again.entries) {
            assert!(Arc::ptr_eq(&a.meta, &b.meta));
        }
        // Ten unreserved cpus merged, the refined one left reserved to r3, and the mem.
        assert_eq!(popped.len(), 3);
        let twice = popped.pop_reservation();
        assert_eq!(twice.reserved(None).len(), 0);
        assert_eq!(twice.cpus(), Some(Scalar::from_units(11)));
    }

    /// An emptied entry filled again by a resource whose metadata Mesos finds equal but which
    /// is written differently (labels in another order) takes that resource's metadata, so it
    /// prints as given.
    #[test]
    fn a_vacant_entry_takes_the_new_resource() {
        let labelled = |pairs: &[(&str, &str)]| {
            let mut r = Resource::scalar("cpus", Scalar::from_units(1));
            let labels = crate::resource::Labels(
                pairs
                    .iter()
                    .map(|(k, v)| crate::resource::Label::new(*k, *v))
                    .collect(),
            );
            if let Ok(role) = Role::new("r") {
                r.reservations
                    .push(ReservationInfo::dynamic(role, Some("p")).with_labels(labels));
            }
            r
        };
        let first = labelled(&[("a", "1"), ("b", "2")]);
        let again = labelled(&[("b", "2"), ("a", "1")]);
        assert_eq!(first, again);
        let first_key = |r: &Resource| {
            r.reservations
                .first()
                .and_then(|i| i.labels.as_ref())
                .and_then(|l| l.0.first())
                .map(|l| l.key.clone())
        };
        assert_eq!(first_key(&first).as_deref(), Some("a"));
        let mut all = Resources::new();
        all.add_resource(first.clone());
        all.subtract_resource(&first);
        assert!(all.is_empty());
        assert_eq!(all.entries.len(), 1);
        all.add_resource(again.clone());
        assert_eq!(all.len(), 1);
        assert_eq!(all.entries.len(), 1);
        let held = all.iter().next().and_then(first_key);
        assert_eq!(held.as_deref(), Some("b"));
        assert!(all.contains_resource(&again));
        assert_eq!(all.count(&again), 1);
    }

    /// An entry is a pointer, a value and flags: one cache line.
    #[test]
    fn an_entry_is_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 64,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    /// What `iter` lends follows every change.
    #[test]
    fn the_view_follows_changes() {
        let mut all = Resources::new();
        all.add_resource(cpus_of(1));
        assert_eq!(all.iter().count(), 1);
        all.add_resource(cpus_of(1));
        assert_eq!(
            all.iter().next().map(|r| r.value.clone()),
            Some(Value::Scalar(Scalar::from_units(2)))
        );
        all.add_resource(cpus_of(2));
        assert_eq!(all.iter().count(), 2);
        all.subtract_resource(&cpus_of(1));
        assert_eq!(
            all.iter().next().map(|r| r.value.clone()),
            Some(Value::Scalar(Scalar::from_units(1)))
        );
        let copy = all.clone();
        all -= &copy;
        assert_eq!(all.iter().count(), 0);
        assert_eq!(copy.iter().count(), 2);
        assert!(all.convert(&Resources::new(), &copy));
        assert_eq!(all.iter().count(), 2);
    }
}
