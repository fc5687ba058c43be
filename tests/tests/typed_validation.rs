//! The master validates an operation's resources on the model (`validate_typed`,
//! `validate_master_typed`) instead of writing their wire form and validating that. This test
//! holds the two to the same answers — the same error, or none — on resources of the model,
//! valid and invalid, built field by field at random.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test helpers abort on setup errors

use std::sync::Arc;

use berth_resources::validate::{
    validate_master, validate_master_typed, validate_resource, validate_typed,
};
use berth_resources::{
    AllocationInfo, DiskInfo, DiskSource, DiskSourceType, Persistence, PersistenceId, Range,
    Ranges, ReservationInfo, ReservationType, Resource, Role, Scalar, Set, Value, Volume,
    VolumeMode,
};
use proptest::prelude::*;

fn reservation() -> impl Strategy<Value = ReservationInfo> {
    (
        any::<bool>(),
        prop::sample::select(vec!["a", "a/b", "a/b/c", "b", "b/x", "eng"]),
        prop::option::of(prop::sample::select(vec!["p", "q"])),
    )
        .prop_map(|(dynamic, role, principal)| ReservationInfo {
            kind: if dynamic {
                ReservationType::Dynamic
            } else {
                ReservationType::Static
            },
            role: Role::new(role).unwrap(),
            principal: principal.map(str::to_owned),
            labels: None,
        })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        // Negative, zero, fractional, huge (near the exact-double limit) and saturated.
        prop_oneof![
            -5_000i64..5_000_000,
            Just(0i64),
            Just(1_500),
            Just(9_007_199_254_740_992i64),
            Just(i64::MAX),
            Just(i64::MIN),
        ]
        .prop_map(|m| Value::Scalar(Scalar::from_milli(m))),
        prop::collection::vec((0u64..100, 0u64..5), 0..4).prop_map(|v| Value::Ranges(Ranges::new(
            v.into_iter().filter_map(|(b, l)| Range::new(b, b + l))
        ))),
        prop::collection::vec(prop::sample::select(vec!["x", "y", "z"]), 0..3)
            .prop_map(|v| Value::Set(Set::new(v.into_iter().map(str::to_owned)))),
    ]
}

fn disk() -> impl Strategy<Value = Option<DiskInfo>> {
    let source = prop_oneof![
        Just(None),
        Just(Some(DiskSource::path("/p"))),
        Just(Some(DiskSource::mount("/m"))),
        Just(Some(DiskSource::bare(DiskSourceType::Block))),
        Just(Some(DiskSource::bare(DiskSourceType::Raw))),
        Just(Some(DiskSource {
            path: Some(berth_resources::SourceRoot::new("/x")),
            ..DiskSource::bare(DiskSourceType::Block)
        })),
        Just(Some(DiskSource {
            mount: Some(berth_resources::SourceRoot::new("/x")),
            ..DiskSource::bare(DiskSourceType::Raw)
        })),
    ];
    prop::option::of((
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        source,
        any::<bool>(),
    ))
    .prop_map(|d| {
        d.map(|(persistent, volume, host_path, source, ro)| DiskInfo {
            persistence: persistent.then(|| Persistence {
                id: PersistenceId::new("v1").unwrap(),
                principal: None,
            }),
            volume: volume.then(|| Volume {
                host_path: host_path.then(|| "/h".to_owned()),
                ..Volume::new("data", if ro { VolumeMode::Ro } else { VolumeMode::Rw })
            }),
            source,
        })
    })
}

/// Any resource of the model, valid or not.
fn resource() -> impl Strategy<Value = Resource> {
    (
        prop::sample::select(vec!["", "cpus", "disk", "gpus", "ports"]),
        value(),
        prop::collection::vec(reservation(), 0..4),
        disk(),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(name, value, reservations, disk, (revocable, shared, allocated))| Resource {
                name: name.into(),
                value,
                reservations: reservations.into(),
                disk: disk.map(Arc::new),
                revocable,
                shared,
                allocation_info: allocated.then(|| AllocationInfo::role("a")),
                provider_id: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn typed_common_validation_is_the_wire_one(r in resource()) {
        prop_assert_eq!(validate_typed(&r), validate_resource(&r.to_proto()), "{}", r);
        prop_assert_eq!(r.validate(), validate_resource(&r.to_proto()));
    }

    #[test]
    fn typed_master_validation_is_the_wire_one(list in prop::collection::vec(resource(), 0..5)) {
        let protos: Vec<_> = list.iter().map(Resource::to_proto).collect();
        prop_assert_eq!(validate_master_typed(&list), validate_master(&protos));
    }
}

/// The master's rules one by one, on resources that pass common validation.
#[test]
fn typed_master_validation_finds_each_rule() {
    let reserved = |mut r: Resource| {
        r.reservations
            .push(ReservationInfo::dynamic(Role::new("a").unwrap(), None));
        r
    };
    let volume = |host_path: bool| {
        let mut r = reserved(Resource::scalar("disk", Scalar::from_units(1)));
        r.disk = Some(Arc::new(DiskInfo {
            persistence: Some(Persistence {
                id: PersistenceId::new("v1").unwrap(),
                principal: None,
            }),
            volume: Some(Volume {
                host_path: host_path.then(|| "/h".to_owned()),
                ..Volume::new("data", VolumeMode::Rw)
            }),
            source: None,
        }));
        r
    };
    let mut revocable = reserved(Resource::scalar("cpus", Scalar::from_units(1)));
    revocable.revocable = true;
    let mut empty_disk = Resource::scalar("disk", Scalar::from_units(1));
    empty_disk.disk = Some(Arc::new(DiskInfo {
        persistence: None,
        volume: None,
        source: None,
    }));
    let cases: Vec<(Vec<Resource>, &str)> = vec![
        (
            vec![Resource::scalar("gpus", Scalar::from_milli(1_500))],
            "Invalid 'gpus' resource",
        ),
        (vec![volume(true)], "Invalid DiskInfo"),
        (vec![empty_disk], "Invalid DiskInfo"),
        (vec![revocable], "Invalid ReservationInfo"),
    ];
    for (list, want) in cases {
        let protos: Vec<_> = list.iter().map(Resource::to_proto).collect();
        let typed = validate_master_typed(&list);
        assert_eq!(typed, validate_master(&protos));
        let text = typed.expect_err(want).to_string();
        assert!(text.contains(want), "{text}");
    }
    assert_eq!(validate_master_typed(&[volume(false)]), Ok(()));
}
