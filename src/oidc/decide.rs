//! The OpenID Connect decisions the web layer only maps to responses: what a valid
//! authorization request leads to (single sign-on, `prompt`, `max_age`, the acr to start), and
//! where an RP-initiated logout may send the browser.

use serde::{Deserialize, Serialize};

use crate::base::phone::subject_for_log;
use crate::config::{ClientConfig, Config};

use super::{AuthorizationRequest, ErrorRedirect};

/// Single sign-on: who a browser is signed in as, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub user: String,
    pub acr: String,
    pub amr: Vec<String>,
    pub auth_time: u64,
    /// Claims the script added to the ID token.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, serde_json::Value>,
}

/// What to do with a valid authorization request.
#[derive(Debug, Clone)]
pub enum AuthorizeDecision {
    /// The browser's sign-in satisfies the request: issue a code now.
    SingleSignOn(SignedIn),
    /// Start a login with this acr (`None`: the server's default).
    StartLogin { acr: Option<String> },
    /// Send the application an error (RFC 6749 section 4.1.2.1).
    Refuse(ErrorRedirect),
}

/// Decides a validated request. `signed_in` is the browser's sign-in, `now` the time in seconds,
/// `usable` says whether an acr can serve an interactive login now.
pub fn decide_authorization(
    request: &AuthorizationRequest,
    client: &ClientConfig,
    signed_in: Option<&SignedIn>,
    now: u64,
    usable: impl Fn(&str) -> bool,
) -> AuthorizeDecision {
    let refuse = |error: &'static str, description: &str| {
        AuthorizeDecision::Refuse(ErrorRedirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error,
            description: description.to_owned(),
        })
    };
    let wanted: &[String] = if request.acr_values.is_empty() {
        &client.default_acr_values
    } else {
        &request.acr_values
    };
    // Single sign-on: a browser signed in with an acceptable method, recently enough, skips the
    // login unless the application asks to sign in again.
    if let Some(signed_in) = signed_in
        .filter(|s| !request.prompt_login && request.accepts_sign_in_from(s.auth_time, now))
    {
        if wanted.is_empty() || wanted.contains(&signed_in.acr) {
            tracing::info!(target: "server", acr = signed_in.acr.as_str(), "single sign-on for {} to {}", subject_for_log(&signed_in.user), request.client_id);
            return AuthorizeDecision::SingleSignOn(signed_in.clone());
        }
    }
    if request.prompt_none {
        return refuse(
            "login_required",
            "the user is not signed in with a requested method",
        );
    }
    if wanted.is_empty() {
        return AuthorizeDecision::StartLogin { acr: None };
    }
    match wanted.iter().find(|acr| usable(acr)) {
        Some(acr) => AuthorizeDecision::StartLogin {
            acr: Some(acr.clone()),
        },
        None => {
            tracing::warn!(target: "server", "none of the acr_values {wanted:?} is enabled for {}", request.client_id);
            refuse(
                "invalid_request",
                "none of the requested acr_values is available",
            )
        }
    }
}

/// Why a logout request is refused (shown at Gatehouse, never redirected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("The post_logout_redirect_uri is not registered for this application.")]
pub struct UnregisteredLogoutUri;

/// Where an RP-initiated logout may send the browser: only a post-logout URI registered, byte
/// for byte, for the client; `None` when none was asked for.
pub fn logout_target(
    config: &Config,
    client_id: Option<&str>,
    requested: Option<&str>,
) -> Result<Option<String>, UnregisteredLogoutUri> {
    let Some(uri) = requested else {
        return Ok(None);
    };
    let registered = client_id
        .and_then(|c| config.client(c))
        .is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
    if registered {
        Ok(Some(uri.to_owned()))
    } else {
        Err(UnregisteredLogoutUri)
    }
}
