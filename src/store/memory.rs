//! In-memory state store: one process, entries expire by TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ports::{StateStore, StoreError, StoreUpdate};

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

/// Expired entries are dropped on access and swept every `SWEEP_EVERY` writes.
#[derive(Default)]
pub struct MemoryStore {
    entries: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    writes: u64,
}

const SWEEP_EVERY: u64 = 1024;

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .map
            .values()
            .filter(|e| e.expires_at > now)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn live(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        if self.map.get(key).is_some_and(|e| e.expires_at <= now) {
            self.map.remove(key);
        }
        self.map.get(key)
    }

    fn wrote(&mut self, now: Instant) {
        self.writes += 1;
        if self.writes % SWEEP_EVERY == 0 {
            self.map.retain(|_, e| e.expires_at > now);
        }
    }
}

impl StateStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .live(key, Instant::now())
            .map(|e| e.value.clone()))
    }

    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at: now + ttl,
            },
        );
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
        let now = Instant::now();
        let mut inner = self.lock();
        let current = inner
            .live(key, now)
            .map(|e| (e.value.as_slice(), e.expires_at));
        let expires_at = current.map(|(_, at)| at);
        match decide(current.map(|(v, _)| v)) {
            StoreUpdate::Keep => {}
            StoreUpdate::Delete => {
                inner.map.remove(key);
            }
            StoreUpdate::Put(value) => {
                let expires_at = match (ttl, expires_at) {
                    (Some(ttl), _) => now + ttl,
                    (None, Some(at)) => at,
                    (None, None) => now + Duration::from_secs(60),
                };
                inner
                    .map
                    .insert(key.to_owned(), Entry { value, expires_at });
                inner.wrote(now);
            }
        }
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
