//! Reference-model test of the consumer counts of [`VolumeManager`]: random sequences of
//! mount / unmount per consumer, crashes at every write-ahead point (the crash hook unwinds
//! out of the manager, which is then dropped and started again over the same state, as a
//! restarted agent) and recoveries, per consumer and per agent, against a model that only
//! knows which consumers use which volume. After every step the plugin's mounted `ID`s and
//! every record on disk must be exactly what the model's consumers want: one `ID` per
//! consumer (or one agent `ID` while any consumer is left), nothing leaked, nothing pending.
//!
//! The plugin is [`berth_dvdi::fake::MemoryDriver`], a strict reference-counting plugin in
//! memory: no sockets, no mounts, no root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use berth_dvdi::fake::{MemoryDriver, MemoryDrivers};
use berth_dvdi::manager::{ManagerConfig, MountMode, VolumeManager};
use berth_dvdi::record::MountState;
use berth_dvdi::{ConsumerId, DockerVolume, DriverName, VolumeName};
use berth_mount::hook::Failpoint;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const DRIVER: &str = "memdrv";
const VOLUMES: usize = 2;
const CONSUMERS: usize = 3;
const AGENT: &str = "a1";

#[derive(Debug, Clone)]
enum Step {
    Mount {
        v: usize,
        c: usize,
    },
    Unmount {
        v: usize,
        c: usize,
    },
    /// `Mount` or `Unmount` that crashes at the `at`-th write-ahead point (when it gets that
    /// far), then a restart and `recover`.
    Crash {
        v: usize,
        c: usize,
        mount: bool,
        at: usize,
    },
    /// A restart and `recover` without a crash.
    Recover,
}

/// The model: the consumers of each volume, and the mount mode of the run.
#[derive(Debug, Clone, Default)]
struct Model {
    per_agent: bool,
    consumers: BTreeSet<(usize, usize)>,
}

impl Model {
    fn step(&self, step: &Step) -> Model {
        let mut next = self.clone();
        match *step {
            Step::Mount { v, c } => {
                next.consumers.insert((v, c));
            }
            // Recovery drops the consumer of a crashed operation (not live), whether the
            // operation crashed or finished.
            Step::Unmount { v, c } | Step::Crash { v, c, .. } => {
                next.consumers.remove(&(v, c));
            }
            Step::Recover => {}
        }
        next
    }

    fn of(&self, v: usize) -> BTreeSet<String> {
        self.consumers
            .iter()
            .filter(|(vv, _)| *vv == v)
            .map(|(vv, c)| cid(*vv, *c))
            .collect()
    }
}

fn vol(v: usize) -> String {
    format!("vol-{v}")
}

/// A consumer id unique to its volume: a crashed operation's consumer is then simply "not
/// live" for recovery.
fn cid(v: usize, c: usize) -> String {
    format!("v{v}-c{c}")
}

fn volume(v: usize) -> DockerVolume {
    let mut d = DockerVolume::new(
        DriverName::new(DRIVER).unwrap(),
        VolumeName::new(&vol(v)).unwrap(),
    );
    d.explicit_create = Some(false);
    d
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        any::<bool>()
            .prop_map(|per_agent| Model {
                per_agent,
                consumers: BTreeSet::new(),
            })
            .boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        let v = 0..VOLUMES;
        let c = 0..CONSUMERS;
        prop_oneof![
            4 => (v.clone(), c.clone()).prop_map(|(v, c)| Step::Mount { v, c }),
            3 => (v.clone(), c.clone()).prop_map(|(v, c)| Step::Unmount { v, c }),
            3 => (v, c, any::<bool>(), 1usize..=6)
                .prop_map(|(v, c, mount, at)| Step::Crash { v, c, mount, at }),
            1 => Just(Step::Recover),
        ]
        .boxed()
    }

    fn apply(state: Model, step: &Step) -> Model {
        state.step(step)
    }
}

/// The unwinding payload of a simulated crash.
struct Crash;

fn crash() {
    std::panic::resume_unwind(Box::new(Crash));
}

fn quiet_crashes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<Crash>() {
                default(info);
            }
        }));
    });
}

/// The system under test: the state dir, the plugin (outlives every manager) and the
/// current manager.
struct Sut {
    _dir: tempfile::TempDir,
    state: PathBuf,
    root: PathBuf,
    per_agent: bool,
    driver: MemoryDriver,
    manager: VolumeManager<MemoryDrivers>,
    rt: tokio::runtime::Runtime,
}

fn new_manager(
    state: &std::path::Path,
    driver: &MemoryDriver,
    per_agent: bool,
) -> VolumeManager<MemoryDrivers> {
    let mut cfg = ManagerConfig::new(state);
    cfg.mountinfo = None;
    if per_agent {
        cfg.mode = MountMode::PerAgent {
            agent_id: AGENT.into(),
        };
    }
    VolumeManager::new(MemoryDrivers::default().with(driver.clone()), cfg).unwrap()
}

