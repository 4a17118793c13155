//! A compiled script revision and the loader that reads, checks and compiles a script file.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Map, AST};

use crate::config::{PropertyValue, ScriptEntry};
use crate::flow::otp::CodePolicy;
use crate::flow::script_port::{hook_named, HookError, HookFailureKind, HookSpec, HOOKS};
use crate::ports::SmsSender;
use crate::script::api::ScriptSecret;
use crate::script::sandbox::{SecretBinding, DEADLINE_TOKEN, MEMORY_TOKEN, UNAVAILABLE_TOKEN};
use crate::sms::RefusingSms;

/// One compiled version of one script, with the properties it was loaded with. Immutable:
/// a reload builds a new one and swaps it in.
pub struct ScriptRevision {
    pub acr: String,
    /// How errors and logs name the file, e.g. `scripts/sms_otp.rhai`.
    pub source_name: String,
    pub number: u64,
    /// First 12 hex digits of the SHA-256 of source and properties: what makes two revisions equal.
    pub digest: String,
    pub ast: AST,
    pub config: Map,
    hooks: HashSet<(String, usize)>,
    /// Where each function is defined (line, column): errors without a position of their own
    /// (a deadline) point at the hook that ran.
    definitions: HashMap<String, (usize, usize)>,
    /// The SMS provider `sms::send` uses in this revision.
    pub(crate) sms: Arc<dyn SmsSender>,
    /// Why the provider could not be set up; refuses the revision after `init` had its say.
    pub(crate) sms_error: Option<String>,
    /// `[otp]` as this script's `[scripts.otp]` tightens it.
    pub(crate) code_policy: CodePolicy,
    /// The entry's `write_other_users`.
    pub(crate) write_other_users: bool,
    /// The values of the script's secret properties (masked in every line the script logs),
    /// and where `http::` may send them: the hosts of the entry's URL-valued properties and its
    /// `secret_hosts`, lower case.
    pub(crate) secrets: Arc<SecretBinding>,
}

impl ScriptRevision {
    pub fn defines(&self, hook: &str, arity: usize) -> bool {
        self.hooks.contains(&(hook.to_owned(), arity))
    }
}

/// Why a script file could not become a revision. Messages start with `file:line:col:` where known.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: file not found")]
    Missing(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Compile(String),
}

/// The bytes of a script file, after the checks that keep junk out.
pub struct ScriptSource {
    pub source_name: String,
    pub text: String,
}

