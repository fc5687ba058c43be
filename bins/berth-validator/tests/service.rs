//! `berth-validator serve` as a shared service: principals from authentication (TLS client
//! certificates, basic credentials, unix peer uids), the server's ACLs, the limits, and the
//! `Batch` stream on lines that are not requests. Every server is the binary, run as a process;
//! every certificate is generated here (no key is committed).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)] // test helpers abort on setup errors; JSON answers are read by index

mod common;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_proto::berth::v1 as pb;
use berth_proto::berth::v1::validator_client::ValidatorClient;
use berth_proto::mesos::v1 as mesos;
use berth_resources::json::from_json_value;
use common::{Server, TempDir, connect, run_to_end, runtime};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::{Value as Json, json};
use tonic::Code;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

// ---------------------------------------------------------------------------------------------
// Certificates.

/// A CA that signs server and client certificates, all written as PEM files into a directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) with common name `cn` and `sans`.
    fn leaf(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A server's TLS files: its certificate and key, and the client CA.
struct TlsSetup {
    ca: Ca,
    args: Vec<String>,
}

impl TlsSetup {
    fn new(dir: &TempDir) -> TlsSetup {
        let ca = Ca::new("berth test CA");
        let (cert, key) = ca.leaf("validator", &["localhost", "127.0.0.1"]);
        let args = vec![
            "--tls-cert".to_owned(),
            write(dir, "server.pem", &cert),
            "--tls-key".to_owned(),
            write(dir, "server.key", &key),
            "--client-ca".to_owned(),
            write(dir, "ca.pem", &ca.pem),
        ];
        TlsSetup { ca, args }
    }

    /// A client of `server` over TLS, with the client certificate of `identity` if any.
    async fn client(
        &self,
        server: &Server,
        identity: Option<&(String, String)>,
    ) -> Result<ValidatorClient<Channel>, tonic::transport::Error> {
        let addr = server.address.strip_prefix("tcp:").unwrap();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca.pem))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(20))
            .connect()
            .await?;
        Ok(ValidatorClient::new(channel))
    }
}

fn args(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// ACLs that let only `who` create volumes.
fn create_acls(who: &str) -> Json {
    json!({"permissive": false,
           "create_volumes": [{"principals": {"values": [who]}, "roles": {"type": "ANY"}}]})
}

/// An operator CREATE of a volume owned by `volume_principal` on disk reserved for role `r`;
/// the context names `principal` when given.
fn create_line(volume_principal: &str, principal: Option<&str>) -> Json {
    json!({
        "resources": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 100},
                       "reservations": [{"type": "DYNAMIC", "role": "r", "principal": "ops"}]}],
        "operation": {"type": "CREATE", "create": {"volumes": [{
            "name": "disk", "type": "SCALAR", "scalar": {"value": 10},
            "reservations": [{"type": "DYNAMIC", "role": "r", "principal": "ops"}],
            "disk": {"persistence": {"id": "v1", "principal": volume_principal},
                     "volume": {"container_path": "data", "mode": "RW"}}}]}},
        "context": {"api": "operator", "principal": principal},
    })
}

