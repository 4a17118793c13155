//! [`HookContext`]: everything a running hook may touch, one per hook call and never shared
//! between logins; and [`HostServices`], what every login shares. The host's policies (code
//! policy, account locks, sending limits, password delays) sit here, around the scripts: a script
//! can tighten them, never loosen them, and their messages replace the script's.
//!
//! By topic: `identity` (who signs in, the directory, working parameters), `codes` (one-time and
//! backup codes), `sms` (numbers and sending), `messages` (what users read).

mod codes;
mod identity;
pub mod messages;
mod sms;

pub use sms::RESEND_CODE_SLOT;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::base::password::PasswordChecker;
use crate::base::SharedClock;
use crate::flow::otp::{OtpError, OtpService};
use crate::flow::params::RequestParams;
use crate::flow::sending::{SendError, SendGuard};
use crate::flow::sms_factor::{FactorError, SmsFactor};
use crate::flow::throttle::Throttle;
use crate::ports::{DirectoryError, SmsError, StoreError, UserDirectory};

/// What hooks can use from the host, shared by every login.
pub struct HostServices {
    pub users: Arc<dyn UserDirectory>,
    pub otp: OtpService,
    /// Locks, disable and reset of each account's SMS factor.
    pub sms_factor: Arc<SmsFactor>,
    /// Progressive delays after wrong passwords, per account and per client address.
    pub password_attempts: PasswordThrottle,
    /// Number normalisation, allowed countries and sending limits for every SMS.
    pub sending: SendGuard,
    /// The host named in the WebOTP last line of messages (`@HOST #CODE`), from the issuer;
    /// `None` leaves the line out.
    pub webotp_host: Option<String>,
    /// The one argon2id gate (backup codes here; the directory's passwords share it).
    pub passwords: Arc<PasswordChecker>,
    pub clock: SharedClock,
    /// What one sign-in may keep in working parameters (`[sandbox] max_working_*`).
    pub working_limits: WorkingLimits,
    /// What the server counts (rendered by the admin listener's `/metrics`).
    pub metrics: Arc<crate::base::metrics::Metrics>,
}

/// Caps on a sign-in's working parameters, which live as long as the sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingLimits {
    pub max_count: usize,
    /// Names and values together.
    pub max_bytes: usize,
}

/// Delays after wrong passwords: strict per (account, address), per address, and a softer
/// per-account cap that a browser which signed in to the account before is not held by.
pub struct PasswordThrottle {
    pub pairs: Throttle,
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
    Store(#[from] StoreError),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("{0}")]
    WorkingLimit(String),
    #[error("{0}")]
    Claim(String),
    #[error("attribute {0:?} is managed by the host: scripts may read it, not write it")]
    HostManaged(String),
    #[error("{0:?} is not the user of this sign-in: a script writes only its own user's attributes unless its entry sets write_other_users = true")]
    NotOwnUser(String),
}

/// Attributes only the host writes: the password, the SMS-factor disable mark, backup codes.
pub const HOST_MANAGED_ATTRIBUTES: [&str; 4] = [
    "password",
    crate::flow::sms_factor::SMS_DISABLED_ATTRIBUTE,
    crate::flow::sms_factor::SMS_FACTOR_ATTRIBUTE,
    crate::flow::backup::ATTRIBUTE,
];

impl HostError {
    /// The state store or the user directory did not answer: not the script's fault, and not
    /// a wrong answer of the user's.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            HostError::Directory(DirectoryError::Unavailable(_))
                | HostError::Store(_)
                | HostError::Otp(OtpError::Store(_))
                | HostError::Send(SendError::Store(_))
        )
    }
}

impl From<FactorError> for HostError {
    fn from(error: FactorError) -> Self {
        match error {
            FactorError::Store(e) => HostError::Store(e),
            FactorError::Directory(e) => HostError::Directory(e),
        }
    }
}

/// Per-login state a hook can read and change; the login's transaction keeps it between steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HookState {
    /// The user this login has identified (set by a successful password check or `set_user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Named working parameters (Gluu's `identity.setWorkingParameter`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub working: BTreeMap<String, String>,
    /// Message to show on the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Set when a sending limit refused a message: seconds until it may succeed (HTTP Retry-After).
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// The last message sent with a code: its number and its text with the code as `{code}`,
    /// so that the host can resend a fresh code the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sms: Option<(String, String)>,
    /// What the host itself verified in this login, as RFC 8176 method names ("pwd", "sms",
    /// "otp"), in order: the ID token's `amr` is built from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// The directory entry of `user` carried the SMS-factor disable mark when the login bound
    /// it: read once then, not on every guess.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sms_disabled_in_directory: bool,
    /// What the application asked for when this sign-in started.
    #[serde(default, skip_serializing_if = "SignInOrigin::is_empty")]
    pub origin: SignInOrigin,
    /// Claims the script adds to the ID token (`identity::claim`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, serde_json::Value>,
}

/// The authorization request a sign-in serves, as scripts may read it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SignInOrigin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `acr_values` as sent, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ui_locales: Vec<String>,
}

