//! The targets. Each reads its input exactly as the product reads that input, through the
//! crates' public APIs, and then uses what it read (accessors, formatting, the next step of the
//! pipeline) so that a value that parses but breaks a later step is found too.

// serde_json's `Value` indexing: a read of a missing key is `Null`, and every write is to an
// object built here; the array lookups are modulo the array's length.
#![allow(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use berth_offers::batch::{self, Policy};
use berth_proto::berth::v1 as pb;
use berth_proto::mesos::v1 as mesos;
use prost::Message as _;
use serde_json::{Value as Json, json};

use crate::Target;

/// Every target, in the order of the issue's list.
pub static TARGETS: &[Target] = &[
    Target {
        name: "validate_request_pb",
        about: "a berth.v1.ValidateRequest as protobuf bytes (the Mesos messages inside), answered as Validate and Apply",
        run: validate_request_pb,
        seeds: seeds_validate_request_pb,
    },
    Target {
        name: "batch_line",
        about: "one line of `berth-validator batch` / the gRPC Batch stream, any bytes",
        run: batch_line,
        seeds: seeds_batch_line,
    },
    Target {
        name: "batch_structured",
        about: "a batch request built from the input (roles, reservations, volumes, operations), so that inputs get past the JSON and resource parsers",
        run: batch_structured,
        seeds: seeds_structured,
    },
    Target {
        name: "dvdi_env",
        about: "the DVDI_VOLUME_* environment contract: name=value pairs, and a mesos.v1.Environment as protobuf",
        run: dvdi_env,
        seeds: seeds_dvdi_env,
    },
    Target {
        name: "dvdi_plugin_spec",
        about: "a Docker plugin .spec (one URL) or .json ({Name, Addr, TLSConfig}) file, through plugin discovery",
        run: dvdi_plugin_spec,
        seeds: seeds_dvdi_plugin_spec,
    },
    Target {
        name: "dvdi_response",
        about: "a Docker volume plugin's HTTP answer (status and body) to each endpoint",
        run: dvdi_response,
        seeds: seeds_dvdi_response,
    },
    Target {
        name: "csi_plugin_info",
        about: "a CSIPluginInfo configuration file (Mesos JSON), read and validated",
        run: csi_plugin_info,
        seeds: seeds_csi_plugin_info,
    },
    Target {
        name: "csi_response",
        about: "a CSI plugin's gRPC answers (GetPluginInfo, GetPluginCapabilities, Probe, NodeGetCapabilities, NodeGetInfo) as protobuf bytes",
        run: csi_response,
        seeds: seeds_csi_response,
    },
    Target {
        name: "marathon_app",
        about: "a Marathon app or pod definition (JSON): the planner's run spec and the Docker volumes in it",
        run: marathon_app,
        seeds: seeds_marathon_app,
    },
    Target {
        name: "mountinfo",
        about: "/proc/<pid>/mountinfo text, parsed and queried",
        run: mountinfo,
        seeds: seeds_mountinfo,
    },
    Target {
        name: "checkpoints",
        about: "the checkpoint files: CSI and DVDI volume records, the agent's container records and its checkpointed resources",
        run: checkpoints,
        seeds: seeds_checkpoints,
    },
    Target {
        name: "container_config",
        about: "the container config of `berth-isolator prepare` (JSON)",
        run: container_config,
        seeds: seeds_container_config,
    },
    Target {
        name: "validator_auth",
        about: "what a validator client presents: a certificate's DER, an authorization value, credentials and uid files, gRPC message framing",
        run: validator_auth,
        seeds: seeds_validator_auth,
    },
];

// ---------------------------------------------------------------------------------------------
// Helpers.

/// The repository root (the fuzz crate's parent).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_json(path: &Path) -> Json {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Json::Null)
}

