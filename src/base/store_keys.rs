//! The one place that knows the names of state-store keys. Every key starts with [`NAMESPACE`],
//! so a shared store (Redis) can hold Gatehouse beside other data, and a key's family is visible
//! at a glance. Values are hashes or opaque handles, never a code or a password.

/// The prefix of every key Gatehouse writes.
pub const NAMESPACE: &str = "gh:";

/// A login in progress, by its handle.
pub fn login(handle: &str) -> String {
    format!("{NAMESPACE}login:{handle}")
}

/// The one-time code of a login (a keyed hash of it).
pub fn code(login_handle: &str) -> String {
    format!("{NAMESPACE}otp:{login_handle}")
}

/// An account's SMS-factor record: consecutive wrong codes, lock, and (for phone-number
/// subjects, which have no directory entry) the disable.
pub fn sms_factor(account: &str) -> String {
    format!("{NAMESPACE}smsfactor:{account}")
}

/// Sends of one login.
pub fn sent_by_login(login_handle: &str) -> String {
    format!("{NAMESPACE}sent:login:{login_handle}")
}

/// Sends to one number.
pub fn sent_to_number(e164: &str) -> String {
    format!("{NAMESPACE}sent:number:{e164}")
}

/// Sends asked for from one client address.
pub fn sent_from_address(ip: &std::net::IpAddr) -> String {
    format!("{NAMESPACE}sent:address:{ip}")
}

/// Wrong or missing admin API tokens from one client address.
pub fn admin_auth_failures_from_address(ip: &std::net::IpAddr) -> String {
    format!("{NAMESPACE}adminauth:{ip}")
}

/// Sends of one UTC day (the budget).
pub fn sent_on_day(day: u64) -> String {
    format!("{NAMESPACE}sent:day:{day}")
}

pub fn sent_on_day_to_region(day: u64, region: &str) -> String {
    format!("{NAMESPACE}sent:day:{day}:{region}")
}

/// The marker that the budget alert of `day` was logged.
pub fn budget_alert(day: u64) -> String {
    format!("{NAMESPACE}sms:budget-alert:{day}")
}

pub fn budget_alert_for_region(day: u64, region: &str) -> String {
    format!("{NAMESPACE}sms:budget-alert:{day}:{region}")
}

/// Wrong passwords of one account.
pub fn password_failures_of_account(username: &str) -> String {
    format!("{NAMESPACE}pwfail:user:{username}")
}

/// Wrong passwords for one account from one client address.
pub fn password_failures_of_pair(username: &str, ip: &std::net::IpAddr) -> String {
    format!("{NAMESPACE}pwfail:pair:{ip}:{username}")
}

/// Wrong passwords from one client address.
pub fn password_failures_from_address(ip: &std::net::IpAddr) -> String {
    format!("{NAMESPACE}pwfail:ip:{ip}")
}

/// Failed client authentications at the token endpoint, per client id.
pub fn client_auth_failures_of_client(client_id: &str) -> String {
    format!("{NAMESPACE}clientfail:client:{client_id}")
}

/// Failed client authentications at the token endpoint, per client address.
pub fn client_auth_failures_from_address(ip: &std::net::IpAddr) -> String {
    format!("{NAMESPACE}clientfail:ip:{ip}")
}

/// Sign-ins started from one client address (its limit bucket) in window number `window`, and
/// not finished (a counter).
pub fn pending_from_address(ip: &std::net::IpAddr, window: u64) -> String {
    format!("{NAMESPACE}pending:ip:{ip}:{window}")
}

/// Sign-ins started in all in window number `window`, and not finished (a counter).
pub fn pending_total(window: u64) -> String {
    format!("{NAMESPACE}pending:total:{window}")
}

/// A browser session, by the hash of its id.
pub fn session(id_hash: &str) -> String {
    format!("{NAMESPACE}session:{id_hash}")
}

/// An authorization code, by its hash.
pub fn authorization_code(code_hash: &str) -> String {
    format!("{NAMESPACE}code:{code_hash}")
}

/// A redeemed authorization code, by its hash (a replay revokes what it gave).
pub fn redeemed_code(code_hash: &str) -> String {
    format!("{NAMESPACE}code-used:{code_hash}")
}

/// An access token, by its hash.
pub fn access_token(token_hash: &str) -> String {
    format!("{NAMESPACE}access:{token_hash}")
}
