//! Delivery receipts: Twilio posts a message's status (`MessageStatus`: queued, sent, delivered,
//! undelivered, failed...) to the `StatusCallback` URL each message named
//! (`{issuer}/sms/twilio/NAME/status`, for a `[sms.providers.NAME]` with `status_callback =
//! true`). A receipt counts only with a valid `X-Twilio-Signature`: Base64 of HMAC-SHA1, keyed
//! with the account's auth token, of that URL followed by every posted field's name and value,
//! sorted by name. It is then logged (message id, status, error code: never the number) and
//! counted in `gatehouse_sms_delivery_total`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::config::ProviderConfig;
use crate::web::WebState;

/// Statuses Twilio documents; anything else is counted as "other".
const STATUSES: [&str; 10] = [
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "canceled",
];

/// What Twilio signs: the URL, then each field's name and value, sorted by name.
pub fn signed_text(url: &str, fields: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = fields.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = url.to_owned();
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    text
}

/// The signature Twilio sends for `fields` posted to `url` under `auth_token`.
pub fn twilio_signature(auth_token: &str, url: &str, fields: &[(String, String)]) -> String {
    let mac =
        crate::base::digest::hmac_sha1(auth_token.as_bytes(), signed_text(url, fields).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac)
}

pub async fn twilio_status(
    State(state): State<WebState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let config = state.config.current();
    let token = match config.sms.providers.get(&name) {
        Some(ProviderConfig::Twilio(twilio)) if twilio.status_callback => {
            twilio.auth_token.resolved().ok().cloned()
        }
        _ => None,
    };
    let Some(token) = token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let url = crate::config::twilio_status_url(config.oidc.issuer_base(), &name);
    let expected = twilio_signature(token.expose(), &url, &fields);
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let field = |key: &str| {
        fields
            .iter()
            .find(|(n, _)| n == key)
            .map_or("", |(_, v)| v.as_str())
    };
    let signed = bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        expected.as_bytes(),
    ));
    state.log_scope(|| {
        if !signed {
            tracing::warn!(target: "server", "sms delivery receipt for provider {name} refused: missing or wrong X-Twilio-Signature (is [oidc] issuer the URL Twilio calls?)");
            return StatusCode::FORBIDDEN.into_response();
        }
        let status = field("MessageStatus").to_ascii_lowercase();
        let status = STATUSES
            .iter()
            .copied()
            .find(|s| *s == status)
            .unwrap_or("other");
        // Ids and error codes are short and plain; anything else is not echoed into the log.
        let plain = |v: &str, max: usize| {
            if !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                v.to_owned()
            } else {
                "-".to_owned()
            }
        };
        let id = plain(field("MessageSid"), 64);
        let error = plain(field("ErrorCode"), 10);
        state.metrics.sms_delivery(&name, status);
        match status {
            "undelivered" | "failed" => tracing::warn!(target: "server", "sms delivery receipt: provider={name} id={id} status={status} error={error}"),
            _ => tracing::info!(target: "server", "sms delivery receipt: provider={name} id={id} status={status}"),
        }
        StatusCode::NO_CONTENT.into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_twilio_documents() {
        // Twilio's documented example (Security: validating requests).
        let fields: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(
            twilio_signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &fields
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
