//! `berth-validator plan`: Marathon-style planning of stateful tasks on an offer.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use berth_offers::Operation;
use berth_offers::plan::{
    Known, PlanConfig, PlanError, Reservation, RunSpec, plan_launch, plan_reclaim, plan_relaunch,
    plan_wipe,
};
use berth_resources::Resources;
use berth_resources::json::to_json_value;
use serde_json::{Value as Json, json};

/// Parsed command-line inputs.
pub(crate) struct Args {
    /// The app or pod (absent with `--reclaim`).
    pub(crate) app: Option<String>,
    pub(crate) offer: Json,
    pub(crate) framework_id: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) principal: Option<String>,
    pub(crate) reservation: Option<Json>,
    pub(crate) wipe: bool,
    pub(crate) reservation_out: Option<String>,
    /// `--reclaim --known FILE`: what the scheduler knows.
    pub(crate) known: Option<Json>,
}

fn id_value(offer: &Json, key: &str) -> Option<String> {
    offer
        .get(key)
        .and_then(|v| v.get("value").or(Some(v)))
        .and_then(Json::as_str)
        .map(str::to_owned)
}

/// The operations as Mesos JSON, LAUNCHes addressed to `agent_id`.
fn operations_json(operations: &[Operation], agent_id: Option<&String>) -> Json {
    Json::Array(
        operations
            .iter()
            .map(|op| {
                let mut wire = op.to_proto();
                if let (Some(launch), Some(agent)) = (wire.launch.as_mut(), agent_id) {
                    for task in &mut launch.task_infos {
                        task.agent_id.value.clone_from(agent);
                    }
                }
                to_json_value(&wire)
            })
            .collect(),
    )
}

/// `plan --reclaim --known FILE`: the framework id is `--framework-id`, else the known file's,
/// else the offer's.
fn run_reclaim(args: &Args, known: &Json, offer: &Resources) -> Result<ExitCode> {
    let known: Known =
        serde_json::from_value(known.clone()).context("reading the known instances")?;
    let framework_id = args
        .framework_id
        .clone()
        .or_else(|| known.framework_id.clone())
        .or_else(|| id_value(&args.offer, "framework_id"))
        .context(
            "no framework id: give --framework-id, or framework_id in the known file or the offer",
        )?;
    let role = args.role.clone().unwrap_or_default();
    let config = PlanConfig::new(&framework_id, &role, args.principal.as_deref());
    match plan_reclaim(offer, &config, &known) {
        Ok(plan) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&operations_json(&plan.operations, None))?
            );
            eprintln!(
                "reclaim: {}",
                json!({"reclaimed": plan.reclaimed, "skipped": plan.skipped})
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}", json!({"fits": false, "reasons": [e.to_string()]}));
            Ok(ExitCode::from(1))
        }
    }
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    let resources_json = match &args.offer {
        Json::Array(_) => args.offer.clone(),
        other => other
            .get("resources")
            .cloned()
            .context("the offer has no 'resources'")?,
    };
    let offer = Resources::from_json(&resources_json).context("reading the offer's resources")?;
    if let Some(known) = &args.known {
        return run_reclaim(args, known, &offer);
    }
    let spec = RunSpec::from_json(args.app.as_deref().context("give --app")?)
        .context("reading the app")?;
    let role = match &args.role {
        Some(r) => r.clone(),
        None => offer
            .iter()
            .find_map(|r| r.allocation_role().map(str::to_owned))
            .context("the offer's resources are not allocated to a role: give --role")?,
    };
    let framework_id = args
        .framework_id
        .clone()
        .or_else(|| id_value(&args.offer, "framework_id"))
        .unwrap_or_else(|| "berth".to_owned());
    let agent_id = id_value(&args.offer, "agent_id").or_else(|| id_value(&args.offer, "slave_id"));
    let config = PlanConfig::new(&framework_id, &role, args.principal.as_deref());
    let result = match &args.reservation {
        None => plan_launch(&spec, &offer, &config, None),
        Some(state) => {
            let reservation: Reservation =
                serde_json::from_value(state.clone()).context("reading the reservation state")?;
            if args.wipe {
                plan_wipe(&offer, &config, &reservation)
            } else {
                plan_relaunch(&spec, &offer, &config, &reservation)
            }
        }
    };
    match result {
        Ok(plan) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&operations_json(
                    &plan.operations,
                    agent_id.as_ref()
                ))?
            );
            let state = serde_json::to_string_pretty(&plan.reservation)?;
            match &args.reservation_out {
                Some(path) => {
                    std::fs::write(path, state).with_context(|| format!("writing {path}"))?
                }
                None => eprintln!("reservation: {}", serde_json::to_string(&plan.reservation)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(PlanError::NoFit(reasons)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({"fits": false, "reasons": reasons}))?
            );
            Ok(ExitCode::from(1))
        }
        Err(e) => {
            println!("{}", json!({"fits": false, "reasons": [e.to_string()]}));
            Ok(ExitCode::from(1))
        }
    }
}
