//! Which edits of a running server's config need a restart: decided by comparing values, key by
//! key, so the warning names the key (`sms.providers.twilio.api_base`), secrets included (their
//! values are compared, never shown).

use super::{Config, ProviderConfig};

/// Compares the listed fields of two values of one section and notes the ones that differ.
macro_rules! compare {
    ($changed:ident, $prefix:expr, $old:expr, $new:expr, [$($field:ident),* $(,)?]) => {
        $(
            if $old.$field != $new.$field {
                $changed.push(format!("{}.{}", $prefix, stringify!($field)));
            }
        )*
    };
}

/// The keys whose new value only takes effect after a restart. Everything else applies on
/// reload: `[[scripts]]`, `[[clients]]`, `[login] default_acr`, `[oidc]` lifetimes and issuer.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    compare!(
        changed,
        "server",
        old.server,
        new.server,
        [
            listen,
            trusted_proxies,
            ipv6_prefix_length,
            header_read_timeout_ms,
            request_timeout_ms,
            max_connections_per_address
        ]
    );
    compare!(
        changed,
        "paths",
        old.paths,
        new.paths,
        [scripts_dir, log_dir, users_file, pages_dir]
    );
    compare!(
        changed,
        "login",
        old.login,
        new.login,
        [
            ttl_seconds,
            password_free_failures,
            password_max_delay_seconds,
            password_account_free_failures,
            password_account_max_delay_seconds,
            max_pending_per_address,
            max_pending_total
        ]
    );
    compare!(
        changed,
        "otp",
        old.otp,
        new.otp,
        [
            length,
            alphabet,
            ttl_seconds,
            max_attempts,
            lock_after_failures,
            lock_minutes,
            disable_after_failures,
            code_key
        ]
    );
    compare!(
        changed,
        "sandbox",
        old.sandbox,
        new.sandbox,
        [
            max_operations,
            max_call_levels,
            max_expr_depth,
            max_string_size,
            max_array_size,
            max_map_size,
            hook_timeout_ms,
            max_script_bytes,
            max_hook_memory_mb,
            max_working_parameters,
            max_working_bytes
        ]
    );
    compare!(
        changed,
        "sms",
        old.sms,
        new.sms,
        [
            provider,
            default_region,
            allowed_prefixes,
            allowed_regions,
            denied_prefixes,
            allow_test_numbers,
            max_sends_per_login,
            resend_cooldown_seconds,
            per_number_per_hour,
            per_number_per_day,
            per_address_per_hour,
            daily_budget,
            daily_budget_per_region,
            webotp_line,
            visible_digits,
            breaker_failures,
            breaker_window_seconds,
            breaker_cool_off_seconds
        ]
    );
    let names = old.sms.providers.keys().chain(new.sms.providers.keys());
    let mut seen = std::collections::BTreeSet::new();
    for name in names.filter(|n| seen.insert(n.as_str())) {
        let prefix = format!("sms.providers.{name}");
        match (old.sms.providers.get(name), new.sms.providers.get(name)) {
            (Some(ProviderConfig::Twilio(a)), Some(ProviderConfig::Twilio(b))) => {
                compare!(
                    changed,
                    prefix,
                    a,
                    b,
                    [account_sid, auth_token, from, api_base, status_callback]
                );
            }
            (Some(ProviderConfig::Http(a)), Some(ProviderConfig::Http(b))) => {
                compare!(
                    changed,
                    prefix,
                    a,
                    b,
                    [
                        url,
                        method,
                        headers,
                        payload,
                        content_type,
                        basic_user,
                        basic_password,
                        accepted_status,
                        success_body_contains,
                        failure_body_contains,
                        message_id_pointer
                    ]
                );
            }
            (a, b) if a != b => changed.push(prefix),
            _ => {}
        }
    }
    compare!(
        changed,
        "http",
        old.http,
        new.http,
        [
            connect_timeout_ms,
            timeout_ms,
            max_response_bytes,
            insecure_http_hosts,
            allow_addresses
        ]
    );
    compare!(changed, "oidc", old.oidc, new.oidc, [signing_key_file]);
    compare!(
        changed,
        "store",
        old.store,
        new.store,
        [backend, url, key_prefix, timeout_ms]
    );
    compare!(
        changed,
        "directory",
        old.directory,
        new.directory,
        [
            backend,
            url,
            starttls,
            ca_file,
            bind_dn,
            bind_password,
            base_dn,
            user_filter,
            username_attribute,
            timeout_ms,
            max_connections
        ]
    );
    compare!(
        changed,
        "log",
        old.log,
        new.log,
        [level, console, reload_debounce_ms, format]
    );
    compare!(changed, "admin", old.admin, new.admin, [listen, token]);
    changed
}

impl Config {
    /// Keeps, from the config in force, every value that only a restart may change, so that a
    /// reload applies exactly what it says it applies (and warns about the rest).
    pub fn with_restart_only_values_of(mut self, running: &Config) -> Config {
        self.server = running.server.clone();
        self.paths = running.paths.clone();
        self.login.ttl_seconds = running.login.ttl_seconds;
        self.login.password_free_failures = running.login.password_free_failures;
        self.login.password_max_delay_seconds = running.login.password_max_delay_seconds;
        self.login.max_pending_per_address = running.login.max_pending_per_address;
        self.login.password_account_free_failures = running.login.password_account_free_failures;
        self.login.password_account_max_delay_seconds =
            running.login.password_account_max_delay_seconds;
        self.login.max_pending_total = running.login.max_pending_total;
        self.otp = running.otp.clone();
        self.sandbox = running.sandbox.clone();
        self.sms = running.sms.clone();
        self.http = running.http.clone();
        self.oidc.signing_key_file = running.oidc.signing_key_file.clone();
        self.log = running.log.clone();
        self.store = running.store.clone();
        self.directory = running.directory.clone();
        self.admin = running.admin.clone();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("gatehouse.toml"), text).unwrap()
    }

    #[test]
    fn provider_url_and_token_edits_are_named_by_key() {
        let before = "[sms]\nprovider = \"gw\"\n[sms.providers.gw]\ntype = \"http\"\nurl = \"https://a.example/send\"\n[sms.providers.tw]\ntype = \"twilio\"\naccount_sid = \"AC1\"\nauth_token = \"t1\"\nfrom = \"+15550001\"\n";
        let after = before
            .replace("https://a.example/send", "https://b.example/send")
            .replace("\"t1\"", "\"t2\"");
        assert_eq!(
            restart_only_changes(&parse(before), &parse(&after)),
            ["sms.providers.gw.url", "sms.providers.tw.auth_token"]
        );
        assert!(restart_only_changes(&parse(before), &parse(before)).is_empty());
        let applied = parse(&after).with_restart_only_values_of(&parse(before));
        assert!(restart_only_changes(&parse(before), &applied).is_empty());
    }

    #[test]
    fn script_and_client_edits_apply_without_restart() {
        let before = "[[scripts]]\nacr = \"a\"\nfile = \"a.rhai\"\n";
        let after = "[[scripts]]\nacr = \"a\"\nfile = \"a.rhai\"\nenabled = false\n[login]\ndefault_acr = \"a\"\n";
        assert!(restart_only_changes(&parse(before), &parse(after)).is_empty());
    }
}
