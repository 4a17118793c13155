//! An ordered list of SMS providers for one script (`sms_provider = ["twilio", "vonage"]`): a
//! send goes to the first whose breaker admits it; when that provider surely did not take the
//! message (`SmsError::NotSent`) the next one sends. Any other outcome ends the send: a success,
//! a refusal of the message itself, or an ambiguous failure (a timeout: the first provider may
//! have sent it, and nobody may get two codes).

use std::sync::Arc;

use super::breaker::Breaker;
use crate::base::metrics::Metrics;
use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

pub struct FailoverSms {
    /// "twilio,vonage": what logs name as the provider before one is chosen.
    name: String,
    providers: Vec<(Arc<dyn SmsSender>, Arc<Breaker>)>,
    metrics: Arc<Metrics>,
}

impl FailoverSms {
    pub fn new(providers: Vec<(Arc<dyn SmsSender>, Arc<Breaker>)>, metrics: Arc<Metrics>) -> Self {
        let name = providers
            .iter()
            .map(|(p, _)| p.provider())
            .collect::<Vec<_>>()
            .join(",");
        FailoverSms {
            name,
            providers,
            metrics,
        }
    }
}

impl SmsSender for FailoverSms {
    fn provider(&self) -> &str {
        &self.name
    }

    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        let mut skipped = Vec::new();
        let mut last_error = None;
        for (provider, breaker) in &self.providers {
            // A breaker skips a provider only when another may send: alone, it is always tried.
            if !breaker.admit() && self.providers.len() > 1 {
                skipped.push(provider.provider().to_owned());
                continue;
            }
            let started = std::time::Instant::now();
            let result = provider.send(message);
            let seconds = started.elapsed().as_secs_f64();
            super::record_outcome(
                &self.metrics,
                provider.provider(),
                breaker,
                &result,
                seconds,
            );
            match result {
                Ok(mut receipt) => {
                    receipt.sent_by = Some(provider.provider().to_owned());
                    return Ok(receipt);
                }
                Err(error) if error.surely_not_sent() => {
                    tracing::warn!(target: "server", "sms provider {} did not take the message ({error}); the next provider of {} is tried", provider.provider(), self.name);
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| SmsError::NotSent {
            provider: self.name.clone(),
            message: format!(
                "every provider is failing and skipped for now (circuit open: {})",
                skipped.join(", ")
            ),
        }))
    }
}
