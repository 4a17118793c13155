//! Caps on sign-ins started and not yet finished: per client address (its limit bucket) and in
//! total, over the sign-in lifetime, so a flood of `/authorize` calls that never go on cannot
//! fill the state store. Starts are counted in fixed windows as long as the sign-in lifetime,
//! with the store's atomic counter (`StateStore::add`): the total is one key that every node
//! updates at once, and a counter never loses to another writer where an optimistic update
//! would retry (and, under a burst from many nodes, give up).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::{store_keys, SharedClock};
use crate::ports::{counter_value, StateStore, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    pub per_address: u32,
    pub total: u32,
    /// The sign-in lifetime: a window lasts this long.
    pub window: Duration,
}

/// A start counted against the caps: released when its sign-in finishes, so the caps hold
/// sign-ins left unfinished, not an office's sign-ins behind one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedStart {
    /// The address's limit bucket it was counted under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<IpAddr>,
    /// The window it was counted in (a finish in a later window gives nothing back: that
    /// window's counts are gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<u64>,
}

/// Why a start was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingRefusal {
    /// Too many from this address: seconds until its window ends.
    Address { retry_after_seconds: u64 },
    /// Too many in all: the server is busy.
    Total { retry_after_seconds: u64 },
}

pub struct PendingGuard {
    store: Arc<dyn StateStore>,
    limits: PendingLimits,
    clock: SharedClock,
}

impl PendingGuard {
    pub fn new(store: Arc<dyn StateStore>, limits: PendingLimits, clock: SharedClock) -> Self {
        PendingGuard {
            store,
            limits,
            clock,
        }
    }

    /// The current window: its number, how long its counters must live, and the seconds until
    /// it ends (what a refused start waits).
    fn window(&self) -> (u64, Duration, u64) {
        let now = self.clock.now_ms();
        let length = (self.limits.window.as_millis() as u64).max(1000);
        let number = now / length;
        let ends = (number + 1) * length;
        // A second more than the window, so a finish at its very end still finds the counts.
        let ttl = Duration::from_millis(ends - now + 1000);
        (number, ttl, (ends - now).div_ceil(1000).max(1))
    }

    /// Sign-ins started and not finished in the current window (every node's, with a shared
    /// store).
    pub fn in_flight(&self) -> Result<u64, StoreError> {
        let (number, _, _) = self.window();
        let count = counter_value(
            self.store
                .get(&store_keys::pending_total(number))?
                .as_deref(),
        );
        Ok(count.max(0) as u64)
    }

    /// Admits one sign-in start from `address` (its limit bucket), or says why not. The
    /// address's count is taken first, then the total's; a count over its cap is given back
    /// at once (with the address's, for the total), so a refused start holds nothing.
    pub fn admit(
        &self,
        address: Option<IpAddr>,
    ) -> Result<Result<CountedStart, PendingRefusal>, StoreError> {
        let (number, ttl, wait) = self.window();
        let total = store_keys::pending_total(number);
        let address_key = address.map(|ip| store_keys::pending_from_address(&ip, number));
        if let Some(key) = &address_key {
            if self.store.add(key, 1, ttl)? > i64::from(self.limits.per_address) {
                self.store.add(key, -1, ttl)?;
                return Ok(Err(PendingRefusal::Address {
                    retry_after_seconds: wait,
                }));
            }
        }
        if self.store.add(&total, 1, ttl)? > i64::from(self.limits.total) {
            self.store.add(&total, -1, ttl)?;
            if let Some(key) = &address_key {
                self.store.add(key, -1, ttl)?;
            }
            return Ok(Err(PendingRefusal::Total {
                retry_after_seconds: wait,
            }));
        }
        Ok(Ok(CountedStart {
            from: address,
            window: Some(number),
        }))
    }

    /// Gives back a start whose sign-in finished, if its window is still the current one.
    pub fn release(&self, start: CountedStart) -> Result<(), StoreError> {
        let (number, ttl, _) = self.window();
        if start.window != Some(number) {
            return Ok(());
        }
        let mut keys = vec![store_keys::pending_total(number)];
        keys.extend(
            start
                .from
                .map(|ip| store_keys::pending_from_address(&ip, number)),
        );
        for key in keys {
            // A counter the store lost (a flushed Redis) must not go below zero.
            let left = self.store.add(&key, -1, ttl)?;
            if left < 0 {
                self.store.add(&key, -left, ttl)?;
            }
        }
        Ok(())
    }
}
