//! The host API scripts call: `log::`, `identity::`, `users::`, `otp::`, `sms::` and the opaque
//! `Secret` type. Each function reaches the running hook's [`HookContext`]; none keeps state.

use rhai::Map;
use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString, Module, Position,
};

use crate::base::phone::mask_phone;
use crate::base::Secret;
use crate::flow::host::{HookContext, HostError};
use crate::flow::otp::OtpCheck;
use crate::outbound::{redacted, Auth, Body, MaybeSecret, Method, OutboundRequest};
use crate::ports::AttributeChange;
use crate::script::sandbox::{with_call, with_context, CallEnv, UNAVAILABLE_TOKEN};

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

fn host_failure(function: &str, error: impl std::fmt::Display + 'static) -> Box<EvalAltResult> {
    let outage = (&error as &dyn std::any::Any)
        .downcast_ref::<HostError>()
        .is_some_and(HostError::is_unavailable);
    if outage {
        // Not catchable: an outage ends the hook, and the sign-in answers 503.
        return Box::new(EvalAltResult::ErrorTerminated(
            format!("{UNAVAILABLE_TOKEN}{function}: {error}").into(),
            Position::NONE,
        ));
    }
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
    FuncRegistration::new("set_phone_user").set_into_module(
        &mut module,
        |number: Dynamic| -> HostResult<Dynamic> {
            with_context("identity::set_phone_user", |c| {
                let number = plain_text("identity::set_phone_user", &number)?;
                Ok(optional_text(c.set_phone_user(&number)))
            })
        },
    );
    FuncRegistration::new("set").set_into_module(
        &mut module,
        |name: &str, value: Dynamic| -> HostResult<()> {
            with_context("identity::set", |c| {
                c.set_working(name, plain_text("identity::set", &value)?)
                    .map_err(|e| host_failure("identity::set", e))?;
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
    FuncRegistration::new("claim").set_into_module(
        &mut module,
        |name: &str, value: Dynamic| -> HostResult<()> {
            with_context("identity::claim", |c| {
                let value = to_json(&value, false)?;
                let plain = |v: &serde_json::Value| {
                    matches!(
                        v,
                        serde_json::Value::String(_)
                            | serde_json::Value::Number(_)
                            | serde_json::Value::Bool(_)
                    )
                };
                let allowed = plain(&value)
                    || value.as_array().is_some_and(|items| items.iter().all(plain));
                if !allowed {
                    return Err(failure(
                        "identity::claim: a claim is a string, a number, a boolean or an array of them",
                    ));
                }
                c.add_claim(name, value)
                    .map_err(|e| host_failure("identity::claim", e))
            })
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
            with_call("users::set", |call| {
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
                call.context
                    .update_user(username, change, call.write_other_users)
                    .map_err(|e| host_failure("users::set", e))
            })
        },
    );
    for (name, add) in [("add", true), ("remove", false)] {
        FuncRegistration::new(name).set_into_module(
            &mut module,
            move |username: &str, attribute: &str, value: Dynamic| -> HostResult<()> {
                let function = if add { "users::add" } else { "users::remove" };
                with_call(function, |call| {
                    let (attribute, value) = (attribute.to_owned(), plain_text(function, &value)?);
                    let change = if add {
                        AttributeChange::Add { attribute, value }
                    } else {
                        AttributeChange::Remove { attribute, value }
                    };
                    call.context
                        .update_user(username, change, call.write_other_users)
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
        OtpCheck::Locked { .. } => "locked",
        OtpCheck::Disabled => "disabled",
    }
}

fn verify_passcode(c: &HookContext, passcode: &Dynamic) -> HostResult<OtpCheck> {
    // A missing or non-text passcode is still a guess: it counts against the code.
    let text = passcode.clone().into_string().unwrap_or_default();
    c.verify_code(&text)
        .map_err(|e| host_failure("otp::verify", e))
}

/// `otp::issue()`, `otp::issue(length)`, `otp::issue(length, ttl_seconds)`: only tighter than the policy.
fn issue(length: Option<i64>, ttl_seconds: Option<i64>) -> HostResult<String> {
    with_call("otp::issue", |call| {
        let length = length
            .map(|l| {
                u32::try_from(l).map_err(|_| failure("otp::issue: the length must be positive"))
            })
            .transpose()?;
        let ttl = ttl_seconds
            .map(|t| {
                u64::try_from(t).map_err(|_| failure("otp::issue: the lifetime must be positive"))
            })
            .transpose()?;
        call.context
            .issue_code(&call.code_policy, length, ttl)
            .map_err(|e| host_failure("otp::issue", e))
    })
}

/// The default text of `otp::message` when the script's properties give none.
const DEFAULT_MESSAGE: &str = "Your code is {code}. It expires in {minutes} minutes.";

/// `otp::message(config, code)`: the text in the user's language (`message.fr`, `message.de`...
/// properties, by Accept-Language; else `message`; else English), with `{code}` and `{minutes}`
/// filled in and, by default, the WebOTP last line `@HOST #CODE`.
fn message_text(call: &CallEnv, config: &Map, code: &str) -> HostResult<String> {
    let text_of = |name: &str| config.get(name).and_then(|v| v.clone().into_string().ok());
    let template = call
        .context
        .languages()
        .iter()
        .find_map(|language| text_of(&format!("message.{language}")))
        .or_else(|| text_of("message"))
        .unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());
    let minutes = call.code_policy.ttl_seconds.div_ceil(60).to_string();
    let mut text = template
        .replace("{code}", code)
        .replace("{minutes}", &minutes);
    if let Some(host) = call.context.webotp_host() {
        text.push_str(&format!("\n\n@{host} #{code}"));
    }
    Ok(text)
}

fn register_otp(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("message").set_into_module(
        &mut module,
        |config: Map, code: &str| -> HostResult<String> {
            with_call("otp::message", |call| message_text(call, &config, code))
        },
    );
    FuncRegistration::new("issue").set_into_module(&mut module, || issue(None, None));
    FuncRegistration::new("issue")
        .set_into_module(&mut module, |length: i64| issue(Some(length), None));
    FuncRegistration::new("issue").set_into_module(&mut module, |length: i64, ttl_seconds: i64| {
        issue(Some(length), Some(ttl_seconds))
    });
    FuncRegistration::new("issue_lasting").set_into_module(&mut module, |ttl_seconds: i64| {
        issue(None, Some(ttl_seconds))
    });
    FuncRegistration::new("forget").set_into_module(&mut module, || -> HostResult<()> {
        with_context("otp::forget", |c| {
            c.forget_code().map_err(|e| host_failure("otp::forget", e))
        })
    });
    FuncRegistration::new("backup").set_into_module(
        &mut module,
        |passcode: Dynamic| -> HostResult<String> {
            with_context("otp::backup", |c| {
                let text = passcode.into_string().unwrap_or_default();
                c.use_backup_code(&text)
                    .map(str::to_owned)
                    .map_err(|e| host_failure("otp::backup", e))
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
            with_call("sms::send", |call| {
                let to = plain_text("sms::send", &to)?;
                let text = plain_text("sms::send", &text)?;
                if to.is_empty() {
                    return Err(failure("sms::send: no destination number"));
                }
                // The host logs the failure (masked); the script decides what the user sees.
                Ok(call.context.send_sms(call.sms.as_ref(), &to, &text).is_ok())
            })
        },
    );
    FuncRegistration::new("normalize").set_into_module(
        &mut module,
        |number: Dynamic| -> HostResult<Dynamic> {
            with_context("sms::normalize", |c| {
                let text = number.into_string().unwrap_or_default();
                Ok(optional_text(c.normalize_phone(&text)))
            })
        },
    );
    FuncRegistration::new("mask").set_into_module(&mut module, |number: &str| {
        // Outside a hook call (no context) the default of four digits applies.
        with_context("sms::mask", |c| Ok(c.mask_phone(number)))
            .unwrap_or_else(|_| mask_phone(number))
    });
    engine.register_static_module("sms", module.into());
}

/// Script values to JSON; secrets are sent as their value (they are going to the provider).
fn to_json(value: &Dynamic, allow_secrets: bool) -> HostResult<serde_json::Value> {
    use serde_json::Value;
    Ok(if value.is_unit() {
        Value::Null
    } else if let Some(b) = value.clone().try_cast::<bool>() {
        Value::Bool(b)
    } else if let Some(i) = value.clone().try_cast::<i64>() {
        Value::from(i)
    } else if let Some(f) = value.clone().try_cast::<f64>() {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    } else if let Some(secret) = value.clone().try_cast::<ScriptSecret>() {
        if !allow_secrets {
            return Err(failure("json::encode: a secret cannot be encoded"));
        }
        Value::String(secret.0.expose().to_owned())
    } else if value.is_string() {
        Value::String(value.clone().into_string().unwrap_or_default())
    } else if value.is_array() {
        Value::Array(
            value
                .clone()
                .into_array()
                .unwrap_or_default()
                .iter()
                .map(|v| to_json(v, allow_secrets))
                .collect::<HostResult<_>>()?,
        )
    } else if value.is_map() {
        let map = value.clone().cast::<Map>();
        Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.to_string(), to_json(v, allow_secrets)?)))
                .collect::<HostResult<_>>()?,
        )
    } else {
        return Err(failure(format!(
            "http: cannot send a {} as JSON",
            value.type_name()
        )));
    })
}

fn from_json(value: &serde_json::Value) -> Dynamic {
    use serde_json::Value;
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || Dynamic::from_float(n.as_f64().unwrap_or(0.0)),
            Dynamic::from_int,
        ),
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(from_json).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), from_json(v)))
                .collect(),
        ),
    }
}

