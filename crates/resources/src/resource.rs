//! The idiomatic resource model: [`Resource`] and its parts.
//!
//! Internally only the post-refinement format exists: a resource's reservation state is its
//! `reservations` stack (empty = unreserved, the last element is the current reservation). The
//! legacy `role` + `reservation` form is accepted on input and can be produced on output
//! (see [`crate::format`]).
//!
//! Equality of [`Resource`] is Mesos's (`research` A-3): a volume's `container_path`, mode and
//! creator principal do not take part; use [`Resource::identical`] for structural equality.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use berth_proto::mesos::v1 as pb;

use crate::hash::hasher;
use crate::value::{Value, ValueType};
use crate::{PersistenceId, Role, Scalar};

/// A label: key and optional value (an unset value equals `""`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label {
    /// The key.
    pub key: String,
    /// The value, if set.
    pub value: Option<String>,
}

impl Label {
    /// A label with a value.
    #[must_use]
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Label {
        Label {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    fn value_str(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

/// A list of labels. Equality is order-insensitive (as in Mesos) and counts duplicates.
#[derive(Clone, Debug, Default, Eq)]
pub struct Labels(pub Vec<Label>);

impl Labels {
    fn sorted(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|l| (l.key.as_str(), l.value_str()))
            .collect();
        v.sort_unstable();
        v
    }
}

impl fmt::Display for Labels {
    /// `{k1: v1, k2: v2}`, as Mesos prints labels.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", l.key, l.value_str())?;
        }
        f.write_str("}")
    }
}

impl PartialEq for Labels {
    fn eq(&self, other: &Labels) -> bool {
        if self.0.len() != other.0.len() {
            return false;
        }
        if self
            .0
            .iter()
            .zip(&other.0)
            .all(|(a, b)| a.key == b.key && a.value_str() == b.value_str())
        {
            return true;
        }
        self.sorted() == other.sorted()
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut acc = 0u64;
        for l in &self.0 {
            let mut h = hasher();
            l.key.hash(&mut h);
            l.value_str().hash(&mut h);
            acc = acc.wrapping_add(h.finish());
        }
        state.write_u64(acc);
    }
}

/// `ReservationInfo.Type`. `UNKNOWN` is refused at the door.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReservationType {
    /// Configured on the agent (`--resources`).
    Static,
    /// Made by an operation (RESERVE).
    Dynamic,
}

/// One level of a reservation stack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReservationInfo {
    /// Static or dynamic.
    pub kind: ReservationType,
    /// The role reserved for.
    pub role: Role,
    /// The reserving principal; unset differs from `""` (Mesos compares presence).
    pub principal: Option<String>,
    /// Labels; unset differs from an empty list (Mesos compares presence).
    pub labels: Option<Labels>,
}

impl ReservationInfo {
    /// A dynamic reservation for `role` by `principal`.
    #[must_use]
    pub fn dynamic(role: Role, principal: Option<&str>) -> ReservationInfo {
        ReservationInfo {
            kind: ReservationType::Dynamic,
            role,
            principal: principal.map(str::to_owned),
            labels: None,
        }
    }

    /// A static reservation for `role`.
    #[must_use]
    pub fn static_(role: Role) -> ReservationInfo {
        ReservationInfo {
            kind: ReservationType::Static,
            role,
            principal: None,
            labels: None,
        }
    }

    /// Adds labels.
    #[must_use]
    pub fn with_labels(mut self, labels: Labels) -> ReservationInfo {
        self.labels = Some(labels);
        self
    }
}

/// A resource name. Well-known names (`cpus`, `mem`, `disk`, `ports`, `gpus`, ...) are static
/// strings; others are shared on clone. Compares and hashes as the string.
#[derive(Clone)]
pub struct Name(NameRepr);

#[derive(Clone)]
enum NameRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

const WELL_KNOWN_NAMES: [&str; 8] = [
    "cpus",
    "mem",
    "disk",
    "ports",
    "gpus",
    "ephemeral_ports",
    "network_bandwidth",
    "zones",
];

