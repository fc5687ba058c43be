//! The retry policy of berth's plugin clients (CSI over gRPC, Docker volume plugins over
//! HTTP): exponential backoff, optionally with full jitter, under an overall budget; what is
//! retryable is the caller's call.
//!
//! After attempt `n` (0-based) the wait's ceiling is `min(max_backoff, initial_backoff * 2^n)`;
//! with [`RetryPolicy::full_jitter`] the wait is uniform in `[0, ceiling]`, else the ceiling.
//! No wait is started that would end at or after `overall` since the first attempt, and a zero
//! ceiling ([`RetryPolicy::none`]) never retries.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Backoff, jitter and budget of one logical call's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first wait; doubles after each attempt.
    pub initial_backoff: Duration,
    /// Cap of the ceiling.
    pub max_backoff: Duration,
    /// Budget: no wait is started that would end after this much time since the first
    /// attempt.
    pub overall: Duration,
    /// Full jitter: each wait uniform in `[0, ceiling]` instead of the ceiling.
    pub full_jitter: bool,
}

/// A call that failed for good: the last error and how many attempts were made.
#[derive(Debug)]
pub struct Exhausted<E> {
    /// The last attempt's error.
    pub error: E,
    /// Attempts made (at least 1).
    pub attempts: u32,
}

impl RetryPolicy {
    /// No retry at all.
    #[must_use]
    pub fn none() -> Self {
        Self {
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            overall: Duration::ZERO,
            full_jitter: false,
        }
    }

    /// The ceiling of the wait after attempt `attempt` (0-based):
    /// `min(max_backoff, initial_backoff * 2^attempt)`.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }

    /// The ceiling (same as [`RetryPolicy::ceiling`]; the wait without jitter).
    #[must_use]
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.ceiling(attempt)
    }

    /// A full-jitter wait: uniform in `[0, ceiling(attempt)]`.
    #[must_use]
    pub fn jittered(&self, attempt: u32) -> Duration {
        let cap = u64::try_from(self.ceiling(attempt).as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(fastrand::u64(0..=cap))
    }

    /// The wait after attempt `attempt`: jittered or the ceiling, as the policy says.
    #[must_use]
    pub fn wait(&self, attempt: u32) -> Duration {
        if self.full_jitter {
            self.jittered(attempt)
        } else {
            self.ceiling(attempt)
        }
    }

    /// The wait before the next attempt after attempt `attempt` failed `elapsed` after the
    /// first one started; `None` when the policy gives up.
    #[must_use]
    pub fn next_wait(&self, attempt: u32, elapsed: Duration) -> Option<Duration> {
        if self.ceiling(attempt).is_zero() {
            return None;
        }
        let w = self.wait(attempt);
        (elapsed.saturating_add(w) < self.overall).then_some(w)
    }

    /// Runs `op` (given the 0-based attempt number) until it succeeds, fails with an error
    /// `retryable` refuses, or the policy gives up; sleeps between attempts.
    ///
    /// # Errors
    /// The last error with the number of attempts.
    pub async fn run<T, E, F, Fut, C>(&self, mut op: F, mut retryable: C) -> Result<T, Exhausted<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: FnMut(&E, u32) -> bool,
    {
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let error = match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let attempts = attempt.saturating_add(1);
            let wait = if retryable(&error, attempts) {
                self.next_wait(attempt, start.elapsed())
            } else {
                None
            };
            let Some(wait) = wait else {
                return Err(Exhausted { error, attempts });
            };
            tokio::time::sleep(wait).await;
            attempt = attempts;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitter_stays_below_the_ceiling() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            overall: Duration::from_secs(30),
            full_jitter: false,
        };
        assert_eq!(p.wait(0), Duration::from_secs(1));
        assert_eq!(p.wait(3), Duration::from_secs(8));
        assert_eq!(p.wait(10), Duration::from_secs(30));
        assert_eq!(p.wait(u32::MAX), Duration::from_secs(30));
        // 1 + 2 + 4 + 8 = 15 s elapsed: the next 16 s wait would end at 31 s.
        assert_eq!(p.next_wait(4, Duration::from_secs(15)), None);
        assert_eq!(
            p.next_wait(2, Duration::from_secs(7)),
            Some(Duration::from_secs(4))
        );
        assert_eq!(RetryPolicy::none().next_wait(0, Duration::ZERO), None);
        let j = RetryPolicy {
            full_jitter: true,
            ..p
        };
        for a in 0..40 {
            assert!(j.wait(a) <= j.ceiling(a));
        }
    }

    #[test]
    fn run_retries_what_the_caller_says_and_counts_attempts() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            overall: Duration::from_secs(5),
            full_jitter: true,
        };
        rt.block_on(async {
            let ok = p
                .run(
                    |a| async move { if a < 3 { Err(a) } else { Ok(a) } },
                    |_, _| true,
                )
                .await;
            assert_eq!(ok.unwrap(), 3);
            let fatal = p
                .run(|a| async move { Err::<(), _>(a) }, |e, _| *e < 1)
                .await
                .unwrap_err();
            assert_eq!((fatal.error, fatal.attempts), (1, 2));
            let none = RetryPolicy::none()
                .run(|a| async move { Err::<(), _>(a) }, |_, _| true)
                .await
                .unwrap_err();
            assert_eq!(none.attempts, 1);
        });
    }
}
