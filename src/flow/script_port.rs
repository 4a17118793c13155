//! The script port: the Gluu person-authentication hooks ([`HOOKS`], one table for the host, the
//! load-time checks and the docs), the values they return, and [`ScriptRuntime`], through which
//! the flow runs a script's hooks. The Rhai host implements it; the flow never sees Rhai.
//!
//! It lives in `flow` rather than `ports` because a hook call hands the script the flow's
//! [`HookContext`]: ports know nothing of the flow.

use std::sync::Arc;

use serde::Serialize;

use crate::config::Usage;
use crate::flow::host::HookContext;
use crate::flow::otp::CodePolicy;
use crate::flow::params::RequestParams;
use crate::ports::SmsSender;

/// What an optional hook returns when the script does not define it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDefault {
    /// The hook must be defined.
    Required,
    Unit,
    Bool(bool),
    Int(i64),
    EmptyText,
}

impl HookDefault {
    pub fn value(self) -> Option<HookValue> {
        Some(match self {
            HookDefault::Required => return None,
            HookDefault::Unit => HookValue::Unit,
            HookDefault::Bool(b) => HookValue::Bool(b),
            HookDefault::Int(n) => HookValue::Int(n),
            HookDefault::EmptyText => HookValue::Text(String::new()),
        })
    }

    /// As scripts/README.md writes it.
    pub fn as_doc(self) -> String {
        match self {
            HookDefault::Required => "required".into(),
            HookDefault::Unit => "`()`".into(),
            HookDefault::Bool(b) => format!("`{b}`"),
            HookDefault::Int(n) => format!("`{n}`"),
            HookDefault::EmptyText => "`\"\"`".into(),
        }
    }
}

/// One hook: its name, its parameters in order, and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookSpec {
    pub name: &'static str,
    pub params: &'static [&'static str],
    pub default: HookDefault,
}

impl HookSpec {
    pub fn arity(&self) -> usize {
        self.params.len()
    }

    /// `name(param, ...)`, as the docs show it.
    pub fn signature(&self) -> String {
        format!("{}({})", self.name, self.params.join(", "))
    }
}

/// Every hook the host calls. The Rhai host passes exactly these parameters, the load-time
/// checks refuse a wrong parameter count, and a test holds scripts/README.md to this table.
pub const HOOKS: [HookSpec; 12] = [
    HookSpec {
        name: "init",
        params: &["config"],
        default: HookDefault::Bool(true),
    },
    HookSpec {
        name: "destroy",
        params: &["config"],
        default: HookDefault::Bool(true),
    },
    HookSpec {
        name: "getApiVersion",
        params: &[],
        default: HookDefault::Int(11),
    },
    HookSpec {
        name: "isValidAuthenticationMethod",
        params: &["usage", "config"],
        default: HookDefault::Bool(true),
    },
    HookSpec {
        name: "getAlternativeAuthenticationMethod",
        params: &["usage", "config"],
        default: HookDefault::Unit,
    },
    HookSpec {
        name: "prepareForStep",
        params: &["config", "params", "step"],
        default: HookDefault::Bool(true),
    },
    HookSpec {
        name: "authenticate",
        params: &["config", "params", "step"],
        default: HookDefault::Required,
    },
    HookSpec {
        name: "getCountAuthenticationSteps",
        params: &["config"],
        default: HookDefault::Int(1),
    },
    HookSpec {
        name: "getPageForStep",
        params: &["config", "step"],
        default: HookDefault::EmptyText,
    },
    HookSpec {
        name: "getNextStep",
        params: &["config", "params", "step"],
        default: HookDefault::Int(-1),
    },
    HookSpec {
        name: "getExtraParametersForStep",
        params: &["config", "step"],
        default: HookDefault::Unit,
    },
    HookSpec {
        name: "logout",
        params: &["config", "params"],
        default: HookDefault::Bool(true),
    },
];