/// Text or secret, as a value the bridge sends but never shows.
fn maybe_secret(function: &str, value: &Dynamic) -> HostResult<MaybeSecret> {
    if let Some(secret) = value.clone().try_cast::<ScriptSecret>() {
        return Ok(MaybeSecret::Secret(secret.0));
    }
    Ok(MaybeSecret::Plain(plain_text(function, value)?))
}

fn secret_of(function: &str, value: &Dynamic) -> HostResult<Secret> {
    Ok(match maybe_secret(function, value)? {
        MaybeSecret::Plain(text) => Secret::new(text),
        MaybeSecret::Secret(secret) => secret,
    })
}

/// Builds a request from `#{headers, basic, bearer, json, form, body, content_type}`.
fn outbound_request(method: Method, url: &Dynamic, options: &Map) -> HostResult<OutboundRequest> {
    const FUNCTION: &str = "http::request";
    let url = match url.clone().try_cast::<ScriptSecret>() {
        Some(secret) => secret.0,
        None => Secret::new(plain_text(FUNCTION, url)?),
    };
    let mut request = OutboundRequest::new(method, url.expose());
    for (key, value) in options {
        match key.as_str() {
            "headers" => {
                let headers = value.clone().try_cast::<Map>().ok_or_else(|| failure("http: headers must be a map"))?;
                for (name, value) in &headers {
                    request.headers.push((name.to_string(), maybe_secret(FUNCTION, value)?));
                }
            }
            "basic" => {
                let pair = value.clone().try_cast::<Array>().filter(|a| a.len() == 2);
                let pair = pair.ok_or_else(|| failure("http: basic must be [user, password]"))?;
                request.auth = Some(Auth::Basic { user: plain_text(FUNCTION, &pair[0])?, password: secret_of(FUNCTION, &pair[1])? });
            }
            "bearer" => request.auth = Some(Auth::Bearer(secret_of(FUNCTION, value)?)),
            "json" => request.body = Body::Json(to_json(value, true)?),
            "form" => {
                let fields = value.clone().try_cast::<Map>().ok_or_else(|| failure("http: form must be a map"))?;
                let fields = fields.iter().map(|(k, v)| Ok((k.to_string(), maybe_secret(FUNCTION, v)?))).collect::<HostResult<_>>()?;
                request.body = Body::Form(fields);
            }
            "body" => {
                let content_type = options
                    .get("content_type")
                    .map(|c| plain_text(FUNCTION, c))
                    .transpose()?
                    .unwrap_or_else(|| "text/plain; charset=utf-8".into());
                request.body = Body::Text { content_type, text: secret_of(FUNCTION, value)? };
            }
            "content_type" => {}
            other => return Err(failure(format!("http: unknown option {other:?} (headers, basic, bearer, json, form, body, content_type)"))),
        }
    }
    Ok(request)
}

