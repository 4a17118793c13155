//! SMS provider adapters: `console` (development sink), `twilio` (Messages API) and `http`
//! (any gateway with an HTTP API), and [`ProviderSet`], which picks a script's provider.

mod breaker;
mod console;
mod failover;
mod gateway;
mod twilio;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use breaker::{Breaker, BreakerPolicy};
pub use console::ConsoleSms;
pub use failover::FailoverSms;
pub use gateway::GatewaySms;
pub use twilio::TwilioSms;

use crate::base::metrics::Metrics;
use crate::base::{Secret, SharedClock};
use crate::config::{
    PropertyValue, ProviderConfig, ScriptEntry, SmsConfig, CONSOLE_PROVIDER, TWILIO_API_BASE,
};
use crate::outbound::{HttpBridge, HttpError};
use crate::ports::{ProviderCircuit, SmsError, SmsMessage, SmsReceipt, SmsSender};

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
            sent_by: None,
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
    /// One circuit breaker per provider name, shared by every script that sends through it and
    /// kept across script reloads.
    breakers: std::sync::Mutex<BTreeMap<String, Arc<Breaker>>>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    /// `[oidc] issuer`: where Twilio posts delivery receipts.
    issuer: String,
}

impl ProviderSet {
    /// `default_override` replaces `[sms] provider` (tests, `check`). `clock` drives the circuit
    /// breakers, sends are counted in `metrics`, and `issuer` is the public URL Twilio's
    /// delivery receipts come back to.
    pub fn new(
        config: &SmsConfig,
        bridge: Arc<HttpBridge>,
        default_override: Option<Arc<dyn SmsSender>>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        issuer: &str,
    ) -> Result<Self, SmsSetupError> {
        let mut set = ProviderSet {
            config: config.clone(),
            bridge,
            default: Arc::new(RefusingSms("not set up".into())),
            everything_to_default: false,
            breakers: Default::default(),
            clock,
            metrics,
            issuer: issuer.trim_end_matches('/').to_owned(),
        };
        set.default = match default_override {
            Some(sender) => sender,
            None => set.named(&config.provider)?,
        };
        Ok(set)
    }

    /// Each provider's circuit breaker state, by name (for `/health` and the metrics).
    pub fn circuits(&self) -> Vec<ProviderCircuit> {
        lock(&self.breakers)
            .iter()
            .map(|(name, breaker)| ProviderCircuit {
                provider: name.clone(),
                state: breaker.state().as_str(),
                retry_in_seconds: breaker.retry_in_seconds(),
            })
            .collect()
    }

    fn breaker(&self, name: &str) -> Arc<Breaker> {
        let policy = BreakerPolicy {
            failures: self.config.breaker_failures,
            window_ms: self.config.breaker_window_seconds * 1000,
            cool_off_ms: self.config.breaker_cool_off_seconds * 1000,
        };
        lock(&self.breakers)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Breaker::new(policy, self.clock.clone())))
            .clone()
    }

    /// Providers tried in order (`sms_provider = ["twilio", "vonage"]`).
    fn failover(&self, names: &[String]) -> Result<Arc<dyn SmsSender>, SmsSetupError> {
        let providers = names
            .iter()
            .map(|name| Ok((self.plain(name)?, self.breaker(name))))
            .collect::<Result<Vec<_>, SmsSetupError>>()?;
        Ok(Arc::new(FailoverSms::new(providers, self.metrics.clone())))
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

    /// A provider by name: "console" or a `[sms.providers.NAME]` section, its sends counted
    /// and its failures watched by its circuit breaker.
    pub fn named(&self, name: &str) -> Result<Arc<dyn SmsSender>, SmsSetupError> {
        self.failover(std::slice::from_ref(&name.to_owned()))
    }

    /// The provider `name` alone, without breaker or counting.
    fn plain(&self, name: &str) -> Result<Arc<dyn SmsSender>, SmsSetupError> {
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
                let mut sender = TwilioSms::new(
                    self.bridge.clone(),
                    sid.expose(),
                    token,
                    from.expose(),
                    &twilio.api_base,
                )
                .map_err(setup)?;
                if twilio.status_callback {
                    sender = sender
                        .with_status_callback(crate::config::twilio_status_url(&self.issuer, name));
                }
                Arc::new(sender)
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
        match entry.sms_providers() {
            [] => {}
            [name] => return self.named(name),
            names => return self.failover(names),
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
        let breaker = self.breaker(sender.provider());
        Ok(Arc::new(FailoverSms::new(
            vec![(Arc::new(sender), breaker)],
            self.metrics.clone(),
        )))
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts one provider's answer and tells its breaker: a success or a refusal of the message
/// (the provider is up), or a failure (it did not take it, or may not have).
fn record_outcome(
    metrics: &Metrics,
    provider: &str,
    breaker: &Breaker,
    result: &Result<SmsReceipt, SmsError>,
    seconds: f64,
) {
    let outcome = match result {
        Ok(_) => "accepted",
        Err(SmsError::Refused { .. } | SmsError::NotAllowed(_)) => "refused",
        Err(SmsError::NotSent { .. }) => "not_sent",
        Err(SmsError::Failed { .. }) => "failed",
    };
    metrics.sms_send(provider, outcome, seconds);
    match outcome {
        "accepted" | "refused" => breaker.succeeded(),
        _ => {
            if breaker.failed() {
                tracing::error!(target: "server", "sms provider {provider} failed repeatedly: its circuit is open, sends skip it until a probe succeeds");
            }
        }
    }
}

fn text_of(value: &PropertyValue) -> String {
    match value {
        PropertyValue::Plain(v) => v.clone(),
        PropertyValue::Secret(v) => v.expose().to_owned(),
    }
}

/// A request that did not get through: `NotSent` when it surely never reached the provider
/// (another provider may send), `Failed` when it may have (a timeout: never sent again).
fn transport_error(provider: &str, error: &HttpError) -> SmsError {
    let message = error.to_string();
    let provider = provider.to_owned();
    match error {
        HttpError::Connect { .. }
        | HttpError::RefusedDestination { .. }
        | HttpError::BadUrl(_)
        | HttpError::InsecureScheme(_)
        | HttpError::BadHeader { .. } => SmsError::NotSent { provider, message },
        HttpError::Timeout { .. }
        | HttpError::Deadline { .. }
        | HttpError::Transport { .. }
        | HttpError::TooLarge { .. } => SmsError::Failed { provider, message },
    }
}

/// A provider's answer that is not a success: 5xx, 429 (busy) and 401/403 (its credentials or
/// account refused) mean the provider did not take the message, unless the answer carries a
/// message id (then it may have: ambiguous); another 4xx refuses the message itself (a bad
/// number), which another provider would refuse too.
fn status_error(provider: &str, status: u16, has_message_id: bool, message: String) -> SmsError {
    let provider = provider.to_owned();
    match status {
        429 | 401 | 403 | 500..=599 if has_message_id => SmsError::Failed { provider, message },
        429 | 401 | 403 | 500..=599 => SmsError::NotSent { provider, message },
        400..=499 => SmsError::Refused { provider, message },
        _ => SmsError::Failed { provider, message },
    }
}
