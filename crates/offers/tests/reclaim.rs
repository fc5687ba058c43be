//! Reclaiming what a scheduler forgot: Marathon's offer-matcher reconciler cases (no
//! reservations; unknown instance and app; unknown instance of an existing app; known instance
//! of a deleted app; known instance and app), other frameworks' and unparseable labels,
//! decommissioned instances, legacy ids, refined reservations, shared volumes, resource
//! providers, a mixed offer, and a property test that reclaim never touches a resource without
//! this framework's labels or of a kept instance, and that its plan validates and applies.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use berth_offers::plan::{
    InstanceId, Known, KnownInstance, PlanConfig, ReclaimError, ReclaimPlan, ReclaimReason,
    RunSpec, plan_launch, plan_reclaim,
};
use berth_offers::{
    AgentCapabilities, Context, Framework, FrameworkCapability, Operation, OperationError,
    pipeline, validate,
};
use berth_resources::{
    AllocationInfo, DiskInfo, DiskSource, Label, Labels, Persistence, PersistenceId,
    ReservationInfo, Resource, Resources, Role, Scalar, Volume, VolumeMode,
};
use proptest::prelude::*;

const ROLE: &str = "eng/db";
const PARENT: &str = "eng";
const PRINCIPAL: &str = "marathon-principal";
const FRAMEWORK: &str = "fw-0001";
const OTHER: &str = "fw-other";

const U1: &str = "11111111-2b4d-11ef-9a3c-0242ac120002";
const U2: &str = "22222222-2b4d-11ef-9a3c-0242ac120002";
const U3: &str = "33333333-2b4d-11ef-9a3c-0242ac120002";

fn config() -> PlanConfig {
    PlanConfig::new(FRAMEWORK, ROLE, Some(PRINCIPAL))
}

fn offered(mut r: Resource) -> Resource {
    r.allocation_info = Some(AllocationInfo::role(ROLE));
    r
}

fn scalar(name: &str, v: i64) -> Resource {
    offered(Resource::scalar(name, Scalar::from_units(v)))
}

fn labels(framework: &str, task: &str) -> Labels {
    Labels(vec![
        Label::new("marathon_framework_id", framework),
        Label::new("marathon_task_id", task),
    ])
}

/// A dynamic reservation for `role`, labelled when `labels` is given.
fn reservation(role: &str, labels: Option<Labels>) -> ReservationInfo {
    let r = ReservationInfo::dynamic(Role::new(role).unwrap(), Some(PRINCIPAL));
    match labels {
        Some(l) => r.with_labels(l),
        None => r,
    }
}

fn ours(task: &str) -> ReservationInfo {
    reservation(ROLE, Some(labels(FRAMEWORK, task)))
}

fn reserved(mut r: Resource, stack: &[ReservationInfo]) -> Resource {
    for s in stack {
        r.reservations.push(s.clone());
    }
    r
}

/// `r` as a persistent volume `id` (keeping its disk source).
fn volume(mut r: Resource, id: &str, shared: bool) -> Resource {
    let source = r.disk.as_ref().and_then(|d| d.source.clone());
    r.disk = Some(Arc::new(DiskInfo {
        persistence: Some(Persistence {
            id: PersistenceId::new(id).unwrap(),
            principal: Some(PRINCIPAL.to_owned()),
        }),
        volume: Some(Volume::new("data", VolumeMode::Rw)),
        source,
    }));
    r.shared = shared;
    r
}

fn mount_disk(root: &str, size: i64) -> Resource {
    let mut r = scalar("disk", size);
    r.disk = Some(Arc::new(DiskInfo {
        persistence: None,
        volume: None,
        source: Some(DiskSource::mount(root)),
    }));
    r
}

fn offer(parts: Vec<Resource>) -> Resources {
    parts.into_iter().collect()
}

fn known(ids: &[&str]) -> Known {
    Known {
        framework_id: None,
        run_specs: None,
        instances: ids
            .iter()
            .map(|i| KnownInstance {
                instance_id: (*i).to_owned(),
                decommissioned: false,
            })
            .collect(),
    }
}

