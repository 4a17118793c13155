//! One-time codes bound to a login: issued from the OS CSPRNG under a [`CodePolicy`], kept only
//! as a keyed hash, compared in constant time, burned after too many wrong guesses; and the
//! account's SMS factor locked after too many consecutive wrong codes, across logins.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::{CodeAlphabet, OtpConfig};
use crate::flow::random;
use crate::ports::{StateStore, StoreError, StoreUpdate};

pub const MIN_LENGTH: u32 = 4;
pub const MAX_LENGTH: u32 = 10;
/// No code lives longer than this, whatever the configuration or a script asks.
pub const MAX_TTL_SECONDS: u64 = 600;
/// An expired code is remembered this much longer, so the user is told "expired", not "no code".
const EXPIRED_GRACE: Duration = Duration::from_secs(120);
/// How long an account's failure count is remembered without activity.
const ACCOUNT_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Letters and digits that cannot be mistaken for each other (no 0/O, 1/I/L).
const ALPHANUMERIC: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// What codes look like and how long they last. A script may tighten it, never loosen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePolicy {
    pub length: u32,
    pub alphabet: CodeAlphabet,
    pub ttl_seconds: u64,
    pub max_attempts: u32,
}

/// When an account's SMS factor locks, and when it is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountPolicy {
    /// Consecutive wrong codes that lock the factor (and every further multiple of it).
    pub lock_after: u32,
    /// First lock; each further lock doubles it.
    pub lock_minutes: u64,
    /// Consecutive wrong codes that disable the factor until an operator resets it.
    pub disable_after: u32,
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

