//! The host API scripts call: `log::`, `identity::`, `users::`, `otp::`, `sms::` and the opaque
//! `Secret` type. Each function reaches the running hook's [`HookContext`]; none keeps state.

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString, Module, Position,
};

use crate::flow::hooks::HookContext;
use crate::flow::otp::OtpCheck;
use crate::ports::{mask_phone, AttributeChange};
use crate::script::sandbox::with_context;
use crate::secret::Secret;

/// A secret as scripts see it: prints as `***`, has no getter, can only be handed to the host.
#[derive(Clone)]
pub struct ScriptSecret(pub Secret);

type HostResult<T> = Result<T, Box<EvalAltResult>>;

fn failure(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        Position::NONE,
    ))
}

fn host_failure(function: &str, error: impl std::fmt::Display) -> Box<EvalAltResult> {
    failure(format!("{function}: {error}"))
}

/// Plain text from a script value; secrets are refused where plain text is needed.
fn plain_text(function: &str, value: &Dynamic) -> HostResult<String> {
    if value.is::<ScriptSecret>() {
        return Err(failure(format!(
            "{function}: a secret cannot be used as plain text here"
        )));
    }
    Ok(if value.is_string() {
        value.clone().into_string().unwrap_or_default()
    } else {
        value.to_string()
    })
}

fn optional_text(value: Option<String>) -> Dynamic {
    value.map_or(Dynamic::UNIT, Dynamic::from)
}

fn register_log(engine: &mut Engine) {
    let mut module = Module::new();
    for (name, level) in [
        ("info", tracing::Level::INFO),
        ("warn", tracing::Level::WARN),
        ("error", tracing::Level::ERROR),
        ("debug", tracing::Level::DEBUG),
    ] {
        FuncRegistration::new(name).set_into_module(
            &mut module,
            move |message: Dynamic| -> HostResult<()> {
                with_context("log", |c| {
                    c.log(level, &message.to_string());
                    Ok(())
                })
            },
        );
    }
    engine.register_static_module("log", module.into());
}

fn register_identity(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("user").set_into_module(&mut module, || -> HostResult<Dynamic> {
        with_context("identity::user", |c| Ok(optional_text(c.user())))
    });
    FuncRegistration::new("set_user").set_into_module(
        &mut module,
        |username: &str| -> HostResult<bool> {
            with_context("identity::set_user", |c| {
                c.set_user(username)
                    .map_err(|e| host_failure("identity::set_user", e))
            })
        },
    );
    FuncRegistration::new("set").set_into_module(
        &mut module,
        |name: &str, value: Dynamic| -> HostResult<()> {
            with_context("identity::set", |c| {
                c.set_working(name, plain_text("identity::set", &value)?);
                Ok(())
            })
        },
    );
    FuncRegistration::new("get").set_into_module(
        &mut module,
        |name: &str| -> HostResult<Dynamic> {
            with_context("identity::get", |c| Ok(optional_text(c.working(name))))
        },
    );
    FuncRegistration::new("message").set_into_module(
        &mut module,
        |text: Dynamic| -> HostResult<()> {
            with_context("identity::message", |c| {
                c.set_message(&plain_text("identity::message", &text)?);
                Ok(())
            })
        },
    );
    engine.register_static_module("identity", module.into());
}

fn user_attribute<R>(
    context: &HookContext,
    function: &str,
    username: &str,
    attribute: &str,
    pick: impl FnOnce(&[String]) -> R,
) -> HostResult<Option<R>> {
    let user = context
        .find_user(username)
        .map_err(|e| host_failure(function, e))?;
    Ok(user.and_then(|u| u.attributes.get(attribute).map(|values| pick(values))))
}

