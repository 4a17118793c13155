//! The OpenID Connect provider logic (no HTTP here): authorization requests, clients, PKCE,
//! authorization codes, ID and access tokens, userinfo claims, logout hints; and, in `decide`,
//! what a request leads to (single sign-on, prompt, acr choice, logout target).

mod decide;
pub mod keys;

pub use decide::{
    decide_authorization, logout_target, AuthorizeDecision, SignedIn, UnregisteredLogoutUri,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::base::digest::{sha256, sha256_hex};
use crate::base::phone::PHONE_SUBJECT_PREFIX;
use crate::base::{random, store_keys, SharedClock};
use crate::config::{ClientConfig, Config};
use crate::ports::{StateStore, StoreError, StoreUpdate, UserDirectory};
pub use keys::{KeyError, SigningKey};

pub const SCOPES: [&str; 4] = ["openid", "profile", "email", "phone"];

/// The longest `state` (and `nonce`) a sign-in keeps for an application.
pub const MAX_STATE_BYTES: usize = 512;

/// A validated authorization request, kept with the browser session while the user logs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: Vec<String>,
    // Kept in every browser session of a sign-in: what is absent is not written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge: Option<String>,
    /// `acr_values` as sent, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_login: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prompt_none: bool,
    /// `max_age`: single sign-on only if the user signed in fewer than this many seconds ago
    /// (0 always asks again, like prompt=login).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u64>,
    /// `login_hint` as sent (at most 256 characters), for scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// `ui_locales`, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ui_locales: Vec<String>,
}

impl AuthorizationRequest {
    /// Whether a sign-in made at `auth_time` is recent enough, at `now`, for `max_age`.
    pub fn accepts_sign_in_from(&self, auth_time: u64, now: u64) -> bool {
        self.max_age
            .is_none_or(|max_age| now.saturating_sub(auth_time) < max_age)
    }
}

/// Why an authorization request was refused. Only errors after the redirect URI is trusted go
/// back to the application; the others are shown at Gatehouse.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// Unknown client or unregistered redirect URI: never redirect.
    Page(String),
    Redirect(ErrorRedirect),
}

#[derive(Debug, Clone)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub error: &'static str,
    pub description: String,
}

impl ErrorRedirect {
    pub fn location(&self, issuer: &str) -> String {
        let mut url =
            url::Url::parse(&self.redirect_uri).expect("registered redirect URIs are valid URLs");
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("error", self.error)
                .append_pair("error_description", &self.description);
            if let Some(state) = &self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", issuer);
        }
        url.to_string()
    }
}

/// Token endpoint failures, as RFC 6749 section 5.2 names them.
#[derive(Debug, Clone)]
pub struct TokenError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
    /// Seconds before the client may try again (HTTP Retry-After), when throttled.
    pub retry_after: Option<u64>,
}

impl TokenError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        TokenError {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// The state store does not answer: 503 for the client (who may retry), the detail logged.
    fn unavailable(error: StoreError) -> Self {
        tracing::error!(target: "server", "token endpoint: {error}");
        TokenError::new(
            503,
            "temporarily_unavailable",
            "the service is temporarily unavailable; try again",
        )
    }
}

/// Failed client authentications allowed in [`CLIENT_FAILURE_WINDOW_MS`], per client id and per
/// client address; past them the token endpoint answers 429 until the window ends.
const CLIENT_FAILURES_PER_CLIENT: u32 = 10;
const CLIENT_FAILURES_PER_ADDRESS: u32 = 20;
const CLIENT_FAILURE_WINDOW_MS: u64 = 60_000;

/// A window of failures: when it started and how many it holds.
#[derive(Serialize, Deserialize, Default)]
struct FailureWindow {
    started_ms: u64,
    failures: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error(transparent)]
    Random(#[from] random::RandomError),
}