impl SignInOrigin {
    pub fn is_empty(&self) -> bool {
        *self == SignInOrigin::default()
    }
}

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
    /// Set by [`HookContext::refuse`].
    refused: std::sync::atomic::AtomicBool,
    client_ip: Option<IpAddr>,
    /// What per-address limits count this request under.
    limit_address: Option<IpAddr>,
    /// The account this browser signed in to before (device cookie).
    device_user: Option<String>,
    accept_language: Option<String>,
    /// The code issued during this call, if any (never stored: only its hash is).
    issued: Mutex<Option<String>>,
    /// Secret fields of this request (the password): they may leave only for the script's own
    /// destinations.
    submitted_secrets: Vec<String>,
    user_agent: Option<String>,
}

/// Shorter values are never masked (see [`HookContext::mask_values`]).
pub const MIN_MASKED_CHARS: usize = 4;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A hook that panicked mid-update leaves plain data behind: keep using it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            refused: Default::default(),
            client_ip: None,
            limit_address: None,
            device_user: None,
            accept_language: None,
            issued: Mutex::new(None),
            submitted_secrets: Vec::new(),
            user_agent: None,
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
            .map(|p| {
                p.masked_values()
                    .filter(|v| v.chars().count() >= MIN_MASKED_CHARS)
                    .collect()
            })
            .unwrap_or_default();
        Arc::new(HookContext {
            acr: acr.to_owned(),
            correlation_id: correlation_id.to_owned(),
            services,
            login_key: Some(login_key.to_owned()),
            state: Mutex::new(state),
            masked: Mutex::new(masked),
            policy_message: Mutex::new(None),
            refused: Default::default(),
            client_ip: params.and_then(RequestParams::client_ip),
            limit_address: params.and_then(RequestParams::limit_address),
            device_user: params.and_then(|p| p.device_user().map(str::to_owned)),
            accept_language: params.and_then(|p| p.accept_language().map(str::to_owned)),
            issued: Mutex::new(None),
            submitted_secrets: params.map(RequestParams::secret_values).unwrap_or_default(),
            user_agent: params.and_then(|p| p.user_agent().map(str::to_owned)),
        })
    }

    pub fn state(&self) -> MutexGuard<'_, HookState> {
        lock(&self.state)
    }

    /// The state after the call, with a policy message in place of the script's.
    pub fn take_state(&self) -> HookState {
        let mut state = self.state().clone();
        if let Some(message) = lock(&self.policy_message).clone() {
            state.message = Some(message);
        }
        state
    }

    /// Sets the message of a policy decision (lock, disable); scripts cannot replace it.
    fn set_policy_message(&self, message: &str) {
        *lock(&self.policy_message) = Some(message.to_owned());
    }

    /// Refuses what the script asked for by the account's policy (a locked or disabled SMS
    /// factor): the page shows `message`, and the hook's failure is the policy's, not a bug.
    fn refuse(&self, message: &str, error: impl Into<HostError>) -> HostError {
        self.set_policy_message(message);
        self.refused
            .store(true, std::sync::atomic::Ordering::Relaxed);
        error.into()
    }

    /// Whether the host refused something by policy during this context's hooks: a hook that
    /// then fails was stopped by the policy (logged as such, not counted as a script failure).
    pub fn refused_by_policy(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces every sensitive value in `text` by `***`.
    pub fn mask(&self, text: &str) -> String {
        let masked = lock(&self.masked);
        let mut out = text.to_owned();
        for value in masked.iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }

    /// Masks `value` in everything this call logs from now on. Values shorter than
    /// [`MIN_MASKED_CHARS`] are not masked: they would blank out ordinary words and numbers.
    fn add_masked(&self, value: &str) {
        if value.chars().count() >= MIN_MASKED_CHARS {
            let mut masked = lock(&self.masked);
            if !masked.iter().any(|m| m == value) {
                masked.push(value.to_owned());
            }
        }
    }

    /// Masks the script's secret property values in every line this call logs (the host hands
    /// them in when a hook starts).
    pub fn mask_values<'a>(&self, values: impl IntoIterator<Item = &'a str>) {
        for value in values {
            self.add_masked(value);
        }
    }

    fn login_key(&self, function: &'static str) -> Result<&str, HostError> {
        self.login_key
            .as_deref()
            .ok_or(HostError::NoLogin(function))
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

    /// The user's languages, best first: the application's `ui_locales`, then Accept-Language
    /// ("fr-CH" gives "fr-ch" then "fr").
    pub fn languages(&self) -> Vec<String> {
        let mut languages: Vec<String> = Vec::new();
        for tag in self.state().origin.ui_locales.clone() {
            let tag = tag.to_ascii_lowercase();
            let base = tag.split('-').next().unwrap_or("").to_owned();
            for candidate in [tag, base] {
                if !candidate.is_empty() && !languages.contains(&candidate) {
                    languages.push(candidate);
                }
            }
        }
        let Some(header) = &self.accept_language else {
            return languages;
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

    /// The client's address (after trusted proxies), if known.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    /// The current time, in milliseconds since the Unix epoch (the host's clock).
    pub fn now_ms(&self) -> u64 {
        self.services.clock.now_ms()
    }

    /// The request's secret fields (the submitted password).
    pub fn submitted_secrets(&self) -> &[String] {
        &self.submitted_secrets
    }

    /// The WebOTP host, if messages end with `@HOST #CODE`.
    pub fn webotp_host(&self) -> Option<&str> {
        self.services.webotp_host.as_deref()
    }
}
