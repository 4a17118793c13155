//! A login in progress, as kept in the state store between requests.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::base::store_keys;
use crate::flow::host::HookState;

/// The unguessable handle of a login (later: behind the session cookie). Never logged: logs
/// carry the separate correlation id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LoginHandle(String);

impl LoginHandle {
    pub(crate) fn new(value: String) -> Self {
        LoginHandle(value)
    }

    /// Parses a handle received from a client; anything but an id token (32 lowercase hex
    /// digits) is refused.
    pub fn parse(value: &str) -> Option<Self> {
        crate::base::random::is_id_token(value).then(|| LoginHandle(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn store_key(&self) -> String {
        store_keys::login(&self.0)
    }
}

impl fmt::Debug for LoginHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginHandle(***)")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginTransaction {
    pub correlation_id: String,
    pub acr: String,
    /// The step whose page is shown and whose submission is expected next.
    pub step: u32,
    /// Steps passed so far, in order.
    pub passed: Vec<u32>,
    /// What the hooks keep between steps: user, working parameters, message, methods...
    /// Hooks get a copy and the engine takes back what they leave, after every hook call.
    /// (Nested, not flattened: serde reads a flattened struct through a slow buffered path.)
    pub state: HookState,
    /// The page `getPageForStep` named for `step` ("" = the default login page).
    pub page: String,
    pub started_at: u64,
    /// Bumped on every save: a concurrent submission of the same login loses, never mixes.
    pub version: u64,
    /// Its start counted against the caps on unfinished sign-ins: released when it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted: Option<crate::flow::pending::CountedStart>,
}
