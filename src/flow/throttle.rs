//! Progressive delays after failures (password step), counted per account and per client address
//! in the state store, so every process sharing the store sees the same counts.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::SharedClock;
use crate::ports::{StateStore, StoreError, StoreUpdate};

/// How failures turn into waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayPolicy {
    /// Failures allowed before any delay.
    pub free_failures: u32,
    /// The first delay; delays double from it up to `max_delay_seconds`.
    pub first_delay_seconds: u64,
    /// The longest delay; delays double from one second up to it.
    pub max_delay_seconds: u64,
    /// How long a failure is remembered.
    pub memory: Duration,
}

#[derive(Serialize, Deserialize, Default)]
struct Record {
    failures: u32,
    not_before_ms: u64,
}

impl Record {
    /// Counts a failure; past the free ones, each doubles the wait (from the first delay: 1 s,
    /// 2 s, 4 s, ... up to the cap).
    fn count_failure(&mut self, policy: &DelayPolicy, now_ms: u64) {
        self.failures += 1;
        if self.failures > policy.free_failures {
            let exponent = (self.failures - policy.free_failures - 1).min(20);
            let delay = policy
                .first_delay_seconds
                .max(1)
                .saturating_mul(1u64 << exponent)
                .min(policy.max_delay_seconds);
            self.not_before_ms = now_ms + delay * 1000;
        }
    }
}

pub struct Throttle {
    store: Arc<dyn StateStore>,
    policy: DelayPolicy,
    clock: SharedClock,
}

impl Throttle {
    pub fn new(store: Arc<dyn StateStore>, policy: DelayPolicy, clock: SharedClock) -> Self {
        Throttle {
            store,
            policy,
            clock,
        }
    }

    /// Seconds to wait before `key` may try again, if any.
    pub fn wait(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let record: Record = self
            .store
            .get(key)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let now = self.clock.now_ms();
        Ok((record.not_before_ms > now).then(|| (record.not_before_ms - now).div_ceil(1000)))
    }

    /// Counts an attempt before it is checked, in one atomic update: `Some(wait)` (nothing
    /// counted) while `key` must wait, else the attempt is counted as a failure now, so that a
    /// burst of attempts sent at once gets no more checks than the same attempts sent one by one.
    /// A right answer then calls [`Throttle::clear`] or [`Throttle::release`].
    pub fn reserve(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let policy = self.policy;
        let now = self.clock.now_ms();
        let mut wait = None;
        self.store
            .update(key, Some(policy.memory), &mut |current| {
                let mut record: Record = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                if record.not_before_ms > now {
                    wait = Some((record.not_before_ms - now).div_ceil(1000));
                    return StoreUpdate::Keep;
                }
                wait = None;
                record.count_failure(&policy, now);
                StoreUpdate::Put(serde_json::to_vec(&record).expect("throttle records serialise"))
            })?;
        Ok(wait)
    }

    /// Takes back one reserved attempt that turned out right (or was not made).
    pub fn release(&self, key: &str) -> Result<(), StoreError> {
        let policy = self.policy;
        self.store.update(key, None, &mut |current| {
            let Some(mut record) = current.and_then(|b| serde_json::from_slice::<Record>(b).ok())
            else {
                return StoreUpdate::Keep;
            };
            record.failures = record.failures.saturating_sub(1);
            if record.failures <= policy.free_failures {
                record.not_before_ms = 0;
            }
            // Nothing left to remember: no record (one fewer entry per client address).
            if record.failures == 0 && record.not_before_ms == 0 {
                return StoreUpdate::Delete;
            }
            StoreUpdate::Put(serde_json::to_vec(&record).expect("throttle records serialise"))
        })
    }

    pub fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.store.delete(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn delays_start_after_the_free_failures_and_double() {
        let clock = Arc::new(crate::base::ManualClock::new());
        let throttle = Throttle::new(
            Arc::new(MemoryStore::with_clock(clock.clone())),
            DelayPolicy {
                first_delay_seconds: 1,
                free_failures: 2,
                max_delay_seconds: 4,
                memory: Duration::from_secs(60),
            },
            clock.clone(),
        );
        let mut waits = Vec::new();
        for _ in 0..6 {
            // Each attempt is counted (nothing to wait for: the clock moved past the last wait).
            assert_eq!(throttle.reserve("k").unwrap(), None);
            let wait = throttle.wait("k").unwrap().unwrap_or(0);
            waits.push(wait);
            clock.advance(Duration::from_secs(wait));
        }
        assert_eq!(waits, [0, 0, 1, 2, 4, 4]);
        throttle.clear("k").unwrap();
        assert_eq!(throttle.wait("k").unwrap(), None);
    }
}