impl Sut {
    fn new(per_agent: bool) -> Self {
        quiet_crashes();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let root = dir.path().join("volumes");
        let driver = MemoryDriver::new(DRIVER, &root);
        let manager = new_manager(&state, &driver, per_agent);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            _dir: dir,
            state,
            root,
            per_agent,
            driver,
            manager,
            rt,
        }
    }

    fn restart_and_recover(&mut self, model: &Model) {
        self.manager = new_manager(&self.state, &self.driver, self.per_agent);
        let keep: BTreeSet<String> = model.consumers.iter().map(|(v, c)| cid(*v, *c)).collect();
        let report = self.rt.block_on(self.manager.recover(&keep)).unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }

    fn run(&mut self, step: &Step, after: &Model) {
        match *step {
            Step::Mount { v, c } => {
                let mp = self
                    .rt
                    .block_on(
                        self.manager
                            .mount(&volume(v), &ConsumerId::new(&cid(v, c)).unwrap()),
                    )
                    .unwrap();
                assert_eq!(mp, self.root.join(vol(v)));
            }
            Step::Unmount { v, c } => {
                let d = volume(v);
                self.rt
                    .block_on(self.manager.unmount(
                        &d.driver,
                        &d.name,
                        &ConsumerId::new(&cid(v, c)).unwrap(),
                    ))
                    .unwrap();
            }
            Step::Crash { v, c, mount, at } => {
                self.manager
                    .set_hook(Failpoint::with_action(at, crash).hook());
                let (m, rt) = (&self.manager, &self.rt);
                let d = volume(v);
                let consumer = ConsumerId::new(&cid(v, c)).unwrap();
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if mount {
                        rt.block_on(m.mount(&d, &consumer)).map(|_| ())
                    } else {
                        rt.block_on(m.unmount(&d.driver, &d.name, &consumer))
                    }
                }));
                match outcome {
                    Ok(r) => r.unwrap(),
                    Err(payload) if payload.is::<Crash>() => {}
                    Err(payload) => std::panic::resume_unwind(payload),
                }
                self.restart_and_recover(after);
            }
            Step::Recover => self.restart_and_recover(after),
        }
    }

    /// The plugin's `ID`s and the records are exactly what `model` wants.
    fn check(&self, model: &Model) {
        for v in 0..VOLUMES {
            let consumers = model.of(v);
            let want_ids: BTreeSet<String> = if self.per_agent {
                if consumers.is_empty() {
                    BTreeSet::new()
                } else {
                    BTreeSet::from([ConsumerId::agent(AGENT).unwrap().as_str().to_owned()])
                }
            } else {
                consumers.clone()
            };
            assert_eq!(
                self.driver.mounted_ids(&vol(v)),
                want_ids,
                "plugin IDs of volume {v}"
            );
            let rec = self.manager.load(DRIVER, &vol(v)).unwrap();
            if consumers.is_empty() {
                assert!(
                    rec.is_none(),
                    "volume {v} has no consumer but a record: {rec:?}"
                );
                continue;
            }
            let rec = rec.expect("a record for a volume in use");
            let got: BTreeSet<String> = rec.consumers.keys().cloned().collect();
            assert_eq!(got, consumers, "recorded consumers of volume {v}");
            assert!(rec.consumers.values().all(|c| !c.leaving), "{rec:?}");
            let ids: BTreeSet<String> = rec.mounts.keys().cloned().collect();
            assert_eq!(ids, want_ids, "recorded mounts of volume {v}");
            assert!(
                rec.mounts
                    .values()
                    .all(|m| m.state == MountState::Mounted && !m.in_flight),
                "{rec:?}"
            );
        }
        let listed: BTreeMap<String, ()> = self
            .manager
            .volumes()
            .unwrap()
            .into_iter()
            .map(|(_, v)| (v, ()))
            .collect();
        let in_use: BTreeMap<String, ()> = (0..VOLUMES)
            .filter(|v| !model.of(*v).is_empty())
            .map(|v| (vol(v), ()))
            .collect();
        assert_eq!(listed, in_use);
    }
}

struct ConsumerStateMachine;

impl StateMachineTest for ConsumerStateMachine {
    type SystemUnderTest = (Sut, Model);
    type Reference = Reference;

    fn init_test(init: &Model) -> (Sut, Model) {
        (Sut::new(init.per_agent), init.clone())
    }

    fn apply((mut sut, before): (Sut, Model), _after: &Model, step: Step) -> (Sut, Model) {
        let next = before.step(&step);
        sut.run(&step, &next);
        sut.check(&next);
        (sut, next)
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn consumer_counts_follow_the_reference_model(sequential 1..30 => ConsumerStateMachine);
}

fn run_sequence(per_agent: bool, steps: &[Step]) {
    let mut sut = Sut::new(per_agent);
    let mut model = Model {
        per_agent,
        consumers: BTreeSet::new(),
    };
    for step in steps {
        let next = model.step(step);
        sut.run(step, &next);
        sut.check(&next);
        model = next;
    }
}

#[test]
fn crash_at_every_point_keeps_the_counts_balanced() {
    for per_agent in [false, true] {
        for at in 1..=6 {
            for mount in [true, false] {
                run_sequence(
                    per_agent,
                    &[
                        Step::Mount { v: 0, c: 0 },
                        Step::Mount { v: 0, c: 1 },
                        Step::Crash {
                            v: 0,
                            c: 2,
                            mount: true,
                            at,
                        },
                        Step::Crash {
                            v: 0,
                            c: 1,
                            mount,
                            at,
                        },
                        Step::Crash {
                            v: 0,
                            c: 0,
                            mount: false,
                            at,
                        },
                        Step::Mount { v: 1, c: 0 },
                        Step::Unmount { v: 1, c: 0 },
                    ],
                );
            }
        }
    }
}