fn framework_context(checkpointed: &Resources) -> Context {
    let mut ctx = Context::framework(Framework {
        id: Some(FRAMEWORK.to_owned()),
        roles: vec![ROLE.to_owned()],
        capabilities: vec![
            FrameworkCapability::MultiRole,
            FrameworkCapability::ReservationRefinement,
            FrameworkCapability::SharedResources,
        ],
        principal: Some(PRINCIPAL.to_owned()),
    });
    ctx.agent = AgentCapabilities::all();
    ctx.checkpointed = checkpointed
        .filter(Resource::needs_checkpointing)
        .unallocate();
    ctx.offer_allocation_role = Some(ROLE.to_owned());
    ctx
}

/// Validates and applies the operations in order, as the master would.
fn try_all(start: &Resources, ops: &[Operation]) -> Result<Resources, String> {
    let mut current = start.clone();
    for op in ops {
        let ctx = framework_context(&current);
        current = pipeline::run(&current, op.clone(), &ctx, None)
            .map_err(|e| format!("{} refused at {}: {}", op.kind(), e.stage, e.message))?;
    }
    Ok(current)
}

fn run_all(start: &Resources, ops: &[Operation]) -> Resources {
    try_all(start, ops).unwrap_or_else(|e| panic!("{e}"))
}

/// What the offer should become: `reclaimed` (each as offered) replaced by their destroyed form
/// with one reservation level popped, everything else unchanged.
fn expected_after(start: &Resources, reclaimed: &[Resource]) -> Resources {
    let mut out = start.clone();
    for r in reclaimed {
        out.subtract_resource(r);
        let freed = r.stripped_volume();
        out.add_resource(freed.pop_reservation().unwrap());
    }
    out
}

fn kinds(plan: &ReclaimPlan) -> Vec<&'static str> {
    plan.operations.iter().map(Operation::kind).collect()
}

/// Every resource an operation of the plan names.
fn touched(plan: &ReclaimPlan) -> Vec<Resource> {
    plan.operations
        .iter()
        .flat_map(|op| match op {
            Operation::Destroy { volumes } => volumes.clone(),
            Operation::Unreserve { resources } => resources.clone(),
            other => panic!("reclaim planned {}", other.kind()),
        })
        .collect()
}

fn task(safe_path: &str, uuid: &str) -> String {
    format!("{safe_path}.instance-{uuid}")
}

/// An instance's resources: cpus, mem, a root volume and the rest of its root disk.
fn instance_resources(task_id: &str, volume_id: &str) -> Vec<Resource> {
    let r = ours(task_id);
    vec![
        reserved(scalar("cpus", 1), std::slice::from_ref(&r)),
        reserved(scalar("mem", 512), std::slice::from_ref(&r)),
        reserved(scalar("disk", 100), std::slice::from_ref(&r)),
        volume(
            reserved(scalar("disk", 1000), std::slice::from_ref(&r)),
            volume_id,
            false,
        ),
    ]
}

#[test]
fn offer_without_reservations_leads_to_nothing() {
    let start = offer(vec![
        scalar("cpus", 4),
        scalar("mem", 4096),
        scalar("disk", 10),
    ]);
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert!(plan.operations.is_empty());
    assert!(plan.reclaimed.is_empty());
}

#[test]
fn volume_of_an_unknown_instance_and_app_is_destroyed_and_unreserved() {
    let id = task("test", U1);
    let mine = instance_resources(&id, "test#data#u1");
    let start = offer(
        mine.iter()
            .cloned()
            .chain([scalar("cpus", 3), scalar("mem", 1024)])
            .collect(),
    );
    let mut none = known(&[]);
    none.run_specs = Some(vec![]);
    let plan = plan_reclaim(&start, &config(), &none).unwrap();
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    assert_eq!(plan.reclaimed.len(), 1);
    assert_eq!(plan.reclaimed[0].instance_id, id);
    assert_eq!(plan.reclaimed[0].reason, ReclaimReason::UnknownInstance);
    assert_eq!(plan.reclaimed[0].persistence_ids, ["test#data#u1"]);

    // DESTROY names the volume exactly as offered; UNRESERVE names no volume.
    let Operation::Destroy { volumes } = &plan.operations[0] else {
        panic!()
    };
    assert_eq!(volumes, &[mine[3].clone()]);
    let Operation::Unreserve { resources } = &plan.operations[1] else {
        panic!()
    };
    assert!(resources.iter().all(|r| !r.is_persistent_volume()));

    let after = run_all(&start, &plan.operations);
    assert_eq!(after, expected_after(&start, &mine));
    assert_eq!(
        after,
        offer(vec![
            scalar("cpus", 4),
            scalar("mem", 1536),
            scalar("disk", 1100)
        ])
    );
    assert!(after.iter().all(Resource::is_unreserved));
}

