//! The script port: the Gluu person-authentication hooks, their values, and the
//! [`HookContext`] through which a running hook reaches users, codes, SMS and the log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use std::net::IpAddr;

use crate::flow::backup;
use crate::flow::otp::{CodePolicy, OtpCheck, OtpError, OtpService};
use crate::flow::sending::{Refusal, SendError};
use crate::flow::throttle::Throttle;
use crate::ports::{
    is_phone_subject, AttributeChange, DirectoryError, SmsError, SmsMessage, SmsSender,
    UserDirectory, UserEntry, PHONE_SUBJECT_PREFIX,
};
use crate::secret::Secret;

/// Request parameters as a hook sees them: the first value of each name.
#[derive(Debug, Clone, Default)]
pub struct RequestParams {
    values: BTreeMap<String, ParamValue>,
    /// Where the request came from (after trusted proxies), for per-address limits.
    client_ip: Option<IpAddr>,
    /// The browser's Accept-Language, for messages in the user's language.
    accept_language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Plain(String),
    /// Reaches the script as an opaque value that prints as `***`.
    Secret(Secret),
}

/// User attribute that marks a disabled SMS factor; an operator removes it to reset
/// (`gatehouse users reset-sms NAME`).
pub const SMS_DISABLED_ATTRIBUTE: &str = "gatehouseSmsDisabled";
const DISABLED_MESSAGE: &str =
    "Sign-in by text message is disabled for this account. Contact your administrator.";

/// What the user reads when the destination country is not in `[sms] allowed_prefixes`.
const COUNTRY_REFUSED_MESSAGE: &str = "Text messages cannot be sent to this number.";

fn locked_message(seconds: u64) -> String {
    format!(
        "Too many wrong codes. Sign-in by text message is locked for {}.",
        in_minutes(seconds)
    )
}

/// "1 minute", "15 minutes": a wait rounded up to whole minutes, for messages to users.
fn in_minutes(seconds: u64) -> String {
    match seconds.div_ceil(60) {
        1 => "1 minute".to_owned(),
        minutes => format!("{minutes} minutes"),
    }
}

/// Parameters delivered to scripts as opaque secrets.
const SECRET_PARAMS: [&str; 1] = ["password"];
/// Parameters whose values are masked wherever a script logs them.
const MASKED_PARAMS: [&str; 6] = ["password", "passcode", "otp", "code", "pin", "backup_code"];

impl RequestParams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from name/value pairs, keeping the first value of each name (as Gluu does).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut params = RequestParams::new();
        for (name, value) in pairs {
            let name = name.into();
            if params.values.contains_key(&name) {
                continue;
            }
            let value = value.into();
            let value = if SECRET_PARAMS.contains(&name.as_str()) {
                ParamValue::Secret(Secret::new(value))
            } else {
                ParamValue::Plain(value)
            };
            params.values.insert(name, value);
        }
        params
    }

    pub fn with_client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    pub fn with_accept_language(mut self, value: Option<String>) -> Self {
        self.accept_language = value;
        self
    }

    pub fn accept_language(&self) -> Option<&str> {
        self.accept_language.as_deref()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ParamValue)> {
        self.values.iter()
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    fn masked_values(&self) -> impl Iterator<Item = String> + '_ {
        self.values
            .iter()
            .filter(|(name, _)| MASKED_PARAMS.contains(&name.as_str()))
            .map(|(_, v)| match v {
                ParamValue::Plain(s) => s.clone(),
                ParamValue::Secret(s) => s.expose().to_owned(),
            })
    }
}

