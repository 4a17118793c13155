//! One-time codes and backup codes as scripts use them. Every answer is compared first and then
//! settled against the account's SMS factor ([`crate::flow::sms_factor`]): a locked or disabled
//! factor accepts nothing, and a code check costs two store operations (the code, the account).

use crate::base::Secret;
use crate::flow::backup;
use crate::flow::otp::{CodePolicy, OtpCheck, OtpError};
use crate::flow::sms_factor::{Answer, FactorState, Settled};
use crate::ports::AttributeChange;

use super::{messages, HookContext, HostError};

impl HookContext {
    /// The factor is disabled for this login's user as far as the login knows without asking
    /// anyone: the directory mark read when the user was bound.
    fn disabled_at_bind(&self) -> bool {
        self.state().sms_disabled_in_directory
    }

    /// The policy message for a settled answer.
    fn announce(&self, settled: Settled) {
        match settled {
            Settled::Locked {
                retry_after_seconds,
            } => self.set_policy_message(&messages::locked(retry_after_seconds)),
            Settled::Disabled => self.set_policy_message(messages::DISABLED),
            Settled::Accepted | Settled::Counted | Settled::Untouched => {}
        }
    }

    /// Issues a code bound to this login under `policy` (a script may only ask for longer codes
    /// or shorter lifetimes); the host keeps only a keyed hash of it. Refused while the user's
    /// SMS factor is locked or disabled, whatever path the login took.
    pub fn issue_code(
        &self,
        policy: &CodePolicy,
        length: Option<u32>,
        ttl_seconds: Option<u64>,
    ) -> Result<String, HostError> {
        let key = self.login_key("otp::issue")?;
        if let Some(user) = self.user() {
            if self.disabled_at_bind() {
                return Err(self.refuse(messages::DISABLED, OtpError::Disabled));
            }
            match self.services.sms_factor.state(&user)? {
                FactorState::Open => {}
                FactorState::Disabled => {
                    return Err(self.refuse(messages::DISABLED, OtpError::Disabled));
                }
                FactorState::Locked {
                    retry_after_seconds,
                } => {
                    return Err(self.refuse(
                        &messages::locked(retry_after_seconds),
                        OtpError::Locked {
                            retry_after_seconds,
                        },
                    ));
                }
            }
        }
        let code = self.services.otp.issue(key, policy, length, ttl_seconds)?;
        self.add_masked(&code);
        *super::lock(&self.issued) = Some(code.clone());
        Ok(code)
    }

