//! Edits of `config/gatehouse.toml` made for an operator (the CLI and the admin API): in place,
//! with comments and layout kept (toml_edit), checked as a whole before anything is written (the
//! edited text must load as a config, as a server would load it), and written atomically (a
//! temporary file in the same folder, synced, renamed over the old one). Edits from several
//! processes at once are serialised by a lock file beside the config, so none is lost.

use std::io::Write;
use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table, TableLike, Value};

use crate::config::{Config, ConfigError};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("no [[scripts]] entry has acr {0:?} (`gatehouse scripts list` shows them)")]
    UnknownAcr(String),
    /// The edit would make the config invalid: refused, the file untouched.
    #[error("refused, the configuration file is unchanged: {0}")]
    Invalid(ConfigError),
    /// An edit the config would load but that would break sign-ins (disabling the default acr).
    #[error("refused, the configuration file is unchanged: {0}")]
    Refused(String),
}

/// The config file an operator edits.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
}

/// One edit of a `[[scripts]]` entry: every part applied, or none.
#[derive(Debug, Default, Clone)]
pub struct ScriptEdit {
    pub enabled: Option<bool>,
    /// A property to set (`Some`) or to remove (`None`).
    pub properties: Vec<(String, Option<String>)>,
}

/// Property names: what a `config.NAME` in a script can reach, within reason.
fn check_property_name(name: &str) -> Result<(), EditError> {
    let fine = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    match fine {
        true => Ok(()),
        false => Err(EditError::Refused(format!(
            "{name:?} is not a property name: use 1-128 letters, digits, '_', '-' or '.'"
        ))),
    }
}

/// Values: one line of text of a sensible size (a key, a URL, a message template).
fn check_property_value(name: &str, value: &str) -> Result<(), EditError> {
    if value.len() > 8192 {
        return Err(EditError::Refused(format!(
            "the value of {name} is longer than 8192 bytes"
        )));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(EditError::Refused(format!(
            "the value of {name} holds a control character (a line break?): give one line"
        )));
    }
    Ok(())
}

