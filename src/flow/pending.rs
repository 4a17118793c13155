//! Caps on sign-ins started and not yet finished: per client address (its limit bucket) and in
//! total, over the sign-in lifetime, so a flood of `/authorize` calls that never go on cannot
//! fill the state store. Each start is admitted and counted in one atomic update per counter.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::{store_keys, SharedClock};
use crate::ports::{StateStore, StoreError, StoreUpdate};

/// Starts within one window: counted from the window's start.
#[derive(Serialize, Deserialize, Default)]
struct Window {
    started_ms: u64,
    count: u32,
}

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

    /// Counts one start against `key` unless its window is full; the wait otherwise.
    fn take(&self, key: &str, limit: u32) -> Result<Option<u64>, StoreError> {
        let now = self.clock.now_ms();
        let window_ms = self.limits.window.as_millis() as u64;
        let mut wait = None;
        self.store
            .update(key, Some(self.limits.window), &mut |current| {
                let mut window: Window = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                if now >= window.started_ms + window_ms {
                    window = Window {
                        started_ms: now,
                        count: 0,
                    };
                }
                if window.count >= limit {
                    wait = Some((window.started_ms + window_ms - now).div_ceil(1000).max(1));
                    return StoreUpdate::Keep;
                }
                wait = None;
                window.count += 1;
                StoreUpdate::Put(serde_json::to_vec(&window).expect("windows serialise"))
            })?;
        Ok(wait)
    }

    fn give_back(&self, key: &str) -> Result<(), StoreError> {
        self.store.update(key, None, &mut |current| {
            let Some(mut window) = current.and_then(|b| serde_json::from_slice::<Window>(b).ok())
            else {
                return StoreUpdate::Keep;
            };
            window.count = window.count.saturating_sub(1);
            StoreUpdate::Put(serde_json::to_vec(&window).expect("windows serialise"))
        })
    }

    /// Gives back a start whose sign-in finished (the window it falls in, if a new one began).
    pub fn release(&self, start: CountedStart) -> Result<(), StoreError> {
        if let Some(ip) = start.from {
            self.give_back(&store_keys::pending_from_address(&ip))?;
        }
        self.give_back(&store_keys::pending_total())
    }

    /// Admits one sign-in start from `address` (its limit bucket), or says why not.
    pub fn admit(&self, address: Option<IpAddr>) -> Result<Option<PendingRefusal>, StoreError> {
        let address_key = address.map(|ip| store_keys::pending_from_address(&ip));
        if let Some(key) = &address_key {
            if let Some(retry_after_seconds) = self.take(key, self.limits.per_address)? {
                return Ok(Some(PendingRefusal::Address {
                    retry_after_seconds,
                }));
            }
        }
        if let Some(retry_after_seconds) =
            self.take(&store_keys::pending_total(), self.limits.total)?
        {
            if let Some(key) = &address_key {
                self.give_back(key)?;
            }
            return Ok(Some(PendingRefusal::Total {
                retry_after_seconds,
            }));
        }
        Ok(None)
    }
}