impl Name {
    /// A name.
    #[must_use]
    pub fn new(name: &str) -> Name {
        match WELL_KNOWN_NAMES.iter().find(|w| **w == name) {
            Some(w) => Name(NameRepr::Static(w)),
            None => Name(NameRepr::Shared(Arc::from(name))),
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            NameRepr::Static(s) => s,
            NameRepr::Shared(s) => s,
        }
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    #[inline]
    fn eq(&self, other: &Name) -> bool {
        match (&self.0, &other.0) {
            (NameRepr::Static(a), NameRepr::Static(b)) => std::ptr::eq(*a, *b) || a == b,
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name::new(s)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        Name::new(&s)
    }
}

/// A reservation stack (empty = unreserved; the last element is the current reservation).
/// Shared on clone: copying a resource does not copy its stack until it is changed, and an
/// empty stack holds nothing at all.
#[derive(Clone, Debug, Default)]
pub struct ReservationStack(Option<Arc<Vec<ReservationInfo>>>);

impl ReservationStack {
    /// An empty stack.
    #[must_use]
    pub const fn new() -> ReservationStack {
        ReservationStack(None)
    }

    fn make_mut(&mut self) -> &mut Vec<ReservationInfo> {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }

    /// Pushes a reservation on top.
    pub fn push(&mut self, reservation: ReservationInfo) {
        self.make_mut().push(reservation);
    }

    /// Pops the current reservation.
    pub fn pop(&mut self) -> Option<ReservationInfo> {
        let popped = self.0.as_mut().map(Arc::make_mut)?.pop();
        if self.0.as_ref().is_some_and(|v| v.is_empty()) {
            self.0 = None;
        }
        popped
    }

    /// Removes every reservation.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    /// The same stack object (or both empty): identical without comparing.
    pub(crate) fn same_object(&self, other: &ReservationStack) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl PartialEq for ReservationStack {
    #[inline]
    fn eq(&self, other: &ReservationStack) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => **self == **other,
        }
    }
}

impl Eq for ReservationStack {}

impl Hash for ReservationStack {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl std::ops::Deref for ReservationStack {
    type Target = [ReservationInfo];
    fn deref(&self) -> &[ReservationInfo] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// Mutable access copies a shared stack first (copy on write).
impl std::ops::DerefMut for ReservationStack {
    fn deref_mut(&mut self) -> &mut [ReservationInfo] {
        match self.0.as_mut() {
            Some(v) => Arc::make_mut(v).as_mut_slice(),
            None => &mut [],
        }
    }
}

impl From<Vec<ReservationInfo>> for ReservationStack {
    fn from(v: Vec<ReservationInfo>) -> ReservationStack {
        if v.is_empty() {
            ReservationStack(None)
        } else {
            ReservationStack(Some(Arc::new(v)))
        }
    }
}

impl FromIterator<ReservationInfo> for ReservationStack {
    fn from_iter<I: IntoIterator<Item = ReservationInfo>>(iter: I) -> ReservationStack {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<'a> IntoIterator for &'a ReservationStack {
    type Item = &'a ReservationInfo;
    type IntoIter = std::slice::Iter<'a, ReservationInfo>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// `Resource.AllocationInfo`: the role a resource is allocated to (not validated by Mesos).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AllocationInfo {
    /// The allocation role, if set.
    pub role: Option<Arc<str>>,
}

impl AllocationInfo {
    /// Allocated to `role`.
    #[must_use]
    pub fn role(role: &str) -> AllocationInfo {
        AllocationInfo {
            role: Some(Arc::from(role)),
        }
    }
}

/// `DiskInfo.Persistence`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// The persistence id, unique per role per agent.
    pub id: PersistenceId,
    /// The principal that created the volume (ignored by resource equality).
    pub principal: Option<String>,
}

/// `DiskInfo.Source.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskSourceType {
    /// A directory on a separate filesystem; may be split.
    Path,
    /// A whole mounted filesystem; used whole.
    Mount,
    /// A block device.
    Block,
    /// A raw disk (resource providers).
    Raw,
}

impl DiskSourceType {
    /// The Mesos enum name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DiskSourceType::Path => "PATH",
            DiskSourceType::Mount => "MOUNT",
            DiskSourceType::Block => "BLOCK",
            DiskSourceType::Raw => "RAW",
        }
    }
}

/// `Source.Path` / `Source.Mount`: the root directory (an unset root equals `""`).
#[derive(Clone, Debug, Default, Eq)]
pub struct SourceRoot {
    /// The root, if set.
    pub root: Option<String>,
}

impl SourceRoot {
    /// A root at `path`.
    #[must_use]
    pub fn new(path: impl Into<String>) -> SourceRoot {
        SourceRoot {
            root: Some(path.into()),
        }
    }

