//! LDAP user directory (OpenLDAP, Gluu's, Active Directory...). Searches and writes are done
//! as the service account; a password is checked by binding as the user's DN, never by reading
//! `userPassword`. Connections are pooled (service binds and user binds apart, since a bind
//! changes who a connection is); every connect and operation has a timeout, and a connection that
//! failed is dropped, so service resumes by itself when the server is back.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ldap3::{ldap_escape, LdapConn, LdapConnSettings, LdapError, Mod, Scope, SearchEntry};

use crate::base::Secret;
use crate::ports::{AttributeChange, DirectoryError, UserDirectory, UserEntry};

/// LDAP result codes the adapter tells apart (RFC 4511, 4.1.9).
mod rc {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const NO_SUCH_ATTRIBUTE: u32 = 16;
    pub const UNDEFINED_ATTRIBUTE_TYPE: u32 = 17;
    pub const ATTRIBUTE_OR_VALUE_EXISTS: u32 = 20;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const BUSY: u32 = 51;
    pub const UNAVAILABLE: u32 = 52;
    pub const OBJECT_CLASS_VIOLATION: u32 = 65;
}

/// The auxiliary class of `config/ldap/gatehouse.schema` that allows Gatehouse's attributes on
/// any user entry; added to an entry the first time a write needs it.
pub const AUXILIARY_CLASS: &str = "gatehouseUser";

/// Longer names are nobody's (and are not sent to the server).
const MAX_USERNAME_BYTES: usize = 256;

/// Longer values are nobody's attribute value here (and are not sent to the server).
const MAX_VALUE_BYTES: usize = 4096;

/// Entries one `find_by_attribute` returns at most.
const MAX_MATCHES: i32 = 100;

/// Where and how to reach the directory (from `[directory]`).
pub struct LdapSettings {
    pub url: String,
    pub starttls: bool,
    /// PEM CA certificates; `None`: the system's.
    pub ca_pem: Option<Vec<u8>>,
    pub bind_dn: String,
    pub bind_password: Secret,
    pub base_dn: String,
    pub user_filter: String,
    pub username_attribute: String,
    pub timeout: Duration,
    /// Connections of each kind (service, user binds) open at most.
    pub max_connections: usize,
}

pub struct LdapDirectory {
    settings: LdapSettings,
    connection: LdapConnSettings,
    /// Connections bound as the service account.
    service: Pool,
    /// Connections last bound as some user (each password check binds again).
    binds: Pool,
}

/// Open connections of one kind: the idle ones, and how many are open in all (at most
/// `max_connections`, so that a burst of sign-ins cannot open a connection each).
#[derive(Default)]
struct Pool {
    state: Mutex<(Vec<LdapConn>, usize)>,
    freed: Condvar,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<LdapConn>, usize)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection (`Some`), or leave to open a new one (`None`, counted as open), or,
    /// with `max` open and none idle, whichever comes first within `timeout`.
    fn take(&self, max: usize, timeout: Duration) -> Result<Option<LdapConn>, Failure> {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.0.pop() {
                return Ok(Some(conn));
            }
            if state.1 < max {
                state.1 += 1;
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Failure::Down(format!(
                    "all {max} connections stayed busy for {} ms (directory.max_connections)",
                    timeout.as_millis()
                )));
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn give_back(&self, conn: LdapConn) {
        self.lock().0.push(conn);
        self.freed.notify_one();
    }

    /// A connection counted as open is gone.
    fn closed(&self) {
        let mut state = self.lock();
        state.1 = state.1.saturating_sub(1);
        drop(state);
        self.freed.notify_one();
    }
}

/// Why an operation failed: the server said no (the connection is fine), or the connection
/// or server is unusable.
enum Failure {
    Refused(String),
    Down(String),
}

impl From<LdapError> for Failure {
    fn from(error: LdapError) -> Self {
        match error {
            LdapError::LdapResult { result }
                if !matches!(result.rc, rc::BUSY | rc::UNAVAILABLE) =>
            {
                Failure::Refused(result.to_string())
            }
            other => Failure::Down(other.to_string()),
        }
    }
}

fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphabetic()
}

fn is_password_attribute(name: &str) -> bool {
    name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("userPassword")
}