fn register_users(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("authenticate").set_into_module(
        &mut module,
        |username: Dynamic, password: Dynamic| -> HostResult<bool> {
            with_context("users::authenticate", |c| {
                let Ok(username) = username.into_string() else {
                    return Ok(false);
                };
                let password = if let Some(secret) = password.clone().try_cast::<ScriptSecret>() {
                    secret.0
                } else if let Ok(text) = password.into_string() {
                    Secret::new(text)
                } else {
                    return Ok(false);
                };
                c.authenticate_user(&username, &password)
                    .map_err(|e| host_failure("users::authenticate", e))
            })
        },
    );
    FuncRegistration::new("exists").set_into_module(
        &mut module,
        |username: &str| -> HostResult<bool> {
            with_context("users::exists", |c| {
                Ok(c.find_user(username)
                    .map_err(|e| host_failure("users::exists", e))?
                    .is_some())
            })
        },
    );
    FuncRegistration::new("get").set_into_module(
        &mut module,
        |username: &str, attribute: &str| -> HostResult<Dynamic> {
            with_context("users::get", |c| {
                let first =
                    user_attribute(c, "users::get", username, attribute, |v| v.first().cloned())?;
                Ok(optional_text(first.flatten()))
            })
        },
    );
    FuncRegistration::new("get_all").set_into_module(
        &mut module,
        |username: &str, attribute: &str| -> HostResult<Array> {
            with_context("users::get_all", |c| {
                let values =
                    user_attribute(c, "users::get_all", username, attribute, |v| v.to_vec())?;
                Ok(values
                    .unwrap_or_default()
                    .into_iter()
                    .map(Dynamic::from)
                    .collect())
            })
        },
    );
    FuncRegistration::new("find_by").set_into_module(
        &mut module,
        |attribute: &str, value: &str| -> HostResult<Array> {
            with_context("users::find_by", |c| {
                let users = c
                    .find_users_by(attribute, value)
                    .map_err(|e| host_failure("users::find_by", e))?;
                Ok(users
                    .into_iter()
                    .map(|u| Dynamic::from(u.username))
                    .collect())
            })
        },
    );
    FuncRegistration::new("set").set_into_module(
        &mut module,
        |username: &str, attribute: &str, value: Dynamic| -> HostResult<()> {
            with_context("users::set", |c| {
                let values = if value.is_array() {
                    let array = value.into_array().unwrap_or_default();
                    array
                        .iter()
                        .map(|v| plain_text("users::set", v))
                        .collect::<HostResult<Vec<_>>>()?
                } else if value.is_unit() {
                    Vec::new()
                } else {
                    vec![plain_text("users::set", &value)?]
                };
                let change = AttributeChange::Replace {
                    attribute: attribute.to_owned(),
                    values,
                };
                c.update_user(username, change)
                    .map_err(|e| host_failure("users::set", e))
            })
        },
    );
    for (name, add) in [("add", true), ("remove", false)] {
        FuncRegistration::new(name).set_into_module(
            &mut module,
            move |username: &str, attribute: &str, value: Dynamic| -> HostResult<()> {
                let function = if add { "users::add" } else { "users::remove" };
                with_context(function, |c| {
                    let (attribute, value) = (attribute.to_owned(), plain_text(function, &value)?);
                    let change = if add {
                        AttributeChange::Add { attribute, value }
                    } else {
                        AttributeChange::Remove { attribute, value }
                    };
                    c.update_user(username, change)
                        .map_err(|e| host_failure(function, e))
                })
            },
        );
    }
    engine.register_static_module("users", module.into());
}

fn check_name(check: &OtpCheck) -> &'static str {
    match check {
        OtpCheck::Accepted => "accepted",
        OtpCheck::Rejected { .. } => "rejected",
        OtpCheck::Burned => "burned",
        OtpCheck::Expired => "expired",
        OtpCheck::NoCode => "no_code",
    }
}

fn verify_passcode(c: &HookContext, passcode: &Dynamic) -> HostResult<OtpCheck> {
    // A missing or non-text passcode is still a guess: it counts against the code.
    let text = passcode.clone().into_string().unwrap_or_default();
    c.verify_code(&text)
        .map_err(|e| host_failure("otp::verify", e))
}

fn register_otp(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("issue").set_into_module(
        &mut module,
        |digits: i64| -> HostResult<String> {
            with_context("otp::issue", |c| {
                let digits = u32::try_from(digits)
                    .map_err(|_| failure("otp::issue: digits must be positive"))?;
                c.issue_code(digits, None)
                    .map_err(|e| host_failure("otp::issue", e))
            })
        },
    );
    FuncRegistration::new("issue").set_into_module(
        &mut module,
        |digits: i64, ttl_seconds: i64| -> HostResult<String> {
            with_context("otp::issue", |c| {
                let digits = u32::try_from(digits)
                    .map_err(|_| failure("otp::issue: digits must be positive"))?;
                let ttl = u64::try_from(ttl_seconds)
                    .map_err(|_| failure("otp::issue: lifetime must be positive"))?;
                c.issue_code(digits, Some(ttl))
                    .map_err(|e| host_failure("otp::issue", e))
            })
        },
    );
    FuncRegistration::new("verify").set_into_module(
        &mut module,
        |passcode: Dynamic| -> HostResult<bool> {
            with_context("otp::verify", |c| {
                Ok(verify_passcode(c, &passcode)? == OtpCheck::Accepted)
            })
        },
    );
    FuncRegistration::new("check").set_into_module(
        &mut module,
        |passcode: Dynamic| -> HostResult<String> {
            with_context("otp::check", |c| {
                Ok(check_name(&verify_passcode(c, &passcode)?).to_owned())
            })
        },
    );
    engine.register_static_module("otp", module.into());
}

fn register_sms(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("send").set_into_module(
        &mut module,
        |to: Dynamic, text: Dynamic| -> HostResult<bool> {
            with_context("sms::send", |c| {
                let to = plain_text("sms::send", &to)?;
                let text = plain_text("sms::send", &text)?;
                if to.is_empty() {
                    return Err(failure("sms::send: no destination number"));
                }
                // The host logs the failure (masked); the script decides what the user sees.
                Ok(c.send_sms(&to, &text).is_ok())
            })
        },
    );
    FuncRegistration::new("mask").set_into_module(&mut module, |number: &str| mask_phone(number));
    engine.register_static_module("sms", module.into());
}

fn register_secret_type(engine: &mut Engine) {
    engine
        .register_type_with_name::<ScriptSecret>("Secret")
        .register_fn("to_string", |_: &mut ScriptSecret| {
            ImmutableString::from("***")
        })
        .register_fn("to_debug", |_: &mut ScriptSecret| {
            ImmutableString::from("***")
        })
        .register_fn("is_empty", |secret: &mut ScriptSecret| secret.0.is_empty());
}

pub(crate) fn register(engine: &mut Engine) {
    register_secret_type(engine);
    register_log(engine);
    register_identity(engine);
    register_users(engine);
    register_otp(engine);
    register_sms(engine);
}
