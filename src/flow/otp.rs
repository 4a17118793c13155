//! One-time codes bound to a login: issued from the OS CSPRNG, kept only as a keyed hash,
//! compared in constant time, burned after too many wrong guesses.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::flow::random;
use crate::ports::{StateStore, StoreError, StoreUpdate};

pub const MIN_DIGITS: u32 = 4;
pub const MAX_DIGITS: u32 = 10;
/// No code lives longer than this, whatever a script asks.
pub const MAX_TTL_SECONDS: u64 = 600;
/// An expired code is remembered this much longer, so the user is told "expired", not "no code".
const EXPIRED_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    #[error("a code must have {MIN_DIGITS} to {MAX_DIGITS} digits, not {0}")]
    BadLength(u32),
    #[error("a code lifetime must be 1 to {MAX_TTL_SECONDS} seconds, not {0}")]
    BadLifetime(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] random::RandomError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtpCheck {
    Accepted,
    Rejected {
        remaining: u32,
    },
    /// Too many wrong guesses: the code no longer exists.
    Burned,
    Expired,
    NoCode,
}

#[derive(Serialize, Deserialize)]
struct IssuedCode {
    mac: Vec<u8>,
    digits: u32,
    expires_at_ms: u64,
    wrong_guesses: u32,
}

pub struct OtpService {
    store: Arc<dyn StateStore>,
    /// Key of the hash codes are kept under. Random per process: a shared store will need a shared key.
    key: [u8; 32],
    max_attempts: u32,
    default_ttl_seconds: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn store_key(login_key: &str) -> String {
    format!("otp:{login_key}")
}

impl OtpService {
    pub fn new(
        store: Arc<dyn StateStore>,
        max_attempts: u32,
        default_ttl_seconds: u64,
    ) -> Result<Self, OtpError> {
        Ok(OtpService {
            store,
            key: random::key32()?,
            max_attempts: max_attempts.max(1),
            default_ttl_seconds,
        })
    }

    fn mac(&self, login_key: &str, code: &str) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(login_key.as_bytes());
        mac.update(&[0]);
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Issues a new code for this login, replacing any earlier one.
    pub fn issue(
        &self,
        login_key: &str,
        digits: u32,
        ttl_seconds: Option<u64>,
    ) -> Result<String, OtpError> {
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits) {
            return Err(OtpError::BadLength(digits));
        }
        let ttl = ttl_seconds.unwrap_or(self.default_ttl_seconds);
        if ttl == 0 || ttl > MAX_TTL_SECONDS {
            return Err(OtpError::BadLifetime(ttl));
        }
        let code = random::digits(digits as usize)?;
        let record = IssuedCode {
            mac: self.mac(login_key, &code),
            digits,
            expires_at_ms: now_ms() + ttl * 1000,
            wrong_guesses: 0,
        };
        let bytes = serde_json::to_vec(&record).expect("code record serialises");
        self.store.put(
            &store_key(login_key),
            bytes,
            Duration::from_secs(ttl) + EXPIRED_GRACE,
        )?;
        Ok(code)
    }

    /// Checks a submitted passcode. Only exactly the issued digits (ASCII whitespace trimmed) match;
    /// every other answer counts as a wrong guess. The check and the guess count are one atomic update.
    pub fn verify(&self, login_key: &str, submitted: &str) -> Result<OtpCheck, OtpError> {
        let submitted = submitted.trim_matches(|c: char| c.is_ascii_whitespace());
        let candidate = self.mac(login_key, submitted);
        let mut outcome = OtpCheck::NoCode;
        self.store
            .update(&store_key(login_key), None, &mut |current| {
                let Some(record) =
                    current.and_then(|bytes| serde_json::from_slice::<IssuedCode>(bytes).ok())
                else {
                    outcome = OtpCheck::NoCode;
                    return StoreUpdate::Keep;
                };
                if now_ms() >= record.expires_at_ms {
                    outcome = OtpCheck::Expired;
                    return StoreUpdate::Delete;
                }
                let well_formed = submitted.len() == record.digits as usize
                    && submitted.bytes().all(|b| b.is_ascii_digit());
                let matches: bool = record.mac.ct_eq(&candidate).into();
                if well_formed && matches {
                    outcome = OtpCheck::Accepted;
                    return StoreUpdate::Delete;
                }
                let wrong = record.wrong_guesses + 1;
                if wrong >= self.max_attempts {
                    outcome = OtpCheck::Burned;
                    return StoreUpdate::Delete;
                }
                outcome = OtpCheck::Rejected {
                    remaining: self.max_attempts - wrong,
                };
                let updated = IssuedCode {
                    wrong_guesses: wrong,
                    ..record
                };
                StoreUpdate::Put(serde_json::to_vec(&updated).expect("code record serialises"))
            })?;
        Ok(outcome)
    }

    /// Forgets any code of this login (the login finished or was abandoned).
    pub fn forget(&self, login_key: &str) -> Result<(), OtpError> {
        Ok(self.store.delete(&store_key(login_key))?)
    }
}
