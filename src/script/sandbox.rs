//! The one place a Rhai engine is built: every limit, no `eval`, no modules, strict variables,
//! a wall-clock deadline per hook call, and the host API registered.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Position};

use crate::config::SandboxConfig;
use crate::flow::host::HookContext;
use crate::flow::otp::CodePolicy;
use crate::outbound::HttpBridge;
use crate::ports::SmsSender;
use crate::script::api;

/// What runs on this thread right now: set around every hook call and top-level evaluation.
pub(crate) struct ActiveCall {
    pub context: Arc<HookContext>,
    /// The running revision's SMS provider.
    pub sms: Arc<dyn SmsSender>,
    pub http: Arc<HttpBridge>,
    /// The running revision's code policy.
    pub code_policy: CodePolicy,
    /// The entry lets the script write users other than the sign-in's own.
    pub write_other_users: bool,
    /// The running revision's secret values and where they may be sent.
    pub secrets: Arc<SecretBinding>,
    pub deadline: Instant,
    /// The thread's net allocated bytes past which the hook is stopped.
    pub memory_ceiling: i64,
    /// Evaluating the script's top level at load: host calls and printing are refused.
    pub at_top_level: bool,
    /// The top level tried to print or call the host.
    pub top_level_side_effect: bool,
}

thread_local! {
    static ACTIVE: RefCell<Option<ActiveCall>> = const { RefCell::new(None) };
    /// The running call's memory ceiling, apart from `ACTIVE` so that the frequent check is
    /// one cell read.
    static MEMORY_CEILING: Cell<i64> = const { Cell::new(i64::MAX) };
}

/// The ceiling of the call now active on this thread (none: unbounded).
fn set_ceiling(call: Option<&ActiveCall>) {
    MEMORY_CEILING.with(|c| c.set(call.map_or(i64::MAX, |call| call.memory_ceiling)));
}

/// Restores the previous call state when dropped (hooks never nest today, but stay correct if they do).
pub(crate) struct ActiveGuard(Option<ActiveCall>);

pub(crate) fn enter(call: ActiveCall) -> ActiveGuard {
    set_ceiling(Some(&call));
    ActiveGuard(ACTIVE.with(|a| a.replace(Some(call))))
}

impl ActiveGuard {
    /// Ends the call and says whether the top level had side effects.
    pub fn finish(mut self) -> bool {
        let previous = self.0.take();
        set_ceiling(previous.as_ref());
        ACTIVE
            .with(|a| a.replace(previous))
            .is_some_and(|c| c.top_level_side_effect)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        set_ceiling(previous.as_ref());
        ACTIVE.with(|a| a.replace(previous));
    }
}

/// What a host function may use during a hook call.
pub(crate) struct CallEnv {
    pub context: Arc<HookContext>,
    pub sms: Arc<dyn SmsSender>,
    pub http: Arc<HttpBridge>,
    pub code_policy: CodePolicy,
    pub write_other_users: bool,
    pub secrets: Arc<SecretBinding>,
}

/// A revision's secrets and the only hosts `http::` may send them to.
#[derive(Debug, Default)]
pub(crate) struct SecretBinding {
    pub values: Vec<String>,
    pub hosts: Vec<String>,
}

/// Runs `f` with the current hook's context; an error if the host is called at the top level.
pub(crate) fn with_context<R>(
    function: &str,
    f: impl FnOnce(&HookContext) -> Result<R, Box<EvalAltResult>>,
) -> Result<R, Box<EvalAltResult>> {
    with_call(function, |call| f(&call.context))
}

/// Like [`with_context`], with the running revision's SMS provider and the HTTP bridge.
pub(crate) fn with_call<R>(
    function: &str,
    f: impl FnOnce(&CallEnv) -> Result<R, Box<EvalAltResult>>,
) -> Result<R, Box<EvalAltResult>> {
    let call = ACTIVE.with(|a| {
        let mut active = a.borrow_mut();
        match active.as_mut() {
            Some(call) if call.at_top_level => {
                call.top_level_side_effect = true;
                Err(format!(
                    "{function} cannot be called at the top level of a script: the top level may only \
                     declare constants and functions; call it from init() or a hook"
                ))
            }
            Some(call) => Ok(CallEnv {
                context: call.context.clone(),
                sms: call.sms.clone(),
                http: call.http.clone(),
                code_policy: call.code_policy,
                write_other_users: call.write_other_users,
                secrets: call.secrets.clone(),
            }),
            None => Err(format!("{function} called outside a hook")),
        }
    });
    match call {
        Ok(call) => f(&call),
        Err(message) => Err(Box::new(EvalAltResult::ErrorRuntime(
            message.into(),
            Position::NONE,
        ))),
    }
}