/// Reads `file` from `dir`, refusing what is not a regular file in the folder (directory,
/// symlink out of it, oversize, not UTF-8).
pub fn read_script(dir: &Path, file: &str, max_bytes: u64) -> Result<ScriptSource, LoadError> {
    let path = dir.join(file);
    let source_name = display_name(dir, file);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(LoadError::Missing(source_name))
        }
        Err(e) => {
            return Err(LoadError::Refused(format!(
                "{source_name}: cannot read: {e}"
            )))
        }
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(&path)
            .map_err(|e| LoadError::Refused(format!("{source_name}: broken symlink: {e}")))?;
        let folder = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if !target.starts_with(&folder) {
            return Err(LoadError::Refused(format!(
                "{source_name}: refused: a symlink out of the scripts directory (to {})",
                target.display()
            )));
        }
    }
    let meta = std::fs::metadata(&path)
        .map_err(|e| LoadError::Refused(format!("{source_name}: cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(LoadError::Refused(format!(
            "{source_name}: refused: not a regular file"
        )));
    }
    if meta.len() > max_bytes {
        return Err(LoadError::Refused(format!(
            "{source_name}: refused: {} bytes is over the {max_bytes}-byte limit (sandbox.max_script_bytes)",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&path)
        .map_err(|e| LoadError::Refused(format!("{source_name}: cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        LoadError::Refused(format!(
            "{source_name}: refused: not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    Ok(ScriptSource { source_name, text })
}

/// `scripts/x.rhai` when the folder is relative, the full path otherwise.
pub fn display_name(dir: &Path, file: &str) -> String {
    PathBuf::from(dir).join(file).display().to_string()
}

/// The hosts of the entry's URL-valued properties, and its `secret_hosts`.
fn secret_hosts(entry: &ScriptEntry, properties: &BTreeMap<String, PropertyValue>) -> Vec<String> {
    let mut hosts: Vec<String> = properties
        .values()
        .filter_map(|value| {
            let text = match value {
                PropertyValue::Plain(text) => text.as_str(),
                PropertyValue::Secret(secret) => secret.expose(),
            };
            let url = url::Url::parse(text).ok()?;
            matches!(url.scheme(), "http" | "https")
                .then(|| url.host_str().map(str::to_ascii_lowercase))
                .flatten()
        })
        .chain(entry.secret_hosts.iter().map(|h| h.to_ascii_lowercase()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// A short digest of the source and its properties: one revision per distinct content.
pub fn digest(source: &str, properties: &BTreeMap<String, PropertyValue>) -> String {
    let mut content = source.as_bytes().to_vec();
    for (name, value) in properties {
        content.push(0);
        content.extend_from_slice(name.as_bytes());
        content.push(1);
        match value {
            PropertyValue::Plain(v) => content.extend_from_slice(v.as_bytes()),
            PropertyValue::Secret(v) => content.extend_from_slice(v.expose().as_bytes()),
        }
    }
    crate::base::digest::hex(&crate::base::digest::sha256(&content)[..6])
}

pub fn config_map(properties: &BTreeMap<String, PropertyValue>) -> Map {
    properties
        .iter()
        .map(|(name, value)| {
            let value = match value {
                PropertyValue::Plain(v) => Dynamic::from(v.clone()),
                PropertyValue::Secret(v) => Dynamic::from(ScriptSecret(v.clone())),
            };
            (name.as_str().into(), value)
        })
        .collect()
}

/// Compiles a source into a revision (not yet initialised).
pub fn compile(
    engine: &Engine,
    entry: &ScriptEntry,
    source: &ScriptSource,
    properties: &BTreeMap<String, PropertyValue>,
    number: u64,
    code_policy: CodePolicy,
) -> Result<ScriptRevision, LoadError> {
    let mut ast = engine.compile(&source.text).map_err(|e| {
        let (line, column) = (
            e.position().line().unwrap_or(0),
            e.position().position().unwrap_or(0),
        );
        LoadError::Compile(format!(
            "{}:{line}:{column}: {}",
            source.source_name,
            e.err_type()
        ))
    })?;
    ast.set_source(source.source_name.as_str());
    let definitions = function_definitions(&source.text);
    let at = |name: &str| match definitions.get(name) {
        Some((line, column)) => format!("{}:{line}:{column}", source.source_name),
        None => source.source_name.clone(),
    };
    let mut hooks = HashSet::new();
    for function in ast.iter_functions() {
        let (name, arity) = (function.name.to_string(), function.params.len());
        // A wrong parameter count is refused at load, not at the first login.
        if let Some(hook) = hook_named(&name) {
            if hook.arity() != arity {
                return Err(LoadError::Compile(format!(
                    "{}: fn {name} takes {arity} parameter(s); the hook takes {}: fn {}",
                    at(&name),
                    hook.arity(),
                    hook.signature()
                )));
            }
        } else if let Some(hook) = near_hook(&name) {
            // A misspelt hook would never be called: the host would quietly use the default.
            return Err(LoadError::Compile(format!(
                "{}: fn {name} is not a hook the host calls: did you mean {}? (fn {})",
                at(&name),
                hook.name,
                hook.signature()
            )));
        }
        hooks.insert((name, arity));
    }
    if !hooks.contains(&("authenticate".to_owned(), 3)) {
        return Err(LoadError::Compile(format!(
            "{}: no fn authenticate(config, params, step): every script must define it",
            source.source_name
        )));
    }
    let secret_values: Vec<String> = properties
        .values()
        .filter_map(|value| match value {
            PropertyValue::Secret(secret) => Some(secret.expose().to_owned()),
            PropertyValue::Plain(_) => None,
        })
        .collect();
    let secret_hosts = secret_hosts(entry, properties);
    Ok(ScriptRevision {
        acr: entry.acr.clone(),
        source_name: source.source_name.clone(),
        number,
        digest: digest(&source.text, properties),
        ast,
        config: config_map(properties),
        hooks,
        definitions,
        sms: Arc::new(RefusingSms(
            "no SMS provider is set up for this script".into(),
        )),
        sms_error: None,
        code_policy,
        write_other_users: entry.write_other_users,
        secrets: Arc::new(SecretBinding {
            values: secret_values,
            hosts: secret_hosts,
        }),
    })
}

/// The hook `name` is one small edit away from: the same letters in another case, or one
/// character added, dropped, changed or two swapped.
fn near_hook(name: &str) -> Option<&'static HookSpec> {
    HOOKS
        .iter()
        .find(|hook| hook.name.eq_ignore_ascii_case(name) || one_edit_apart(hook.name, name))
}

fn one_edit_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a == b {
        return false;
    }
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    match long.len() - short.len() {
        0 => {
            let differ: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            differ.len() == 1
                || (differ.len() == 2
                    && differ[1] == differ[0] + 1
                    && a[differ[0]] == b[differ[1]]
                    && a[differ[1]] == b[differ[0]])
        }
        1 => {
            let first = (0..short.len())
                .find(|&i| short[i] != long[i])
                .unwrap_or(short.len());
            short[first..] == long[first + 1..]
        }
        _ => false,
    }
}

/// Finds `fn name(` at the start of a line: Rhai only allows functions at the top level.
fn function_definitions(source: &str) -> HashMap<String, (usize, usize)> {
    let mut found = HashMap::new();
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed
            .strip_prefix("fn ")
            .or_else(|| trimmed.strip_prefix("private fn "))
        else {
            continue;
        };
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let column = line.len() - trimmed.len() + 1;
        found.entry(name).or_insert((index + 1, column));
    }
    found
}

/// Turns a Rhai error into a hook error whose message reads `file:line:col: what happened`.
pub fn describe_error(
    revision: &Arc<ScriptRevision>,
    hook: &'static str,
    error: &EvalAltResult,
) -> HookError {
    let mut innermost = error;
    let mut source = revision.source_name.as_str();
    // Some errors (a deadline) carry no position: report the innermost call site instead.
    let mut known_position = error.position();
    while let EvalAltResult::ErrorInFunctionCall(_, fn_source, inner, position) = innermost {
        if !fn_source.is_empty() {
            source = fn_source;
        }
        if !position.is_none() {
            known_position = *position;
        }
        innermost = inner;
    }
    let kind = match innermost {
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => {
            HookFailureKind::Timeout
        }
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == MEMORY_TOKEN => {
            HookFailureKind::Limit
        }
        EvalAltResult::ErrorTerminated(token, _)
            if token.to_string().starts_with(UNAVAILABLE_TOKEN) =>
        {
            HookFailureKind::Unavailable
        }
        EvalAltResult::ErrorTooManyOperations(_)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorStackOverflow(_)
        | EvalAltResult::ErrorTooManyModules(_) => HookFailureKind::Limit,
        _ => HookFailureKind::Runtime,
    };
    let what = match kind {
        HookFailureKind::Timeout => {
            "the hook ran past its deadline (sandbox.hook_timeout_ms)".to_owned()
        }
        HookFailureKind::Limit if matches!(innermost, EvalAltResult::ErrorTerminated(token, _) if token.to_string() == MEMORY_TOKEN) => {
            "the hook used more memory than it may (sandbox.max_hook_memory_mb)".to_owned()
        }
        HookFailureKind::Unavailable => match innermost {
            EvalAltResult::ErrorTerminated(token, _) => token
                .to_string()
                .trim_start_matches(UNAVAILABLE_TOKEN)
                .to_owned(),
            other => other.to_string(),
        },
        _ => strip_position(&innermost.to_string()),
    };
    let position = if innermost.position().is_none() {
        known_position
    } else {
        innermost.position()
    };
    let message = match (
        position.line(),
        position.position(),
        revision.definitions.get(hook),
    ) {
        (Some(line), column, _) => format!("{source}:{line}:{}: {what}", column.unwrap_or(0)),
        (None, _, Some((line, column))) => {
            format!("{source}:{line}:{column}: {what} (in fn {hook})")
        }
        (None, _, None) => format!("{source}: {what}"),
    };
    HookError {
        acr: revision.acr.clone(),
        hook,
        kind,
        message,
    }
}

/// Rhai appends ` (line L, position C)`; we print the position in front instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(at) if message.ends_with(')') => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_edits_of_hook_names_are_caught_and_other_names_are_not() {
        for typo in [
            "getNextstep",
            "getnextstep",
            "getNextSte",
            "getNextStepp",
            "getNetxStep",
            "authenticat",
            "Authenticate",
            "prepareForStpe",
        ] {
            assert!(near_hook(typo).is_some(), "{typo}");
        }
        for other in ["check_code", "send_code", "getNext", "helper", "init_user"] {
            assert!(near_hook(other).is_none(), "{other}");
        }
    }
}
