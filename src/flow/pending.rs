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

    /// One more start in the window `current`, unless it is full (then: the wait, untouched).
    fn counted(&self, current: Option<&[u8]>, limit: u32, now: u64) -> (Option<u64>, StoreUpdate) {
        let window_ms = self.limits.window.as_millis() as u64;
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
            let wait = (window.started_ms + window_ms - now).div_ceil(1000).max(1);
            return (Some(wait), StoreUpdate::Keep);
        }
        window.count += 1;
        let bytes = serde_json::to_vec(&window).expect("windows serialise");
        (None, StoreUpdate::Put(bytes))
    }

    /// One start fewer in the window `current`.
    fn given_back(current: Option<&[u8]>) -> StoreUpdate {
        let Some(mut window) = current.and_then(|b| serde_json::from_slice::<Window>(b).ok())
        else {
            return StoreUpdate::Keep;
        };
        window.count = window.count.saturating_sub(1);
        StoreUpdate::Put(serde_json::to_vec(&window).expect("windows serialise"))
    }

    /// Sign-ins started and not finished in the current window (every node's, with a shared
    /// store).
    pub fn in_flight(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let window_ms = self.limits.window.as_millis() as u64;
        Ok(self
            .store
            .get(&store_keys::pending_total())?
            .and_then(|b| serde_json::from_slice::<Window>(&b).ok())
            .filter(|w| now < w.started_ms + window_ms)
            .map_or(0, |w| u64::from(w.count)))
    }

    /// Gives back a start whose sign-in finished (the window it falls in, if a new one began):
    /// the address's count and the total together, in one store update.
    pub fn release(&self, start: CountedStart) -> Result<(), StoreError> {
        let total = store_keys::pending_total();
        match start.from {
            Some(ip) => self.store.update_pair(
                [&store_keys::pending_from_address(&ip), &total],
                [None, None],
                &mut |[address, all]| [Self::given_back(address), Self::given_back(all)],
            ),
            None => self.store.update(&total, None, &mut Self::given_back),
        }
    }

    /// Admits one sign-in start from `address` (its limit bucket), or says why not: the
    /// address's count and the total are taken together or not at all, in one store update.
    pub fn admit(&self, address: Option<IpAddr>) -> Result<Option<PendingRefusal>, StoreError> {
        let now = self.clock.now_ms();
        let window = Some(self.limits.window);
        let total = store_keys::pending_total();
        let mut refusal = None;
        match address {
            Some(ip) => self.store.update_pair(
                [&store_keys::pending_from_address(&ip), &total],
                [window, window],
                &mut |[address, all]| {
                    let (wait, address_update) =
                        self.counted(address, self.limits.per_address, now);
                    if let Some(retry_after_seconds) = wait {
                        refusal = Some(PendingRefusal::Address {
                            retry_after_seconds,
                        });
                        return [StoreUpdate::Keep, StoreUpdate::Keep];
                    }
                    let (wait, total_update) = self.counted(all, self.limits.total, now);
                    refusal = wait.map(|retry_after_seconds| PendingRefusal::Total {
                        retry_after_seconds,
                    });
                    if refusal.is_some() {
                        return [StoreUpdate::Keep, StoreUpdate::Keep];
                    }
                    [address_update, total_update]
                },
            )?,
            None => self.store.update(&total, window, &mut |all| {
                let (wait, update) = self.counted(all, self.limits.total, now);
                refusal = wait.map(|retry_after_seconds| PendingRefusal::Total {
                    retry_after_seconds,
                });
                update
            })?,
        }
        Ok(refusal)
    }
}
