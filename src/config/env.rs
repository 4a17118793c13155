//! `${env:NAME}` in config values: expanded once, when the file is loaded, never at use.

use std::fmt;

use crate::base::Secret;

/// Expands every `${env:NAME}` in `raw`; returns the name of the first unset variable as error.
pub fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => out.push_str(&value),
            _ => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A config value that may hold `${env:NAME}`: expanded when the file is loaded. A value whose
/// variable is unset remembers which variable, so the part that needs it can say so. Any such
/// value may be a secret: it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue {
    raw: String,
    expanded: Result<Secret, String>,
}

impl EnvValue {
    /// A value as written in the file (expanded now).
    pub fn new(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let expanded = expand_env(&raw).map(Secret::new);
        EnvValue { raw, expanded }
    }

    /// The expanded value, or the name of the unset variable.
    pub fn resolved(&self) -> Result<&Secret, &str> {
        self.expanded.as_ref().map_err(String::as_str)
    }

    /// The expanded value, or `key: environment variable NAME is not set`.
    pub fn require(&self, key: &str) -> Result<&Secret, (String, String)> {
        self.resolved().map_err(|variable| {
            (
                key.to_owned(),
                format!("environment variable {variable} is not set"),
            )
        })
    }

    /// Whether the file wrote `${env:...}` rather than the value itself.
    pub fn is_from_environment(&self) -> bool {
        self.raw.contains("${env:")
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(EnvValue::new)
    }
}
