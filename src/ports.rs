//! Ports: the traits the login flow owns and the adapters implement
//! (user directory, state store, SMS sender, script runtime).
//!
//! Every port is synchronous: hooks run on blocking threads (they may wait on an SMS gateway),
//! so adapters may block; async callers go through `web::run_blocking` (request threads).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::base::Secret;

// ---------------------------------------------------------------- user directory

/// A user entry, LDAP-shaped: string attributes, each possibly multi-valued.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEntry {
    pub username: String,
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl UserEntry {
    pub fn first(&self, attribute: &str) -> Option<&str> {
        self.attributes
            .get(attribute)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeChange {
    /// Replace every value; an empty list removes the attribute.
    Replace {
        attribute: String,
        values: Vec<String>,
    },
    /// Add one value (nothing happens if it is already there).
    Add { attribute: String, value: String },
    /// Remove one value (nothing happens if it is not there).
    Remove { attribute: String, value: String },
}

impl AttributeChange {
    pub fn remove(attribute: &str, value: &str) -> AttributeChange {
        AttributeChange::Remove {
            attribute: attribute.to_owned(),
            value: value.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("user directory {path}: {message}")]
    Unreadable { path: String, message: String },
    #[error("user directory {path}: cannot save: {message}")]
    Write { path: String, message: String },
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error("attribute name {0:?} is not allowed (use letters, digits, '-', '_' or '.')")]
    BadAttributeName(String),
    #[error("attribute {0:?} is managed by the directory and cannot be changed by a script")]
    ProtectedAttribute(String),
    /// The directory server does not answer (or not in time): sign-ins wait for it.
    #[error("user directory unavailable: {0}")]
    Unavailable(String),
}

pub trait UserDirectory: Send + Sync {
    fn find(&self, username: &str) -> Result<Option<UserEntry>, DirectoryError>;
    fn find_by_attribute(
        &self,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<UserEntry>, DirectoryError>;
    /// Checks a password. Unknown users cost the same time as wrong passwords.
    fn verify_password(&self, username: &str, password: &Secret) -> Result<bool, DirectoryError>;
    /// Applies one change in one atomic step and persists it before returning; whether it
    /// changed anything (adding a value that is there or removing one that is not does not).
    /// Of two requests racing to remove one single-use value (a backup code), only one sees
    /// `true`.
    fn update(&self, username: &str, change: AttributeChange) -> Result<bool, DirectoryError>;
    /// Whether the directory answers now (for `/health`). Only a remote one can fail it.
    fn check(&self) -> Result<(), DirectoryError> {
        Ok(())
    }
    /// A network service: async callers move its calls off the async workers.
    fn is_remote(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- state store

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// The closure of [`StateStore::update_pair`]: both current values in, both fates out.
pub type PairDecision<'a> = dyn FnMut([Option<&[u8]>; 2]) -> [StoreUpdate; 2] + 'a;

/// What an [`StateStore::update`] closure decides.
pub enum StoreUpdate {
    Keep,
    Put(Vec<u8>),
    Delete,
}

/// A counter written by [`StateStore::add`] (missing or unreadable: 0).
pub fn counter_value(bytes: Option<&[u8]>) -> i64 {
    bytes
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Key/value state with expiry: login transactions, issued codes, sessions and every counter.
/// Key names come from [`crate::base::store_keys`].
///
/// The contract, for the memory store and for any shared store:
/// - `update` is atomic per key, across processes for shared stores.
/// - `decide` may run more than once for one `update` (a shared store retries when another
///   writer got there first): it must compute its answer from its argument alone and overwrite,
///   not accumulate, whatever it records outside.
/// - A value is gone once its TTL has passed; a `Put` from `update` keeps the key's remaining
///   lifetime unless a `ttl` is given.
pub trait StateStore: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError>;
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Reads the current value and replaces it with what `decide` returns, atomically.
    /// A `Put` keeps the key's remaining lifetime unless `ttl` is given.
    fn update(
        &self,
        key: &str,
        ttl: Option<Duration>,
        decide: &mut dyn FnMut(Option<&[u8]>) -> StoreUpdate,
    ) -> Result<(), StoreError>;
    /// [`StateStore::update`] of two keys in one atomic step (a shared store: one transaction,
    /// two round trips): `decide` sees both values and says what becomes of each; it may run
    /// more than once, like `update`'s.
    fn update_pair(
        &self,
        keys: [&str; 2],
        ttls: [Option<Duration>; 2],
        decide: &mut PairDecision<'_>,
    ) -> Result<(), StoreError>;
    /// Adds `delta` to the counter at `key` (a missing key counts 0) and returns the new value,
    /// atomically, and makes the key live `ttl` from now. For counters every node updates at
    /// once (the pending sign-ins of a window): a shared store does it in one step that never
    /// loses to another writer (Redis: INCRBY), where an optimistic `update` would retry.
    /// The value is the counter in decimal.
    fn add(&self, key: &str, delta: i64, ttl: Duration) -> Result<i64, StoreError> {
        let mut value = 0;
        self.update(key, Some(ttl), &mut |current| {
            value = counter_value(current) + delta;
            StoreUpdate::Put(value.to_string().into_bytes())
        })?;
        Ok(value)
    }
    /// Whether the store answers now (a shared store is a server that can be down). Only a
    /// [`StateStore::is_remote`] store can fail it.
    fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// A network service (its calls block on I/O): callers on the async runtime move them off
    /// the async workers; an in-process store is called in place.
    fn is_remote(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- SMS

#[derive(Clone)]
pub struct SmsMessage {
    pub to: String,
    /// May contain a one-time code: never log it.
    pub text: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SmsReceipt {
    pub provider_message_id: Option<String>,
    /// The provider that took the message, when a list of them was tried.
    pub sent_by: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("{provider}: message refused: {message}")]
    Refused { provider: String, message: String },
    /// The provider may or may not have taken the message (a timeout, a broken answer): it is
    /// never sent again within the same send, so that nobody gets two codes.
    #[error("{provider}: not delivered: {message}")]
    Failed { provider: String, message: String },
    /// The provider surely did not take the message (no connection, HTTP 5xx or 429 without a
    /// message id, its credentials refused): the next provider of a list may send it.
    #[error("{provider}: not sent: {message}")]
    NotSent { provider: String, message: String },
    #[error("sending SMS is not allowed here ({0})")]
    NotAllowed(String),
}

/// What `/health` and the metrics show of an SMS provider's circuit breaker.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderCircuit {
    pub provider: String,
    /// "closed" (sends go to it), "open" (skipped), "half_open" (the next send probes it).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_seconds: Option<u64>,
}

impl SmsError {
    /// Whether another provider may send the same message without risking a second one.
    pub fn surely_not_sent(&self) -> bool {
        matches!(self, SmsError::NotSent { .. })
    }
}

pub trait SmsSender: Send + Sync {
    fn provider(&self) -> &str;
    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError>;
}
