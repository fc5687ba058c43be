//! Structural conversions between the wire types (`berth_proto`) and the idiomatic model.
//!
//! This module validates nothing: [`Resource::from_valid_proto`] upgrades the legacy
//! reservation format of a wire resource that already passed common validation and builds the
//! idiomatic value; [`Resource::to_proto`] writes the post-refinement form. The validating
//! entry points ([`Resource::from_proto`], the JSON and protobuf codecs) are in
//! [`crate::codec`], on top of [`crate::validate`]. Everything berth models is kept, so
//! `to_proto ∘ from_proto` is the identity on valid post-refinement resources, up to scalar
//! fixed-point rounding (research Q-9) and range normalisation (sorted, coalesced) — neither
//! changes what Mesos observes.

use std::sync::Arc;

use berth_proto::mesos::v1 as pb;
use pb::resource::disk_info::source::Type as SourceType;
use pb::resource::reservation_info::Type as ResType;
use pb::value::Type as PbValueType;

use crate::error::{InputError, ResourceError};
use crate::resource::{
    AllocationInfo, DiskInfo, DiskSource, DiskSourceType, Label, Labels, Persistence,
    ReservationInfo, ReservationType, Resource, SourceRoot, Volume, VolumeMode,
};
use crate::value::{Range, Ranges, Set, Value};
use crate::{PersistenceId, Role, Scalar, format};

pub(crate) fn labels_from_proto(l: &pb::Labels) -> Labels {
    Labels(
        l.labels
            .iter()
            .map(|l| Label {
                key: l.key.clone(),
                value: l.value.clone(),
            })
            .collect(),
    )
}

fn labels_to_proto(l: &Labels) -> pb::Labels {
    pb::Labels {
        labels: l
            .0
            .iter()
            .map(|l| pb::Label {
                key: l.key.clone(),
                value: l.value.clone(),
            })
            .collect(),
    }
}

impl Resource {
    /// Builds from a wire resource that already passed common validation
    /// ([`crate::validate::validate_resource`]): upgrades a copy to the post-refinement format
    /// and converts it, without validating again. [`Resource::from_proto`] is the checked form.
    ///
    /// # Errors
    /// [`ResourceError::PersistenceId`] for a persistence id that cannot become a path
    /// component, [`ResourceError::InvalidVolumeMode`] for an unknown volume mode (neither is
    /// part of common validation), or the type errors of an input that skipped validation.
    pub fn from_valid_proto(r: &pb::Resource) -> Result<Resource, ResourceError> {
        if !r.reservations.is_empty() {
            return Resource::build(r, &r.reservations);
        }
        // The upgrade only reads and writes the reservation fields: upgrade those alone rather
        // than a copy of the whole resource (whose ranges or set may be megabytes).
        #[allow(deprecated)] // `role` is the legacy format's field
        let mut legacy = pb::Resource {
            role: r.role.clone(),
            reservation: r.reservation.clone(),
            ..pb::Resource::default()
        };
        format::upgrade(&mut legacy);
        Resource::build(r, &legacy.reservations)
    }

    /// Builds from a wire resource that passed common validation, with its upgraded
    /// reservation stack.
    fn build(
        r: &pb::Resource,
        stack: &[pb::resource::ReservationInfo],
    ) -> Result<Resource, ResourceError> {
        let value = match PbValueType::try_from(r.r#type) {
            Ok(PbValueType::Scalar) => {
                let v = r.scalar.as_ref().map_or(0.0, |s| s.value);
                Value::Scalar(Scalar::from_f64(v)?)
            }
            Ok(PbValueType::Ranges) => {
                let wire = r.ranges.as_ref().map_or(&[][..], |rs| rs.range.as_slice());
                let mut ranges = Vec::with_capacity(wire.len());
                ranges.extend(wire.iter().filter_map(|x| Range::new(x.begin, x.end)));
                Value::Ranges(Ranges::new(ranges))
            }
            Ok(PbValueType::Set) => {
                Value::Set(Set::new(r.set.iter().flat_map(|s| s.item.iter().cloned())))
            }
            Ok(PbValueType::Text) => return Err(ResourceError::UnsupportedType),
            Err(_) => return Err(ResourceError::InvalidType),
        };
        let mut reservations = Vec::with_capacity(stack.len());
        for x in stack {
            let kind = match x.r#type() {
                ResType::Static => ReservationType::Static,
                ResType::Dynamic => ReservationType::Dynamic,
                ResType::Unknown => return Err(ResourceError::UnknownReservationType),
            };
            let role = Role::new(x.role()).map_err(ResourceError::ReservationRole)?;
            reservations.push(ReservationInfo {
                kind,
                role,
                principal: x.principal.clone(),
                labels: x.labels.as_ref().map(labels_from_proto),
            });
        }
        let disk = match &r.disk {
            None => None,
            Some(d) => Some(Arc::new(disk_from_proto(d)?)),
        };
        Ok(Resource {
            name: crate::resource::Name::new(&r.name),
            value,
            reservations: reservations.into(),
            disk,
            revocable: r.revocable.is_some(),
            shared: r.shared.is_some(),
            allocation_info: r.allocation_info.as_ref().map(|a| AllocationInfo {
                role: a.role.as_deref().map(Arc::from),
            }),
            provider_id: r.provider_id.as_ref().map(|p| Arc::from(p.value.as_str())),
        })
    }

    /// Writes the post-refinement wire form.
    #[must_use]
    pub fn to_proto(&self) -> pb::Resource {
        let mut out = pb::Resource {
            name: self.name.to_string(),
            ..Default::default()
        };
        match &self.value {
            Value::Scalar(s) => {
                out.r#type = PbValueType::Scalar as i32;
                out.scalar = Some(pb::value::Scalar { value: s.as_f64() });
            }
            Value::Ranges(rs) => {
                out.r#type = PbValueType::Ranges as i32;
                out.ranges = Some(pb::value::Ranges {
                    range: rs
                        .ranges()
                        .iter()
                        .map(|x| pb::value::Range {
                            begin: x.begin(),
                            end: x.end(),
                        })
                        .collect(),
                });
            }
            Value::Set(s) => {
                out.r#type = PbValueType::Set as i32;
                out.set = Some(pb::value::Set {
                    item: s.items().to_vec(),
                });
            }
        }
        out.reservations = self
            .reservations
            .iter()
            .map(|x| pb::resource::ReservationInfo {
                r#type: Some(match x.kind {
                    ReservationType::Static => ResType::Static as i32,
                    ReservationType::Dynamic => ResType::Dynamic as i32,
                }),
                role: Some(x.role.to_string()),
                principal: x.principal.clone(),
                labels: x.labels.as_ref().map(labels_to_proto),
            })
            .collect();
        out.disk = self.disk.as_deref().map(disk_to_proto);
        out.revocable = self.revocable.then_some(pb::resource::RevocableInfo {});
        out.shared = self.shared.then_some(pb::resource::SharedInfo {});
        out.allocation_info = self
            .allocation_info
            .as_ref()
            .map(|a| pb::resource::AllocationInfo {
                role: a.role.as_deref().map(str::to_owned),
            });
        out.provider_id = self.provider_id.as_ref().map(|p| pb::ResourceProviderId {
            value: p.to_string(),
        });
        out
    }

    /// Writes the legacy (pre-refinement) wire form.
    ///
    /// # Errors
    /// [`InputError::Downgrade`] for refined reservations.
    pub fn to_proto_legacy(&self) -> Result<pb::Resource, InputError> {
        let mut out = self.to_proto();
        format::downgrade(&mut out)?;
        Ok(out)
    }
}

