//! The embedded user directory: a TOML file (`config/users.toml`) re-read whenever it changes on
//! disk; script writes edit it in place (comments and layout kept) and replace it atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;
use toml_edit::{Array, DocumentMut, Item, Table};

use crate::base::password::PasswordChecker;
use crate::base::phone::{is_phone_subject, PHONE_SUBJECT_PREFIX};
use crate::base::Secret;
use crate::ports::{AttributeChange, DirectoryError, UserDirectory, UserEntry};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    /// argon2id PHC string (`gatehouse hash-password`).
    password: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone)]
struct Loaded {
    entries: BTreeMap<String, UserEntry>,
    passwords: BTreeMap<String, String>,
}

/// What identifies one version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

struct Cache {
    stamp: Stamp,
    /// Shared, so a lookup does not copy the directory.
    loaded: Arc<Loaded>,
    /// The stamp whose parse error was already logged.
    reported: Stamp,
}

pub struct FileDirectory {
    path: PathBuf,
    cache: Mutex<Cache>,
    /// Serialises writers (read-modify-replace).
    writing: Mutex<()>,
    /// The server's one argon2id gate, shared with every other password check.
    passwords: Arc<PasswordChecker>,
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn parse(path: &Path, text: &str) -> Result<Loaded, DirectoryError> {
    let file: UsersFile = toml::from_str(text).map_err(|e| DirectoryError::Unreadable {
        path: path.display().to_string(),
        message: e.message().to_owned(),
    })?;
    let mut loaded = Loaded {
        entries: BTreeMap::new(),
        passwords: BTreeMap::new(),
    };
    for (username, record) in file.users {
        if is_phone_subject(&username) {
            return Err(DirectoryError::Unreadable {
                path: path.display().to_string(),
                message: format!(
                    "user {username:?}: names starting with \"{}\" are kept for phone-number sign-ins; rename the entry",
                    PHONE_SUBJECT_PREFIX
                ),
            });
        }
        let attributes = record
            .attributes
            .into_iter()
            .map(|(name, value)| {
                let values = match value {
                    OneOrMany::One(v) => vec![v],
                    OneOrMany::Many(vs) => vs,
                };
                (name, values)
            })
            .collect();
        if let Some(phc) = record.password {
            loaded.passwords.insert(username.clone(), phc);
        }
        loaded.entries.insert(
            username.clone(),
            UserEntry {
                username,
                attributes,
            },
        );
    }
    Ok(loaded)
}

fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl FileDirectory {
    /// Opens the directory with a password gate of its own (the CLI, tests); the server passes
    /// its one gate with [`FileDirectory::open_with`].
    pub fn open(path: &Path) -> Result<Self, DirectoryError> {
        Self::open_with(path, Arc::new(PasswordChecker::default()))
    }

    /// Opens the directory; the file must parse now (later bad edits are logged and the last
    /// good content kept).
    pub fn open_with(path: &Path, passwords: Arc<PasswordChecker>) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|e| DirectoryError::Unreadable {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let loaded = parse(path, &text)?;
        Ok(FileDirectory {
            path: path.to_owned(),
            cache: Mutex::new(Cache {
                stamp: stamp(path),
                loaded: Arc::new(loaded),
                reported: None,
            }),
            writing: Mutex::new(()),
            passwords,
        })
    }

    /// Group or world permission bits of the file, if it has any (Unix): it holds password and
    /// backup-code hashes, and should be readable by the server's user alone.
    pub fn exposed_mode(&self) -> Option<u32> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&self.path).ok()?.permissions().mode() & 0o777;
            (mode & 0o077 != 0).then_some(mode)
        }
        #[cfg(not(unix))]
        None
    }

    /// The current content, re-read if the file changed since the last look.
    fn current(&self) -> Arc<Loaded> {
        let now = stamp(&self.path);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if now != cache.stamp {
            match std::fs::read_to_string(&self.path)
                .map_err(|e| DirectoryError::Unreadable {
                    path: self.path.display().to_string(),
                    message: e.to_string(),
                })
                .and_then(|text| parse(&self.path, &text))
            {
                Ok(loaded) => {
                    cache.loaded = Arc::new(loaded);
                    cache.stamp = now;
                    tracing::info!(target: "server", "{}: user directory re-read", self.path.display());
                }
                Err(error) => {
                    if cache.reported != now {
                        tracing::error!(target: "server", "{error}; the previous content keeps serving");
                        cache.reported = now;
                    }
                }
            }
        }
        cache.loaded.clone()
    }

    fn write_error(&self, message: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::Write {
            path: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// Replaces the file atomically: a temp file beside it, flushed, then renamed over it.
    fn replace_file(&self, text: &str) -> Result<(), DirectoryError> {
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            // The file holds password and backup-code hashes: owner only, whatever it was.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result.map_err(|e| self.write_error(e))
    }
}

impl UserDirectory for FileDirectory {
    fn find(&self, username: &str) -> Result<Option<UserEntry>, DirectoryError> {
        Ok(self.current().entries.get(username).cloned())
    }

    fn find_by_attribute(
        &self,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<UserEntry>, DirectoryError> {
        let loaded = self.current();
        Ok(loaded
            .entries
            .values()
            .filter(|u| {
                u.attributes
                    .get(attribute)
                    .is_some_and(|vs| vs.iter().any(|v| v == value))
            })
            .cloned()
            .collect())
    }

    fn verify_password(&self, username: &str, password: &Secret) -> Result<bool, DirectoryError> {
        let loaded = self.current();
        Ok(self
            .passwords
            .verify(loaded.passwords.get(username).map(String::as_str), password))
    }

    /// Applies `change` to the file as it is now, under the writer's lock (nothing is written
    /// when the values stay the same).
    fn update(&self, username: &str, change: AttributeChange) -> Result<bool, DirectoryError> {
        let attribute = match &change {
            AttributeChange::Replace { attribute, .. }
            | AttributeChange::Add { attribute, .. }
            | AttributeChange::Remove { attribute, .. } => attribute.clone(),
        };
        if !valid_attribute_name(&attribute) {
            return Err(DirectoryError::BadAttributeName(attribute));
        }
        if attribute == "password" {
            return Err(DirectoryError::ProtectedAttribute(attribute));
        }
        let _writer = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        // Start from the file as it is now, so a hand edit made since our last read is kept.
        let text = std::fs::read_to_string(&self.path).map_err(|e| self.write_error(e))?;
        let current = parse(&self.path, &text)
            .map_err(|e| self.write_error(format!("{e}; fix the file first")))?;
        let entry = current
            .entries
            .get(username)
            .ok_or_else(|| DirectoryError::NoSuchUser(username.to_owned()))?;
        let before = entry
            .attributes
            .get(&attribute)
            .cloned()
            .unwrap_or_default();
        let mut values = before.clone();
        match change {
            AttributeChange::Replace { values: new, .. } => values = new,
            AttributeChange::Add { value, .. } => {
                if !values.contains(&value) {
                    values.push(value);
                }
            }
            AttributeChange::Remove { value, .. } => values.retain(|v| v != &value),
        }
        if values == before {
            return Ok(false);
        }
        let mut doc: DocumentMut = text.parse().map_err(|e| self.write_error(e))?;
        let user = doc
            .get_mut("users")
            .and_then(|u| u.as_table_like_mut())
            .and_then(|users| users.get_mut(username))
            .and_then(|u| u.as_table_like_mut())
            .ok_or_else(|| DirectoryError::NoSuchUser(username.to_owned()))?;
        if user.get("attributes").is_none() {
            user.insert("attributes", Item::Table(Table::new()));
        }
        let attributes = user
            .get_mut("attributes")
            .and_then(|a| a.as_table_like_mut())
            .ok_or_else(|| {
                self.write_error(format!("users.{username}.attributes is not a table"))
            })?;
        match values.as_slice() {
            [] => {
                attributes.remove(&attribute);
            }
            [one] => {
                attributes.insert(&attribute, toml_edit::value(one.as_str()));
            }
            many => {
                attributes.insert(
                    &attribute,
                    toml_edit::value(many.iter().map(String::as_str).collect::<Array>()),
                );
            }
        }
        self.replace_file(&doc.to_string())?;
        tracing::info!(target: "server", "{}: attribute {attribute} of {username} updated", self.path.display());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USERS: &str = "# demo users\n[users.alice]\npassword = \"x\"\n[users.alice.attributes]\nphoneNumberVerified = \"+447700900123\" # her phone\nmail = [\"a@example.org\"]\n\n[users.bob]\n";

    #[test]
    fn reads_single_and_multi_valued_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, USERS).unwrap();
        let directory = FileDirectory::open(&path).unwrap();
        let alice = directory.find("alice").unwrap().unwrap();
        assert_eq!(alice.first("phoneNumberVerified"), Some("+447700900123"));
        assert_eq!(
            directory
                .find_by_attribute("mail", "a@example.org")
                .unwrap()
                .len(),
            1
        );
        assert!(directory.find("carol").unwrap().is_none());
    }

    #[test]
    fn writes_keep_comments_and_hand_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, USERS).unwrap();
        let directory = FileDirectory::open(&path).unwrap();
        // A hand edit the directory has not read yet.
        std::fs::write(
            &path,
            USERS.replace(
                "[users.bob]\n",
                "[users.bob]\n[users.bob.attributes]\nmobile = \"+15550100\"\n",
            ),
        )
        .unwrap();
        directory
            .update(
                "alice",
                AttributeChange::Add {
                    attribute: "mail".into(),
                    value: "b@example.org".into(),
                },
            )
            .unwrap();
        directory
            .update(
                "bob",
                AttributeChange::Replace {
                    attribute: "oxMobileDevices".into(),
                    values: vec!["{}".into()],
                },
            )
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("# her phone"), "{text}");
        assert!(text.contains("mobile = \"+15550100\""), "{text}");
        let bob = directory.find("bob").unwrap().unwrap();
        assert_eq!(bob.first("oxMobileDevices"), Some("{}"));
        assert_eq!(
            directory.find("alice").unwrap().unwrap().attributes["mail"].len(),
            2
        );
        assert!(matches!(
            directory.update(
                "alice",
                AttributeChange::Add {
                    attribute: "password".into(),
                    value: "p".into()
                }
            ),
            Err(DirectoryError::ProtectedAttribute(_))
        ));
    }
}
