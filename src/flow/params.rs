//! Request parameters as a hook sees them: the first value of each name, secrets wrapped, and
//! which values are masked wherever a login logs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::base::Secret;

/// Request parameters as a hook sees them: the first value of each name.
#[derive(Debug, Clone, Default)]
pub struct RequestParams {
    values: BTreeMap<String, ParamValue>,
    /// Where the request came from (after trusted proxies), for per-address limits.
    client_ip: Option<IpAddr>,
    /// The browser's Accept-Language, for messages in the user's language.
    accept_language: Option<String>,
    /// The browser's User-Agent (at most 512 characters).
    user_agent: Option<String>,
    /// The address per-address limits count this client under (an IPv6 client by its
    /// network); the client address itself when not set.
    limit_address: Option<IpAddr>,
    /// The account a valid device cookie of this browser names (it signed in to it before).
    device_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    Plain(String),
    /// Reaches the script as an opaque value that prints as `***`.
    Secret(Secret),
}

/// Parameters delivered to scripts as opaque secrets.
const SECRET_PARAMS: [&str; 1] = ["password"];
/// The fields the host's pages treat as secret: their values are masked wherever a login logs.
/// Only these: masking any field a client names would let it blank words out of the audit log.
/// (A code a script checks under another name is masked once it is checked.)
const MASKED_PARAMS: [&str; 2] = ["password", "passcode"];

impl RequestParams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds from name/value pairs, keeping the first value of each name (as Gluu does).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut params = RequestParams::new();
        for (name, value) in pairs {
            let name = name.into();
            if params.values.contains_key(&name) {
                continue;
            }
            let value = value.into();
            let value = if SECRET_PARAMS.contains(&name.as_str()) {
                ParamValue::Secret(Secret::new(value))
            } else {
                ParamValue::Plain(value)
            };
            params.values.insert(name, value);
        }
        params
    }

    pub fn with_client_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.client_ip = ip;
        self
    }

    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    pub fn with_device_user(mut self, user: Option<String>) -> Self {
        self.device_user = user;
        self
    }

    pub fn device_user(&self) -> Option<&str> {
        self.device_user.as_deref()
    }

    pub fn with_limit_address(mut self, address: Option<IpAddr>) -> Self {
        self.limit_address = address;
        self
    }

    /// What per-address limits count this request under.
    pub fn limit_address(&self) -> Option<IpAddr> {
        self.limit_address.or(self.client_ip)
    }

    pub fn with_accept_language(mut self, value: Option<String>) -> Self {
        self.accept_language = value;
        self
    }

    pub fn accept_language(&self) -> Option<&str> {
        self.accept_language.as_deref()
    }

    pub fn with_user_agent(mut self, value: Option<String>) -> Self {
        self.user_agent = value.map(|v| v.chars().take(512).collect());
        self
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ParamValue)> {
        self.values.iter()
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// The values delivered to scripts as secrets (the password).
    pub fn secret_values(&self) -> Vec<String> {
        self.values
            .values()
            .filter_map(|v| match v {
                ParamValue::Secret(s) if !s.is_empty() => Some(s.expose().to_owned()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn masked_values(&self) -> impl Iterator<Item = String> + '_ {
        self.values
            .iter()
            .filter(|(name, _)| MASKED_PARAMS.contains(&name.as_str()))
            .map(|(_, v)| match v {
                ParamValue::Plain(s) => s.clone(),
                ParamValue::Secret(s) => s.expose().to_owned(),
            })
    }
}