impl AccountPolicy {
    pub fn from_config(config: &OtpConfig) -> AccountPolicy {
        AccountPolicy {
            lock_after: config.lock_after_failures as u32,
            lock_minutes: config.lock_minutes as u64,
            disable_after: config.disable_after_failures as u32,
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
    /// The account's SMS factor is locked: nothing was compared.
    Locked {
        retry_after_seconds: u64,
    },
    /// This wrong code reached the disable threshold.
    Disabled,
}

#[derive(Serialize, Deserialize)]
struct IssuedCode {
    mac: Vec<u8>,
    length: u32,
    alphabet: CodeAlphabet,
    max_attempts: u32,
    expires_at_ms: u64,
    wrong_guesses: u32,
}

/// Per-account record of consecutive wrong codes.
#[derive(Serialize, Deserialize, Default)]
struct AccountRecord {
    consecutive_failures: u32,
    locks: u32,
    locked_until_ms: u64,
}

/// What an account's state means right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    Open,
    Locked { retry_after_seconds: u64 },
}

pub struct OtpService {
    store: Arc<dyn StateStore>,
    /// Key of the hash codes are kept under: `[otp] code_key`, or random for this process.
    key: Vec<u8>,
    accounts: AccountPolicy,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn code_key(login_key: &str) -> String {
    format!("otp:{login_key}")
}

fn account_key(account: &str) -> String {
    format!("smsfactor:{account}")
}

fn disabled_key(account: &str) -> String {
    format!("smsfactor-off:{account}")
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
        accounts: AccountPolicy,
        shared_key: Option<&crate::secret::Secret>,
    ) -> Result<Self, OtpError> {
        let key = match shared_key {
            Some(key) => key.expose().as_bytes().to_vec(),
            None => random::key32()?.to_vec(),
        };
        Ok(OtpService {
            store,
            key,
            accounts,
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

    /// Whether the account's SMS factor is usable now.
    pub fn account_state(&self, account: &str) -> Result<AccountState, OtpError> {
        let record = self
            .store
            .get(&account_key(account))?
            .and_then(|b| serde_json::from_slice::<AccountRecord>(&b).ok())
            .unwrap_or_default();
        let now = now_ms();
        Ok(if record.locked_until_ms > now {
            AccountState::Locked {
                retry_after_seconds: (record.locked_until_ms - now).div_ceil(1000),
            }
        } else {
            AccountState::Open
        })
    }

    /// Issues a new code for this login, replacing any earlier one. `length` and `ttl_seconds`
    /// may only tighten `policy`.
    pub fn issue(
        &self,
        login_key: &str,
        account: Option<&str>,
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
        if let Some(account) = account {
            if let AccountState::Locked {
                retry_after_seconds,
            } = self.account_state(account)?
            {
                return Err(OtpError::Locked {
                    retry_after_seconds,
                });
            }
        }
        let code = random_code(length, policy.alphabet)?;
        let record = IssuedCode {
            mac: self.mac(login_key, &code),
            length,
            alphabet: policy.alphabet,
            max_attempts: policy.max_attempts.max(1),
            expires_at_ms: now_ms() + ttl * 1000,
            wrong_guesses: 0,
        };
        let bytes = serde_json::to_vec(&record).expect("code record serialises");
        self.store.put(
            &code_key(login_key),
            bytes,
            Duration::from_secs(ttl) + EXPIRED_GRACE,
        )?;
        Ok(code)
    }

    /// Checks a submitted passcode. Only exactly the issued characters (ASCII whitespace trimmed)
    /// match; every other answer is a wrong guess. The check and the guess count are one atomic
    /// update; a wrong guess also counts against `account`, whose SMS factor may lock.
    pub fn verify(
        &self,
        login_key: &str,
        account: Option<&str>,
        submitted: &str,
    ) -> Result<OtpCheck, OtpError> {
        if let Some(account) = account {
            if let AccountState::Locked {
                retry_after_seconds,
            } = self.account_state(account)?
            {
                return Ok(OtpCheck::Locked {
                    retry_after_seconds,
                });
            }
        }
        let submitted = submitted.trim_matches(|c: char| c.is_ascii_whitespace());
        let candidate = self.mac(login_key, submitted);
        let mut outcome = OtpCheck::NoCode;
        self.store
            .update(&code_key(login_key), None, &mut |current| {
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
                let matches: bool = record.mac.ct_eq(&candidate).into();
                if well_formed(submitted, record.length, record.alphabet) && matches {
                    outcome = OtpCheck::Accepted;
                    return StoreUpdate::Delete;
                }
                let wrong = record.wrong_guesses + 1;
                if wrong >= record.max_attempts {
                    outcome = OtpCheck::Burned;
                    return StoreUpdate::Delete;
                }
                outcome = OtpCheck::Rejected {
                    remaining: record.max_attempts - wrong,
                };
                let updated = IssuedCode {
                    wrong_guesses: wrong,
                    ..record
                };
                StoreUpdate::Put(serde_json::to_vec(&updated).expect("code record serialises"))
            })?;
        let Some(account) = account else {
            return Ok(outcome);
        };
        match outcome {
            OtpCheck::Accepted => {
                self.store.delete(&account_key(account))?;
                Ok(outcome)
            }
            OtpCheck::Rejected { .. } | OtpCheck::Burned => {
                Ok(self.record_failure(account)?.unwrap_or(outcome))
            }
            other => Ok(other),
        }
    }

    /// Counts one wrong code against the account; returns the lock or disable it caused.
    pub fn record_failure(&self, account: &str) -> Result<Option<OtpCheck>, OtpError> {
        let policy = self.accounts;
        let mut caused = None;
        self.store.update(
            &account_key(account),
            Some(ACCOUNT_MEMORY),
            &mut |current| {
                let mut record: AccountRecord = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or_default();
                record.consecutive_failures += 1;
                let failures = record.consecutive_failures;
                if policy.disable_after > 0 && failures >= policy.disable_after {
                    caused = Some(OtpCheck::Disabled);
                    // The disable itself is kept in the user directory; the count starts again after a reset.
                    return StoreUpdate::Delete;
                }
                if policy.lock_after > 0 && failures % policy.lock_after == 0 {
                    record.locks += 1;
                    let minutes = policy
                        .lock_minutes
                        .saturating_mul(1 << (record.locks - 1).min(16));
                    record.locked_until_ms = now_ms() + minutes * 60_000;
                    caused = Some(OtpCheck::Locked {
                        retry_after_seconds: minutes * 60,
                    });
                }
                StoreUpdate::Put(serde_json::to_vec(&record).expect("account record serialises"))
            },
        )?;
        Ok(caused)
    }

    /// Disables the factor of a subject that has no directory entry to mark (a phone-number
    /// sign-in): kept in the state store for the account memory period (30 days).
    pub fn disable_without_directory(&self, account: &str) -> Result<(), OtpError> {
        Ok(self
            .store
            .put(&disabled_key(account), b"1".to_vec(), ACCOUNT_MEMORY)?)
    }

    /// Whether [`OtpService::disable_without_directory`] holds for this subject.
    pub fn disabled_without_directory(&self, account: &str) -> Result<bool, OtpError> {
        Ok(self.store.get(&disabled_key(account))?.is_some())
    }

    /// A right answer by another factor (a backup code) resets the account's count.
    pub fn record_success(&self, account: &str) -> Result<(), OtpError> {
        Ok(self.store.delete(&account_key(account))?)
    }

    /// Forgets any code of this login (the login finished or was abandoned).
    pub fn forget(&self, login_key: &str) -> Result<(), OtpError> {
        Ok(self.store.delete(&code_key(login_key))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn service(lock_after: u32, disable_after: u32) -> OtpService {
        OtpService::new(
            Arc::new(MemoryStore::new()),
            AccountPolicy {
                lock_after,
                lock_minutes: 15,
                disable_after,
            },
            None,
        )
        .unwrap()
    }

    #[test]
    fn locks_double_then_the_factor_is_disabled() {
        let otp = service(2, 8);
        let mut locks = Vec::new();
        for _ in 0..8 {
            if let Some(caused) = otp.record_failure("alice").unwrap() {
                locks.push(caused);
            }
        }
        let minutes: Vec<u64> = locks
            .iter()
            .filter_map(|c| match c {
                OtpCheck::Locked {
                    retry_after_seconds,
                } => Some(retry_after_seconds / 60),
                _ => None,
            })
            .collect();
        assert_eq!(minutes, [15, 30, 60]);
        assert_eq!(locks.last(), Some(&OtpCheck::Disabled));
    }

    #[test]
    fn a_locked_account_gets_no_code_and_no_comparison() {
        let otp = service(1, 100);
        let policy = CodePolicy {
            length: 6,
            alphabet: CodeAlphabet::Numeric,
            ttl_seconds: 300,
            max_attempts: 5,
        };
        let code = otp
            .issue("login-1", Some("alice"), &policy, None, None)
            .unwrap();
        assert!(matches!(
            otp.verify("login-1", Some("alice"), "x").unwrap(),
            OtpCheck::Locked { .. }
        ));
        // Even the right code is not compared while locked.
        assert!(matches!(
            otp.verify("login-1", Some("alice"), &code).unwrap(),
            OtpCheck::Locked { .. }
        ));
        assert!(matches!(
            otp.issue("login-2", Some("alice"), &policy, None, None),
            Err(OtpError::Locked { .. })
        ));
        assert!(otp
            .issue("login-3", Some("bob"), &policy, None, None)
            .is_ok());
    }

    #[test]
    fn tightening_only() {
        let otp = service(10, 50);
        let policy = CodePolicy {
            length: 6,
            alphabet: CodeAlphabet::Numeric,
            ttl_seconds: 300,
            max_attempts: 5,
        };
        assert!(matches!(
            otp.issue("l", None, &policy, Some(5), None),
            Err(OtpError::BadLength { .. })
        ));
        assert!(matches!(
            otp.issue("l", None, &policy, Some(11), None),
            Err(OtpError::BadLength { .. })
        ));
        assert!(matches!(
            otp.issue("l", None, &policy, None, Some(301)),
            Err(OtpError::BadLifetime { .. })
        ));
        assert_eq!(
            otp.issue("l", None, &policy, Some(10), Some(30))
                .unwrap()
                .len(),
            10
        );
    }
}