fn tls_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate refused: {e}"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl LdapDirectory {
    /// Checks the settings (filter syntax, CA file); the server is reached on first use, so the
    /// node starts while the directory is still coming up.
    pub fn new(settings: LdapSettings) -> Result<LdapDirectory, DirectoryError> {
        let invalid = |message: String| DirectoryError::Unreadable {
            path: "[directory]".into(),
            message,
        };
        ldap3::parse_filter(settings.user_filter.replace("{username}", "x")).map_err(|_| {
            invalid(format!(
                "user_filter {:?} is not an LDAP filter",
                settings.user_filter
            ))
        })?;
        let mut connection = LdapConnSettings::new()
            .set_conn_timeout(settings.timeout)
            .set_starttls(settings.starttls);
        if let Some(pem) = &settings.ca_pem {
            connection = connection
                .set_config(tls_config(pem).map_err(|e| invalid(format!("ca_file {e}")))?);
        }
        Ok(LdapDirectory {
            settings,
            connection,
            service: Pool::default(),
            binds: Pool::default(),
        })
    }

    fn down(&self, message: impl std::fmt::Display) -> DirectoryError {
        DirectoryError::Unavailable(format!("LDAP {}: {message}", self.settings.url))
    }

    fn connect(&self) -> Result<LdapConn, Failure> {
        LdapConn::with_settings(self.connection.clone(), &self.settings.url)
            .map_err(|e| Failure::Down(e.to_string()))
    }

    /// Runs `work` on a connection from `pool`: an idle one, else a new one (set up by
    /// `prepare`) while fewer than `max_connections` are open, else the first one given back
    /// within the timeout. A connection is given back unless it failed; an idle one that turns
    /// out dead (the server restarted) is replaced once by a new one.
    fn with_pool<T>(
        &self,
        pool: &Pool,
        prepare: impl Fn(&mut LdapConn) -> Result<(), Failure>,
        mut work: impl FnMut(&mut LdapConn) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let fresh = || -> Result<LdapConn, Failure> {
            let mut conn = self.connect()?;
            prepare(&mut conn)?;
            Ok(conn)
        };
        let (idle, reused) =
            match pool.take(self.settings.max_connections, self.settings.timeout)? {
                Some(conn) => (Some(conn), true),
                None => (None, false),
            };
        // A new connection was granted a place: opening it may still fail.
        let mut conn = match idle {
            Some(conn) => conn,
            None => fresh().inspect_err(|_| pool.closed())?,
        };
        let mut result = work(&mut conn);
        if reused && matches!(result, Err(Failure::Down(_))) {
            drop(conn);
            conn = match fresh() {
                Ok(conn) => conn,
                Err(failure) => {
                    pool.closed();
                    return Err(failure);
                }
            };
            result = work(&mut conn);
        }
        if matches!(result, Err(Failure::Down(_))) {
            drop(conn);
            pool.closed();
        } else {
            pool.give_back(conn);
        }
        result
    }

    /// Runs `work` bound as the service account.
    fn as_service<T>(
        &self,
        mut work: impl FnMut(&mut LdapConn, Duration) -> Result<T, Failure>,
    ) -> Result<T, DirectoryError> {
        let timeout = self.settings.timeout;
        let bind = |conn: &mut LdapConn| {
            conn.with_timeout(timeout)
                .simple_bind(&self.settings.bind_dn, self.settings.bind_password.expose())?
                .success()
                .map(|_| ())
                .map_err(|e| match Failure::from(e) {
                    // A refused service bind is a configuration error, not a user's.
                    Failure::Refused(message) => Failure::Down(format!(
                        "the service account {} cannot bind: {message}",
                        self.settings.bind_dn
                    )),
                    down => down,
                })
        };
        self.with_pool(&self.service, bind, |conn| work(conn, timeout))
            .map_err(|failure| match failure {
                Failure::Down(message) | Failure::Refused(message) => self.down(message),
            })
    }

    fn user_filter(&self, username: &str) -> String {
        self.settings
            .user_filter
            .replace("{username}", &ldap_escape(username))
    }

    /// The entries `filter` finds under the base DN, at most `limit`.
    fn search(
        &self,
        filter: &str,
        attributes: &[&str],
        limit: i32,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        self.as_service(|conn, timeout| {
            let found = conn
                .with_search_options(ldap3::SearchOptions::new().sizelimit(limit))
                .with_timeout(timeout)
                .search(
                    &self.settings.base_dn,
                    Scope::Subtree,
                    filter,
                    attributes.to_vec(),
                )?;
            let (entries, result) = (found.0, found.1);
            if !matches!(result.rc, rc::SUCCESS | rc::SIZE_LIMIT_EXCEEDED) {
                if result.rc == rc::NO_SUCH_OBJECT {
                    return Err(Failure::Down(format!(
                        "base_dn {} does not exist",
                        self.settings.base_dn
                    )));
                }
                return Err(LdapError::from(result).into());
            }
            Ok(entries.into_iter().map(SearchEntry::construct).collect())
        })
    }

    /// The one entry of `username`; two entries for one name is an error (the filter is too
    /// wide), never a choice.
    fn entry_of(
        &self,
        username: &str,
        attributes: &[&str],
    ) -> Result<Option<SearchEntry>, DirectoryError> {
        // No directory names a user like this: not worth a query (nor a server's refusal).
        if username.is_empty() || username.len() > MAX_USERNAME_BYTES {
            return Ok(None);
        }
        let mut entries = self.search(&self.user_filter(username), attributes, 2)?;
        if entries.len() > 1 {
            return Err(self.down(format!(
                "user_filter {:?} finds more than one entry for {username:?}: make it match one user",
                self.settings.user_filter
            )));
        }
        Ok(entries.pop())
    }

    fn to_user(&self, entry: SearchEntry, fallback_name: Option<&str>) -> Option<UserEntry> {
        let username_attribute = &self.settings.username_attribute;
        let stored_name = entry
            .attrs
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(username_attribute))
            .and_then(|(_, values)| {
                // The value the typed name matched (the attribute may hold several).
                match fallback_name {
                    Some(typed) => values
                        .iter()
                        .find(|v| v.eq_ignore_ascii_case(typed))
                        .or(values.first()),
                    None => values.first(),
                }
            })
            .cloned();
        let username = stored_name.or_else(|| fallback_name.map(str::to_owned))?;
        let attributes: BTreeMap<String, Vec<String>> = entry
            .attrs
            .into_iter()
            .filter(|(name, _)| !is_password_attribute(name))
            .collect();
        Some(UserEntry {
            username,
            attributes,
        })
    }

    fn modify(&self, dn: &str, mods: Vec<Mod<String>>) -> Result<u32, DirectoryError> {
        self.as_service(|conn, timeout| {
            let result = conn.with_timeout(timeout).modify(dn, mods.clone())?;
            match result.rc {
                rc::BUSY | rc::UNAVAILABLE => Err(LdapError::from(result).into()),
                code => Ok(code),
            }
        })
    }
}

