//! Development SMS sink: appends each message to `logs/sms.log` instead of sending it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};

pub struct ConsoleSms {
    path: PathBuf,
    file: Mutex<()>,
    sent: AtomicU64,
}

impl ConsoleSms {
    pub fn new(log_dir: &Path) -> Self {
        ConsoleSms {
            path: log_dir.join("sms.log"),
            file: Mutex::new(()),
            sent: AtomicU64::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let when = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = format!(
            "{when} {id} to={} text={}\n",
            message.to.trim(),
            one_line(message.text.expose())
        );
        let _guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| SmsError::Failed {
                provider: "console".into(),
                message: format!("{}: {e}", self.path.display()),
            })?;
        Ok(SmsReceipt {
            provider_message_id: Some(id),
        })
    }
}
