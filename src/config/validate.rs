//! Checks of a parsed config that types alone cannot make: ranges, references between
//! sections, uniqueness. Every message names the key and the fix.

use std::collections::HashSet;
use std::path::Path;

use super::*;

/// The demo client's secret in the shipped config: fine on http://localhost, never in production.
const SHIPPED_DEMO_SECRET: &str = "demo-secret";

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let mut seen = HashSet::new();
        for (i, script) in self.scripts.iter().enumerate() {
            let key = format!("scripts[{i}]");
            if !is_valid_acr(&script.acr) {
                return Err(invalid(
                    format!("{key}.acr"),
                    format!(
                        "{:?} is not a valid acr: use 1-64 letters, digits, '_', '-' or '.'",
                        script.acr
                    ),
                ));
            }
            if !seen.insert(script.acr.as_str()) {
                return Err(invalid(
                    format!("{key}.acr"),
                    format!("acr {:?} is configured twice", script.acr),
                ));
            }
            if !is_plain_script_file_name(&script.file) {
                return Err(invalid(
                    format!("{key}.file"),
                    format!("{:?} must be a file name ending in .rhai inside the scripts directory (no '/')", script.file),
                ));
            }
        }
        let provider_known =
            |name: &str| name == CONSOLE_PROVIDER || self.sms.providers.contains_key(name);
        if !provider_known(&self.sms.provider) {
            return Err(invalid(
                "sms.provider".into(),
                format!(
                    "{:?} is neither \"console\" nor a [sms.providers.NAME] section",
                    self.sms.provider
                ),
            ));
        }
        for (i, script) in self.scripts.iter().enumerate() {
            let mut named = HashSet::new();
            for (j, name) in script.sms_provider.iter().enumerate() {
                let key = match script.sms_provider.len() {
                    1 => format!("scripts[{i}].sms_provider"),
                    _ => format!("scripts[{i}].sms_provider[{j}]"),
                };
                if !provider_known(name) {
                    return Err(invalid(
                        key,
                        format!(
                            "{name:?} is neither \"console\" nor a [sms.providers.NAME] section"
                        ),
                    ));
                }
                if !named.insert(name.as_str()) {
                    return Err(invalid(key, format!("{name:?} is listed twice")));
                }
            }
        }
        let mut client_ids = HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = format!("clients[{i}]");
            if client.client_id.is_empty() || !client_ids.insert(client.client_id.as_str()) {
                return Err(invalid(
                    format!("{key}.client_id"),
                    "must be present and unique".into(),
                ));
            }
            let demo = client
                .client_secret
                .resolved()
                .is_ok_and(|s| s.expose() == SHIPPED_DEMO_SECRET);
            if demo && self.oidc.is_https() {
                return Err(invalid(
                    format!("{key}.client_secret"),
                    "is the shipped demo secret, which everyone knows; with an https issuer set a secret of your own, e.g. client_secret = \"${env:DEMO_CLIENT_SECRET}\"".into(),
                ));
            }
            if client.redirect_uris.is_empty() {
                return Err(invalid(
                    format!("{key}.redirect_uris"),
                    "register at least one redirect URI".into(),
                ));
            }
            for (j, uri) in client
                .redirect_uris
                .iter()
                .chain(&client.post_logout_redirect_uris)
                .enumerate()
            {
                let parsed = url::Url::parse(uri).map_err(|e| {
                    invalid(format!("{key}.redirect_uris[{j}]"), format!("{uri:?}: {e}"))
                })?;
                if parsed.fragment().is_some() || !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid(
                        format!("{key}.redirect_uris[{j}]"),
                        format!("{uri:?}: use an http(s) URL without fragment"),
                    ));
                }
            }
        }
        if let Some(default_acr) = &self.login.default_acr {
            if !self.scripts.iter().any(|s| &s.acr == default_acr) {
                return Err(invalid(
                    "login.default_acr".into(),
                    format!(
                        "{default_acr:?} names no [[scripts]] entry; add one or change the default"
                    ),
                ));
            }
        }
        let positive = [
            ("login.ttl_seconds", self.login.ttl_seconds),
            ("sandbox.max_operations", self.sandbox.max_operations),
            ("sandbox.hook_timeout_ms", self.sandbox.hook_timeout_ms),
            ("sandbox.max_script_bytes", self.sandbox.max_script_bytes),
            (
                "server.header_read_timeout_ms",
                self.server.header_read_timeout_ms,
            ),
            ("server.request_timeout_ms", self.server.request_timeout_ms),
            (
                "server.max_connections_per_address",
                u64::from(self.server.max_connections_per_address),
            ),
            (
                "sandbox.max_hook_memory_mb",
                self.sandbox.max_hook_memory_mb,
            ),
            (
                "sandbox.max_working_parameters",
                self.sandbox.max_working_parameters as u64,
            ),
            (
                "sandbox.max_working_bytes",
                self.sandbox.max_working_bytes as u64,
            ),
            ("http.connect_timeout_ms", self.http.connect_timeout_ms),
            ("http.timeout_ms", self.http.timeout_ms),
            ("http.max_response_bytes", self.http.max_response_bytes),
            ("oidc.code_ttl_seconds", self.oidc.code_ttl_seconds),
            (
                "oidc.access_token_ttl_seconds",
                self.oidc.access_token_ttl_seconds,
            ),
            ("oidc.id_token_ttl_seconds", self.oidc.id_token_ttl_seconds),
            ("oidc.sso_ttl_seconds", self.oidc.sso_ttl_seconds),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key.into(), "must be greater than 0".into()));
            }
        }
        in_range(
            "server.ipv6_prefix_length",
            i64::from(self.server.ipv6_prefix_length),
            1,
            128,
            " bits",
        )
        .map_err(|(key, message)| invalid(key, message))?;
        validate_otp(&self.otp).map_err(|(key, message)| invalid(key, message))?;
        validate_sms(&self.sms).map_err(|(key, message)| invalid(key, message))?;
        self.validate_store()
            .map_err(|(key, message)| invalid(key, message))?;
        self.validate_directory()
            .map_err(|(key, message)| invalid(key, message))?;
        self.validate_admin()
            .map_err(|(key, message)| invalid(key, message))?;
        in_range(
            "login.password_free_failures",
            self.login.password_free_failures,
            0,
            100,
            "",
        )
        .and_then(|_| {
            in_range(
                "login.password_account_free_failures",
                self.login.password_account_free_failures,
                0,
                10_000,
                "",
            )
        })
        .and_then(|_| {
            in_range(
                "login.password_account_max_delay_seconds",
                self.login.password_account_max_delay_seconds,
                1,
                3600,
                " seconds",
            )
        })
        .and_then(|_| {
            in_range(
                "login.password_max_delay_seconds",
                self.login.password_max_delay_seconds,
                1,
                3600,
                " seconds",
            )
        })
        .map_err(|(key, message)| invalid(key, message))?;
        for (i, script) in self.scripts.iter().enumerate() {
            if let Some(custom) = &script.otp {
                validate_override(&self.otp, custom).map_err(|(key, message)| {
                    invalid(format!("scripts[{i}].otp.{key}"), message)
                })?;
            }
        }
        if !["trace", "debug", "info", "warn", "error"].contains(&self.log.level.as_str()) {
            return Err(invalid(
                "log.level".into(),
                "use one of trace, debug, info, warn, error".into(),
            ));
        }
        Ok(())
    }
}

