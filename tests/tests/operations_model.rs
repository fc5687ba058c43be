//! Reference-model tests of offer operations on one agent (issue: "reference-model property
//! tests"). Random sequences of RESERVE / UNRESERVE / CREATE / DESTROY / GROW / SHRINK / LAUNCH
//! / task end run against berth (`berth_offers::pipeline::run` on `Resources`) and against a
//! simple model of amounts. After every step:
//!
//! * berth's outcome (success, or the failing stage) equals the model's prediction — so an
//!   operation that validates always applies whenever the model says its resources are there;
//! * per resource name the total scalar quantity (agent + in use) is conserved;
//! * every resource held is valid;
//! * persistence ids are unique per role; a volume in use is never destroyed;
//! * CREATE then DESTROY, and RESERVE then UNRESERVE, restore the previous resources exactly.
//!
//! Shrunk failures are kept below as named `regression_*` tests.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::needless_range_loop
)]

use std::collections::BTreeMap;

use berth_offers::{AgentCapabilities, Context, Launch, Operation, pipeline};
use berth_resources::{
    DiskInfo, Persistence, PersistenceId, ReservationInfo, Resource, Resources, Role, Scalar,
    Volume, VolumeMode,
};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const ROLES: [&str; 3] = ["r0", "r1", "r0/child"];
const KINDS: [&str; 3] = ["cpus", "mem", "disk"];
const INITIAL: [i64; 3] = [8, 8192, 10_000];
const PRINCIPAL: &str = "ops";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Reserve {
        role: usize,
        kind: usize,
        amount: i64,
    },
    Unreserve {
        role: usize,
        kind: usize,
        amount: i64,
    },
    Create {
        role: usize,
        id: usize,
        size: i64,
    },
    Destroy {
        role: usize,
        id: usize,
    },
    Grow {
        role: usize,
        id: usize,
        amount: i64,
    },
    Shrink {
        role: usize,
        id: usize,
        amount: i64,
    },
    Launch {
        task: usize,
        role: usize,
        id: usize,
    },
    TaskEnd {
        task: usize,
    },
    /// CREATE immediately followed by DESTROY of the same volume.
    CreateDestroy {
        role: usize,
        id: usize,
        size: i64,
    },
    /// RESERVE immediately followed by UNRESERVE of the same resources.
    ReserveUnreserve {
        role: usize,
        kind: usize,
        amount: i64,
    },
}

#[derive(Clone, Debug, Default)]
struct Vol {
    size: i64,
    task: Option<usize>,
}

/// The model: amounts only.
#[derive(Clone, Debug)]
struct Model {
    unreserved: [i64; 3],
    reserved: BTreeMap<usize, [i64; 3]>,
    volumes: BTreeMap<(usize, usize), Vol>,
    tasks: BTreeMap<usize, (usize, usize)>,
}

impl Model {
    fn new() -> Model {
        Model {
            unreserved: INITIAL,
            reserved: BTreeMap::new(),
            volumes: BTreeMap::new(),
            tasks: BTreeMap::new(),
        }
    }

    fn free(&self, role: usize, kind: usize) -> i64 {
        self.reserved.get(&role).map_or(0, |r| r[kind])
    }

    fn free_mut(&mut self, role: usize) -> &mut [i64; 3] {
        self.reserved.entry(role).or_insert([0; 3])
    }

