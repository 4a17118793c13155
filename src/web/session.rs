//! The browser session: a random id in an HttpOnly cookie, its state in the state store (under a
//! hash of the id). It holds the pending authorization request, the login in progress, the CSRF
//! token and, once signed in, the single sign-on state. The id changes after every passed step.

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::base::digest::sha256_hex;
use crate::base::{random, store_keys};
use crate::config::OidcConfig;
use crate::oidc::{AuthorizationRequest, SignedIn};
use crate::ports::{StateStore, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrowserSession {
    pub csrf: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationRequest>,
    /// Handle of the login in progress (never sent to the browser).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_in: Option<SignedIn>,
}

/// Loaded session plus its id (absent for a new session).
pub struct Session {
    pub id: Option<String>,
    pub data: BrowserSession,
}

pub fn cookie_name(oidc: &OidcConfig) -> &'static str {
    // The __Host- prefix pins the cookie to this host, path / and https.
    if oidc.is_https() {
        "__Host-gatehouse"
    } else {
        "gatehouse_session"
    }
}

fn store_key(id: &str) -> String {
    store_keys::session(&sha256_hex(id))
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

pub fn load(
    store: &dyn StateStore,
    oidc: &OidcConfig,
    headers: &HeaderMap,
) -> Result<Session, StoreError> {
    let id = cookie_value(headers, cookie_name(oidc))
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    if let Some(id) = id {
        if let Some(bytes) = store.get(&store_key(id))? {
            if let Ok(data) = serde_json::from_slice(&bytes) {
                return Ok(Session {
                    id: Some(id.to_owned()),
                    data,
                });
            }
        }
    }
    let csrf = random::hex_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(Session {
        id: None,
        data: BrowserSession {
            csrf,
            authorization: None,
            login: None,
            signed_in: None,
        },
    })
}

impl Session {
    /// Saves under the current id (a new one for a new session) and returns the cookie to set, if any.
    pub fn save(
        &mut self,
        store: &dyn StateStore,
        oidc: &OidcConfig,
    ) -> Result<Option<HeaderValue>, StoreError> {
        let fresh = self.id.is_none();
        if fresh {
            self.id =
                Some(random::hex_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?);
        }
        let id = self.id.clone().unwrap_or_default();
        let bytes = serde_json::to_vec(&self.data).expect("sessions serialise");
        store.put(
            &store_key(&id),
            bytes,
            Duration::from_secs(oidc.sso_ttl_seconds),
        )?;
        Ok(fresh.then(|| set_cookie(oidc, &id)))
    }

    /// Moves the session to a new id (after a passed step or sign-in) and a new CSRF token.
    pub fn rotate(
        &mut self,
        store: &dyn StateStore,
        oidc: &OidcConfig,
    ) -> Result<HeaderValue, StoreError> {
        if let Some(old) = self.id.take() {
            store.delete(&store_key(&old))?;
        }
        self.data.csrf =
            random::hex_token(32).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(self.save(store, oidc)?.expect("a rotated session is new"))
    }

    pub fn destroy(
        &mut self,
        store: &dyn StateStore,
        oidc: &OidcConfig,
    ) -> Result<HeaderValue, StoreError> {
        if let Some(old) = self.id.take() {
            store.delete(&store_key(&old))?;
        }
        Ok(clear_cookie(oidc))
    }
}

fn set_cookie(oidc: &OidcConfig, id: &str) -> HeaderValue {
    let secure = if oidc.is_https() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Lax{secure}",
        cookie_name(oidc)
    ))
    .expect("hex ids are valid header values")
}

fn clear_cookie(oidc: &OidcConfig) -> HeaderValue {
    let secure = if oidc.is_https() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}",
        cookie_name(oidc)
    ))
    .expect("valid header value")
}

pub fn with_cookie(mut headers: HeaderMap, cookie: Option<HeaderValue>) -> HeaderMap {
    if let Some(cookie) = cookie {
        headers.append(SET_COOKIE, cookie);
    }
    headers
}