#[test]
fn volume_of_an_unknown_instance_of_an_existing_app_is_reclaimed() {
    let id = task("test", U1);
    let start = offer(instance_resources(&id, "test#data#u1"));
    let mut k = known(&[&task("test", U2)]);
    k.run_specs = Some(vec!["/test".to_owned()]);
    let plan = plan_reclaim(&start, &config(), &k).unwrap();
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    assert_eq!(plan.reclaimed[0].reason, ReclaimReason::UnknownInstance);
    let after = run_all(&start, &plan.operations);
    assert!(after.iter().all(Resource::is_unreserved));
}

#[test]
fn volume_of_a_known_instance_of_a_deleted_app_is_reclaimed() {
    let id = task("prod_test", U1);
    let start = offer(instance_resources(&id, "prod_test#data#u1"));
    let mut k = known(&[&id]);
    k.run_specs = Some(vec!["/prod/other".to_owned()]);
    let plan = plan_reclaim(&start, &config(), &k).unwrap();
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    assert_eq!(plan.reclaimed[0].reason, ReclaimReason::UnknownRunSpec);
    let after = run_all(&start, &plan.operations);
    assert_eq!(
        after,
        expected_after(&start, &start.iter().cloned().collect::<Vec<_>>())
    );

    // The app exists: nothing.
    k.run_specs = Some(vec!["/prod/test".to_owned()]);
    let plan = plan_reclaim(&start, &config(), &k).unwrap();
    assert!(plan.operations.is_empty());
}

#[test]
fn volume_of_a_known_instance_and_app_is_kept() {
    let id = task("test", U1);
    let start = offer(instance_resources(&id, "test#data#u1"));
    let mut k = known(&[&id]);
    assert!(
        plan_reclaim(&start, &config(), &k)
            .unwrap()
            .operations
            .is_empty()
    );
    k.run_specs = Some(vec!["/test".to_owned()]);
    assert!(
        plan_reclaim(&start, &config(), &k)
            .unwrap()
            .operations
            .is_empty()
    );
    // Compared as Marathon compares instance ids: the UUID's case does not matter.
    let upper = known(&[&task("test", &U1.to_uppercase())]);
    assert!(
        plan_reclaim(&start, &config(), &upper)
            .unwrap()
            .operations
            .is_empty()
    );
}

#[test]
fn decommissioned_terminal_instances_are_freed() {
    let id = task("test", U1);
    let start = offer(instance_resources(&id, "test#data#u1"));
    let k: Known = serde_json::from_value(serde_json::json!({
        "instances": [{"instance_id": id, "decommissioned": true}]
    }))
    .unwrap();
    let plan = plan_reclaim(&start, &config(), &k).unwrap();
    assert_eq!(plan.reclaimed[0].reason, ReclaimReason::Decommissioned);
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    run_all(&start, &plan.operations);
    // Also listed as running: kept.
    let k: Known = serde_json::from_value(serde_json::json!({
        "instances": [{"instance_id": id, "decommissioned": true}, id]
    }))
    .unwrap();
    assert!(
        plan_reclaim(&start, &config(), &k)
            .unwrap()
            .operations
            .is_empty()
    );
}

#[test]
fn other_frameworks_unlabelled_and_unparseable_reservations_are_never_touched() {
    let start = offer(vec![
        // Another framework's reservation and volume for an instance we do not know.
        reserved(
            scalar("cpus", 1),
            &[reservation(ROLE, Some(labels(OTHER, &task("test", U1))))],
        ),
        volume(
            reserved(
                scalar("disk", 100),
                &[reservation(ROLE, Some(labels(OTHER, &task("test", U1))))],
            ),
            "other#v#1",
            false,
        ),
        // Unlabelled reservation and volume (an operator's).
        reserved(scalar("mem", 64), &[reservation(ROLE, None)]),
        volume(
            reserved(scalar("disk", 10), &[reservation(ROLE, None)]),
            "ops-vol",
            false,
        ),
        // Our framework id, but task ids that name no instance.
        reserved(
            scalar("cpus", 2),
            &[reservation(ROLE, Some(labels(FRAMEWORK, "nodelimiter")))],
        ),
        reserved(
            scalar("mem", 128),
            &[reservation(
                ROLE,
                Some(labels(FRAMEWORK, "test.instance-notauuid")),
            )],
        ),
        // Only the framework label.
        reserved(
            scalar("disk", 7),
            &[reservation(
                ROLE,
                Some(Labels(vec![Label::new("marathon_framework_id", FRAMEWORK)])),
            )],
        ),
        // Our labels under another framework's refinement: UNRESERVE would pop theirs.
        reserved(
            scalar("cpus", 3),
            &[
                reservation(PARENT, Some(labels(FRAMEWORK, &task("test", U2)))),
                reservation(ROLE, Some(labels(OTHER, &task("test", U2)))),
            ],
        ),
        scalar("cpus", 1),
    ]);
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert!(plan.operations.is_empty(), "{:?}", plan.operations);
    assert!(plan.reclaimed.is_empty());
}

