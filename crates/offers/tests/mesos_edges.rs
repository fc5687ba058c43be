//! Edge cases where a re-implementation easily drifts from Mesos (found in review), checked
//! through the master pipeline: error texts and order, and conservation of resources.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use berth_offers::pipeline;
use serde_json::{Value as Json, json};

fn run(resources: Json, operation: Json, context: Json) -> Result<(), (String, String)> {
    pipeline::evaluate(&resources, &operation, &context, None)
        .map(|_| ())
        .map_err(|e| (e.stage.to_owned(), e.message))
}

fn err(resources: Json, operation: Json, context: Json) -> (String, String) {
    run(resources, operation, context).expect_err("expected a refusal")
}

fn mount_disk() -> Json {
    json!({"name":"disk","type":"SCALAR","scalar":{"value":100},"disk":{"source":{"type":"MOUNT","mount":{"root":"/m"}}}})
}

fn reserved(mut r: Json, role: &str) -> Json {
    r["reservations"] = json!([{"type":"DYNAMIC","role":role}]);
    r
}

fn volume(id: &str, role: &str, size: i64) -> Json {
    json!({"name":"disk","type":"SCALAR","scalar":{"value":size},
           "reservations":[{"type":"DYNAMIC","role":role}],
           "disk":{"persistence":{"id":id},"volume":{"container_path":"data","mode":"RW"}}})
}

#[test]
fn a_whole_disk_listed_twice_is_not_reserved_twice() {
    let r = reserved(mount_disk(), "r");
    let (stage, message) = err(
        json!([mount_disk()]),
        json!({"type":"RESERVE","reserve":{"resources":[r.clone(), r]}}),
        Json::Null,
    );
    assert_eq!(stage, "apply", "{message}");
    assert!(message.contains("does not contain"), "{message}");
}

#[test]
fn an_identical_shared_volume_created_twice_does_not_lose_disk() {
    let mut v = volume("v1", "r", 50);
    v["shared"] = json!({});
    let offer = json!([
        reserved(
            json!({"name":"disk","type":"SCALAR","scalar":{"value":100}}),
            "r"
        ),
        v.clone()
    ]);
    let (stage, message) = err(
        offer,
        json!({"type":"CREATE","create":{"volumes":[v]}}),
        Json::Null,
    );
    assert_eq!(stage, "apply", "{message}");
    assert!(message.contains("changed by the operation"), "{message}");
}

#[test]
fn missing_bodies_use_mesos_wording() {
    let cases = [
        (
            "UNRESERVE",
            "An UNRESERVE offer operation must have the Offer.Operation.unreserve field set.",
        ),
        (
            "GROW_VOLUME",
            "A GROW_VOLUME operation must have the Offer.Operation.grow_volume field set",
        ),
        (
            "SHRINK_VOLUME",
            "A SHRINK_VOLUME offer operation must have the Offer.Operation.shrink_volume field set",
        ),
        (
            "RESERVE",
            "A RESERVE offer operation must have the Offer.Operation.reserve field set.",
        ),
    ];
    for (kind, text) in cases {
        let (stage, message) = err(json!([]), json!({"type": kind}), Json::Null);
        assert_eq!((stage.as_str(), message.as_str()), ("validate", text));
    }
}

#[test]
fn grow_of_a_volume_without_volume_info() {
    let mut v = volume("v1", "r", 10);
    v["disk"].as_object_mut().unwrap().remove("volume");
    let add = reserved(
        json!({"name":"disk","type":"SCALAR","scalar":{"value":5}}),
        "r",
    );
    let ctx = json!({"agent_capabilities":{"resize_volume":true}});
    let (_, message) = err(
        json!([]),
        json!({"type":"GROW_VOLUME","grow_volume":{"volume":v,"addition":add}}),
        ctx,
    );
    assert_eq!(
        message,
        "Invalid persistent volume in the 'GrowVolume.volume' field: Expecting 'volume' to be set for persistent volume"
    );
}

#[test]
fn a_bad_persistence_id_is_reported_after_the_master_checks_mesos_runs_first() {
    let mut v = volume("a/b", "r", 10);
    v["revocable"] = json!({});
    let (stage, message) = err(
        json!([]),
        json!({"type":"CREATE","create":{"volumes":[v]}}),
        Json::Null,
    );
    assert_eq!(stage, "validate");
    assert!(
        message.contains("Persistent volumes cannot be created from revocable resources"),
        "{message}"
    );
    let (_, message) = err(
        json!([]),
        json!({"type":"CREATE","create":{"volumes":[volume("a/b", "r", 10)]}}),
        Json::Null,
    );
    assert_eq!(
        message,
        "Invalid resources: Invalid DiskInfo: Invalid persistence ID for persistent volume: 'a/b' contains invalid characters"
    );
}

#[test]
fn framework_volumes_must_be_allocated_to_one_role() {
    let fw = json!({"api":"framework","framework":{"roles":["role1","role2"],"capabilities":["MULTI_ROLE"]}});
    let (_, message) = err(
        json!([]),
        json!({"type":"CREATE","create":{"volumes":[volume("v1","role1",10)]}}),
        fw.clone(),
    );
    assert_eq!(
        message,
        "Invalid volume resources: The resources are not allocated to a role"
    );
    let mut a = volume("v1", "role1", 10);
    a["allocation_info"] = json!({"role":"role1"});
    let mut b = volume("v2", "role2", 10);
    b["allocation_info"] = json!({"role":"role2"});
    let (_, message) = err(
        json!([]),
        json!({"type":"CREATE","create":{"volumes":[a, b]}}),
        fw,
    );
    assert!(message.contains("('role2' and 'role1')"), "{message}");
}

#[test]
fn create_checks_each_volume_completely_before_the_next() {
    let mut v2 = volume("v2", "a/b", 10);
    v2["disk"]["persistence"]["principal"] = json!("p");
    let ctx = json!({"principal":"p"});
    let (_, message) = err(
        json!([]),
        json!({"type":"CREATE","create":{"volumes":[volume("v1","a",10), v2]}}),
        ctx,
    );
    assert!(
        message.contains("with no principal set in 'disk.persistence'"),
        "{message}"
    );
}

#[test]
fn empty_volumes_are_dropped_as_mesos_collections_drop_them() {
    // DESTROY of a zero-size volume: the collection is empty, which the provider check refuses.
    let (_, message) = err(
        json!([]),
        json!({"type":"DESTROY","destroy":{"volumes":[volume("v1","r",0)]}}),
        Json::Null,
    );
    assert!(message.contains("multiple resource providers"), "{message}");
    // CREATE of an id twice where one copy is empty is not a duplicate.
    let offer = json!([reserved(
        json!({"name":"disk","type":"SCALAR","scalar":{"value":100}}),
        "r"
    )]);
    run(
        offer,
        json!({"type":"CREATE","create":{"volumes":[volume("v1","r",0), volume("v1","r",10)]}}),
        Json::Null,
    )
    .unwrap();
}