    fn root_str(&self) -> &str {
        self.root.as_deref().unwrap_or("")
    }
}

impl PartialEq for SourceRoot {
    fn eq(&self, other: &SourceRoot) -> bool {
        self.root_str() == other.root_str()
    }
}

impl Hash for SourceRoot {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.root_str().hash(state);
    }
}

/// `DiskInfo.Source`: where a non-root disk comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DiskSource {
    /// The type.
    pub kind: DiskSourceType,
    /// `path` (for PATH disks).
    pub path: Option<SourceRoot>,
    /// `mount` (for MOUNT disks).
    pub mount: Option<SourceRoot>,
    /// Resource-provider (CSI) volume id.
    pub id: Option<String>,
    /// Resource-provider metadata.
    pub metadata: Option<Labels>,
    /// Storage profile.
    pub profile: Option<String>,
    /// Vendor (CSI plugin).
    pub vendor: Option<String>,
}

impl DiskSource {
    /// A PATH source rooted at `root`.
    #[must_use]
    pub fn path(root: impl Into<String>) -> DiskSource {
        DiskSource {
            path: Some(SourceRoot::new(root)),
            ..DiskSource::bare(DiskSourceType::Path)
        }
    }

    /// A MOUNT source rooted at `root`.
    #[must_use]
    pub fn mount(root: impl Into<String>) -> DiskSource {
        DiskSource {
            mount: Some(SourceRoot::new(root)),
            ..DiskSource::bare(DiskSourceType::Mount)
        }
    }

    /// A source of `kind` with nothing else set.
    #[must_use]
    pub fn bare(kind: DiskSourceType) -> DiskSource {
        DiskSource {
            kind,
            path: None,
            mount: None,
            id: None,
            metadata: None,
            profile: None,
            vendor: None,
        }
    }

    /// The root directory of a PATH or MOUNT disk.
    #[must_use]
    pub fn root(&self) -> Option<&str> {
        match self.kind {
            DiskSourceType::Path => self.path.as_ref().and_then(|p| p.root.as_deref()),
            DiskSourceType::Mount => self.mount.as_ref().and_then(|m| m.root.as_deref()),
            DiskSourceType::Block | DiskSourceType::Raw => None,
        }
    }
}

/// `Volume.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VolumeMode {
    /// Read-write.
    Rw,
    /// Read-only.
    Ro,
}

/// `Volume`: where and how a volume appears in a container. `image` and `source` are kept as
/// the wire messages so that nothing a scheduler sends is lost.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    /// Path inside the container.
    pub container_path: String,
    /// Access mode.
    pub mode: VolumeMode,
    /// Host path (forbidden for persistent volumes).
    pub host_path: Option<String>,
    /// An image providing the volume.
    pub image: Option<pb::Image>,
    /// An external source (Docker volume, CSI volume, host or sandbox path, secret).
    pub source: Option<pb::volume::Source>,
}

impl Volume {
    /// A volume at `container_path` with `mode`.
    #[must_use]
    pub fn new(container_path: impl Into<String>, mode: VolumeMode) -> Volume {
        Volume {
            container_path: container_path.into(),
            mode,
            host_path: None,
            image: None,
            source: None,
        }
    }
}

/// `Resource.DiskInfo`. Equality (Mesos) compares `source` and the persistence id only.
#[derive(Clone, Debug)]
pub struct DiskInfo {
    /// Set for persistent volumes.
    pub persistence: Option<Persistence>,
    /// Set for persistent volumes (container path and mode).
    pub volume: Option<Volume>,
    /// Set for PATH/MOUNT/BLOCK/RAW disks; unset for the ROOT disk.
    pub source: Option<DiskSource>,
}

impl Eq for DiskInfo {}

impl PartialEq for DiskInfo {
    fn eq(&self, other: &DiskInfo) -> bool {
        self.source == other.source
            && self.persistence.as_ref().map(|p| &p.id) == other.persistence.as_ref().map(|p| &p.id)
    }
}

impl Hash for DiskInfo {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
        self.persistence.as_ref().map(|p| &p.id).hash(state);
    }
}

