//! SMS provider adapters: `console` (development sink), `twilio` (Messages API) and `http`
//! (any gateway with an HTTP API), and [`ProviderSet`], which picks a script's provider.

mod console;
mod gateway;
mod twilio;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use console::ConsoleSms;
pub use gateway::GatewaySms;
pub use twilio::TwilioSms;

use crate::base::Secret;
use crate::config::{
    PropertyValue, ProviderConfig, ScriptEntry, SmsConfig, CONSOLE_PROVIDER, TWILIO_API_BASE,
};
use crate::outbound::HttpBridge;
use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

/// Keeps every message instead of sending it (`gatehouse test`).
#[derive(Default)]
pub struct CapturingSms {
    messages: std::sync::Mutex<Vec<(String, String)>>,
}

impl CapturingSms {
    /// The messages so far, as (number, text).
    pub fn messages(&self) -> Vec<(String, String)> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl SmsSender for CapturingSms {
    fn provider(&self) -> &str {
        "test"
    }

    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        messages.push((message.to.clone(), message.text.expose().to_owned()));
        Ok(SmsReceipt {
            provider_message_id: Some(format!("test-{}", messages.len())),
        })
    }
}

/// Used by `gatehouse check`, and by scripts whose provider could not be set up: sends nothing.
pub struct RefusingSms(pub String);

impl SmsSender for RefusingSms {
    fn provider(&self) -> &str {
        "none"
    }

    fn send(&self, _message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        Err(SmsError::NotAllowed(self.0.clone()))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SmsSetupError {
    pub key: String,
    pub message: String,
}

/// The Gluu twilio_sms properties that select Twilio.
pub const TWILIO_PROPERTIES: [&str; 3] = ["twilio_sid", "twilio_token", "from_number"];

/// Builds providers from the config: the default one, named ones, and Twilio from a script's
/// own properties.
pub struct ProviderSet {
    config: SmsConfig,
    bridge: Arc<HttpBridge>,
    default: Arc<dyn SmsSender>,
    /// Every script sends through `default` (`gatehouse test` captures every message).
    everything_to_default: bool,
}

impl ProviderSet {
    /// `default_override` replaces `[sms] provider` (tests, `check`).
    pub fn new(
        config: &SmsConfig,
        bridge: Arc<HttpBridge>,
        default_override: Option<Arc<dyn SmsSender>>,
    ) -> Result<Self, SmsSetupError> {
        let mut set = ProviderSet {
            config: config.clone(),
            bridge,
            default: Arc::new(RefusingSms("not set up".into())),
            everything_to_default: false,
        };
        set.default = match default_override {
            Some(sender) => sender,
            None => set.named(&config.provider)?,
        };
        Ok(set)
    }

    /// Sends every script's messages through the default sender, whatever its entry names.
    pub fn everything_to_default(mut self) -> Self {
        self.everything_to_default = true;
        self
    }

    pub fn default_sender(&self) -> Arc<dyn SmsSender> {
        self.default.clone()
    }

    pub fn bridge(&self) -> &Arc<HttpBridge> {
        &self.bridge
    }

    /// A provider by name: "console" or a `[sms.providers.NAME]` section.
    pub fn named(&self, name: &str) -> Result<Arc<dyn SmsSender>, SmsSetupError> {
        let key = format!("sms.providers.{name}");
        let setup = |message: String| SmsSetupError {
            key: key.clone(),
            message,
        };
        let provider = if name == CONSOLE_PROVIDER {
            &ProviderConfig::Console
        } else {
            self.config
                .providers
                .get(name)
                .ok_or_else(|| setup("no such provider section".into()))?
        };
        Ok(match provider {
            ProviderConfig::Console => Arc::new(ConsoleSms::stdout()),
            ProviderConfig::Twilio(twilio) => {
                let value = |field: &str, value: &crate::config::EnvValue| {
                    value
                        .require(&format!("{key}.{field}"))
                        .cloned()
                        .map_err(|(key, message)| SmsSetupError { key, message })
                };
                let sid = value("account_sid", &twilio.account_sid)?;
                let token = value("auth_token", &twilio.auth_token)?;
                let from = value("from", &twilio.from)?;
                Arc::new(
                    TwilioSms::new(
                        self.bridge.clone(),
                        sid.expose(),
                        token,
                        from.expose(),
                        &twilio.api_base,
                    )
                    .map_err(setup)?,
                )
            }
            ProviderConfig::Http(gateway) => Arc::new(
                GatewaySms::new(name, self.bridge.clone(), gateway)
                    .map_err(|(key, message)| SmsSetupError { key, message })?,
            ),
        })
    }

    /// The provider of one script: its `sms_provider`; else Twilio when its properties hold
    /// `twilio_sid`, `twilio_token` and `from_number`; else the default.
    pub fn for_script(
        &self,
        entry: &ScriptEntry,
        properties: &BTreeMap<String, PropertyValue>,
    ) -> Result<Arc<dyn SmsSender>, SmsSetupError> {
        if self.everything_to_default {
            return Ok(self.default.clone());
        }
        if let Some(name) = &entry.sms_provider {
            return self.named(name);
        }
        let present: Vec<&str> = TWILIO_PROPERTIES
            .iter()
            .copied()
            .filter(|p| properties.contains_key(*p))
            .collect();
        if present.is_empty() {
            return Ok(self.default.clone());
        }
        let key = format!("scripts.{}.properties", entry.acr);
        if present.len() < TWILIO_PROPERTIES.len() {
            let missing: Vec<&str> = TWILIO_PROPERTIES
                .iter()
                .copied()
                .filter(|p| !present.contains(p))
                .collect();
            return Err(SmsSetupError {
                key,
                message: format!(
                    "property {} is missing: Twilio needs twilio_sid, twilio_token and from_number",
                    missing.join(", ")
                ),
            });
        }
        let text = |name: &str| match &properties[name] {
            PropertyValue::Plain(v) => Secret::new(v.clone()),
            PropertyValue::Secret(v) => v.clone(),
        };
        let api_base = properties
            .get("twilio_api_base")
            .map_or_else(|| TWILIO_API_BASE.to_owned(), text_of);
        let sender = TwilioSms::new(
            self.bridge.clone(),
            text("twilio_sid").expose(),
            text("twilio_token"),
            text("from_number").expose(),
            &api_base,
        )
        .map_err(|message| SmsSetupError { key, message })?;
        Ok(Arc::new(sender))
    }
}

fn text_of(value: &PropertyValue) -> String {
    match value {
        PropertyValue::Plain(v) => v.clone(),
        PropertyValue::Secret(v) => v.expose().to_owned(),
    }
}