fn in_range(
    key: &str,
    value: i64,
    low: i64,
    high: i64,
    unit: &str,
) -> Result<(), (String, String)> {
    if value < low || value > high {
        return Err((
            key.to_owned(),
            format!("{value} is out of range: use {low} to {high}{unit}"),
        ));
    }
    Ok(())
}

impl Config {
    fn validate_admin(&self) -> Result<(), (String, String)> {
        let admin = &self.admin;
        if admin.listen.is_none() {
            return Ok(());
        }
        let Some(token) = &admin.token else {
            return Err((
                "admin.token".into(),
                format!("[admin] listen is set, so the admin API needs a token of {MIN_ADMIN_TOKEN}+ characters, e.g. token = \"${{env:GATEHOUSE_ADMIN_TOKEN}}\" with export GATEHOUSE_ADMIN_TOKEN=$(openssl rand -base64 32)")
            ));
        };
        // An unset variable is refused when a server starts (`admin_token`), not here: the
        // operator commands read this file too, from shells that need not hold the token.
        if let Ok(token) = token.resolved() {
            let length = token.expose().chars().count();
            if length < MIN_ADMIN_TOKEN {
                return Err((
                    "admin.token".into(),
                    format!("the token has {length} characters; use {MIN_ADMIN_TOKEN} or more (openssl rand -base64 32)"),
                ));
            }
        }
        if admin.listen.map(|l| l.0) == Some(self.server.listen.0) {
            return Err((
                "admin.listen".into(),
                "is [server] listen: give the admin listener its own (private) address".into(),
            ));
        }
        Ok(())
    }

