//! Page templates (minijinja): built-in defaults, overridden by a file of the same name in
//! `[paths] pages_dir`, picked up without restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use minijinja::Environment;
use serde::Serialize;

const BUILT_IN: [(&str, &str); 8] = [
    ("mobile.html", include_str!("templates/mobile.html")),
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    (
        "login_or_mobile.html",
        include_str!("templates/login_or_mobile.html"),
    ),
    ("otp_sms.html", include_str!("templates/otp_sms.html")),
    ("error.html", include_str!("templates/error.html")),
    ("signed_out.html", include_str!("templates/signed_out.html")),
    (
        "confirm_sign_out.html",
        include_str!("templates/confirm_sign_out.html"),
    ),
];

pub const STYLESHEET: &str = include_str!("templates/gatehouse.css");
/// The pages' only script: each form is sent once (a double click posts nothing twice).
pub const SCRIPT: &str = include_str!("templates/gatehouse.js");

#[derive(Debug, thiserror::Error)]
#[error("page {name}: {message}")]
pub struct PageError {
    pub name: String,
    pub message: String,
}

/// What identifies the override folder's content: names and modification times.
type Stamp = Vec<(String, Option<SystemTime>)>;

pub struct Pages {
    dir: Option<PathBuf>,
    cached: Mutex<(Stamp, Arc<Environment<'static>>)>,
}

fn stamp(dir: Option<&Path>) -> Stamp {
    let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) else {
        return Vec::new();
    };
    let mut stamp: Stamp = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".html"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().ok().and_then(|m| m.modified().ok()),
            )
        })
        .collect();
    stamp.sort();
    stamp
}

fn environment(dir: Option<PathBuf>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_loader(move |name| {
        let safe = !name.contains(['/', '\\']) && !name.starts_with('.');
        if let (Some(dir), true) = (&dir, safe) {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => return Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("{name}: {e}"),
                    ))
                }
            }
        }
        Ok(BUILT_IN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, text)| (*text).to_owned()))
    });
    env
}

impl Pages {
    pub fn new(dir: Option<PathBuf>) -> Self {
        let stamp = stamp(dir.as_deref());
        let env = Arc::new(environment(dir.clone()));
        Pages {
            dir,
            cached: Mutex::new((stamp, env)),
        }
    }

    /// The environment for the current override files (rebuilt when one changed).
    fn current(&self) -> Arc<Environment<'static>> {
        let now = stamp(self.dir.as_deref());
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != now {
            *cached = (now, Arc::new(environment(self.dir.clone())));
        }
        cached.1.clone()
    }

    /// Whether a template of this name exists (override or built in).
    pub fn exists(&self, name: &str) -> bool {
        self.current().get_template(name).is_ok()
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, PageError> {
        let env = self.current();
        let template = env.get_template(name).map_err(|e| PageError {
            name: name.into(),
            message: e.to_string(),
        })?;
        template.render(context).map_err(|e| PageError {
            name: name.into(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_pages_escape_and_overrides_win() {
        let dir = tempfile::tempdir().unwrap();
        let pages = Pages::new(Some(dir.path().to_owned()));
        let html = pages.render("otp_sms.html", minijinja::context! { csrf => "c", step => 2, sent_to => "<b>+44</b>", message => "", numeric_code => true }).unwrap();
        assert!(
            html.contains("autocomplete=\"one-time-code\"")
                && html.contains("inputmode=\"numeric\"")
        );
        assert!(
            html.contains("&lt;b&gt;+44") && !html.contains("<b>"),
            "{html}"
        );
        std::fs::write(dir.path().join("error.html"), "custom {{ detail }}").unwrap();
        assert_eq!(
            pages
                .render("error.html", minijinja::context! { detail => "x" })
                .unwrap(),
            "custom x"
        );
    }
}