    /// Checks a backup code of the login's user (`gatehouse users backup-codes NAME`). Each code
    /// works once; a wrong one counts against the account like a wrong SMS code. Answers
    /// "accepted", "rejected", "locked", "disabled" or "not_backup" (not shaped like one: nothing
    /// counted).
    pub fn use_backup_code(&self, submitted: &str) -> Result<&'static str, HostError> {
        self.add_masked(submitted.trim());
        let Some(normalized) = backup::normalize(submitted) else {
            return Ok("not_backup");
        };
        let Some(user) = self.user() else {
            return Ok("rejected");
        };
        if self.disabled_at_bind() {
            self.set_policy_message(messages::DISABLED);
            return Ok("disabled");
        }
        // argon2 is dear: a locked factor is refused before any hash is checked.
        match self.services.sms_factor.state(&user)? {
            FactorState::Open => {}
            FactorState::Disabled => {
                self.set_policy_message(messages::DISABLED);
                return Ok("disabled");
            }
            FactorState::Locked {
                retry_after_seconds,
            } => {
                self.set_policy_message(&messages::locked(retry_after_seconds));
                return Ok("locked");
            }
        }
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        let hashes = self
            .find_user(&user)?
            .and_then(|u| u.attributes.get(backup::ATTRIBUTE).cloned())
            .unwrap_or_default();
        let matched = hashes.iter().find(|phc| {
            self.services
                .passwords
                .verify(Some(phc), &Secret::new(normalized.clone()))
        });
        // A code is used up by taking it out of the directory, in one step: of two requests
        // racing with the same code only one takes it; the other's answer is a wrong one.
        let taken = match matched {
            Some(phc) => self
                .services
                .users
                .update(&user, AttributeChange::remove(backup::ATTRIBUTE, phc))?
                .then_some(phc),
            None => None,
        };
        let answer = if taken.is_some() {
            Answer::Right
        } else {
            Answer::Wrong
        };
        let settled = self.services.sms_factor.settle(&user, answer)?;
        self.announce(settled);
        match (settled, taken) {
            (Settled::Accepted, Some(_)) => {
                self.record_method("otp");
                tracing::warn!(target: "server", acr, login, "backup code used by {user}: {} left", hashes.len() - 1);
                Ok("accepted")
            }
            (Settled::Locked { .. }, _) => Ok("locked"),
            (Settled::Disabled, _) => Ok("disabled"),
            _ => {
                tracing::info!(target: "server", acr, login, "backup code rejected for {user}");
                Ok("rejected")
            }
        }
    }

    /// Drops this login's code (e.g. no retries allowed after a wrong one).
    pub fn forget_code(&self) -> Result<(), HostError> {
        let key = self.login_key("otp::forget")?;
        Ok(self.services.otp.forget(key)?)
    }

    /// Checks a passcode: one update of the login's code, one of the account's SMS factor.
    pub fn verify_code(&self, passcode: &str) -> Result<OtpCheck, HostError> {
        self.add_masked(passcode.trim());
        let key = self.login_key("otp::verify")?;
        let user = self.user();
        if user.is_some() && self.disabled_at_bind() {
            self.set_policy_message(messages::DISABLED);
            return Ok(OtpCheck::Disabled);
        }
        let check = match &user {
            None => OtpCheck::from(self.services.otp.verify(key, passcode)?),
            Some(user) => {
                // The code and the account's record in one atomic store update.
                let (compared, settled) =
                    self.services
                        .sms_factor
                        .check_code(&self.services.otp, key, user, passcode)?;
                self.announce(settled);
                match settled {
                    Settled::Locked {
                        retry_after_seconds,
                    } => OtpCheck::Locked {
                        retry_after_seconds,
                    },
                    Settled::Disabled => OtpCheck::Disabled,
                    Settled::Accepted | Settled::Counted | Settled::Untouched => {
                        OtpCheck::from(compared)
                    }
                }
            }
        };
        self.services.metrics.code_check(
            &self.acr,
            match &check {
                OtpCheck::Accepted => "right",
                OtpCheck::Rejected { .. } => "wrong",
                OtpCheck::Burned => "burned",
                OtpCheck::Expired => "expired",
                OtpCheck::NoCode => "no_code",
                OtpCheck::Locked { .. } => "locked",
                OtpCheck::Disabled => "disabled",
            },
        );
        let outcome = match &check {
            OtpCheck::Accepted => {
                let sent_by_sms = self.state().last_sms.is_some();
                self.record_method(if sent_by_sms { "sms" } else { "otp" });
                "accepted".to_owned()
            }
            OtpCheck::Rejected { remaining } => format!("rejected, {remaining} guesses left"),
            OtpCheck::Burned => "rejected, code burned after too many wrong guesses".to_owned(),
            OtpCheck::Expired => "rejected, code expired".to_owned(),
            OtpCheck::NoCode => "rejected, no code was issued for this login".to_owned(),
            OtpCheck::Locked {
                retry_after_seconds,
            } => format!(
                "refused, the SMS factor of this account is locked for {retry_after_seconds} s"
            ),
            OtpCheck::Disabled => {
                "rejected, the SMS factor of this account is now disabled until an operator resets it".to_owned()
            }
        };
        tracing::info!(target: "server", acr = self.acr.as_str(), login = self.correlation_id.as_str(), "passcode {outcome}");
        Ok(check)
    }
}
