//! Typed configuration (`config/gatehouse.toml`), parsed once into the values the server uses:
//! addresses and networks, `${env:NAME}` expanded ([`env`]), script properties resolved and
//! marked secret. `validate` checks what types cannot; `changes` says which edits need a restart.
//! Unknown keys are refused (with file, line and key) so a typo never silently becomes a default.
//! This module knows no layer above it: each consumer converts its section itself.

mod changes;
mod env;
mod live;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::base::Secret;
pub use changes::restart_only_changes;
pub use env::{expand_env, EnvValue};
pub use live::LiveConfig;
pub use validate::is_valid_acr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The reason is in the message (it is logged as one line), so it is not also a `source`.
    #[error("{path}: cannot read the configuration file: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
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
    pub store: StoreConfig,
    #[serde(default)]
    pub directory: DirectoryConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub scripts: Vec<ScriptEntry>,
}

/// The admin listener: the admin API under `/admin/` (bearer token) and `/metrics`. Off unless
/// `listen` is set; bind it to a private address.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub listen: Option<ListenAddress>,
    /// The bearer token of `/admin/*`: 32 characters at least, best from the environment
    /// (`${env:GATEHOUSE_ADMIN_TOKEN}`).
    pub token: Option<EnvValue>,
}

/// The shortest admin token accepted.
pub const MIN_ADMIN_TOKEN: usize = 32;

impl AdminConfig {
    /// The token a serving admin listener needs: `None` when the listener is off; an error
    /// (key, message) when it is on and the token's variable is unset. (Its length is checked
    /// with the rest of the file.)
    pub fn serving_token(&self) -> Result<Option<&Secret>, (String, String)> {
        if self.listen.is_none() {
            return Ok(None);
        }
        match &self.token {
            Some(token) => token.require("admin.token").map(Some),
            None => Err(("admin.token".into(), "[admin] listen needs a token".into())),
        }
    }
}

/// Where sign-ins, sessions, codes, locks and counters are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// This process's memory: one node; a restart forgets everything.
    #[default]
    Memory,
    /// A Redis server shared by every node; kept across restarts.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `redis://HOST:PORT/DB` (`rediss://` for TLS); may hold a password, so `${env:NAME}` works.
    pub url: Option<EnvValue>,
    /// Prepended to every key, so deployments can share a database.
    pub key_prefix: String,
    /// Connect, read and write timeout of one Redis call.
    pub timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Memory,
            url: None,
            key_prefix: "gatehouse:".into(),
            timeout_ms: 2000,
        }
    }
}

/// Where users, their passwords and attributes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectoryBackend {
    /// The TOML file `paths.users_file` (the embedded default).
    #[default]
    File,
    /// An LDAP server (OpenLDAP, Gluu's, Active Directory...).
    Ldap,
}

/// `[directory]`: the user directory. For LDAP, passwords are checked by binding as the user;
/// everything else (searches, script writes) is done as the service account `bind_dn`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectoryConfig {
    pub backend: DirectoryBackend,
    /// `ldap://HOST:PORT` (add `starttls = true` for TLS on it) or `ldaps://HOST:PORT`.
    pub url: Option<EnvValue>,
    /// Upgrade an `ldap://` connection with StartTLS before anything is sent.
    pub starttls: bool,
    /// PEM file of the CA(s) that signed the server's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// The service account that searches and writes users.
    pub bind_dn: Option<String>,
    pub bind_password: Option<EnvValue>,
    /// Where users are searched (the whole subtree).
    pub base_dn: Option<String>,
    /// Finds one user; `{username}` is replaced by the typed name, escaped (RFC 4515).
    pub user_filter: String,
    /// The attribute holding the name people sign in with (what `users::find_by` returns).
    pub username_attribute: String,
    /// Connect timeout and time limit of one LDAP operation.
    pub timeout_ms: u64,
    /// Connections of each kind (service account, user binds) open at once; they are kept
    /// for reuse. A request that finds all busy waits up to `timeout_ms`, then answers 503.
    pub max_connections: u32,
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        DirectoryConfig {
            backend: DirectoryBackend::File,
            url: None,
            starttls: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            base_dn: None,
            user_filter: "(uid={username})".into(),
            username_attribute: "uid".into(),
            timeout_ms: 2000,
            max_connections: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub listen: ListenAddress,
    /// Reverse proxies (IPs or CIDR ranges) whose X-Forwarded-For is believed. Empty: the peer
    /// address is the client.
    pub trusted_proxies: Vec<Network>,
    /// Per-address limits count IPv6 clients by network: this many leading bits (64: a /64).
    pub ipv6_prefix_length: u8,
    /// How long a client has to send a request's headers (also between kept-alive requests).
    pub header_read_timeout_ms: u64,
    /// How long one request may take, its body included.
    pub request_timeout_ms: u64,
    /// Connections one peer address may hold open at once.
    pub max_connections_per_address: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ListenAddress(SocketAddr::from(([127, 0, 0, 1], 8080))),
            trusted_proxies: Vec::new(),
            ipv6_prefix_length: 64,
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections_per_address: 64,
        }
    }
}

