//! Planning stateful tasks: the Marathon seed's examples against hand-made offers (fitting and
//! not fitting), validation rules, relaunch, wipe, external volumes, and a property test that
//! every plan validates and applies with berth-offers on the framework path.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;

use berth_offers::plan::{
    InstanceId, PlanConfig, PlanError, Reservation, RunSpec, plan_launch, plan_relaunch, plan_wipe,
};
use berth_offers::{
    AgentCapabilities, Context, Framework, FrameworkCapability, Operation, pipeline,
};
use berth_resources::{AllocationInfo, DiskInfo, DiskSource, Resource, Resources, Scalar, proto};
use proptest::prelude::*;

const ROLE: &str = "marathon";
const PRINCIPAL: &str = "marathon-principal";
const FRAMEWORK: &str = "fw-0001";

fn fixture(name: &str) -> RunSpec {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    RunSpec::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

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

fn disk_with(source: DiskSource, size: i64) -> Resource {
    let mut r = scalar("disk", size);
    r.disk = Some(Arc::new(DiskInfo {
        persistence: None,
        volume: None,
        source: Some(source),
    }));
    r
}

fn offer(parts: Vec<Resource>) -> Resources {
    parts.into_iter().collect()
}

fn framework_context(checkpointed: &Resources) -> Context {
    let mut ctx = Context::framework(Framework {
        id: Some(FRAMEWORK.to_owned()),
        roles: vec![ROLE.to_owned()],
        capabilities: vec![
            FrameworkCapability::MultiRole,
            FrameworkCapability::ReservationRefinement,
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

/// Applies the operations in order as the master would; returns the resources after each.
fn run_all(start: &Resources, ops: &[Operation]) -> Vec<Resources> {
    let mut states = Vec::new();
    let mut current = start.clone();
    for op in ops {
        let ctx = framework_context(&current);
        current = pipeline::run(&current, op.clone(), &ctx, None)
            .unwrap_or_else(|e| panic!("{} refused at {}: {}", op.kind(), e.stage, e.message));
        states.push(current.clone());
    }
    states
}

fn kinds(ops: &[Operation]) -> Vec<&'static str> {
    ops.iter().map(Operation::kind).collect()
}

fn launch_resources(op: &Operation) -> Resources {
    match op {
        Operation::Launch { tasks } => tasks
            .iter()
            .flat_map(|t| t.resources.iter().cloned())
            .collect(),
        other => panic!("not a launch: {}", other.kind()),
    }
}

fn volume_ids(r: &Resources) -> Vec<String> {
    let mut ids: Vec<String> = r
        .persistent_volumes()
        .iter()
        .filter_map(|v| v.persistence_id())
        .map(ToString::to_string)
        .collect();
    ids.sort();
    ids
}

#[test]
fn mysql_first_launch_relaunch_and_wipe() {
    let app = fixture("mysql.json");
    app.validate().unwrap();
    let start = offer(vec![
        scalar("cpus", 4),
        scalar("mem", 4096),
        scalar("disk", 10_000),
    ]);
    let plan = plan_launch(&app, &start, &config(), None).unwrap();
    assert_eq!(kinds(&plan.operations), ["RESERVE", "CREATE", "LAUNCH"]);

    // RESERVE cpus 1, mem 512, disk 1000 with the instance labels.
    let Operation::Reserve { resources, .. } = &plan.operations[0] else {
        panic!()
    };
    let reserved: Resources = resources.iter().cloned().collect();
    assert_eq!(reserved.cpus(), Some(Scalar::from_units(1)));
    assert_eq!(reserved.mem(), Some(Scalar::from_units(512)));
    assert_eq!(reserved.disk(), Some(Scalar::from_units(1000)));
    for r in resources {
        let info = r.current_reservation().unwrap();
        assert_eq!(info.role.as_str(), ROLE);
        assert_eq!(info.principal.as_deref(), Some(PRINCIPAL));
        let labels = &info.labels.as_ref().unwrap().0;
        assert!(
            labels
                .iter()
                .any(|l| l.key == "marathon_framework_id" && l.value.as_deref() == Some(FRAMEWORK))
        );
        assert!(labels.iter().any(|l| l.key == "marathon_task_id"
            && l.value.as_deref() == Some(plan.reservation.instance_id.as_str())));
    }
    assert!(
        InstanceId::parse(&plan.reservation.instance_id).is_some_and(|i| i.safe_path == "mysql")
    );

    // CREATE the volume `mysql#mysqldata#<uuid>` at container path `mysqldata`.
    let Operation::Create { volumes } = &plan.operations[1] else {
        panic!()
    };
    let id = volumes[0].persistence_id().unwrap();
    let parsed = id.marathon().unwrap();
    assert_eq!(
        (parsed.app_safe_path(), parsed.volume()),
        ("mysql", "mysqldata")
    );
    assert_eq!(parsed.uuid().get_version_num(), 1, "time-based UUID");
    assert_eq!(
        volumes[0]
            .disk
            .as_ref()
            .unwrap()
            .volume
            .as_ref()
            .unwrap()
            .container_path,
        "mysqldata"
    );
    assert_eq!(plan.reservation.persistence_ids, vec![id.to_string()]);

    // LAUNCH carries the volume and the /var/lib/mysql host-path workaround.
    let Operation::Launch { tasks } = &plan.operations[2] else {
        panic!()
    };
    assert_eq!(tasks[0].volumes.len(), 1);
    assert_eq!(tasks[0].volumes[0].container_path, "/var/lib/mysql");
    assert_eq!(tasks[0].volumes[0].host_path.as_deref(), Some("mysqldata"));

    let states = run_all(&start, &plan.operations);
    let after_create = &states[1];

    // The task dies: the next offer holds the reservation and the volume; relaunch uses
    // exactly those, with no new RESERVE or CREATE.
    let relaunch = plan_relaunch(&app, after_create, &config(), &plan.reservation).unwrap();
    assert_eq!(kinds(&relaunch.operations), ["LAUNCH"]);
    let used = launch_resources(&relaunch.operations[0]);
    assert_eq!(volume_ids(&used), plan.reservation.persistence_ids);
    assert_eq!(used, launch_resources(&plan.operations[2]));
    run_all(after_create, &relaunch.operations);

    // Scale-down keeps everything; wipe destroys and unreserves, giving the offer back.
    let wipe = plan_wipe(after_create, &config(), &plan.reservation).unwrap();
    assert_eq!(kinds(&wipe.operations), ["DESTROY", "UNRESERVE"]);
    let wiped = run_all(after_create, &wipe.operations);
    assert_eq!(wiped.last().unwrap(), &start);
}

#[test]
fn mysql_offers_that_do_not_fit() {
    let app = fixture("mysql.json");
    let small = offer(vec![
        scalar("cpus", 4),
        scalar("mem", 256),
        scalar("disk", 500),
    ]);
    let Err(PlanError::NoFit(reasons)) = plan_launch(&app, &small, &config(), None) else {
        panic!()
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("mem") && r.contains("need 512")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("disk") && r.contains("need 1000")),
        "{reasons:?}"
    );
    // Reserved resources of someone else are not taken.
    let mut theirs = scalar("cpus", 8);
    theirs
        .reservations
        .push(berth_resources::ReservationInfo::dynamic(
            berth_resources::Role::new(ROLE).unwrap(),
            Some("other"),
        ));
    let taken = offer(vec![theirs, scalar("mem", 4096), scalar("disk", 10_000)]);
    let Err(PlanError::NoFit(reasons)) = plan_launch(&app, &taken, &config(), None) else {
        panic!()
    };
    assert!(
        reasons.iter().any(|r| r.contains("unreserved cpus")),
        "{reasons:?}"
    );
}

#[test]
fn postgres_mount_disk_with_max_size_and_path_constraint() {
    let app = fixture("postgres.json");
    app.validate().unwrap();
    let disks = |with_fit: bool| {
        let mut parts = vec![
            scalar("cpus", 2),
            scalar("mem", 2048),
            disk_with(DiskSource::mount("/mnt/hdd-1"), 700_000),
            disk_with(DiskSource::mount("/mnt/ssd-2"), 2_000_000),
            disk_with(DiskSource::mount("/mnt/ssd-3"), 100_000),
        ];
        if with_fit {
            parts.push(disk_with(DiskSource::mount("/mnt/ssd-1"), 600_000));
        }
        offer(parts)
    };
    let start = disks(true);
    let plan = plan_launch(&app, &start, &config(), None).unwrap();
    let Operation::Create { volumes } = &plan.operations[1] else {
        panic!()
    };
    // A MOUNT disk is taken whole.
    assert_eq!(volumes[0].scalar_value(), Some(Scalar::from_units(600_000)));
    assert_eq!(
        volumes[0].disk_source().and_then(|s| s.root()),
        Some("/mnt/ssd-1")
    );
    let states = run_all(&start, &plan.operations);
    let after = &states[1];
    let relaunch = plan_relaunch(&app, after, &config(), &plan.reservation).unwrap();
    assert_eq!(
        volume_ids(&launch_resources(&relaunch.operations[0])),
        plan.reservation.persistence_ids
    );

    let Err(PlanError::NoFit(reasons)) = plan_launch(&app, &disks(false), &config(), None) else {
        panic!()
    };
    let text = reasons.join("; ");
    assert!(
        text.contains("/mnt/hdd-1: path \"/mnt/hdd-1\" does not satisfy LIKE /mnt/ssd-.+"),
        "{text}"
    );
    assert!(
        text.contains("/mnt/ssd-2: 2000000 MiB is larger than maxSize 1048576"),
        "{text}"
    );
    assert!(
        text.contains("/mnt/ssd-3: 100000 MiB is smaller than size 524288"),
        "{text}"
    );
}

#[test]
fn pod_with_a_shared_persistent_volume() {
    let pod = fixture("pod.json");
    pod.validate().unwrap();
    let start = offer(vec![
        scalar("cpus", 1),
        scalar("mem", 1024),
        scalar("disk", 100),
    ]);
    let plan = plan_launch(&pod, &start, &config(), None).unwrap();
    let Operation::Create { volumes } = &plan.operations[1] else {
        panic!()
    };
    assert_eq!(volumes.len(), 1, "one volume for both containers");
    let id = volumes[0].persistence_id().unwrap().marathon().unwrap();
    assert_eq!(
        (id.app_safe_path(), id.volume()),
        ("persistent-volume-pod", "pst")
    );
    let states = run_all(&start, &plan.operations);
    let reserved = &states[0];
    // Marathon's aggregate: the default executor (0.1 cpus, 32 MiB) plus both containers.
    assert_eq!(
        reserved.reserved(Some(ROLE)).cpus(),
        Some(Scalar::from_milli(300)),
        "0.1 + 0.1 + 0.1 cpus"
    );
    assert_eq!(
        reserved.reserved(Some(ROLE)).mem(),
        Some(Scalar::from_units(288)),
        "32 + 128 + 128 MiB"
    );
}

#[test]
fn unsupported_container_path_workaround_and_validation_errors() {
    let workaround = RunSpec::from_json(
        r#"{"id": "/data-app", "cpus": 0.5, "mem": 64, "container": {"volumes": [
            {"containerPath": "/var/lib/data", "hostPath": "mydata", "mode": "RW"},
            {"containerPath": "mydata", "mode": "RW", "persistent": {"size": 1000}}]}}"#,
    )
    .unwrap();
    workaround.validate().unwrap();
    let start = offer(vec![
        scalar("cpus", 1),
        scalar("mem", 128),
        scalar("disk", 2000),
    ]);
    let plan = plan_launch(&workaround, &start, &config(), None).unwrap();
    run_all(&start, &plan.operations);

    let cases = [
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"/var/lib/data","persistent":{"size":10}}]}}"#,
            "container.volumes[0].containerPath",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"a/b","persistent":{"size":10}}]}}"#,
            "container.volumes[0].containerPath",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"..","persistent":{"size":10}}]}}"#,
            "container.volumes[0].containerPath",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","persistent":{"size":0}}]}}"#,
            "container.volumes[0].persistent.size",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","persistent":{"size":10,"maxSize":20}}]}}"#,
            "container.volumes[0].persistent.maxSize",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","persistent":{"type":"mount","size":10,"maxSize":10}}]}}"#,
            "container.volumes[0].persistent.maxSize",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","persistent":{"size":10,"constraints":[["path","LIKE","x"]]}}]}}"#,
            "container.volumes[0].persistent.constraints",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","persistent":{"type":"path","size":10,"constraints":[["path","LIKE","("]]}}]}}"#,
            "container.volumes[0].persistent.constraints[0]",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","persistent":{"type":"path","size":10,"constraints":[["host","LIKE","x"]]}}]}}"#,
            "container.volumes[0].persistent.constraints[0]",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","mode":"RO","persistent":{"size":10}}]}}"#,
            "container.volumes[0].mode",
        ),
        (
            r#"{"id":"/a","unreachableStrategy":{"inactiveAfterSeconds":1},"container":{"volumes":[{"containerPath":"d","persistent":{"size":10}}]}}"#,
            "unreachableStrategy",
        ),
        (
            r#"{"id":"/a","upgradeStrategy":{"minimumHealthCapacity":0.5,"maximumOverCapacity":0.2},"container":{"volumes":[{"containerPath":"d","persistent":{"size":10}}]}}"#,
            "upgradeStrategy.maximumOverCapacity",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","external":{"name":"v","provider":"dvdi","options":{}}}]}}"#,
            "container.volumes[0].external.options[\"dvdi/driver\"]",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","external":{"name":"v","provider":"dvdi","options":{"dvdi/driver":"rexray","dvdi/iops":"fast"}}}]}}"#,
            "container.volumes[0].external.options[\"dvdi/iops\"]",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","external":{"name":"v","provider":"dvdi","options":{"dvdi/driver":"rexray","Bad Key":"x"}}}]}}"#,
            "container.volumes[0].external.options[\"Bad Key\"]",
        ),
        (
            r#"{"id":"/a","instances":2,"container":{"volumes":[{"containerPath":"d","external":{"name":"v","provider":"dvdi","options":{"dvdi/driver":"rexray"}}}]}}"#,
            "instances",
        ),
        (
            r#"{"id":"/a","container":{"type":"DOCKER","volumes":[{"containerPath":"d","external":{"name":"v","provider":"dvdi","size":5,"options":{"dvdi/driver":"rexray"}}}]}}"#,
            "container.volumes[0].external.size",
        ),
        (
            r#"{"id":"/a","container":{"volumes":[{"containerPath":"d","external":{"name":"v","provider":"nfs"}}]}}"#,
            "container.volumes[0].external.provider",
        ),
        (r#"{"id":"Bad_Id"}"#, "id"),
        (
            r#"{"id":"/p","volumes":[{"name":"v","persistent":{"size":1}}],"containers":[{"name":"c","volumeMounts":[{"name":"v","mountPath":"x/y"}]}]}"#,
            "containers[0].volumeMounts[0].mountPath",
        ),
        (
            r#"{"id":"/p","volumes":[],"containers":[{"name":"c","volumeMounts":[{"name":"nope","mountPath":"x"}]}]}"#,
            "containers[0].volumeMounts[0].name",
        ),
    ];
    for (json, path) in cases {
        let spec = RunSpec::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let err = spec.validate().expect_err(json);
        assert_eq!(err.path, path, "{json}: {err}");
        assert!(matches!(
            plan_launch(&spec, &start, &config(), None),
            Err(PlanError::Spec(_))
        ));
    }
}