#[test]
fn legacy_task_ids_name_marathon_prefixed_instances() {
    for label in [format!("test.{U1}"), format!("test_{U1}")] {
        let start = offer(instance_resources(&label, "test#data#u1"));
        // Known under its instance id: kept.
        let kept = known(&[&format!("test.marathon-{U1}")]);
        assert!(
            plan_reclaim(&start, &config(), &kept)
                .unwrap()
                .operations
                .is_empty()
        );
        // `instance-` is another instance.
        let plan = plan_reclaim(&start, &config(), &known(&[&task("test", U1)])).unwrap();
        assert_eq!(plan.reclaimed[0].instance_id, format!("test.marathon-{U1}"));
        assert_eq!(plan.reclaimed[0].labels, std::slice::from_ref(&label));
        let after = run_all(&start, &plan.operations);
        assert!(after.iter().all(Resource::is_unreserved));
    }
}

#[test]
fn refined_reservations_pop_one_level() {
    let id = task("test", U1);
    let base = reservation(PARENT, None);
    let mine = vec![
        reserved(scalar("cpus", 2), &[base.clone(), ours(&id)]),
        volume(
            reserved(mount_disk("/mnt/ssd-1", 4000), &[base.clone(), ours(&id)]),
            "test#data#u1",
            false,
        ),
    ];
    let start = offer(mine.clone());
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    let after = run_all(&start, &plan.operations);
    assert_eq!(after, expected_after(&start, &mine));
    // Back to the parent's reservation, the MOUNT disk with its source and no volume.
    assert_eq!(
        after,
        offer(vec![
            reserved(scalar("cpus", 2), std::slice::from_ref(&base)),
            reserved(mount_disk("/mnt/ssd-1", 4000), std::slice::from_ref(&base)),
        ])
    );
}

/// Marathon's PR #6073: reserved resources of an unknown instance with no volume offered are
/// still unreserved (an UNRESERVE alone, no empty DESTROY).
#[test]
fn reservations_without_volumes_are_still_unreserved() {
    let id = task("test", U1);
    let start = offer(vec![
        reserved(scalar("cpus", 1), &[ours(&id)]),
        reserved(scalar("mem", 256), &[ours(&id)]),
        scalar("cpus", 1),
    ]);
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert_eq!(kinds(&plan), ["UNRESERVE"]);
    assert!(plan.reclaimed[0].persistence_ids.is_empty());
    assert_eq!(
        run_all(&start, &plan.operations),
        offer(vec![scalar("cpus", 2), scalar("mem", 256)])
    );
}

#[test]
fn reserved_disks_without_volumes_are_unreserved_not_destroyed() {
    let id = task("test", U1);
    let start = offer(vec![reserved(mount_disk("/mnt/a", 100), &[ours(&id)])]);
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert_eq!(kinds(&plan), ["UNRESERVE"]);
    assert_eq!(
        run_all(&start, &plan.operations),
        offer(vec![mount_disk("/mnt/a", 100)])
    );
}