    fn validate_store(&self) -> Result<(), (String, String)> {
        let store = &self.store;
        in_range(
            "store.timeout_ms",
            store.timeout_ms as i64,
            50,
            60_000,
            " ms",
        )?;
        if store.backend != crate::config::StoreBackend::Redis {
            return Ok(());
        }
        let Some(url) = &store.url else {
            return Err((
                "store.url".into(),
                "backend = \"redis\" needs url = \"redis://HOST:PORT/DB\"".into(),
            ));
        };
        let url = url.require("store.url")?;
        let scheme = url.expose().split("://").next().unwrap_or("");
        if !matches!(scheme, "redis" | "rediss") {
            return Err((
                "store.url".into(),
                "a Redis URL starts with redis:// (or rediss:// for TLS)".into(),
            ));
        }
        // Nodes sharing sign-ins must check each other's codes and device cookies.
        if self.otp.code_key.is_none() {
            return Err((
                "otp.code_key".into(),
                "backend = \"redis\" shares sign-ins between nodes: set the same [otp] code_key (${env:NAME}) on every node".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_directory(&self) -> Result<(), (String, String)> {
        let directory = &self.directory;
        in_range(
            "directory.timeout_ms",
            directory.timeout_ms as i64,
            50,
            60_000,
            " ms",
        )?;
        in_range(
            "directory.max_connections",
            directory.max_connections as i64,
            1,
            256,
            "",
        )?;
        if directory.backend != crate::config::DirectoryBackend::Ldap {
            return Ok(());
        }
        let Some(url) = &directory.url else {
            return Err((
                "directory.url".into(),
                "backend = \"ldap\" needs url = \"ldap://HOST:389\" (or ldaps://HOST:636)".into(),
            ));
        };
        let url = url.require("directory.url")?;
        let scheme = url.expose().split("://").next().unwrap_or("");
        match scheme {
            "ldap" => {}
            "ldaps" if directory.starttls => return Err((
                "directory.starttls".into(),
                "an ldaps:// connection is TLS already: remove starttls, or use ldap:// with it"
                    .into(),
            )),
            "ldaps" => {}
            _ => {
                return Err((
                    "directory.url".into(),
                    "an LDAP URL starts with ldap:// (with starttls = true for TLS) or ldaps://"
                        .into(),
                ))
            }
        }
        for (key, value) in [
            ("directory.bind_dn", &directory.bind_dn),
            ("directory.base_dn", &directory.base_dn),
        ] {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err((
                    key.into(),
                    "backend = \"ldap\" needs it (e.g. bind_dn = \"cn=gatehouse,ou=services,dc=example,dc=org\", base_dn = \"ou=people,dc=example,dc=org\")".into(),
                ));
            }
        }
        let Some(password) = &directory.bind_password else {
            return Err((
                "directory.bind_password".into(),
                "backend = \"ldap\" needs the service account's password (bind_password = \"${env:NAME}\")".into(),
            ));
        };
        if password
            .require("directory.bind_password")?
            .expose()
            .is_empty()
        {
            return Err((
                "directory.bind_password".into(),
                "is empty: an empty password is an anonymous bind in LDAP".into(),
            ));
        }
        let filter = directory.user_filter.trim();
        if !(filter.starts_with('(') && filter.ends_with(')'))
            || filter.matches("{username}").count() != 1
        {
            return Err((
                "directory.user_filter".into(),
                "must be an LDAP filter in parentheses holding {username} once, e.g. \"(uid={username})\" or \"(&(objectClass=person)(mail={username}))\"".into(),
            ));
        }
        let name = &directory.username_attribute;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err((
                "directory.username_attribute".into(),
                format!("{name:?} is not an LDAP attribute name"),
            ));
        }
        if let Some(ca) = &directory.ca_file {
            if !ca.is_file() {
                return Err((
                    "directory.ca_file".into(),
                    format!("{} is not a readable file", ca.display()),
                ));
            }
        }
        Ok(())
    }
}

fn validate_sms(sms: &SmsConfig) -> Result<(), (String, String)> {
    in_range(
        "sms.breaker_failures",
        i64::from(sms.breaker_failures),
        1,
        1000,
        "",
    )?;
    in_range(
        "sms.breaker_window_seconds",
        sms.breaker_window_seconds as i64,
        1,
        86_400,
        " seconds",
    )?;
    in_range(
        "sms.breaker_cool_off_seconds",
        sms.breaker_cool_off_seconds as i64,
        1,
        86_400,
        " seconds",
    )?;
    in_range(
        "sms.max_sends_per_login",
        sms.max_sends_per_login,
        1,
        10,
        "",
    )?;
    in_range(
        "sms.resend_cooldown_seconds",
        sms.resend_cooldown_seconds,
        0,
        3600,
        " seconds",
    )?;
    in_range(
        "sms.per_number_per_hour",
        sms.per_number_per_hour,
        1,
        1_000_000,
        "",
    )?;
    in_range(
        "sms.per_number_per_day",
        sms.per_number_per_day,
        1,
        10_000_000,
        "",
    )?;
    in_range(
        "sms.per_address_per_hour",
        sms.per_address_per_hour,
        1,
        10_000_000,
        "",
    )?;
    in_range("sms.daily_budget", sms.daily_budget, 0, 100_000_000, "")?;
    in_range("sms.visible_digits", sms.visible_digits, 0, 4, "")?;
    for (i, prefix) in sms.allowed_prefixes.iter().enumerate() {
        let digits = prefix.strip_prefix('+').unwrap_or("");
        if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                format!("sms.allowed_prefixes[{i}]"),
                format!("{prefix:?} is not an E.164 prefix like \"+44\""),
            ));
        }
    }
    for (i, prefix) in sms.denied_prefixes.iter().enumerate() {
        let digits = prefix.strip_prefix('+').unwrap_or("");
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err((
                format!("sms.denied_prefixes[{i}]"),
                format!("{prefix:?} is not an E.164 prefix like \"+1900\""),
            ));
        }
    }
    for (i, region) in sms.allowed_regions.iter().enumerate() {
        if crate::base::phone::Region::parse(region).is_none() {
            return Err((
                format!("sms.allowed_regions[{i}]"),
                format!("{region:?} is not an ISO 3166 region like \"GB\""),
            ));
        }
    }
    for (region, budget) in &sms.daily_budget_per_region {
        let key = format!("sms.daily_budget_per_region.{region}");
        if crate::base::phone::Region::parse(region).is_none()
            || !region.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err((
                key,
                format!("{region:?} is not an ISO 3166 region like \"GB\""),
            ));
        }
        in_range(&key, *budget, 0, 100_000_000, "")?;
    }
    if let Some(region) = &sms.default_region {
        if crate::base::phone::Region::parse(region).is_none() {
            return Err((
                "sms.default_region".into(),
                format!("{region:?} is not an ISO 3166 region like \"GB\""),
            ));
        }
    }
    Ok(())
}