/// One hook call with its arguments (the script's `config` map is added by the runtime).
#[derive(Debug, Clone, Copy)]
pub enum HookCall<'a> {
    Init,
    Destroy,
    GetApiVersion,
    IsValidAuthenticationMethod {
        usage: i64,
    },
    GetAlternativeAuthenticationMethod {
        usage: i64,
    },
    PrepareForStep {
        params: &'a RequestParams,
        step: u32,
    },
    Authenticate {
        params: &'a RequestParams,
        step: u32,
    },
    GetCountAuthenticationSteps,
    GetPageForStep {
        step: u32,
    },
    GetNextStep {
        params: &'a RequestParams,
        step: u32,
    },
    GetExtraParametersForStep {
        step: u32,
    },
    Logout {
        params: &'a RequestParams,
    },
}

impl HookCall<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            HookCall::Init => "init",
            HookCall::Destroy => "destroy",
            HookCall::GetApiVersion => "getApiVersion",
            HookCall::IsValidAuthenticationMethod { .. } => "isValidAuthenticationMethod",
            HookCall::GetAlternativeAuthenticationMethod { .. } => {
                "getAlternativeAuthenticationMethod"
            }
            HookCall::PrepareForStep { .. } => "prepareForStep",
            HookCall::Authenticate { .. } => "authenticate",
            HookCall::GetCountAuthenticationSteps => "getCountAuthenticationSteps",
            HookCall::GetPageForStep { .. } => "getPageForStep",
            HookCall::GetNextStep { .. } => "getNextStep",
            HookCall::GetExtraParametersForStep { .. } => "getExtraParametersForStep",
            HookCall::Logout { .. } => "logout",
        }
    }

    /// What an optional hook the script does not define returns. `None`: the hook is required.
    pub fn default_value(&self) -> Option<HookValue> {
        Some(match self {
            HookCall::Authenticate { .. } => return None,
            HookCall::Init
            | HookCall::Destroy
            | HookCall::IsValidAuthenticationMethod { .. }
            | HookCall::PrepareForStep { .. }
            | HookCall::Logout { .. } => HookValue::Bool(true),
            HookCall::GetApiVersion => HookValue::Int(11),
            HookCall::GetAlternativeAuthenticationMethod { .. } => HookValue::Unit,
            HookCall::GetCountAuthenticationSteps => HookValue::Int(1),
            HookCall::GetPageForStep { .. } => HookValue::Text(String::new()),
            HookCall::GetNextStep { .. } => HookValue::Int(-1),
            HookCall::GetExtraParametersForStep { .. } => HookValue::Unit,
        })
    }
}

/// A hook's return value, reduced to what the flow can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookValue {
    Unit,
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<String>),
    /// Any other type, by name: never success.
    Other(String),
}

