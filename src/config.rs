//! Typed configuration (`config/gatehouse.toml`): parsing, `${env:NAME}` expansion, validation.
//!
//! Unknown keys are refused (with file, line and key) so a typo never silently becomes a default.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub login: LoginConfig,
    #[serde(default)]
    pub otp: OtpConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    #[serde(default)]
    pub sms: SmsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub oidc: OidcConfig,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub scripts: Vec<ScriptEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Reverse proxies (IPs or CIDR ranges) whose X-Forwarded-For is believed. Empty: the peer
    /// address is the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Relative paths are resolved against the working directory the server was started in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub scripts_dir: PathBuf,
    pub log_dir: PathBuf,
    pub users_file: PathBuf,
    /// Templates here override the built-in pages by name (login.html, otp_sms.html, error.html...).
    pub pages_dir: Option<PathBuf>,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            scripts_dir: "scripts".into(),
            log_dir: "logs".into(),
            users_file: "config/users.toml".into(),
            pages_dir: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// The acr used when an application asks for none.
    pub default_acr: Option<String>,
    /// How long an unfinished login is kept.
    pub ttl_seconds: u64,
    /// Wrong passwords per account before delays start (per client address: four times this).
    pub password_free_failures: i64,
    /// The longest delay after wrong passwords (delays double from 1 s).
    pub password_max_delay_seconds: i64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            default_acr: None,
            ttl_seconds: 900,
            password_free_failures: 3,
            password_max_delay_seconds: 300,
        }
    }
}

/// The code policy (server-wide) and the protection of each account's SMS factor. Numbers are
/// read signed so that a negative value is refused with the key's name, not a type error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpConfig {
    /// Characters per code, 4 to 10.
    pub length: i64,
    pub alphabet: CodeAlphabet,
    /// Lifetime of a code, at most 600 seconds.
    pub ttl_seconds: i64,
    /// Wrong guesses that burn a code.
    pub max_attempts: i64,
    /// Consecutive wrong codes (across logins and resends) that lock the account's SMS factor.
    pub lock_after_failures: i64,
    /// First lock; each further lock doubles it.
    pub lock_minutes: i64,
    /// Consecutive wrong codes that disable the SMS factor until an operator resets it.
    pub disable_after_failures: i64,
    /// Key of the keyed hashes codes are stored under, at least 32 characters, normally
    /// `${env:NAME}`. Unset: a random key per process, which is right for one instance; every
    /// instance sharing a state store needs the same key, or a code issued by one fails on another.
    pub code_key: Option<crate::secret::Secret>,
}

impl Default for OtpConfig {
    fn default() -> Self {
        OtpConfig {
            length: 6,
            alphabet: CodeAlphabet::Numeric,
            ttl_seconds: 300,
            max_attempts: 5,
            lock_after_failures: 10,
            lock_minutes: 15,
            disable_after_failures: 50,
            code_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeAlphabet {
    Numeric,
    /// Upper-case letters and digits, without look-alikes (0/O, 1/I/L).
    Alphanumeric,
}

/// A script's own code policy: each value may only tighten the server's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpOverride {
    pub length: Option<i64>,
    pub alphabet: Option<CodeAlphabet>,
    pub ttl_seconds: Option<i64>,
    pub max_attempts: Option<i64>,
}

/// Limits applied to every script hook call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock budget of one hook call, including any outbound calls it makes.
    pub hook_timeout_ms: u64,
    /// Larger files in the scripts directory are refused.
    pub max_script_bytes: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_operations: 1_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 4096,
            max_map_size: 4096,
            hook_timeout_ms: 5000,
            max_script_bytes: 256 * 1024,
        }
    }
}

impl SandboxConfig {
    pub fn hook_timeout(&self) -> Duration {
        Duration::from_millis(self.hook_timeout_ms)
    }
}

