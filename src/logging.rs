//! The script log (`logs/script.log`): one line per event with timestamp, level, source,
//! acr and login correlation id; control characters escaped; daily files, written off-thread.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime as Rfc3339};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

pub const LOG_FILE: &str = "script.log";
/// Daily files kept before the oldest is deleted.
const RETAINED_DAYS: usize = 30;

#[derive(Debug, thiserror::Error)]
#[error("log directory {path}: {source}")]
pub struct LogError {
    path: PathBuf,
    source: io::Error,
}

/// Escapes control characters so one event is always one line.
/// Characters a log viewer may show as a line break, or that reorder what follows (bidi
/// controls): escaped like ASCII controls, so a script or a client cannot forge a line.
fn breaks_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

pub fn escape_controls(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || breaks_or_reorders(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[derive(Default)]
struct LineFields {
    message: String,
    acr: Option<String>,
    login: Option<String>,
    rest: String,
    /// The other fields, by name (JSON lines).
    extra: Vec<(String, String)>,
}

impl Visit for LineFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "acr" => self.acr = Some(value.to_owned()),
            "login" => self.login = Some(value.to_owned()),
            name => {
                let _ = write!(self.rest, " {name}={value}");
                self.extra.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "acr" => self.acr = Some(format!("{value:?}")),
            "login" => self.login = Some(format!("{value:?}")),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
                self.extra.push((name.to_owned(), format!("{value:?}")));
            }
        }
    }
}

/// `2026-11-22T08:47:53.123456Z  INFO script acr=sms_otp login=3f9a1c2b7d4e OTP. Initialization`,
/// or with `json`, the same fields as one JSON object per line:
/// `{"time":"2026-11-22T08:47:53.123456Z","level":"INFO","source":"script","acr":"sms_otp",
/// "login":"3f9a1c2b7d4e","message":"OTP. Initialization"}` (other fields under "fields").
#[derive(Clone, Copy, Default)]
pub struct LineFormat {
    pub json: bool,
}

/// The event's fields as one JSON line.
fn json_line(time: &str, level: &str, source: &str, fields: LineFields) -> String {
    // serde_json escapes the ASCII controls; characters a viewer may take for a line break, or
    // that reorder text, are escaped as in text lines.
    let clean = |text: &str| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            match breaks_or_reorders(c) {
                true => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                false => out.push(c),
            }
        }
        out
    };
    let mut object = serde_json::Map::new();
    object.insert("time".into(), time.into());
    object.insert("level".into(), level.into());
    object.insert("source".into(), source.into());
    object.insert("acr".into(), fields.acr.as_deref().map(clean).into());
    object.insert("login".into(), fields.login.as_deref().map(clean).into());
    object.insert("message".into(), clean(&fields.message).into());
    if !fields.extra.is_empty() {
        let extra: serde_json::Map<String, serde_json::Value> = fields
            .extra
            .iter()
            .map(|(name, value)| (name.clone(), clean(value).into()))
            .collect();
        object.insert("fields".into(), extra.into());
    }
    serde_json::Value::Object(object).to_string()
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = LineFields::default();
        event.record(&mut fields);
        let source = match event.metadata().target() {
            "script" => "script",
            "server" => "server",
            other => other.split("::").next().unwrap_or(other),
        };
        if self.json {
            let mut time = String::new();
            Rfc3339.format_time(&mut Writer::new(&mut time))?;
            let level = event.metadata().level().as_str();
            return writeln!(writer, "{}", json_line(&time, level, source, fields));
        }
        Rfc3339.format_time(&mut writer)?;
        let mut line = String::with_capacity(fields.message.len() + 64);
        escape_controls(&fields.message, &mut line);
        escape_controls(&fields.rest, &mut line);
        writeln!(
            writer,
            " {:>5} {source} acr={} login={} {line}",
            event.metadata().level(),
            fields.acr.as_deref().unwrap_or("-"),
            fields.login.as_deref().unwrap_or("-"),
        )
    }
}

