//! ACL decisions for RESERVE, UNRESERVE, CREATE, DESTROY and resize, by principal and role,
//! through the same pipeline the validator uses.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use berth_offers::acl::{Acls, Action, Authorizer, Request};
use berth_offers::pipeline;
use serde_json::{Value as Json, json};

const ACLS: &str = r#"{
  "permissive": false,
  "reserve_resources": [
    {"principals": {"values": ["ops"]}, "roles": {"values": ["prod", "dev"]}},
    {"principals": {"values": ["dev-team"]}, "roles": {"values": ["dev"]}},
    {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}}
  ],
  "unreserve_resources": [
    {"principals": {"values": ["ops"]}, "reserver_principals": {"type": "ANY"}},
    {"principals": {"type": "ANY"}, "reserver_principals": {"values": ["dev-team"]}}
  ],
  "create_volumes": [
    {"principals": {"values": ["ops", "db"]}, "roles": {"values": ["prod"]}}
  ],
  "destroy_volumes": [
    {"principals": {"values": ["db"]}, "creator_principals": {"values": ["db"]}},
    {"principals": {"values": ["ops"]}, "creator_principals": {"type": "ANY"}}
  ],
  "resize_volume": [
    {"principals": {"type": "NONE"}, "roles": {"values": ["prod"]}}
  ]
}"#;

fn acls() -> Acls {
    Acls::from_json(ACLS).unwrap()
}

fn disk(role: &str, principal: &str) -> Json {
    json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 100},
           "reservations": [{"type": "DYNAMIC", "role": role, "principal": principal}]})
}

fn volume(role: &str, principal: &str, creator: &str) -> Json {
    let mut v = disk(role, principal);
    v["disk"] = json!({"persistence": {"id": "v1", "principal": creator},
                       "volume": {"container_path": "data", "mode": "RW"}});
    v
}

/// Runs an operator-API operation by `principal` with the ACLs.
fn run(
    principal: &str,
    resources: Json,
    operation: Json,
    checkpointed: Json,
) -> Result<(), String> {
    let context = json!({"api": "operator", "principal": principal,
        "agent_capabilities": {"hierarchical_role": true, "reservation_refinement": true, "resize_volume": true},
        "agent_checkpointed_resources": checkpointed});
    let a = acls();
    pipeline::evaluate(
        &resources,
        &operation,
        &context,
        Some(&a as &dyn Authorizer),
    )
    .map(|_| ())
    .map_err(|e| format!("{}: {}", e.stage, e.message))
}

fn unreserved_disk() -> Json {
    json!([{"name": "disk", "type": "SCALAR", "scalar": {"value": 100}}])
}

#[test]
fn reserve_by_principal_and_role() {
    let reserve =
        |role: &str, p: &str| json!({"type": "RESERVE", "reserve": {"resources": [disk(role, p)]}});
    assert_eq!(
        run("ops", unreserved_disk(), reserve("prod", "ops"), json!([])),
        Ok(())
    );
    assert_eq!(
        run(
            "dev-team",
            unreserved_disk(),
            reserve("dev", "dev-team"),
            json!([])
        ),
        Ok(())
    );
    let denied = run(
        "dev-team",
        unreserved_disk(),
        reserve("prod", "dev-team"),
        json!([]),
    )
    .unwrap_err();
    assert!(
        denied.contains("Not authorized")
            && denied.contains("'dev-team' may not reserve resources for 'prod'"),
        "{denied}"
    );
    // The catch-all rule with a NONE object denies everyone else.
    assert!(
        run(
            "guest",
            unreserved_disk(),
            reserve("dev", "guest"),
            json!([])
        )
        .unwrap_err()
        .contains("Not authorized")
    );
}

#[test]
fn unreserve_by_reserver_principal() {
    let unreserve =
        |p: &str| json!({"type": "UNRESERVE", "unreserve": {"resources": [disk("prod", p)]}});
    assert_eq!(
        run(
            "ops",
            json!([disk("prod", "alice")]),
            unreserve("alice"),
            json!([])
        ),
        Ok(())
    );
    assert_eq!(
        run(
            "guest",
            json!([disk("prod", "dev-team")]),
            unreserve("dev-team"),
            json!([])
        ),
        Ok(())
    );
    assert!(
        run(
            "guest",
            json!([disk("prod", "alice")]),
            unreserve("alice"),
            json!([])
        )
        .unwrap_err()
        .contains("Not authorized")
    );
}

#[test]
fn create_by_principal_and_role() {
    let create = |role: &str, p: &str| json!({"type": "CREATE", "create": {"volumes": [volume(role, p, p)]}});
    assert_eq!(
        run(
            "db",
            json!([disk("prod", "db")]),
            create("prod", "db"),
            json!([])
        ),
        Ok(())
    );
    assert!(
        run(
            "db",
            json!([disk("dev", "db")]),
            create("dev", "db"),
            json!([])
        )
        .unwrap_err()
        .contains("Not authorized")
    );
    assert!(
        run(
            "alice",
            json!([disk("prod", "alice")]),
            create("prod", "alice"),
            json!([])
        )
        .unwrap_err()
        .contains("Not authorized")
    );
}

#[test]
fn destroy_only_what_the_acls_allow_another_principal_to_destroy() {
    let destroy = |creator: &str| json!({"type": "DESTROY", "destroy": {"volumes": [volume("prod", "db", creator)]}});
    let offer = |creator: &str| json!([volume("prod", "db", creator)]);
    // A framework may destroy its own volume ...
    assert_eq!(run("db", offer("db"), destroy("db"), offer("db")), Ok(()));
    // ... not one another principal created ...
    let denied = run("db", offer("ops"), destroy("ops"), offer("ops")).unwrap_err();
    assert!(
        denied.contains("may not destroy volumes for 'ops'"),
        "{denied}"
    );
    // ... unless the ACLs allow it (ops may destroy anything).
    assert_eq!(run("ops", offer("db"), destroy("db"), offer("db")), Ok(()));
}

#[test]
fn resize_denied_by_none_subject() {
    let grow = json!({"type": "GROW_VOLUME", "grow_volume": {"volume": volume("prod", "db", "db"), "addition": disk("prod", "db")}});
    let resources = json!([volume("prod", "db", "db"), disk("prod", "db")]);
    assert!(
        run("db", resources, grow, json!([]))
            .unwrap_err()
            .contains("may not resize volumes")
    );
}

#[test]
fn permissive_default_and_entity_matching() {
    let open = Acls::from_json(
        r#"{"create_volumes": [{"principals": {"values": ["x"]}, "roles": {"type": "NONE"}}]}"#,
    )
    .unwrap();
    assert!(open.permissive);
    let ask = |principal: Option<&'static str>| Request {
        action: Action::CreateVolume,
        principal,
        object: Some("prod"),
    };
    assert!(!open.authorized(&ask(Some("x"))), "NONE object denies x");
    assert!(
        open.authorized(&ask(Some("y"))),
        "no rule for y: permissive"
    );
    assert!(open.authorized(&ask(None)), "unauthenticated: permissive");
    let strict = acls();
    assert!(!strict.authorized(&Request {
        action: Action::CreateVolume,
        principal: None,
        object: Some("prod")
    }));
    assert!(
        Acls::from_json(r#"{"create_volumes": [{"principals": {}, "roles": {"type": "ANY"}}]}"#)
            .is_err()
    );
    assert!(Acls::from_json("not json").is_err());
}