/// The OpenID Connect provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The issuer URL applications see; `https://...` in production (turns on Secure cookies, HSTS).
    pub issuer: String,
    /// RS256 signing key, generated on first start if missing (keep it secret, keep it stable).
    pub signing_key_file: PathBuf,
    pub code_ttl_seconds: u64,
    pub access_token_ttl_seconds: u64,
    pub id_token_ttl_seconds: u64,
    /// How long a signed-in browser skips the login (single sign-on).
    pub sso_ttl_seconds: u64,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: "http://localhost:8080".into(),
            signing_key_file: "config/oidc-signing-key.pem".into(),
            code_ttl_seconds: 60,
            access_token_ttl_seconds: 3600,
            id_token_ttl_seconds: 3600,
            sso_ttl_seconds: 8 * 3600,
        }
    }
}

impl OidcConfig {
    pub fn is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }
}

/// A registered application (relying party).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// May be `${env:NAME}`.
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Used when the application sends no acr_values.
    #[serde(default)]
    pub default_acr_values: Vec<String>,
    /// PKCE (S256) is required unless this is false.
    #[serde(default = "yes")]
    pub require_pkce: bool,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("client_id", &self.client_id)
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

/// SMS providers: a default, and named ones that scripts pick with `sms_provider`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Provider of scripts that name none: "console" or the name of a `[sms.providers.NAME]`.
    pub provider: String,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// ISO 3166 region for numbers without a country code (e.g. "GB"); none: such numbers are refused.
    pub default_region: Option<String>,
    /// E.164 prefixes that may receive messages. Empty: no destination at all.
    pub allowed_prefixes: Vec<String>,
    pub max_sends_per_login: i64,
    /// Wait before a login's second send; doubles for each further one.
    pub resend_cooldown_seconds: i64,
    pub per_number_per_hour: i64,
    pub per_number_per_day: i64,
    /// Per client address (behind a proxy only when it is in `[server] trusted_proxies`).
    pub per_address_per_hour: i64,
    /// Messages per UTC day for the whole server; then sending pauses and an alert is logged.
    pub daily_budget: i64,
    /// End messages built by `otp::message` with `@HOST #CODE` (WebOTP / SMS Retriever autofill),
    /// HOST being the issuer's host.
    pub webotp_line: bool,
    /// Trailing digits of a number that pages and logs show (0 to 4); the country code always shows.
    pub visible_digits: i64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            provider: CONSOLE_PROVIDER.into(),
            providers: BTreeMap::new(),
            default_region: None,
            allowed_prefixes: Vec::new(),
            max_sends_per_login: 3,
            resend_cooldown_seconds: 60,
            per_number_per_hour: 5,
            per_number_per_day: 10,
            per_address_per_hour: 10,
            daily_budget: 10_000,
            webotp_line: true,
            visible_digits: 4,
        }
    }
}

impl SmsConfig {
    pub fn limits(&self) -> crate::flow::sending::SendLimits {
        crate::flow::sending::SendLimits {
            default_region: self.default_region.clone(),
            allowed_prefixes: self.allowed_prefixes.clone(),
            per_login: self.max_sends_per_login as u32,
            resend_cooldown_seconds: self.resend_cooldown_seconds as u64,
            per_number_per_hour: self.per_number_per_hour as u32,
            per_number_per_day: self.per_number_per_day as u32,
            per_address_per_hour: self.per_address_per_hour as u32,
            daily_budget: self.daily_budget as u32,
            visible_digits: self.visible_digits as usize,
        }
    }
}

/// The development sink's name: messages are printed on standard output, nothing is sent.
pub const CONSOLE_PROVIDER: &str = "console";

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    Console,
    Twilio(TwilioConfig),
    Http(GatewayConfig),
}

pub const TWILIO_API_BASE: &str = "https://api.twilio.com";

/// Twilio's Messages API. Values may be `${env:NAME}`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
    #[serde(default = "twilio_api_base")]
    pub api_base: String,
}

fn twilio_api_base() -> String {
    TWILIO_API_BASE.into()
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// A generic HTTP SMS gateway, as WSO2's SMS OTP connector describes it: URL, method, headers,
/// payload, with `$ctx.num` and `$ctx.msg` placeholders. Values may be `${env:NAME}`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub url: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body template; none for gateways that take everything in the URL.
    #[serde(default)]
    pub payload: Option<String>,
    /// Defaults to JSON when the payload starts with `{` or `[`, to a form otherwise.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password: Option<String>,
    /// Status codes that mean "accepted" (default 200, 201, 202).
    #[serde(default = "accepted_statuses")]
    pub accepted_status: Vec<u16>,
    /// If set, an accepted answer must also contain this text...
    #[serde(default)]
    pub success_body_contains: Option<String>,
    /// ...and must not contain this one (a 200 that carries an error).
    #[serde(default)]
    pub failure_body_contains: Option<String>,
    /// JSON pointer to the provider's message id in the answer, e.g. `/messages/0/message-id`.
    #[serde(default)]
    pub message_id_pointer: Option<String>,
}

