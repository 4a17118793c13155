//! Who signs in: password checks with their delays, binding a login to a directory user or to a
//! phone number, the directory facade scripts use, working parameters and page messages.

use crate::base::phone::PHONE_SUBJECT_PREFIX;
use crate::base::{store_keys, Secret};
use crate::flow::sms_factor::SmsFactor;
use crate::ports::{AttributeChange, UserEntry};

use super::{HookContext, HostError, HOST_MANAGED_ATTRIBUTES};

/// Claims the host puts in ID tokens itself.
pub const RESERVED_CLAIMS: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "at_hash",
    "c_hash",
    "sid",
    "jti",
    "nbf",
];
pub const MAX_CLAIMS: usize = 16;
pub const MAX_CLAIM_BYTES: usize = 1024;

impl HookContext {
    /// Checks a username and password; on success the login is bound to that user.
    /// After repeated failures the account and the client address must wait (doubling delays):
    /// a password tried too early is refused unchecked, with the same answer as a wrong one.
    pub fn authenticate_user(&self, username: &str, password: &Secret) -> Result<bool, HostError> {
        self.add_masked(password.expose());
        if username.is_empty() || password.is_empty() {
            return Ok(false);
        }
        let throttle = &self.services.password_attempts;
        // Strict per (account, address) and per address; softer per account, and not for a
        // browser that signed in to this account before: anyone can fail a named account's
        // password, and that must not lock its owner out.
        // Counted per account whatever the case it is typed in: an LDAP directory finds "Alice"
        // and "alice" alike, and each spelling must not get its own free failures.
        let account = username.to_lowercase();
        let trusted_device = self
            .device_user
            .as_deref()
            .is_some_and(|device_user| device_user.to_lowercase() == account);
        // (counter, key, whether a right password clears it: the account's own counters do;
        // the address keeps its other failures and only gives this attempt back).
        let mut counters: Vec<(&crate::flow::throttle::Throttle, String, bool)> = Vec::new();
        if let Some(ip) = self.limit_address {
            counters.push((
                &throttle.pairs,
                store_keys::password_failures_of_pair(&account, &ip),
                true,
            ));
            counters.push((
                &throttle.addresses,
                store_keys::password_failures_from_address(&ip),
                false,
            ));
        }
        if !trusted_device {
            counters.push((
                &throttle.accounts,
                store_keys::password_failures_of_account(&account),
                true,
            ));
        }
        // Each attempt is counted before the (slow) check, atomically: a burst sent at once gets
        // no more checks than the same attempts sent one by one.
        let mut reserved = Vec::new();
        let mut wait = None;
        for (counter, key, clears) in &counters {
            if let Some(seconds) = counter.reserve(key)? {
                wait = Some(seconds);
                break;
            }
            reserved.push((counter, key, clears));
        }
        if let Some(seconds) = wait {
            for (counter, key, _) in reserved {
                counter.release(key)?;
            }
            tracing::warn!(target: "server", acr = self.acr.as_str(), login = self.correlation_id.as_str(), "password not checked: too many recent failures for {username} or this address (wait {seconds} s)");
            return Ok(false);
        }
        let ok = self.services.users.verify_password(username, password)?;
        if ok {
            for (counter, key, clears) in reserved {
                if *clears {
                    counter.clear(key)?;
                } else {
                    counter.release(key)?;
                }
            }
            // Bound under the name the directory keeps, not as typed.
            let entry = self.services.users.find(username)?;
            let name = entry.as_ref().map_or(username, |e| e.username.as_str());
            self.bind_user(name, entry.as_ref())?;
            self.record_method("pwd");
        }
        Ok(ok)
    }

    /// Binds the login to a directory user, noting once whether its SMS factor is disabled.
    fn bind_user(&self, username: &str, entry: Option<&UserEntry>) -> Result<(), HostError> {
        let disabled = entry.is_some_and(SmsFactor::marked_in_directory);
        if let Some(entry) = entry.filter(|_| !disabled) {
            self.services.sms_factor.follow_directory(username, entry)?;
        }
        let mut state = self.state();
        state.user = Some(username.to_owned());
        state.sms_disabled_in_directory = disabled;
        Ok(())
    }

    /// Binds the login to an existing user without a password (Gluu's `authenticate(user)`).
    pub fn set_user(&self, username: &str) -> Result<bool, HostError> {
        let Some(entry) = self.services.users.find(username)? else {
            return Ok(false);
        };
        self.bind_user(&entry.username, Some(&entry))?;
        Ok(true)
    }

    pub fn user(&self) -> Option<String> {
        self.state().user.clone()
    }

