//! What the user reads when a host policy decides: the texts in one place.

pub const DISABLED: &str =
    "Sign-in by text message is disabled for this account. Contact your administrator.";

/// The destination country is not in `[sms] allowed_prefixes`.
pub const COUNTRY_REFUSED: &str = "Text messages cannot be sent to this number.";

/// A login sent as many codes as it may.
pub const TOO_MANY_FOR_THIS_LOGIN: &str = "Too many codes were sent for this sign-in. Start again.";

/// A step failed and the script said nothing.
pub const DEFAULT_FAILURE: &str = "Failed to authenticate.";

pub const CODE_RESENT: &str = "A new code was sent.";

pub const CODE_NOT_RESENT: &str = "We could not send a new code. Please try again later.";

pub fn locked(seconds: u64) -> String {
    format!(
        "Too many wrong codes. Sign-in by text message is locked for {}.",
        in_minutes(seconds)
    )
}

pub fn too_many_sent(retry_after_seconds: u64) -> String {
    format!(
        "Too many codes were sent. Try again in {}.",
        in_minutes(retry_after_seconds)
    )
}

/// "1 minute", "15 minutes": a wait rounded up to whole minutes, for messages to users.
pub fn in_minutes(seconds: u64) -> String {
    match seconds.div_ceil(60) {
        1 => "1 minute".to_owned(),
        minutes => format!("{minutes} minutes"),
    }
}