fn post() -> String {
    "POST".into()
}

fn accepted_statuses() -> Vec<u16> {
    vec![200, 201, 202]
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("method", &self.method)
            .field("accepted_status", &self.accepted_status)
            .finish_non_exhaustive()
    }
}

/// Outbound HTTP limits and the development exceptions to the destination policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub connect_timeout_ms: u64,
    /// Whole request; keep it under `sandbox.hook_timeout_ms`.
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
    /// Hosts that may be reached over plain http. Development and tests only.
    pub insecure_http_hosts: Vec<String>,
    /// Loopback/private/link-local addresses or CIDR ranges that may be reached anyway.
    pub allow_addresses: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_ms: 2000,
            timeout_ms: 4000,
            max_response_bytes: 256 * 1024,
            insecure_http_hosts: Vec::new(),
            allow_addresses: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The destination policy; entries were validated at load.
    pub fn policy(&self) -> crate::outbound::DestinationPolicy {
        crate::outbound::DestinationPolicy {
            insecure_http_hosts: self.insecure_http_hosts.clone(),
            allowed: self
                .allow_addresses
                .iter()
                .filter_map(|a| crate::outbound::policy::parse_allowed(a).ok())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Minimum level written: trace, debug, info, warn or error.
    pub level: String,
    /// Also write log lines to standard error.
    pub console: bool,
    /// Reload debounce: events closer together than this are one change.
    pub reload_debounce_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            console: true,
            reload_debounce_ms: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    Interactive,
    Service,
    Both,
}

impl Usage {
    /// The number Gluu passes as `usageType` to `isValidAuthenticationMethod`.
    pub fn code(self) -> i64 {
        match self {
            Usage::Interactive => 1,
            Usage::Service => 2,
            Usage::Both => 3,
        }
    }

    pub fn allows_interactive(self) -> bool {
        matches!(self, Usage::Interactive | Usage::Both)
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptEntry {
    pub acr: String,
    /// File name inside the scripts directory, e.g. `sms_otp.rhai`.
    pub file: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub level: i64,
    #[serde(default = "interactive")]
    pub usage: Usage,
    /// SMS provider for this script: "console" or a `[sms.providers.NAME]`. Without it, a script
    /// whose properties hold `twilio_sid`, `twilio_token` and `from_number` sends through Twilio,
    /// any other through `[sms] provider`.
    #[serde(default)]
    pub sms_provider: Option<String>,
    /// Authentication method references put in ID tokens (RFC 8176), e.g. ["pwd", "sms", "mfa"].
    /// Default: what the host verified in the login ("pwd", "sms", "otp", plus "mfa" for two or
    /// more); ["pwd", "mfa"] when a script checked its second step itself (e.g. Stytch).
    #[serde(default)]
    pub amr: Option<Vec<String>>,
    /// This script's code policy: may only tighten `[otp]`.
    #[serde(default)]
    pub otp: Option<OtpOverride>,
    /// Properties to treat as secret in addition to the names matched by default.
    #[serde(default)]
    pub secret_properties: Vec<String>,
    /// The script's custom properties, handed to every hook as `config`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Debug output never shows property values: any of them may be a secret.
impl std::fmt::Debug for ScriptEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEntry")
            .field("acr", &self.acr)
            .field("file", &self.file)
            .field("enabled", &self.enabled)
            .field("level", &self.level)
            .field("usage", &self.usage)
            .field("sms_provider", &self.sms_provider)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn yes() -> bool {
    true
}
fn interactive() -> Usage {
    Usage::Interactive
}

/// A property after `${env:NAME}` expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropertyValue {
    Plain(String),
    Secret(Secret),
}

/// Names that are secret unless the operator says otherwise.
const SECRET_NAME_PARTS: [&str; 4] = ["token", "secret", "password", "key"];
/// Well-known option names that match a secret part but hold no secret (WSO2's token lifetime).
const KNOWN_PUBLIC: [&str; 1] = ["TokenExpiryTime"];

impl ScriptEntry {
    pub fn is_secret_property(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        if KNOWN_PUBLIC.contains(&name)
            && !self
                .secret_properties
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
        {
            return false;
        }
        self.secret_properties
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
            || SECRET_NAME_PARTS.iter().any(|part| lower.contains(part))
    }

    /// Properties with `${env:NAME}` expanded. A property whose variable is unset is left out
    /// (so the script's own "missing property" check names it) and reported in the second list.
    pub fn resolved_properties(&self) -> (BTreeMap<String, PropertyValue>, Vec<UnsetVariable>) {
        let mut resolved = BTreeMap::new();
        let mut unset = Vec::new();
        for (name, raw) in &self.properties {
            match expand_env(raw) {
                Ok(value) => {
                    let value = if self.is_secret_property(name) {
                        PropertyValue::Secret(Secret::new(value))
                    } else {
                        PropertyValue::Plain(value)
                    };
                    resolved.insert(name.clone(), value);
                }
                Err(variable) => unset.push(UnsetVariable {
                    property: name.clone(),
                    variable,
                }),
            }
        }
        (resolved, unset)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsetVariable {
    pub property: String,
    pub variable: String,
}

/// Expands every `${env:NAME}` in `raw`; returns the name of the first unset variable as error.
pub fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => out.push_str(&value),
            _ => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(text, &e),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let mut seen = HashSet::new();
        for (i, script) in self.scripts.iter().enumerate() {
            let key = format!("scripts[{i}]");
            if !is_valid_acr(&script.acr) {
                return Err(invalid(
                    format!("{key}.acr"),
                    format!(
                        "{:?} is not a valid acr: use 1-64 letters, digits, '_', '-' or '.'",
                        script.acr
                    ),
                ));
            }
            if !seen.insert(script.acr.as_str()) {
                return Err(invalid(
                    format!("{key}.acr"),
                    format!("acr {:?} is configured twice", script.acr),
                ));
            }
            if !is_plain_script_file_name(&script.file) {
                return Err(invalid(
                    format!("{key}.file"),
                    format!("{:?} must be a file name ending in .rhai inside the scripts directory (no '/')", script.file),
                ));
            }
        }
        let provider_known =
            |name: &str| name == CONSOLE_PROVIDER || self.sms.providers.contains_key(name);
        if !provider_known(&self.sms.provider) {
            return Err(invalid(
                "sms.provider".into(),
                format!(
                    "{:?} is neither \"console\" nor a [sms.providers.NAME] section",
                    self.sms.provider
                ),
            ));
        }
        for (i, script) in self.scripts.iter().enumerate() {
            if let Some(name) = script
                .sms_provider
                .as_deref()
                .filter(|n| !provider_known(n))
            {
                return Err(invalid(
                    format!("scripts[{i}].sms_provider"),
                    format!("{name:?} is neither \"console\" nor a [sms.providers.NAME] section"),
                ));
            }
        }
        for (name, provider) in &self.sms.providers {
            if let ProviderConfig::Http(gateway) = provider {
                if crate::outbound::Method::parse(&gateway.method).is_none() {
                    return Err(invalid(
                        format!("sms.providers.{name}.method"),
                        "use GET or POST".into(),
                    ));
                }
            }
        }
        for (i, entry) in self.server.trusted_proxies.iter().enumerate() {
            crate::outbound::policy::parse_allowed(entry)
                .map_err(|m| invalid(format!("server.trusted_proxies[{i}]"), m))?;
        }
        for (i, entry) in self.http.allow_addresses.iter().enumerate() {
            crate::outbound::policy::parse_allowed(entry)
                .map_err(|m| invalid(format!("http.allow_addresses[{i}]"), m))?;
        }
        let issuer = url::Url::parse(&self.oidc.issuer).map_err(|e| {
            invalid(
                "oidc.issuer".into(),
                format!("{:?} is not a URL: {e}", self.oidc.issuer),
            )
        })?;
        if !matches!(issuer.scheme(), "http" | "https")
            || issuer.query().is_some()
            || issuer.fragment().is_some()
        {
            return Err(invalid(
                "oidc.issuer".into(),
                "use an http(s) URL without query or fragment".into(),
            ));
        }
        let mut client_ids = HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = format!("clients[{i}]");
            if client.client_id.is_empty() || !client_ids.insert(client.client_id.as_str()) {
                return Err(invalid(
                    format!("{key}.client_id"),
                    "must be present and unique".into(),
                ));
            }
            if client.redirect_uris.is_empty() {
                return Err(invalid(
                    format!("{key}.redirect_uris"),
                    "register at least one redirect URI".into(),
                ));
            }
            for (j, uri) in client
                .redirect_uris
                .iter()
                .chain(&client.post_logout_redirect_uris)
                .enumerate()
            {
                let parsed = url::Url::parse(uri).map_err(|e| {
                    invalid(format!("{key}.redirect_uris[{j}]"), format!("{uri:?}: {e}"))
                })?;
                if parsed.fragment().is_some() || !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(
                        format!("{key}.redirect_uris[{j}]"),
                        format!("{uri:?}: use an http(s) URL without fragment"),
                    ));
                }
            }
        }
        if let Some(default_acr) = &self.login.default_acr {
            if !self.scripts.iter().any(|s| &s.acr == default_acr) {
                return Err(invalid(
                    "login.default_acr".into(),
                    format!(
                        "{default_acr:?} names no [[scripts]] entry; add one or change the default"
                    ),
                ));
            }
        }
        let positive = [
            ("login.ttl_seconds", self.login.ttl_seconds),
            ("sandbox.max_operations", self.sandbox.max_operations),
            ("sandbox.hook_timeout_ms", self.sandbox.hook_timeout_ms),
            ("sandbox.max_script_bytes", self.sandbox.max_script_bytes),
            ("http.connect_timeout_ms", self.http.connect_timeout_ms),
            ("http.timeout_ms", self.http.timeout_ms),
            ("http.max_response_bytes", self.http.max_response_bytes),
            ("oidc.code_ttl_seconds", self.oidc.code_ttl_seconds),
            (
                "oidc.access_token_ttl_seconds",
                self.oidc.access_token_ttl_seconds,
            ),
            ("oidc.id_token_ttl_seconds", self.oidc.id_token_ttl_seconds),
            ("oidc.sso_ttl_seconds", self.oidc.sso_ttl_seconds),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key.into(), "must be greater than 0".into()));
            }
        }
        validate_otp(&self.otp).map_err(|(key, message)| invalid(key, message))?;
        validate_sms(&self.sms).map_err(|(key, message)| invalid(key, message))?;
        in_range(
            "login.password_free_failures",
            self.login.password_free_failures,
            0,
            100,
            "",
        )
        .and_then(|_| {
            in_range(
                "login.password_max_delay_seconds",
                self.login.password_max_delay_seconds,
                1,
                3600,
                " seconds",
            )
        })
        .map_err(|(key, message)| invalid(key, message))?;
        for (i, script) in self.scripts.iter().enumerate() {
            if let Some(custom) = &script.otp {
                validate_override(&self.otp, custom).map_err(|(key, message)| {
                    invalid(format!("scripts[{i}].otp.{key}"), message)
                })?;
            }
        }
        if !["trace", "debug", "info", "warn", "error"].contains(&self.log.level.as_str()) {
            return Err(invalid(
                "log.level".into(),
                "use one of trace, debug, info, warn, error".into(),
            ));
        }
        Ok(())
    }

    pub fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn script(&self, acr: &str) -> Option<&ScriptEntry> {
        self.scripts.iter().find(|s| s.acr == acr)
    }
}

