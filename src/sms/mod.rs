//! SMS provider adapters. `console` is the development sink; real providers (Twilio, generic
//! HTTP gateway) come with the outbound HTTP bridge.

mod console;

pub use console::ConsoleSms;

use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

/// Used by `gatehouse check`: nothing is sent while checking.
pub struct RefusingSms;

impl SmsSender for RefusingSms {
    fn provider(&self) -> &str {
        "none"
    }

    fn send(&self, _message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        Err(SmsError::NotAllowed("gatehouse check sends nothing".into()))
    }
}