/// What a code stands for, between the login and the token request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub user: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub auth_time: u64,
    /// Claims the script added (never one the host sets).
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
    pub nonce: Option<String>,
    pub scope: Vec<String>,
    pub code_challenge: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccessGrant {
    user: String,
    client_id: String,
    scope: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub id_token: String,
    pub scope: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdTokenClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    iat: u64,
    auth_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<String>,
    acr: String,
    /// Left out when the host verified nothing (RFC 8176 methods are never invented).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    amr: Vec<String>,
    azp: String,
    /// The script's claims; the host's own come first and cannot be replaced.
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

/// The subject and client an `id_token_hint` names.
#[derive(Debug, Clone)]
pub struct LogoutHint {
    pub user: String,
    pub client_id: String,
    pub acr: String,
}

pub struct Provider {
    store: Arc<dyn StateStore>,
    users: Arc<dyn UserDirectory>,
    key: SigningKey,
    clock: SharedClock,
}

/// PKCE S256: `BASE64URL(SHA256(verifier)) == challenge`, verifier per RFC 7636 section 4.1.
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

fn secret_matches(client: &ClientConfig, presented: &str) -> bool {
    // Expanded at load; a secret whose variable is unset matches nothing.
    let expected = client
        .client_secret
        .resolved()
        .map(|s| s.expose())
        .unwrap_or_default();
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

impl Provider {
    pub fn new(
        store: Arc<dyn StateStore>,
        users: Arc<dyn UserDirectory>,
        key: SigningKey,
        clock: SharedClock,
    ) -> Self {
        Provider {
            store,
            users,
            key,
            clock,
        }
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.key.jwk.clone()] })
    }

    /// The discovery document; `acrs` are the enabled interactive methods in level order.
    pub fn discovery(&self, config: &Config, acrs: &[String]) -> serde_json::Value {
        let issuer = config.oidc.issuer_base();
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
            "jwks_uri": format!("{issuer}/jwks"),
            "end_session_endpoint": format!("{issuer}/end_session"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": SCOPES,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp",
                "name", "given_name", "family_name", "preferred_username", "email", "email_verified",
                "phone_number", "phone_number_verified"],
            "acr_values_supported": acrs,
            "prompt_values_supported": ["none", "login"],
            "claims_parameter_supported": false,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// Checks an authorization request (first value of each parameter).
    pub fn validate_authorization(
        &self,
        config: &Config,
        params: &BTreeMap<String, String>,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        let get = |name: &str| params.get(name).map(String::as_str);
        let client_id = get("client_id")
            .ok_or_else(|| AuthorizeError::Page("The request names no client_id.".into()))?;
        let client = config.client(client_id).ok_or_else(|| {
            AuthorizeError::Page(format!(
                "The application {client_id:?} is not registered here."
            ))
        })?;
        // Exact, byte-for-byte match: no normalisation of case, port, path or trailing slash.
        let redirect_uri = get("redirect_uri")
            .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
            .ok_or_else(|| {
                AuthorizeError::Page(
                    "The redirect_uri is missing or not registered for this application.".into(),
                )
            })?
            .to_owned();
        // What a sign-in keeps for the application is bounded: an over-long value is refused,
        // never cut (a state too long to echo is refused on a page of our own).
        if get("state").is_some_and(|s| s.len() > MAX_STATE_BYTES) {
            return Err(AuthorizeError::Page(format!(
                "The state parameter is longer than {MAX_STATE_BYTES} bytes."
            )));
        }
        let state = get("state").map(str::to_owned);
        let refuse = |error: &'static str, description: &str| {
            AuthorizeError::Redirect(ErrorRedirect {
                redirect_uri: redirect_uri.clone(),
                state: state.clone(),
                error,
                description: description.to_owned(),
            })
        };
        for (name, limit) in [
            ("nonce", MAX_STATE_BYTES),
            ("scope", 1024),
            ("acr_values", 1024),
        ] {
            if get(name).is_some_and(|v| v.len() > limit) {
                return Err(refuse(
                    "invalid_request",
                    &format!("{name} is longer than {limit} bytes"),
                ));
            }
        }
        if get("request").is_some() || get("request_uri").is_some() {
            return Err(refuse(
                "request_not_supported",
                "request objects are not supported",
            ));
        }
        match get("response_type") {
            Some("code") => {}
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ))
            }
            None => return Err(refuse("invalid_request", "response_type is missing")),
        }
        if let Some(mode) = get("response_mode").filter(|m| *m != "query") {
            return Err(refuse(
                "invalid_request",
                &format!("response_mode {mode} is not supported"),
            ));
        }
        let scope: Vec<String> = get("scope")
            .unwrap_or("")
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        if !scope.iter().any(|s| s == "openid") {
            return Err(refuse("invalid_scope", "the scope must include openid"));
        }
        let scope: Vec<String> = scope
            .into_iter()
            .filter(|s| SCOPES.contains(&s.as_str()))
            .collect();
        let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
            (Some(challenge), Some("S256")) => {
                let valid = challenge.len() == 43
                    && challenge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    return Err(refuse(
                        "invalid_request",
                        "code_challenge is not a base64url SHA-256",
                    ));
                }
                Some(challenge.to_owned())
            }
            (Some(_), Some(method)) => {
                return Err(refuse(
                    "invalid_request",
                    &format!("code_challenge_method {method} is not supported; use S256"),
                ))
            }
            (Some(_), None) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256 (plain is refused)",
                ))
            }
            (None, Some(_)) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                ))
            }
            (None, None) if client.require_pkce => {
                return Err(refuse(
                    "invalid_request",
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                ))
            }
            (None, None) => None,
        };
        let prompts: Vec<&str> = get("prompt")
            .unwrap_or("")
            .split_ascii_whitespace()
            .collect();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return Err(refuse("invalid_request", "prompt=none cannot be combined"));
        }
        if let Some(other) = prompts.iter().find(|p| !matches!(**p, "none" | "login")) {
            return Err(refuse(
                "invalid_request",
                &format!("prompt={other} is not supported"),
            ));
        }
        let login_hint = match get("login_hint") {
            Some(hint) if hint.chars().count() > 256 => {
                return Err(refuse(
                    "invalid_request",
                    "login_hint is longer than 256 characters",
                ))
            }
            hint => hint.map(str::to_owned),
        };
        let ui_locales: Vec<String> = get("ui_locales")
            .unwrap_or("")
            .split_ascii_whitespace()
            .take(8)
            .filter(|tag| tag.len() <= 35)
            .map(str::to_owned)
            .collect();
        let max_age = match get("max_age") {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                refuse(
                    "invalid_request",
                    "max_age must be a whole number of seconds",
                )
            })?),
        };
        Ok(AuthorizationRequest {
            client_id: client_id.to_owned(),
            redirect_uri,
            scope,
            state,
            nonce: get("nonce").map(str::to_owned),
            code_challenge,
            acr_values: get("acr_values")
                .unwrap_or("")
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            prompt_login: prompts.contains(&"login"),
            prompt_none: prompts.contains(&"none"),
            max_age,
            login_hint,
            ui_locales,
        })
    }

    /// Stores a single-use code for `grant`.
    pub fn issue_code(&self, config: &Config, grant: &CodeGrant) -> Result<String, OidcError> {
        let code = random::hex_token(32)?;
        let bytes = serde_json::to_vec(grant).expect("grants serialise");
        self.store.put(
            &store_keys::authorization_code(&sha256_hex(&code)),
            bytes,
            Duration::from_secs(config.oidc.code_ttl_seconds),
        )?;
        Ok(code)
    }

    /// Counts an authentication attempt against `key` before it is checked, in one atomic
    /// update, so a burst gets no more tries than the same requests one by one: `Some(wait)`
    /// (nothing counted) once the window's failures are used up.
    fn reserve_client_try(&self, key: &str, limit: u32) -> Result<Option<u64>, TokenError> {
        let now = self.clock.now_ms();
        let mut wait = None;
        self.store
            .update(
                key,
                Some(Duration::from_millis(CLIENT_FAILURE_WINDOW_MS)),
                &mut |current| {
                    let mut window: FailureWindow = current
                        .and_then(|b| serde_json::from_slice(b).ok())
                        .unwrap_or_default();
                    if now >= window.started_ms + CLIENT_FAILURE_WINDOW_MS {
                        window = FailureWindow {
                            started_ms: now,
                            failures: 0,
                        };
                    }
                    if window.failures >= limit {
                        let ends = window.started_ms + CLIENT_FAILURE_WINDOW_MS;
                        wait = Some((ends - now).div_ceil(1000));
                        return StoreUpdate::Keep;
                    }
                    wait = None;
                    window.failures += 1;
                    StoreUpdate::Put(serde_json::to_vec(&window).expect("windows serialise"))
                },
            )
            .map_err(TokenError::unavailable)?;
        Ok(wait)
    }

    /// Takes back a reserved try that succeeded.
    fn release_client_try(&self, key: &str) -> Result<(), TokenError> {
        self.store
            .update(key, None, &mut |current| {
                let Some(mut window) =
                    current.and_then(|b| serde_json::from_slice::<FailureWindow>(b).ok())
                else {
                    return StoreUpdate::Keep;
                };
                window.failures = window.failures.saturating_sub(1);
                StoreUpdate::Put(serde_json::to_vec(&window).expect("windows serialise"))
            })
            .map_err(TokenError::unavailable)
    }

    /// Authenticates the client, throttling failures per client id and per client address.
    fn client<'c>(
        &self,
        config: &'c Config,
        form: &BTreeMap<String, String>,
        basic: Option<(String, String)>,
        address: Option<std::net::IpAddr>,
    ) -> Result<&'c ClientConfig, TokenError> {
        let claimed = basic
            .as_ref()
            .map(|(id, _)| id.clone())
            .or_else(|| form.get("client_id").cloned())
            .unwrap_or_default();
        let mut keys = vec![(
            store_keys::client_auth_failures_of_client(&claimed),
            CLIENT_FAILURES_PER_CLIENT,
        )];
        if let Some(ip) = address {
            keys.push((
                store_keys::client_auth_failures_from_address(&ip),
                CLIENT_FAILURES_PER_ADDRESS,
            ));
        }
        let mut reserved = Vec::new();
        for (key, limit) in &keys {
            if let Some(seconds) = self.reserve_client_try(key, *limit)? {
                for key in reserved {
                    self.release_client_try(key)?;
                }
                let mut error = TokenError::new(
                    429,
                    "invalid_client",
                    format!("too many failed client authentications: try again in {seconds} s"),
                );
                error.retry_after = Some(seconds);
                return Err(error);
            }
            reserved.push(key);
        }
        let result = self.authenticate_client(config, form, basic);
        if result.is_ok() {
            for key in reserved {
                self.release_client_try(key)?;
            }
        }
        result
    }

    /// Checks the client's credentials (client_secret_basic or client_secret_post).
    fn authenticate_client<'c>(
        &self,
        config: &'c Config,
        form: &BTreeMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<&'c ClientConfig, TokenError> {
        if let (Some((id, _)), Some(body_id)) = (&basic, form.get("client_id")) {
            if id != body_id {
                return Err(TokenError::new(
                    400,
                    "invalid_request",
                    "the client_id in the body differs from the authenticated client",
                ));
            }
        }
        let (id, secret) = match (basic, form.get("client_id"), form.get("client_secret")) {
            (Some(_), _, Some(_)) => {
                return Err(TokenError::new(
                    400,
                    "invalid_request",
                    "use one client authentication method, not two",
                ))
            }
            (Some((id, secret)), _, None) => (id, secret),
            (None, Some(id), Some(secret)) => (id.clone(), secret.clone()),
            _ => {
                return Err(TokenError::new(
                    401,
                    "invalid_client",
                    "client authentication is required",
                ))
            }
        };
        config
            .client(&id)
            .filter(|client| secret_matches(client, &secret))
            .ok_or_else(|| TokenError::new(401, "invalid_client", "unknown client or wrong secret"))
    }

    /// The token endpoint's `authorization_code` grant.
    pub fn exchange_code(
        &self,
        config: &Config,
        form: &BTreeMap<String, String>,
        basic: Option<(String, String)>,
        address: Option<std::net::IpAddr>,
    ) -> Result<TokenResponse, TokenError> {
        let client = self.client(config, form, basic, address)?;
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {}
            Some(_) => {
                return Err(TokenError::new(
                    400,
                    "unsupported_grant_type",
                    "only authorization_code is supported",
                ))
            }
            None => {
                return Err(TokenError::new(
                    400,
                    "invalid_request",
                    "grant_type is missing",
                ))
            }
        }
        let code = form
            .get("code")
            .ok_or_else(|| TokenError::new(400, "invalid_request", "code is missing"))?;
        let invalid_grant = |why: &str| TokenError::new(400, "invalid_grant", why);
        // Take the code atomically: a replay finds nothing.
        let mut grant: Option<CodeGrant> = None;
        self.store
            .update(
                &store_keys::authorization_code(&sha256_hex(code)),
                None,
                &mut |current| {
                    grant = current.and_then(|b| serde_json::from_slice(b).ok());
                    if grant.is_some() {
                        StoreUpdate::Delete
                    } else {
                        StoreUpdate::Keep
                    }
                },
            )
            .map_err(TokenError::unavailable)?;
        let Some(grant) = grant else {
            if self.revoke_replayed(code, &client.client_id)? {
                return Err(invalid_grant(
                    "the code was already used; the access token issued for it is revoked",
                ));
            }
            return Err(invalid_grant(
                "the code is unknown, expired or already used",
            ));
        };
        if grant.client_id != client.client_id {
            return Err(invalid_grant("the code was issued to another client"));
        }
        if form.get("redirect_uri") != Some(&grant.redirect_uri) {
            return Err(invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&grant.code_challenge, form.get("code_verifier")) {
            (Some(challenge), Some(verifier)) if pkce_matches(verifier, challenge) => {}
            (Some(_), Some(_)) => {
                return Err(invalid_grant(
                    "code_verifier does not match the code_challenge",
                ))
            }
            (Some(_), None) => return Err(invalid_grant("code_verifier is missing")),
            (None, Some(_)) => {
                return Err(invalid_grant("no code_challenge was sent for this code"))
            }
            (None, None) => {}
        }
        let issued = self.clock.now_secs();
        let claims = IdTokenClaims {
            iss: config.oidc.issuer_base().to_owned(),
            sub: grant.user.clone(),
            aud: client.client_id.clone(),
            exp: issued + config.oidc.id_token_ttl_seconds,
            iat: issued,
            auth_time: grant.auth_time,
            nonce: grant.nonce.clone(),
            acr: grant.acr.clone(),
            amr: grant.amr.clone(),
            extra: grant.claims.clone(),
            azp: client.client_id.clone(),
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.key.kid.clone());
        let id_token = jsonwebtoken::encode(&header, &claims, &self.key.encoding)
            .map_err(|e| TokenError::new(500, "server_error", format!("signing failed: {e}")))?;
        let access_token = random::hex_token(32)
            .map_err(|e| TokenError::new(500, "server_error", format!("random: {e}")))?;
        let access = AccessGrant {
            user: grant.user,
            client_id: client.client_id.clone(),
            scope: grant.scope.clone(),
        };
        let access_key = store_keys::access_token(&sha256_hex(&access_token));
        let access_ttl = Duration::from_secs(config.oidc.access_token_ttl_seconds);
        self.store
            .put(
                &access_key,
                serde_json::to_vec(&access).expect("grants serialise"),
                access_ttl,
            )
            .and_then(|()| {
                // Remembered as long as the token lives: a replay of the code revokes it.
                self.store.put(
                    &store_keys::redeemed_code(&sha256_hex(code)),
                    access_key.into_bytes(),
                    access_ttl,
                )
            })
            .map_err(TokenError::unavailable)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: config.oidc.access_token_ttl_seconds,
            id_token,
            scope: grant.scope.join(" "),
        })
    }

    /// A redeemed code presented again (RFC 6749 4.1.2): the access token it gave is revoked.
    /// Whether `code` was such a code.
    fn revoke_replayed(&self, code: &str, client_id: &str) -> Result<bool, TokenError> {
        let server_error = TokenError::unavailable;
        let marker = store_keys::redeemed_code(&sha256_hex(code));
        let Some(access_key) = self.store.get(&marker).map_err(server_error)? else {
            return Ok(false);
        };
        self.store
            .delete(&String::from_utf8_lossy(&access_key))
            .and_then(|()| self.store.delete(&marker))
            .map_err(server_error)?;
        tracing::warn!(target: "server", "authorization code of client {client_id} presented twice: its access token is revoked");
        Ok(true)
    }

    /// Claims for a bearer access token, by scope; `None` if the token is unknown or expired.
    pub fn userinfo(&self, access_token: &str) -> Result<Option<serde_json::Value>, OidcError> {
        let Some(bytes) = self
            .store
            .get(&store_keys::access_token(&sha256_hex(access_token)))?
        else {
            return Ok(None);
        };
        let Ok(grant) = serde_json::from_slice::<AccessGrant>(&bytes) else {
            return Ok(None);
        };
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), grant.user.clone().into());
        // A phone-number sign-in has no directory entry: the verified number is all there is.
        if let Some(number) = grant.user.strip_prefix(PHONE_SUBJECT_PREFIX) {
            if grant.scope.iter().any(|s| s == "phone") {
                claims.insert("phone_number".into(), number.into());
                claims.insert("phone_number_verified".into(), true.into());
            }
            return Ok(Some(claims.into()));
        }
        let user = self.users.find(&grant.user).ok().flatten();
        let Some(user) = user else {
            return Ok(Some(claims.into()));
        };
        let first = |names: &[&str]| names.iter().find_map(|n| user.first(n)).map(str::to_owned);
        let has = |scope: &str| grant.scope.iter().any(|s| s == scope);
        let mut put = |claim: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                claims.insert(claim.into(), value);
            }
        };
        if has("profile") {
            put("preferred_username", Some(grant.user.clone().into()));
            put(
                "name",
                first(&["displayName", "cn", "name"]).map(Into::into),
            );
            put("given_name", first(&["givenName"]).map(Into::into));
            put("family_name", first(&["sn", "familyName"]).map(Into::into));
        }
        if has("email") {
            let email = first(&["mail", "email"]);
            put(
                "email_verified",
                email.as_ref().map(|_| {
                    user.first("emailVerified")
                        .is_some_and(|v| v == "true")
                        .into()
                }),
            );
            put("email", email.map(Into::into));
        }
        if has("phone") {
            if let Some(verified) = user.first("phoneNumberVerified") {
                put("phone_number", Some(verified.into()));
                put("phone_number_verified", Some(true.into()));
            } else if let Some(number) = first(&["mobile", "telephoneNumber"]) {
                put("phone_number", Some(number.into()));
                put("phone_number_verified", Some(false.into()));
            }
        }
        Ok(Some(claims.into()))
    }

    /// Reads an `id_token_hint` we signed (an expired one is fine for logout).
    pub fn logout_hint(&self, config: &Config, id_token: &str) -> Option<LogoutHint> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[config.oidc.issuer_base()]);
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<IdTokenClaims>(id_token, &self.key.decoding, &validation)
            .ok()?;
        Some(LogoutHint {
            user: data.claims.sub,
            client_id: data.claims.aud,
            acr: data.claims.acr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_an_independent_computation() {
        // Challenge computed independently (Python hashlib + base64.urlsafe_b64encode).
        let challenge = "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g";
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk",
            challenge
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXx",
            challenge
        ));
        assert!(!pkce_matches("short", challenge));
    }
}