impl ServerConfig {
    /// Whether `ip` is one of the trusted reverse proxies.
    pub fn is_trusted_proxy(&self, ip: &std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.0.contains(ip))
    }
}

/// A socket address to listen on, like `127.0.0.1:8080`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddress(pub SocketAddr);

impl TryFrom<String> for ListenAddress {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
            .map(ListenAddress)
            .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:8080"))
    }
}

/// An IP address or a CIDR range (`10.0.0.0/8`); a single address is a range of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network(pub ipnet::IpNet);

impl Network {
    pub fn parse(entry: &str) -> Result<Network, String> {
        if let Ok(net) = entry.parse::<ipnet::IpNet>() {
            return Ok(Network(net));
        }
        entry
            .parse::<std::net::IpAddr>()
            .map(|ip| Network(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("{entry:?} is not an IP address or CIDR range"))
    }

    pub fn contains(&self, ip: &std::net::IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Network::parse(&text)
    }
}

/// Relative paths are resolved against the working directory the server was started in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// The softer cap of an account, whatever address the wrong passwords come from: free
    /// failures, then delays up to `password_account_max_delay_seconds`. A browser that signed
    /// in to the account before (device cookie) is not held by it.
    pub password_account_free_failures: i64,
    pub password_account_max_delay_seconds: i64,
    /// Sign-ins one client address (an IPv6 /64) may have started and not finished within
    /// `ttl_seconds` (a finished one is taken off the count).
    pub max_pending_per_address: u32,
    /// Sign-ins started and not finished in all within `ttl_seconds`.
    pub max_pending_total: u32,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            default_acr: None,
            ttl_seconds: 900,
            password_free_failures: 3,
            password_max_delay_seconds: 300,
            password_account_free_failures: 20,
            password_account_max_delay_seconds: 60,
            max_pending_per_address: 100,
            max_pending_total: 100_000,
        }
    }
}

/// The code policy (server-wide) and the protection of each account's SMS factor. Numbers are
/// read signed so that a negative value is refused with the key's name, not a type error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    pub code_key: Option<EnvValue>,
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtpOverride {
    pub length: Option<i64>,
    pub alphabet: Option<CodeAlphabet>,
    pub ttl_seconds: Option<i64>,
    pub max_attempts: Option<i64>,
}

/// Limits applied to every script hook call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    /// What one hook call may grow the process by, in MiB.
    pub max_hook_memory_mb: u64,
    /// Working parameters (`identity::set`) one sign-in may keep, and their total size in bytes.
    pub max_working_parameters: usize,
    pub max_working_bytes: usize,
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
            max_hook_memory_mb: 32,
            max_working_parameters: 64,
            max_working_bytes: 64 * 1024,
        }
    }
}

impl SandboxConfig {
    pub fn hook_timeout(&self) -> Duration {
        Duration::from_millis(self.hook_timeout_ms)
    }
}