/// The conformance vectors (operations and arithmetic), as objects.
fn vectors() -> Vec<Json> {
    let dir = repo().join("tests/conformance");
    ["operations.json", "arithmetic.json"]
        .iter()
        .filter_map(|f| match read_json(&dir.join(f)) {
            Json::Array(items) => Some(items),
            _ => None,
        })
        .flatten()
        .collect()
}

fn strings(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// A strict policy, as a server with authentication and limits applies it.
fn server_policy() -> Policy<'static> {
    Policy {
        principal: Some("p1"),
        acls: None,
        allow_request_acls: true,
        max_resources: Some(2_000),
    }
}

/// The first byte chooses, the rest is the input.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------------------------
// The validator's inputs.

fn validate_request_pb(data: &[u8]) {
    let Ok(request) = pb::ValidateRequest::decode(data) else {
        return;
    };
    // Trusting, then as a server with authentication and limits would.
    let _ = berth_validator::serve::answer(&request, true);
    let _ = berth_validator::serve::answer_with(&request, false, &server_policy());
}

fn seeds_validate_request_pb() -> Vec<Vec<u8>> {
    let list = |v: &Json| -> Vec<mesos::Resource> {
        v.as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|r| berth_resources::json::from_json_value(r).ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in vectors() {
        let operation = berth_resources::json::from_json_value(&v["operation"])
            .ok()
            .map(Box::new);
        let context =
            v.get("context")
                .filter(|c| c.is_object())
                .map(|c| pb::Context {
                    api: match c["api"].as_str() {
                        Some("framework") => pb::context::Api::Framework as i32,
                        Some("operator") => pb::context::Api::Operator as i32,
                        _ => 0,
                    },
                    principal: c["principal"].as_str().map(str::to_owned),
                    framework: c.get("framework").filter(|f| f.is_object()).map(|f| {
                        pb::Framework {
                            roles: f["roles"]
                                .as_array()
                                .map(|r| {
                                    r.iter()
                                        .filter_map(|x| x.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default(),
                            capabilities: f["capabilities"]
                                .as_array()
                                .map(|r| {
                                    r.iter()
                                        .filter_map(|x| x.as_str().map(str::to_owned))
                                        .collect()
                                })
                                .unwrap_or_default(),
                            principal: f["principal"].as_str().map(str::to_owned),
                            id: None,
                        }
                    }),
                    agent_checkpointed_resources: list(&c["agent_checkpointed_resources"]),
                    offer_allocation_role: c["offer_allocation_role"].as_str().map(str::to_owned),
                    ..pb::Context::default()
                });
        let request = pb::ValidateRequest {
            resources: list(&v["resources"]),
            operation,
            context,
            acls_json: if v["acls"].is_null() {
                String::new()
            } else {
                v["acls"].to_string()
            },
            json: String::new(),
        };
        out.push(request.encode_to_vec());
    }
    out.push(
        pb::ValidateRequest {
            json: vectors().first().map(Json::to_string).unwrap_or_default(),
            ..pb::ValidateRequest::default()
        }
        .encode_to_vec(),
    );
    out
}

fn batch_line(data: &[u8]) {
    let mut out = Vec::new();
    let _ = batch::write_answer_with(data, &Policy::default(), &mut out);
    out.clear();
    let _ = batch::write_answer_with(data, &server_policy(), &mut out);
}

fn seeds_batch_line() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vectors()
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    out.extend(strings(&[
        "",
        "{}",
        "[1]",
        "null",
        "{\"op\":\"add\"}",
        "\u{fffd}",
    ]));
    out.push(b"{\"resources\": \xff}".to_vec());
    out
}

/// A JSON request from the input: a small grammar over the values that matter to the
/// pipeline (names, types, roles, reservation stacks, volumes, operation kinds, contexts), so
/// that inputs reach validation and apply, which random bytes rarely do.
fn structured_request(u: &mut Unstructured<'_>) -> arbitrary::Result<Json> {
    const ROLES: &[&str] = &[
        "*",
        "r",
        "r/a",
        "r/a/b",
        "a",
        "framework-role",
        "",
        ".",
        "r/",
        "x y",
    ];
    const PRINCIPALS: &[&str] = &["p1", "p2", "ops", ""];
    const NAMES: &[&str] = &["cpus", "mem", "disk", "ports", "gpus", "x"];
    fn scalar(u: &mut Unstructured<'_>) -> arbitrary::Result<Json> {
        Ok(match u.int_in_range(0..=5)? {
            0 => json!(0),
            1 => json!(-1),
            2 => json!(0.001),
            3 => json!(1e300),
            _ => json!(u.int_in_range(1..=4096)?),
        })
    }
    fn resource(u: &mut Unstructured<'_>) -> arbitrary::Result<Json> {
        let name = *u.choose(NAMES)?;
        let mut r = if name == "ports" {
            let a = u.int_in_range(0..=70_000u32)?;
            let b = u.int_in_range(0..=70_000u32)?;
            json!({"name": name, "type": "RANGES", "ranges": {"range": [{"begin": a, "end": b}]}})
        } else if u.ratio(1, 10)? {
            json!({"name": name, "type": "SET", "set": {"item": ["a", "b"]}})
        } else {
            json!({"name": name, "type": "SCALAR", "scalar": {"value": scalar(u)?}})
        };
        let depth = u.int_in_range(0..=3)?;
        let mut stack = Vec::new();
        for i in 0..depth {
            let kind = if i == 0 && u.ratio(1, 3)? {
                "STATIC"
            } else {
                "DYNAMIC"
            };
            let mut entry = json!({"type": kind, "role": *u.choose(ROLES)?});
            if u.ratio(2, 3)? {
                entry["principal"] = json!(*u.choose(PRINCIPALS)?);
            }
            stack.push(entry);
        }
        if !stack.is_empty() {
            r["reservations"] = Json::Array(stack);
        } else if u.ratio(1, 4)? {
            r["role"] = json!(*u.choose(ROLES)?);
        }
        if name == "disk" && u.ratio(1, 2)? {
            let mut disk = json!({});
            if u.ratio(2, 3)? {
                disk["persistence"] = json!({"id": *u.choose(&["v1", "v2", "", "a/b"])?,
                                             "principal": *u.choose(PRINCIPALS)?});
                disk["volume"] = json!({"container_path": *u.choose(&["data", "/abs", "../x", ""])?,
                                        "mode": *u.choose(&["RW", "RO"])?});
            }
            if u.ratio(1, 4)? {
                disk["source"] = json!({"type": *u.choose(&["PATH", "MOUNT", "BLOCK", "RAW"])?,
                                        "mount": {"root": "/mnt/d"}, "path": {"root": "/p"}});
            }
            r["disk"] = disk;
            if u.ratio(1, 6)? {
                r["shared"] = json!({});
            }
        }
        if u.ratio(1, 5)? {
            r["allocation_info"] = json!({"role": *u.choose(ROLES)?});
        }
        if u.ratio(1, 8)? {
            r["provider_id"] = json!({"value": "prov"});
        }
        Ok(r)
    }
    fn list(u: &mut Unstructured<'_>, max: usize) -> arbitrary::Result<Json> {
        let n = u.int_in_range(0..=max)?;
        Ok(Json::Array(
            (0..n).map(|_| resource(u)).collect::<Result<_, _>>()?,
        ))
    }
    if u.ratio(1, 6)? {
        let op = *u.choose(&["add", "subtract", "contains", "mul"])?;
        return Ok(json!({"op": op, "left": list(u, 6)?, "right": list(u, 6)?}));
    }
    let resources = list(u, 6)?;
    let operation = match u.int_in_range(0..=8)? {
        0 => Json::Null,
        1 => json!({"type": "RESERVE", "reserve": {"resources": list(u, 3)?}}),
        2 => json!({"type": "UNRESERVE", "unreserve": {"resources": list(u, 3)?}}),
        3 => json!({"type": "CREATE", "create": {"volumes": list(u, 3)?}}),
        4 => json!({"type": "DESTROY", "destroy": {"volumes": list(u, 3)?}}),
        5 => {
            json!({"type": "GROW_VOLUME", "grow_volume": {"volume": resource(u)?, "addition": resource(u)?}})
        }
        6 => {
            json!({"type": "SHRINK_VOLUME", "shrink_volume": {"volume": resource(u)?, "subtract": {"value": scalar(u)?}}})
        }
        7 => {
            json!({"type": "LAUNCH", "launch": {"task_infos": [{"name": "t", "task_id": {"value": "t1"},
                     "agent_id": {"value": "a"}, "resources": list(u, 3)?}]}})
        }
        _ => json!({"type": *u.choose(&["LAUNCH_GROUP", "CREATE_DISK", "UNKNOWN"])?}),
    };
    let mut context = json!({});
    if u.ratio(1, 2)? {
        let caps: Vec<&str> = ["MULTI_ROLE", "RESERVATION_REFINEMENT", "SHARED_RESOURCES"]
            .into_iter()
            .filter(|_| u.ratio(1, 2).unwrap_or(false))
            .collect();
        context["framework"] = json!({"roles": [*u.choose(ROLES)?], "capabilities": caps});
        if u.ratio(1, 2)? {
            context["framework"]["principal"] = json!(*u.choose(PRINCIPALS)?);
        }
        context["offer_allocation_role"] = json!(*u.choose(ROLES)?);
    }
    if u.ratio(1, 2)? {
        context["principal"] = json!(*u.choose(PRINCIPALS)?);
    }
    context["agent_capabilities"] = json!({"hierarchical_role": u.arbitrary::<bool>()?,
        "reservation_refinement": u.arbitrary::<bool>()?, "resize_volume": u.arbitrary::<bool>()?});
    if u.ratio(1, 3)? {
        context["agent_checkpointed_resources"] = list(u, 3)?;
    }
    let mut request = json!({"resources": resources, "operation": operation, "context": context});
    if u.ratio(1, 4)? {
        request["acls"] = json!({"permissive": u.arbitrary::<bool>()?,
            "create_volumes": [{"principals": {"values": [*u.choose(PRINCIPALS)?]}, "roles": {"type": "ANY"}}]});
    }
    Ok(request)
}

fn batch_structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(request) = structured_request(&mut u) else {
        return;
    };
    let line = request.to_string();
    let mut out = Vec::new();
    let _ = batch::write_answer_with(line.as_bytes(), &Policy::default(), &mut out);
    out.clear();
    let _ = batch::write_answer_with(line.as_bytes(), &server_policy(), &mut out);
}

fn seeds_structured() -> Vec<Vec<u8>> {
    (0u8..32)
        .map(|i| {
            (0..=255u8)
                .map(|j| j.wrapping_mul(i).wrapping_add(i))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Docker volume driver (DVDI).

fn dvdi_env(data: &[u8]) {
    let (mode, rest) = split(data);
    if mode % 4 == 0 {
        if let Ok(env) = mesos::Environment::decode(rest) {
            let _ = berth_dvdi::spec::from_mesos_environment(&env);
        }
        return;
    }
    // Lines of NAME=VALUE; a name without the prefix gets it, so most lines reach the parser.
    let text = String::from_utf8_lossy(rest);
    let pairs: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            let k = if k.starts_with("DVDI_") || mode % 4 == 1 {
                k.to_owned()
            } else {
                format!("DVDI_VOLUME_{k}")
            };
            (k, v.to_owned())
        })
        .collect();
    if let Ok(volumes) =
        berth_dvdi::spec::from_env(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        let _ = format!("{volumes:?}");
    }
}

fn seeds_dvdi_env() -> Vec<Vec<u8>> {
    let mut out = strings(&[
        "\u{2}NAME=vol1\nDRIVER=rexray\nOPTS=size=5,iops=100\nCONTAINERPATH=/data\nREADONLY=false",
        "\u{2}NAME1=a\nDRIVER1=convoy\nNAME2=b\nCONTAINERPATH2=/b\nNAME=c",
        "\u{1}DVDI_VOLUME_NAME=x\nDVDI_VOLUME_CONTAINERPATH=/x\nOTHER=1",
        "\u{2}NAME=a\nNAME=a\nOPTS=k\nREADONLY=maybe\nCONTAINERPATH=rel",
    ]);
    let env = mesos::Environment {
        variables: vec![mesos::environment::Variable {
            name: "DVDI_VOLUME_NAME".to_owned(),
            value: Some("v".to_owned()),
            ..Default::default()
        }],
    };
    out.push(tagged(0, &env.encode_to_vec()));
    out
}

thread_local! {
    static SPEC_DIR: PathBuf = {
        let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("berth-fuzz-spec-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    };
}

fn dvdi_plugin_spec(data: &[u8]) {
    let (mode, rest) = split(data);
    let ext = if mode % 2 == 0 { "spec" } else { "json" };
    SPEC_DIR.with(|dir| {
        let _ = std::fs::remove_file(dir.join("p.spec"));
        let _ = std::fs::remove_file(dir.join("p.json"));
        if std::fs::write(dir.join(format!("p.{ext}")), rest).is_err() {
            return;
        }
        let discovery = berth_dvdi::Discovery::with_roots(Vec::new(), vec![dir.clone()]);
        if let Ok(name) = berth_dvdi::DriverName::new("p")
            && let Ok(found) = discovery.lookup(&name)
        {
            let _ = found.addr.to_string();
        }
    });
}

fn seeds_dvdi_plugin_spec() -> Vec<Vec<u8>> {
    vec![
        tagged(0, b"unix:///run/docker/plugins/p.sock\n"),
        tagged(0, b"tcp://127.0.0.1:8080"),
        tagged(0, b"https://h:1"),
        tagged(0, b"/no/scheme"),
        tagged(1, br#"{"Name": "p", "Addr": "unix:///run/p.sock"}"#),
        tagged(1, br#"{"Name": "p", "Addr": "tcp://h:1", "TLSConfig": {"InsecureSkipVerify": false, "CAFile": "/ca", "CertFile": "/c", "KeyFile": "/k"}}"#),
        tagged(1, br#"{"Addr": 5}"#),
    ]
}

fn dvdi_response(data: &[u8]) {
    use berth_dvdi::Endpoint;
    const ENDPOINTS: [Endpoint; 9] = [
        Endpoint::Activate,
        Endpoint::Create,
        Endpoint::Remove,
        Endpoint::Mount,
        Endpoint::Unmount,
        Endpoint::Path,
        Endpoint::Get,
        Endpoint::List,
        Endpoint::Capabilities,
    ];
    const STATUSES: [u16; 8] = [200, 201, 204, 400, 404, 500, 503, 299];
    let (choice, body) = split(data);
    let endpoint = ENDPOINTS[usize::from(choice) % ENDPOINTS.len()];
    let status = STATUSES[usize::from(choice / 16) % STATUSES.len()];
    let answer = berth_dvdi::protocol::Answer {
        plugin: "p",
        endpoint,
        volume: Some("v"),
        status,
        body,
    };
    let _ = answer.check();
    let _ = answer.implements();
    let _ = answer.mountpoint();
    let _ = answer.volume();
    let _ = answer.volumes();
    let _ = answer.capabilities();
}

fn seeds_dvdi_response() -> Vec<Vec<u8>> {
    vec![
        tagged(0, br#"{"Implements": ["VolumeDriver"]}"#),
        tagged(3, br#"{"Mountpoint": "/mnt/v", "Err": ""}"#),
        tagged(
            6,
            br#"{"Volume": {"Name": "v", "Mountpoint": "/m", "Status": {"a": 1}}, "Err": ""}"#,
        ),
        tagged(
            7,
            br#"{"Volumes": [{"Name": "v"}, {"Name": "w", "Mountpoint": "/w"}]}"#,
        ),
        tagged(8, br#"{"Capabilities": {"Scope": "global"}}"#),
        tagged(0x33, br#"{"Err": "no such volume"}"#),
        tagged(0x43, b"404 page not found"),
        tagged(5, b""),
    ]
}

// ---------------------------------------------------------------------------------------------
// CSI.

fn csi_plugin_info(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(info) =
        berth_resources::json::from_json_str::<berth_resources::proto::CsiPluginInfo>(text)
    else {
        return;
    };
    if let Ok(config) = berth_csi::config::validate(Path::new("/fuzz/plugin.json"), &info) {
        let _ = format!("{config:?}");
    }
}

fn seeds_csi_plugin_info() -> Vec<Vec<u8>> {
    strings(&[
        r#"{"type": "org.example.lvm", "name": "lvm", "containers": [{"services": ["NODE_SERVICE"], "command": {"shell": false, "value": "/bin/plugin", "arguments": ["plugin", "--endpoint=$(CSI_ENDPOINT)"]}, "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]}], "target_path_root": "/var/lib/csi", "target_path_exists": false}"#,
        r#"{"type": "t", "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "unix:///run/csi.sock"}]}"#,
        r#"{"type": "", "containers": []}"#,
        r#"{"type": "t", "containers": [{"services": ["CONTROLLER_SERVICE", "NODE_SERVICE"]}], "endpoints": [{"csi_service": "NODE_SERVICE", "endpoint": "x"}]}"#,
    ])
}

fn csi_response(data: &[u8]) {
    use berth_proto::csi::v1 as csi;
    let (which, rest) = split(data);
    let text = match which % 5 {
        0 => csi::GetPluginInfoResponse::decode(rest).map(|m| format!("{m:?}")),
        1 => csi::GetPluginCapabilitiesResponse::decode(rest).map(|m| format!("{m:?}")),
        2 => csi::ProbeResponse::decode(rest).map(|m| format!("{m:?}")),
        3 => csi::NodeGetCapabilitiesResponse::decode(rest).map(|m| format!("{m:?}")),
        _ => csi::NodeGetInfoResponse::decode(rest).map(|m| format!("{m:?}")),
    };
    let _ = text;
}

fn seeds_csi_response() -> Vec<Vec<u8>> {
    use berth_proto::csi::v1 as csi;
    vec![
        tagged(
            0,
            &csi::GetPluginInfoResponse {
                name: "org.example".to_owned(),
                vendor_version: "1.0".to_owned(),
                manifest: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
            }
            .encode_to_vec(),
        ),
        tagged(2, &csi::ProbeResponse { ready: Some(true) }.encode_to_vec()),
        tagged(
            4,
            &csi::NodeGetInfoResponse {
                node_id: "n".to_owned(),
                max_volumes_per_node: 3,
                accessible_topology: None,
            }
            .encode_to_vec(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Marathon, mountinfo, checkpoints, container config.

fn marathon_app(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = berth_offers::plan::RunSpec::from_json(text) {
        let _ = format!("{spec:?}");
    }
    if let Ok(app) = serde_json::from_str::<Json>(text) {
        let _ = berth_dvdi::spec::from_marathon_app(&app);
    }
}

fn seeds_marathon_app() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if let Ok(app) = std::fs::read(repo().join("examples/mysql-app.json")) {
        out.push(app);
    }
    out.extend(strings(&[
        r#"{"id": "/app", "cpus": 1, "mem": 128, "instances": 1, "container": {"type": "DOCKER", "volumes": [{"containerPath": "/data", "mode": "RW", "external": {"name": "v", "provider": "dvdi", "options": {"dvdi/driver": "rexray", "dvdi/size": "5"}}}]}}"#,
        r#"{"id": "/pod", "containers": [{"name": "c", "resources": {"cpus": 0.5, "mem": 64}, "volumeMounts": [{"name": "d", "mountPath": "/d"}]}], "volumes": [{"name": "d", "persistent": {"size": 10, "type": "mount"}}]}"#,
        r#"{"id": "/x", "container": {"volumes": [{"containerPath": "data", "persistent": {"size": 100, "type": "path", "constraints": [["path", "LIKE", "ssd"]]}}]}}"#,
    ]));
    out
}

fn mountinfo(data: &[u8]) {
    let Ok(table) = berth_mount::MountTable::parse(data.to_vec()) else {
        return;
    };
    for entry in table.iter() {
        let _ = (
            entry.mount_id(),
            entry.parent_id(),
            entry.major(),
            entry.minor(),
            entry.root(),
            entry.mount_point(),
            entry.mount_options(),
            entry.is_read_only(),
            entry.shared(),
            entry.master(),
            entry.propagate_from(),
            entry.is_unbindable(),
            entry.propagation(),
            entry.fs_type(),
            entry.mount_source(),
            entry.super_options(),
            entry.optional_fields().count(),
        );
        let _ = table.is_mount_point(entry.mount_point());
        let _ = table.top_mount_at(entry.mount_point());
        let _ = table.by_mount_id(entry.mount_id());
    }
    for path in ["/", "/proc", "/a/b"] {
        let _ = table.unmount_order(Path::new(path)).len();
        let _ = table.mounts_at_or_below(Path::new(path)).count();
    }
}

fn seeds_mountinfo() -> Vec<Vec<u8>> {
    let mut out = strings(&[
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n",
        "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        "40 22 0:35 / /a\\040b rw shared:2 master:3 propagate_from:4 unbindable - tmpfs t\\011 rw\n",
        "1 0 0:1 / / rw - - - -\n",
    ]);
    if let Ok(own) = std::fs::read("/proc/self/mountinfo") {
        out.push(own);
    }
    out
}

fn checkpoints(data: &[u8]) {
    let (which, rest) = split(data);
    match which % 4 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<berth_csi::record::VolumeRecord>(rest) {
                let _ = (r.is_settled(), r.mesos_state());
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<berth_dvdi::record::VolumeRecord>(rest) {
                let _ = (r.is_empty(), r.wanted("c1"));
            }
        }
        2 => {
            if let Ok(r) = serde_json::from_slice::<berth_agent::container::ContainerRecord>(rest) {
                let _ = format!("{r:?}");
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(set) = berth_agent::resources::parse_resources_json(text)
            {
                let _ = set.iter().filter(|r| r.needs_checkpointing()).count();
            }
        }
    }
}

fn seeds_checkpoints() -> Vec<Vec<u8>> {
    vec![
        tagged(0, br#"{"schema_version": 1, "volume_id": "v", "state": "NODE_READY", "capability": {"access_type": "MOUNT", "fs_type": "ext4", "mount_flags": [], "access_mode": "SINGLE_NODE_WRITER"}, "readonly": false, "publish_context": {}, "volume_context": {}, "publications": []}"#),
        tagged(1, br#"{"schema_version": 1, "driver": "rexray", "name": "v", "mountpoint": "/m", "consumers": {"c1": {"mode": "RW"}}}"#),
        tagged(2, br#"{"schema_version": 1, "container_id": "c", "state": "PREPARED", "sandbox": "/s", "rootfs": null, "volumes": []}"#),
        tagged(3, br#"[{"name": "disk", "type": "SCALAR", "scalar": {"value": 10}, "reservations": [{"type": "DYNAMIC", "role": "r", "principal": "p"}], "disk": {"persistence": {"id": "v1"}, "volume": {"container_path": "d", "mode": "RW"}}}]"#),
    ]
}

fn container_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = berth_agent::container::ContainerConfig::from_json(text) {
        let _ = format!("{config:?}");
    }
}

fn seeds_container_config() -> Vec<Vec<u8>> {
    strings(&[
        r#"{"container_id": "c1", "sandbox": "/var/lib/mesos/slaves/s/frameworks/f/executors/e/runs/c1", "resources": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 64}, "reservations": [{"type": "DYNAMIC", "role": "r", "principal": "p"}], "disk": {"persistence": {"id": "v1"}, "volume": {"container_path": "data", "mode": "RW"}}}], "volumes": [{"container_path": "/etc/x", "host_path": "/etc/x", "mode": "RO"}], "environment": {"DVDI_VOLUME_NAME": "v"}}"#,
        r#"{"container_id": "c2", "sandbox": "/s", "rootfs": "/r", "volumes": [{"container_path": "d", "mode": "RW", "source": {"type": "DOCKER_VOLUME", "docker_volume": {"driver": "rexray", "name": "v", "driver_options": {"parameter": [{"key": "size", "value": "1"}]}}}}]}"#,
        r#"{"container_id": "", "sandbox": ""}"#,
        r#"{"container_id": "t1", "sandbox": "/s/t1", "parent": {"container_id": "pod", "sandbox": "/s/pod"}, "volumes": [{"container_path": "shared", "mode": "RW", "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "shared"}}}]}"#,
        r#"{"container_id": "t2", "sandbox": "/s", "volumes": [{"container_path": "a", "mode": "RO", "source": {"type": "SECRET", "secret": {"type": "VALUE", "value": {"data": "c2VjcmV0"}}}}, {"container_path": "b", "mode": "RO", "source": {"type": "SECRET", "secret": {"type": "REFERENCE", "reference": {"name": "db", "key": "password"}}}}]}"#,
    ])
}

// ---------------------------------------------------------------------------------------------
// The validator's authentication inputs.

fn validator_auth(data: &[u8]) {
    use berth_validator::serve::auth;
    let (which, rest) = split(data);
    match which % 5 {
        0 => {
            let _ = auth::subject_common_name(rest);
        }
        1 => {
            let _ = auth::parse_basic(rest);
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(rest)
                && let Ok(creds) = auth::Credentials::parse(text, Path::new("c.json"))
            {
                let _ = creds.verify(b"Basic cDE6czE=");
            }
        }
        3 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = auth::UidPrincipals::parse(text, Path::new("u.json"));
            }
        }
        _ => {
            // Framing, in chunks whose sizes the input also chooses.
            let mut scanner = berth_validator::serve::limits::FrameScanner::new(1 << 16);
            let mut rest = rest;
            while let Some((n, tail)) = rest.split_first() {
                let n = usize::from(*n % 16) + 1;
                let (chunk, tail) = tail.split_at(n.min(tail.len()));
                if scanner.feed(chunk).is_err() {
                    break;
                }
                rest = tail;
            }
        }
    }
}

fn seeds_validator_auth() -> Vec<Vec<u8>> {
    // The fields before the subject, empty, and a subject with the common name "p1": the
    // shape the reader walks (a real certificate is a seed of the regression test too).
    let cert: &[u8] = &[
        0x30, 0x1f, 0x30, 0x1d, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01, 0x30, 0x00, 0x30,
        0x00, 0x30, 0x00, 0x30, 0x0d, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c,
        0x02, b'p', b'1',
    ];
    vec![
        tagged(0, cert),
        tagged(1, b"Basic cDE6czE="),
        tagged(
            2,
            br#"{"credentials": [{"principal": "p1", "secret": "s1"}]}"#,
        ),
        tagged(3, br#"{"principals": [{"uid": 0, "principal": "root"}]}"#),
        tagged(4, &[3, 0, 0, 0, 0, 2, 9, 9, 5, 0, 0, 1, 0, 0]),
    ]
}