/// Daily files `script.log.YYYY-MM-DD`, with `script.log` a link to the current one so that
/// `tail -F logs/script.log` always follows today's file.
struct DailyFile {
    inner: RollingFileAppender,
    dir: PathBuf,
    day: u64,
}

fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

fn relink(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{LOG_FILE}.");
    let newest = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(&prefix)
                && n[prefix.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-')
        })
        .max();
    let Some(newest) = newest else { return };
    let temp = dir.join(format!(".{LOG_FILE}.link"));
    let _ = std::fs::remove_file(&temp);
    #[cfg(unix)]
    if std::os::unix::fs::symlink(&newest, &temp).is_ok() {
        let _ = std::fs::rename(&temp, dir.join(LOG_FILE));
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        let day = today();
        if day != self.day {
            self.day = day;
            relink(&self.dir);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The log of one Gatehouse instance. Keep it alive: dropping it flushes and stops the writer.
pub struct ScriptLog {
    pub dispatch: Dispatch,
    pub dir: PathBuf,
    _guard: Option<WorkerGuard>,
}

fn level_filter(level: &str) -> LevelFilter {
    level.parse().unwrap_or(LevelFilter::INFO)
}

impl ScriptLog {
    /// Logs to `dir/script.log` (and to stderr when `console`), as text lines or, with `json`,
    /// JSON lines.
    pub fn open(dir: &Path, level: &str, console: bool, json: bool) -> Result<ScriptLog, LogError> {
        let error = |source| LogError {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(error)?;
        let appender = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(LOG_FILE)
            .max_log_files(RETAINED_DAYS)
            .build(dir)
            .map_err(|e| error(io::Error::other(e)))?;
        relink(dir);
        let daily = DailyFile {
            inner: appender,
            dir: dir.to_owned(),
            day: today(),
        };
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(daily);
        let filter = level_filter(level);
        let format = LineFormat { json };
        let file_layer = tracing_subscriber::fmt::layer()
            .event_format(format)
            .with_writer(writer)
            .with_ansi(false)
            .with_filter(filter);
        let console_layer = console.then(|| {
            tracing_subscriber::fmt::layer()
                .event_format(format)
                .with_writer(io::stderr)
                .with_ansi(false)
                .with_filter(filter)
        });
        let subscriber = tracing_subscriber::registry()
            .with(file_layer)
            .with(console_layer);
        Ok(ScriptLog {
            dispatch: Dispatch::new(subscriber),
            dir: dir.to_owned(),
            _guard: Some(guard),
        })
    }

    /// Logs to stderr only (`gatehouse check`: nothing is written under logs/).
    pub fn console_only(level: &str, json: bool) -> ScriptLog {
        let layer = tracing_subscriber::fmt::layer()
            .event_format(LineFormat { json })
            .with_writer(io::stderr)
            .with_ansi(false)
            .with_filter(level_filter(level));
        ScriptLog {
            dispatch: Dispatch::new(tracing_subscriber::registry().with(layer)),
            dir: PathBuf::new(),
            _guard: None,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Runs `f` with this log as the destination of its events.
    pub fn scope<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_same_fields_and_stay_one_line() {
        let fields = LineFields {
            message: "OTP. Code sent\nto +44******0123\u{2028}x".into(),
            acr: Some("sms_otp".into()),
            login: Some("3f9a1c2b".into()),
            rest: String::new(),
            extra: vec![("provider".into(), "twilio".into())],
        };
        let line = json_line("2026-12-01T10:00:00Z", "INFO", "script", fields);
        assert!(!line.contains('\n') && !line.contains('\u{2028}'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["acr"], "sms_otp");
        assert_eq!(value["login"], "3f9a1c2b");
        assert_eq!(value["source"], "script");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["fields"]["provider"], "twilio");
        assert_eq!(
            value["message"],
            "OTP. Code sent\nto +44******0123\\u{2028}x"
        );
    }

    #[test]
    fn control_characters_never_break_a_line() {
        let mut out = String::new();
        escape_controls("a\nb\r\tc\u{1b}[31m", &mut out);
        assert_eq!(out, "a\\nb\\r\\tc\\u{1b}[31m");
    }
}