    /// Predicted outcome (`Ok` or the failing stage) and the next state.
    fn step(&self, step: &Step) -> (Result<(), &'static str>, Model) {
        let mut m = self.clone();
        let outcome = match *step {
            Step::Reserve { role, kind, amount } => {
                if amount <= m.unreserved[kind] {
                    m.unreserved[kind] -= amount;
                    m.free_mut(role)[kind] += amount;
                    Ok(())
                } else {
                    Err("apply")
                }
            }
            Step::Unreserve { role, kind, amount } => {
                if amount <= m.free(role, kind) {
                    m.free_mut(role)[kind] -= amount;
                    m.unreserved[kind] += amount;
                    Ok(())
                } else {
                    Err("apply")
                }
            }
            Step::Create { role, id, size } => {
                if m.volumes.contains_key(&(role, id)) {
                    Err("validate")
                } else if size <= m.free(role, 2) {
                    m.free_mut(role)[2] -= size;
                    m.volumes.insert((role, id), Vol { size, task: None });
                    Ok(())
                } else {
                    Err("apply")
                }
            }
            Step::Destroy { role, id } => match m.volumes.get(&(role, id)) {
                None => Err("validate"),
                Some(v) if v.task.is_some() => Err("validate"),
                Some(v) => {
                    let size = v.size;
                    m.volumes.remove(&(role, id));
                    m.free_mut(role)[2] += size;
                    Ok(())
                }
            },
            Step::Grow { role, id, amount } => match m.volumes.get(&(role, id)) {
                Some(v) if v.task.is_none() && amount <= m.free(role, 2) => {
                    let size = v.size;
                    m.free_mut(role)[2] -= amount;
                    m.volumes.insert(
                        (role, id),
                        Vol {
                            size: size + amount,
                            task: None,
                        },
                    );
                    Ok(())
                }
                _ => Err("apply"),
            },
            Step::Shrink { role, id, amount } => {
                let size = m.volumes.get(&(role, id)).map_or(1, |v| v.size);
                match m.volumes.get(&(role, id)) {
                    _ if amount >= size => Err("validate"),
                    Some(v) if v.task.is_none() => {
                        m.volumes.insert(
                            (role, id),
                            Vol {
                                size: size - amount,
                                task: None,
                            },
                        );
                        m.free_mut(role)[2] += amount;
                        Ok(())
                    }
                    _ => Err("apply"),
                }
            }
            Step::Launch { task, role, id } => match m.volumes.get_mut(&(role, id)) {
                Some(v) if v.task.is_none() => {
                    v.task = Some(task);
                    m.tasks.insert(task, (role, id));
                    Ok(())
                }
                _ => Err("apply"),
            },
            Step::TaskEnd { task } => {
                if let Some(key) = m.tasks.remove(&task)
                    && let Some(v) = m.volumes.get_mut(&key)
                {
                    v.task = None;
                }
                Ok(())
            }
            Step::CreateDestroy { role, id, size } => {
                if m.volumes.contains_key(&(role, id)) {
                    Err("validate")
                } else if size <= m.free(role, 2) {
                    Ok(())
                } else {
                    Err("apply")
                }
            }
            Step::ReserveUnreserve { kind, amount, .. } => {
                if amount <= m.unreserved[kind] {
                    Ok(())
                } else {
                    Err("apply")
                }
            }
        };
        if outcome.is_err() {
            return (outcome, self.clone());
        }
        (outcome, m)
    }
}

// ---- building berth values ----

fn role(i: usize) -> Role {
    Role::new(ROLES[i]).unwrap()
}

fn reserved(role_ix: usize, kind: usize, amount: i64) -> Resource {
    let mut r = Resource::scalar(KINDS[kind], Scalar::from_units(amount));
    r.reservations
        .push(ReservationInfo::dynamic(role(role_ix), Some(PRINCIPAL)));
    r
}

fn volume(role_ix: usize, id: usize, size: i64) -> Resource {
    let mut r = reserved(role_ix, 2, size);
    r.disk = Some(std::sync::Arc::new(DiskInfo {
        persistence: Some(Persistence {
            id: PersistenceId::new(&format!("v{id}")).unwrap(),
            principal: Some(PRINCIPAL.to_owned()),
        }),
        volume: Some(Volume::new("data", VolumeMode::Rw)),
        source: None,
    }));
    r
}

/// The system under test: the agent's unallocated resources and the resources of running tasks.
#[derive(Clone, Debug)]
struct Agent {
    resources: Resources,
    used: BTreeMap<usize, Resources>,
}

impl Agent {
    fn new() -> Agent {
        let mut resources = Resources::new();
        for (k, amount) in KINDS.iter().zip(INITIAL) {
            resources.add_resource(Resource::scalar(k, Scalar::from_units(amount)));
        }
        Agent {
            resources,
            used: BTreeMap::new(),
        }
    }

    fn all_used(&self) -> Resources {
        let mut all = Resources::new();
        for r in self.used.values() {
            all += r;
        }
        all
    }

    fn context(&self) -> Context {
        let everything = &self.resources + &self.all_used();
        let mut ctx = Context::operator();
        ctx.principal = Some(PRINCIPAL.to_owned());
        ctx.agent = AgentCapabilities::all();
        ctx.checkpointed = everything.filter(Resource::needs_checkpointing);
        ctx.used.insert("framework".to_owned(), self.all_used());
        ctx
    }

