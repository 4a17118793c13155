//! Redis state store: what several nodes share (sign-ins, sessions, codes, locks, counters).
//! Native TTLs; `update` is optimistic (WATCH, read, MULTI/EXEC, retried when another client
//! changed the key in between), so its closure may run more than once, as the port allows.
//! Connections are pooled; every connect, read and write has a timeout, and a failed connection
//! is dropped rather than reused, so service resumes by itself when Redis is back.

use std::sync::Mutex;
use std::time::Duration;

use crate::ports::{PairDecision, StateStore, StoreError, StoreUpdate};

/// Backoff between optimistic attempts that lost to another client: a random wait below this,
/// doubled on each loss (up to `MAX_BACKOFF`), so that many clients on one hot key (the count
/// of pending sign-ins, which every node updates) spread out instead of colliding again.
const FIRST_BACKOFF: Duration = Duration::from_micros(100);
const MAX_BACKOFF: Duration = Duration::from_millis(25);
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 32;
/// A `Put` without TTL on a key that did not exist lives this long (as in the memory store).
const DEFAULT_TTL: Duration = Duration::from_secs(60);

pub struct RedisStore {
    client: redis::Client,
    /// Prepended to every key, so several deployments can share one database.
    prefix: String,
    timeout: Duration,
    idle: Mutex<Vec<redis::Connection>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl RedisStore {
    /// A store on `url` (`redis://HOST:PORT/DB`, `rediss://` for TLS). The URL is checked here;
    /// the server is reached on first use, so a node starts while Redis is still coming up.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("[store] url is not a Redis URL: {e}")))?;
        Ok(RedisStore {
            client,
            prefix: prefix.to_owned(),
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Whether Redis answers now (for `/health` and start-up).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(|con| redis::cmd("PING").query::<String>(con).map(|_| ()))
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn connect(&self) -> Result<redis::Connection, StoreError> {
        let con = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(unavailable)?;
        con.set_read_timeout(Some(self.timeout))
            .map_err(unavailable)?;
        con.set_write_timeout(Some(self.timeout))
            .map_err(unavailable)?;
        Ok(con)
    }

    /// Runs `work` on a pooled connection; a connection that failed is not given back.
    fn with_connection<T>(
        &self,
        work: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut con = match pooled {
            Some(con) => con,
            None => self.connect()?,
        };
        match work(&mut con) {
            Ok(value) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(con);
                }
                Ok(value)
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}

/// What an update of several keys decides, from their current values.
type KeysDecision<'a> = dyn FnMut(&[Option<Vec<u8>>]) -> Vec<StoreUpdate> + 'a;

/// One optimistic attempt on `keys` together, two round trips (WATCH + GET of each, then
/// MULTI..EXEC): `None` when another client changed one of them meanwhile. When nothing is to
/// be written no second trip is made: the WATCH left on the connection is harmless (plain
/// commands ignore it, and the next attempt on the connection clears it first).
fn attempt(
    con: &mut redis::Connection,
    keys: &[String],
    ttls: &[Option<Duration>],
    decide: &mut KeysDecision<'_>,
) -> redis::RedisResult<Option<()>> {
    let mut read = redis::pipe();
    // A WATCH an earlier attempt left on this connection (nothing to write) goes first, in the
    // same trip: only these keys are watched.
    read.cmd("UNWATCH").ignore();
    read.cmd("WATCH").arg(keys).ignore();
    for key in keys {
        read.cmd("GET").arg(key);
    }
    let current: Vec<Option<Vec<u8>>> = read.query(con)?;
    let decided = decide(&current);
    if decided.iter().all(|d| matches!(d, StoreUpdate::Keep)) {
        return Ok(Some(()));
    }
    let mut transaction = redis::pipe();
    transaction.atomic();
    for (((key, ttl), existing), decided) in keys.iter().zip(ttls).zip(&current).zip(decided) {
        match decided {
            StoreUpdate::Keep => {}
            StoreUpdate::Delete => {
                transaction.cmd("DEL").arg(key).ignore();
            }
            StoreUpdate::Put(value) => {
                let set = transaction.cmd("SET").arg(key).arg(value);
                match (ttl, existing.is_some()) {
                    (Some(ttl), _) => set.arg("PX").arg(millis(*ttl)),
                    // Keeps the key's remaining lifetime.
                    (None, true) => set.arg("KEEPTTL"),
                    (None, false) => set.arg("PX").arg(millis(DEFAULT_TTL)),
                }
                .ignore();
            }
        }
    }
    // EXEC answers nil when a watched key changed: the caller reads again.
    transaction.query::<Option<()>>(con)
}

impl RedisStore {
    /// Optimistic update of `keys` together, retried while other clients get in first: after
    /// each lost attempt a random wait that doubles, until the store's timeout has passed.
    fn update_keys(
        &self,
        keys: &[String],
        ttls: &[Option<Duration>],
        decide: &mut KeysDecision<'_>,
    ) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let done = self.with_connection(|con| {
                let result = attempt(con, keys, ttls, decide);
                if result.is_err() {
                    // Leave no WATCH behind on a connection that may still be pooled.
                    let _ = redis::cmd("UNWATCH").query::<()>(con);
                }
                result
            })?;
            if done.is_some() {
                return Ok(());
            }
            // The first loss retries at once; later ones wait a random part of the backoff.
            if attempts > 1 {
                let wait = Duration::from_micros(crate::base::random::below(
                    backoff.as_micros() as u64 + 1,
                ));
                if std::time::Instant::now() + wait >= deadline {
                    break;
                }
                std::thread::sleep(wait);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Err(StoreError::Unavailable(format!(
            "redis: the key kept changing under {attempts} attempts within {} ms",
            self.timeout.as_millis()
        )))
    }
}

impl StateStore for RedisStore {
    fn check(&self) -> Result<(), StoreError> {
        self.ping()
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(key);
        self.with_connection(|con| redis::cmd("GET").arg(&key).query(con))
    }

    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(key);
        self.with_connection(|con| {
            redis::cmd("SET")
                .arg(&key)
                .arg(value)
                .arg("PX")
                .arg(millis(ttl))
                .query::<()>(con)
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        self.with_connection(|con| redis::cmd("DEL").arg(&key).query::<()>(con))
    }

    fn update(
        &self,
        key: &str,
        ttl: Option<Duration>,
        decide: &mut dyn FnMut(Option<&[u8]>) -> StoreUpdate,
    ) -> Result<(), StoreError> {
        self.update_keys(&[self.key(key)], &[ttl], &mut |current| {
            vec![decide(current[0].as_deref())]
        })
    }

    fn add(&self, key: &str, delta: i64, ttl: Duration) -> Result<i64, StoreError> {
        let key = self.key(key);
        self.with_connection(|con| {
            // One round trip, applied as one: no WATCH, so no writer ever loses to another.
            let (value,): (i64,) = redis::pipe()
                .atomic()
                .cmd("INCRBY")
                .arg(&key)
                .arg(delta)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(millis(ttl))
                .ignore()
                .query(con)?;
            Ok(value)
        })
    }

    fn update_pair(
        &self,
        keys: [&str; 2],
        ttls: [Option<Duration>; 2],
        decide: &mut PairDecision<'_>,
    ) -> Result<(), StoreError> {
        self.update_keys(&keys.map(|k| self.key(k)), &ttls, &mut |current| {
            decide([current[0].as_deref(), current[1].as_deref()]).into()
        })
    }
}
