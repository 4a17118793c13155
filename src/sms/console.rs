//! Development SMS sink: prints each message on the server's standard output instead of sending
//! it. Nothing goes to `logs/`, which never holds a code.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

pub struct ConsoleSms {
    out: Mutex<Box<dyn Write + Send>>,
    sent: AtomicU64,
}

impl ConsoleSms {
    /// Prints on standard output: the terminal running `gatehouse serve` is the phone.
    pub fn stdout() -> Self {
        ConsoleSms::to_writer(Box::new(std::io::stdout()))
    }

    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        ConsoleSms {
            out: Mutex::new(out),
            sent: AtomicU64::new(0),
        }
    }
}

/// One message per line: control characters in the text are escaped.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(char::escape_default)
        .collect::<String>()
        .replace("\\'", "'")
        .replace("\\\"", "\"")
}

impl SmsSender for ConsoleSms {
    fn provider(&self) -> &str {
        "console"
    }

    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        let id = format!("console-{}", self.sent.fetch_add(1, Ordering::Relaxed) + 1);
        let line = format!(
            "[console SMS, not sent] {id} to {}: {}\n",
            one_line(message.to.trim()),
            one_line(message.text.expose())
        );
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| SmsError::Failed {
                provider: "console".into(),
                message: format!("standard output: {e}"),
            })?;
        Ok(SmsReceipt {
            provider_message_id: Some(id),
            sent_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::Secret;
    use std::sync::Arc;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn prints_one_escaped_line_per_message() {
        let screen = Shared::default();
        let sink = ConsoleSms::to_writer(Box::new(screen.clone()));
        let message = SmsMessage {
            to: "+447700900123".into(),
            text: Secret::new("Code 123456\n\n@localhost #123456"),
        };
        let receipt = sink.send(&message).unwrap();
        assert_eq!(receipt.provider_message_id.as_deref(), Some("console-1"));
        let printed = String::from_utf8(screen.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            printed,
            "[console SMS, not sent] console-1 to +447700900123: Code 123456\\n\\n@localhost #123456\n"
        );
    }
}
