//! The binary's side of the agent: [`berth_agent::agent`] composed with the test failpoint
//! of the environment, and the JSON shapes of the command line.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use berth_agent::container::ContainerConfig;
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
