//! Device cookies (OWASP's pattern against lockout attacks): a browser that has signed in to an
//! account carries a signed cookie naming it, and is not held by that account's soft delay,
//! which anyone can otherwise trigger from anywhere. The cookie is `base64url(user).nonce.mac`,
//! the MAC an HMAC-SHA256 under the server's device key; it proves a past sign-in, nothing more.

use axum::http::{HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::base::digest::hmac_sha256_hex;
use crate::base::phone::is_phone_subject;
use crate::base::random;
use crate::config::OidcConfig;

/// How long a device cookie is kept (180 days).
const MAX_AGE_SECONDS: u64 = 180 * 24 * 3600;

fn cookie_name(oidc: &OidcConfig) -> &'static str {
    if oidc.is_https() {
        "__Host-gatehouse-device"
    } else {
        "gatehouse_device"
    }
}

fn mac(key: &[u8], user: &str, nonce: &str) -> String {
    hmac_sha256_hex(key, format!("{user}\0{nonce}").as_bytes())
}

/// The cookie to set after `user` signed in (none for phone-number subjects).
pub fn issue(key: &[u8], oidc: &OidcConfig, user: &str) -> Option<HeaderValue> {
    if is_phone_subject(user) {
        return None;
    }
    let nonce = random::hex_token(16).ok()?;
    let value = format!(
        "{}.{nonce}.{}",
        URL_SAFE_NO_PAD.encode(user),
        mac(key, user, &nonce)
    );
    let secure = if oidc.is_https() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={MAX_AGE_SECONDS}{secure}",
        cookie_name(oidc)
    ))
    .ok()
}

/// The account a valid device cookie of this request names, if any.
pub fn user_of(key: &[u8], oidc: &OidcConfig, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(oidc);
    let value = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)?;
    let mut parts = value.split('.');
    let (user, nonce, presented) = (parts.next()?, parts.next()?, parts.next()?);
    let user = String::from_utf8(URL_SAFE_NO_PAD.decode(user).ok()?).ok()?;
    let expected = mac(key, &user, nonce);
    bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        presented.as_bytes(),
    ))
    .then_some(user)
}