#[test]
fn external_volumes_become_mesos_volumes() {
    let app = RunSpec::from_json(
        r#"{"id": "/ext", "cpus": 0.1, "mem": 32, "container": {"volumes": [
            {"containerPath": "/data", "mode": "RW", "external": {"name": "db-vol", "provider": "dvdi", "size": 20,
              "options": {"dvdi/driver": "rexray", "dvdi/volumetype": "gp2", "dvdi/size": "5", "dvdi/iops": " 100 "}}},
            {"containerPath": "/csi", "mode": "RW", "external": {"name": "vol-1", "provider": "csi",
              "options": {"pluginName": "cfgd", "capability": {"accessType": "mount", "accessMode": "SINGLE_NODE_WRITER", "fsType": "ext4"},
                          "nodePublishSecret": {"token": "secret-ref"}, "volumeContext": {"k": "v"}}}}]}}"#,
    )
    .unwrap();
    app.validate().unwrap();
    let start = offer(vec![scalar("cpus", 1), scalar("mem", 64)]);
    let plan = plan_launch(&app, &start, &config(), None).unwrap();
    assert_eq!(kinds(&plan.operations), ["RESERVE", "LAUNCH"]);
    let Operation::Launch { tasks } = &plan.operations[1] else {
        panic!()
    };
    let json: Vec<serde_json::Value> = tasks[0]
        .volumes
        .iter()
        .map(berth_resources::json::to_json_value)
        .collect();
    assert_eq!(json[0]["source"]["type"], "DOCKER_VOLUME");
    assert_eq!(json[0]["source"]["docker_volume"]["driver"], "rexray");
    let params = json[0]["source"]["docker_volume"]["driver_options"]["parameter"]
        .as_array()
        .unwrap();
    let keys: Vec<(&str, &str)> = params
        .iter()
        .map(|p| (p["key"].as_str().unwrap(), p["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [("iops", "100"), ("volumetype", "gp2"), ("size", "20")],
        "size overrides dvdi/size; prefix removed; trimmed"
    );
    assert_eq!(json[1]["source"]["type"], "CSI_VOLUME");
    let sp = &json[1]["source"]["csi_volume"]["static_provisioning"];
    assert_eq!(sp["volume_id"], "vol-1");
    assert_eq!(sp["volume_capability"]["mount"]["fs_type"], "ext4");
    assert_eq!(
        sp["node_publish_secrets"]["token"]["reference"]["name"],
        "secret-ref"
    );
    // The LAUNCH with its container volumes survives the wire and the master.
    let wire = plan.operations[1].to_proto();
    let back = Operation::from_proto(
        &prost::Message::decode(prost::Message::encode_to_vec(&wire).as_slice()).unwrap(),
    )
    .unwrap();
    let Operation::Launch { tasks: back } = back else {
        panic!()
    };
    assert_eq!(back[0].volumes, tasks[0].volumes);
    run_all(&start, &plan.operations);
    let _: Option<proto::Volume> = None;
}

#[test]
fn relaunch_refuses_offers_without_the_reservation_or_volumes() {
    let app = fixture("mysql.json");
    let start = offer(vec![
        scalar("cpus", 4),
        scalar("mem", 4096),
        scalar("disk", 10_000),
    ]);
    let plan = plan_launch(&app, &start, &config(), None).unwrap();
    let states = run_all(&start, &plan.operations);
    let after_reserve = &states[0];
    let Err(PlanError::NoFit(reasons)) =
        plan_relaunch(&app, after_reserve, &config(), &plan.reservation)
    else {
        panic!()
    };
    assert!(
        reasons[0].contains("lacks persistent volume"),
        "{reasons:?}"
    );
    let Err(PlanError::NoFit(reasons)) = plan_relaunch(&app, &start, &config(), &plan.reservation)
    else {
        panic!()
    };
    assert!(
        reasons[0].contains("holds no resources reserved"),
        "{reasons:?}"
    );
    let other = Reservation {
        instance_id: "other.instance-x".into(),
        persistence_ids: vec![],
    };
    assert!(plan_relaunch(&app, &states[1], &config(), &other).is_err());
    // Another framework's labels are not ours.
    let foreign = PlanConfig::new("fw-other", ROLE, Some(PRINCIPAL));
    assert!(plan_relaunch(&app, &states[1], &foreign, &plan.reservation).is_err());
}

// ---- property: every plan validates and applies ----

fn volume_spec() -> impl Strategy<Value = String> {
    (0usize..3, 1u64..2000, any::<bool>(), any::<bool>()).prop_map(
        |(kind, size, constrained, max)| {
            let kind_name = ["root", "path", "mount"][kind];
            let constraints = if constrained && kind > 0 {
                r#"[["path","LIKE","/mnt/ssd-.*"]]"#
            } else {
                "[]"
            };
            let max_size = if max && kind == 2 {
                format!(r#","maxSize":{}"#, size * 3)
            } else {
                String::new()
            };
            format!(
                r#"{{"type":"{kind_name}","size":{size}{max_size},"constraints":{constraints}}}"#
            )
        },
    )
}

fn app_spec() -> impl Strategy<Value = RunSpec> {
    (1u32..20, 16u32..1024, 0u32..500, prop::collection::vec(volume_spec(), 0..4)).prop_map(|(cpus, mem, disk, vols)| {
        let volumes: Vec<String> = vols
            .iter()
            .enumerate()
            .map(|(i, p)| format!(r#"{{"containerPath":"v{i}","mode":"RW","persistent":{p}}}"#))
            .collect();
        let json = format!(
            r#"{{"id":"/prop/app","cpus":{},"mem":{mem},"disk":{disk},"container":{{"volumes":[{}]}}}}"#,
            f64::from(cpus) / 10.0,
            volumes.join(",")
        );
        RunSpec::from_json(&json).unwrap()
    })
}

fn random_offer() -> impl Strategy<Value = Resources> {
    (
        prop_oneof![1 => Just(0i64), 6 => 1i64..8],
        prop_oneof![1 => Just(0i64), 6 => 256i64..8192],
        prop_oneof![1 => Just(0i64), 6 => 500i64..12_000],
        prop::collection::vec((any::<bool>(), 0u8..3, 1i64..6000), 0..4),
        prop::collection::vec((any::<bool>(), 0u8..3, 1i64..8000), 1..6),
    )
        .prop_map(|(cpus, mem, root, paths, mounts)| {
            let mut parts = Vec::new();
            if cpus > 0 {
                parts.push(scalar("cpus", cpus));
            }
            if mem > 0 {
                parts.push(scalar("mem", mem));
            }
            if root > 0 {
                parts.push(scalar("disk", root));
            }
            for (i, (ssd, n, size)) in paths.into_iter().enumerate() {
                let kind = if ssd { "ssd" } else { "hdd" };
                parts.push(disk_with(
                    DiskSource::path(format!("/mnt/{kind}-p{i}{n}")),
                    size,
                ));
            }
            for (i, (ssd, n, size)) in mounts.into_iter().enumerate() {
                let kind = if ssd { "ssd" } else { "hdd" };
                parts.push(disk_with(
                    DiskSource::mount(format!("/mnt/{kind}-m{i}{n}")),
                    size,
                ));
            }
            offer(parts)
        })
}

fn try_all(start: &Resources, ops: &[Operation]) -> Result<Vec<Resources>, String> {
    let mut states = Vec::new();
    let mut current = start.clone();
    for op in ops {
        let ctx = framework_context(&current);
        current = pipeline::run(&current, op.clone(), &ctx, None)
            .map_err(|e| format!("{} refused at {}: {}", op.kind(), e.stage, e.message))?;
        states.push(current.clone());
    }
    Ok(states)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plans_validate_and_apply_and_relaunch_uses_the_created_volumes(app in app_spec(), start in random_offer()) {
        match plan_launch(&app, &start, &config(), None) {
            Ok(plan) => {
                let states = try_all(&start, &plan.operations).map_err(TestCaseError::fail)?;
                // After RESERVE and CREATE (the task has not run yet, or has died).
                let before_launch = &states[states.len() - 2];
                let relaunch = plan_relaunch(&app, before_launch, &config(), &plan.reservation)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let used = launch_resources(&relaunch.operations[0]);
                let mut want = plan.reservation.persistence_ids.clone();
                want.sort();
                prop_assert_eq!(volume_ids(&used), want);
                prop_assert_eq!(&used, &launch_resources(plan.operations.last().unwrap()));
                try_all(before_launch, &relaunch.operations).map_err(TestCaseError::fail)?;
                let wipe = plan_wipe(before_launch, &config(), &plan.reservation)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let wiped = try_all(before_launch, &wipe.operations).map_err(TestCaseError::fail)?;
                prop_assert_eq!(wiped.last().unwrap(), &start);
            }
            Err(PlanError::NoFit(reasons)) => prop_assert!(!reasons.is_empty()),
            Err(other) => prop_assert!(false, "{}", other),
        }
    }
}

/// The property above is not vacuous: most random cases do fit.
#[test]
fn most_random_cases_fit() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut fit, mut total) = (0, 0);
    for _ in 0..300 {
        let app = app_spec().new_tree(&mut runner).unwrap().current();
        let start = random_offer().new_tree(&mut runner).unwrap().current();
        total += 1;
        if plan_launch(&app, &start, &config(), None).is_ok() {
            fit += 1;
        }
    }
    assert!(fit * 3 >= total, "only {fit} of {total} random cases fit");
    assert!(fit < total, "no random case is refused");
}