impl HookValue {
    /// Only a boolean `true` counts as success.
    pub fn is_true(&self) -> bool {
        matches!(self, HookValue::Bool(true))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFailureKind {
    /// The script raised an error or misused the host API.
    Runtime,
    /// A sandbox limit (operations, sizes, depth) was hit.
    Limit,
    /// The hook ran past its wall-clock deadline.
    Timeout,
    /// No serving revision for this acr.
    NotLoaded,
}

/// A failed hook call; `message` already says `scripts/NAME.rhai:LINE:COL: ...` where known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{acr}: {hook}: {message}")]
pub struct HookError {
    pub acr: String,
    pub hook: &'static str,
    pub kind: HookFailureKind,
    pub message: String,
}

/// How the flow sees an acr in the script runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcrStatus {
    Unknown,
    Disabled,
    /// Configured and enabled but no revision could be loaded.
    Unavailable {
        reason: String,
    },
    Active {
        interactive: bool,
        level: i64,
    },
}

/// The port through which the flow runs scripts.
pub trait ScriptRuntime: Send + Sync {
    fn call(
        &self,
        acr: &str,
        call: HookCall<'_>,
        context: &Arc<HookContext>,
    ) -> Result<HookValue, HookError>;
    fn status(&self, acr: &str) -> AcrStatus;
    fn default_acr(&self) -> Option<String>;
    /// The serving revision's SMS provider and code policy, for a resend; `None` when the acr
    /// does not serve or its `ResendEnable` property is "false".
    fn resend_target(&self, acr: &str) -> Option<(Arc<dyn SmsSender>, CodePolicy)>;
    /// The serving revision's code policy (`[otp]` tightened by the script's entry).
    fn code_policy(&self, acr: &str) -> Option<CodePolicy>;
}

/// What hooks can use from the host, shared by every login.
pub struct HostServices {
    pub users: Arc<dyn UserDirectory>,
    pub otp: OtpService,
    /// Progressive delays after wrong passwords, per account and per client address.
    pub password_attempts: PasswordThrottle,
    /// Number normalisation, allowed countries and sending limits for every SMS.
    pub sending: SendGuard,
    /// The host named in the WebOTP last line of messages (`@HOST #CODE`), from the issuer;
    /// `None` leaves the line out.
    pub webotp_host: Option<String>,
    /// argon2id checks of backup codes (bounded like password checks).
    pub users_passwords: crate::users::password::PasswordChecker,
}

/// Sending guards (number normalisation, countries, limits) are part of the host services.
pub use crate::flow::sending::SendGuard;

pub struct PasswordThrottle {
    pub accounts: Throttle,
    pub addresses: Throttle,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0} is only available during a login, not in init/destroy")]
    NoLogin(&'static str),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Otp(#[from] OtpError),
    #[error(transparent)]
    Sms(#[from] SmsError),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    #[error(transparent)]
    Send(#[from] SendError),
}

/// Mutable per-login state a hook can read and change; the flow persists it between steps.
#[derive(Debug, Clone, Default)]
pub struct HookState {
    /// The user this login has identified (set by a successful password check or `set_user`).
    pub user: Option<String>,
    /// Named working parameters (Gluu's `identity.setWorkingParameter`).
    pub working: BTreeMap<String, String>,
    /// Message to show on the next page.
    pub message: Option<String>,
    /// Set when a sending limit refused a message: seconds until it may succeed (HTTP Retry-After).
    pub retry_after: Option<u64>,
    /// The last message sent with a code: its number and its text with the code as `{code}`,
    /// so that the host can resend a fresh code the same way.
    pub last_sms: Option<(String, String)>,
    /// What the host itself verified in this login, as RFC 8176 method names ("pwd", "sms",
    /// "otp"), in order: the ID token's `amr` is built from it.
    pub methods: Vec<String>,
}

/// Everything one hook call may touch. One per login request; never shared between logins.
pub struct HookContext {
    pub acr: String,
    /// Correlation id written on every log line of this login ("-" outside logins).
    pub correlation_id: String,
    services: Arc<HostServices>,
    /// The key issued codes are bound to; `None` in init/destroy.
    login_key: Option<String>,
    state: Mutex<HookState>,
    /// Values masked in anything this login logs: password, passcodes, issued codes.
    masked: Mutex<Vec<String>>,
    /// A message the host's policy sets (a lock): it wins over whatever the script says.
    policy_message: Mutex<Option<String>>,
    client_ip: Option<IpAddr>,
    accept_language: Option<String>,
    /// The code issued during this call, if any (never stored: only its hash is).
    issued: Mutex<Option<String>>,
}

impl HookContext {
    /// A context for `init`/`destroy`: no login, no codes.
    pub fn for_lifecycle(acr: &str, services: Arc<HostServices>) -> Arc<Self> {
        Arc::new(HookContext {
            acr: acr.to_owned(),
            correlation_id: "-".into(),
            services,
            login_key: None,
            state: Mutex::new(HookState::default()),
            masked: Mutex::new(Vec::new()),
            policy_message: Mutex::new(None),
            client_ip: None,
            accept_language: None,
            issued: Mutex::new(None),
        })
    }

    pub fn for_login(
        acr: &str,
        correlation_id: &str,
        login_key: &str,
        services: Arc<HostServices>,
        state: HookState,
        params: Option<&RequestParams>,
    ) -> Arc<Self> {
        let masked = params
            .map(|p| p.masked_values().filter(|v| !v.is_empty()).collect())
            .unwrap_or_default();
        Arc::new(HookContext {
            acr: acr.to_owned(),
            correlation_id: correlation_id.to_owned(),
            services,
            login_key: Some(login_key.to_owned()),
            state: Mutex::new(state),
            masked: Mutex::new(masked),
            policy_message: Mutex::new(None),
            client_ip: params.and_then(RequestParams::client_ip),
            accept_language: params.and_then(|p| p.accept_language().map(str::to_owned)),
            issued: Mutex::new(None),
        })
    }

    pub fn state(&self) -> MutexGuard<'_, HookState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn take_state(&self) -> HookState {
        let mut state = self.state().clone();
        if let Some(message) = self
            .policy_message
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            state.message = Some(message);
        }
        state
    }

    /// Sets the message of a policy decision (lock, disable); scripts cannot replace it.
    fn set_policy_message(&self, message: &str) {
        *self
            .policy_message
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(message.to_owned());
    }

    /// Replaces every sensitive value in `text` by `***`.
    pub fn mask(&self, text: &str) -> String {
        let masked = self.masked.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for value in masked.iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }

    fn add_masked(&self, value: &str) {
        if !value.is_empty() {
            self.masked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(value.to_owned());
        }
    }

    /// Writes a script's own line to the script log, masked, with acr and correlation id.
    pub fn log(&self, level: tracing::Level, text: &str) {
        let text = self.mask(text);
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        match level {
            tracing::Level::ERROR => tracing::error!(target: "script", acr, login, "{text}"),
            tracing::Level::WARN => tracing::warn!(target: "script", acr, login, "{text}"),
            tracing::Level::INFO => tracing::info!(target: "script", acr, login, "{text}"),
            tracing::Level::DEBUG => tracing::debug!(target: "script", acr, login, "{text}"),
            tracing::Level::TRACE => tracing::trace!(target: "script", acr, login, "{text}"),
        }
    }

    // ------------------------------------------------------------ users

    /// Checks a username and password; on success the login is bound to that user.
    /// After repeated failures the account and the client address must wait (doubling delays):
    /// a password tried too early is refused unchecked, with the same answer as a wrong one.
    pub fn authenticate_user(&self, username: &str, password: &Secret) -> Result<bool, HostError> {
        self.add_masked(password.expose());
        if username.is_empty() || password.is_empty() {
            return Ok(false);
        }
        let throttle = &self.services.password_attempts;
        let account_key = format!("pwfail:user:{username}");
        let address_key = self.client_ip.map(|ip| format!("pwfail:ip:{ip}"));
        let wait = throttle
            .accounts
            .wait(&account_key)?
            .into_iter()
            .chain(match &address_key {
                Some(key) => throttle.addresses.wait(key)?,
                None => None,
            });
        if let Some(seconds) = wait.max() {
            tracing::warn!(target: "server", acr = self.acr.as_str(), login = self.correlation_id.as_str(), "password not checked: too many recent failures for {username} or this address (wait {seconds} s)");
            return Ok(false);
        }
        let ok = self.services.users.verify_password(username, password)?;
        if ok {
            throttle.accounts.clear(&account_key)?;
            self.state().user = Some(username.to_owned());
            self.record_method("pwd");
        } else {
            throttle.accounts.fail(&account_key)?;
            if let Some(key) = &address_key {
                throttle.addresses.fail(key)?;
            }
        }
        Ok(ok)
    }

    /// Binds the login to an existing user without a password (Gluu's `authenticate(user)`).
    pub fn set_user(&self, username: &str) -> Result<bool, HostError> {
        if self.services.users.find(username)?.is_none() {
            return Ok(false);
        }
        self.state().user = Some(username.to_owned());
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
        Some(subject)
    }

    /// Notes a method the host verified (see [`HookState::methods`]).
    fn record_method(&self, method: &str) {
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

    pub fn update_user(&self, username: &str, change: AttributeChange) -> Result<(), HostError> {
        Ok(self.services.users.update(username, change)?)
    }

    // ------------------------------------------------------------ working parameters, message

    pub fn set_working(&self, name: &str, value: String) {
        self.state().working.insert(name.to_owned(), value);
    }

    pub fn working(&self, name: &str) -> Option<String> {
        self.state().working.get(name).cloned()
    }

    pub fn set_message(&self, message: &str) {
        self.state().message = Some(message.to_owned());
    }

    // ------------------------------------------------------------ codes and SMS

    /// The user's languages from Accept-Language, best first ("fr-CH" gives "fr-ch" then "fr").
    pub fn languages(&self) -> Vec<String> {
        let Some(header) = &self.accept_language else {
            return Vec::new();
        };
        let mut ranked: Vec<(f32, String)> = header
            .split(',')
            .filter_map(|part| {
                let mut pieces = part.trim().split(';');
                let tag = pieces.next()?.trim().to_ascii_lowercase();
                let quality = pieces
                    .find_map(|p| p.trim().strip_prefix("q=")?.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (!tag.is_empty() && tag != "*" && quality > 0.0).then_some((quality, tag))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        let mut languages = Vec::new();
        for (_, tag) in ranked {
            let base = tag.split('-').next().unwrap_or("").to_owned();
            for candidate in [tag, base] {
                if !candidate.is_empty() && !languages.contains(&candidate) {
                    languages.push(candidate);
                }
            }
        }
        languages
    }

    /// The WebOTP host, if messages end with `@HOST #CODE`.
    pub fn webotp_host(&self) -> Option<&str> {
        self.services.webotp_host.as_deref()
    }

    /// The disable threshold was reached: kept in the user directory (it outlives the state
    /// store) until an operator runs `gatehouse users reset-sms`. A phone-number subject has no
    /// entry: its disable is kept in the state store.
    fn disable_sms_factor(&self, user: &str) -> Result<(), HostError> {
        self.set_policy_message(DISABLED_MESSAGE);
        if is_phone_subject(user) {
            return Ok(self.services.otp.disable_without_directory(user)?);
        }
        let change = AttributeChange::Replace {
            attribute: SMS_DISABLED_ATTRIBUTE.into(),
            values: vec!["true".into()],
        };
        Ok(self.services.users.update(user, change)?)
    }

    /// Whether an operator reset is needed before this user's SMS factor works again.
    fn sms_disabled(&self, user: &str) -> Result<bool, HostError> {
        if is_phone_subject(user) {
            return Ok(self.services.otp.disabled_without_directory(user)?);
        }
        Ok(self
            .services
            .users
            .find(user)?
            .is_some_and(|u| u.first(SMS_DISABLED_ATTRIBUTE) == Some("true")))
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
        let key = self
            .login_key
            .as_deref()
            .ok_or(HostError::NoLogin("otp::issue"))?;
        let user = self.user();
        if let Some(user) = &user {
            if self.sms_disabled(user)? {
                self.set_policy_message(DISABLED_MESSAGE);
                return Err(OtpError::Disabled.into());
            }
        }
        match self
            .services
            .otp
            .issue(key, user.as_deref(), policy, length, ttl_seconds)
        {
            Ok(code) => {
                self.add_masked(&code);
                *self.issued.lock().unwrap_or_else(|p| p.into_inner()) = Some(code.clone());
                Ok(code)
            }
            Err(OtpError::Locked {
                retry_after_seconds,
            }) => {
                self.set_policy_message(&locked_message(retry_after_seconds));
                Err(OtpError::Locked {
                    retry_after_seconds,
                }
                .into())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Checks a backup code of the login's user (`gatehouse users backup-codes NAME`). Each code
    /// works once; a wrong one counts against the account like a wrong SMS code. Answers
    /// "accepted", "rejected", "locked", "disabled" or "not_backup" (not shaped like one: nothing
    /// counted).
    pub fn use_backup_code(&self, submitted: &str) -> Result<&'static str, HostError> {
        self.add_masked(submitted.trim());
        let Some(normalised) = backup::normalise(submitted) else {
            return Ok("not_backup");
        };
        let Some(user) = self.user() else {
            return Ok("rejected");
        };
        if self.sms_disabled(&user)? {
            self.set_policy_message(DISABLED_MESSAGE);
            return Ok("disabled");
        }
        if let crate::flow::otp::AccountState::Locked {
            retry_after_seconds,
        } = self.services.otp.account_state(&user)?
        {
            self.set_policy_message(&locked_message(retry_after_seconds));
            return Ok("locked");
        }
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        let hashes = self
            .find_user(&user)?
            .and_then(|u| u.attributes.get(backup::ATTRIBUTE).cloned())
            .unwrap_or_default();
        let matched = hashes.iter().find(|phc| {
            self.services
                .users_passwords
                .verify(Some(phc), &Secret::new(normalised.clone()))
        });
        match matched {
            Some(phc) => {
                let change = AttributeChange::Remove {
                    attribute: backup::ATTRIBUTE.into(),
                    value: phc.clone(),
                };
                self.services.users.update(&user, change)?;
                self.services.otp.record_success(&user)?;
                self.record_method("otp");
                tracing::warn!(target: "server", acr, login, "backup code used by {user}: {} left", hashes.len() - 1);
                Ok("accepted")
            }
            None => {
                tracing::info!(target: "server", acr, login, "backup code rejected for {user}");
                match self.services.otp.record_failure(&user)? {
                    Some(OtpCheck::Locked {
                        retry_after_seconds,
                    }) => {
                        self.set_policy_message(&locked_message(retry_after_seconds));
                        Ok("locked")
                    }
                    Some(OtpCheck::Disabled) => {
                        self.disable_sms_factor(&user)?;
                        Ok("disabled")
                    }
                    _ => Ok("rejected"),
                }
            }
        }
    }

    /// `number` masked the way this server shows numbers (`[sms] visible_digits`).
    /// A number this server can read is shown as its E.164 form, so "07700 900123" and
    /// "+44 7700 900123" look the same on a page.
    pub fn mask_phone(&self, number: &str) -> String {
        let guard = &self.services.sending;
        match guard.normalize(number) {
            Ok(e164) => guard.mask(&e164),
            Err(_) => guard.mask(number),
        }
    }

    /// A number as E.164 if this server accepts it (format, country allow-list), else `None`.
    /// A well-formed number in a country outside the list gets the host's message, which says
    /// so, instead of the script's (that would ask for a country code the user did type).
    pub fn normalize_phone(&self, raw: &str) -> Option<String> {
        let guard = &self.services.sending;
        let number = guard.normalize(raw).ok()?;
        if !guard.allowed(&number) {
            self.set_policy_message(COUNTRY_REFUSED_MESSAGE);
            return None;
        }
        Some(number)
    }

    /// Drops this login's code (e.g. no retries allowed after a wrong one).
    pub fn forget_code(&self) -> Result<(), HostError> {
        let key = self
            .login_key
            .as_deref()
            .ok_or(HostError::NoLogin("otp::forget"))?;
        Ok(self.services.otp.forget(key)?)
    }

    pub fn verify_code(&self, passcode: &str) -> Result<OtpCheck, HostError> {
        self.add_masked(passcode.trim());
        let key = self
            .login_key
            .as_deref()
            .ok_or(HostError::NoLogin("otp::verify"))?;
        let user = self.user();
        if let Some(user) = &user {
            if self.sms_disabled(user)? {
                self.set_policy_message(DISABLED_MESSAGE);
                return Ok(OtpCheck::Disabled);
            }
        }
        let check = self.services.otp.verify(key, user.as_deref(), passcode)?;
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
            } => {
                self.set_policy_message(&locked_message(*retry_after_seconds));
                format!(
                    "refused, the SMS factor of this account is locked for {retry_after_seconds} s"
                )
            }
            OtpCheck::Disabled => {
                match &user {
                    Some(user) => self.disable_sms_factor(user)?,
                    None => self.set_policy_message(DISABLED_MESSAGE),
                }
                "rejected, the SMS factor of this account is now disabled until an operator resets it".to_owned()
            }
        };
        tracing::info!(target: "server", acr = self.acr.as_str(), login = self.correlation_id.as_str(), "passcode {outcome}");
        Ok(check)
    }

    /// Sends a text message through `sms` (the running script's provider); the log line names
    /// provider, masked number and message id, never the text.
    pub fn send_sms(&self, sms: &dyn SmsSender, to: &str, text: &str) -> Result<(), HostError> {
        let number = self.admit_sms(to)?;
        self.deliver_sms(sms, &number, to, text)
    }

    /// Parses the number (E.164, never guessed), checks the destination country and counts the
    /// send against every limit; the normalised number on success.
    pub fn admit_sms(&self, to: &str) -> Result<String, HostError> {
        let login_key = self
            .login_key
            .as_deref()
            .ok_or(HostError::NoLogin("sms::send"))?;
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        let guard = &self.services.sending;
        let number = match guard.normalize(to) {
            Ok(number) => number,
            Err(refusal) => {
                tracing::warn!(target: "server", acr, login, "sms refused: to={}: {refusal}", guard.mask(to));
                return Err(SendError::Refused(refusal).into());
            }
        };
        let masked_to = guard.mask(&number);
        if !guard.allowed(&number) {
            tracing::warn!(target: "server", acr, login, "sms refused: to={masked_to}: the destination country is not in [sms] allowed_prefixes");
            self.set_policy_message(COUNTRY_REFUSED_MESSAGE);
            return Err(SendError::Refused(Refusal::Country).into());
        }
        if let Err(error) = guard.admit(login_key, &number, self.client_ip) {
            if let SendError::Refused(Refusal::Throttled {
                what,
                retry_after_seconds,
            }) = &error
            {
                tracing::warn!(target: "server", acr, login, "sms refused: to={masked_to}: {what} (retry after {retry_after_seconds} s)");
                let message = if *retry_after_seconds == 0 {
                    "Too many codes were sent for this sign-in. Start again.".to_owned()
                } else {
                    format!(
                        "Too many codes were sent. Try again in {}.",
                        in_minutes(*retry_after_seconds)
                    )
                };
                self.set_policy_message(&message);
                self.state().retry_after = Some(*retry_after_seconds);
            }
            return Err(error.into());
        }
        Ok(number)
    }

    /// Hands an admitted message to the provider and logs the outcome (never the text).
    pub fn deliver_sms(
        &self,
        sms: &dyn SmsSender,
        number: &str,
        as_written: &str,
        text: &str,
    ) -> Result<(), HostError> {
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        let masked_to = self.services.sending.mask(number);
        let to = as_written;
        let number = number.to_owned();
        match sms.send(&SmsMessage {
            to: number.clone(),
            text: Secret::new(text),
        }) {
            Ok(receipt) => {
                let id = receipt.provider_message_id.as_deref().unwrap_or("-");
                tracing::info!(target: "server", acr, login, "sms sent: provider={} to={masked_to} status=accepted id={id}", sms.provider());
                if let Some(code) = self
                    .issued
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .filter(|c| text.contains(c.as_str()))
                {
                    self.state().last_sms = Some((number.clone(), text.replace(&code, "{code}")));
                }
                Ok(())
            }
            Err(error) => {
                let detail = self
                    .mask(&error.to_string())
                    .replace(&number, &masked_to)
                    .replace(to, &masked_to);
                tracing::warn!(target: "server", acr, login, "sms not sent: provider={} to={masked_to}: {detail}", sms.provider());
                Err(error.into())
            }
        }
    }
}
