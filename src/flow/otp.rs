//! One-time codes bound to a login: issued from the OS CSPRNG under a [`CodePolicy`], kept only
//! as a keyed hash, compared in constant time, burned after too many wrong guesses. What a
//! wrong code does to the account (locks, disable) is [`crate::flow::sms_factor`]'s.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::base::{random, store_keys, SharedClock};
use crate::config::{CodeAlphabet, OtpConfig};
use crate::ports::{StateStore, StoreError, StoreUpdate};

pub const MIN_LENGTH: u32 = 4;
pub const MAX_LENGTH: u32 = 10;
/// No code lives longer than this, whatever the configuration or a script asks.
pub const MAX_TTL_SECONDS: u64 = 600;
/// An expired code is remembered this much longer, so the user is told "expired", not "no code".
const EXPIRED_GRACE: Duration = Duration::from_secs(120);
/// Letters and digits that cannot be mistaken for each other (no 0/O, 1/I/L); backup codes use
/// them too.
pub const ALPHANUMERIC: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// What codes look like and how long they last. A script may tighten it, never loosen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePolicy {
    pub length: u32,
    pub alphabet: CodeAlphabet,
    pub ttl_seconds: u64,
    pub max_attempts: u32,
}

impl CodePolicy {
    pub fn from_config(config: &OtpConfig) -> CodePolicy {
        CodePolicy {
            length: config.length as u32,
            alphabet: config.alphabet,
            ttl_seconds: config.ttl_seconds as u64,
            max_attempts: config.max_attempts as u32,
        }
    }
}