fn in_range(
    key: &str,
    value: i64,
    low: i64,
    high: i64,
    unit: &str,
) -> Result<(), (String, String)> {
    if value < low || value > high {
        return Err((
            key.to_owned(),
            format!("{value} is out of range: use {low} to {high}{unit}"),
        ));
    }
    Ok(())
}

fn validate_sms(sms: &SmsConfig) -> Result<(), (String, String)> {
    in_range(
        "sms.max_sends_per_login",
        sms.max_sends_per_login,
        1,
        10,
        "",
    )?;
    in_range(
        "sms.resend_cooldown_seconds",
        sms.resend_cooldown_seconds,
        0,
        3600,
        " seconds",
    )?;
    in_range(
        "sms.per_number_per_hour",
        sms.per_number_per_hour,
        1,
        1_000_000,
        "",
    )?;
    in_range(
        "sms.per_number_per_day",
        sms.per_number_per_day,
        1,
        10_000_000,
        "",
    )?;
    in_range(
        "sms.per_address_per_hour",
        sms.per_address_per_hour,
        1,
        10_000_000,
        "",
    )?;
    in_range("sms.daily_budget", sms.daily_budget, 0, 100_000_000, "")?;
    in_range("sms.visible_digits", sms.visible_digits, 0, 4, "")?;
    for (i, prefix) in sms.allowed_prefixes.iter().enumerate() {
        let digits = prefix.strip_prefix('+').unwrap_or("");
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                format!("sms.allowed_prefixes[{i}]"),
                format!("{prefix:?} is not an E.164 prefix like \"+44\""),
            ));
        }
    }
    if let Some(region) = &sms.default_region {
        if region.parse::<phonenumber::country::Id>().is_err() {
            return Err((
                "sms.default_region".into(),
                format!("{region:?} is not an ISO 3166 region like \"GB\""),
            ));
        }
    }
    Ok(())
}