#[test]
fn shared_volumes_are_destroyed_unless_in_use_or_offered_twice() {
    let id = task("test", U1);
    let shared = volume(
        reserved(scalar("disk", 50), &[ours(&id)]),
        "test#s#u1",
        true,
    );
    let start = offer(vec![
        shared.clone(),
        reserved(scalar("cpus", 1), &[ours(&id)]),
    ]);
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    let after = run_all(&start, &plan.operations);
    assert!(after.iter().all(Resource::is_unreserved));

    // In use by a task: the master refuses the DESTROY, so nothing is destroyed.
    let mut ctx = framework_context(&start);
    ctx.used
        .insert(OTHER.to_owned(), Resources::from(shared.clone()));
    assert_eq!(
        validate(&plan.operations[0], &ctx),
        Err(OperationError::VolumesInUse)
    );

    // Offered twice: skipped with a reason.
    let mut twice = start.clone();
    twice.add_resource(shared);
    let plan = plan_reclaim(&twice, &config(), &known(&[])).unwrap();
    assert!(plan.operations.is_empty());
    assert_eq!(plan.skipped.len(), 1);
    assert!(
        plan.skipped[0].reason.contains("2 copies"),
        "{}",
        plan.skipped[0].reason
    );
}

#[test]
fn one_operation_per_resource_provider() {
    let id = task("test", U1);
    let mut provided = volume(
        reserved(mount_disk("/mnt/csi-1", 300), &[ours(&id)]),
        "test#csi#u1",
        false,
    );
    provided.provider_id = Some(Arc::from("rp-1"));
    let mut start = offer(instance_resources(&id, "test#data#u1"));
    start.add_resource(provided.clone());
    let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
    assert_eq!(
        kinds(&plan),
        ["DESTROY", "DESTROY", "UNRESERVE", "UNRESERVE"]
    );
    for op in &plan.operations {
        let providers: BTreeSet<Option<String>> = match op {
            Operation::Destroy { volumes } => volumes.iter(),
            Operation::Unreserve { resources } => resources.iter(),
            _ => panic!(),
        }
        .map(|r| r.provider_id.as_deref().map(str::to_owned))
        .collect();
        assert_eq!(providers.len(), 1);
    }
    let all: Vec<Resource> = start.iter().cloned().collect();
    assert_eq!(
        run_all(&start, &plan.operations),
        expected_after(&start, &all)
    );
}

#[test]
fn mixed_offer_reclaims_only_the_forgotten() {
    let kept = task("db", U1);
    let lost = task("db", U2);
    let gone_app = task("web", U3);
    let kept_res = instance_resources(&kept, "db#data#u1");
    let lost_res = instance_resources(&lost, "db#data#u2");
    let gone_res = instance_resources(&gone_app, "web#data#u3");
    let foreign = instance_resources(&task("db", U3), "db#data#u3")
        .into_iter()
        .map(|mut r| {
            r.reservations.pop();
            r.reservations
                .push(reservation(ROLE, Some(labels(OTHER, &task("db", U3)))));
            r
        })
        .collect::<Vec<_>>();
    let mut parts = vec![scalar("cpus", 8), scalar("mem", 8192), scalar("disk", 5000)];
    parts.extend(kept_res.iter().cloned());
    parts.extend(lost_res.iter().cloned());
    parts.extend(gone_res.iter().cloned());
    parts.extend(foreign.iter().cloned());
    let start = offer(parts);
    let mut k = known(&[&kept, &gone_app]);
    k.run_specs = Some(vec!["/db".to_owned()]);
    let plan = plan_reclaim(&start, &config(), &k).unwrap();
    assert_eq!(
        kinds(&plan),
        ["DESTROY", "UNRESERVE", "DESTROY", "UNRESERVE"]
    );
    let reasons: Vec<(&str, ReclaimReason)> = plan
        .reclaimed
        .iter()
        .map(|r| (r.instance_id.as_str(), r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (lost.as_str(), ReclaimReason::UnknownInstance),
            (gone_app.as_str(), ReclaimReason::UnknownRunSpec)
        ]
    );
    let reclaimed: Vec<Resource> = lost_res.iter().chain(&gone_res).cloned().collect();
    let after = run_all(&start, &plan.operations);
    assert_eq!(after, expected_after(&start, &reclaimed));
    for r in kept_res.iter().chain(&foreign) {
        assert!(after.contains_resource(r), "{r} was touched");
    }
}