    fn run(&mut self, op: Operation) -> Result<(), &'static str> {
        let ctx = self.context();
        match pipeline::run(&self.resources, op, &ctx, None) {
            Ok(after) => {
                self.resources = after;
                Ok(())
            }
            Err(e) => Err(e.stage),
        }
    }

    fn volume_size(&self, role_ix: usize, id: usize, model: &Model) -> i64 {
        model.volumes.get(&(role_ix, id)).map_or(1, |v| v.size)
    }

    /// Applies one step; returns the outcome.
    fn step(&mut self, step: &Step, before: &Model) -> Result<(), &'static str> {
        match *step {
            Step::Reserve { role, kind, amount } => self.run(Operation::Reserve {
                source: vec![],
                resources: vec![reserved(role, kind, amount)],
            }),
            Step::Unreserve { role, kind, amount } => self.run(Operation::Unreserve {
                resources: vec![reserved(role, kind, amount)],
            }),
            Step::Create { role, id, size } => self.run(Operation::Create {
                volumes: vec![volume(role, id, size)],
            }),
            Step::Destroy { role, id } => {
                let size = self.volume_size(role, id, before);
                self.run(Operation::Destroy {
                    volumes: vec![volume(role, id, size)],
                })
            }
            Step::Grow { role, id, amount } => {
                let size = self.volume_size(role, id, before);
                self.run(Operation::GrowVolume {
                    volume: volume(role, id, size),
                    addition: reserved(role, 2, amount),
                })
            }
            Step::Shrink { role, id, amount } => {
                let size = self.volume_size(role, id, before);
                self.run(Operation::ShrinkVolume {
                    volume: volume(role, id, size),
                    subtract: Scalar::from_units(amount),
                })
            }
            Step::Launch { task, role, id } => {
                let size = self.volume_size(role, id, before);
                let resources = vec![volume(role, id, size)];
                let launched: Resources = resources.iter().cloned().collect();
                let result = self.run(Operation::Launch {
                    tasks: vec![Launch {
                        id: format!("t{task}"),
                        resources,
                        volumes: vec![],
                    }],
                });
                if result.is_ok() {
                    self.used.insert(task, launched);
                }
                result
            }
            Step::TaskEnd { task } => {
                if let Some(r) = self.used.remove(&task) {
                    self.resources += &r;
                }
                Ok(())
            }
            Step::CreateDestroy { role, id, size } => {
                let before_resources = self.resources.clone();
                self.step(&Step::Create { role, id, size }, before)?;
                let mut with = before.clone();
                with.volumes.insert((role, id), Vol { size, task: None });
                assert_eq!(
                    self.step(&Step::Destroy { role, id }, &with),
                    Ok(()),
                    "DESTROY after CREATE"
                );
                assert_restored(&before_resources, &self.resources, "CREATE then DESTROY");
                Ok(())
            }
            Step::ReserveUnreserve { role, kind, amount } => {
                let before_resources = self.resources.clone();
                self.step(&Step::Reserve { role, kind, amount }, before)?;
                assert_eq!(
                    self.step(&Step::Unreserve { role, kind, amount }, before),
                    Ok(()),
                    "UNRESERVE after RESERVE"
                );
                assert_restored(&before_resources, &self.resources, "RESERVE then UNRESERVE");
                Ok(())
            }
        }
    }
}

fn assert_restored(before: &Resources, after: &Resources, what: &str) {
    assert_eq!(before, after, "{what} did not restore the resources");
    assert_eq!(
        before.len(),
        after.len(),
        "{what} changed the number of entries"
    );
    let a: Vec<String> = before.iter().map(|r| r.to_json().to_string()).collect();
    let mut b: Vec<String> = after.iter().map(|r| r.to_json().to_string()).collect();
    let mut a = a;
    a.sort();
    b.sort();
    assert_eq!(a, b, "{what}: not identical");
}