/// A Mesos resource in berth's idiomatic form.
#[derive(Clone, Debug)]
pub struct Resource {
    /// Name (`cpus`, `mem`, `disk`, `ports`, ...).
    pub name: Name,
    /// Value.
    pub value: Value,
    /// The reservation stack; empty = unreserved.
    pub reservations: ReservationStack,
    /// Disk information (only for `disk`); shared on clone.
    pub disk: Option<Arc<DiskInfo>>,
    /// Revocable resource.
    pub revocable: bool,
    /// Shared resource (only persistent volumes).
    pub shared: bool,
    /// Allocation information.
    pub allocation_info: Option<AllocationInfo>,
    /// Resource provider id.
    pub provider_id: Option<Arc<str>>,
}

impl Resource {
    /// An unreserved scalar resource.
    #[must_use]
    pub fn scalar(name: &str, value: Scalar) -> Resource {
        Resource::new(name, Value::Scalar(value))
    }

    /// An unreserved resource with `value`.
    #[must_use]
    pub fn new(name: &str, value: Value) -> Resource {
        Resource {
            name: Name::new(name),
            value,
            reservations: ReservationStack::new(),
            disk: None,
            revocable: false,
            shared: false,
            allocation_info: None,
            provider_id: None,
        }
    }

    /// The scalar value, if this is a scalar.
    #[must_use]
    pub fn scalar_value(&self) -> Option<Scalar> {
        match self.value {
            Value::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Value type.
    #[must_use]
    pub fn value_type(&self) -> ValueType {
        self.value.value_type()
    }

    /// Mesos `isEmpty`.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Mesos `isPersistentVolume`.
    #[must_use]
    pub fn is_persistent_volume(&self) -> bool {
        self.disk.as_ref().is_some_and(|d| d.persistence.is_some())
    }

    /// The persistence id of a persistent volume.
    #[must_use]
    pub fn persistence_id(&self) -> Option<&PersistenceId> {
        self.disk
            .as_ref()
            .and_then(|d| d.persistence.as_ref())
            .map(|p| &p.id)
    }

    /// The disk source type, if any.
    #[must_use]
    pub fn disk_source(&self) -> Option<&DiskSource> {
        self.disk.as_ref().and_then(|d| d.source.as_ref())
    }

    /// Mesos `isUnreserved`.
    #[must_use]
    pub fn is_unreserved(&self) -> bool {
        self.reservations.is_empty()
    }

    /// Mesos `isReserved(role)`: reserved, and for `Some(role)` reserved to that role.
    #[must_use]
    pub fn is_reserved(&self, role: Option<&str>) -> bool {
        match (self.reservation_role(), role) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(r), Some(want)) => r.as_str() == want,
        }
    }

    /// The current (last) reservation.
    #[must_use]
    pub fn current_reservation(&self) -> Option<&ReservationInfo> {
        self.reservations.last()
    }

    /// Mesos `reservationRole`: the role of the last reservation.
    #[must_use]
    pub fn reservation_role(&self) -> Option<&Role> {
        self.reservations.last().map(|r| &r.role)
    }

    /// Mesos `isDynamicallyReserved`: the last reservation is DYNAMIC.
    #[must_use]
    pub fn is_dynamically_reserved(&self) -> bool {
        self.reservations
            .last()
            .is_some_and(|r| r.kind == ReservationType::Dynamic)
    }

    /// More than one reservation.
    #[must_use]
    pub fn has_refined_reservations(&self) -> bool {
        self.reservations.len() > 1
    }

    /// Mesos `isAllocatableTo(role)`: unreserved, reserved to `role`, or reserved to an
    /// ancestor of `role`.
    #[must_use]
    pub fn is_allocatable_to(&self, role: &str) -> bool {
        match self.reservation_role() {
            None => true,
            Some(r) => r.as_str() == role || crate::role::is_strict_subrole(role, r.as_str()),
        }
    }

    /// Mesos `needCheckpointing`: no provider and (dynamically reserved or a persistent volume).
    #[must_use]
    pub fn needs_checkpointing(&self) -> bool {
        self.provider_id.is_none()
            && (self.is_dynamically_reserved() || self.is_persistent_volume())
    }

    /// The allocation role, if allocated.
    #[must_use]
    pub fn allocation_role(&self) -> Option<&str> {
        self.allocation_info
            .as_ref()
            .and_then(|a| a.role.as_deref())
    }

