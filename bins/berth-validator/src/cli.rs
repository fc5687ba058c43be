//! Command-line interface.

use std::io::{BufRead as _, BufReader, BufWriter, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use berth_offers::acl::{Acls, Authorizer};
use berth_offers::{batch, pipeline};
use berth_resources::json::unknown_fields;
use berth_resources::proto;
use clap::{Parser, Subcommand};
use serde_json::{Value as Json, json};

use crate::convert::{Encoding, Message};

const DEFAULT_OFFER: &str = include_str!("defaults/offer.json");
const DEFAULT_OPERATION: &str = include_str!("defaults/create.json");
const DEFAULT_CONTEXT: &str = include_str!("defaults/context.json");

/// Validate and apply Mesos offer operations exactly as the Mesos master does.
#[derive(Parser, Debug)]
#[command(name = "berth-validator", version = env!("BERTH_VERSION"))]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate resources, or an operation against them, and print the verdict and the
    /// resulting resources. Without options: the Mesos persistent-volume documentation's CREATE.
    Check {
        /// Offered (or agent) resources: JSON array in either reservation format, or agent
        /// text (`cpus:4;disk(role):100`); `-` for stdin.
        #[arg(long)]
        resources: Option<String>,
        /// The `Offer.Operation` (Mesos JSON); `-` for stdin. Without it only the resources are
        /// validated.
        #[arg(long)]
        operation: Option<String>,
        /// Validation context (framework or operator, principal, agent capabilities,
        /// checkpointed and used resources), in the conformance-vector format.
        #[arg(long)]
        context: Option<String>,
        /// A Mesos ACL file (`permissive`, `reserve_resources`, `create_volumes`, ...).
        #[arg(long)]
        acls: Option<String>,
        /// Print resources in the legacy (`role` + `reservation`) format.
        #[arg(long)]
        legacy: bool,
        /// Print one JSON object instead of the human-readable verdict.
        #[arg(long)]
        json: bool,
    },
    /// JSON-lines filter: one request per input line (conformance-vector format), one answer
    /// per output line, in order. A line that is not UTF-8, not JSON or not an object gets its
    /// own `parse` answer; the exit code is then 1 (0 when every line was a request).
    Batch {
        /// Input file (default: stdin).
        #[arg(long)]
        input: Option<String>,
        /// Output file (default: stdout).
        #[arg(long)]
        output: Option<String>,
    },
    /// Plan a stateful Marathon app or pod on an offer: RESERVE + CREATE + LAUNCH for a first
    /// launch, LAUNCH on the kept reservation for a relaunch (`--reservation`), DESTROY +
    /// UNRESERVE (`--reservation` with `--wipe`), or DESTROY + UNRESERVE of everything
    /// labelled for the framework whose instance it forgot (`--reclaim --known FILE`, no
    /// `--app`). Prints the `Offer.Operation` array.
    Plan {
        /// Marathon app or pod definition (JSON); not with `--reclaim`.
        #[arg(long, required_unless_present = "reclaim", conflicts_with = "reclaim")]
        app: Option<String>,
        /// The offer: a Mesos `Offer` object (`resources`, `framework_id`, `agent_id`) or a
        /// resource array.
        #[arg(long)]
        offer: String,
        /// Framework id for the reservation labels (default: the offer's, else `berth`; with
        /// `--reclaim`: the known file's, else the offer's, else an error).
        #[arg(long)]
        framework_id: Option<String>,
        /// Role to reserve for (default: the offer's allocation role).
        #[arg(long)]
        role: Option<String>,
        /// The framework's principal, carried by reservations and volumes.
        #[arg(long)]
        principal: Option<String>,
        /// A kept reservation `{"instance_id": .., "persistence_ids": [..]}`: relaunch on it.
        #[arg(long)]
        reservation: Option<String>,
        /// With `--reservation`: destroy the volumes and unreserve instead.
        #[arg(long, requires = "reservation")]
        wipe: bool,
        /// Write the instance's reservation (to keep for relaunch and wipe) to this file.
        #[arg(long)]
        reservation_out: Option<String>,
        /// Reclaim the reservations and volumes labelled for this framework whose instance
        /// `--known` does not keep; the reclaimed instances are printed on standard error.
        #[arg(long, requires = "known", conflicts_with_all = ["reservation", "reservation_out"])]
        reclaim: bool,
        /// What the scheduler knows: `{"framework_id": .., "run_specs": ["/app", ..],
        /// "instances": ["<instance id>" | {"instance_id": .., "decommissioned": bool}, ..]}`.
        #[arg(long, requires = "reclaim")]
        known: Option<String>,
    },
    /// Serve the `berth.v1.Validator` gRPC API (Validate, Apply, Batch, Ping) until SIGINT or
    /// SIGTERM. Prints `listening on <address>` on standard output once ready.
    ///
    /// Principals come from authentication (client certificates, basic credentials, unix peer
    /// uids), never from requests; without any, each request's principal is believed (and
    /// `serve` warns). TCP is served over TLS; plain TCP only with --insecure-tcp on loopback.
    Serve(Box<ServeArgs>),
    /// Convert between Mesos JSON and protobuf wire bytes (raw or base64).
    Convert {
        /// What the input holds.
        #[arg(long, value_enum)]
        message: Message,
        /// Input encoding.
        #[arg(long, value_enum)]
        from: Encoding,
        /// Output encoding.
        #[arg(long, value_enum)]
        to: Encoding,
        /// Input file (default: stdin).
        file: Option<String>,
    },
}

