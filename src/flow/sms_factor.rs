//! The SMS factor of an account: consecutive wrong codes, locks that double, the disable that
//! waits for an operator, and the reset. One owner for both kinds of subject: a directory user's
//! disable is also written to the directory (it outlives the state store); a phone-number subject
//! (`tel:+E164`) has no entry, so its disable lives in the state store only. The login flow, the
//! CLI (`gatehouse users reset-sms`) and later the admin API all go through [`SmsFactor`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::phone::is_phone_subject;
use crate::base::{store_keys, SharedClock};
use crate::config::OtpConfig;
use crate::flow::otp::{CodeCheck, OtpService};
use crate::ports::{
    AttributeChange, DirectoryError, StateStore, StoreError, StoreUpdate, UserDirectory, UserEntry,
};

/// User attribute that marks a disabled SMS factor; an operator removes it to reset
/// (`gatehouse users reset-sms NAME`).
pub const SMS_DISABLED_ATTRIBUTE: &str = "gatehouseSmsDisabled";

/// User attribute that keeps a directory user's count of wrong codes and lock (JSON), beside the
/// disable mark, so that a restart (an empty memory store) forgets neither.
pub const SMS_FACTOR_ATTRIBUTE: &str = "gatehouseSmsFactor";

/// How long an account's record is remembered without activity.
const ACCOUNT_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

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

impl AccountPolicy {
    pub fn from_config(config: &OtpConfig) -> AccountPolicy {
        AccountPolicy {
            lock_after: config.lock_after_failures as u32,
            lock_minutes: config.lock_minutes as u64,
            disable_after: config.disable_after_failures as u32,
        }
    }
}

/// The state-store record of one account's SMS factor.
#[derive(Serialize, Deserialize, Default, Clone)]
struct AccountRecord {
    consecutive_failures: u32,
    locks: u32,
    locked_until_ms: u64,
    /// Disabled until an operator resets it (also written to the directory for directory users).
    #[serde(default)]
    disabled: bool,
}

/// What an account's SMS factor allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorState {
    Open,
    Locked { retry_after_seconds: u64 },
    Disabled,
}

/// What one answer (a code or a backup code) did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Settled {
    /// The answer was right and the factor open: the count starts again.
    Accepted,
    /// The answer was wrong and counted; the factor stays open.
    Counted,
    /// Refused because the factor is locked (or this wrong answer locked it).
    Locked { retry_after_seconds: u64 },
    /// Refused because the factor is disabled (or this wrong answer disabled it).
    Disabled,
    /// Nothing was compared and the factor is open.
    #[default]
    Untouched,
}

/// An answer's verdict before the account has a say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Right,
    Wrong,
    /// Nothing was compared (no code, expired code): the account is not touched.
    NotCompared,
}

#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// What an operator's reset found and cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetReport {
    /// The directory entry carried the disable mark (removed).
    pub directory_mark_removed: bool,
    /// The state store held a count, a lock or a disable (removed).
    pub store_record_removed: bool,
}

/// What settling an answer decided, for what follows outside the store.
#[derive(Default)]
struct Decision {
    settled: Settled,
    /// What the update left, for the directory's copy: `Some(record)` written, `Some(None)`
    /// gone, `None` untouched.
    kept: Option<Option<AccountRecord>>,
}

pub struct SmsFactor {
    store: Arc<dyn StateStore>,
    users: Arc<dyn UserDirectory>,
    policy: AccountPolicy,
    clock: SharedClock,
    metrics: Arc<crate::base::metrics::Metrics>,
}

fn read(bytes: Option<&[u8]>) -> Option<AccountRecord> {
    bytes.and_then(|b| serde_json::from_slice(b).ok())
}

impl SmsFactor {
    pub fn new(
        store: Arc<dyn StateStore>,
        users: Arc<dyn UserDirectory>,
        policy: AccountPolicy,
        clock: SharedClock,
    ) -> Self {
        SmsFactor {
            store,
            users,
            policy,
            clock,
            metrics: Default::default(),
        }
    }