impl CodePolicy {
    /// The server's policy as a script's `[scripts.otp]` tightens it (validated at load).
    pub fn tightened(self, custom: Option<&crate::config::OtpOverride>) -> CodePolicy {
        let Some(custom) = custom else { return self };
        CodePolicy {
            length: custom
                .length
                .map_or(self.length, |l| (l as u32).max(self.length)),
            alphabet: custom.alphabet.unwrap_or(self.alphabet),
            ttl_seconds: custom
                .ttl_seconds
                .map_or(self.ttl_seconds, |t| (t as u64).min(self.ttl_seconds)),
            max_attempts: custom
                .max_attempts
                .map_or(self.max_attempts, |a| (a as u32).min(self.max_attempts)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtpError {
    #[error("a code must have {min} to {MAX_LENGTH} characters (the policy asks for at least {min}), not {asked}")]
    BadLength { asked: u32, min: u32 },
    #[error(
        "a code lifetime must be 1 to {max} seconds (the policy allows at most {max}), not {asked}"
    )]
    BadLifetime { asked: u64, max: u64 },
    #[error("SMS sign-in is locked for this account for {retry_after_seconds} more seconds")]
    Locked { retry_after_seconds: u64 },
    #[error("SMS sign-in is disabled for this account until an operator resets it")]
    Disabled,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Random(#[from] random::RandomError),
}

/// The verdict on a submitted code: the comparison ([`CodeCheck`]) as the account's SMS factor
/// settled it.
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
    /// The account's SMS factor is locked (or this wrong code locked it): refused, right or not.
    Locked {
        retry_after_seconds: u64,
    },
    /// The account's SMS factor is disabled (or this wrong code disabled it).
    Disabled,
}

/// The stored record of an issued code. One per sign-in waiting for its code, so it is kept
/// small: one-letter names, the MAC in base64.
#[derive(Serialize, Deserialize)]
struct IssuedCode {
    #[serde(rename = "m", with = "base64_bytes")]
    mac: Vec<u8>,
    #[serde(rename = "n")]
    length: u32,
    #[serde(rename = "a")]
    alphabet: CodeAlphabet,
    #[serde(rename = "x")]
    max_attempts: u32,
    #[serde(rename = "e")]
    expires_at_ms: u64,
    #[serde(rename = "w")]
    wrong_guesses: u32,
}

/// Bytes as unpadded base64url in a stored record.
mod base64_bytes {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = <&str>::deserialize(deserializer)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// What one comparison with the login's code found (before the account has a say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Accepted,
    Rejected {
        remaining: u32,
    },
    /// Too many wrong guesses: the code no longer exists.
    Burned,
    Expired,
    NoCode,
}

impl From<CodeCheck> for OtpCheck {
    fn from(check: CodeCheck) -> OtpCheck {
        match check {
            CodeCheck::Accepted => OtpCheck::Accepted,
            CodeCheck::Rejected { remaining } => OtpCheck::Rejected { remaining },
            CodeCheck::Burned => OtpCheck::Burned,
            CodeCheck::Expired => OtpCheck::Expired,
            CodeCheck::NoCode => OtpCheck::NoCode,
        }
    }
}

pub struct OtpService {
    store: Arc<dyn StateStore>,
    /// Key of the hash codes are kept under: `[otp] code_key`, or random for this process.
    key: Vec<u8>,
    clock: SharedClock,
}

fn random_code(length: u32, alphabet: CodeAlphabet) -> Result<String, random::RandomError> {
    match alphabet {
        CodeAlphabet::Numeric => random::digits(length as usize),
        CodeAlphabet::Alphanumeric => random::from_alphabet(length as usize, ALPHANUMERIC),
    }
}

fn well_formed(submitted: &str, length: u32, alphabet: CodeAlphabet) -> bool {
    submitted.len() == length as usize
        && match alphabet {
            CodeAlphabet::Numeric => submitted.bytes().all(|b| b.is_ascii_digit()),
            CodeAlphabet::Alphanumeric => submitted.bytes().all(|b| ALPHANUMERIC.contains(&b)),
        }
}

impl OtpService {
    /// `shared_key` is `[otp] code_key`; without it a random key for this process is used.
    pub fn new(
        store: Arc<dyn StateStore>,
        shared_key: Option<&crate::base::Secret>,
        clock: SharedClock,
    ) -> Result<Self, OtpError> {
        let key = match shared_key {
            Some(key) => key.expose().as_bytes().to_vec(),
            None => random::key32()?.to_vec(),
        };
        Ok(OtpService { store, key, clock })
    }

    fn mac(&self, login_key: &str, code: &str) -> Vec<u8> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(login_key.as_bytes());
        mac.update(&[0]);
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Issues a new code for this login, replacing any earlier one. `length` and `ttl_seconds`
    /// may only tighten `policy`. The caller has checked that the account may receive one.
    pub fn issue(
        &self,
        login_key: &str,
        policy: &CodePolicy,
        length: Option<u32>,
        ttl_seconds: Option<u64>,
    ) -> Result<String, OtpError> {
        let length = length.unwrap_or(policy.length);
        if length < policy.length.max(MIN_LENGTH) || length > MAX_LENGTH {
            return Err(OtpError::BadLength {
                asked: length,
                min: policy.length.max(MIN_LENGTH),
            });
        }
        let max_ttl = policy.ttl_seconds.min(MAX_TTL_SECONDS);
        let ttl = ttl_seconds.unwrap_or(max_ttl);
        if ttl == 0 || ttl > max_ttl {
            return Err(OtpError::BadLifetime {
                asked: ttl,
                max: max_ttl,
            });
        }
        let code = random_code(length, policy.alphabet)?;
        let record = IssuedCode {
            mac: self.mac(login_key, &code),
            length,
            alphabet: policy.alphabet,
            max_attempts: policy.max_attempts.max(1),
            expires_at_ms: self.clock.now_ms() + ttl * 1000,
            wrong_guesses: 0,
        };
        let bytes = serde_json::to_vec(&record).expect("code record serialises");
        self.store.put(
            &store_keys::code(login_key),
            bytes,
            Duration::from_secs(ttl) + EXPIRED_GRACE,
        )?;
        Ok(code)
    }

    /// Compares a submitted passcode with the login's code. Only exactly the issued characters
    /// (ASCII whitespace trimmed) match; every other answer is a wrong guess. The comparison and
    /// the guess count are one atomic update; a right or burned code is gone after it.
    pub fn verify(&self, login_key: &str, submitted: &str) -> Result<CodeCheck, OtpError> {
        let guess = self.guess(login_key, submitted);
        let mut outcome = CodeCheck::NoCode;
        self.store
            .update(&store_keys::code(login_key), None, &mut |current| {
                let (judged, update) = guess.judge(current);
                outcome = judged;
                update
            })?;
        Ok(outcome)
    }

    /// A submitted passcode, ready to be judged against the login's code record (by
    /// [`OtpService::verify`], or together with the account's record in one store update).
    pub fn guess(&self, login_key: &str, submitted: &str) -> Guess {
        let submitted = submitted.trim_matches(|c: char| c.is_ascii_whitespace());
        Guess {
            candidate: self.mac(login_key, submitted),
            submitted: submitted.to_owned(),
            now: self.clock.now_ms(),
        }
    }

    /// Forgets any code of this login (the login finished or was abandoned).
    pub fn forget(&self, login_key: &str) -> Result<(), OtpError> {
        Ok(self.store.delete(&store_keys::code(login_key))?)
    }
}

/// A submitted passcode and its MAC under the login's key.
pub struct Guess {
    candidate: Vec<u8>,
    submitted: String,
    now: u64,
}

impl Guess {
    /// The verdict on the stored code record, and what becomes of the record: a right,
    /// expired or burned code is gone; a wrong guess is counted.
    pub fn judge(&self, current: Option<&[u8]>) -> (CodeCheck, StoreUpdate) {
        let Some(record) =
            current.and_then(|bytes| serde_json::from_slice::<IssuedCode>(bytes).ok())
        else {
            return (CodeCheck::NoCode, StoreUpdate::Keep);
        };
        if self.now >= record.expires_at_ms {
            return (CodeCheck::Expired, StoreUpdate::Delete);
        }
        let matches: bool = record.mac.ct_eq(&self.candidate).into();
        if well_formed(&self.submitted, record.length, record.alphabet) && matches {
            return (CodeCheck::Accepted, StoreUpdate::Delete);
        }
        let wrong = record.wrong_guesses + 1;
        if wrong >= record.max_attempts {
            return (CodeCheck::Burned, StoreUpdate::Delete);
        }
        let updated = IssuedCode {
            wrong_guesses: wrong,
            ..record
        };
        (
            CodeCheck::Rejected {
                remaining: record.max_attempts - wrong,
            },
            StoreUpdate::Put(serde_json::to_vec(&updated).expect("code record serialises")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ManualClock;
    use crate::store::MemoryStore;

    fn service() -> (OtpService, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        (OtpService::new(store, None, clock.clone()).unwrap(), clock)
    }

    fn policy() -> CodePolicy {
        CodePolicy {
            length: 6,
            alphabet: CodeAlphabet::Numeric,
            ttl_seconds: 300,
            max_attempts: 5,
        }
    }

    #[test]
    fn a_code_works_once_and_expires() {
        let (otp, clock) = service();
        let code = otp.issue("login-1", &policy(), None, None).unwrap();
        assert_eq!(otp.verify("login-1", &code).unwrap(), CodeCheck::Accepted);
        assert_eq!(otp.verify("login-1", &code).unwrap(), CodeCheck::NoCode);
        let code = otp.issue("login-2", &policy(), None, Some(60)).unwrap();
        clock.advance(Duration::from_secs(61));
        assert_eq!(otp.verify("login-2", &code).unwrap(), CodeCheck::Expired);
    }

    #[test]
    fn wrong_guesses_burn_the_code() {
        let (otp, _) = service();
        let code = otp.issue("login-1", &policy(), None, None).unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for remaining in (1..5).rev() {
            assert_eq!(
                otp.verify("login-1", wrong).unwrap(),
                CodeCheck::Rejected { remaining }
            );
        }
        assert_eq!(otp.verify("login-1", wrong).unwrap(), CodeCheck::Burned);
        assert_eq!(otp.verify("login-1", &code).unwrap(), CodeCheck::NoCode);
    }

    #[test]
    fn tightening_only() {
        let (otp, _) = service();
        let policy = policy();
        assert!(matches!(
            otp.issue("l", &policy, Some(5), None),
            Err(OtpError::BadLength { .. })
        ));
        assert!(matches!(
            otp.issue("l", &policy, Some(11), None),
            Err(OtpError::BadLength { .. })
        ));
        assert!(matches!(
            otp.issue("l", &policy, None, Some(301)),
            Err(OtpError::BadLifetime { .. })
        ));
        assert_eq!(
            otp.issue("l", &policy, Some(10), Some(30)).unwrap().len(),
            10
        );
    }
}