/// Sends and describes the outcome as `#{ok, status, headers, body, json, error}`; transport
/// failures are answers with `ok: false, status: 0`, not script errors.
fn perform(call: &CallEnv, method: Method, url: &Dynamic, options: &Map) -> HostResult<Map> {
    let request = outbound_request(method, url, options)?;
    // The script's secrets (its secret properties, the submitted password) go only to its own
    // destinations: a hostile or careless script cannot post them elsewhere.
    let secrets: Vec<&str> = call
        .secrets
        .values
        .iter()
        .chain(call.context.submitted_secrets())
        .map(String::as_str)
        .filter(|s| s.chars().count() >= crate::flow::host::MIN_MASKED_CHARS)
        .collect();
    let host = url::Url::parse(request.url.expose())
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if !call.secrets.hosts.contains(&host) && request.carries_any(&secrets) {
        let allowed = if call.secrets.hosts.is_empty() {
            "none".to_owned()
        } else {
            call.secrets.hosts.join(", ")
        };
        return Err(failure(format!(
            "http: this request carries a secret (a secret property or the password), which may go only to this script's own destinations ({allowed}), not to {host}; list the host in the entry's secret_hosts to allow it"
        )));
    }
    let started = std::time::Instant::now();
    let result = call.http.send(&request);
    let context = &call.context;
    let (acr, login) = (context.acr.as_str(), context.correlation_id.as_str());
    let shown = url::Url::parse(request.url.expose())
        .map(|u| redacted(&u))
        .unwrap_or_else(|_| "?".into());
    let millis = started.elapsed().as_millis();
    let mut answer = Map::new();
    match result {
        Ok(response) => {
            tracing::info!(target: "server", acr, login, "http {method:?} {shown} -> {} in {millis} ms", response.status);
            answer.insert("ok".into(), Dynamic::from_bool(response.is_success()));
            answer.insert(
                "status".into(),
                Dynamic::from_int(i64::from(response.status)),
            );
            let headers: Map = response
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().into(), Dynamic::from(v.clone())))
                .collect();
            answer.insert("headers".into(), Dynamic::from_map(headers));
            answer.insert(
                "json".into(),
                response.json().as_ref().map_or(Dynamic::UNIT, from_json),
            );
            // An answer that echoes a secret is a secret itself: opaque to the script.
            let echoes_secret = secrets.iter().any(|s| response.body.contains(s));
            if echoes_secret {
                answer.insert("json".into(), Dynamic::UNIT);
                answer.insert(
                    "body".into(),
                    Dynamic::from(ScriptSecret(Secret::new(response.body))),
                );
            } else {
                answer.insert("body".into(), Dynamic::from(response.body));
            }
            answer.insert("error".into(), Dynamic::UNIT);
        }
        Err(error) => {
            let message = context.mask(&error.to_string());
            tracing::warn!(target: "server", acr, login, "http {method:?} failed: {message}");
            answer.insert("ok".into(), Dynamic::from_bool(false));
            answer.insert("status".into(), Dynamic::from_int(0));
            answer.insert("headers".into(), Dynamic::from_map(Map::new()));
            answer.insert("json".into(), Dynamic::UNIT);
            answer.insert("body".into(), Dynamic::from(String::new()));
            answer.insert("error".into(), Dynamic::from(message));
        }
    }
    Ok(answer)
}