/// Marker carried by the termination error when a hook runs out of time.
pub(crate) const DEADLINE_TOKEN: &str = "gatehouse: hook deadline exceeded";
/// Marker carried by the termination error when a hook grows the process past its budget.
pub(crate) const MEMORY_TOKEN: &str = "gatehouse: hook memory budget exceeded";
/// Start of the termination error raised when the state store or the user directory does not
/// answer: it stops the hook (a script cannot catch it and call it a wrong password).
pub(crate) const UNAVAILABLE_TOKEN: &str = "gatehouse: service unavailable: ";

/// The ceiling for a hook starting now on this thread: `budget_mb` above what it holds.
pub(crate) fn memory_ceiling(budget_mb: u64) -> i64 {
    crate::base::memory::thread_net_bytes()
        .saturating_add((budget_mb as i64).saturating_mul(1 << 20))
}

fn log_print(level: tracing::Level, text: &str) {
    let context = ACTIVE.with(|a| {
        let mut active = a.borrow_mut();
        let call = active.as_mut()?;
        if call.at_top_level {
            call.top_level_side_effect = true;
            return None;
        }
        Some(call.context.clone())
    });
    if let Some(context) = context {
        context.log(level, text);
    }
}

fn register_checked_replace(engine: &mut Engine, max: usize) {
    fn checked(
        text: &mut ImmutableString,
        find: &str,
        with: &str,
        max: usize,
    ) -> Result<(), Box<EvalAltResult>> {
        if find.is_empty() {
            return Ok(());
        }
        let count = text.matches(find).count();
        let size = text.len() - count * find.len() + count * with.len();
        if max > 0 && size > max {
            return Err(Box::new(EvalAltResult::ErrorDataTooLarge(
                format!("replace would make a string of {size} bytes (sandbox.max_string_size is {max})"),
                Position::NONE,
            )));
        }
        *text = text.replace(find, with).into();
        Ok(())
    }
    engine.register_fn(
        "replace",
        move |text: &mut ImmutableString, find: &str, with: &str| checked(text, find, with, max),
    );
    engine.register_fn(
        "replace",
        move |text: &mut ImmutableString, find: &str, with: char| {
            checked(text, find, with.encode_utf8(&mut [0; 4]), max)
        },
    );
    engine.register_fn(
        "replace",
        move |text: &mut ImmutableString, find: char, with: &str| {
            checked(text, find.encode_utf8(&mut [0; 4]), with, max)
        },
    );
    engine.register_fn(
        "replace",
        move |text: &mut ImmutableString, find: char, with: char| {
            checked(
                text,
                find.encode_utf8(&mut [0; 4]),
                with.encode_utf8(&mut [0; 4]),
                max,
            )
        },
    );
}

fn no_sleep() -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        "sleep is not available to scripts: every hook has a deadline ([sandbox] hook_timeout_ms)"
            .into(),
        Position::NONE,
    ))
}

/// Builds the sandboxed engine every script runs in (tests use this same builder).
pub fn build_engine(limits: &SandboxConfig) -> Engine {
    let mut engine = Engine::new();
    engine.set_module_resolver(DummyModuleResolver::new());
    engine.set_max_modules(0);
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.disable_symbol("export");
    engine.set_strict_variables(true);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth / 2);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.on_progress(|operations| {
        // Memory is checked every 16 operations (two thread-local reads): one operation within
        // the size limits adds at most a few hundred KiB, so the overshoot stays a few MiB.
        if operations % 16 == 0
            && crate::base::memory::thread_net_bytes() > MEMORY_CEILING.with(Cell::get)
        {
            return Some(Dynamic::from(MEMORY_TOKEN));
        }
        // Reading the clock costs more than an operation: look every 256 operations.
        if operations % 256 != 0 {
            return None;
        }
        let expired = ACTIVE.with(|a| {
            a.borrow()
                .as_ref()
                .is_some_and(|c| Instant::now() >= c.deadline)
        });
        expired.then(|| Dynamic::from(DEADLINE_TOKEN))
    });
    // Rhai checks a string's size after `replace` built it: a long replacement repeated can
    // allocate gigabytes first. These versions refuse before building.
    register_checked_replace(&mut engine, limits.max_string_size);
    // Rhai's `sleep` blocks the thread past any deadline the progress callback can enforce.
    engine.register_fn("sleep", |_seconds: i64| -> Result<(), Box<EvalAltResult>> {
        Err(no_sleep())
    });
    engine.register_fn("sleep", |_seconds: f64| -> Result<(), Box<EvalAltResult>> {
        Err(no_sleep())
    });
    engine.on_print(|text| log_print(tracing::Level::INFO, text));
    engine.on_debug(|text, _source, _position| log_print(tracing::Level::DEBUG, text));
    api::register(&mut engine);
    engine
}
