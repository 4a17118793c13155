//! Phone numbers and sending as scripts use them: numbers parsed and masked the server's way,
//! every message admitted by the sending guard before it reaches the provider.

use crate::base::Secret;
use crate::flow::sending::{Refusal, SendError};
use crate::ports::{SmsMessage, SmsSender};

use super::{messages, HookContext, HostError};

impl HookContext {
    /// `number` masked the way this server shows numbers (`[sms] visible_digits`).
    /// A number this server can read is shown as its E.164 form, so "07700 900123" and
    /// "+44 7700 900123" look the same on a page.
    pub fn mask_phone(&self, number: &str) -> String {
        let guard = &self.services.sending;
        match guard.normalize(number) {
            Ok(e164) => guard.mask(e164.as_str()),
            Err(_) => guard.mask(number),
        }
    }

    /// A number as E.164 if this server accepts it (format, country allow-list), else `None`.
    /// A well-formed number in a country outside the list gets the host's message, which says
    /// so, instead of the script's (that would ask for a country code the user did type).
    pub fn normalize_phone(&self, raw: &str) -> Option<String> {
        let guard = &self.services.sending;
        let number = guard.normalize(raw).ok()?;
        if guard.check_destination(&number).is_err() {
            self.set_policy_message(messages::COUNTRY_REFUSED);
            return None;
        }
        Some(number.into_string())
    }

    /// Sends a text message through `sms` (the running script's provider); the log line names
    /// provider, masked number and message id, never the text.
    pub fn send_sms(&self, sms: &dyn SmsSender, to: &str, text: &str) -> Result<(), HostError> {
        let number = self.admit_sms(to)?;
        self.deliver_sms(sms, &number, to, text)
    }

    /// Parses the number (E.164, never guessed), checks the destination country and counts the
    /// send against every limit; the normalised number on success.
    pub fn admit_sms(&self, to: &str) -> Result<String, HostError> {
        let login_key = self.login_key("sms::send")?;
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        let guard = &self.services.sending;
        let number = match guard.normalize(to) {
            Ok(number) => number,
            Err(refusal) => {
                self.services.metrics.sms_refused(refusal.reason());
                tracing::warn!(target: "server", acr, login, "sms refused: to={}: {refusal}", guard.mask(to));
                return Err(SendError::Refused(refusal).into());
            }
        };
        let masked_to = guard.mask(number.as_str());
        if let Err(refusal) = guard.check_destination(&number) {
            self.services.metrics.sms_refused(refusal.reason());
            tracing::warn!(target: "server", acr, login, "sms refused: to={masked_to}: {refusal}");
            self.set_policy_message(messages::COUNTRY_REFUSED);
            return Err(SendError::Refused(refusal).into());
        }
        if let Err(error) = guard.admit(login_key, &number, self.limit_address) {
            if let SendError::Refused(refusal) = &error {
                self.services.metrics.sms_refused(refusal.reason());
            }
            if let SendError::Refused(Refusal::Throttled {
                what,
                retry_after_seconds,
                ..
            }) = &error
            {
                tracing::warn!(target: "server", acr, login, "sms refused: to={masked_to}: {what} (retry after {retry_after_seconds} s)");
                let message = if *retry_after_seconds == 0 {
                    messages::TOO_MANY_FOR_THIS_LOGIN.to_owned()
                } else {
                    messages::too_many_sent(*retry_after_seconds)
                };
                self.set_policy_message(&message);
                self.state().retry_after = Some(*retry_after_seconds);
            }
            return Err(error.into());
        }
        Ok(number.into_string())
    }

    /// Hands an admitted message to the provider and logs the outcome (never the text).
    pub fn deliver_sms(
        &self,
        sms: &dyn SmsSender,
        number: &str,
        as_written: &str,
        text: &str,
    ) -> Result<(), HostError> {
        let (acr, login) = (self.acr.as_str(), self.correlation_id.as_str());
        let masked_to = self.services.sending.mask(number);
        match sms.send(&SmsMessage {
            to: number.to_owned(),
            text: Secret::new(text),
        }) {
            Ok(receipt) => {
                let id = receipt.provider_message_id.as_deref().unwrap_or("-");
                let provider = receipt.sent_by.as_deref().unwrap_or(sms.provider());
                tracing::info!(target: "server", acr, login, "sms sent: provider={provider} to={masked_to} status=accepted id={id}");
                let issued = super::lock(&self.issued).clone();
                if let Some(code) = issued.filter(|c| text.contains(c.as_str())) {
                    self.state().last_sms =
                        Some((number.to_owned(), text.replace(&code, RESEND_CODE_SLOT)));
                }
                Ok(())
            }
            Err(error) => {
                let detail = self
                    .mask(&error.to_string())
                    .replace(number, &masked_to)
                    .replace(as_written, &masked_to);
                tracing::warn!(target: "server", acr, login, "sms not sent: provider={} to={masked_to}: {detail}", sms.provider());
                Err(error.into())
            }
        }
    }
}

/// Where the code stands in a remembered message, so a resend can put a fresh one in its place.
pub const RESEND_CODE_SLOT: &str = "{code}";
