//! Twilio's Messages API: `POST {api_base}/2010-04-01/Accounts/{sid}/Messages.json`, HTTP Basic
//! `sid:token`, form fields `To`, `From`, `Body`; 201 with a `sid` is success.

use std::sync::Arc;

use crate::base::Secret;
use crate::outbound::{Auth, Body, HttpBridge, MaybeSecret, Method, OutboundRequest};
use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

const PROVIDER: &str = "twilio";

pub struct TwilioSms {
    bridge: Arc<HttpBridge>,
    account_sid: String,
    auth_token: Secret,
    from: String,
    api_base: String,
    /// Where Twilio should post this message's delivery receipts.
    status_callback: Option<String>,
}

impl TwilioSms {
    /// `account_sid` must be Twilio's `AC...` id: it becomes part of the URL path.
    pub fn new(
        bridge: Arc<HttpBridge>,
        account_sid: &str,
        auth_token: Secret,
        from: &str,
        api_base: &str,
    ) -> Result<Self, String> {
        if account_sid.is_empty() || !account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err("the account SID must be letters and digits (Twilio's AC... id)".into());
        }
        if auth_token.is_empty() || from.trim().is_empty() {
            return Err("the auth token and the sending number must not be empty".into());
        }
        Ok(TwilioSms {
            bridge,
            account_sid: account_sid.to_owned(),
            auth_token,
            from: from.trim().to_owned(),
            api_base: api_base.trim_end_matches('/').to_owned(),
            status_callback: None,
        })
    }

    /// Asks Twilio to post delivery receipts to `url` (the `StatusCallback` parameter).
    pub fn with_status_callback(mut self, url: String) -> Self {
        self.status_callback = Some(url);
        self
    }

    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }
}

impl SmsSender for TwilioSms {
    fn provider(&self) -> &str {
        PROVIDER
    }

    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        let mut request = OutboundRequest::new(
            Method::Post,
            format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.api_base, self.account_sid
            ),
        );
        request.auth = Some(Auth::Basic {
            user: self.account_sid.clone(),
            password: self.auth_token.clone(),
        });
        request.headers.push((
            "Accept".into(),
            MaybeSecret::Plain("application/json".into()),
        ));
        request.body = Body::Form(vec![
            ("To".into(), MaybeSecret::Plain(message.to.clone())),
            ("From".into(), MaybeSecret::Plain(self.from.clone())),
            ("Body".into(), MaybeSecret::Secret(message.text.clone())),
        ]);
        if let (Some(url), Body::Form(fields)) = (&self.status_callback, &mut request.body) {
            fields.push(("StatusCallback".into(), MaybeSecret::Plain(url.clone())));
        }
        let failed = |message: String| SmsError::Failed {
            provider: PROVIDER.into(),
            message,
        };
        let response = self
            .bridge
            .send(&request)
            .map_err(|e| super::transport_error(PROVIDER, &e))?;
        let json = response.json();
        if response.status == 201 {
            let sid = json
                .as_ref()
                .and_then(|j| j.get("sid"))
                .and_then(|s| s.as_str());
            return match sid {
                Some(sid) => Ok(SmsReceipt {
                    provider_message_id: Some(sid.to_owned()),
                    sent_by: None,
                }),
                None => Err(failed(
                    "Twilio answered 201 without a message sid; the message may have been sent"
                        .into(),
                )),
            };
        }
        // Twilio's error document: {"code": 21211, "message": "...", "more_info": "...", "status": 400}
        let code = json
            .as_ref()
            .and_then(|j| j.get("code"))
            .and_then(|c| c.as_i64());
        let text = json
            .as_ref()
            .and_then(|j| j.get("message"))
            .and_then(|m| m.as_str());
        let detail = match (code, text) {
            (Some(code), Some(text)) => {
                format!("Twilio error {code}: {text} (HTTP {})", response.status)
            }
            (Some(code), None) => format!("Twilio error {code} (HTTP {})", response.status),
            _ => format!("HTTP {} with no Twilio error document", response.status),
        };
        let has_sid = json.as_ref().and_then(|j| j.get("sid")).is_some();
        Err(super::status_error(
            PROVIDER,
            response.status,
            has_sid,
            detail,
        ))
    }
}
