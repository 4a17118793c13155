//! In-memory state store: one process, entries expire by TTL (read from the shared clock, so
//! tests can move time forward).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::base::{SharedClock, SystemClock};
use crate::ports::{PairDecision, StateStore, StoreError, StoreUpdate};

/// Milliseconds on the clock.
type Millis = u64;

/// A value and its expiry in one allocation (the expiry in the first 8 bytes): one table
/// slot is a key and a pointer, which matters with hundreds of thousands of sign-ins.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(value: &[u8], expires_at: Millis) -> Entry {
        let mut bytes = Vec::with_capacity(8 + value.len());
        bytes.extend_from_slice(&expires_at.to_le_bytes());
        bytes.extend_from_slice(value);
        Entry(bytes.into_boxed_slice())
    }

    fn expires_at(&self) -> Millis {
        let mut at = [0u8; 8];
        at.copy_from_slice(&self.0[..8]);
        Millis::from_le_bytes(at)
    }

    fn value(&self) -> &[u8] {
        &self.0[8..]
    }
}

/// Expired entries are dropped on access and swept every `SWEEP_EVERY` writes.
pub struct MemoryStore {
    entries: Mutex<Inner>,
    clock: SharedClock,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::with_clock(SystemClock::shared())
    }
}

fn plus(now: Millis, ttl: Duration) -> Millis {
    now.saturating_add(ttl.as_millis() as u64)
}

#[derive(Default)]
struct Inner {
    map: HashMap<Box<str>, Entry>,
    writes: u64,
}

const SWEEP_EVERY: u64 = 1024;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_clock(clock: SharedClock) -> Self {
        MemoryStore {
            entries: Mutex::new(Inner::default()),
            clock,
        }
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        let now = self.now();
        self.lock()
            .map
            .values()
            .filter(|e| e.expires_at() > now)
            .count()
    }

    /// Live entries and the bytes of their keys and values (what the records cost before the
    /// table's and the allocator's own overhead).
    pub fn footprint(&self) -> (usize, usize) {
        let now = self.now();
        let inner = self.lock();
        let live = inner.map.iter().filter(|(_, e)| e.expires_at() > now);
        live.fold((0, 0), |(count, bytes), (key, entry)| {
            (count + 1, bytes + key.len() + entry.value().len())
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn live(&mut self, key: &str, now: Millis) -> Option<&Entry> {
        if self.map.get(key).is_some_and(|e| e.expires_at() <= now) {
            self.map.remove(key);
        }
        self.map.get(key)
    }

    /// Carries out what an update decided for `key` (whose entry expired at `expires_at`).
    fn apply(
        &mut self,
        key: &str,
        ttl: Option<Duration>,
        expires_at: Option<Millis>,
        decided: StoreUpdate,
        now: Millis,
    ) {
        match decided {
            StoreUpdate::Keep => {}
            StoreUpdate::Delete => {
                self.map.remove(key);
            }
            StoreUpdate::Put(value) => {
                let expires_at = match (ttl, expires_at) {
                    (Some(ttl), _) => plus(now, ttl),
                    (None, Some(at)) => at,
                    (None, None) => plus(now, Duration::from_secs(60)),
                };
                self.map.insert(key.into(), Entry::new(&value, expires_at));
                self.wrote(now);
            }
        }
    }

    /// Drops expired entries now and then: after as many writes as a quarter of the entries
    /// (at least [`SWEEP_EVERY`]), so a sweep costs each write a constant share.
    fn wrote(&mut self, now: Millis) {
        self.writes += 1;
        if self.writes >= SWEEP_EVERY.max(self.map.len() as u64 / 4) {
            self.writes = 0;
            self.map.retain(|_, e| e.expires_at() > now);
        }
    }
}

impl StateStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .live(key, self.now())
            .map(|e| e.value().to_vec()))
    }

    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        inner
            .map
            .insert(key.into(), Entry::new(&value, plus(now, ttl)));
        inner.wrote(now);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().map.remove(key);
        Ok(())
    }

    fn update(
        &self,
        key: &str,
        ttl: Option<Duration>,
        decide: &mut dyn FnMut(Option<&[u8]>) -> StoreUpdate,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let current = inner.live(key, now).map(|e| (e.value(), e.expires_at()));
        let expires_at = current.map(|(_, at)| at);
        let decided = decide(current.map(|(v, _)| v));
        inner.apply(key, ttl, expires_at, decided, now);
        Ok(())
    }

    fn update_pair(
        &self,
        keys: [&str; 2],
        ttls: [Option<Duration>; 2],
        decide: &mut PairDecision<'_>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let mut inner = self.lock();
        let read = |inner: &mut Inner, key: &str| {
            inner
                .live(key, now)
                .map(|e| (e.value().to_vec(), e.expires_at()))
        };
        let first = read(&mut inner, keys[0]);
        let second = read(&mut inner, keys[1]);
        let [one, two] = decide([
            first.as_ref().map(|(v, _)| v.as_slice()),
            second.as_ref().map(|(v, _)| v.as_slice()),
        ]);
        inner.apply(keys[0], ttls[0], first.map(|(_, at)| at), one, now);
        inner.apply(keys[1], ttls[1], second.map(|(_, at)| at), two, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire() {
        let store = MemoryStore::new();
        store
            .put("a", b"1".to_vec(), Duration::from_millis(0))
            .unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        store
            .put("b", b"2".to_vec(), Duration::from_secs(60))
            .unwrap();
        assert_eq!(store.get("b").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn update_is_read_modify_write() {
        let store = MemoryStore::new();
        store
            .put("n", b"1".to_vec(), Duration::from_secs(60))
            .unwrap();
        store
            .update("n", None, &mut |v| {
                assert_eq!(v, Some(&b"1"[..]));
                StoreUpdate::Put(b"2".to_vec())
            })
            .unwrap();
        assert_eq!(store.get("n").unwrap(), Some(b"2".to_vec()));
        store
            .update("n", None, &mut |_| StoreUpdate::Delete)
            .unwrap();
        assert!(store.is_empty());
    }
}