    /// Binds the login to the holder of a phone number rather than to a directory user
    /// (WSO2's SendOTPDirectlyToMobile): the subject is `tel:` and the E.164 number, which no
    /// directory name can take. `None` if the number is malformed or its country not allowed.
    /// The login still needs a code sent to that number and verified before it completes.
    /// A login already bound to someone else is never rebound.
    pub fn set_phone_user(&self, raw: &str) -> Option<String> {
        let number = self.normalize_phone(raw)?;
        let subject = format!("{PHONE_SUBJECT_PREFIX}{number}");
        // A script that prints identity::user() must not put the number in the log.
        self.add_masked(&number);
        let mut state = self.state();
        if state.user.as_ref().is_some_and(|u| *u != subject) {
            return None;
        }
        state.user = Some(subject.clone());
        state.sms_disabled_in_directory = false;
        Some(subject)
    }

    /// Notes a method the host verified (see [`super::HookState::methods`]).
    pub(super) fn record_method(&self, method: &str) {
        let mut state = self.state();
        if !state.methods.iter().any(|m| m == method) {
            state.methods.push(method.to_owned());
        }
    }

    pub fn find_user(&self, username: &str) -> Result<Option<UserEntry>, HostError> {
        Ok(self.services.users.find(username)?)
    }

    pub fn find_users_by(&self, attribute: &str, value: &str) -> Result<Vec<UserEntry>, HostError> {
        Ok(self.services.users.find_by_attribute(attribute, value)?)
    }

    /// A script's write to the directory. Attributes the host manages are read-only to scripts,
    /// and only the sign-in's own user may be written unless the entry says
    /// `write_other_users = true`.
    pub fn update_user(
        &self,
        username: &str,
        change: AttributeChange,
        may_write_other_users: bool,
    ) -> Result<(), HostError> {
        let attribute = match &change {
            AttributeChange::Replace { attribute, .. }
            | AttributeChange::Add { attribute, .. }
            | AttributeChange::Remove { attribute, .. } => attribute,
        };
        if HOST_MANAGED_ATTRIBUTES
            .iter()
            .any(|managed| managed.eq_ignore_ascii_case(attribute))
        {
            return Err(HostError::HostManaged(attribute.clone()));
        }
        let own = self.user().is_some_and(|user| user == username);
        if !own && !may_write_other_users {
            return Err(HostError::NotOwnUser(username.to_owned()));
        }
        self.services.users.update(username, change)?;
        Ok(())
    }

    /// Sets a working parameter, within the sign-in's caps on their count and total size.
    pub fn set_working(&self, name: &str, value: String) -> Result<(), HostError> {
        let limits = self.services.working_limits;
        let mut state = self.state();
        let others: usize = state
            .working
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(n, v)| n.len() + v.len())
            .sum();
        let count = state.working.len() + usize::from(!state.working.contains_key(name));
        if count > limits.max_count {
            return Err(HostError::WorkingLimit(format!(
                "identity::set({name:?}): a sign-in keeps at most {} working parameters ([sandbox] max_working_parameters)",
                limits.max_count
            )));
        }
        if others + name.len() + value.len() > limits.max_bytes {
            return Err(HostError::WorkingLimit(format!(
                "identity::set({name:?}): a sign-in's working parameters may hold at most {} bytes in all ([sandbox] max_working_bytes)",
                limits.max_bytes
            )));
        }
        state.working.insert(name.to_owned(), value);
        Ok(())
    }

    pub fn working(&self, name: &str) -> Option<String> {
        self.state().working.get(name).cloned()
    }

    /// Adds a claim to the ID token of this sign-in (`identity::claim`): never one the host sets
    /// itself, at most [`MAX_CLAIMS`], each at most [`MAX_CLAIM_BYTES`] as JSON.
    pub fn add_claim(&self, name: &str, value: serde_json::Value) -> Result<(), HostError> {
        let refuse = |why: String| {
            Err(HostError::Claim(format!(
                "identity::claim({name:?}): {why}"
            )))
        };
        if RESERVED_CLAIMS.contains(&name) {
            return refuse("the host sets this claim; a script may not".into());
        }
        let well_named = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !well_named {
            return refuse("use 1-64 letters, digits, '_', '-', '.' or ':'".into());
        }
        if value.to_string().len() > MAX_CLAIM_BYTES {
            return refuse(format!(
                "a claim is at most {MAX_CLAIM_BYTES} bytes as JSON"
            ));
        }
        let mut state = self.state();
        if !state.claims.contains_key(name) && state.claims.len() >= MAX_CLAIMS {
            return refuse(format!("a sign-in adds at most {MAX_CLAIMS} claims"));
        }
        state.claims.insert(name.to_owned(), value);
        Ok(())
    }

    pub fn set_message(&self, message: &str) {
        self.state().message = Some(message.to_owned());
    }
}
