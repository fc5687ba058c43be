//! What the master knows when it validates an operation: who asks (framework or operator, and
//! the principal), what the agent can do, and what the agent already holds.

use std::collections::BTreeMap;

use berth_resources::Resources;

/// `FrameworkInfo.Capability` names that validation consults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameworkCapability {
    /// `MULTI_ROLE`.
    MultiRole,
    /// `RESERVATION_REFINEMENT`.
    ReservationRefinement,
    /// `SHARED_RESOURCES`.
    SharedResources,
    /// Any other capability (kept, not consulted).
    Other,
}

impl FrameworkCapability {
    /// From the Mesos enum name.
    #[must_use]
    pub fn from_name(name: &str) -> FrameworkCapability {
        match name {
            "MULTI_ROLE" => FrameworkCapability::MultiRole,
            "RESERVATION_REFINEMENT" => FrameworkCapability::ReservationRefinement,
            "SHARED_RESOURCES" => FrameworkCapability::SharedResources,
            _ => FrameworkCapability::Other,
        }
    }
}

/// The parts of `FrameworkInfo` that validation consults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Framework {
    /// The framework id (for messages).
    pub id: Option<String>,
    /// The effective roles (`FrameworkInfo.roles` with MULTI_ROLE, else `{role}`).
    pub roles: Vec<String>,
    /// Capabilities.
    pub capabilities: Vec<FrameworkCapability>,
    /// `FrameworkInfo.principal`.
    pub principal: Option<String>,
}

impl Framework {
    /// True if the framework has `cap`.
    #[must_use]
    pub fn has(&self, cap: FrameworkCapability) -> bool {
        self.capabilities.contains(&cap)
    }

    pub(crate) fn roles_text(&self) -> String {
        format!("{{ {} }}", self.roles.join(", "))
    }
}

/// Agent capabilities that validation consults (all false by default, as in Mesos).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCapabilities {
    /// `HIERARCHICAL_ROLE`.
    pub hierarchical_role: bool,
    /// `RESERVATION_REFINEMENT`.
    pub reservation_refinement: bool,
    /// `RESIZE_VOLUME`.
    pub resize_volume: bool,
}

impl AgentCapabilities {
    /// Every capability.
    #[must_use]
    pub fn all() -> AgentCapabilities {
        AgentCapabilities {
            hierarchical_role: true,
            reservation_refinement: true,
            resize_volume: true,
        }
    }
}

/// Which API the operation came through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Api {
    /// A framework's ACCEPT call.
    Framework(Framework),
    /// The operator HTTP API.
    Operator,
}

/// Everything an operation is validated against.
#[derive(Clone, Debug)]
pub struct Context {
    /// Framework or operator.
    pub api: Api,
    /// The authenticated principal (the framework's principal on the framework path).
    pub principal: Option<String>,
    /// Agent capabilities.
    pub agent: AgentCapabilities,
    /// The agent's checkpointed resources (dynamic reservations and persistent volumes).
    pub checkpointed: Resources,
    /// Resources used by each framework's tasks and executors on the agent.
    pub used: BTreeMap<String, Resources>,
    /// The offer's allocation role, injected into operation resources that lack one
    /// (framework path).
    pub offer_allocation_role: Option<String>,
}

impl Context {
    /// The operator API with no principal, no capabilities and an empty agent.
    #[must_use]
    pub fn operator() -> Context {
        Context {
            api: Api::Operator,
            principal: None,
            agent: AgentCapabilities::default(),
            checkpointed: Resources::new(),
            used: BTreeMap::new(),
            offer_allocation_role: None,
        }
    }

    /// A framework's ACCEPT.
    #[must_use]
    pub fn framework(framework: Framework) -> Context {
        Context {
            principal: framework.principal.clone(),
            api: Api::Framework(framework),
            ..Context::operator()
        }
    }

    /// The framework, on the framework path.
    #[must_use]
    pub fn framework_info(&self) -> Option<&Framework> {
        match &self.api {
            Api::Framework(f) => Some(f),
            Api::Operator => None,
        }
    }
}
