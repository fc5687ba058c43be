//! Crash hooks: the one test-failpoint type of berth's write-ahead managers.
//!
//! Every manager that writes an intent record before a side effect (the container isolator,
//! the CSI and Docker volume managers) calls its installed [`Hook`] at each such point with a
//! [`HookPoint`]: the intent is durable and the effect is next ([`Phase::Intent`]), the effect
//! returned and its outcome is not yet recorded ([`Phase::Done`]), or a step of a multi-step
//! operation finished ([`Phase::Step`]). Crash tests kill the process at the n-th point and
//! check that recovery leaks nothing; [`Failpoint`] is that counter (the isolator's
//! `BERTH_ISOLATOR_KILL_AT`). Without a hook a point costs one `None` check.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where a manager is in a write-ahead step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The intent record is durable; the side effect is about to happen.
    Intent,
    /// The side effect returned OK; its outcome is not yet recorded.
    Done,
    /// One step of a multi-step operation finished (e.g. a container's volume `index` got its
    /// source, was mounted, unmounted or released).
    Step,
}

/// A point a [`Hook`] sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookPoint<'a> {
    /// Intent, done or step.
    pub phase: Phase,
    /// What the step acts on, outermost first: `[volume id]` (CSI),
    /// `[driver, volume, mount ID]` (Docker volumes), `[container id]` (the isolator).
    pub subject: &'a [&'a str],
    /// The step: the intent (`NODE_STAGE`, `NODE_PUBLISH`, …), the call
    /// (`/VolumeDriver.Mount`, …), or the operation's step name (`preparing`, `mounted`, …).
    pub step: &'static str,
    /// The index of the item a [`Phase::Step`] is about (a volume in a container's plan).
    pub index: Option<usize>,
}

impl<'a> HookPoint<'a> {
    /// An intent point.
    #[must_use]
    pub fn intent(subject: &'a [&'a str], step: &'static str) -> Self {
        Self {
            phase: Phase::Intent,
            subject,
            step,
            index: None,
        }
    }

    /// A done point.
    #[must_use]
    pub fn done(subject: &'a [&'a str], step: &'static str) -> Self {
        Self {
            phase: Phase::Done,
            subject,
            step,
            index: None,
        }
    }

    /// A step point about item `index`.
    #[must_use]
    pub fn step(subject: &'a [&'a str], step: &'static str, index: usize) -> Self {
        Self {
            phase: Phase::Step,
            subject,
            step,
            index: Some(index),
        }
    }
}

/// A callback at every [`HookPoint`] (crash and fault injection in tests).
pub type Hook = Arc<dyn Fn(HookPoint<'_>) + Send + Sync>;

/// Calls `hook` (if any) at `point`.
pub fn fire(hook: Option<&Hook>, point: HookPoint<'_>) {
    if let Some(h) = hook {
        h(point);
    }
}

/// Kills (or aborts) the process at the n-th [`HookPoint`] it passes, counted over every hook
/// made from it (clones share the count).
#[derive(Debug, Clone)]
pub struct Failpoint {
    at: usize,
    seen: Arc<AtomicUsize>,
    action: fn(),
}

fn sigkill_self() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
}

impl Failpoint {
    /// SIGKILL at the `at`-th point (1-based; 0 never fires).
    #[must_use]
    pub fn sigkill_at(at: usize) -> Self {
        Self::with_action(at, sigkill_self)
    }

    /// `std::process::abort` at the `at`-th point (a crash inside a forked test child).
    #[must_use]
    pub fn abort_at(at: usize) -> Self {
        Self::with_action(at, || std::process::abort())
    }

    /// `action` at the `at`-th point.
    #[must_use]
    pub fn with_action(at: usize, action: fn()) -> Self {
        Self {
            at,
            seen: Arc::new(AtomicUsize::new(0)),
            action,
        }
    }

    /// [`Failpoint::sigkill_at`] the number in environment variable `var`, when it is set to
    /// one (e.g. `BERTH_ISOLATOR_KILL_AT`).
    #[must_use]
    pub fn from_env(var: &str) -> Option<Self> {
        let at = std::env::var(var).ok()?.parse().ok()?;
        Some(Self::sigkill_at(at))
    }

    /// Counts one point; fires at the chosen one.
    pub fn tick(&self) {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.at {
            (self.action)();
        }
    }

    /// Points counted so far.
    #[must_use]
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// A [`Hook`] that ticks this failpoint.
    #[must_use]
    pub fn hook(&self) -> Hook {
        let fp = self.clone();
        Arc::new(move |_| fp.tick())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FIRED: AtomicUsize = AtomicUsize::new(0);

    fn count() {
        FIRED.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn a_failpoint_fires_once_at_its_point_across_clones() {
        let fp = Failpoint::with_action(3, count);
        let h1 = fp.hook();
        let h2 = fp.clone().hook();
        let subject = ["v"];
        for h in [&h1, &h2, &h1, &h2, &h1] {
            fire(Some(h), HookPoint::intent(&subject, "NODE_STAGE"));
        }
        assert_eq!(FIRED.load(Ordering::SeqCst), 1);
        assert_eq!(fp.seen(), 5);
        fire(None, HookPoint::step(&subject, "mounted", 2));
    }
}