    /// The resource without its volume: persistence, volume (and the disk info when it has no
    /// source) and sharedness removed — what a CREATE consumes.
    #[must_use]
    pub fn stripped_volume(&self) -> Resource {
        let mut r = self.clone();
        if let Some(disk) = r.disk.as_mut().map(Arc::make_mut) {
            if disk.source.is_some() {
                disk.persistence = None;
                disk.volume = None;
            } else {
                r.disk = None;
            }
        }
        r.shared = false;
        r
    }

    /// Pops the last reservation (Mesos `popReservation`); `None` if unreserved.
    #[must_use]
    pub fn pop_reservation(&self) -> Option<Resource> {
        let mut r = self.clone();
        r.reservations.pop()?;
        Some(r)
    }

    /// Mesos metadata equality: everything but the value.
    #[must_use]
    #[inline]
    pub fn same_metadata(&self, other: &Resource) -> bool {
        self.name == other.name
            && self.value_type() == other.value_type()
            && self.allocation_info == other.allocation_info
            && self.reservations == other.reservations
            && self.disk == other.disk
            && self.revocable == other.revocable
            && self.provider_id == other.provider_id
            && self.shared == other.shared
    }

    /// Structural equality: every field, including those Mesos equality ignores (volume,
    /// creator principal).
    #[must_use]
    pub fn identical(&self, other: &Resource) -> bool {
        self == other
            && match (&self.disk, &other.disk) {
                (Some(a), Some(b)) => {
                    a.volume == b.volume
                        && a.persistence.as_ref().map(|p| &p.principal)
                            == b.persistence.as_ref().map(|p| &p.principal)
                }
                (None, None) => true,
                _ => false,
            }
    }

    /// A hash of the metadata compared by [`Resource::same_metadata`].
    #[must_use]
    pub fn metadata_hash(&self) -> u64 {
        let mut h = hasher();
        self.name.hash(&mut h);
        self.value_type().hash(&mut h);
        self.allocation_info.hash(&mut h);
        self.reservations.hash(&mut h);
        self.disk.hash(&mut h);
        self.revocable.hash(&mut h);
        self.provider_id.hash(&mut h);
        self.shared.hash(&mut h);
        h.finish()
    }
}

impl PartialEq for Resource {
    /// Mesos `Resource ==`: metadata equal and values equal.
    fn eq(&self, other: &Resource) -> bool {
        self.same_metadata(other) && self.value == other.value
    }
}

impl fmt::Display for Resource {
    /// Mesos-like rendering: `disk(reservations: [(DYNAMIC,role,principal)])[id:path]:128`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(role) = self.allocation_role() {
            write!(f, "(allocated: {role})")?;
        }
        if !self.reservations.is_empty() {
            f.write_str("(reservations: [")?;
            for (i, r) in self.reservations.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                let kind = match r.kind {
                    ReservationType::Static => "STATIC",
                    ReservationType::Dynamic => "DYNAMIC",
                };
                write!(f, "({kind},{}", r.role)?;
                if let Some(p) = &r.principal {
                    write!(f, ",{p}")?;
                }
                f.write_str(")")?;
            }
            f.write_str("])")?;
        }
        if let Some(disk) = &self.disk {
            f.write_str("[")?;
            if let Some(src) = &disk.source {
                f.write_str(src.kind.as_str())?;
                if let Some(root) = src.root() {
                    write!(f, "({root})")?;
                }
                if let Some(id) = &src.id {
                    write!(f, "({id})")?;
                }
            }
            if let Some(p) = &disk.persistence {
                if disk.source.is_some() {
                    f.write_str(",")?;
                }
                f.write_str(p.id.as_str())?;
            }
            if let Some(v) = &disk.volume {
                let mode = match v.mode {
                    VolumeMode::Rw => "RW",
                    VolumeMode::Ro => "RO",
                };
                write!(f, ":{}:{mode}", v.container_path)?;
            }
            f.write_str("]")?;
        }
        if self.revocable {
            f.write_str("{REV}")?;
        }
        if self.shared {
            f.write_str("<SHARED>")?;
        }
        if let Some(p) = &self.provider_id {
            write!(f, "(provider: {p})")?;
        }
        write!(f, ":{}", self.value)
    }
}
