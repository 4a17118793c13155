//! A login in progress, as kept in the state store between requests.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::flow::hooks::HookState;

/// The unguessable handle of a login (later: behind the session cookie). Never logged: logs
/// carry the separate correlation id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LoginHandle(String);

impl LoginHandle {
    pub(crate) fn new(value: String) -> Self {
        LoginHandle(value)
    }

    /// Parses a handle received from a client; anything but 64 lowercase hex digits is refused.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| LoginHandle(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn store_key(&self) -> String {
        format!("login:{}", self.0)
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
    pub user: Option<String>,
    pub working: BTreeMap<String, String>,
    pub message: Option<String>,
    /// The page `getPageForStep` named for `step` ("" = the default login page).
    pub page: String,
    pub started_at: u64,
    /// Bumped on every save: a concurrent submission of the same login loses, never mixes.
    pub version: u64,
    /// See [`HookState::last_sms`].
    #[serde(default)]
    pub last_sms: Option<(String, String)>,
    /// See [`HookState::methods`].
    #[serde(default)]
    pub methods: Vec<String>,
}

impl LoginTransaction {
    pub fn hook_state(&self) -> HookState {
        HookState {
            user: self.user.clone(),
            working: self.working.clone(),
            message: None,
            retry_after: None,
            last_sms: self.last_sms.clone(),
            methods: self.methods.clone(),
        }
    }

    pub fn absorb(&mut self, state: HookState) {
        self.user = state.user;
        self.working = state.working;
        self.message = state.message;
        self.last_sms = state.last_sms;
        self.methods = state.methods;
    }
}