/// The OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The issuer URL applications see; `https://...` in production (turns on Secure cookies, HSTS).
    pub issuer: Issuer,
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
            issuer: Issuer::parse("http://localhost:8080").expect("a valid default"),
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
        self.issuer.https
    }

    /// The issuer without a trailing slash, as URLs are built from it.
    pub fn issuer_base(&self) -> &str {
        &self.issuer.base
    }
}

/// The issuer: an http(s) URL without query or fragment, parsed once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Issuer {
    /// Without a trailing slash.
    base: String,
    host: String,
    https: bool,
}

impl Issuer {
    pub fn parse(text: &str) -> Result<Issuer, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(format!(
                "{text:?}: use an http(s) URL without query or fragment"
            ));
        }
        Ok(Issuer {
            base: text.trim_end_matches('/').to_owned(),
            host: url.host_str().unwrap_or_default().to_owned(),
            https: url.scheme() == "https",
        })
    }

    /// The host name, as the WebOTP line of messages names it.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl TryFrom<String> for Issuer {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Issuer::parse(&text)
    }
}

impl OtpConfig {
    /// `[otp] code_key` after `${env:NAME}` expansion (checked at load).
    pub fn shared_code_key(&self) -> Option<Secret> {
        self.code_key
            .as_ref()
            .and_then(|key| key.resolved().ok().cloned())
    }
}

/// A registered application (relying party).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// May be `${env:NAME}`.
    pub client_secret: EnvValue,
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Provider of scripts that name none: "console" or the name of a `[sms.providers.NAME]`.
    pub provider: String,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// ISO 3166 region for numbers without a country code (e.g. "GB"); none: such numbers are refused.
    pub default_region: Option<String>,
    /// E.164 prefixes that may receive messages ("+44"). With `allowed_regions`: either admits.
    pub allowed_prefixes: Vec<String>,
    /// ISO 3166 regions that may receive messages ("GB", "US", "CA": +1 without the Caribbean).
    /// Both lists empty: no destination at all.
    pub allowed_regions: Vec<String>,
    /// E.164 prefixes that never receive messages, whatever the lists above admit ("+1900").
    pub denied_prefixes: Vec<String>,
    /// Also send to numbers that are only "possible" (test and drama ranges such as
    /// +44 7700 900xxx, the demo's). Off in production: such numbers reach no one.
    pub allow_test_numbers: bool,
    pub max_sends_per_login: i64,
    /// Wait before a login's second send; doubles for each further one.
    pub resend_cooldown_seconds: i64,
    pub per_number_per_hour: i64,
    pub per_number_per_day: i64,
    /// Per client address (behind a proxy only when it is in `[server] trusted_proxies`).
    pub per_address_per_hour: i64,
    /// Messages per UTC day for the whole server; then sending pauses and an alert is logged.
    pub daily_budget: i64,
    /// Messages per UTC day to one destination region (ISO 3166 → count), within `daily_budget`:
    /// a pumping attack on one country spends that country's budget, not everyone's.
    pub daily_budget_per_region: BTreeMap<String, i64>,
    /// End messages built by `otp::message` with `@HOST #CODE` (WebOTP / SMS Retriever autofill),
    /// HOST being the issuer's host.
    pub webotp_line: bool,
    /// Trailing digits of a number that pages and logs show (0 to 4); the country code always shows.
    pub visible_digits: i64,
    /// A provider's circuit breaker opens after this many failures (no connection, 5xx, 429,
    /// timeouts) within `breaker_window_seconds`...
    pub breaker_failures: u32,
    pub breaker_window_seconds: u64,
    /// ...and lets one send probe the provider again after this long.
    pub breaker_cool_off_seconds: u64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            provider: CONSOLE_PROVIDER.into(),
            providers: BTreeMap::new(),
            default_region: None,
            allowed_prefixes: Vec::new(),
            allowed_regions: Vec::new(),
            denied_prefixes: Vec::new(),
            allow_test_numbers: false,
            max_sends_per_login: 3,
            resend_cooldown_seconds: 60,
            per_number_per_hour: 5,
            per_number_per_day: 10,
            per_address_per_hour: 10,
            daily_budget: 10_000,
            daily_budget_per_region: BTreeMap::new(),
            webotp_line: true,
            visible_digits: 4,
            breaker_failures: 3,
            breaker_window_seconds: 60,
            breaker_cool_off_seconds: 30,
        }
    }
}

