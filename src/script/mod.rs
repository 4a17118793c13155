//! The Rhai script host: loads each configured script into an immutable [`ScriptRevision`],
//! runs hooks on it in the sandbox, and swaps revisions on reload. The only module that knows Rhai.

mod api;
mod helpers;
mod lint;
mod revision;
pub mod sandbox;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, Map, Scope};

use crate::config::{Config, ScriptEntry};
use crate::flow::host::{HookContext, HostServices};
use crate::flow::otp::CodePolicy;
use crate::flow::params::{ParamValue, RequestParams};
use crate::flow::script_port::{
    AcrStatus, HookCall, HookError, HookFailureKind, HookValue, ScriptRuntime,
};
use crate::flow::script_port::{HookFailures, LastFailure, RECENT_FAILURE_SECONDS};
pub use crate::flow::script_port::{ScriptState, ScriptStatus};
use crate::sms::ProviderSet;
pub use api::ScriptSecret;
use revision::{compile, describe_error, read_script};
pub use revision::{LoadError, ScriptRevision};
use sandbox::{enter, ActiveCall};

#[derive(Clone)]
struct Slot {
    entry: ScriptEntry,
    current: Option<Arc<ScriptRevision>>,
    last_error: Option<String>,
    last_number: u64,
}

struct HostState {
    /// One slot per configured acr, by acr.
    slots: BTreeMap<String, Slot>,
}

/// What one reconcile changed; tests and the reload log use it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub loaded: Vec<(String, u64)>,
    pub refused: Vec<(String, String)>,
    pub retired: Vec<String>,
    pub config_error: Option<String>,
}

impl ReloadSummary {
    /// Notes that the config file could not be read, so the previous one keeps serving.
    pub fn with_config_error(mut self, message: String) -> Self {
        self.config_error = Some(message);
        self
    }
}

pub struct ScriptHost {
    engine: Engine,
    services: Arc<HostServices>,
    /// SMS providers (and the HTTP bridge scripts use).
    providers: ProviderSet,
    /// The server's `[otp]` code policy (read at start-up).
    code_policy: CodePolicy,
    scripts_dir: PathBuf,
    hook_timeout: Duration,
    /// What one hook call may grow the process by (`[sandbox] max_hook_memory_mb`).
    hook_memory_mb: u64,
    max_script_bytes: u64,
    state: RwLock<HostState>,
    /// Serialises reloads: one reconcile at a time.
    reloading: Mutex<HashMap<String, String>>,
    /// Run-time failures per acr, of its serving revision (kept apart from `state` so that a
    /// failing call never waits for, or blocks, a reload).
    failures: Mutex<HashMap<String, FailureLog>>,
}