impl Drop for LdapDirectory {
    fn drop(&mut self) {
        // Each connection owns a small runtime, which must not be dropped on an async thread
        // (the server drops its state there): close them on a thread of their own.
        let mut idle = std::mem::take(&mut self.service.lock().0);
        idle.append(&mut self.binds.lock().0);
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("ldap-close".into())
                .spawn(move || drop(idle));
        }
    }
}

fn changes_for(change: &AttributeChange) -> (String, Mod<String>, u32) {
    match change {
        AttributeChange::Replace { attribute, values } => (
            attribute.clone(),
            Mod::Replace(attribute.clone(), values.iter().cloned().collect()),
            rc::NO_SUCH_ATTRIBUTE,
        ),
        AttributeChange::Add { attribute, value } => (
            attribute.clone(),
            Mod::Add(attribute.clone(), HashSet::from([value.clone()])),
            rc::ATTRIBUTE_OR_VALUE_EXISTS,
        ),
        AttributeChange::Remove { attribute, value } => (
            attribute.clone(),
            Mod::Delete(attribute.clone(), HashSet::from([value.clone()])),
            rc::NO_SUCH_ATTRIBUTE,
        ),
    }
}

impl UserDirectory for LdapDirectory {
    fn find(&self, username: &str) -> Result<Option<UserEntry>, DirectoryError> {
        Ok(self
            .entry_of(username, &["*"])?
            .and_then(|entry| self.to_user(entry, Some(username))))
    }