/// The development sink's name: messages are printed on standard output, nothing is sent.
pub const CONSOLE_PROVIDER: &str = "console";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    Console,
    Twilio(TwilioConfig),
    Http(GatewayConfig),
}

pub const TWILIO_API_BASE: &str = "https://api.twilio.com";

/// Twilio's Messages API. Values may be `${env:NAME}`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub account_sid: EnvValue,
    pub auth_token: EnvValue,
    pub from: EnvValue,
    #[serde(default = "twilio_api_base")]
    pub api_base: String,
    /// Ask Twilio for delivery receipts: each message names `{issuer}/sms/twilio/NAME/status`
    /// as its StatusCallback, and the receipts Twilio posts there (checked with
    /// X-Twilio-Signature) are logged and counted.
    #[serde(default)]
    pub status_callback: bool,
}

/// Where Twilio posts the delivery receipts of `[sms.providers.NAME]` (`issuer` without a
/// trailing slash).
pub fn twilio_status_url(issuer: &str, name: &str) -> String {
    format!("{issuer}/sms/twilio/{name}/status")
}

fn twilio_api_base() -> String {
    TWILIO_API_BASE.into()
}

impl std::fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// A generic HTTP SMS gateway, as WSO2's SMS OTP connector describes it: URL, method, headers,
/// payload, with `$ctx.num` and `$ctx.msg` placeholders. Values may be `${env:NAME}`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub url: EnvValue,
    #[serde(default = "post")]
    pub method: HttpMethod,
    #[serde(default)]
    pub headers: BTreeMap<String, EnvValue>,
    /// Request body template; none for gateways that take everything in the URL.
    #[serde(default)]
    pub payload: Option<EnvValue>,
    /// Defaults to JSON when the payload starts with `{` or `[`, to a form otherwise.
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub basic_user: Option<EnvValue>,
    #[serde(default)]
    pub basic_password: Option<EnvValue>,
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

fn post() -> HttpMethod {
    HttpMethod::Post
}

/// The methods an SMS gateway may be called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HttpMethod {
    Get,
    Post,
}

impl TryFrom<String> for HttpMethod {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.to_ascii_uppercase().as_str() {
            "GET" => Ok(HttpMethod::Get),
            "POST" => Ok(HttpMethod::Post),
            _ => Err(format!("method {text:?}: use GET or POST")),
        }
    }
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub connect_timeout_ms: u64,
    /// Whole request; keep it under `sandbox.hook_timeout_ms`.
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
    /// Hosts that may be reached over plain http. Development and tests only.
    pub insecure_http_hosts: Vec<String>,
    /// Loopback/private/link-local addresses or CIDR ranges that may be reached anyway.
    pub allow_addresses: Vec<Network>,
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Minimum level written: trace, debug, info, warn or error.
    pub level: String,
    /// Also write log lines to standard error.
    pub console: bool,
    /// Reload debounce: events closer together than this are one change.
    pub reload_debounce_ms: u64,
    /// `text` (one readable line per event) or `json` (one JSON object per line, for log
    /// shippers), in `logs/script.log` and on the console alike.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            console: true,
            reload_debounce_ms: 50,
            format: LogFormat::Text,
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
    /// SMS provider for this script: "console" or a `[sms.providers.NAME]`, or an ordered list
    /// of them (`["twilio", "vonage"]`: the first healthy one sends; the next takes over when
    /// one surely did not take the message). Without it, a script whose properties hold
    /// `twilio_sid`, `twilio_token` and `from_number` sends through Twilio, any other through
    /// `[sms] provider`.
    #[serde(default, deserialize_with = "one_or_many")]
    pub sms_provider: Vec<String>,
    /// Authentication method references put in ID tokens (RFC 8176), e.g. ["pwd", "sms", "mfa"].
    /// Default: what the host verified in the login ("pwd", "sms", "otp", plus "mfa" for two or
    /// more); ["pwd", "mfa"] when a script checked its second step itself (e.g. Stytch).
    #[serde(default)]
    pub amr: Option<Vec<String>>,
    /// This script's code policy: may only tighten `[otp]`.
    #[serde(default)]
    pub otp: Option<OtpOverride>,
    /// Lets the script write attributes of users other than the one signing in (an enrolment
    /// or migration script). Off: `users::set/add/remove` reach only the sign-in's own user.
    #[serde(default)]
    pub write_other_users: bool,
    /// Hosts this script may send secrets to (secret properties, the submitted password), besides
    /// the hosts of its URL-valued properties.
    #[serde(default)]
    pub secret_hosts: Vec<String>,
    /// Properties to treat as secret in addition to the names matched by default.
    #[serde(default)]
    pub secret_properties: Vec<String>,
    /// The script's custom properties, handed to every hook as `config`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// `properties` with `${env:NAME}` expanded and secrets marked, once, at load.
    #[serde(skip)]
    resolved: ResolvedProperties,
}