/// `serve`'s options.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// `unix:PATH` or `tcp:IP:PORT` (port 0 picks a free port, printed on standard output).
    #[arg(long)]
    listen: berth_validator::serve::Listen,
    /// The server's certificate chain (PEM), for TLS on a TCP listener.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for client certificates: a client must present one it signed, and
    /// the certificate's subject common name is the caller's principal.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Serve plain TCP (no TLS), on a loopback address only.
    #[arg(long)]
    insecure_tcp: bool,
    /// A Mesos credentials file (`{"credentials": [{"principal": .., "secret": ..}]}`): calls
    /// may authenticate with `authorization: Basic base64(principal:secret)` metadata.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Unix socket peers' principals by uid: `{"principals": [{"uid": 1000, "principal": ..}]}`.
    #[arg(long)]
    uid_principals: Option<PathBuf>,
    /// Make the unix socket 0660 with this group (default: 0600, the owner only).
    #[arg(long)]
    socket_group: Option<String>,
    /// A Mesos ACL file applied to every call (`permissive`, `reserve_resources`, ...).
    #[arg(long)]
    acls: Option<PathBuf>,
    /// Accept ACLs carried by requests (refused by default). The server's --acls still win.
    #[arg(long)]
    allow_request_acls: bool,
    /// The largest request message (a Validate/Apply request, a Batch line), in bytes.
    #[arg(long, default_value_t = berth_validator::serve::limits::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// The most resource objects one request may hold, all lists together.
    #[arg(long, default_value_t = berth_validator::serve::limits::DEFAULT_MAX_RESOURCES)]
    max_resources: usize,
    /// How long one call (one Batch line) may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    call_timeout_ms: u64,
    /// How many calls are answered at once; more wait for a slot (until their deadline).
    #[arg(long, default_value_t = berth_validator::serve::limits::DEFAULT_MAX_CONCURRENT_CALLS)]
    max_concurrent_calls: usize,
    /// Runtime worker threads (default: the available cores, at least 2).
    #[arg(long)]
    threads: Option<usize>,
}

impl ServeArgs {
    fn options(&self) -> berth_validator::serve::Options {
        use berth_validator::serve::{Limits, Options, TlsFiles, auth::AuthFiles};
        Options {
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.client_ca.clone(),
                }),
                _ => None,
            },
            insecure_tcp: self.insecure_tcp,
            auth: AuthFiles {
                credentials: self.credentials.clone(),
                uid_principals: self.uid_principals.clone(),
            },
            socket_group: self.socket_group.clone(),
            acls: self.acls.clone(),
            allow_request_acls: self.allow_request_acls,
            limits: Limits {
                max_request_bytes: self.max_request_bytes,
                max_resources: self.max_resources,
                call_timeout: std::time::Duration::from_millis(self.call_timeout_ms),
                max_concurrent_calls: self.max_concurrent_calls,
            },
            threads: self.threads,
        }
    }
}

