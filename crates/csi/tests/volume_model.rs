//! Reference-model test of the CSI volume state machine ([`VolumeManager`]): random sequences
//! of publish / unpublish per consumer, crashes at every write-ahead point (the crash hook
//! unwinds out of the manager, which is then dropped and started again over the same work dir,
//! as a restarted agent), recoveries and reboots, against a model that only knows which
//! consumers use which volume in which mode. After every step the plugin's staged and
//! published sets and every record on disk must be exactly what the model's consumers want.
//!
//! The node service is an in-memory plugin (no gRPC, no mounts): no root needed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_csi::client::{NodeCapabilities, NodeService};
use berth_csi::config::{PluginConfig, PluginKind};
use berth_csi::manager::{ManagerConfig, VolumeManager, VolumeSpec};
use berth_csi::record::{Capability, Mode};
use berth_csi::secrets::SecretResolver;
use berth_mount::hook::Failpoint;
use berth_proto::csi::v1 as pb;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

const VOLUMES: usize = 2;
const CONSUMERS: usize = 3;

/// What the in-memory plugin has done: staged volumes, published targets (read-only flag).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct PluginState {
    staged: BTreeSet<String>,
    published: BTreeMap<PathBuf, bool>,
}

/// An in-memory CSI node plugin with `STAGE_UNSTAGE_VOLUME`: it creates a target on publish
/// and removes it on unpublish, as a real plugin does when `target_path_exists` is false.
/// Calls are idempotent, `NOT_FOUND` teardown is "done", as the spec wants.
#[derive(Clone, Default)]
struct MemNode(Arc<Mutex<PluginState>>);

impl MemNode {
    fn state(&self) -> PluginState {
        self.0.lock().unwrap().clone()
    }
}

impl NodeService for MemNode {
    fn plugin(&self) -> &str {
        "org.berth.model"
    }
    async fn capabilities(&self) -> berth_csi::Result<NodeCapabilities> {
        Ok(NodeCapabilities {
            stage_unstage: true,
            ..NodeCapabilities::default()
        })
    }
    async fn stage(&self, req: pb::NodeStageVolumeRequest) -> berth_csi::Result<()> {
        assert!(Path::new(&req.staging_target_path).is_dir());
        self.0.lock().unwrap().staged.insert(req.volume_id);
        Ok(())
    }
    async fn unstage(&self, volume_id: &str, _staging: &Path) -> berth_csi::Result<()> {
        let mut s = self.0.lock().unwrap();
        assert!(
            !s.published
                .keys()
                .any(|t| t.to_string_lossy().contains(&enc(volume_id))),
            "unstage of {volume_id} while published"
        );
        s.staged.remove(volume_id);
        Ok(())
    }
    async fn publish(&self, req: pb::NodePublishVolumeRequest) -> berth_csi::Result<()> {
        let mut s = self.0.lock().unwrap();
        assert!(s.staged.contains(&req.volume_id), "publish before stage");
        let target = PathBuf::from(&req.target_path);
        std::fs::create_dir_all(&target).unwrap();
        s.published.insert(target, req.readonly);
        Ok(())
    }
    async fn unpublish(&self, _volume_id: &str, target: &Path) -> berth_csi::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.published.remove(target);
        let _ = std::fs::remove_dir(target);
        Ok(())
    }
    async fn expand(&self, req: pb::NodeExpandVolumeRequest) -> berth_csi::Result<u64> {
        Ok(req
            .capacity_range
            .map_or(0, |r| u64::try_from(r.required_bytes).unwrap_or(0)))
    }
}

fn enc(volume_id: &str) -> String {
    berth_mount::names::encode_component(volume_id).unwrap()
}

fn vol(v: usize) -> String {
    format!("vol/{v}")
}

/// A consumer id unique to its volume: a crashed operation's consumer is then simply "not
/// live" for recovery, whatever it uses elsewhere.
fn cid(v: usize, c: usize) -> String {
    format!("v{v}-c{c}")
}

fn spec(v: usize) -> VolumeSpec {
    VolumeSpec {
        volume_id: vol(v),
        capability: Capability {
            block: false,
            fs_type: "ext4".into(),
            mount_flags: vec![],
            access_mode: 5,
        },
        volume_context: BTreeMap::new(),
        stage_secrets: HashMap::new(),
        publish_secrets: HashMap::new(),
    }
}

#[derive(Debug, Clone)]
enum Step {
    Publish {
        v: usize,
        c: usize,
        ro: bool,
    },
    Unpublish {
        v: usize,
        c: usize,
    },
    /// `Publish` or `Unpublish` that crashes at the `at`-th write-ahead point (when it gets
    /// that far), then a restart and `recover`.
    Crash {
        v: usize,
        c: usize,
        ro: bool,
        publish: bool,
        at: usize,
    },
    /// A restart and `recover` without a crash.
    Recover,
    /// A reboot (the plugin's mounts are gone, a new boot id), a restart and `recover`.
    Reboot,
}