fn validate_otp(otp: &OtpConfig) -> Result<(), (String, String)> {
    in_range("otp.length", otp.length, 4, 10, " characters")?;
    in_range(
        "otp.ttl_seconds",
        otp.ttl_seconds,
        1,
        600,
        " seconds (codes never live longer than 10 minutes)",
    )?;
    in_range(
        "otp.max_attempts",
        otp.max_attempts,
        1,
        10,
        " wrong guesses",
    )?;
    in_range(
        "otp.lock_after_failures",
        otp.lock_after_failures,
        1,
        1000,
        "",
    )?;
    in_range("otp.lock_minutes", otp.lock_minutes, 1, 24 * 60, " minutes")?;
    in_range(
        "otp.disable_after_failures",
        otp.disable_after_failures,
        1,
        10_000,
        "",
    )?;
    if otp.disable_after_failures < otp.lock_after_failures {
        return Err((
            "otp.disable_after_failures".into(),
            "must be at least otp.lock_after_failures".into(),
        ));
    }
    if let Some(raw) = &otp.code_key {
        otp_code_key(raw)?;
    }
    Ok(())
}

/// `[otp] code_key` after `${env:NAME}` expansion, checked for length.
fn otp_code_key(raw: &EnvValue) -> Result<(), (String, String)> {
    let key = raw.require("otp.code_key")?.expose();
    if key.len() < 32 {
        return Err((
            "otp.code_key".into(),
            format!(
                "is {} characters; use at least 32 (e.g. the output of `openssl rand -base64 32`)",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// A script may ask for longer codes, shorter lifetimes, fewer guesses, a larger alphabet.
fn validate_override(server: &OtpConfig, custom: &OtpOverride) -> Result<(), (String, String)> {
    if let Some(length) = custom.length {
        in_range(
            "length",
            length,
            server.length,
            10,
            &format!(" characters (at least [otp] length = {})", server.length),
        )?;
    }
    if let Some(ttl) = custom.ttl_seconds {
        in_range(
            "ttl_seconds",
            ttl,
            1,
            server.ttl_seconds,
            &format!(
                " seconds (at most [otp] ttl_seconds = {})",
                server.ttl_seconds
            ),
        )?;
    }
    if let Some(attempts) = custom.max_attempts {
        in_range(
            "max_attempts",
            attempts,
            1,
            server.max_attempts,
            &format!(" (at most [otp] max_attempts = {})", server.max_attempts),
        )?;
    }
    if custom.alphabet == Some(CodeAlphabet::Numeric)
        && server.alphabet == CodeAlphabet::Alphanumeric
    {
        return Err((
            "alphabet".into(),
            "numeric would loosen [otp] alphabet = \"alphanumeric\"".into(),
        ));
    }
    Ok(())
}

pub fn is_valid_acr(acr: &str) -> bool {
    (1..=64).contains(&acr.len())
        && acr
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(super) fn is_plain_script_file_name(name: &str) -> bool {
    name.ends_with(".rhai")
        && name.len() > 5
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name != ".."
}