fn register_json(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("decode").set_into_module(&mut module, |text: &str| -> Dynamic {
        serde_json::from_str::<serde_json::Value>(text).map_or(Dynamic::UNIT, |v| from_json(&v))
    });
    FuncRegistration::new("encode")
        .set_into_module(&mut module, |value: Dynamic| -> HostResult<String> {
            Ok(to_json(&value, false)?.to_string())
        });
    engine.register_static_module("json", module.into());
}

fn register_http(engine: &mut Engine) {
    let mut module = Module::new();
    for (name, method) in [
        ("get", Method::Get),
        ("post", Method::Post),
        ("put", Method::Put),
        ("patch", Method::Patch),
        ("delete", Method::Delete),
    ] {
        FuncRegistration::new(name).set_into_module(
            &mut module,
            move |url: Dynamic| -> HostResult<Map> {
                with_call("http", |call| perform(call, method, &url, &Map::new()))
            },
        );
        FuncRegistration::new(name).set_into_module(
            &mut module,
            move |url: Dynamic, options: Map| -> HostResult<Map> {
                with_call("http", |call| perform(call, method, &url, &options))
            },
        );
    }
    engine.register_static_module("http", module.into());
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
    register_http(engine);
    register_json(engine);
    crate::script::helpers::register(engine);
}
