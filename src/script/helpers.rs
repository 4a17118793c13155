//! Host modules for what a script author porting a Gluu script reaches for: the request
//! (`request::`), the time (`time::`), digests, MACs, base64 and random tokens (`crypto::`),
//! regular expressions (`text::`), and ID-token claims (`identity::claim`).

use base64::Engine as _;
use rhai::{Array, Dynamic, Engine, EvalAltResult, FuncRegistration, Module, Position};

use crate::base::digest::{hmac_sha256_hex, sha256_hex};
use crate::base::random;
use crate::script::api::ScriptSecret;
use crate::script::sandbox::with_context;

type HostResult<T> = Result<T, Box<EvalAltResult>>;

fn failure(message: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        message.into().into(),
        Position::NONE,
    ))
}

fn optional(value: Option<String>) -> Dynamic {
    value.map_or(Dynamic::UNIT, Dynamic::from)
}

/// The longest pattern `text::` compiles, and the compiled size it may take.
const MAX_PATTERN_CHARS: usize = 512;
const MAX_REGEX_BYTES: usize = 256 * 1024;

fn regex(pattern: &str) -> HostResult<regex::Regex> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(failure(format!(
            "text: a pattern is at most {MAX_PATTERN_CHARS} characters"
        )));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| failure(format!("text: the pattern is not valid: {e}")))
}

/// A key given as a string or a `Secret`.
fn key_bytes(key: &Dynamic) -> HostResult<Vec<u8>> {
    if let Some(secret) = key.clone().try_cast::<ScriptSecret>() {
        return Ok(secret.0.expose().as_bytes().to_vec());
    }
    key.clone()
        .into_string()
        .map(String::into_bytes)
        .map_err(|_| failure("crypto::hmac_sha256: the key must be a string or a Secret"))
}

fn register_request(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("client_ip").set_into_module(&mut module, || -> HostResult<Dynamic> {
        with_context("request::client_ip", |c| {
            Ok(optional(c.client_ip().map(|ip| ip.to_string())))
        })
    });
    FuncRegistration::new("user_agent").set_into_module(&mut module, || -> HostResult<Dynamic> {
        with_context("request::user_agent", |c| {
            Ok(optional(c.user_agent().map(str::to_owned)))
        })
    });
    FuncRegistration::new("languages").set_into_module(&mut module, || -> HostResult<Array> {
        with_context("request::languages", |c| {
            Ok(c.languages().into_iter().map(Dynamic::from).collect())
        })
    });
    FuncRegistration::new("client_id").set_into_module(&mut module, || -> HostResult<Dynamic> {
        with_context("request::client_id", |c| {
            Ok(optional(c.state().origin.client_id.clone()))
        })
    });
    FuncRegistration::new("acr_values").set_into_module(&mut module, || -> HostResult<Array> {
        with_context("request::acr_values", |c| {
            Ok(c.state()
                .origin
                .acr_values
                .iter()
                .cloned()
                .map(Dynamic::from)
                .collect())
        })
    });
    FuncRegistration::new("login_hint").set_into_module(&mut module, || -> HostResult<Dynamic> {
        with_context("request::login_hint", |c| {
            Ok(optional(c.state().origin.login_hint.clone()))
        })
    });
    engine.register_static_module("request", module.into());
}

fn register_time(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("now").set_into_module(&mut module, || -> HostResult<i64> {
        with_context("time::now", |c| Ok((c.now_ms() / 1000) as i64))
    });
    FuncRegistration::new("now_ms").set_into_module(&mut module, || -> HostResult<i64> {
        with_context("time::now_ms", |c| Ok(c.now_ms() as i64))
    });
    engine.register_static_module("time", module.into());
}

fn register_crypto(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("sha256").set_into_module(&mut module, |text: &str| sha256_hex(text));
    FuncRegistration::new("hmac_sha256").set_into_module(
        &mut module,
        |key: Dynamic, text: &str| -> HostResult<String> {
            Ok(hmac_sha256_hex(&key_bytes(&key)?, text.as_bytes()))
        },
    );
    FuncRegistration::new("base64_encode").set_into_module(&mut module, |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(text)
    });
    FuncRegistration::new("base64_decode").set_into_module(&mut module, |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .map_or(Dynamic::UNIT, Dynamic::from)
    });
    FuncRegistration::new("random_token").set_into_module(
        &mut module,
        |bytes: i64| -> HostResult<String> {
            let bytes = usize::try_from(bytes)
                .ok()
                .filter(|b| (1..=64).contains(b))
                .ok_or_else(|| failure("crypto::random_token: 1 to 64 bytes"))?;
            random::hex_token(bytes).map_err(|e| failure(e.to_string()))
        },
    );
    engine.register_static_module("crypto", module.into());
}

fn register_text(engine: &mut Engine) {
    let mut module = Module::new();
    FuncRegistration::new("matches").set_into_module(
        &mut module,
        |pattern: &str, text: &str| -> HostResult<bool> { Ok(regex(pattern)?.is_match(text)) },
    );
    FuncRegistration::new("find").set_into_module(
        &mut module,
        |pattern: &str, text: &str| -> HostResult<Dynamic> {
            Ok(optional(
                regex(pattern)?.find(text).map(|m| m.as_str().to_owned()),
            ))
        },
    );
    FuncRegistration::new("captures").set_into_module(
        &mut module,
        |pattern: &str, text: &str| -> HostResult<Array> {
            Ok(regex(pattern)?
                .captures(text)
                .map(|groups| {
                    groups
                        .iter()
                        .map(|g| optional(g.map(|m| m.as_str().to_owned())))
                        .collect()
                })
                .unwrap_or_default())
        },
    );
    engine.register_static_module("text", module.into());
}

/// Registers every helper module.
pub(crate) fn register(engine: &mut Engine) {
    register_request(engine);
    register_time(engine);
    register_crypto(engine);
    register_text(engine);
}