fn read_text(arg: Option<&str>, default: &str) -> Result<String> {
    match arg {
        None => Ok(default.to_owned()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            Ok(s)
        }
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {path}")),
    }
}

fn read_json(arg: Option<&str>, default: &str, what: &str) -> Result<Json> {
    let text = read_text(arg, default)?;
    serde_json::from_str(&text).with_context(|| format!("{what} is not JSON"))
}

/// Resources as JSON: a JSON array as is, agent text converted.
fn resources_json(arg: Option<&str>) -> Result<Result<Json, String>> {
    let text = read_text(arg, DEFAULT_OFFER)?;
    if text.trim_start().starts_with('[') {
        return Ok(Ok(
            serde_json::from_str(&text).context("resources are not JSON")?
        ));
    }
    Ok(berth_resources::Resources::parse(&text, "*")
        .map(|r| r.to_json())
        .map_err(|e| e.to_string()))
}

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            resources,
            operation,
            context,
            acls,
            legacy,
            json,
        } => {
            let defaults = resources.is_none() && operation.is_none() && context.is_none();
            let resources = match resources_json(resources.as_deref())? {
                Ok(r) => r,
                Err(e) => {
                    return Ok(verdict(
                        json,
                        &json!({"valid": false, "stage": "parse", "error": e}),
                        legacy,
                    ));
                }
            };
            let operation = match (operation.as_deref(), defaults) {
                (Some(path), _) => Some(read_json(Some(path), "", "the operation")?),
                (None, true) => Some(read_json(None, DEFAULT_OPERATION, "the operation")?),
                (None, false) => None,
            };
            let context = match (context.as_deref(), defaults) {
                (Some(path), _) => read_json(Some(path), "", "the context")?,
                (None, true) => read_json(None, DEFAULT_CONTEXT, "the context")?,
                (None, false) => Json::Null,
            };
            let acls = match acls {
                Some(path) => Some(
                    Acls::from_json(&read_text(Some(&path), "")?).context("reading the ACLs")?,
                ),
                None => None,
            };
            if let Some(op) = &operation {
                for field in unknown_fields::<proto::offer::Operation>(op) {
                    eprintln!(
                        "warning: '{field}' is not a field of Offer.Operation; it is ignored (as Mesos does)"
                    );
                }
            }
            let answer = match &operation {
                Some(op) => {
                    let authorizer = acls.as_ref().map(|a| a as &dyn Authorizer);
                    match pipeline::evaluate(&resources, op, &context, authorizer) {
                        Ok(after) => {
                            let offered = framework_view(&after, &context);
                            json!({"valid": true, "resources_after": after.to_json(),
                                   "legacy": after.to_json_legacy().ok(), "offered": offered})
                        }
                        Err(e) => json!({"valid": false, "stage": e.stage, "error": e.message}),
                    }
                }
                None => batch::answer(&json!({"resources": resources, "context": context})),
            };
            Ok(verdict(json, &answer, legacy))
        }
        Command::Batch { input, output } => {
            let reader: Box<dyn std::io::BufRead> = match &input {
                Some(path) => Box::new(BufReader::new(
                    std::fs::File::open(path).with_context(|| format!("opening {path}"))?,
                )),
                None => Box::new(BufReader::new(std::io::stdin().lock())),
            };
            let writer: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(
                    std::fs::File::create(path).with_context(|| format!("creating {path}"))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let unparsed = run_batch(reader, writer)?;
            Ok(if unparsed == 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "berth-validator: {unparsed} line(s) were not requests (not UTF-8, not JSON or not an object)"
                );
                ExitCode::from(1)
            })
        }
        Command::Plan {
            app,
            offer,
            framework_id,
            role,
            principal,
            reservation,
            wipe,
            reservation_out,
            reclaim: _,
            known,
        } => crate::plan::run(&crate::plan::Args {
            app: match app {
                Some(path) => Some(read_text(Some(&path), "")?),
                None => None,
            },
            offer: read_json(Some(&offer), "", "the offer")?,
            framework_id,
            role,
            principal,
            reservation: match reservation {
                Some(path) => Some(read_json(Some(&path), "", "the reservation")?),
                None => None,
            },
            wipe,
            reservation_out,
            known: match known {
                Some(path) => Some(read_json(Some(&path), "", "the known instances")?),
                None => None,
            },
        }),
        Command::Serve(args) => {
            berth_validator::serve::run(&args.listen, &args.options())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Convert {
            message,
            from,
            to,
            file,
        } => {
            let mut input = Vec::new();
            match file.as_deref() {
                None | Some("-") => {
                    std::io::stdin()
                        .read_to_end(&mut input)
                        .context("reading standard input")?;
                }
                Some(path) => {
                    input = std::fs::read(path).with_context(|| format!("reading {path}"))?
                }
            }
            match crate::convert::convert(message, from, to, &input) {
                Ok(out) => {
                    std::io::stdout()
                        .write_all(&out)
                        .context("writing standard output")?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("berth-validator: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Answers every line of `reader` on `writer`, in order, flushing whenever the input has no
/// more buffered lines (so an interactive caller gets each answer at once). A line may be any
/// bytes: one that is not UTF-8, not JSON or not a JSON object gets its own `parse` answer.
/// Returns how many lines were not requests.
pub(crate) fn run_batch(
    mut reader: Box<dyn std::io::BufRead>,
    writer: Box<dyn std::io::Write>,
) -> Result<usize> {
    let mut out = BufWriter::with_capacity(1 << 16, writer);
    let mut line = Vec::new();
    let mut answer = Vec::new();
    let mut unparsed = 0;
    let policy = batch::Policy::default();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .context("reading input")?;
        if n == 0 {
            break;
        }
        answer.clear();
        let verdict =
            batch::write_answer_with(&line, &policy, &mut answer).context("writing output")?;
        if verdict == batch::Verdict::Unparsed {
            unparsed += 1;
        }
        out.write_all(&answer).context("writing output")?;
        if reader.fill_buf().map(<[u8]>::is_empty).unwrap_or(true) {
            out.flush().context("writing output")?;
        }
    }
    out.flush().context("writing output")?;
    Ok(unparsed)
}

/// The resulting resources as the framework sees them in its next offer (research F-6): the
/// master strips `allocation_info` for frameworks without MULTI_ROLE and writes the legacy
/// reservation format for frameworks without RESERVATION_REFINEMENT. `None` on the operator path.
fn framework_view(after: &berth_resources::Resources, context: &Json) -> Option<Json> {
    use berth_offers::{Api, FrameworkCapability};
    let ctx = pipeline::parse_context(context).ok()?;
    let Api::Framework(fw) = &ctx.api else {
        return None;
    };
    let view = if fw.has(FrameworkCapability::MultiRole) {
        after.clone()
    } else {
        after.unallocate()
    };
    if fw.has(FrameworkCapability::ReservationRefinement) {
        Some(view.to_json())
    } else {
        view.to_json_legacy().ok()
    }
}

fn verdict(as_json: bool, answer: &Json, legacy: bool) -> ExitCode {
    let valid = answer.get("valid").and_then(Json::as_bool).unwrap_or(false);
    if as_json {
        println!("{answer}");
    } else if valid {
        let offered = answer.get("offered").filter(|v| !v.is_null());
        let resources = if let (Some(view), false) = (offered, legacy) {
            Some(view)
        } else if legacy {
            answer.get("legacy").or_else(|| answer.get("downgraded"))
        } else {
            answer
                .get("resources_after")
                .or_else(|| answer.get("upgraded"))
        };
        let what = match (
            answer.get("resources_after").is_some(),
            offered.is_some() && !legacy,
        ) {
            (true, true) => "the operation applies. The framework's next offer holds",
            (true, false) => "the operation applies. Resulting resources",
            (false, _) => "the resources are valid. Resources",
        };
        println!("VALID: {what}:");
        println!(
            "{}",
            serde_json::to_string_pretty(resources.unwrap_or(&Json::Null)).unwrap_or_default()
        );
    } else {
        println!(
            "INVALID ({}): {}",
            answer.get("stage").and_then(Json::as_str).unwrap_or("?"),
            answer.get("error").and_then(Json::as_str).unwrap_or("?")
        );
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
