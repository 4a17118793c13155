//! A generic HTTP SMS gateway (WSO2's SMS OTP connector model): URL, method, headers and a
//! payload template with `$ctx.num` and `$ctx.msg`, accepted status codes, and optional checks on
//! the answer so a 200 that carries an error is still a failure.

use std::sync::Arc;

use crate::base::Secret;
use crate::config::{EnvValue, GatewayConfig, HttpMethod};
use crate::outbound::{Auth, Body, HttpBridge, MaybeSecret, Method, OutboundRequest};
use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

pub const NUMBER_PLACEHOLDER: &str = "$ctx.num";
pub const MESSAGE_PLACEHOLDER: &str = "$ctx.msg";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadKind {
    Json,
    /// Form bodies and anything else: placeholders are URL-encoded.
    Encoded,
}

pub struct GatewaySms {
    name: String,
    bridge: Arc<HttpBridge>,
    method: Method,
    url: Secret,
    headers: Vec<(String, MaybeSecret)>,
    payload: Option<(Secret, String, PayloadKind)>,
    basic: Option<(String, Secret)>,
    accepted_status: Vec<u16>,
    success_body_contains: Option<String>,
    failure_body_contains: Option<String>,
    message_id_pointer: Option<String>,
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// JSON string contents without the surrounding quotes: the template supplies them.
fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted[1..quoted.len() - 1].to_owned()
}

impl GatewaySms {
    /// Builds from config; `key` names the config section in errors.
    pub fn new(
        name: &str,
        bridge: Arc<HttpBridge>,
        config: &GatewayConfig,
    ) -> Result<Self, (String, String)> {
        let key = format!("sms.providers.{name}");
        // Expanded at load; a variable that was unset is reported with its key.
        let expand = |field: &str, value: &EnvValue| {
            value
                .require(&format!("{key}.{field}"))
                .map(|v| v.expose().to_owned())
        };
        let method = match config.method {
            HttpMethod::Get => Method::Get,
            HttpMethod::Post => Method::Post,
        };
        let url = expand("url", &config.url)?;
        let mut headers = Vec::new();
        for (header, value) in &config.headers {
            headers.push((
                header.clone(),
                MaybeSecret::Secret(Secret::new(expand(&format!("headers.{header}"), value)?)),
            ));
        }
        let payload = match &config.payload {
            Some(template) => {
                let template = expand("payload", template)?;
                let content_type = config.content_type.clone().unwrap_or_else(|| {
                    if template.trim_start().starts_with(['{', '[']) {
                        "application/json".into()
                    } else {
                        "application/x-www-form-urlencoded".into()
                    }
                });
                let kind = if content_type.contains("json") {
                    PayloadKind::Json
                } else {
                    PayloadKind::Encoded
                };
                Some((Secret::new(template), content_type, kind))
            }
            None => None,
        };
        let basic = match (&config.basic_user, &config.basic_password) {
            (Some(user), Some(password)) => Some((
                expand("basic_user", user)?,
                Secret::new(expand("basic_password", password)?),
            )),
            (None, None) => None,
            _ => {
                return Err((
                    format!("{key}.basic_password"),
                    "set both basic_user and basic_password, or neither".into(),
                ))
            }
        };
        Ok(GatewaySms {
            name: name.to_owned(),
            bridge,
            method,
            url: Secret::new(url),
            headers,
            payload,
            basic,
            accepted_status: config.accepted_status.clone(),
            success_body_contains: config.success_body_contains.clone(),
            failure_body_contains: config.failure_body_contains.clone(),
            message_id_pointer: config.message_id_pointer.clone(),
        })
    }

    fn fill(template: &str, to: &str, text: &str, kind: PayloadKind) -> String {
        let (number, message) = match kind {
            PayloadKind::Json => (json_escape(to), json_escape(text)),
            PayloadKind::Encoded => (url_encode(to), url_encode(text)),
        };
        template
            .replace(NUMBER_PLACEHOLDER, &number)
            .replace(MESSAGE_PLACEHOLDER, &message)
    }
}

impl SmsSender for GatewaySms {
    fn provider(&self) -> &str {
        &self.name
    }

    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        let text = message.text.expose();
        let url = Self::fill(self.url.expose(), &message.to, text, PayloadKind::Encoded);
        let mut request = OutboundRequest::new(self.method, url);
        request.headers = self.headers.clone();
        if let Some((user, password)) = &self.basic {
            request.auth = Some(Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            });
        }
        if let Some((template, content_type, kind)) = &self.payload {
            let body = Self::fill(template.expose(), &message.to, text, *kind);
            request.body = Body::Text {
                content_type: content_type.clone(),
                text: Secret::new(body),
            };
        }
        let provider = self.name.clone();
        let response = self
            .bridge
            .send(&request)
            .map_err(|e| super::transport_error(&provider, &e))?;
        // The answer may echo the message: never let it reach an error text.
        let excerpt: String = response
            .body
            .replace(text, "***")
            .chars()
            .take(160)
            .collect();
        let id = self.message_id_pointer.as_deref().and_then(|pointer| {
            let value = response.json()?.pointer(pointer)?.clone();
            Some(
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned),
            )
        });
        let refused =
            |why: String| super::status_error(&provider, response.status, id.is_some(), why);
        if !self.accepted_status.contains(&response.status) {
            return Err(refused(format!(
                "HTTP {} (accepted: {:?}): {excerpt}",
                response.status, self.accepted_status
            )));
        }
        if let Some(needle) = self
            .failure_body_contains
            .as_deref()
            .filter(|n| response.body.contains(n))
        {
            return Err(refused(format!(
                "HTTP {} but the answer contains {needle:?}: {excerpt}",
                response.status
            )));
        }
        if let Some(needle) = self
            .success_body_contains
            .as_deref()
            .filter(|n| !response.body.contains(n))
        {
            return Err(refused(format!(
                "HTTP {} but the answer lacks {needle:?}: {excerpt}",
                response.status
            )));
        }
        Ok(SmsReceipt {
            provider_message_id: id,
            sent_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_encoded_for_their_place() {
        let json = GatewaySms::fill(
            r#"{"to":"$ctx.num","text":"$ctx.msg"}"#,
            "+4477",
            "say \"hi\"\n& go",
            PayloadKind::Json,
        );
        assert_eq!(json, r#"{"to":"+4477","text":"say \"hi\"\n& go"}"#);
        let form = GatewaySms::fill(
            "to=$ctx.num&text=$ctx.msg",
            "+4477",
            "a b&c=d",
            PayloadKind::Encoded,
        );
        assert_eq!(form, "to=%2B4477&text=a+b%26c%3Dd");
    }
}