    fn find_by_attribute(
        &self,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<UserEntry>, DirectoryError> {
        if !valid_attribute_name(attribute) {
            return Err(DirectoryError::BadAttributeName(attribute.to_owned()));
        }
        if is_password_attribute(attribute) || value.len() > MAX_VALUE_BYTES {
            return Ok(Vec::new());
        }
        // Users only: the user filter with any name, and the attribute's value.
        let users = self.settings.user_filter.replace("{username}", "*");
        let filter = format!("(&{users}({attribute}={}))", ldap_escape(value));
        Ok(self
            .search(&filter, &["*"], MAX_MATCHES)?
            .into_iter()
            .filter_map(|entry| self.to_user(entry, None))
            .collect())
    }

    fn verify_password(&self, username: &str, password: &Secret) -> Result<bool, DirectoryError> {
        // An empty password is an unauthenticated bind, which LDAP servers accept: never a check.
        if password.expose().is_empty() {
            return Ok(false);
        }
        let dn = match self.entry_of(username, &["1.1"])? {
            Some(entry) => entry.dn,
            // An unknown user costs a bind like a known one: the answer and its time are the same.
            None => format!(
                "{}={},{}",
                self.settings.username_attribute,
                ldap3::dn_escape(
                    crate::base::random::hex_token(12).unwrap_or_else(|_| "nobody".into())
                ),
                self.settings.base_dn
            ),
        };
        let timeout = self.settings.timeout;
        let result = self.with_pool(
            &self.binds,
            |_| Ok(()),
            |conn| {
                let result = conn
                    .with_timeout(timeout)
                    .simple_bind(&dn, password.expose())?;
                match result.rc {
                    rc::SUCCESS => Ok(true),
                    rc::INVALID_CREDENTIALS => Ok(false),
                    rc::BUSY | rc::UNAVAILABLE => Err(LdapError::from(result).into()),
                    // Locked or expired accounts and the like: a refusal, said in the log.
                    _ => {
                        tracing::warn!(target: "server", "LDAP refused the bind of {username}: {result}");
                        Ok(false)
                    }
                }
            },
        );
        result.map_err(|failure| match failure {
            Failure::Down(message) | Failure::Refused(message) => self.down(message),
        })
    }

    /// As the service account. Removing a value is one modify that the server grants to one
    /// request and answers noSuchAttribute to the others.
    fn update(&self, username: &str, change: AttributeChange) -> Result<bool, DirectoryError> {
        let (attribute, modification, harmless) = changes_for(&change);
        if !valid_attribute_name(&attribute) {
            return Err(DirectoryError::BadAttributeName(attribute));
        }
        if is_password_attribute(&attribute) {
            return Err(DirectoryError::ProtectedAttribute(attribute));
        }
        let entry = self
            .entry_of(username, &["objectClass"])?
            .ok_or_else(|| DirectoryError::NoSuchUser(username.to_owned()))?;
        let mut code = self.modify(&entry.dn, vec![modification.clone()])?;
        let has_class = entry
            .attrs
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("objectClass"))
            .flat_map(|(_, classes)| classes)
            .any(|class| class.eq_ignore_ascii_case(AUXILIARY_CLASS));
        if matches!(
            code,
            rc::OBJECT_CLASS_VIOLATION | rc::UNDEFINED_ATTRIBUTE_TYPE
        ) && !has_class
        {
            // The entry's classes do not allow the attribute: add Gatehouse's auxiliary class
            // (config/ldap/gatehouse.schema) in the same change.
            let add_class = Mod::Add(
                "objectClass".to_owned(),
                HashSet::from([AUXILIARY_CLASS.to_owned()]),
            );
            code = self.modify(&entry.dn, vec![add_class, modification])?;
        }
        let changed = match code {
            rc::SUCCESS => true,
            code if code == harmless => false,
            code => {
                return Err(DirectoryError::Write {
                    path: self.settings.url.clone(),
                    message: format!(
                        "changing {attribute} of {} was refused (LDAP result {code}); is config/ldap/gatehouse.schema loaded?",
                        entry.dn
                    ),
                })
            }
        };
        if changed {
            tracing::info!(target: "server", "LDAP: attribute {attribute} of {username} updated");
        }
        Ok(changed)
    }

    fn check(&self) -> Result<(), DirectoryError> {
        self.as_service(|conn, timeout| {
            conn.with_timeout(timeout)
                .search(
                    &self.settings.base_dn,
                    Scope::Base,
                    "(objectClass=*)",
                    vec!["1.1"],
                )?
                .success()?;
            Ok(())
        })
    }

    fn is_remote(&self) -> bool {
        true
    }
}
