//! A circuit breaker per SMS provider: after `failures` failures within `window`, the provider
//! is skipped (open) for `cool_off`; then one send probes it (half-open): success closes the
//! breaker, failure opens it again. State is per node, in memory: a provider down is found
//! down by each node after a few failures of its own.

use std::sync::Mutex;

use serde::Serialize;

use crate::base::SharedClock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub window_ms: u64,
    pub cool_off_ms: u64,
}

/// What `/health` and the metrics show of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Sends go to the provider.
    Closed,
    /// Skipped until the cool-off ends.
    Open,
    /// The cool-off ended: the next send probes the provider.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Times (ms) of the failures in the current window, oldest first; at most `failures`.
    recent: Vec<u64>,
    /// While open: when the cool-off ends.
    open_until: Option<u64>,
    /// A probe is out (half-open): other sends skip the provider until it answers.
    probing: bool,
}

pub struct Breaker {
    policy: BreakerPolicy,
    clock: SharedClock,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, clock: SharedClock) -> Self {
        Breaker {
            policy,
            clock,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        let inner = self.inner();
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if self.clock.now_ms() < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Seconds until an open breaker lets a probe through.
    pub fn retry_in_seconds(&self) -> Option<u64> {
        let now = self.clock.now_ms();
        self.inner()
            .open_until
            .filter(|until| *until > now)
            .map(|until| (until - now).div_ceil(1000))
    }

    /// Whether a send may go to the provider now (taking the one probe when half-open).
    pub fn admit(&self) -> bool {
        let now = self.clock.now_ms();
        let mut inner = self.inner();
        match inner.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if inner.probing => false,
            Some(_) => {
                inner.probing = true;
                true
            }
        }
    }

    pub fn succeeded(&self) {
        let mut inner = self.inner();
        *inner = Inner::default();
    }

    /// Counts a failure; `true` when it opened the breaker.
    pub fn failed(&self) -> bool {
        let now = self.clock.now_ms();
        let policy = self.policy;
        let mut inner = self.inner();
        if inner.open_until.is_some() {
            // A failed probe: closed again only after another cool-off.
            inner.open_until = Some(now + policy.cool_off_ms);
            inner.probing = false;
            return false;
        }
        inner
            .recent
            .retain(|at| now.saturating_sub(*at) < policy.window_ms);
        inner.recent.push(now);
        if inner.recent.len() as u32 >= policy.failures.max(1) {
            inner.recent.clear();
            inner.open_until = Some(now + policy.cool_off_ms);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn opens_after_failures_in_a_window_and_probes_after_the_cool_off() {
        let clock = Arc::new(ManualClock::new());
        let breaker = Breaker::new(
            BreakerPolicy {
                failures: 3,
                window_ms: 60_000,
                cool_off_ms: 30_000,
            },
            clock.clone(),
        );
        // Failures spread wider than the window never open it.
        for _ in 0..5 {
            assert!(!breaker.failed());
            clock.advance(Duration::from_secs(61));
        }
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.failed());
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.admit());
        assert_eq!(breaker.retry_in_seconds(), Some(30));
        clock.advance(Duration::from_secs(30));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.admit(), "one probe");
        assert!(!breaker.admit(), "only one probe at a time");
        breaker.failed();
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        assert!(breaker.admit());
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit() && breaker.admit());
    }
}
