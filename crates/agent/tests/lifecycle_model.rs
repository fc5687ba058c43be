//! Reference-model tests of the container lifecycle, without root: the isolator mounts
//! through `berth-mount`'s recording fake (a "kernel" whose mount set survives a crash of the
//! isolator), so random sequences of prepare / failing prepare / cleanup / crash (at any
//! write-ahead point of prepare or cleanup) / restart-and-recover run against berth and
//! against a small model of which containers hold which mounts. After every step:
//!
//! * a record exists exactly for the containers the model holds;
//! * every volume of a completely prepared container is mounted at its container path;
//! * nothing is mounted that no held container planned (a broken rollback or recovery leaves
//!   a mount behind and fails here);
//! * each operation's outcome is the model's (already prepared, refused, cleaned, kept).

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_agent::container::{
    ContainerConfig, ContainerError, HookPoint, Isolator, PersistentVolumes, RecordState,
};
use berth_mount::Mounter;
use berth_mount::fake::RecordingMounter;
use berth_resources::proto;
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};

mod common;
use common::FakeKernel;

const CONTAINERS: usize = 3;

/// The container paths of each config variant, with the kind of each volume; a `boom` path
/// fails its bind (after the volumes sorted before it were mounted).
const VARIANTS: [&[(&str, Kind)]; 4] = [
    &[
        ("data", Kind::Persistent("pv-0")),
        ("data/scratch", Kind::SandboxPath("tmp/scratch")),
        ("etc-host", Kind::HostPath),
    ],
    &[
        ("a", Kind::Persistent("pv-1")),
        ("b", Kind::Persistent("pv-0")),
    ],
    &[("only", Kind::SandboxPath("s")), ("key", Kind::Secret)],
    // Fails: `a` and `b` are mounted first (depth 1), then `zz/boom` (depth 2) fails.
    &[
        ("a", Kind::Persistent("pv-1")),
        ("b", Kind::SandboxPath("s")),
        ("zz/boom", Kind::HostPath),
    ],
];
const FAILING: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Persistent(&'static str),
    SandboxPath(&'static str),
    HostPath,
    /// A `SECRET` volume: its bind, and the container's secrets tmpfs under the work dir.
    Secret,
}

/// How many write-ahead points (hooks) a complete prepare or cleanup of `variant` passes:
/// the intent, then two per volume.
fn hooks(variant: usize) -> usize {
    1 + 2 * VARIANTS[variant].len()
}

// ----- the model -----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// Every volume mounted, record `preparing`.
    Complete,
    /// Cut short by a crash: any part of its volumes may be mounted.
    Partial,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    held: BTreeMap<usize, (usize, Held)>,
}

#[derive(Clone, Debug)]
enum Step {
    Prepare {
        c: usize,
        variant: usize,
    },
    Cleanup {
        c: usize,
    },
    /// Prepare, killed at write-ahead point `at` (1-based), then a restart.
    CrashPrepare {
        c: usize,
        variant: usize,
        at: usize,
    },
    /// Cleanup, killed at write-ahead point `at`, then a restart.
    CrashCleanup {
        c: usize,
        at: usize,
    },
    /// A restart, then `recover` with these containers live.
    Recover {
        live: BTreeSet<usize>,
    },
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let held: Vec<(usize, usize)> = state.held.iter().map(|(c, (v, _))| (*c, *v)).collect();
        let c = 0..CONTAINERS;
        let prepare =
            (c.clone(), 0..VARIANTS.len()).prop_map(|(c, variant)| Step::Prepare { c, variant });
        let cleanup = c.clone().prop_map(|c| Step::Cleanup { c });
        let crash_prepare = (c.clone(), 0..FAILING).prop_flat_map(|(c, variant)| {
            (1..=hooks(variant)).prop_map(move |at| Step::CrashPrepare { c, variant, at })
        });
        let recover = proptest::collection::btree_set(c, 0..=CONTAINERS)
            .prop_map(|live| Step::Recover { live });
        if held.is_empty() {
            prop_oneof![4 => prepare, 1 => cleanup, 2 => crash_prepare, 1 => recover].boxed()
        } else {
            let crash_cleanup = proptest::sample::select(held).prop_flat_map(|(c, variant)| {
                (1..=hooks(variant)).prop_map(move |at| Step::CrashCleanup { c, at })
            });
            prop_oneof![
                4 => prepare,
                3 => cleanup,
                2 => crash_prepare,
                2 => crash_cleanup,
                2 => recover
            ]
            .boxed()
        }
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        match step {
            Step::CrashCleanup { c, .. } => state.held.contains_key(c),
            _ => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        match step {
            Step::Prepare { c, variant } => {
                if !state.held.contains_key(c) && *variant != FAILING {
                    state.held.insert(*c, (*variant, Held::Complete));
                }
            }
            Step::Cleanup { c } => {
                state.held.remove(c);
            }
            Step::CrashPrepare { c, variant, .. } => {
                state.held.entry(*c).or_insert((*variant, Held::Partial));
            }
            Step::CrashCleanup { c, .. } => {
                if let Some(h) = state.held.get_mut(c) {
                    h.1 = Held::Partial;
                }
            }
            Step::Recover { live } => state.held.retain(|c, _| live.contains(c)),
        }
        state
    }
}