fn check_invariants(agent: &Agent, model: &Model) {
    let everything = &agent.resources + &agent.all_used();
    for (k, initial) in KINDS.iter().zip(INITIAL) {
        assert_eq!(
            everything.scalar(k),
            Some(Scalar::from_units(initial)),
            "{k} not conserved"
        );
    }
    for r in agent.resources.iter() {
        assert!(r.validate().is_ok(), "invalid resource held: {r}");
    }
    // Persistence ids unique per role.
    let mut seen = std::collections::BTreeSet::new();
    for r in everything.persistent_volumes().iter() {
        let key = (
            r.reservation_role().map(ToString::to_string),
            r.persistence_id().map(ToString::to_string),
        );
        assert!(seen.insert(key.clone()), "duplicate persistence id {key:?}");
    }
    // Amounts equal the model's.
    for kind in 0..3 {
        let unreserved = agent
            .resources
            .unreserved()
            .scalar(KINDS[kind])
            .unwrap_or(Scalar::ZERO);
        assert_eq!(
            unreserved,
            Scalar::from_units(model.unreserved[kind]),
            "unreserved {}",
            KINDS[kind]
        );
        for role_ix in 0..ROLES.len() {
            let free = agent
                .resources
                .reserved(Some(ROLES[role_ix]))
                .filter(|r| !r.is_persistent_volume())
                .scalar(KINDS[kind])
                .unwrap_or(Scalar::ZERO);
            assert_eq!(
                free,
                Scalar::from_units(model.free(role_ix, kind)),
                "reserved {} of {}",
                KINDS[kind],
                ROLES[role_ix]
            );
        }
    }
    // Every model volume exists with its size: in the agent's resources, or with its task.
    assert_eq!(everything.persistent_volumes().len(), model.volumes.len());
    for ((role_ix, id), v) in &model.volumes {
        let r = volume(*role_ix, *id, v.size);
        match v.task {
            None => assert!(agent.resources.contains_resource(&r), "volume {r} missing"),
            Some(task) => assert!(
                agent
                    .used
                    .get(&task)
                    .is_some_and(|u| u.contains_resource(&r)),
                "volume {r} in use lost"
            ),
        }
    }
}

/// Runs a fixed sequence against berth and the model (used by the named regression tests).
fn run_sequence(steps: &[Step]) {
    let mut model = Model::new();
    let mut agent = Agent::new();
    for step in steps {
        let (want, next) = model.step(step);
        let got = agent.step(step, &model);
        assert_eq!(got, want, "{step:?}");
        model = next;
        check_invariants(&agent, &model);
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let role = 0..ROLES.len();
        let id = 0usize..3;
        let amount = |kind: usize| match kind {
            0 => (1i64..=4).boxed(),
            1 => (1i64..=3000).boxed(),
            _ => (1i64..=4000).boxed(),
        };
        let kind_amount = (0usize..3).prop_flat_map(move |k| (Just(k), amount(k)));
        let running: Vec<usize> = state.tasks.keys().copied().collect();
        // Operations on volumes mostly target volumes that exist, so that interesting
        // interleavings (in use, grown, shrunk) happen often.
        let existing: Vec<(usize, usize)> = state.volumes.keys().copied().collect();
        let target: BoxedStrategy<(usize, usize)> = if existing.is_empty() {
            (role.clone(), id.clone()).boxed()
        } else {
            prop_oneof![4 => prop::sample::select(existing), 1 => (role.clone(), id.clone())]
                .boxed()
        };
        let mut choices: Vec<BoxedStrategy<Step>> = vec![
            (role.clone(), kind_amount.clone())
                .prop_map(|(role, (kind, amount))| Step::Reserve { role, kind, amount })
                .boxed(),
            (role.clone(), kind_amount.clone())
                .prop_map(|(role, (kind, amount))| Step::Unreserve { role, kind, amount })
                .boxed(),
            (role.clone(), id.clone(), 1i64..=3000)
                .prop_map(|(role, id, size)| Step::Create { role, id, size })
                .boxed(),
            target
                .clone()
                .prop_map(|(role, id)| Step::Destroy { role, id })
                .boxed(),
            (target.clone(), 1i64..=1000)
                .prop_map(|((role, id), amount)| Step::Grow { role, id, amount })
                .boxed(),
            (target.clone(), 1i64..=1000)
                .prop_map(|((role, id), amount)| Step::Shrink { role, id, amount })
                .boxed(),
            (role.clone(), id.clone(), 1i64..=3000)
                .prop_map(|(role, id, size)| Step::CreateDestroy { role, id, size })
                .boxed(),
            (role.clone(), kind_amount)
                .prop_map(|(role, (kind, amount))| Step::ReserveUnreserve { role, kind, amount })
                .boxed(),
        ];
        let free_tasks: Vec<usize> = (0..3).filter(|t| !state.tasks.contains_key(t)).collect();
        if !free_tasks.is_empty() {
            choices.push(
                (prop::sample::select(free_tasks), target)
                    .prop_map(|(task, (role, id))| Step::Launch { task, role, id })
                    .boxed(),
            );
        }
        if !running.is_empty() {
            choices.push(
                prop::sample::select(running)
                    .prop_map(|task| Step::TaskEnd { task })
                    .boxed(),
            );
        }
        prop::strategy::Union::new(choices).boxed()
    }

    fn apply(state: Model, step: &Step) -> Model {
        state.step(step).1
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::Launch { task, .. } => !state.tasks.contains_key(task),
            Step::TaskEnd { task } => state.tasks.contains_key(task),
            _ => true,
        }
    }
}