impl ConfigFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ConfigFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The config as it is on disk now.
    pub fn load(&self) -> Result<Config, EditError> {
        Config::load(&self.path).map_err(EditError::Invalid)
    }

    /// Applies `edit` to the entry of `acr`; `Ok(false)` when it changed nothing (the file is
    /// then not rewritten).
    pub fn edit_script(&self, acr: &str, edit: &ScriptEdit) -> Result<bool, EditError> {
        for (name, value) in &edit.properties {
            check_property_name(name)?;
            if let Some(value) = value {
                check_property_value(name, value)?;
            }
        }
        self.rewrite(|document, config| {
            let entry = script_entry(document, acr)?;
            let mut changed = false;
            if let Some(enabled) = edit.enabled {
                let is_default = config.login.default_acr.as_deref() == Some(acr);
                if !enabled && is_default {
                    return Err(EditError::Refused(format!(
                        "{acr} is the default acr ([login] default_acr): make another acr the default first (gatehouse acrs default ACR)"
                    )));
                }
                let before = entry.get("enabled").and_then(Item::as_bool).unwrap_or(true);
                if before != enabled {
                    set_value(entry, "enabled", Value::from(enabled));
                    changed = true;
                }
            }
            if edit.properties.is_empty() {
                return Ok(changed);
            }
            let properties = properties_of(entry)?;
            for (name, value) in &edit.properties {
                let before = properties.get(name).and_then(Item::as_str).map(str::to_owned);
                match value {
                    Some(value) if before.as_deref() != Some(value.as_str()) => {
                        set_value(properties, name, Value::from(value.as_str()));
                        changed = true;
                    }
                    None if properties.contains_key(name) => {
                        properties.remove(name);
                        changed = true;
                    }
                    _ => {}
                }
            }
            Ok(changed)
        })
    }

    /// Makes `acr` the flow used when an application names none (`[login] default_acr`). It
    /// must be an enabled entry that serves interactive sign-ins.
    pub fn set_default_acr(&self, acr: &str) -> Result<bool, EditError> {
        let acr = acr.trim();
        if acr.is_empty() {
            return Err(EditError::Refused(
                "the default acr is blank: name an acr (gatehouse scripts list shows them)".into(),
            ));
        }
        self.rewrite(|document, config| {
            let entry = config
                .script(acr)
                .ok_or_else(|| EditError::UnknownAcr(acr.to_owned()))?;
            if !entry.enabled {
                return Err(EditError::Refused(format!(
                    "{acr} is disabled: enable it first (gatehouse scripts enable {acr})"
                )));
            }
            if !entry.usage.allows_interactive() {
                return Err(EditError::Refused(format!(
                    "{acr} does not serve interactive sign-ins (usage): it cannot be the default"
                )));
            }
            if config.login.default_acr.as_deref() == Some(acr) {
                return Ok(false);
            }
            if !document.contains_key("login") {
                document.insert("login", Item::Table(Table::new()));
            }
            let login = document["login"].as_table_like_mut().ok_or_else(|| {
                EditError::Refused("[login] is not a table in the configuration file".into())
            })?;
            set_value(login, "default_acr", Value::from(acr));
            Ok(true)
        })
    }

    /// Reads the file under the lock, lets `edit` change the document (it also sees the config
    /// as it is now), checks the result loads as a config and writes it atomically.
    fn rewrite(
        &self,
        edit: impl FnOnce(&mut DocumentMut, &Config) -> Result<bool, EditError>,
    ) -> Result<bool, EditError> {
        let _lock = self.lock()?;
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.io(e))?;
        let current = Config::parse(&self.path, &text).map_err(EditError::Invalid)?;
        let mut document: DocumentMut =
            text.parse()
                .map_err(|e: toml_edit::TomlError| EditError::Syntax {
                    path: self.path.display().to_string(),
                    message: e.message().to_owned(),
                })?;
        if !edit(&mut document, &current)? {
            return Ok(false);
        }
        let edited = document.to_string();
        Config::parse(&self.path, &edited).map_err(EditError::Invalid)?;
        self.write_atomically(&edited)?;
        Ok(true)
    }

    fn io(&self, error: std::io::Error) -> EditError {
        EditError::Io {
            path: self.path.display().to_string(),
            message: error.to_string(),
        }
    }

    /// An exclusive lock on `.NAME.lock` beside the config (a file never replaced, unlike the
    /// config itself), released when the returned file is dropped.
    fn lock(&self) -> Result<std::fs::File, EditError> {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "gatehouse.toml".into());
        let lock_path = self.path.with_file_name(format!(".{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.io(e))?;
        file.lock().map_err(|e| self.io(e))?;
        Ok(file)
    }

    /// Writes `text` to a temporary file in the config's folder, with the config's permissions,
    /// syncs it and renames it over the config: a reader sees the old file or the new one.
    fn write_atomically(&self, text: &str) -> Result<(), EditError> {
        let folder = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let temporary = folder.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let written = (|| -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            if let Ok(metadata) = std::fs::metadata(&self.path) {
                file.set_permissions(metadata.permissions())?;
            }
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            // The rename itself survives a crash once the folder is synced.
            if let Ok(dir) = std::fs::File::open(&folder) {
                let _ = dir.sync_all();
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        written.map_err(|e| self.io(e))
    }
}

/// Sets `key` keeping the comments above the key and the spacing around the value it
/// replaces (the item is replaced in place: inserting anew would drop the key's comments).
fn set_value(table: &mut dyn TableLike, key: &str, mut value: Value) {
    match table.get_mut(key) {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            }
            *item = Item::Value(value);
        }
        None => {
            table.insert(key, Item::Value(value));
        }
    }
}

/// The `[[scripts]]` entry of `acr`, written as a table or as an inline table.
fn script_entry<'d>(
    document: &'d mut DocumentMut,
    acr: &str,
) -> Result<&'d mut dyn TableLike, EditError> {
    let unknown = || EditError::UnknownAcr(acr.to_owned());
    let has_acr = |t: &dyn TableLike| t.get("acr").and_then(Item::as_str) == Some(acr);
    match document.get_mut("scripts").ok_or_else(unknown)? {
        Item::ArrayOfTables(entries) => entries
            .iter_mut()
            .find(|t| has_acr(*t))
            .map(|t| t as &mut dyn TableLike)
            .ok_or_else(unknown),
        Item::Value(Value::Array(entries)) => entries
            .iter_mut()
            .filter_map(Value::as_inline_table_mut)
            .find(|t| has_acr(*t))
            .map(|t| t as &mut dyn TableLike)
            .ok_or_else(unknown),
        _ => Err(unknown()),
    }
}

