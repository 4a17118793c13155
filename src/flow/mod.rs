//! The login flow: the step engine that drives a script's hooks through the steps of a login,
//! keeping each login's state in the state store. No HTTP here.

pub mod backup;
pub mod contract;
pub mod host;
pub mod otp;
pub mod params;
pub mod pending;
pub mod script_port;
pub mod sending;
pub mod sms_factor;
pub mod throttle;
pub mod transaction;

use std::sync::Arc;
use std::time::Duration;

use host::{messages, HookContext, HookState, HostServices};
pub use params::RequestParams;
use script_port::{AcrStatus, HookCall, HookError, HookFailureKind, HookValue, ScriptRuntime};
pub use transaction::{LoginHandle, LoginTransaction};

use crate::base::{phone::subject_for_log, random};
use crate::config::LiveConfig;
use crate::ports::{StateStore, StoreError, StoreUpdate};

/// What the user sees when a step fails and the script said nothing.
pub const DEFAULT_FAILURE_MESSAGE: &str = messages::DEFAULT_FAILURE;
/// Limit on `getAlternativeAuthenticationMethod` hops, so two scripts cannot ping-pong.
const MAX_ALTERNATIVES: usize = 3;
/// Limit on steps, so a script cannot loop a login forever with getNextStep.
const MAX_STEP: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("unknown acr {0:?}")]
    UnknownAcr(String),
    #[error("acr {0:?} is disabled")]
    DisabledAcr(String),
    #[error("acr {acr:?} is not available: {reason}")]
    UnavailableAcr { acr: String, reason: String },
    #[error("acr {0:?} is not for interactive logins")]
    NotInteractive(String),
    #[error("no acr was requested and no default acr is configured")]
    NoDefaultAcr,
    #[error("acr {0:?} declined this login and offered no alternative")]
    MethodNotValid(String),
    #[error("the login expired or does not exist")]
    LoginNotFound,
    #[error("step {submitted} submitted, but the login is at step {expected}")]
    StepOutOfOrder { expected: u32, submitted: u32 },
    #[error("the login was changed by a concurrent request; reload the page")]
    Conflict,
    #[error("no code was sent in this login, or the method does not allow resending")]
    NothingToResend,
    #[error("step {step} of {acr} cannot be prepared")]
    StepNotPrepared { acr: String, step: u32 },
    /// `prepareForStep` stopped at a refusal by the account's policy (a locked SMS factor).
    #[error("step {step} of {acr} was refused by the account's policy")]
    StepRefused { acr: String, step: u32 },
    #[error(transparent)]
    Script(HookError),
    /// The state store or the user directory did not answer during a hook.
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored login state is unreadable: {0}")]
    Corrupt(String),
    #[error("too many sign-ins started {}; try again in {retry_after_seconds} s", if *.from_this_address { "from this address" } else { "in all" })]
    TooManyPending {
        /// The address's cap (429), not the server's (503).
        from_this_address: bool,
        retry_after_seconds: u64,
    },
}

impl From<HookError> for FlowError {
    fn from(error: HookError) -> Self {
        match error.kind {
            HookFailureKind::Unavailable => {
                FlowError::ServiceUnavailable(format!("{}: {}", error.acr, error.message))
            }
            _ => FlowError::Script(error),
        }
    }
}

/// A sign-in admitted and its method chosen, not begun yet: all it holds before its first page
/// is asked for (kept in the browser session, a few dozen bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChosenSignIn {
    /// The handle it will be stored under (never sent to the browser).
    pub login: String,
    pub acr: String,
    pub correlation_id: String,
    pub started_at: u64,
    /// Counted against the caps on unfinished sign-ins (not for sign-ins started by tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<pending::CountedStart>,
}

/// A page to show for the current step of a login.
#[derive(Debug, Clone)]
pub struct StepPage {
    pub login: LoginHandle,
    pub correlation_id: String,
    pub acr: String,
    pub step: u32,
    /// `getPageForStep`'s answer; "" means the default username/password page.
    pub page: String,
    /// The script's message for the user, if any.
    pub message: Option<String>,
    /// Working parameters, so pages can show e.g. the masked number a code went to.
    pub working: std::collections::BTreeMap<String, String>,
    /// A sending limit refused a message: seconds until it may succeed (0: only a new login).
    pub retry_after: Option<u64>,
    /// Other methods the script offers after a failure (redirectToMultiOptionPageOnFailure).
    pub alternatives: Vec<String>,
    /// A code was sent in this login and the script allows resending it (ResendEnable).
    pub can_resend: bool,
    /// Codes of this acr are digits only (the page asks for a numeric keypad).
    pub numeric_code: bool,
}