struct BerthAgent;

impl StateMachineTest for BerthAgent {
    type SystemUnderTest = (Agent, Model);
    type Reference = Reference;

    fn init_test(_: &Model) -> (Agent, Model) {
        (Agent::new(), Model::new())
    }

    fn apply((mut agent, before): (Agent, Model), after: &Model, step: Step) -> (Agent, Model) {
        let (want, next) = before.step(&step);
        let got = agent.step(&step, &before);
        assert_eq!(got, want, "{step:?}");
        check_invariants(&agent, &next);
        assert_eq!(next.unreserved, after.unreserved);
        (agent, next)
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 384,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn operations_follow_the_reference_model(sequential 1..40 => BerthAgent);
}

// ---- named regression and scenario tests (same harness) ----

#[test]
fn regression_volume_in_use_cannot_be_destroyed_or_resized() {
    run_sequence(&[
        Step::Reserve {
            role: 0,
            kind: 2,
            amount: 3000,
        },
        Step::Create {
            role: 0,
            id: 0,
            size: 1000,
        },
        Step::Launch {
            task: 0,
            role: 0,
            id: 0,
        },
        Step::Destroy { role: 0, id: 0 },
        Step::Grow {
            role: 0,
            id: 0,
            amount: 10,
        },
        Step::Shrink {
            role: 0,
            id: 0,
            amount: 10,
        },
        Step::TaskEnd { task: 0 },
        Step::Destroy { role: 0, id: 0 },
        Step::Unreserve {
            role: 0,
            kind: 2,
            amount: 3000,
        },
    ]);
}

#[test]
fn regression_same_id_in_two_roles_is_allowed_but_not_twice_in_one() {
    run_sequence(&[
        Step::Reserve {
            role: 0,
            kind: 2,
            amount: 500,
        },
        Step::Reserve {
            role: 1,
            kind: 2,
            amount: 500,
        },
        Step::Create {
            role: 0,
            id: 1,
            size: 100,
        },
        Step::Create {
            role: 1,
            id: 1,
            size: 100,
        },
        Step::Create {
            role: 0,
            id: 1,
            size: 100,
        },
        Step::Launch {
            task: 1,
            role: 0,
            id: 1,
        },
        Step::Create {
            role: 0,
            id: 1,
            size: 50,
        },
    ]);
}

#[test]
fn regression_grow_and_shrink_round_trip() {
    run_sequence(&[
        Step::Reserve {
            role: 2,
            kind: 2,
            amount: 2000,
        },
        Step::Create {
            role: 2,
            id: 2,
            size: 1000,
        },
        Step::Grow {
            role: 2,
            id: 2,
            amount: 1000,
        },
        Step::Grow {
            role: 2,
            id: 2,
            amount: 1,
        },
        Step::Shrink {
            role: 2,
            id: 2,
            amount: 2000,
        },
        Step::Shrink {
            role: 2,
            id: 2,
            amount: 1999,
        },
        Step::Destroy { role: 2, id: 2 },
        Step::ReserveUnreserve {
            role: 2,
            kind: 0,
            amount: 4,
        },
        Step::CreateDestroy {
            role: 2,
            id: 0,
            size: 2000,
        },
    ]);
}