/// The model: consumers per (volume, consumer) and their mode.
#[derive(Debug, Clone, Default)]
struct Model {
    consumers: BTreeMap<(usize, usize), Mode>,
}

impl Model {
    fn modes(&self, v: usize) -> BTreeSet<Mode> {
        self.consumers
            .iter()
            .filter(|((vv, _), _)| *vv == v)
            .map(|(_, m)| *m)
            .collect()
    }

    /// The next model state and whether berth must succeed.
    fn step(&self, step: &Step) -> (Model, bool) {
        let mut next = self.clone();
        let ok = match *step {
            Step::Publish { v, c, ro } => {
                let mode = if ro { Mode::Ro } else { Mode::Rw };
                match self.consumers.get(&(v, c)) {
                    Some(m) if *m != mode => false,
                    _ => {
                        next.consumers.insert((v, c), mode);
                        true
                    }
                }
            }
            Step::Unpublish { v, c } => {
                next.consumers.remove(&(v, c));
                true
            }
            Step::Crash { v, c, .. } => {
                // Whether the operation crashed or finished, recovery drops the consumer of a
                // crashed operation (not live) ...
                next.consumers.remove(&(v, c));
                true
            }
            Step::Recover | Step::Reboot => true,
        };
        (next, ok)
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Step> {
        let v = 0..VOLUMES;
        let c = 0..CONSUMERS;
        prop_oneof![
            4 => (v.clone(), c.clone(), any::<bool>()).prop_map(|(v, c, ro)| Step::Publish { v, c, ro }),
            3 => (v.clone(), c.clone()).prop_map(|(v, c)| Step::Unpublish { v, c }),
            3 => (v, c, any::<bool>(), any::<bool>(), 1usize..=8)
                .prop_map(|(v, c, ro, publish, at)| Step::Crash { v, c, ro, publish, at }),
            1 => Just(Step::Recover),
            1 => Just(Step::Reboot),
        ]
        .boxed()
    }

    fn apply(state: Model, step: &Step) -> Model {
        state.step(step).0
    }
}

/// The system under test: a work dir, the plugin (outlives every manager, as a real plugin
/// outlives an agent restart) and the current manager.
struct Sut {
    _dir: tempfile::TempDir,
    work: PathBuf,
    node: MemNode,
    boot: usize,
    manager: VolumeManager<MemNode>,
    rt: tokio::runtime::Runtime,
}

/// The unwinding payload of a simulated crash.
struct Crash;

fn crash() {
    std::panic::resume_unwind(Box::new(Crash));
}

fn plugin_config() -> PluginConfig {
    PluginConfig {
        plugin_type: "org.berth.model".into(),
        name: "default".into(),
        kind: PluginKind::Unmanaged {
            node_socket: PathBuf::from("/nonexistent"),
        },
        target_path_root: None,
        target_path_exists: false,
        source: PathBuf::new(),
    }
}

fn new_manager(work: &Path, node: &MemNode, boot: usize) -> VolumeManager<MemNode> {
    VolumeManager::new(
        node.clone(),
        &plugin_config(),
        ManagerConfig {
            work_dir: work.to_owned(),
            boot_id: Some(format!("boot-{boot}")),
            secrets: SecretResolver::new(None),
        },
    )
    .unwrap()
}

impl Sut {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let node = MemNode::default();
        let manager = new_manager(&work, &node, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            _dir: dir,
            work,
            node,
            boot: 0,
            manager,
            rt,
        }
    }

    /// A restart (a new manager over the same state) and `recover` with `model`'s consumers
    /// live.
    fn restart_and_recover(&mut self, model: &Model) {
        self.manager = new_manager(&self.work, &self.node, self.boot);
        let live: BTreeSet<String> = model.consumers.keys().map(|(v, c)| cid(*v, *c)).collect();
        let alive = move |c: &str| live.contains(c);
        let report = self
            .rt
            .block_on(self.manager.recover(Some(&alive)))
            .unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }

    fn run(&mut self, step: &Step, after: &Model) -> bool {
        match *step {
            Step::Publish { v, c, ro } => {
                let mode = if ro { Mode::Ro } else { Mode::Rw };
                match self
                    .rt
                    .block_on(self.manager.publish(&spec(v), &cid(v, c), mode))
                {
                    Ok(target) => {
                        let want = self.manager.mount_dir(&vol(v)).unwrap().join(if ro {
                            "target-ro"
                        } else {
                            "target"
                        });
                        assert_eq!(target, want);
                        assert!(target.is_dir());
                        true
                    }
                    Err(_) => false,
                }
            }
            Step::Unpublish { v, c } => {
                self.rt
                    .block_on(self.manager.unpublish(&vol(v), &cid(v, c)))
                    .unwrap();
                true
            }
            Step::Crash {
                v,
                c,
                ro,
                publish,
                at,
            } => {
                self.manager
                    .set_hook(Failpoint::with_action(at, crash).hook());
                let (m, rt) = (&self.manager, &self.rt);
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    if publish {
                        let mode = if ro { Mode::Ro } else { Mode::Rw };
                        rt.block_on(m.publish(&spec(v), &cid(v, c), mode))
                            .map(|_| ())
                    } else {
                        rt.block_on(m.unpublish(&vol(v), &cid(v, c)))
                    }
                }));
                if let Err(payload) = outcome
                    && !payload.is::<Crash>()
                {
                    std::panic::resume_unwind(payload);
                }
                self.restart_and_recover(after);
                true
            }
            Step::Recover => {
                self.restart_and_recover(after);
                true
            }
            Step::Reboot => {
                *self.node.0.lock().unwrap() = PluginState::default();
                self.boot += 1;
                self.restart_and_recover(after);
                true
            }
        }
    }

    /// The plugin and the records are exactly what `model` wants.
    fn check(&self, model: &Model) {
        let plugin = self.node.state();
        let mut staged = BTreeSet::new();
        let mut published = BTreeMap::new();
        for v in 0..VOLUMES {
            let modes = model.modes(v);
            let rec = self.manager.load(&vol(v)).unwrap();
            if modes.is_empty() {
                assert!(
                    rec.is_none(),
                    "volume {v} has no consumer but a record: {rec:?}"
                );
                assert!(!self.manager.mount_dir(&vol(v)).unwrap().exists());
                continue;
            }
            let rec = rec.expect("a record for a volume in use");
            assert!(rec.is_settled(), "{rec:?}");
            let want: BTreeMap<String, Mode> = model
                .consumers
                .iter()
                .filter(|((vv, _), _)| *vv == v)
                .map(|((vv, c), m)| (cid(*vv, *c), *m))
                .collect();
            assert_eq!(rec.consumers, want);
            staged.insert(vol(v));
            let dir = self.manager.mount_dir(&vol(v)).unwrap();
            for m in modes {
                let (t, ro) = match m {
                    Mode::Rw => ("target", false),
                    Mode::Ro => ("target-ro", true),
                };
                published.insert(dir.join(t), ro);
            }
        }
        assert_eq!(plugin.staged, staged, "staged volumes");
        assert_eq!(plugin.published, published, "published targets");
    }
}

struct VolumeStateMachine;

impl StateMachineTest for VolumeStateMachine {
    type SystemUnderTest = (Sut, Model);
    type Reference = Reference;

    fn init_test(_: &Model) -> (Sut, Model) {
        quiet_crashes();
        (Sut::new(), Model::default())
    }

    fn apply((mut sut, before): (Sut, Model), _after: &Model, step: Step) -> (Sut, Model) {
        let (next, ok) = before.step(&step);
        assert_eq!(sut.run(&step, &next), ok, "{step:?}");
        sut.check(&next);
        (sut, next)
    }
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

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        .. ProptestConfig::default()
    })]

    #[test]
    fn volume_manager_follows_the_reference_model(sequential 1..30 => VolumeStateMachine);
}

/// Runs a fixed sequence (the named regression tests).
fn run_sequence(steps: &[Step]) {
    quiet_crashes();
    let mut sut = Sut::new();
    let mut model = Model::default();
    for step in steps {
        let (next, ok) = model.step(step);
        assert_eq!(sut.run(step, &next), ok, "{step:?}");
        sut.check(&next);
        model = next;
    }
}

#[test]
fn crash_at_every_point_of_a_shared_volume_leaves_exactly_the_live_consumers() {
    for at in 1..=8 {
        for publish in [true, false] {
            run_sequence(&[
                Step::Publish {
                    v: 0,
                    c: 0,
                    ro: false,
                },
                Step::Publish {
                    v: 0,
                    c: 1,
                    ro: true,
                },
                Step::Crash {
                    v: 0,
                    c: 2,
                    ro: true,
                    publish,
                    at,
                },
                Step::Crash {
                    v: 0,
                    c: 1,
                    ro: true,
                    publish: false,
                    at,
                },
                Step::Reboot,
                Step::Unpublish { v: 0, c: 0 },
            ]);
        }
    }
}

#[test]
fn a_consumer_cannot_change_its_mode() {
    run_sequence(&[
        Step::Publish {
            v: 1,
            c: 0,
            ro: true,
        },
        Step::Publish {
            v: 1,
            c: 0,
            ro: false,
        },
        Step::Unpublish { v: 1, c: 0 },
    ]);
}