fn validate_otp(otp: &OtpConfig) -> Result<(), (String, String)> {
    in_range("otp.length", otp.length, 4, 10, " characters")?;
    in_range(
        "otp.ttl_seconds",
        otp.ttl_seconds,
        1,
        600,
        " seconds (codes never live longer than 10 minutes)",
    )?;
    in_range(
        "otp.max_attempts",
        otp.max_attempts,
        1,
        10,
        " wrong guesses",
    )?;
    in_range(
        "otp.lock_after_failures",
        otp.lock_after_failures,
        1,
        1000,
        "",
    )?;
    in_range("otp.lock_minutes", otp.lock_minutes, 1, 24 * 60, " minutes")?;
    in_range(
        "otp.disable_after_failures",
        otp.disable_after_failures,
        1,
        10_000,
        "",
    )?;
    if otp.disable_after_failures < otp.lock_after_failures {
        return Err((
            "otp.disable_after_failures".into(),
            "must be at least otp.lock_after_failures".into(),
        ));
    }
    if let Some(raw) = &otp.code_key {
        otp_code_key(raw)?;
    }
    Ok(())
}

/// `[otp] code_key` after `${env:NAME}` expansion, checked for length.
pub fn otp_code_key(
    raw: &crate::secret::Secret,
) -> Result<crate::secret::Secret, (String, String)> {
    let key = expand_env(raw.expose()).map_err(|variable| {
        (
            "otp.code_key".to_owned(),
            format!("environment variable {variable} is not set"),
        )
    })?;
    if key.len() < 32 {
        return Err((
            "otp.code_key".into(),
            format!(
                "is {} characters; use at least 32 (e.g. the output of `openssl rand -base64 32`)",
                key.len()
            ),
        ));
    }
    Ok(crate::secret::Secret::new(key))
}

