//! The browser session: a random id in an HttpOnly cookie, its state in the state store (under a
//! hash of the id). It holds the pending authorization request, the login in progress, the CSRF
//! token and, once signed in, the single sign-on state. The id changes after every passed step.

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::base::digest::{hex, sha256};
use crate::base::{random, store_keys};
use crate::config::{Config, OidcConfig};
use crate::flow::ChosenSignIn;
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
    /// A sign-in chosen by `/authorize` and not begun yet: begun by the first login request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<ChosenSignIn>,
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

/// A session is kept under a hash of its id (a store dump holds no usable cookie); 128 bits
/// of it name the key.
fn store_key(id: &str) -> String {
    store_keys::session(&hex(&sha256(id)[..random::ID_BYTES]))
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
    let id = cookie_value(headers, cookie_name(oidc)).filter(|v| random::is_id_token(v));
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
    let csrf = random::id_token().map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(Session {
        id: None,
        data: BrowserSession {
            csrf,
            authorization: None,
            login: None,
            chosen: None,
            signed_in: None,
        },
    })
}

impl Session {
    /// Saves under the current id (a new one for a new session) and returns the cookie to set,
    /// if any. A session lives as long as single sign-on once signed in, and only as long as a
    /// sign-in before: unfinished sign-ins do not pile up for hours.
    pub fn save(
        &mut self,
        store: &dyn StateStore,
        config: &Config,
    ) -> Result<Option<HeaderValue>, StoreError> {
        let oidc = &config.oidc;
        let ttl = if self.data.signed_in.is_some() {
            oidc.sso_ttl_seconds
        } else {
            config.login.ttl_seconds.min(oidc.sso_ttl_seconds)
        };
        let fresh = self.id.is_none();
        if fresh {
            self.id = Some(random::id_token().map_err(|e| StoreError::Unavailable(e.to_string()))?);
        }
        let id = self.id.clone().unwrap_or_default();
        let bytes = serde_json::to_vec(&self.data).expect("sessions serialise");
        store.put(&store_key(&id), bytes, Duration::from_secs(ttl))?;
        Ok(fresh.then(|| set_cookie(oidc, &id)))
    }

    /// Moves the session to a new id (after a passed step or sign-in) and a new CSRF token.
    pub fn rotate(
        &mut self,
        store: &dyn StateStore,
        config: &Config,
    ) -> Result<HeaderValue, StoreError> {
        if let Some(old) = self.id.take() {
            store.delete(&store_key(&old))?;
        }
        self.data.csrf = random::id_token().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(self.save(store, config)?.expect("a rotated session is new"))
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::base::ManualClock;
    use crate::oidc::SignedIn;
    use crate::store::MemoryStore;

    fn cookie_headers(cookie: &HeaderValue) -> HeaderMap {
        let pair = cookie
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&pair).unwrap());
        headers
    }

    #[test]
    fn a_session_outlives_its_sign_in_only_once_signed_in() {
        let config =
            Config::parse(Path::new("gatehouse.toml"), "[login]\nttl_seconds = 900\n").unwrap();
        let clock = Arc::new(ManualClock::new());
        let store = MemoryStore::with_clock(clock.clone());
        let mut pending = load(&store, &config.oidc, &HeaderMap::new()).unwrap();
        let pending_cookie = pending.save(&store, &config).unwrap().unwrap();
        let mut signed = load(&store, &config.oidc, &HeaderMap::new()).unwrap();
        signed.data.signed_in = Some(SignedIn {
            user: "alice".into(),
            acr: "sms_otp".into(),
            amr: vec!["pwd".into()],
            auth_time: 0,
            claims: Default::default(),
        });
        let signed_cookie = signed.save(&store, &config).unwrap().unwrap();
        clock.advance(Duration::from_secs(901));
        let pending = load(&store, &config.oidc, &cookie_headers(&pending_cookie)).unwrap();
        assert!(
            pending.id.is_none(),
            "an unfinished sign-in's session is gone"
        );
        let signed = load(&store, &config.oidc, &cookie_headers(&signed_cookie)).unwrap();
        assert!(signed.data.signed_in.is_some(), "single sign-on stays");
    }
}