#[test]
fn a_forgotten_first_launch_is_reclaimed_to_the_original_offer() {
    let path = format!("{}/tests/fixtures/mysql.json", env!("CARGO_MANIFEST_DIR"));
    let app = RunSpec::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
    let start = offer(vec![
        scalar("cpus", 4),
        scalar("mem", 4096),
        scalar("disk", 10_000),
    ]);
    let launch = plan_launch(&app, &start, &config(), None).unwrap();
    // RESERVE and CREATE were accepted, then the scheduler crashed before recording them.
    let after_create = run_all(&start, &launch.operations[..2]);
    let instance = launch.reservation.instance_id.clone();
    assert!(InstanceId::parse(&instance).is_some());

    // Known: kept. Forgotten: everything back.
    let k = known(&[&instance]);
    assert!(
        plan_reclaim(&after_create, &config(), &k)
            .unwrap()
            .operations
            .is_empty()
    );
    let plan = plan_reclaim(&after_create, &config(), &known(&[])).unwrap();
    assert_eq!(kinds(&plan), ["DESTROY", "UNRESERVE"]);
    assert_eq!(plan.reclaimed[0].instance_id, instance);
    assert_eq!(
        plan.reclaimed[0].persistence_ids,
        launch.reservation.persistence_ids
    );
    assert_eq!(run_all(&after_create, &plan.operations), start);
}

#[test]
fn bad_known_input_is_an_error() {
    let start = offer(vec![scalar("cpus", 1)]);
    assert_eq!(
        plan_reclaim(&start, &config(), &known(&["not an id"])).unwrap_err(),
        ReclaimError::KnownInstance("not an id".to_owned())
    );
    let empty = PlanConfig::new("", ROLE, None);
    assert_eq!(
        plan_reclaim(&start, &empty, &known(&[])).unwrap_err(),
        ReclaimError::FrameworkId
    );
}

// --- property test -------------------------------------------------------------------------

/// Who labelled a generated resource.
#[derive(Clone, Copy, Debug)]
enum Owner {
    /// Unreserved.
    Nobody,
    /// Reserved without labels.
    Unlabelled,
    /// Another framework, instance `i`.
    Other(usize),
    /// This framework, with a task id that names no instance.
    Garbage,
    /// This framework, instance `i` (known or not, decided by the test).
    Ours(usize),
    /// This framework's labels under another framework's refinement.
    Buried(usize),
}

const POOL: [&str; 4] = [U1, U2, U3, "44444444-2b4d-11ef-9a3c-0242ac120002"];

fn instance_label(i: usize) -> String {
    let uuid = POOL[i % POOL.len()];
    match i / POOL.len() {
        0 => task("db", uuid),
        1 => format!("db.marathon-{uuid}"),
        _ => task("web", uuid),
    }
}

fn owner_strategy() -> impl Strategy<Value = Owner> {
    prop_oneof![
        2 => Just(Owner::Nobody),
        1 => Just(Owner::Unlabelled),
        2 => (0usize..12).prop_map(Owner::Other),
        1 => Just(Owner::Garbage),
        5 => (0usize..12).prop_map(Owner::Ours),
        1 => (0usize..12).prop_map(Owner::Buried),
    ]
}

/// A resource: (owner, kind 0 cpus / 1 mem / 2 root disk / 3 MOUNT disk, size, volume?, shared?).
type Part = (Owner, u8, i64, bool, bool);

fn build(parts: &[Part]) -> Resources {
    let mut out = Resources::new();
    for (n, (owner, kind, size, vol, shared)) in parts.iter().enumerate() {
        let base = match kind {
            0 => scalar("cpus", *size),
            1 => scalar("mem", *size),
            2 => scalar("disk", *size),
            _ => mount_disk(&format!("/mnt/m{n}"), *size),
        };
        let stack = match owner {
            Owner::Nobody => vec![],
            Owner::Unlabelled => vec![reservation(ROLE, None)],
            Owner::Other(i) => vec![reservation(ROLE, Some(labels(OTHER, &instance_label(*i))))],
            Owner::Garbage => vec![reservation(ROLE, Some(labels(FRAMEWORK, "db.instance-x")))],
            Owner::Ours(i) => vec![ours(&instance_label(*i))],
            Owner::Buried(i) => vec![
                reservation(PARENT, Some(labels(FRAMEWORK, &instance_label(*i)))),
                reservation(ROLE, Some(labels(OTHER, &instance_label(*i)))),
            ],
        };
        let r = reserved(base, &stack);
        // Volumes on reserved disks only (a CREATE needs a reservation).
        let r = if *kind >= 2 && *vol && !stack.is_empty() {
            volume(r, &format!("vol-{n}"), *shared)
        } else {
            r
        };
        out.add_resource(r);
    }
    out
}

fn parts_strategy() -> impl Strategy<Value = Vec<Part>> {
    prop::collection::vec(
        (
            owner_strategy(),
            0u8..4,
            1i64..2000,
            any::<bool>(),
            prop::bool::weighted(0.2),
        ),
        0..16,
    )
}

