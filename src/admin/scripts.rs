//! The Janssen operator's script and acr operations (`jans-cli` get-config-scripts-by-type,
//! get-config-scripts-by-inum, put-config-scripts, put-acrs), one implementation for the CLI
//! (`gatehouse scripts ...`, `gatehouse acrs default`) and the admin API. Reads merge the config
//! with what the script runtime reports (state, revision, errors); edits go through
//! [`ConfigFile`] and are then applied by the server's usual reload.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::config_file::{ConfigFile, EditError, ScriptEdit};
use crate::config::{Config, ScriptEntry, Usage};
use crate::flow::script_port::{HookFailures, ScriptRuntime, ScriptState};

/// What an operator sees of one script (secret property values are never shown).
#[derive(Debug, Clone, Serialize)]
pub struct ScriptView {
    pub acr: String,
    pub file: String,
    pub enabled: bool,
    /// Whether this acr is `[login] default_acr`.
    #[serde(rename = "default")]
    pub is_default: bool,
    pub level: i64,
    pub usage: Usage,
    pub state: ScriptState,
    /// The serving revision's number and the digest of its source.
    pub revision: Option<u64>,
    pub digest: Option<String>,
    /// Why the latest edit of the script does not serve, if it does not.
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<HookFailures>,
    /// The SMS providers it sends through, in order of preference; empty: the default.
    pub sms_provider: Vec<String>,
    /// Properties as written in the config: a secret's literal value shows as `********`; a
    /// `${env:NAME}` reference shows as written (the value stays in the environment).
    pub properties: BTreeMap<String, String>,
    /// The names among `properties` that are secret.
    pub secret_properties: Vec<String>,
}

/// What a secret written literally in the config is shown as.
pub const HIDDEN: &str = "********";

/// A property value as an operator may see it.
pub fn shown_value(entry: &ScriptEntry, name: &str, raw: &str) -> String {
    let is_reference = raw.trim().starts_with("${env:") && raw.trim().ends_with('}');
    match entry.is_secret_property(name) && !is_reference {
        true => HIDDEN.to_owned(),
        false => raw.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScriptAdminError {
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// Script and acr operations on one config file and the runtime that serves it.
pub struct ScriptAdmin {
    file: ConfigFile,
    runtime: Arc<dyn ScriptRuntime>,
    /// Applies the file's current contents at once (a server's reload); the CLI leaves it to the
    /// running server's watcher.
    apply: Arc<dyn Fn() + Send + Sync>,
}

impl ScriptAdmin {
    pub fn new(
        file: ConfigFile,
        runtime: Arc<dyn ScriptRuntime>,
        apply: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        ScriptAdmin {
            file,
            runtime,
            apply,
        }
    }

    pub fn config_path(&self) -> &std::path::Path {
        self.file.path()
    }

    /// Every configured script, in configuration order.
    pub fn list(&self) -> Result<Vec<ScriptView>, ScriptAdminError> {
        let config = self.file.load()?;
        let statuses = self.runtime.statuses();
        Ok(config
            .scripts
            .iter()
            .map(|entry| view(&config, entry, statuses.iter().find(|s| s.acr == entry.acr)))
            .collect())
    }

    pub fn show(&self, acr: &str) -> Result<ScriptView, ScriptAdminError> {
        self.list()?
            .into_iter()
            .find(|v| v.acr == acr)
            .ok_or_else(|| EditError::UnknownAcr(acr.to_owned()).into())
    }

    /// Applies an edit to `acr`'s entry (all of it or nothing) and returns the entry as it
    /// stands after the server applied it; `changed` is false when the file already said so.
    pub fn edit(
        &self,
        acr: &str,
        edit: &ScriptEdit,
    ) -> Result<(ScriptView, bool), ScriptAdminError> {
        let changed = self.file.edit_script(acr, edit)?;
        if changed {
            (self.apply)();
        }
        Ok((self.show(acr)?, changed))
    }

    /// `[login] default_acr`, if set.
    pub fn default_acr(&self) -> Result<Option<String>, ScriptAdminError> {
        Ok(self.file.load()?.login.default_acr)
    }

    /// Makes `acr` the default; `Ok(false)` when it already was.
    pub fn set_default_acr(&self, acr: &str) -> Result<bool, ScriptAdminError> {
        let changed = self.file.set_default_acr(acr)?;
        if changed {
            (self.apply)();
        }
        Ok(changed)
    }

    /// Whether `name` is a secret property of `acr` (so its value is never echoed).
    pub fn is_secret(&self, acr: &str, name: &str) -> Result<bool, ScriptAdminError> {
        let config = self.file.load()?;
        let entry = config
            .script(acr)
            .ok_or_else(|| EditError::UnknownAcr(acr.to_owned()))?;
        Ok(entry.is_secret_property(name))
    }
}

fn view(
    config: &Config,
    entry: &ScriptEntry,
    status: Option<&crate::flow::script_port::ScriptStatus>,
) -> ScriptView {
    let properties = entry
        .properties
        .iter()
        .map(|(name, raw)| (name.clone(), shown_value(entry, name, raw)))
        .collect();
    let secret_properties = entry
        .properties
        .keys()
        .filter(|name| entry.is_secret_property(name))
        .cloned()
        .collect();
    let state = match status {
        Some(status) => status.state,
        None if entry.enabled => ScriptState::Failed,
        None => ScriptState::Disabled,
    };
    ScriptView {
        acr: entry.acr.clone(),
        file: entry.file.clone(),
        enabled: entry.enabled,
        is_default: config.login.default_acr.as_deref() == Some(entry.acr.as_str()),
        level: entry.level,
        usage: entry.usage,
        state,
        revision: status.and_then(|s| s.revision),
        digest: status.and_then(|s| s.digest.clone()),
        last_error: status.and_then(|s| s.last_error.clone()),
        failures: status.and_then(|s| s.failures.clone()),
        sms_provider: entry.sms_providers().to_vec(),
        properties,
        secret_properties,
    }
}