// ----- the system under test -----

/// Persistent volumes at `<root>/volumes/<persistence id>`.
struct Dirs(PathBuf);

impl PersistentVolumes for Dirs {
    fn volume_path(&self, r: &proto::Resource) -> Result<PathBuf, String> {
        let id = &r.disk.as_ref().unwrap().persistence.as_ref().unwrap().id;
        Ok(self.0.join(id))
    }
}

/// The payload of an injected crash.
struct Crash;

struct Sut {
    _dir: tempfile::TempDir,
    root: PathBuf,
    rt: tokio::runtime::Runtime,
    kernel: Arc<FakeKernel>,
    iso: Isolator,
    /// The model before the step being applied.
    before: Model,
}

fn id(c: usize) -> String {
    format!("c{c}")
}

impl Sut {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-model-")
            .tempdir()
            .unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for d in ["work", "volumes/pv-0", "volumes/pv-1", "host"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for c in 0..CONTAINERS {
            std::fs::create_dir_all(root.join(format!("sb-{c}"))).unwrap();
        }
        let kernel = Arc::new(FakeKernel(RecordingMounter::new()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let iso = Self::isolator(&root, &kernel);
        Self {
            _dir: dir,
            root,
            rt,
            kernel,
            iso,
            before: Model::default(),
        }
    }

    fn isolator(root: &Path, kernel: &Arc<FakeKernel>) -> Isolator {
        Isolator::new(
            root.join("work"),
            Arc::new(Dirs(root.join("volumes"))),
            None,
        )
        .with_mounter(Arc::clone(kernel) as Arc<dyn Mounter>)
    }

    /// The process dies and comes back: a new isolator over the same work dir and kernel.
    fn restart(&mut self) {
        self.iso = Self::isolator(&self.root, &self.kernel);
    }

    fn sandbox(&self, c: usize) -> PathBuf {
        self.root.join(format!("sb-{c}"))
    }

    fn secrets_dir(&self, c: usize) -> PathBuf {
        self.root.join(format!("work/containers-secrets/{}", id(c)))
    }

    fn config(&self, c: usize, variant: usize) -> ContainerConfig {
        let mut resources = Vec::new();
        let mut volumes = Vec::new();
        for (path, kind) in VARIANTS[variant] {
            match kind {
                Kind::Persistent(pv) => resources.push(serde_json::json!(
                    {"name": "disk", "type": "SCALAR", "scalar": {"value": 64},
                     "reservations": [{"type": "DYNAMIC", "role": "db", "principal": "p"}],
                     "disk": {"persistence": {"id": pv}, "volume": {"mode": "RW", "container_path": path}}}
                )),
                Kind::SandboxPath(src) => volumes.push(serde_json::json!(
                    {"mode": "RW", "container_path": path,
                     "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": src}}}
                )),
                Kind::HostPath => volumes.push(serde_json::json!(
                    {"mode": "RO", "container_path": path,
                     "source": {"type": "HOST_PATH", "host_path": {"path": self.root.join("host")}}}
                )),
                Kind::Secret => volumes.push(serde_json::json!(
                    {"mode": "RO", "container_path": path,
                     "source": {"type": "SECRET", "secret": {"type": "VALUE", "value": {"data": "c2VjcmV0"}}}}
                )),
            }
        }
        let json = serde_json::json!({
            "container_id": id(c),
            "sandbox": self.sandbox(c),
            "resources": resources,
            "volumes": volumes,
        });
        ContainerConfig::from_json(&json.to_string()).unwrap()
    }