fn disk_from_proto(d: &pb::resource::DiskInfo) -> Result<DiskInfo, ResourceError> {
    let persistence = match &d.persistence {
        None => None,
        Some(p) => Some(Persistence {
            id: PersistenceId::new(&p.id).map_err(ResourceError::PersistenceId)?,
            principal: p.principal.clone(),
        }),
    };
    let volume = match &d.volume {
        None => None,
        Some(v) => Some(Volume {
            container_path: v.container_path.clone(),
            mode: match pb::volume::Mode::try_from(v.mode) {
                Ok(pb::volume::Mode::Rw) => VolumeMode::Rw,
                Ok(pb::volume::Mode::Ro) => VolumeMode::Ro,
                Err(_) => return Err(ResourceError::InvalidVolumeMode),
            },
            host_path: v.host_path.clone(),
            image: v.image.clone(),
            source: v.source.clone(),
        }),
    };
    let source = match &d.source {
        None => None,
        Some(s) => Some(DiskSource {
            kind: match SourceType::try_from(s.r#type) {
                Ok(SourceType::Path) => DiskSourceType::Path,
                Ok(SourceType::Mount) => DiskSourceType::Mount,
                Ok(SourceType::Block) => DiskSourceType::Block,
                Ok(SourceType::Raw) => DiskSourceType::Raw,
                Ok(SourceType::Unknown) | Err(_) => {
                    return Err(ResourceError::UnsupportedSourceType(format!("{s:?}")));
                }
            },
            path: s.path.as_ref().map(|p| SourceRoot {
                root: p.root.clone(),
            }),
            mount: s.mount.as_ref().map(|m| SourceRoot {
                root: m.root.clone(),
            }),
            id: s.id.clone(),
            metadata: s.metadata.as_ref().map(labels_from_proto),
            profile: s.profile.clone(),
            vendor: s.vendor.clone(),
        }),
    };
    Ok(DiskInfo {
        persistence,
        volume,
        source,
    })
}

fn disk_to_proto(d: &DiskInfo) -> pb::resource::DiskInfo {
    use pb::resource::disk_info;
    pb::resource::DiskInfo {
        persistence: d.persistence.as_ref().map(|p| disk_info::Persistence {
            id: p.id.to_string(),
            principal: p.principal.clone(),
        }),
        volume: d.volume.as_ref().map(|v| pb::Volume {
            container_path: v.container_path.clone(),
            host_path: v.host_path.clone(),
            mode: match v.mode {
                VolumeMode::Rw => pb::volume::Mode::Rw as i32,
                VolumeMode::Ro => pb::volume::Mode::Ro as i32,
            },
            image: v.image.clone(),
            source: v.source.clone(),
        }),
        source: d.source.as_ref().map(|s| disk_info::Source {
            r#type: match s.kind {
                DiskSourceType::Path => SourceType::Path as i32,
                DiskSourceType::Mount => SourceType::Mount as i32,
                DiskSourceType::Block => SourceType::Block as i32,
                DiskSourceType::Raw => SourceType::Raw as i32,
            },
            path: s.path.as_ref().map(|p| disk_info::source::Path {
                root: p.root.clone(),
            }),
            mount: s.mount.as_ref().map(|m| disk_info::source::Mount {
                root: m.root.clone(),
            }),
            id: s.id.clone(),
            metadata: s.metadata.as_ref().map(labels_to_proto),
            profile: s.profile.clone(),
            vendor: s.vendor.clone(),
        }),
    }
}

impl From<&Resource> for pb::Resource {
    fn from(r: &Resource) -> pb::Resource {
        r.to_proto()
    }
}