/// The instance the resource's current reservation names for this framework, if the label
/// parses (the test's own oracle: the generated labels are well-formed or "db.instance-x").
fn our_instance(r: &Resource) -> Option<String> {
    let info = r.current_reservation()?;
    let l = &info.labels.as_ref()?.0;
    let get = |k: &str| l.iter().find(|x| x.key == k).and_then(|x| x.value.clone());
    (get("marathon_framework_id")? == FRAMEWORK).then_some(())?;
    let task = get("marathon_task_id")?;
    (task != "db.instance-x").then_some(task)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reclaim_touches_only_forgotten_resources_and_applies(
        parts in parts_strategy(),
        known_mask in any::<u16>(),
        decommissioned_mask in any::<u16>(),
        web_exists in any::<bool>(),
    ) {
        let start = build(&parts);
        let kept_ids: Vec<String> = (0..12)
            .filter(|i| known_mask & (1 << i) != 0)
            .map(instance_label)
            .collect();
        let mut k = Known {
            framework_id: None,
            run_specs: Some(if web_exists { vec!["/db".into(), "/web".into()] } else { vec!["/db".into()] }),
            instances: kept_ids
                .iter()
                .enumerate()
                .map(|(n, id)| KnownInstance {
                    instance_id: id.clone(),
                    decommissioned: decommissioned_mask & (1 << n) != 0,
                })
                .collect(),
        };
        // Some entries listed twice, once running: kept.
        if let Some(first) = k.instances.first().cloned() {
            k.instances.push(KnownInstance { decommissioned: false, ..first });
        }
        let keeps = |id: &str| {
            let running = k.instances.iter().any(|i| i.instance_id == id && !i.decommissioned);
            let spec_exists = id.starts_with("db.") || web_exists;
            running && spec_exists
        };
        let plan = plan_reclaim(&start, &config(), &k).unwrap();

        // Never a resource without our labels, or of a kept instance.
        for r in touched(&plan) {
            let owner = our_instance(&r);
            prop_assert!(owner.is_some(), "touched {r} without our labels");
            let owner = owner.unwrap();
            prop_assert!(!keeps(&owner), "touched {r} of kept instance {owner}");
        }

        // Exactly the forgotten resources, as offered, come back one level popped.
        let forgotten: Vec<Resource> = start
            .iter_expanded()
            .filter(|r| our_instance(r).is_some_and(|id| !keeps(&id)))
            .cloned()
            .collect();
        let skipped: BTreeSet<&str> = plan.skipped.iter().map(|s| s.instance_id.as_str()).collect();
        let forgotten: Vec<Resource> = forgotten
            .into_iter()
            .filter(|r| !skipped.contains(our_instance(r).unwrap().as_str()))
            .collect();
        let after = try_all(&start, &plan.operations);
        prop_assert!(after.is_ok(), "{}", after.unwrap_err());
        let after = after.unwrap();
        prop_assert_eq!(&after, &expected_after(&start, &forgotten));
        for r in start.iter().filter(|r| our_instance(r).is_none_or(|id| keeps(&id))) {
            prop_assert!(after.contains_resource(r), "{} was changed", r);
        }
    }
}

/// The generator exercises both sides: offers with something to reclaim and offers where
/// our labelled resources are all kept.
#[test]
fn random_offers_cover_reclaimed_and_kept_instances() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut reclaimed, mut kept_only) = (0, 0);
    for _ in 0..200 {
        let parts = parts_strategy().new_tree(&mut runner).unwrap().current();
        let start = build(&parts);
        let ours: Vec<String> = start.iter().filter_map(our_instance).collect();
        let plan = plan_reclaim(&start, &config(), &known(&[])).unwrap();
        if !plan.operations.is_empty() {
            reclaimed += 1;
        }
        let all: Vec<&str> = ours.iter().map(String::as_str).collect();
        if !ours.is_empty()
            && plan_reclaim(&start, &config(), &known(&all))
                .unwrap()
                .operations
                .is_empty()
        {
            kept_only += 1;
        }
    }
    assert!(
        reclaimed > 100,
        "only {reclaimed} of 200 offers had something to reclaim"
    );
    assert!(
        kept_only > 100,
        "only {kept_only} of 200 offers were kept whole"
    );
}