    /// The host paths `variant` mounts for container `c` (the failing path never is).
    fn targets(&self, c: usize, variant: usize) -> BTreeSet<PathBuf> {
        VARIANTS[variant]
            .iter()
            .filter(|(p, _)| !p.ends_with("boom"))
            .map(|(p, _)| self.sandbox(c).join(p))
            .collect()
    }

    /// Runs `op` with a hook that crashes it at write-ahead point `at` (it must get there),
    /// then restarts.
    fn crash_during(
        &mut self,
        at: usize,
        op: impl FnOnce(&Isolator, &tokio::runtime::Runtime) -> bool,
    ) {
        let n = Arc::new(AtomicUsize::new(0));
        self.iso.set_hook(Arc::new(move |_p: HookPoint<'_>| {
            if n.fetch_add(1, Ordering::SeqCst) + 1 == at {
                std::panic::resume_unwind(Box::new(Crash));
            }
        }));
        let (iso, rt) = (&self.iso, &self.rt);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(iso, rt)));
        match out {
            Err(payload) if payload.is::<Crash>() => {}
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(_) => panic!("no crash at point {at}"),
        }
        self.restart();
    }
}

struct LifecycleTest;

impl StateMachineTest for LifecycleTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_ref_state: &Model) -> Sut {
        Sut::new()
    }

    fn apply(mut sut: Sut, after: &Model, step: Step) -> Sut {
        let before = sut.before.clone();
        match &step {
            Step::Prepare { c, variant } => {
                let cfg = sut.config(*c, *variant);
                let out = sut.rt.block_on(sut.iso.prepare(&cfg));
                match (before.held.contains_key(c), *variant == FAILING, out) {
                    (true, _, Err(ContainerError::AlreadyPrepared { .. })) => {}
                    (false, true, Err(e)) => {
                        assert!(e.to_string().contains("zz/boom"), "{e}");
                    }
                    (false, false, Ok(mounts)) => {
                        let got: BTreeSet<PathBuf> = mounts.into_iter().map(|m| m.target).collect();
                        assert_eq!(got, sut.targets(*c, *variant));
                    }
                    (held, failing, out) => {
                        panic!("prepare c{c} v{variant} (held {held}, failing {failing}): {out:?}")
                    }
                }
            }
            Step::Cleanup { c } => {
                sut.rt.block_on(sut.iso.cleanup(&id(*c))).unwrap();
            }
            Step::CrashPrepare { c, variant, at } => {
                let cfg = sut.config(*c, *variant);
                if before.held.contains_key(c) {
                    // Refused before its first write-ahead point: nothing to crash.
                    let out = sut.rt.block_on(sut.iso.prepare(&cfg));
                    assert!(matches!(out, Err(ContainerError::AlreadyPrepared { .. })));
                } else {
                    sut.crash_during(*at, |iso, rt| rt.block_on(iso.prepare(&cfg)).is_ok());
                }
            }
            Step::CrashCleanup { c, at } => {
                let c = id(*c);
                sut.crash_during(*at, |iso, rt| rt.block_on(iso.cleanup(&c)).is_ok());
            }
            Step::Recover { live } => {
                sut.restart();
                let live_ids: Vec<String> = live.iter().map(|c| id(*c)).collect();
                let report = sut.rt.block_on(sut.iso.recover(&live_ids, &[])).unwrap();
                assert!(report.errors.is_empty(), "{:?}", report.errors);
                let kept: BTreeSet<String> = report.kept.iter().cloned().collect();
                let cleaned: BTreeSet<String> = report.cleaned.iter().cloned().collect();
                let want_kept: BTreeSet<String> = before
                    .held
                    .keys()
                    .filter(|c| live.contains(c))
                    .map(|c| id(*c))
                    .collect();
                let want_cleaned: BTreeSet<String> = before
                    .held
                    .keys()
                    .filter(|c| !live.contains(c))
                    .map(|c| id(*c))
                    .collect();
                assert_eq!(kept, want_kept);
                assert_eq!(cleaned, want_cleaned);
                let incomplete: BTreeSet<String> = report.incomplete.iter().cloned().collect();
                for c in &kept {
                    let complete = before
                        .held
                        .iter()
                        .any(|(k, (_, h))| id(*k) == *c && *h == Held::Complete);
                    if complete {
                        assert!(!incomplete.contains(c), "{c} is complete: {report:?}");
                    }
                }
            }
        }
        sut.before = after.clone();
        sut
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        let mut allowed = BTreeSet::new();
        for c in 0..CONTAINERS {
            let rec = sut.iso.load(&id(c)).unwrap();
            match model.held.get(&c) {
                None => assert!(rec.is_none(), "c{c}: record left: {rec:?}"),
                Some((variant, held)) => {
                    let rec = rec.unwrap_or_else(|| panic!("c{c}: no record"));
                    let targets = sut.targets(c, *variant);
                    if *held == Held::Complete {
                        assert_eq!(rec.state, RecordState::Preparing, "c{c}");
                        for t in &targets {
                            assert!(
                                sut.kernel.0.is_mounted(t),
                                "c{c}: {} not mounted",
                                t.display()
                            );
                        }
                    }
                    allowed.extend(targets);
                    if VARIANTS[*variant].iter().any(|(_, k)| *k == Kind::Secret) {
                        allowed.insert(sut.secrets_dir(c));
                    }
                }
            }
            if !model.held.contains_key(&c) {
                assert!(!sut.secrets_dir(c).exists(), "c{c}: secrets tmpfs dir left");
            }
        }
        for m in sut.kernel.0.mounted() {
            assert!(
                allowed.contains(&m),
                "{} is mounted but no held container planned it (model {model:?})",
                m.display()
            );
        }
        assert_eq!(sut.iso.locks_in_use(), 0);
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    })]

    /// Random sequences of prepare, failing prepare, cleanup, crashes and recovery agree with
    /// the model, and no mount outlives the container that planned it.
    #[test]
    fn container_lifecycle_follows_the_model(sequential 1..30 => LifecycleTest);
}