    /// Counts locks (and disables) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::base::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn state_of(&self, record: &AccountRecord) -> FactorState {
        self.state_at(record, self.clock.now_ms())
    }

    fn state_at(&self, record: &AccountRecord, now: u64) -> FactorState {
        if record.disabled {
            FactorState::Disabled
        } else if record.locked_until_ms > now {
            FactorState::Locked {
                retry_after_seconds: (record.locked_until_ms - now).div_ceil(1000),
            }
        } else {
            FactorState::Open
        }
    }

    /// Whether a directory entry carries the disable mark. Read once when a login binds its
    /// user, not on every guess.
    pub fn marked_in_directory(entry: &UserEntry) -> bool {
        entry.first(SMS_DISABLED_ATTRIBUTE) == Some("true")
    }

    /// The factor's state as the state store knows it (one read).
    pub fn state(&self, account: &str) -> Result<FactorState, FactorError> {
        let record = read(self.store.get(&store_keys::sms_factor(account))?.as_deref());
        Ok(record.map_or(FactorState::Open, |r| self.state_of(&r)))
    }

    /// The full state for an operator: the store's record and, for a directory user, the mark.
    pub fn status(&self, account: &str) -> Result<FactorState, FactorError> {
        if !is_phone_subject(account) {
            if let Some(entry) = self.users.find(account)? {
                if Self::marked_in_directory(&entry) {
                    return Ok(FactorState::Disabled);
                }
            }
        }
        self.state(account)
    }

    /// Settles one compared answer against the account in one atomic update: a locked or
    /// disabled factor refuses even a right answer; a right answer on an open factor starts the
    /// count again; a wrong one is counted and may lock or disable the factor. A disable of a
    /// directory user is also marked in the directory.
    pub fn settle(&self, account: &str, answer: Answer) -> Result<Settled, FactorError> {
        let now = self.clock.now_ms();
        let mut decision = Decision::default();
        self.store.update(
            &store_keys::sms_factor(account),
            Some(ACCOUNT_MEMORY),
            &mut |current| {
                let (decided, update) = self.decide(current, answer, now);
                decision = decided;
                update
            },
        )?;
        self.carry_out(account, answer, decision)
    }

    /// Compares a passcode with the login's code and settles the answer against the account,
    /// both records in one atomic store update (for Redis: one transaction, two round trips).
    pub fn check_code(
        &self,
        otp: &OtpService,
        login_key: &str,
        account: &str,
        submitted: &str,
    ) -> Result<(CodeCheck, Settled), FactorError> {
        let guess = otp.guess(login_key, submitted);
        let now = self.clock.now_ms();
        let mut outcome = (CodeCheck::NoCode, Answer::NotCompared, Decision::default());
        self.store.update_pair(
            [
                &store_keys::code(login_key),
                &store_keys::sms_factor(account),
            ],
            [None, Some(ACCOUNT_MEMORY)],
            &mut |[code, record]| {
                let (compared, code_update) = guess.judge(code);
                let answer = match compared {
                    CodeCheck::Accepted => Answer::Right,
                    CodeCheck::Rejected { .. } | CodeCheck::Burned => Answer::Wrong,
                    CodeCheck::Expired | CodeCheck::NoCode => Answer::NotCompared,
                };
                let (decision, record_update) = self.decide(record, answer, now);
                outcome = (compared, answer, decision);
                [code_update, record_update]
            },
        )?;
        let (compared, answer, decision) = outcome;
        Ok((compared, self.carry_out(account, answer, decision)?))
    }

    /// What an answer does to the account's record (its bytes in the store): the verdict, and
    /// what becomes of the record. A right answer on an open factor forgets the count; a wrong
    /// one counts and may lock or disable; nothing compared touches nothing.
    fn decide(&self, current: Option<&[u8]>, answer: Answer, now: u64) -> (Decision, StoreUpdate) {
        let existed = current.is_some();
        let mut record = read(current).unwrap_or_default();
        let policy = self.policy;
        let keep = |settled| {
            (
                Decision {
                    settled,
                    kept: None,
                },
                StoreUpdate::Keep,
            )
        };
        match (self.state_at(&record, now), answer) {
            (FactorState::Disabled, _) => keep(Settled::Disabled),
            (
                FactorState::Locked {
                    retry_after_seconds,
                },
                _,
            ) => keep(Settled::Locked {
                retry_after_seconds,
            }),
            (FactorState::Open, Answer::NotCompared) => keep(Settled::Untouched),
            (FactorState::Open, Answer::Right) if existed => (
                Decision {
                    settled: Settled::Accepted,
                    kept: Some(None),
                },
                StoreUpdate::Delete,
            ),
            (FactorState::Open, Answer::Right) => keep(Settled::Accepted),
            (FactorState::Open, Answer::Wrong) => {
                record.consecutive_failures += 1;
                let failures = record.consecutive_failures;
                let mut settled = Settled::Counted;
                if policy.disable_after > 0 && failures >= policy.disable_after {
                    record.disabled = true;
                    settled = Settled::Disabled;
                } else if policy.lock_after > 0 && failures.is_multiple_of(policy.lock_after) {
                    record.locks += 1;
                    let minutes = policy
                        .lock_minutes
                        .saturating_mul(1 << (record.locks - 1).min(16));
                    record.locked_until_ms = now + minutes * 60_000;
                    settled = Settled::Locked {
                        retry_after_seconds: minutes * 60,
                    };
                }
                let bytes = serde_json::to_vec(&record).expect("account record serialises");
                (
                    Decision {
                        settled,
                        kept: Some(Some(record)),
                    },
                    StoreUpdate::Put(bytes),
                )
            }
        }
    }

    /// After the store decided: a new disable is marked in the directory, and a directory
    /// user's copy of the record follows the store's.
    fn carry_out(
        &self,
        account: &str,
        answer: Answer,
        decision: Decision,
    ) -> Result<Settled, FactorError> {
        let newly_shut = answer == Answer::Wrong
            && decision.kept.is_some()
            && matches!(decision.settled, Settled::Locked { .. } | Settled::Disabled);
        if newly_shut {
            self.metrics.sms_factor_locked();
        }
        if decision.settled == Settled::Disabled && answer == Answer::Wrong {
            self.mark_disabled_in_directory(account)?;
        }
        if let Some(record) = decision.kept.filter(|_| !is_phone_subject(account)) {
            // The store decides; the directory's copy only carries the record over a restart,
            // so a directory that cannot be written now does not fail the answer.
            if let Err(error) = self.keep_in_directory(account, record.as_ref()) {
                tracing::warn!(target: "server", "the SMS-factor record of {account} is not kept in the directory: {error}");
            }
        }
        Ok(decision.settled)
    }

    /// Writes (or, with `None`, removes) a directory user's copy of the record.
    fn keep_in_directory(
        &self,
        account: &str,
        record: Option<&AccountRecord>,
    ) -> Result<(), FactorError> {
        let values = record
            .map(|r| vec![serde_json::to_string(r).expect("account record serialises")])
            .unwrap_or_default();
        let change = AttributeChange::Replace {
            attribute: SMS_FACTOR_ATTRIBUTE.into(),
            values,
        };
        match self.users.update(account, change) {
            // An unknown user (a guess at a name that does not exist) has nothing to keep.
            Err(DirectoryError::NoSuchUser(_)) => Ok(()),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }

    /// The disable outlives the state store for directory users: it is written to their entry.
    fn mark_disabled_in_directory(&self, account: &str) -> Result<(), FactorError> {
        if is_phone_subject(account) {
            return Ok(());
        }
        let change = AttributeChange::Replace {
            attribute: SMS_DISABLED_ATTRIBUTE.into(),
            values: vec!["true".into()],
        };
        self.users.update(account, change)?;
        Ok(())
    }

    /// A login bound a directory user whose entry carries no disable mark: an operator has
    /// reset the factor (perhaps from another process, which cannot reach this store), so a
    /// disable left in the store is stale and goes. Once per login, not per guess.
    ///
    /// And a store that lost the record (a restart of the in-memory store) gets it back from
    /// the directory's copy, so locks and counts survive restarts.
    pub fn follow_directory(&self, account: &str, entry: &UserEntry) -> Result<(), FactorError> {
        if is_phone_subject(account) {
            return Ok(());
        }
        let copy: Option<AccountRecord> = entry
            .first(SMS_FACTOR_ATTRIBUTE)
            .and_then(|json| serde_json::from_str(json).ok())
            .filter(|r: &AccountRecord| !r.disabled);
        self.store.update(
            &store_keys::sms_factor(account),
            Some(ACCOUNT_MEMORY),
            &mut |current| match (read(current), &copy) {
                (Some(record), _) if record.disabled => StoreUpdate::Delete,
                (None, Some(copy)) => {
                    StoreUpdate::Put(serde_json::to_vec(copy).expect("account record serialises"))
                }
                _ => StoreUpdate::Keep,
            },
        )?;
        Ok(())
    }

    /// The operator's reset: clears the count, the lock and the disable, in the directory and in
    /// the state store, for either kind of subject.
    pub fn reset(&self, account: &str) -> Result<ResetReport, FactorError> {
        let mut report = ResetReport::default();
        if !is_phone_subject(account) {
            let entry = self
                .users
                .find(account)?
                .ok_or_else(|| DirectoryError::NoSuchUser(account.to_owned()))?;
            if entry.attributes.contains_key(SMS_FACTOR_ATTRIBUTE) {
                self.users.update(
                    account,
                    AttributeChange::Replace {
                        attribute: SMS_FACTOR_ATTRIBUTE.into(),
                        values: Vec::new(),
                    },
                )?;
            }
            if entry.attributes.contains_key(SMS_DISABLED_ATTRIBUTE) {
                self.users.update(
                    account,
                    AttributeChange::Replace {
                        attribute: SMS_DISABLED_ATTRIBUTE.into(),
                        values: Vec::new(),
                    },
                )?;
                report.directory_mark_removed = true;
            }
        }
        let key = store_keys::sms_factor(account);
        let mut existed = false;
        self.store.update(&key, None, &mut |current| {
            existed = current.is_some();
            StoreUpdate::Delete
        })?;
        report.store_record_removed = existed;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::ManualClock;
    use crate::store::MemoryStore;

    struct NoUsers;
    impl UserDirectory for NoUsers {
        fn find(&self, _: &str) -> Result<Option<UserEntry>, DirectoryError> {
            Ok(None)
        }
        fn find_by_attribute(&self, _: &str, _: &str) -> Result<Vec<UserEntry>, DirectoryError> {
            Ok(Vec::new())
        }
        fn verify_password(
            &self,
            _: &str,
            _: &crate::base::Secret,
        ) -> Result<bool, DirectoryError> {
            Ok(false)
        }
        fn update(&self, _: &str, _: AttributeChange) -> Result<bool, DirectoryError> {
            Ok(false)
        }
    }

    fn factor(lock_after: u32, disable_after: u32) -> (SmsFactor, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let factor = SmsFactor::new(
            Arc::new(MemoryStore::with_clock(clock.clone())),
            Arc::new(NoUsers),
            AccountPolicy {
                lock_after,
                lock_minutes: 15,
                disable_after,
            },
            clock.clone(),
        );
        (factor, clock)
    }

    #[test]
    fn locks_double_then_the_factor_is_disabled() {
        let (factor, clock) = factor(2, 8);
        let mut locks = Vec::new();
        for _ in 0..8 {
            match factor.settle("tel:+447700900123", Answer::Wrong).unwrap() {
                Settled::Locked {
                    retry_after_seconds,
                } => {
                    locks.push(retry_after_seconds / 60);
                    // Wait the lock out, so the next wrong answer is counted.
                    clock.advance(Duration::from_secs(retry_after_seconds));
                }
                Settled::Disabled => locks.push(0),
                _ => {}
            }
        }
        assert_eq!(locks, [15, 30, 60, 0]);
        assert_eq!(
            factor.state("tel:+447700900123").unwrap(),
            FactorState::Disabled
        );
        // A right answer does not open a disabled factor; the operator's reset does.
        assert_eq!(
            factor.settle("tel:+447700900123", Answer::Right).unwrap(),
            Settled::Disabled
        );
        let report = factor.reset("tel:+447700900123").unwrap();
        assert!(report.store_record_removed);
        assert_eq!(
            factor.state("tel:+447700900123").unwrap(),
            FactorState::Open
        );
    }

    #[test]
    fn a_locked_factor_refuses_even_a_right_answer_until_the_lock_ends() {
        let (factor, clock) = factor(1, 100);
        assert!(matches!(
            factor.settle("alice", Answer::Wrong).unwrap(),
            Settled::Locked { .. }
        ));
        assert!(matches!(
            factor.settle("alice", Answer::Right).unwrap(),
            Settled::Locked { .. }
        ));
        clock.advance(Duration::from_secs(15 * 60));
        assert_eq!(
            factor.settle("alice", Answer::Right).unwrap(),
            Settled::Accepted
        );
        assert_eq!(factor.state("alice").unwrap(), FactorState::Open);
    }
}