/// The same CREATE as a typed request.
fn create_typed(volume_principal: &str, principal: Option<&str>) -> pb::ValidateRequest {
    let line = create_line(volume_principal, principal);
    pb::ValidateRequest {
        resources: line["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| from_json_value(r).unwrap())
            .collect(),
        operation: Some(Box::new(from_json_value(&line["operation"]).unwrap())),
        context: Some(pb::Context {
            api: pb::context::Api::Operator as i32,
            principal: principal.map(str::to_owned),
            ..pb::Context::default()
        }),
        ..pb::ValidateRequest::default()
    }
}

fn by_json(line: &Json) -> pb::ValidateRequest {
    pb::ValidateRequest {
        json: line.to_string(),
        ..pb::ValidateRequest::default()
    }
}

/// The verdict of a call: `Ok((valid, stage, error))` or the status code.
type Verdict = Result<(bool, String, String), Code>;

fn verdict(result: Result<tonic::Response<pb::ValidateResponse>, tonic::Status>) -> Verdict {
    result
        .map(|r| {
            let r = r.into_inner();
            (r.valid, r.stage, r.error)
        })
        .map_err(|s| s.code())
}

fn valid() -> Verdict {
    Ok((true, String::new(), String::new()))
}

fn not_authorized(v: &Verdict) -> bool {
    matches!(v, Ok((false, stage, error)) if stage == "validate" && error.contains("Not authorized"))
}

// ---------------------------------------------------------------------------------------------
// TLS client certificates.

#[test]
fn client_certificates_name_the_principal_and_the_servers_acls_decide() {
    let dir = TempDir::new();
    let tls = TlsSetup::new(&dir);
    let acls = write(&dir, "acls.json", &create_acls("p1").to_string());
    let mut server_args = tls.args.clone();
    server_args.extend(["--acls".to_owned(), acls]);
    let server = Server::start_with("tcp:127.0.0.1:0", &args(&server_args));
    let p1 = tls.ca.leaf("p1", &[]);
    let p2 = tls.ca.leaf("p2", &[]);
    let stranger = Ca::new("another CA").leaf("p1", &[]);

    runtime().block_on(async {
        let mut c1 = tls.client(&server, Some(&p1)).await.unwrap();
        // p1 may create, whether the body names no principal or p1, typed or as JSON.
        assert_eq!(
            verdict(c1.validate(create_typed("p1", None)).await),
            valid()
        );
        assert_eq!(
            verdict(c1.validate(create_typed("p1", Some("p1"))).await),
            valid()
        );
        assert_eq!(
            verdict(c1.apply(by_json(&create_line("p1", None))).await),
            valid()
        );
        // A body naming another principal is refused, however it names it.
        for request in [
            create_typed("p2", Some("p2")),
            by_json(&create_line("p2", Some("p2"))),
            by_json(
                &json!({"resources": [], "operation": {"type": "CREATE", "create": {"volumes": []}},
                            "context": {"framework": {"roles": ["r"], "principal": "p2"}}}),
            ),
        ] {
            assert_eq!(
                verdict(c1.validate(request).await),
                Err(Code::PermissionDenied)
            );
        }
        // A request carrying permissive ACLs is refused: the server has its own.
        let mut permissive = create_typed("p1", None);
        permissive.acls_json = json!({"permissive": true}).to_string();
        assert_eq!(
            verdict(c1.validate(permissive).await),
            Err(Code::PermissionDenied)
        );
        let mut line = create_line("p1", None);
        line["acls"] = json!({"permissive": true});
        assert_eq!(
            verdict(c1.validate(by_json(&line)).await),
            Err(Code::PermissionDenied)
        );

        // p2 is refused by the ACLs, whatever its body says: naming p1 is PERMISSION_DENIED,
        // naming nothing or itself is "Not authorized".
        let mut c2 = tls.client(&server, Some(&p2)).await.unwrap();
        assert_eq!(
            verdict(c2.validate(create_typed("p1", Some("p1"))).await),
            Err(Code::PermissionDenied)
        );
        let v = verdict(c2.validate(create_typed("p2", None)).await);
        assert!(not_authorized(&v), "{v:?}");
        let v = verdict(c2.validate(by_json(&create_line("p2", Some("p2")))).await);
        assert!(not_authorized(&v), "{v:?}");

        // No client certificate, or one from another CA: no call gets through.
        for identity in [None, Some(&stranger)] {
            let refused = match tls.client(&server, identity).await {
                Err(_) => true,
                Ok(mut c) => c.ping(pb::Empty {}).await.is_err(),
            };
            assert!(refused, "identity {:?}", identity.map(|_| "stranger"));
        }
    });

    // The same client certificate under ACLs that do not allow p1.
    let acls = write(&dir, "acls-p2.json", &create_acls("p2").to_string());
    let mut server_args = tls.args.clone();
    server_args.extend(["--acls".to_owned(), acls]);
    let server = Server::start_with("tcp:127.0.0.1:0", &args(&server_args));
    runtime().block_on(async {
        let mut c1 = tls.client(&server, Some(&p1)).await.unwrap();
        for request in [create_typed("p1", None), by_json(&create_line("p1", None))] {
            let v = verdict(c1.validate(request).await);
            assert!(not_authorized(&v), "{v:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Basic credentials.

#[derive(Clone)]
struct Basic(Option<String>);

impl Interceptor for Basic {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        Ok(request)
    }
}

async fn basic_client(
    server: &Server,
    credentials: Option<&str>,
) -> ValidatorClient<InterceptedService<Channel, Basic>> {
    let addr = server.address.strip_prefix("tcp:").unwrap();
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let value = credentials.map(|c| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(c)
        )
    });
    ValidatorClient::with_interceptor(channel, Basic(value))
}

#[test]
fn basic_credentials_authenticate_with_the_right_secret_only() {
    let dir = TempDir::new();
    let credentials = write(
        &dir,
        "credentials.json",
        &json!({"credentials": [{"principal": "p1", "secret": "right"},
                                {"principal": "p2", "secret": "other"}]})
        .to_string(),
    );
    let acls = write(&dir, "acls.json", &create_acls("p1").to_string());
    let server = Server::start_with(
        "tcp:127.0.0.1:0",
        &[
            "--insecure-tcp",
            "--credentials",
            &credentials,
            "--acls",
            &acls,
        ],
    );
    runtime().block_on(async {
        let mut ok = basic_client(&server, Some("p1:right")).await;
        assert_eq!(
            verdict(ok.validate(create_typed("p1", None)).await),
            valid()
        );
        assert_eq!(
            verdict(ok.validate(create_typed("p2", Some("p2"))).await),
            Err(Code::PermissionDenied)
        );
        let mut other = basic_client(&server, Some("p2:other")).await;
        let v = verdict(other.validate(create_typed("p2", None)).await);
        assert!(not_authorized(&v), "{v:?}");
        for wrong in [
            Some("p1:wrong"),
            Some("p1:"),
            Some("p3:right"),
            Some("garbage"),
            None,
        ] {
            let mut c = basic_client(&server, wrong).await;
            assert_eq!(
                verdict(c.validate(create_typed("p1", None)).await),
                Err(Code::Unauthenticated),
                "{wrong:?}"
            );
        }
        // Batch too: the stream is refused before any line.
        let mut c = basic_client(&server, Some("p1:wrong")).await;
        let lines = tokio_stream::iter(vec![pb::BatchRequest {
            json: b"{}".to_vec(),
        }]);
        assert_eq!(
            c.batch(lines).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Unix sockets.

#[test]
fn unix_peers_authenticate_by_uid_and_the_socket_is_private() {
    let dir = TempDir::new();
    let uid = nix::unistd::getuid().as_raw();
    let uids = write(
        &dir,
        "uids.json",
        &json!({"principals": [{"uid": uid, "principal": "p1"}]}).to_string(),
    );
    let acls = write(&dir, "acls.json", &create_acls("p1").to_string());
    // The socket's directory does not exist yet: it is created 0750.
    let socket = dir.path("run/v.sock");
    let listen = format!("unix:{}", socket.display());
    let server = Server::start_with(&listen, &["--uid-principals", &uids, "--acls", &acls]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let parent = std::fs::metadata(dir.path("run")).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o750);
    runtime().block_on(async {
        let mut c = connect(&server.address).await;
        assert_eq!(verdict(c.validate(create_typed("p1", None)).await), valid());
        assert_eq!(
            verdict(c.validate(create_typed("p2", Some("p2"))).await),
            Err(Code::PermissionDenied)
        );
    });
    drop(server);

    // A uid without a principal is refused.
    let other = write(
        &dir,
        "other-uids.json",
        &json!({"principals": [{"uid": uid + 1, "principal": "p1"}]}).to_string(),
    );
    let server = Server::start_with(&listen, &["--uid-principals", &other]);
    runtime().block_on(async {
        let mut c = connect(&server.address).await;
        c.ping(pb::Empty {}).await.expect("Ping needs no principal");
        assert_eq!(
            verdict(c.validate(create_typed("p1", None)).await),
            Err(Code::Unauthenticated)
        );
    });
    drop(server);

    // --socket-group: 0660 with that group.
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(1))
        .unwrap()
        .or_else(|| nix::unistd::Group::from_gid(nix::unistd::getgid()).unwrap())
        .unwrap();
    let server = Server::start_with(&listen, &["--socket-group", &group.name]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), group.gid.as_raw());
    drop(server);
    let (code, err) = run_to_end(&[
        "serve",
        "--listen",
        &listen,
        "--socket-group",
        "no-such-group-berth",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no-such-group-berth"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Transport rules.

#[test]
fn plain_tcp_needs_insecure_tcp_on_loopback_and_no_auth_is_announced() {
    let (code, err) = run_to_end(&["serve", "--listen", "tcp:127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("plain TCP is refused"), "{err}");
    let (code, err) = run_to_end(&["serve", "--listen", "tcp:0.0.0.0:0", "--insecure-tcp"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("loopback"), "{err}");
    let dir = TempDir::new();
    let (code, err) = run_to_end(&[
        "serve",
        "--listen",
        &format!("unix:{}", dir.path("v.sock").display()),
        "--tls-cert",
        "/nonexistent",
        "--tls-key",
        "/nonexistent",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TCP listeners"), "{err}");

    // Without authentication the server says so on start.
    let mut server = Server::start_with(&format!("unix:{}", dir.path("v.sock").display()), &[]);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(15)).success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut server.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("no authentication configured"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Limits.

/// A typed Validate request of about `bytes` bytes: `count` distinct reserved disks (reading
/// and validating them is what takes time), padded with labels.
fn heavy_request(count: usize, bytes: usize) -> pb::ValidateRequest {
    let pad = "x".repeat((bytes / count).saturating_sub(60));
    let resources: Vec<mesos::Resource> = (0..count)
        .map(|i| {
            from_json_value(
                &json!({"name": "disk", "type": "SCALAR", "scalar": {"value": 1},
                "reservations": [{"type": "DYNAMIC", "role": format!("r{i}"), "principal": "p",
                                  "labels": {"labels": [{"key": "k", "value": pad}]}}]}),
            )
            .unwrap()
        })
        .collect();
    pb::ValidateRequest {
        resources,
        ..pb::ValidateRequest::default()
    }
}

fn encoded(request: &pb::ValidateRequest) -> usize {
    prost::Message::encoded_len(request)
}

/// The tests with seconds of validation work run one at a time (they measure time).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_large_request_never_holds_back_small_ones() {
    let _heavy = HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new();
    let socket = format!("unix:{}", dir.path("v.sock").display());
    // A deadline far beyond the request's seconds of work, even on a loaded machine.
    let server = Server::start_with(
        &socket,
        &["--max-resources", "1000000", "--call-timeout-ms", "600000"],
    );
    let big = heavy_request(12_000, 4_150_000);
    let size = encoded(&big);
    assert!((4_000_000..4_194_304).contains(&size), "{size}");
    runtime().block_on(async {
        let mut heavy = connect(&server.address).await;
        let mut light = connect(&server.address).await;
        light.ping(pb::Empty {}).await.unwrap();
        let started = Instant::now();
        let call = tokio::spawn(async move { heavy.validate(big).await });
        // Let the request arrive and start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..100 {
            let t = Instant::now();
            light.ping(pb::Empty {}).await.unwrap();
            slowest = slowest.max(t.elapsed());
        }
        let pings_done = started.elapsed();
        assert!(
            !call.is_finished(),
            "the large request was no longer in flight"
        );
        let answer = call.await.unwrap().unwrap().into_inner();
        let took = started.elapsed();
        assert!(answer.valid, "{}", answer.error);
        eprintln!(
            "4 MB Validate: {took:?}; 100 pings done after {pings_done:?}, slowest {slowest:?}"
        );
        assert!(
            slowest < Duration::from_millis(100),
            "slowest ping {slowest:?}"
        );
    });
}

#[test]
fn requests_past_the_limits_are_refused() {
    let dir = TempDir::new();
    let socket = format!("unix:{}", dir.path("v.sock").display());
    let server = Server::start_with(&socket, &["--max-request-bytes", "1000000"]);
    runtime().block_on(async {
        let mut c = connect(&server.address).await;
        // Past --max-request-bytes: RESOURCE_EXHAUSTED, and the connection still serves.
        let too_big = heavy_request(100, 1_100_000);
        assert!(encoded(&too_big) > 1_000_000);
        let status = c.validate(too_big).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("--max-request-bytes"), "{status:?}");
        c.ping(pb::Empty {}).await.unwrap();
        // Past the default --max-resources (10000), typed or as JSON.
        let many = heavy_request(10_001, 0);
        assert!(encoded(&many) < 1_000_000);
        assert_eq!(
            verdict(c.validate(many).await),
            Err(Code::ResourceExhausted)
        );
        let line = json!({"resources": (0..10_001).map(|_| json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}})).collect::<Vec<_>>()});
        assert_eq!(
            verdict(c.validate(by_json(&line)).await),
            Err(Code::ResourceExhausted)
        );
        // Within: answered.
        assert!(c.validate(heavy_request(100, 0)).await.unwrap().into_inner().valid);
    });
    drop(server);

    // The per-call deadline, and a call that finds no free slot before its deadline: of two
    // calls of seconds of work each with one slot, one runs into its deadline and the other
    // never gets the slot (which is which depends on which arrives first).
    let _heavy = HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let server = Server::start_with(
        &socket,
        &[
            "--max-resources",
            "1000000",
            "--call-timeout-ms",
            "300",
            "--max-concurrent-calls",
            "1",
        ],
    );
    runtime().block_on(async {
        let mut a = connect(&server.address).await;
        let mut b = connect(&server.address).await;
        let first = tokio::spawn(async move { a.validate(heavy_request(12_000, 3_000_000)).await });
        let second = b.validate(heavy_request(12_000, 3_000_000)).await;
        let mut codes = [
            first.await.unwrap().unwrap_err().code(),
            second.unwrap_err().code(),
        ];
        codes.sort_by_key(|c| *c as i32);
        assert_eq!(codes, [Code::DeadlineExceeded, Code::ResourceExhausted]);
        b.ping(pb::Empty {}).await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Batch lines that are not requests.

fn five_lines() -> Vec<Vec<u8>> {
    let ok = create_line("p1", None).to_string().into_bytes();
    vec![
        ok.clone(),
        b"{\"resources\": \xff\xfe}".to_vec(),
        ok.clone(),
        b"garbage".to_vec(),
        ok,
    ]
}

fn check_five(answers: &[Json]) {
    assert_eq!(answers.len(), 5, "{answers:?}");
    for i in [0, 2, 4] {
        assert_eq!(answers[i]["valid"], true, "{i}: {}", answers[i]);
    }
    assert_eq!(answers[1]["stage"], "parse");
    assert!(
        answers[1]["error"].as_str().unwrap().contains("not UTF-8"),
        "{}",
        answers[1]
    );
    assert_eq!(answers[3]["stage"], "parse");
    assert!(
        answers[3]["error"].as_str().unwrap().contains("not JSON"),
        "{}",
        answers[3]
    );
}

#[test]
fn batch_answers_lines_that_are_not_utf8_or_json_and_goes_on() {
    let dir = TempDir::new();
    let socket = format!("unix:{}", dir.path("v.sock").display());
    let server = Server::start(&socket);
    runtime().block_on(async {
        let mut c = connect(&server.address).await;
        let lines = tokio_stream::iter(
            five_lines()
                .into_iter()
                .map(|json| pb::BatchRequest { json })
                .collect::<Vec<_>>(),
        );
        let mut stream = c.batch(lines).await.unwrap().into_inner();
        let mut answers = Vec::new();
        while let Some(answer) = stream.message().await.unwrap() {
            answers.push(serde_json::from_str::<Json>(&answer.json).unwrap());
        }
        check_five(&answers);
    });

    // The CLI: the same answers, and exit 1 since two lines were not requests.
    let input: Vec<u8> = five_lines()
        .into_iter()
        .flat_map(|mut l| {
            l.push(b'\n');
            l
        })
        .collect();
    let input_file = dir.path("five.jsonl");
    std::fs::write(&input_file, &input).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .args(["batch", "--input", &input_file.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let answers: Vec<Json> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check_five(&answers);
    let ok_only = std::process::Command::new(env!("CARGO_BIN_EXE_berth-validator"))
        .args(["batch", "--input", &write_lines(&dir, &[&five_lines()[0]])])
        .output()
        .unwrap();
    assert!(ok_only.status.success());
}

fn write_lines(dir: &TempDir, lines: &[&[u8]]) -> String {
    let path: PathBuf = dir.path("lines.jsonl");
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}