/// The recent run-time failures of one acr's serving revision.
#[derive(Default)]
struct FailureLog {
    total: u64,
    /// Unix milliseconds of the failures of the last few minutes, oldest first (bounded).
    recent: std::collections::VecDeque<u64>,
    last: Option<(u64, &'static str, String)>,
}

/// Enough to tell "failing now" from "failed once"; older entries are dropped.
const MAX_RECENT_FAILURES: usize = 1000;

fn params_map(params: &RequestParams) -> Map {
    params
        .iter()
        .map(|(name, value)| {
            let value = match value {
                ParamValue::Plain(v) => Dynamic::from(v.clone()),
                ParamValue::Secret(v) => Dynamic::from(ScriptSecret(v.clone())),
            };
            (name.as_str().into(), value)
        })
        .collect()
}

/// The arguments of a hook, in the order of its row in [`crate::flow::script_port::HOOKS`].
fn hook_args(call: HookCall<'_>, config: &Map) -> Vec<Dynamic> {
    let config = || Dynamic::from_map(config.clone());
    let step = |s: u32| Dynamic::from_int(i64::from(s));
    let args = match call {
        HookCall::Init | HookCall::Destroy | HookCall::GetCountAuthenticationSteps => {
            vec![config()]
        }
        HookCall::GetApiVersion => vec![],
        HookCall::IsValidAuthenticationMethod { usage }
        | HookCall::GetAlternativeAuthenticationMethod { usage } => {
            vec![Dynamic::from_int(usage), config()]
        }
        HookCall::PrepareForStep { params, step: s }
        | HookCall::Authenticate { params, step: s }
        | HookCall::GetNextStep { params, step: s } => {
            vec![config(), Dynamic::from_map(params_map(params)), step(s)]
        }
        HookCall::GetPageForStep { step: s } | HookCall::GetExtraParametersForStep { step: s } => {
            vec![config(), step(s)]
        }
        HookCall::Logout { params } => vec![config(), Dynamic::from_map(params_map(params))],
    };
    debug_assert_eq!(args.len(), call.spec().arity(), "{}", call.name());
    args
}

fn hook_value(value: Dynamic) -> HookValue {
    if value.is_unit() {
        HookValue::Unit
    } else if let Some(b) = value.clone().try_cast::<bool>() {
        HookValue::Bool(b)
    } else if let Some(i) = value.clone().try_cast::<i64>() {
        HookValue::Int(i)
    } else if value.is_string() {
        HookValue::Text(value.into_string().unwrap_or_default())
    } else if value.is_array() {
        let items = value.into_array().unwrap_or_default();
        let texts: Option<Vec<String>> = items.into_iter().map(|v| v.into_string().ok()).collect();
        texts.map_or_else(
            || HookValue::Other("array of non-strings".into()),
            HookValue::List,
        )
    } else {
        HookValue::Other(value.type_name().to_owned())
    }
}

impl ScriptHost {
    /// Builds the host; nothing is loaded until [`ScriptHost::reconcile`].
    /// The sandbox limits, the scripts directory and the code policy are taken from `config`
    /// now (they need a restart); the scripts themselves from each [`ScriptHost::reconcile`].
    pub fn new(config: &Config, services: Arc<HostServices>, providers: ProviderSet) -> Self {
        let engine = sandbox::build_engine(&config.sandbox);
        ScriptHost {
            engine,
            services,
            providers,
            code_policy: CodePolicy::from_config(&config.otp),
            scripts_dir: config.paths.scripts_dir.clone(),
            hook_timeout: config.sandbox.hook_timeout(),
            hook_memory_mb: config.sandbox.max_hook_memory_mb,
            max_script_bytes: config.sandbox.max_script_bytes,
            state: RwLock::new(HostState {
                slots: BTreeMap::new(),
            }),
            reloading: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn record_failure(&self, error: &HookError, masked: String) {
        let now = self.services.clock.now_ms();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let log = failures.entry(error.acr.clone()).or_default();
        log.total += 1;
        log.recent.push_back(now);
        if log.recent.len() > MAX_RECENT_FAILURES {
            log.recent.pop_front();
        }
        log.last = Some((now, error.hook, masked));
    }

    /// The failures of `acr` for `/health`, if there were any since its revision loaded.
    fn failures_of(&self, acr: &str) -> Option<HookFailures> {
        let now = self.services.clock.now_ms();
        let window = RECENT_FAILURE_SECONDS * 1000;
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let log = failures.get_mut(acr)?;
        while log.recent.front().is_some_and(|&t| t + window <= now) {
            log.recent.pop_front();
        }
        let (at, hook, error) = log.last.clone()?;
        Some(HookFailures {
            total: log.total,
            recent: log.recent.len(),
            last: LastFailure {
                at: at / 1000,
                seconds_ago: now.saturating_sub(at) / 1000,
                hook,
                error,
            },
        })
    }

    /// A new revision starts with a clean record.
    fn forget_failures(&self, acr: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(acr);
    }

    pub fn scripts_dir(&self) -> &Path {
        &self.scripts_dir
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, HostState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn current_revision(&self, acr: &str) -> Option<Arc<ScriptRevision>> {
        self.read_state()
            .slots
            .get(acr)
            .and_then(|s| s.current.clone())
    }

    /// Runs one hook on one revision, start to end, under the sandbox deadline.
    fn run(
        &self,
        revision: &Arc<ScriptRevision>,
        call: HookCall<'_>,
        context: &Arc<HookContext>,
    ) -> Result<HookValue, HookError> {
        let name = call.name();
        let args = hook_args(call, &revision.config);
        if !revision.defines(name, args.len()) {
            return call.default_value().ok_or_else(|| HookError {
                acr: revision.acr.clone(),
                hook: name,
                kind: HookFailureKind::Runtime,
                message: format!("{}: no fn {name}", revision.source_name),
            });
        }
        let deadline = Instant::now() + self.hook_timeout;
        context.mask_values(revision.secrets.values.iter().map(String::as_str));
        let guard = enter(ActiveCall {
            context: context.clone(),
            sms: revision.sms.clone(),
            http: self.providers.bridge().clone(),
            code_policy: revision.code_policy,
            write_other_users: revision.write_other_users,
            secrets: revision.secrets.clone(),
            deadline,
            memory_ceiling: sandbox::memory_ceiling(self.hook_memory_mb),
            at_top_level: false,
            top_level_side_effect: false,
        });
        let mut scope = Scope::new();
        // eval_ast(true) re-runs the top level, which load-time checks limit to constants,
        // so that functions can read them as `global::NAME`.
        let options = CallFnOptions::new().eval_ast(true).rewind_scope(false);
        // Host calls that wait (http::, sms::send) get only the time left in the hook.
        let result = crate::outbound::within_deadline(deadline, || {
            self.engine.call_fn_with_options::<Dynamic>(
                options,
                &mut scope,
                &revision.ast,
                name,
                args,
            )
        });
        drop(guard);
        result
            .map(hook_value)
            .map_err(|e| describe_error(revision, name, &e))
    }

    /// Reads, compiles and checks the top level of a script; does not run `init`.
    fn build(&self, entry: &ScriptEntry, number: u64) -> Result<Arc<ScriptRevision>, LoadError> {
        let source = read_script(&self.scripts_dir, &entry.file, self.max_script_bytes)?;
        let (properties, _) = entry.resolved_properties();
        let code_policy = self.code_policy.tightened(entry.otp.as_ref());
        let mut revision = compile(
            &self.engine,
            entry,
            &source,
            properties,
            number,
            code_policy,
        )?;
        match self.providers.for_script(entry, properties) {
            Ok(sms) => revision.sms = sms,
            Err(error) => revision.sms_error = Some(error.to_string()),
        }
        let revision = Arc::new(revision);
        let context = HookContext::for_lifecycle(&entry.acr, self.services.clone());
        context.mask_values(revision.secrets.values.iter().map(String::as_str));
        let guard = enter(ActiveCall {
            context,
            sms: revision.sms.clone(),
            http: self.providers.bridge().clone(),
            code_policy: revision.code_policy,
            write_other_users: revision.write_other_users,
            secrets: revision.secrets.clone(),
            deadline: Instant::now() + self.hook_timeout,
            memory_ceiling: sandbox::memory_ceiling(self.hook_memory_mb),
            at_top_level: true,
            top_level_side_effect: false,
        });
        let result = self
            .engine
            .run_ast_with_scope(&mut Scope::new(), &revision.ast);
        let had_side_effects = guard.finish();
        if let Err(error) = result {
            return Err(LoadError::Compile(
                describe_error(&revision, "top level", &error).message,
            ));
        }
        if had_side_effects {
            return Err(LoadError::Compile(format!(
                "{}: the top level may only declare constants and functions: move print() and host calls into init()",
                source.source_name
            )));
        }
        Ok(revision)
    }

    /// Runs `init`; only a boolean `true` lets the revision serve.
    fn initialise(&self, revision: &Arc<ScriptRevision>) -> Result<(), LoadError> {
        let context = HookContext::for_lifecycle(&revision.acr, self.services.clone());
        match self.run(revision, HookCall::Init, &context) {
            Ok(value) if value.is_true() => match &revision.sms_error {
                Some(error) => Err(LoadError::Refused(format!(
                    "{}: SMS provider: {error}",
                    revision.source_name
                ))),
                None => Ok(()),
            },
            Ok(value) => Err(LoadError::Refused(format!(
                "{}: init returned {}; it must return true to serve",
                revision.source_name,
                value.in_script_terms()
            ))),
            Err(error) => Err(LoadError::Refused(format!("{} (in init)", error.message))),
        }
    }

    fn destroy(&self, revision: &Arc<ScriptRevision>) {
        let context = HookContext::for_lifecycle(&revision.acr, self.services.clone());
        if let Err(error) = self.run(revision, HookCall::Destroy, &context) {
            tracing::warn!(target: "server", acr = revision.acr.as_str(), "{} (in destroy)", error.message);
        }
    }

    /// Brings every script in line with `config` and the files: new revisions are compiled and
    /// initialised before they replace the old; a failure leaves the old one serving.
    pub fn reconcile(&self, config: &Config) -> ReloadSummary {
        let mut noticed = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let mut slots = self.read_state().slots.clone();
        let mut summary = ReloadSummary::default();
        let mut retired = Vec::new();
        let mut next_slots = BTreeMap::new();
        for entry in &config.scripts {
            let mut slot = slots.remove(&entry.acr).unwrap_or(Slot {
                entry: entry.clone(),
                current: None,
                last_error: None,
                last_number: 0,
            });
            slot.entry = entry.clone();
            self.reconcile_slot(&mut slot, &mut summary, &mut retired);
            next_slots.insert(entry.acr.clone(), slot);
        }
        for (acr, slot) in slots {
            tracing::info!(target: "server", acr = acr.as_str(), "no longer in the configuration: not served");
            summary.retired.push(acr);
            retired.extend(slot.current);
        }
        self.notice_unconfigured_files(config, &mut noticed);
        self.state.write().unwrap_or_else(|p| p.into_inner()).slots = next_slots;
        for revision in retired {
            self.destroy(&revision);
        }
        summary
    }

    fn reconcile_slot(
        &self,
        slot: &mut Slot,
        summary: &mut ReloadSummary,
        retired: &mut Vec<Arc<ScriptRevision>>,
    ) {
        let acr = slot.entry.acr.clone();
        let acr = acr.as_str();
        if !slot.entry.enabled {
            if let Some(old) = slot.current.take() {
                tracing::info!(target: "server", acr, "disabled: revision {} retired", old.number);
                summary.retired.push(acr.to_owned());
                retired.push(old);
            }
            slot.last_error = None;
            return;
        }
        let (properties, unset) = slot.entry.resolved_properties();
        let (properties, unset) = (properties.clone(), unset.to_vec());
        let source = match read_script(&self.scripts_dir, &slot.entry.file, self.max_script_bytes) {
            Ok(source) => source,
            Err(LoadError::Missing(name)) => {
                if let Some(old) = slot.current.take() {
                    tracing::warn!(target: "server", acr, "{name}: file removed: revision {} retired, {acr} is not served", old.number);
                    summary.retired.push(acr.to_owned());
                    retired.push(old);
                } else if slot.last_error.is_none() {
                    tracing::error!(target: "server", acr, "{name}: file not found: {acr} is not served");
                }
                slot.last_error = Some(format!("{name}: file not found"));
                return;
            }
            Err(error) => return self.refuse(slot, error.to_string(), summary),
        };
        let digest = revision::digest(&source.text, &properties);
        if slot.current.as_ref().is_some_and(|c| c.digest == digest) {
            slot.last_error = None;
            return;
        }
        for missing in unset {
            tracing::warn!(
                target: "server",
                acr,
                "property {} left unset: environment variable {} is not set",
                missing.property,
                missing.variable
            );
        }
        let number = slot.last_number + 1;
        let loaded = self.build(&slot.entry, number).and_then(|revision| {
            self.initialise(&revision)?;
            Ok(revision)
        });
        match loaded {
            Ok(revision) => {
                slot.last_number = number;
                tracing::info!(
                    target: "server",
                    acr,
                    "{}: revision {number} ({}) serving",
                    revision.source_name,
                    revision.digest
                );
                summary.loaded.push((acr.to_owned(), number));
                self.services.metrics.script_reload(acr, true);
                self.forget_failures(acr);
                retired.extend(slot.current.replace(revision));
                slot.last_error = None;
            }
            Err(error) => self.refuse(slot, error.to_string(), summary),
        }
    }

    fn refuse(&self, slot: &mut Slot, message: String, summary: &mut ReloadSummary) {
        let acr = slot.entry.acr.as_str();
        self.services.metrics.script_reload(acr, false);
        match &slot.current {
            Some(current) => {
                tracing::error!(target: "server", acr, "{message}; revision {} keeps serving", current.number)
            }
            None => tracing::error!(target: "server", acr, "{message}; {acr} is not served"),
        }
        summary.refused.push((acr.to_owned(), message.clone()));
        slot.last_error = Some(message);
    }

    /// A `.rhai` file no entry names is not served; say so once per content.
    fn notice_unconfigured_files(&self, config: &Config, noticed: &mut HashMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(&self.scripts_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".rhai")
                || name.starts_with('.')
                || config.scripts.iter().any(|s| s.file == name)
            {
                continue;
            }
            let stamp = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| format!("{t:?}"))
                .unwrap_or_default();
            if noticed.get(&name) != Some(&stamp) {
                tracing::info!(
                    target: "server",
                    "{}: no [[scripts]] entry names this file: not served",
                    revision::display_name(&self.scripts_dir, &name)
                );
                noticed.insert(name, stamp);
            }
        }
    }

    pub fn statuses(&self) -> Vec<ScriptStatus> {
        let state = self.read_state();
        state
            .slots
            .values()
            .map(|slot| {
                let mut status = status_of(slot);
                if status.state == ScriptState::Active {
                    status.failures = self.failures_of(&slot.entry.acr);
                    if status.failures.as_ref().is_some_and(|f| f.recent > 0) {
                        status.state = ScriptState::Degraded;
                    }
                }
                status
            })
            .collect()
    }

    /// `gatehouse check`: compiles every configured script, initialises (and destroys) the enabled
    /// ones. Nothing is kept.
    pub fn check(&self, config: &Config) -> Vec<ScriptStatus> {
        config
            .scripts
            .iter()
            .map(|entry| {
                let result = self.build(entry, 1).and_then(|revision| {
                    if entry.enabled {
                        self.initialise(&revision)?;
                        self.destroy(&revision);
                    }
                    Ok(revision)
                });
                let (revision, mut error) = match result {
                    Ok(revision) => (Some(revision), None),
                    Err(error) => (None, Some(error.to_string())),
                };
                // Say which properties are empty because their variable is unset, so turning a
                // script on is a matter of exporting what is listed.
                let (_, unset) = entry.resolved_properties();
                if !unset.is_empty() {
                    let listed: Vec<String> = unset
                        .iter()
                        .map(|u| {
                            format!(
                                "property {} is missing: environment variable {} is not set",
                                u.property, u.variable
                            )
                        })
                        .collect();
                    let listed = listed.join("; ");
                    error = Some(match error {
                        Some(error) => format!("{error}; {listed}"),
                        None => listed,
                    });
                }
                let state = match (&error, entry.enabled) {
                    (_, false) => ScriptState::Disabled,
                    (None, true) => ScriptState::Active,
                    (Some(_), true) => ScriptState::Failed,
                };
                ScriptStatus {
                    acr: entry.acr.clone(),
                    file: revision::display_name(&self.scripts_dir, &entry.file),
                    enabled: entry.enabled,
                    level: entry.level,
                    usage: entry.usage,
                    revision: revision.as_ref().map(|r| r.number),
                    digest: revision.map(|r| r.digest.clone()),
                    state,
                    last_error: error,
                    failures: None,
                }
            })
            .collect()
    }

    /// `gatehouse check`'s static findings, as `scripts/NAME.rhai:LINE:COL: what` lines: calls
    /// to functions that exist neither in the script nor in the host API, and page names
    /// `getPageForStep` returns as literals for which `page_exists` says there is no template.
    pub fn lint(&self, config: &Config, page_exists: &dyn Fn(&str) -> bool) -> Vec<String> {
        let known = lint::known_functions(&self.engine);
        let mut findings = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for entry in config
            .scripts
            .iter()
            .filter(|e| seen.insert(e.file.clone()))
        {
            let Ok(source) = read_script(&self.scripts_dir, &entry.file, self.max_script_bytes)
            else {
                continue; // check reports the file itself
            };
            let Ok(ast) = self.engine.compile(&source.text) else {
                continue;
            };
            let defined = ast.iter_functions().map(|f| f.name.to_string()).collect();
            for ((line, column), name) in lint::unknown_calls(&source.text, &defined, &known) {
                findings.push(format!(
                    "{}:{line}:{column}: {name}(...) is neither a function of this script nor of the host API (scripts/README.md lists the host API)",
                    source.source_name
                ));
            }
            for ((line, column), page) in lint::page_literals(&source.text) {
                if !page_exists(&page) {
                    findings.push(format!(
                        "{}:{line}:{column}: getPageForStep names page {page:?}, which has no template: add {page}.html to the pages directory ([paths] pages_dir)",
                        source.source_name
                    ));
                }
            }
        }
        findings
    }

    /// Runs `destroy` on every serving revision (server shutdown).
    pub fn shutdown(&self) {
        let revisions: Vec<_> = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state
                .slots
                .values_mut()
                .filter_map(|s| s.current.take())
                .collect()
        };
        for revision in revisions {
            self.destroy(&revision);
        }
    }
}

fn status_of(slot: &Slot) -> ScriptStatus {
    let state = match (&slot.current, slot.entry.enabled) {
        (_, false) => ScriptState::Disabled,
        (Some(_), true) => ScriptState::Active,
        (None, true) => ScriptState::Failed,
    };
    ScriptStatus {
        acr: slot.entry.acr.clone(),
        file: slot.entry.file.clone(),
        enabled: slot.entry.enabled,
        level: slot.entry.level,
        usage: slot.entry.usage,
        revision: slot.current.as_ref().map(|r| r.number),
        digest: slot.current.as_ref().map(|r| r.digest.clone()),
        state,
        last_error: slot.last_error.clone(),
        failures: None,
    }
}

impl ScriptRuntime for ScriptHost {
    fn call(
        &self,
        acr: &str,
        call: HookCall<'_>,
        context: &Arc<HookContext>,
    ) -> Result<HookValue, HookError> {
        let Some(revision) = self.current_revision(acr) else {
            return Err(HookError {
                acr: acr.to_owned(),
                hook: call.name(),
                kind: HookFailureKind::NotLoaded,
                message: format!("no serving revision of {acr}"),
            });
        };
        let hook = call.name();
        let started = Instant::now();
        let refused_before = context.refused_by_policy();
        let mut result = self.run(&revision, call, context);
        if let Err(error) = &mut result {
            // The host refused what the hook asked (a locked SMS factor) and the hook stopped
            // there: the policy at work, not a script bug.
            if error.kind == HookFailureKind::Runtime
                && !refused_before
                && context.refused_by_policy()
            {
                error.kind = HookFailureKind::Refused;
            }
        }
        self.services.metrics.hook(
            acr,
            hook,
            started.elapsed().as_secs_f64(),
            result.as_ref().is_err_and(|e| e.kind.is_scripts_fault()),
        );
        if let Err(error) = &result {
            let masked = context.mask(&error.message);
            let login = context.correlation_id.as_str();
            match error.kind {
                HookFailureKind::Refused => tracing::info!(
                    target: "server",
                    acr,
                    login,
                    "refused by the account's policy: {masked} (in {})",
                    error.hook
                ),
                _ => tracing::error!(
                    target: "server",
                    acr,
                    login,
                    "{masked} (in {}, revision {})",
                    error.hook,
                    revision.number
                ),
            }
            // An outage (/health says it) or a refusal by policy is not the script's failure.
            if error.kind.is_scripts_fault() {
                self.record_failure(error, masked);
            }
        }
        result
    }