/// The entry's `properties` table, created (as `[scripts.properties]`) when missing.
fn properties_of(entry: &mut dyn TableLike) -> Result<&mut dyn TableLike, EditError> {
    if !entry.contains_key("properties") {
        entry.insert("properties", Item::Table(Table::new()));
    }
    entry
        .get_mut("properties")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::Refused("the entry's properties are not a table".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../config/gatehouse.toml");

    fn file_with(text: &str) -> (tempfile::TempDir, ConfigFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, text).unwrap();
        (dir, ConfigFile::new(path))
    }

    fn text(file: &ConfigFile) -> String {
        std::fs::read_to_string(file.path()).unwrap()
    }

    #[test]
    fn enabling_keeps_every_comment_and_changes_one_line() {
        let (_dir, file) = file_with(SHIPPED);
        let edit = ScriptEdit {
            enabled: Some(true),
            ..Default::default()
        };
        assert!(file.edit_script("twilio_sms", &edit).unwrap());
        let after = text(&file);
        let changed: Vec<(&str, &str)> = SHIPPED
            .lines()
            .zip(after.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed, [("enabled = false", "enabled = true")]);
        assert_eq!(SHIPPED.lines().count(), after.lines().count());
        assert!(file.load().unwrap().script("twilio_sms").unwrap().enabled);
        // Again: nothing to change, nothing written.
        assert!(!file.edit_script("twilio_sms", &edit).unwrap());
    }

    #[test]
    fn properties_are_set_and_removed_in_place() {
        let (_dir, file) = file_with(SHIPPED);
        let edit = ScriptEdit {
            enabled: None,
            properties: vec![
                ("phone_attribute".into(), Some("mobile".into())),
                ("message.es".into(), Some("Su código es {code}".into())),
                ("message.fr".into(), None),
            ],
        };
        assert!(file.edit_script("sms_otp", &edit).unwrap());
        let config = file.load().unwrap();
        let properties = &config.script("sms_otp").unwrap().properties;
        assert_eq!(properties["phone_attribute"], "mobile");
        assert_eq!(properties["message.es"], "Su código es {code}");
        assert!(!properties.contains_key("message.fr"));
        assert!(text(&file).contains(
            "# User attribute that holds the phone number.\nphone_attribute = \"mobile\""
        ));
    }

    #[test]
    fn an_edit_that_breaks_the_config_is_refused_and_the_file_kept() {
        let (_dir, file) = file_with(SHIPPED);
        let before = text(&file);
        for (acr, edit, expected) in [
            (
                "sms_otp",
                ScriptEdit {
                    enabled: Some(false),
                    ..Default::default()
                },
                "sms_otp is the default acr",
            ),
            (
                "nope",
                ScriptEdit {
                    enabled: Some(true),
                    ..Default::default()
                },
                "no [[scripts]] entry has acr \"nope\"",
            ),
            (
                "sms_otp",
                ScriptEdit {
                    enabled: None,
                    properties: vec![("bad name".into(), Some("x".into()))],
                },
                "is not a property name",
            ),
            (
                "sms_otp",
                ScriptEdit {
                    enabled: None,
                    properties: vec![("message".into(), Some("two\nlines".into()))],
                },
                "control character",
            ),
        ] {
            let error = file.edit_script(acr, &edit).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert_eq!(text(&file), before);
        }
        // A file that does not load as a config now is not edited: its own error comes back.
        let (_dir, file) = file_with(&SHIPPED.replace(
            "[[scripts]]\nacr = \"sms_phone\"",
            "[[scripts]]\nacr = \"sms_phone\"\nsms_provider = \"twilio\"",
        ));
        let before = text(&file);
        let error = file
            .edit_script(
                "sms_phone",
                &ScriptEdit {
                    enabled: Some(true),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("scripts[3].sms_provider"), "{error}");
        assert_eq!(text(&file), before);
    }

    #[test]
    fn the_default_acr_must_be_an_enabled_interactive_entry() {
        let (_dir, file) = file_with(SHIPPED);
        for (acr, expected) in [
            ("", "blank"),
            ("  ", "blank"),
            ("twilio_sms", "twilio_sms is disabled"),
            ("nope", "no [[scripts]] entry"),
        ] {
            let error = file.set_default_acr(acr).unwrap_err().to_string();
            assert!(error.contains(expected), "{acr:?}: {error}");
        }
        file.edit_script(
            "sms_phone",
            &ScriptEdit {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(file.set_default_acr("sms_phone").unwrap());
        assert!(!file.set_default_acr("sms_phone").unwrap());
        assert_eq!(
            file.load().unwrap().login.default_acr.as_deref(),
            Some("sms_phone")
        );
        assert!(text(&file).contains("# The flow used when an application names none (acr_values).\ndefault_acr = \"sms_phone\""));
    }

    #[test]
    fn concurrent_edits_are_all_kept() {
        let (_dir, file) = file_with(SHIPPED);
        std::thread::scope(|scope| {
            for i in 0..8 {
                let file = file.clone();
                scope.spawn(move || {
                    let edit = ScriptEdit {
                        enabled: None,
                        properties: vec![(format!("p{i}"), Some(format!("v{i}")))],
                    };
                    file.edit_script("sms_otp", &edit).unwrap();
                });
            }
        });
        let config = file.load().unwrap();
        let properties = &config.script("sms_otp").unwrap().properties;
        for i in 0..8 {
            assert_eq!(properties[&format!("p{i}")], format!("v{i}"));
        }
    }
}