#[derive(Debug, Clone)]
pub struct AuthenticatedLogin {
    pub user: String,
    pub acr: String,
    pub steps_passed: Vec<u32>,
    /// Methods the host verified (RFC 8176 names), see [`HookState::methods`].
    pub methods: Vec<String>,
    /// The ID token's `amr`, decided by [`decide_amr`].
    pub amr: Vec<String>,
    /// Claims the script added to the ID token (`identity::claim`).
    pub claims: std::collections::BTreeMap<String, serde_json::Value>,
    pub correlation_id: String,
    pub auth_time: u64,
}

/// What kind of factor an RFC 8176 method is: something the user knows, has, or is.
fn factor_kind(method: &str) -> Option<&'static str> {
    Some(match method {
        "pwd" | "pin" | "kba" => "knowledge",
        "sms" | "tel" | "otp" | "hwk" | "swk" | "sc" => "possession",
        "fpt" | "face" | "iris" | "retina" | "vbm" | "geo" => "inherence",
        _ => return None,
    })
}

/// The one place the ID token's `amr` is decided: the methods the host itself verified in this
/// sign-in (`pwd`, `sms`, `otp`...), then those the entry's configured `amr` names for external
/// verifiers whose codes the host never sees (Stytch), and `mfa` only when two different kinds
/// of factor are among them. How many steps passed says nothing: a step that verifies nothing
/// adds nothing. Empty when nothing was verified (the ID token then carries no `amr`).
pub fn decide_amr(methods: &[String], configured: Option<Vec<String>>) -> Vec<String> {
    let mut amr: Vec<String> = Vec::new();
    for method in methods
        .iter()
        .cloned()
        .chain(configured.unwrap_or_default())
    {
        if method != "mfa" && !amr.contains(&method) {
            amr.push(method);
        }
    }
    let mut kinds: Vec<&str> = amr.iter().filter_map(|m| factor_kind(m)).collect();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.len() >= 2 {
        amr.push("mfa".into());
    }
    amr
}

#[cfg(test)]
mod amr_tests {
    use super::decide_amr;

    fn amr(methods: &[&str], configured: Option<&[&str]>) -> Vec<String> {
        let owned = |list: &[&str]| list.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        decide_amr(&owned(methods), configured.map(owned))
    }

    #[test]
    fn mfa_needs_two_kinds_of_factor_verified() {
        assert_eq!(amr(&["pwd", "sms"], None), ["pwd", "sms", "mfa"]);
        assert_eq!(amr(&["pwd", "otp"], None), ["pwd", "otp", "mfa"]);
        assert_eq!(amr(&["pwd"], None), ["pwd"]);
        assert_eq!(amr(&["sms"], None), ["sms"]);
        assert_eq!(
            amr(&["sms", "otp"], None),
            ["sms", "otp"],
            "both possession"
        );
        assert!(amr(&[], None).is_empty());
        // Stytch: the host verified the password, the entry vouches for the SMS code.
        assert_eq!(
            amr(&["pwd"], Some(&["pwd", "sms", "mfa"])),
            ["pwd", "sms", "mfa"]
        );
        assert_eq!(
            amr(&[], Some(&["pwd", "mfa"])),
            ["pwd"],
            "mfa is never taken on faith"
        );
    }
}

#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The next step's page.
    Next(StepPage),
    /// The same step again, with the script's message or [`DEFAULT_FAILURE_MESSAGE`].
    Retry(StepPage),
    Authenticated(AuthenticatedLogin),
}

pub struct LoginEngine {
    /// Caps on sign-ins started and not finished, per address and in total.
    pending: pending::PendingGuard,
    runtime: Arc<dyn ScriptRuntime>,
    store: Arc<dyn StateStore>,
    services: Arc<HostServices>,
    /// For the default acr, which a reload may change.
    config: LiveConfig,
    login_ttl: Duration,
    /// Where this engine's log lines go (the instance's script log); `None`: the global default.
    log: Option<tracing::Dispatch>,
}

/// How far a sign-in had got when a request loaded it. The request's save (or finish) goes
/// through only over that same stored sign-in, with one exception: a passed step also goes
/// through over a failed attempt at the same step saved meanwhile. Two submissions of the right
/// code at once (a double click): one takes the code, the other finds none and fails; which of
/// them saves first must not decide, the check that took the code does.
struct Loaded {
    version: u64,
    step: u32,
    passed: Vec<u32>,
}