    fn status(&self, acr: &str) -> AcrStatus {
        let state = self.read_state();
        match state.slots.get(acr) {
            None => AcrStatus::Unknown,
            Some(slot) if !slot.entry.enabled => AcrStatus::Disabled,
            Some(slot) => match (&slot.current, &slot.last_error) {
                (Some(_), _) => AcrStatus::Active {
                    interactive: slot.entry.usage.allows_interactive(),
                    level: slot.entry.level,
                },
                (None, error) => AcrStatus::Unavailable {
                    reason: error.clone().unwrap_or_else(|| "not loaded".into()),
                },
            },
        }
    }

    fn statuses(&self) -> Vec<ScriptStatus> {
        ScriptHost::statuses(self)
    }

    fn sms_circuits(&self) -> Vec<crate::ports::ProviderCircuit> {
        self.providers.circuits()
    }

    fn configured_amr(&self, acr: &str) -> Option<Vec<String>> {
        self.read_state().slots.get(acr)?.entry.amr.clone()
    }

    fn resend_target(&self, acr: &str) -> Option<(Arc<dyn crate::ports::SmsSender>, CodePolicy)> {
        let state = self.read_state();
        let slot = state.slots.get(acr)?;
        let disabled = slot
            .entry
            .properties
            .get(crate::flow::contract::RESEND_ENABLE)
            .is_some_and(|v| v.eq_ignore_ascii_case("false"));
        let revision = slot.current.as_ref().filter(|_| !disabled)?;
        Some((revision.sms.clone(), revision.code_policy))
    }

    fn code_policy(&self, acr: &str) -> Option<CodePolicy> {
        let state = self.read_state();
        Some(state.slots.get(acr)?.current.as_ref()?.code_policy)
    }
}