/// A script's properties after `${env:NAME}` expansion, and those whose variable is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedProperties {
    pub values: BTreeMap<String, PropertyValue>,
    pub unset: Vec<UnsetVariable>,
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

/// `"twilio"` or `["twilio", "vonage"]`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(name) => vec![name],
        OneOrMany::Many(names) => names,
    })
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
    /// The providers named by `sms_provider`, in order; empty: the default choice.
    pub fn sms_providers(&self) -> &[String] {
        &self.sms_provider
    }

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

    /// Properties with `${env:NAME}` expanded (at load). A property whose variable is unset is
    /// left out (so the script's own "missing property" check names it) and reported in the
    /// second list.
    pub fn resolved_properties(&self) -> (&BTreeMap<String, PropertyValue>, &[UnsetVariable]) {
        (&self.resolved.values, &self.resolved.unset)
    }

    /// Expands the properties; done once by [`Config::parse`].
    pub fn resolve(&mut self) {
        let (values, unset) = self.expand_properties();
        self.resolved = ResolvedProperties { values, unset };
    }

    fn expand_properties(&self) -> (BTreeMap<String, PropertyValue>, Vec<UnsetVariable>) {
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

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
            path: path.to_owned(),
            reason,
        })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line_toml_error(text, &e),
        })?;
        config.validate(path)?;
        for entry in &mut config.scripts {
            entry.resolve();
        }
        Ok(config)
    }

    pub fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    pub fn script(&self, acr: &str) -> Option<&ScriptEntry> {
        self.scripts.iter().find(|s| s.acr == acr)
    }
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
    use validate::is_plain_script_file_name;

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
    fn a_redis_store_needs_a_redis_url_and_a_shared_code_key() {
        for (text, key) in [
            (
                "[store]\nbackend = \"redis\"\n",
                "store.url: backend = \"redis\" needs url",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = \"http://127.0.0.1:6379\"\n",
                "store.url: a Redis URL starts with redis://",
            ),
            (
                "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n",
                "otp.code_key: backend = \"redis\" shares sign-ins between nodes",
            ),
            ("[store]\nbackend = \"disk\"\n", "unknown variant `disk`"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let config = parse("[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n[otp]\ncode_key = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
        assert_eq!(config.store.backend, StoreBackend::Redis);
    }

    #[test]
    fn destination_regions_and_their_budgets_are_checked_with_their_key() {
        for (text, key) in [
            (
                "[sms]\nallowed_regions = [\"GB\", \"XX\"]\n",
                "sms.allowed_regions[1]: \"XX\" is not an ISO 3166 region",
            ),
            (
                "[sms]\ndaily_budget_per_region = { gb = 2 }\n",
                "sms.daily_budget_per_region.gb: \"gb\" is not an ISO 3166 region",
            ),
            (
                "[sms]\ndaily_budget_per_region = { GB = -1 }\n",
                "sms.daily_budget_per_region.GB: -1 is out of range",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let config = parse("[sms]\ndaily_budget_per_region = { GB = 2, US = 500 }\n").unwrap();
        assert_eq!(config.sms.daily_budget_per_region.get("US"), Some(&500));
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
        let mut entry = entry;
        entry.resolve();
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
