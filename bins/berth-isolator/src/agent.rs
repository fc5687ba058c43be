//! The binary's side of the agent: [`berth_agent::agent`] composed with the test failpoint
//! of the environment, and the JSON shapes of the command line.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use berth_agent::container::ContainerConfig;
use berth_agent::resources::Leftover;
use berth_agent::resources::gc::Origin;
use berth_resources::proto;

pub use berth_agent::agent::{
    Agent, AgentError, Counters, DockerManager, ResourcesView, Settings, StepHook, discovery,
    docker_manager,
};

/// The test failpoint's variable: with `BERTH_ISOLATOR_KILL_AT=<n>` in the environment, the
/// process kills itself with SIGKILL at the n-th write-ahead point it passes (container
/// intents and volume steps, resources intents, CSI and Docker volume intents and call
/// completions), through `berth_mount::hook::Failpoint`. The crash tests use it to stop the
/// binary at every point of prepare, cleanup, CREATE and DESTROY. Unset (always, outside
/// tests), it costs nothing.
pub const KILL_AT: &str = "BERTH_ISOLATOR_KILL_AT";

/// Opens the agent of `settings`, with the environment's failpoint as its step hook.
///
/// # Errors
/// As [`Agent::open`].
pub async fn open(mut settings: Settings) -> Result<Agent, AgentError> {
    if settings.step_hook.is_none() {
        settings.step_hook =
            berth_mount::hook::Failpoint::from_env(KILL_AT).map(|f| StepHook(f.hook()));
    }
    Agent::open(settings).await
}

/// `{"checkpointed": [...], "total": [...]}` in Mesos JSON.
#[must_use]
pub fn resources_json(r: &ResourcesView) -> serde_json::Value {
    let list = |l: &[proto::Resource]| -> Vec<serde_json::Value> {
        l.iter().map(berth_resources::json::to_json_value).collect()
    };
    serde_json::json!({"checkpointed": list(&r.checkpointed), "total": list(&r.total)})
}

/// Reads a container config file; `--container-id` must match its `container_id` (or fills
/// it in when the file has none).
///
/// # Errors
/// Unreadable file, malformed config, mismatching id.
pub fn read_config(path: &Path, container_id: &str) -> Result<ContainerConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read container config {}", path.display()))?;
    let mut value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("container config {}: not JSON", path.display()))?;
    if let Some(obj) = value.as_object_mut() {
        match obj.get("container_id").and_then(serde_json::Value::as_str) {
            None => {
                obj.insert("container_id".into(), container_id.into());
            }
            Some(id) if id != container_id => bail!(
                "container config {}: container_id {id:?} differs from --container-id {container_id:?}",
                path.display()
            ),
            Some(_) => {}
        }
    }
    ContainerConfig::from_json_value(&value)
        .with_context(|| format!("container config {}", path.display()))
}

/// A leftover in the gRPC `Status` response.
#[must_use]
pub fn leftover_status(l: &Leftover) -> berth_proto::berth::v1::LeftoverStatus {
    berth_proto::berth::v1::LeftoverStatus {
        path: l.path.display().to_string(),
        volume: l.volume.display().to_string(),
        id: l.id.clone(),
        origin: origin(l.origin).to_owned(),
        attempts: l.attempts,
        first_failure_unix: l.first_failure.unwrap_or(0),
        last_error: l.last_error.clone().unwrap_or_default(),
    }
}

/// How a leftover came to be, as `status` shows it.
#[must_use]
pub fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Destroy => "destroy",
        Origin::Orphan => "orphan",
        Origin::Retained => "retained",
        Origin::Found => "found",
    }
}

/// The leftover metrics: `berth_destroyed_leftovers` (how many) and
/// `berth_destroyed_leftover_attempts{path,volume,origin}` (one series per entry, its failed
/// removal attempts).
pub fn render_leftovers(out: &mut String, leftovers: &[Leftover]) {
    use std::fmt::Write as _;
    let label = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let _ = writeln!(
        out,
        "# HELP berth_destroyed_leftovers Data of destroyed volumes not removed yet (retried with backoff; berth-isolator gc removes it)."
    );
    let _ = writeln!(out, "# TYPE berth_destroyed_leftovers gauge");
    let _ = writeln!(out, "berth_destroyed_leftovers {}", leftovers.len());
    let _ = writeln!(
        out,
        "# HELP berth_destroyed_leftover_attempts Failed removal attempts of one leftover."
    );
    let _ = writeln!(out, "# TYPE berth_destroyed_leftover_attempts gauge");
    for l in leftovers {
        let _ = writeln!(
            out,
            "berth_destroyed_leftover_attempts{{path=\"{}\",volume=\"{}\",origin=\"{}\"}} {}",
            label(&l.path.display().to_string()),
            label(&l.volume.display().to_string()),
            origin(l.origin),
            l.attempts
        );
    }
}

/// `status --json`: `{"containers": [...], "leftovers": [...]}`.
#[must_use]
pub fn status_json(
    containers: &[berth_agent::container::ContainerStatus],
    leftovers: &[Leftover],
    disk_isolation: &berth_agent::agent::usage::DiskIsolationStatus,
) -> serde_json::Value {
    serde_json::json!({
        "containers": serde_json::to_value(containers).unwrap_or_default(),
        "leftovers": serde_json::to_value(leftovers).unwrap_or_default(),
        "disk_isolation": disk_isolation,
    })
}
