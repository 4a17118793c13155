//! Ports: the traits the login flow owns and the adapters implement
//! (user directory, state store, SMS sender, script runtime).
//!
//! Every port is synchronous: hooks run on blocking threads (they may wait on an SMS gateway),
//! so adapters may block; async callers go through `spawn_blocking`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::secret::Secret;

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
}

/// Subjects that are a verified phone number rather than a directory user start with this
/// (phone-number sign-in, WSO2's SendOTPDirectlyToMobile); directory names may not.
pub const PHONE_SUBJECT_PREFIX: &str = "tel:";

/// Whether `user` is a phone-number subject rather than a directory user.
pub fn is_phone_subject(user: &str) -> bool {
    user.starts_with(PHONE_SUBJECT_PREFIX)
}

/// A subject as log lines show it: a phone-number subject is masked like any number.
pub fn subject_for_log(user: &str) -> String {
    match user.strip_prefix(PHONE_SUBJECT_PREFIX) {
        Some(number) => format!("{PHONE_SUBJECT_PREFIX}{}", mask_phone(number)),
        None => user.to_owned(),
    }
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
    /// Applies one change and persists it before returning.
    fn update(&self, username: &str, change: AttributeChange) -> Result<(), DirectoryError>;
}

// ---------------------------------------------------------------- state store

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// What an [`StateStore::update`] closure decides.
pub enum StoreUpdate {
    Keep,
    Put(Vec<u8>),
    Delete,
}

/// Key/value state with expiry: login transactions, issued codes (and later counters).
/// Implementations must make `update` atomic per key, across processes for shared stores.
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
}

// ---------------------------------------------------------------- SMS

#[derive(Clone)]
pub struct SmsMessage {
    pub to: String,
    /// May contain a one-time code: never log it.
    pub text: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsReceipt {
    pub provider_message_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("{provider}: message refused: {message}")]
    Refused { provider: String, message: String },
    #[error("{provider}: not delivered: {message}")]
    Failed { provider: String, message: String },
    #[error("sending SMS is not allowed here ({0})")]
    NotAllowed(String),
}

pub trait SmsSender: Send + Sync {
    fn provider(&self) -> &str;
    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError>;
}

/// Masks a phone number for logs and pages: the country code and the last four digits stay.
///
/// ```
/// assert_eq!(gatehouse::ports::mask_phone("+447700900123"), "+44******0123");
/// assert_eq!(gatehouse::ports::mask_phone("+15551234567"), "+1******4567");
/// ```
pub fn mask_phone(number: &str) -> String {
    mask_phone_showing(number, 4)
}

/// Masks a phone number keeping the country code and the last `visible` digits (`[sms]
/// visible_digits`, at most 4).
///
/// ```
/// assert_eq!(gatehouse::ports::mask_phone_showing("+447700900123", 2), "+44********23");
/// assert_eq!(gatehouse::ports::mask_phone_showing("+447700900123", 0), "+44**********");
/// ```
pub fn mask_phone_showing(number: &str, visible: usize) -> String {
    let visible = visible.min(4);
    let chars: Vec<char> = number.chars().collect();
    let keep_head = match number.strip_prefix('+') {
        Some(rest) => 1 + country_code_len(rest),
        None => 0,
    };
    // Too short to show the tail and still hide at least three digits: hide everything.
    if chars.len() < keep_head + visible + 3 {
        return "*".repeat(chars.len());
    }
    let tail = chars.len() - visible;
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep_head || i >= tail { *c } else { '*' })
        .collect()
}

/// Length of the E.164 country calling code at the start of `digits` (ITU-T E.164 zones).
fn country_code_len(digits: &str) -> usize {
    let d: Vec<u8> = digits
        .bytes()
        .take(2)
        .map(|b| b.wrapping_sub(b'0'))
        .collect();
    match d.as_slice() {
        [1, ..] | [7, ..] => 1,
        [2, 0] | [2, 7] => 2,
        [3, 0..=4] | [3, 6] | [3, 9] => 2,
        [4, 0] | [4, 1] | [4, 3..=9] => 2,
        [5, 1..=8] => 2,
        [6, 0..=6] => 2,
        [8, 1] | [8, 2] | [8, 4] | [8, 6] => 2,
        [9, 0..=5] | [9, 8] => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::mask_phone;

    #[test]
    fn phone_masking_keeps_country_and_last_four() {
        assert_eq!(mask_phone("+447700900123"), "+44******0123");
        assert_eq!(mask_phone("+15551234567"), "+1******4567");
        assert_eq!(mask_phone("+353861234567"), "+353*****4567");
        assert_eq!(mask_phone("07700900123"), "*******0123");
        assert_eq!(mask_phone("12345"), "*****");
    }
}