/// A script may ask for longer codes, shorter lifetimes, fewer guesses, a larger alphabet.
fn validate_override(server: &OtpConfig, custom: &OtpOverride) -> Result<(), (String, String)> {
    if let Some(length) = custom.length {
        in_range(
            "length",
            length,
            server.length,
            10,
            &format!(" characters (at least [otp] length = {})", server.length),
        )?;
    }
    if let Some(ttl) = custom.ttl_seconds {
        in_range(
            "ttl_seconds",
            ttl,
            1,
            server.ttl_seconds,
            &format!(
                " seconds (at most [otp] ttl_seconds = {})",
                server.ttl_seconds
            ),
        )?;
    }
    if let Some(attempts) = custom.max_attempts {
        in_range(
            "max_attempts",
            attempts,
            1,
            server.max_attempts,
            &format!(" (at most [otp] max_attempts = {})", server.max_attempts),
        )?;
    }
    if custom.alphabet == Some(CodeAlphabet::Numeric)
        && server.alphabet == CodeAlphabet::Alphanumeric
    {
        return Err((
            "alphabet".into(),
            "numeric would loosen [otp] alphabet = \"alphanumeric\"".into(),
        ));
    }
    Ok(())
}

pub fn is_valid_acr(acr: &str) -> bool {
    (1..=64).contains(&acr.len())
        && acr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn is_plain_script_file_name(name: &str) -> bool {
    name.ends_with(".rhai")
        && name.len() > 5
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name != ".."
}

/// toml's messages span several lines with a source excerpt; the log wants one line with line:column.
fn one_line_toml_error(text: &str, error: &toml::de::Error) -> String {
    let location = error.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", location.unwrap_or_default(), error.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("gatehouse.toml"), text)
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("[login]\nttl_seconds = 5\ndefault_arc = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("gatehouse.toml: line 3, column 1: unknown field `default_arc`"),
            "{err}"
        );
    }

    #[test]
    fn otp_policy_values_are_checked_with_their_key() {
        for (text, key) in [
            (
                "[otp]\nttl_seconds = 601\n",
                "otp.ttl_seconds: 601 is out of range",
            ),
            ("[otp]\nlength = 3\n", "otp.length: 3 is out of range"),
            ("[otp]\nlength = 11\n", "otp.length: 11 is out of range"),
            (
                "[otp]\nmax_attempts = -1\n",
                "otp.max_attempts: -1 is out of range",
            ),
            (
                "[otp]\nlock_minutes = 0\n",
                "otp.lock_minutes: 0 is out of range",
            ),
            (
                "[[scripts]]\nacr = \"a\"\nfile = \"a.rhai\"\n[scripts.otp]\nttl_seconds = 900\n",
                "scripts[0].otp.ttl_seconds: 900 is out of range",
            ),
            (
                "[[scripts]]\nacr = \"a\"\nfile = \"a.rhai\"\n[scripts.otp]\nlength = 5\n",
                "scripts[0].otp.length: 5 is out of range",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(parse("[[scripts]]\nacr = \"a\"\nfile = \"a.rhai\"\n[scripts.otp]\nlength = 8\nttl_seconds = 120\n").is_ok());
    }

    #[test]
    fn default_acr_must_exist() {
        let err = parse("[login]\ndefault_acr = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("login.default_acr"), "{err}");
    }

    #[test]
    fn secret_names_by_default_and_by_list() {
        let entry: ScriptEntry = toml::from_str(
            "acr = \"a\"\nfile = \"a.rhai\"\nsecret_properties = [\"from_number\"]\n[properties]\ntwilio_token = \"t\"\nfrom_number = \"f\"\ntwilio_sid = \"s\"\n",
        )
        .unwrap();
        let (props, _) = entry.resolved_properties();
        assert!(matches!(props["twilio_token"], PropertyValue::Secret(_)));
        assert!(matches!(props["from_number"], PropertyValue::Secret(_)));
        assert_eq!(props["twilio_sid"], PropertyValue::Plain("s".into()));
    }

    #[test]
    fn debug_output_hides_property_values() {
        let config = parse("[[scripts]]\nacr = \"a\"\nfile = \"a.rhai\"\n[scripts.properties]\nfrom_number = \"+15550001\"\n").unwrap();
        let shown = format!("{config:?}");
        assert!(
            shown.contains("from_number") && !shown.contains("+15550001"),
            "{shown}"
        );
    }

    #[test]
    fn env_expansion_and_unset_variables() {
        std::env::set_var("GATEHOUSE_TEST_SID", "AC123");
        assert_eq!(
            expand_env("x-${env:GATEHOUSE_TEST_SID}-y").unwrap(),
            "x-AC123-y"
        );
        assert_eq!(
            expand_env("${env:GATEHOUSE_TEST_UNSET_VAR}").unwrap_err(),
            "GATEHOUSE_TEST_UNSET_VAR"
        );
    }

    #[test]
    fn file_names_stay_inside_the_scripts_directory() {
        assert!(is_plain_script_file_name("sms_otp.rhai"));
        assert!(!is_plain_script_file_name("../etc.rhai"));
        assert!(!is_plain_script_file_name("a/b.rhai"));
        assert!(!is_plain_script_file_name("x.py"));
    }
}