/// A failing volume undoes the volumes mounted before it (regression anchor for the model).
#[test]
fn a_failing_prepare_rolls_back_without_root() {
    let sut = Sut::new();
    let err = sut
        .rt
        .block_on(sut.iso.prepare(&sut.config(0, FAILING)))
        .unwrap_err();
    assert!(err.to_string().contains("zz/boom"), "{err}");
    // `a` and `b` were mounted, then unmounted again.
    let binds = sut
        .kernel
        .0
        .calls()
        .iter()
        .filter(|c| matches!(c, berth_mount::fake::Recorded::BindInto { .. }))
        .count();
    assert_eq!(binds, 2);
    assert_eq!(sut.kernel.0.mounted(), Vec::<PathBuf>::new());
    assert!(sut.iso.load("c0").unwrap().is_none());
}

/// A crash after the first volume's mount, then recovery of a dead container: torn down.
#[test]
fn recovery_after_a_crash_tears_down_a_dead_container_without_root() {
    let mut sut = Sut::new();
    let cfg = sut.config(1, 0);
    // Points: intent 1, then (source, mounted) per volume: 3 is the first mount.
    sut.crash_during(3, |iso, rt| rt.block_on(iso.prepare(&cfg)).is_ok());
    assert_eq!(sut.kernel.0.mounted().len(), 1);
    let report = sut.rt.block_on(sut.iso.recover(&[], &[])).unwrap();
    assert_eq!(report.cleaned, ["c1"]);
    assert_eq!(sut.kernel.0.mounted(), Vec::<PathBuf>::new());
    assert!(sut.iso.load("c1").unwrap().is_none());
}