/// What a save needs of a stored sign-in (read without its state, the bulk of it).
#[derive(serde::Deserialize)]
struct StoredProgress {
    version: u64,
    step: u32,
    passed: Vec<u32>,
}

impl Loaded {
    fn of(txn: &LoginTransaction) -> Loaded {
        Loaded {
            version: txn.version,
            step: txn.step,
            passed: txn.passed.clone(),
        }
    }

    /// The version of the stored sign-in `current` if a request that loaded `self` may replace
    /// it (`passed`: the request passed its step), else `None`.
    fn replaceable(&self, current: Option<&[u8]>, passed: bool) -> Option<u64> {
        let stored = serde_json::from_slice::<StoredProgress>(current?).ok()?;
        let failed_meanwhile = stored.step == self.step && stored.passed == self.passed;
        (stored.version == self.version || (passed && failed_meanwhile)).then_some(stored.version)
    }
}

fn step_of(value: &HookValue) -> Option<i64> {
    match value {
        HookValue::Int(n) => Some(*n),
        _ => None,
    }
}

impl LoginEngine {
    pub fn new(
        runtime: Arc<dyn ScriptRuntime>,
        store: Arc<dyn StateStore>,
        services: Arc<HostServices>,
        config: LiveConfig,
        login_ttl: Duration,
        log: Option<tracing::Dispatch>,
    ) -> Self {
        let limits = {
            let current = config.current();
            pending::PendingLimits {
                per_address: current.login.max_pending_per_address,
                total: current.login.max_pending_total,
                window: login_ttl,
            }
        };
        LoginEngine {
            pending: pending::PendingGuard::new(store.clone(), limits, services.clock.clone()),
            runtime,
            store,
            services,
            config,
            login_ttl,
            log,
        }
    }