/// The spec of the hook called `name`, if it is one.
pub fn hook_named(name: &str) -> Option<&'static HookSpec> {
    HOOKS.iter().find(|h| h.name == name)
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
    /// This call's row of [`HOOKS`].
    pub fn spec(&self) -> &'static HookSpec {
        let index = match self {
            HookCall::Init => 0,
            HookCall::Destroy => 1,
            HookCall::GetApiVersion => 2,
            HookCall::IsValidAuthenticationMethod { .. } => 3,
            HookCall::GetAlternativeAuthenticationMethod { .. } => 4,
            HookCall::PrepareForStep { .. } => 5,
            HookCall::Authenticate { .. } => 6,
            HookCall::GetCountAuthenticationSteps => 7,
            HookCall::GetPageForStep { .. } => 8,
            HookCall::GetNextStep { .. } => 9,
            HookCall::GetExtraParametersForStep { .. } => 10,
            HookCall::Logout { .. } => 11,
        };
        &HOOKS[index]
    }

    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// What an optional hook the script does not define returns. `None`: the hook is required.
    pub fn default_value(&self) -> Option<HookValue> {
        self.spec().default.value()
    }

    /// The usage code Gluu passes to `isValidAuthenticationMethod` for interactive logins.
    pub fn interactive_usage() -> i64 {
        Usage::Interactive.code()
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

    /// The value as a script author would name it, for messages ("init returned nothing").
    pub fn in_script_terms(&self) -> String {
        match self {
            HookValue::Unit => "nothing".into(),
            HookValue::Bool(b) => b.to_string(),
            HookValue::Int(n) => n.to_string(),
            HookValue::Text(text) => format!("the string {text:?}"),
            HookValue::List(_) => "an array".into(),
            HookValue::Other(kind) => format!("a value of type {kind}"),
        }
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
    /// The state store or the user directory did not answer (the script is not at fault).
    Unavailable,
    /// The host refused what the hook asked by policy (`otp::issue` for an account whose SMS
    /// factor is locked or disabled): the sign-in's page says why; not the script's fault.
    Refused,
}

impl HookFailureKind {
    /// Whether the script is to blame (logged as an error, counted in /health and the metrics):
    /// not when the store or directory is down, nor when an account's policy refused.
    pub fn is_scripts_fault(self) -> bool {
        !matches!(
            self,
            HookFailureKind::Unavailable | HookFailureKind::Refused
        )
    }
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

impl AcrStatus {
    /// The one answer to "may a browser sign in with this acr now".
    pub fn is_interactive(&self) -> bool {
        matches!(
            self,
            AcrStatus::Active {
                interactive: true,
                ..
            }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptState {
    /// A revision serves (the latest edit may still have been refused: see `last_error`).
    Active,
    /// A revision serves, but its hooks failed at run time in the last few minutes.
    Degraded,
    /// Enabled but nothing serves: it never loaded, or its file is gone.
    Failed,
    Disabled,
}

/// Hook calls of one acr that failed at run time (script errors, limits, deadlines).
#[derive(Debug, Clone, Serialize)]
pub struct HookFailures {
    /// Failures since the serving revision was loaded.
    pub total: u64,
    /// Failures in the last [`RECENT_FAILURE_SECONDS`]: while there are any, the acr is degraded.
    pub recent: usize,
    pub last: LastFailure,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastFailure {
    /// Unix time, seconds.
    pub at: u64,
    pub seconds_ago: u64,
    pub hook: &'static str,
    /// `scripts/NAME.rhai:LINE:COL: what` where Rhai gives a position.
    pub error: String,
}

/// How long a failure keeps an acr degraded.
pub const RECENT_FAILURE_SECONDS: u64 = 300;

/// One row of `/health` and `gatehouse check`.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptStatus {
    pub acr: String,
    pub file: String,
    pub enabled: bool,
    pub level: i64,
    pub usage: Usage,
    pub revision: Option<u64>,
    pub digest: Option<String>,
    pub state: ScriptState,
    pub last_error: Option<String>,
    /// Run-time failures of the serving revision, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<HookFailures>,
}

/// The port through which the flow (and the web layer's health page) runs and inspects scripts.
pub trait ScriptRuntime: Send + Sync {
    fn call(
        &self,
        acr: &str,
        call: HookCall<'_>,
        context: &Arc<HookContext>,
    ) -> Result<HookValue, HookError>;
    fn status(&self, acr: &str) -> AcrStatus;
    /// Every configured script, in configuration order.
    fn statuses(&self) -> Vec<ScriptStatus>;
    /// The circuit breakers of the SMS providers scripts send through.
    fn sms_circuits(&self) -> Vec<crate::ports::ProviderCircuit> {
        Vec::new()
    }
    /// The serving revision's SMS provider and code policy, for a resend; `None` when the acr
    /// does not serve or its `ResendEnable` property is "false".
    fn resend_target(&self, acr: &str) -> Option<(Arc<dyn SmsSender>, CodePolicy)>;
    /// The serving revision's code policy (`[otp]` tightened by the script's entry).
    fn code_policy(&self, acr: &str) -> Option<CodePolicy>;
    /// The `amr` the script's entry configures for external verifiers (e.g. Stytch), if any.
    fn configured_amr(&self, acr: &str) -> Option<Vec<String>>;

    /// Enabled interactive methods that serve, in level order (discovery, acr choice, home page).
    fn interactive_acrs(&self) -> Vec<String> {
        let mut scripts: Vec<ScriptStatus> = self
            .statuses()
            .into_iter()
            .filter(|s| self.status(&s.acr).is_interactive())
            .collect();
        scripts.sort_by(|a, b| a.level.cmp(&b.level).then_with(|| a.acr.cmp(&b.acr)));
        scripts.into_iter().map(|s| s.acr).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hook table in scripts/README.md is this table: same hooks, parameters and defaults.
    #[test]
    fn the_script_readme_lists_every_hook_as_the_host_calls_it() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/README.md"),
        )
        .unwrap();
        for hook in HOOKS {
            let row_start = format!("| `{}` |", hook.signature());
            let row = readme
                .lines()
                .find(|l| l.starts_with(&row_start))
                .unwrap_or_else(|| panic!("scripts/README.md has no row {row_start}"));
            let default = row.rsplit('|').nth(1).unwrap_or("").trim();
            assert!(
                default.starts_with(&hook.default.as_doc()),
                "{}: README says {default:?}, the host {:?}",
                hook.name,
                hook.default.as_doc()
            );
        }
    }
}