    fn logged<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.log {
            Some(dispatch) => tracing::dispatcher::with_default(dispatch, f),
            None => f(),
        }
    }

    fn context(
        &self,
        login: &LoginHandle,
        txn: &LoginTransaction,
        params: Option<&RequestParams>,
    ) -> Arc<HookContext> {
        let mut state = txn.state.clone();
        // The message is the page's, not the hook's: a hook starts without one.
        state.message = None;
        HookContext::for_login(
            &txn.acr,
            &txn.correlation_id,
            login.as_str(),
            self.services.clone(),
            state,
            params,
        )
    }

    /// Resolves the acr to run: the requested one, or the default; never a silent fall-back.
    fn resolve_acr(&self, requested: Option<&str>) -> Result<String, FlowError> {
        let acr = match requested {
            Some(acr) => acr.to_owned(),
            None => self
                .config
                .current()
                .login
                .default_acr
                .clone()
                .ok_or(FlowError::NoDefaultAcr)?,
        };
        match self.runtime.status(&acr) {
            status if status.is_interactive() => Ok(acr),
            AcrStatus::Active { .. } => Err(FlowError::NotInteractive(acr)),
            AcrStatus::Unknown => Err(FlowError::UnknownAcr(acr)),
            AcrStatus::Disabled => Err(FlowError::DisabledAcr(acr)),
            AcrStatus::Unavailable { reason } => Err(FlowError::UnavailableAcr { acr, reason }),
        }
    }

    /// Starts a login for `acr` (or the default acr) and returns the first step's page.
    pub fn start(&self, acr: Option<&str>) -> Result<StepPage, FlowError> {
        self.logged(|| {
            let origin = host::SignInOrigin::default();
            let chosen = self.choose(acr, &origin)?;
            self.begin(&chosen, origin)
        })
    }

    /// Admits an application's sign-in (`origin`) from a client counted under `address` (its
    /// limit bucket), refused past the caps on sign-ins started and not finished, and chooses
    /// its method. Nothing is stored: the caller keeps the [`ChosenSignIn`] (in the browser
    /// session) and calls [`LoginEngine::begin`] when the first page is asked for, so a flood
    /// of requests that never go on costs a few bytes each.
    pub fn choose_for(
        &self,
        acr: Option<&str>,
        origin: &host::SignInOrigin,
        address: Option<std::net::IpAddr>,
    ) -> Result<ChosenSignIn, FlowError> {
        self.logged(|| {
            let counted = match self.pending.admit(address)? {
                Ok(counted) => counted,
                Err(pending::PendingRefusal::Address {
                    retry_after_seconds,
                }) => {
                    return Err(FlowError::TooManyPending {
                        from_this_address: true,
                        retry_after_seconds,
                    })
                }
                Err(pending::PendingRefusal::Total {
                    retry_after_seconds,
                }) => {
                    tracing::error!(target: "server", "the cap on sign-ins started ([login] max_pending_total) is reached: new sign-ins are refused for {retry_after_seconds} s");
                    return Err(FlowError::TooManyPending {
                        from_this_address: false,
                        retry_after_seconds,
                    });
                }
            };
            let mut chosen = match self.choose(acr, origin) {
                Ok(chosen) => chosen,
                Err(error) => {
                    // Not started after all: the count is given back.
                    self.pending.release(counted)?;
                    return Err(error);
                }
            };
            chosen.counted = Some(counted);
            Ok(chosen)
        })
    }

    /// Resolves the acr and asks `isValidAuthenticationMethod`, following alternatives.
    fn choose(
        &self,
        acr: Option<&str>,
        origin: &host::SignInOrigin,
    ) -> Result<ChosenSignIn, FlowError> {
        let mut acr = self.resolve_acr(acr)?;
        let login =
            LoginHandle::new(random::id_token().map_err(|e| FlowError::Corrupt(e.to_string()))?);
        let correlation_id = random::hex_token(6).map_err(|e| FlowError::Corrupt(e.to_string()))?;
        let mut txn = LoginTransaction {
            correlation_id,
            acr: acr.clone(),
            step: 1,
            passed: Vec::new(),
            state: HookState {
                origin: origin.clone(),
                ..HookState::default()
            },
            page: String::new(),
            started_at: self.services.clock.now_secs(),
            version: 0,
            counted: None,
        };
        // isValidAuthenticationMethod may hand the login to another method, explicitly.
        for _ in 0..=MAX_ALTERNATIVES {
            let context = self.context(&login, &txn, None);
            let usage = HookCall::interactive_usage();
            if self
                .runtime
                .call(
                    &acr,
                    HookCall::IsValidAuthenticationMethod { usage },
                    &context,
                )?
                .is_true()
            {
                break;
            }
            let alternative = self.runtime.call(
                &acr,
                HookCall::GetAlternativeAuthenticationMethod { usage },
                &context,
            )?;
            let HookValue::Text(next) = alternative else {
                return Err(FlowError::MethodNotValid(acr));
            };
            if next.is_empty() || next == acr {
                return Err(FlowError::MethodNotValid(acr));
            }
            tracing::info!(target: "server", acr = acr.as_str(), login = txn.correlation_id.as_str(), "method not valid for this login: switching to {next}");
            acr = self.resolve_acr(Some(&next))?;
            txn.acr = acr.clone();
        }
        tracing::info!(target: "server", acr = acr.as_str(), login = txn.correlation_id.as_str(), "login started");
        Ok(ChosenSignIn {
            login: login.as_str().to_owned(),
            acr,
            correlation_id: txn.correlation_id,
            started_at: txn.started_at,
            counted: None,
        })
    }

    /// Enters step 1 of a chosen sign-in and stores it; its page. A sign-in begun already (a
    /// concurrent first request) is not begun twice: its current page is returned.
    pub fn begin(
        &self,
        chosen: &ChosenSignIn,
        origin: host::SignInOrigin,
    ) -> Result<StepPage, FlowError> {
        let login = LoginHandle::parse(&chosen.login).ok_or(FlowError::LoginNotFound)?;
        let age = self
            .services
            .clock
            .now_secs()
            .saturating_sub(chosen.started_at);
        if age >= self.login_ttl.as_secs() {
            return Err(FlowError::LoginNotFound);
        }
        if self.store.get(&login.store_key())?.is_some() {
            return self.current(&login);
        }
        let mut txn = LoginTransaction {
            correlation_id: chosen.correlation_id.clone(),
            acr: chosen.acr.clone(),
            step: 1,
            passed: Vec::new(),
            state: HookState {
                origin,
                ..HookState::default()
            },
            page: String::new(),
            started_at: chosen.started_at,
            version: 0,
            counted: chosen.counted,
        };
        self.logged(|| {
            let params = RequestParams::new();
            self.enter_step(&login, &mut txn, 1, &params)?;
            if !self.save_first(&login, &txn)? {
                return self.current(&login);
            }
            Ok(self.page(&login, &txn))
        })
    }

    /// The current page of a login in progress.
    pub fn current(&self, login: &LoginHandle) -> Result<StepPage, FlowError> {
        let txn = self.load(login)?;
        Ok(self.page(login, &txn))
    }

    /// Submits the parameters of `step`. A step can only be submitted when it is the current one.
    /// Sign-ins started and not finished (the pending window's count; see `[login]
    /// max_pending_total`).
    pub fn sign_ins_in_flight(&self) -> Result<u64, StoreError> {
        self.pending.in_flight()
    }

    /// Messages counted against today's SMS budget, and the budget.
    pub fn sms_budget_today(&self) -> Result<(u32, u32), StoreError> {
        self.services.sending.budget_today()
    }

    pub fn submit(
        &self,
        login: &LoginHandle,
        step: u32,
        params: &RequestParams,
    ) -> Result<StepOutcome, FlowError> {
        self.logged(|| self.submit_logged(login, step, params))
    }

    fn submit_logged(
        &self,
        login: &LoginHandle,
        step: u32,
        params: &RequestParams,
    ) -> Result<StepOutcome, FlowError> {
        let txn = self.load(login)?;
        if step != txn.step {
            tracing::warn!(target: "server", acr = txn.acr.as_str(), login = txn.correlation_id.as_str(), "step {step} submitted out of order (expected {})", txn.step);
            return Err(FlowError::StepOutOfOrder {
                expected: txn.step,
                submitted: step,
            });
        }
        let acr = txn.acr.clone();
        let result = self.submit_loaded(login, step, params, txn);
        let outcome = match &result {
            Ok(StepOutcome::Authenticated(_)) => Some("success"),
            Ok(StepOutcome::Retry(_)) => Some("failure"),
            Ok(StepOutcome::Next(_)) => None,
            Err(FlowError::ServiceUnavailable(_) | FlowError::Store(_)) => Some("unavailable"),
            Err(_) => Some("error"),
        };
        if let Some(outcome) = outcome {
            self.services.metrics.login(&acr, outcome);
        }
        result
    }

    /// `submit` on a loaded sign-in whose step matches.
    fn submit_loaded(
        &self,
        login: &LoginHandle,
        step: u32,
        params: &RequestParams,
        mut txn: LoginTransaction,
    ) -> Result<StepOutcome, FlowError> {
        let loaded = Loaded::of(&txn);
        let (acr, correlation) = (txn.acr.clone(), txn.correlation_id.clone());
        let context = self.context(login, &txn, Some(params));
        let passed =
            match self
                .runtime
                .call(&acr, HookCall::Authenticate { params, step }, &context)
            {
                Ok(value) => value.is_true(),
                // An outage is not a failed step: the user's answer was never judged.
                Err(error) if error.kind == HookFailureKind::Unavailable => {
                    return Err(error.into())
                }
                Err(_) => false, // the runtime has logged it with file:line:col
            };
        txn.state = context.take_state();
        let retry_after = txn.state.retry_after;
        if !passed {
            tracing::info!(target: "server", acr = acr.as_str(), login = correlation.as_str(), "step {step} failed");
            txn.state
                .message
                .get_or_insert_with(|| DEFAULT_FAILURE_MESSAGE.to_owned());
            self.save(login, &txn, &loaded, false)?;
            let mut page = self.page(login, &txn);
            page.retry_after = retry_after;
            return Ok(StepOutcome::Retry(page));
        }
        txn.passed.push(step);
        tracing::info!(target: "server", acr = acr.as_str(), login = correlation.as_str(), "step {step} passed");
        // getNextStep runs on what authenticate left; what it changes is kept too.
        let message = txn.state.message.take();
        let context = self.context(login, &txn, Some(params));
        let next = step_of(&self.runtime.call(
            &acr,
            HookCall::GetNextStep { params, step },
            &context,
        )?)
        .unwrap_or(-1);
        txn.state = context.take_state();
        if txn.state.message.is_none() {
            txn.state.message = message;
        }
        let target = if next > 0 {
            let target = u32::try_from(next).unwrap_or(MAX_STEP).min(MAX_STEP);
            // A jump back resets the steps from there on.
            txn.passed.retain(|&s| s < target);
            tracing::info!(target: "server", acr = acr.as_str(), login = correlation.as_str(), "script moved the login to step {target}");
            target
        } else if step >= self.step_count(login, &txn)? {
            if txn.state.user.is_none() {
                // Every step passed but no user was identified: a script bug, never a login.
                tracing::error!(target: "server", acr = acr.as_str(), login = correlation.as_str(), "all steps passed but the script identified no user (call users::authenticate or identity::set_user)");
                txn.passed.pop();
                txn.state.message = Some(DEFAULT_FAILURE_MESSAGE.to_owned());
                self.save(login, &txn, &loaded, false)?;
                return Ok(StepOutcome::Retry(self.page(login, &txn)));
            }
            return self.finish(login, txn, &loaded);
        } else {
            step + 1
        };
        let passed_step = txn.clone();
        match self.enter_step(login, &mut txn, target, params) {
            Ok(()) => {}
            // The next step cannot begin for this account now (its SMS factor is locked): the
            // user stays at the step just passed, with the host's message, as after a failure.
            Err(FlowError::StepRefused { .. }) => {
                let message = txn.state.message.take();
                txn = passed_step;
                txn.passed.pop();
                txn.state.message = message.or_else(|| Some(DEFAULT_FAILURE_MESSAGE.to_owned()));
                self.save(login, &txn, &loaded, false)?;
                return Ok(StepOutcome::Retry(self.page(login, &txn)));
            }
            Err(error) => return Err(error),
        }
        self.save(login, &txn, &loaded, true)?;
        Ok(StepOutcome::Next(self.page(login, &txn)))
    }

    /// Sends a fresh code the way the last one went (ResendEnable): same number, same text, new
    /// code; the old code stops working. Sending limits apply (cooldown, sends per login...).
    pub fn resend(
        &self,
        login: &LoginHandle,
        params: &RequestParams,
    ) -> Result<StepOutcome, FlowError> {
        self.logged(|| self.resend_logged(login, params))
    }

    fn resend_logged(
        &self,
        login: &LoginHandle,
        params: &RequestParams,
    ) -> Result<StepOutcome, FlowError> {
        let mut txn = self.load(login)?;
        let loaded = Loaded::of(&txn);
        let Some((to, template)) = txn.state.last_sms.clone() else {
            return Err(FlowError::NothingToResend);
        };
        let Some((sender, policy)) = self.runtime.resend_target(&txn.acr) else {
            return Err(FlowError::NothingToResend);
        };
        let context = self.context(login, &txn, Some(params));
        // Admit first: a refused resend must not replace the code the user already has.
        let sent = context.admit_sms(&to).and_then(|number| {
            let code = context.issue_code(&policy, None, None)?;
            context.deliver_sms(
                sender.as_ref(),
                &number,
                &to,
                &template.replace(host::RESEND_CODE_SLOT, &code),
            )
        });
        let mut state = context.take_state();
        let retry_after = state.retry_after;
        match &sent {
            Ok(()) => {
                tracing::info!(target: "server", acr = txn.acr.as_str(), login = txn.correlation_id.as_str(), "code resent");
                state
                    .message
                    .get_or_insert_with(|| messages::CODE_RESENT.to_owned());
            }
            Err(error) => {
                tracing::warn!(target: "server", acr = txn.acr.as_str(), login = txn.correlation_id.as_str(), "code not resent: {}", context.mask(&error.to_string()));
                state
                    .message
                    .get_or_insert_with(|| messages::CODE_NOT_RESENT.to_owned());
            }
        }
        txn.state = state;
        self.save(login, &txn, &loaded, false)?;
        let mut page = self.page(login, &txn);
        page.retry_after = retry_after;
        Ok(StepOutcome::Retry(page))
    }

    /// Runs the `logout` hook of `acr` for `user` (RP-initiated logout). A failing hook is logged
    /// by the runtime and does not stop the logout.
    pub fn logout(&self, acr: &str, user: &str, params: &RequestParams) -> bool {
        self.logged(|| {
            let correlation_id = random::hex_token(6).unwrap_or_else(|_| "-".into());
            let state = HookState { user: Some(user.to_owned()), ..Default::default() };
            let context = HookContext::for_login(acr, &correlation_id, "logout", self.services.clone(), state, Some(params));
            let done = self.runtime.call(acr, HookCall::Logout { params }, &context).map(|v| v.is_true()).unwrap_or(false);
            tracing::info!(target: "server", acr, login = correlation_id.as_str(), "logout of {}: hook returned {done}", subject_for_log(user));
            done
        })
    }

    /// Abandons a login (the user cancelled): forgets its state and code.
    pub fn abandon(&self, login: &LoginHandle) -> Result<(), FlowError> {
        self.store.delete(&login.store_key())?;
        let _ = self.services.otp.forget(login.as_str());
        Ok(())
    }

    fn step_count(&self, login: &LoginHandle, txn: &LoginTransaction) -> Result<u32, FlowError> {
        let context = self.context(login, txn, None);
        let count = self
            .runtime
            .call(&txn.acr, HookCall::GetCountAuthenticationSteps, &context)?;
        Ok(step_of(&count).map_or(1, |n| n.clamp(1, i64::from(MAX_STEP)) as u32))
    }

    /// Moves the login to `step`: keeps only the working parameters the script names for that
    /// step, runs `prepareForStep` and asks for the page.
    fn enter_step(
        &self,
        login: &LoginHandle,
        txn: &mut LoginTransaction,
        step: u32,
        params: &RequestParams,
    ) -> Result<(), FlowError> {
        let acr = txn.acr.clone();
        let keep = {
            let context = self.context(login, txn, None);
            self.runtime
                .call(&acr, HookCall::GetExtraParametersForStep { step }, &context)?
        };
        let names: Vec<String> = match keep {
            HookValue::List(names) => names,
            _ => Vec::new(),
        };
        txn.state.working.retain(|name, _| names.contains(name));
        txn.step = step;
        let context = self.context(login, txn, Some(params));
        let prepared = self
            .runtime
            .call(&acr, HookCall::PrepareForStep { params, step }, &context);
        let page = self
            .runtime
            .call(&acr, HookCall::GetPageForStep { step }, &context);
        let message = txn.state.message.take();
        txn.state = context.take_state();
        if txn.state.message.is_none() {
            txn.state.message = message;
        }
        match prepared {
            Ok(value) if value.is_true() => {}
            Err(error) if error.kind == HookFailureKind::Unavailable => return Err(error.into()),
            Err(error) if error.kind == HookFailureKind::Refused => {
                return Err(FlowError::StepRefused { acr, step })
            }
            _ => return Err(FlowError::StepNotPrepared { acr, step }),
        }
        txn.page = match page? {
            HookValue::Text(page) => page,
            _ => String::new(),
        };
        Ok(())
    }

    fn finish(
        &self,
        login: &LoginHandle,
        txn: LoginTransaction,
        loaded: &Loaded,
    ) -> Result<StepOutcome, FlowError> {
        // Claim the login atomically: a concurrent submission cannot authenticate it twice.
        let mut claimed = false;
        self.store
            .update(&login.store_key(), None, &mut |current| {
                claimed = loaded.replaceable(current, true).is_some();
                if claimed {
                    StoreUpdate::Delete
                } else {
                    StoreUpdate::Keep
                }
            })?;
        if !claimed {
            return Err(FlowError::Conflict);
        }
        let _ = self.services.otp.forget(login.as_str());
        if let Some(start) = txn.counted {
            if let Err(error) = self.pending.release(start) {
                tracing::warn!(target: "server", login = txn.correlation_id.as_str(), "a finished sign-in was not taken off the pending count: {error}");
            }
        }
        let user = txn.state.user.clone().unwrap_or_default();
        tracing::info!(target: "server", acr = txn.acr.as_str(), login = txn.correlation_id.as_str(), "authenticated user {} (steps {:?})", subject_for_log(&user), txn.passed);
        let amr = decide_amr(&txn.state.methods, self.runtime.configured_amr(&txn.acr));
        Ok(StepOutcome::Authenticated(AuthenticatedLogin {
            user,
            acr: txn.acr,
            steps_passed: txn.passed,
            methods: txn.state.methods,
            claims: txn.state.claims,
            amr,
            correlation_id: txn.correlation_id,
            auth_time: self.services.clock.now_secs(),
        }))
    }

    fn page(&self, login: &LoginHandle, txn: &LoginTransaction) -> StepPage {
        StepPage {
            login: login.clone(),
            correlation_id: txn.correlation_id.clone(),
            acr: txn.acr.clone(),
            step: txn.step,
            page: txn.page.clone(),
            message: txn.state.message.clone(),
            working: txn.state.working.clone(),
            retry_after: None,
            alternatives: self.alternatives(login, txn),
            can_resend: txn.state.last_sms.is_some()
                && self.runtime.resend_target(&txn.acr).is_some(),
            numeric_code: self
                .runtime
                .code_policy(&txn.acr)
                .is_none_or(|p| p.alphabet == crate::config::CodeAlphabet::Numeric),
        }
    }

    /// When the script asked for it (working parameter `offer_alternatives` = "yes"), the method
    /// its `getAlternativeAuthenticationMethod` names, if that one is enabled and interactive.
    fn alternatives(&self, login: &LoginHandle, txn: &LoginTransaction) -> Vec<String> {
        if txn
            .state
            .working
            .get(contract::OFFER_ALTERNATIVES)
            .map(String::as_str)
            != Some("yes")
        {
            return Vec::new();
        }
        let context = self.context(login, txn, None);
        let usage = HookCall::interactive_usage();
        match self.runtime.call(
            &txn.acr,
            HookCall::GetAlternativeAuthenticationMethod { usage },
            &context,
        ) {
            Ok(HookValue::Text(acr))
                if acr != txn.acr && self.runtime.status(&acr).is_interactive() =>
            {
                vec![acr]
            }
            _ => Vec::new(),
        }
    }

    /// Leaves this login for one of the alternatives its page offers; the new login's first page.
    pub fn switch(&self, login: &LoginHandle, acr: &str) -> Result<StepPage, FlowError> {
        self.logged(|| {
            let txn = self.load(login)?;
            if !self.alternatives(login, &txn).iter().any(|a| a == acr) {
                return Err(FlowError::UnknownAcr(acr.to_owned()));
            }
            tracing::info!(target: "server", acr = txn.acr.as_str(), login = txn.correlation_id.as_str(), "user chose another method: {acr}");
            self.abandon(login)?;
            let mut chosen = self.choose(Some(acr), &txn.state.origin)?;
            chosen.counted = txn.counted;
            self.begin(&chosen, txn.state.origin)
        })
    }

    fn load(&self, login: &LoginHandle) -> Result<LoginTransaction, FlowError> {
        let bytes = self
            .store
            .get(&login.store_key())?
            .ok_or(FlowError::LoginNotFound)?;
        serde_json::from_slice(&bytes).map_err(|e| FlowError::Corrupt(e.to_string()))
    }

    /// Stores a login just begun unless one is stored under its handle already (then false).
    fn save_first(&self, login: &LoginHandle, txn: &LoginTransaction) -> Result<bool, FlowError> {
        let bytes = serde_json::to_vec(txn).map_err(|e| FlowError::Corrupt(e.to_string()))?;
        let remaining = self.login_ttl.saturating_sub(Duration::from_secs(
            self.services
                .clock
                .now_secs()
                .saturating_sub(txn.started_at),
        ));
        let mut saved = false;
        self.store.update(
            &login.store_key(),
            Some(remaining.max(Duration::from_secs(1))),
            &mut |current| {
                saved = current.is_none();
                if saved {
                    StoreUpdate::Put(bytes.clone())
                } else {
                    StoreUpdate::Keep
                }
            },
        )?;
        Ok(saved)
    }

    /// Saves over the sign-in this request loaded (compare-and-set; see [`Loaded`] for when a
    /// passed step may replace a failed attempt saved meanwhile).
    fn save(
        &self,
        login: &LoginHandle,
        txn: &LoginTransaction,
        loaded: &Loaded,
        passed: bool,
    ) -> Result<(), FlowError> {
        let encode = |version: u64| {
            let mut next = txn.clone();
            next.version = version;
            serde_json::to_vec(&next).map_err(|e| FlowError::Corrupt(e.to_string()))
        };
        let bytes = encode(loaded.version + 1)?;
        // The closure may run more than once (a shared store retries on contention): it only
        // reads its input and overwrites `saved`, and hands out a copy of the bytes each time.
        let mut saved = false;
        self.store
            .update(&login.store_key(), None, &mut |current| {
                let Some(version) = loaded.replaceable(current, passed) else {
                    saved = false;
                    return StoreUpdate::Keep;
                };
                saved = true;
                match version == loaded.version {
                    true => StoreUpdate::Put(bytes.clone()),
                    // Over a failed attempt saved meanwhile: the version still moves on.
                    false => match encode(version + 1) {
                        Ok(bytes) => StoreUpdate::Put(bytes),
                        Err(_) => {
                            saved = false;
                            StoreUpdate::Keep
                        }
                    },
                }
            })?;
        if saved {
            Ok(())
        } else {
            Err(FlowError::Conflict)
        }
    }
}
