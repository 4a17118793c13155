//! Backup codes: ten single-use codes an operator prints for a user, kept only as argon2id hashes
//! in the user's `gatehouseBackupCodes` attribute, accepted on the passcode page when the
//! script's `BackupCode` option is on.

use crate::base::password::{hash_password, HashError};
use crate::base::random::{self, RandomError};
use crate::base::Secret;
use crate::flow::otp::ALPHANUMERIC as ALPHABET;

pub const ATTRIBUTE: &str = "gatehouseBackupCodes";
pub const COUNT: usize = 10;
/// A code is 10 letters and digits without look-alikes (about 49 bits), shown as XXXXX-XXXXX.
const LENGTH: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// New codes, as shown to the user, and their hashes, as stored.
pub fn generate() -> Result<(Vec<String>, Vec<String>), BackupError> {
    let mut shown = Vec::with_capacity(COUNT);
    let mut stored = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let code = random::from_alphabet(LENGTH, ALPHABET)?;
        stored.push(hash_password(&Secret::new(code.clone()))?);
        shown.push(format!("{}-{}", &code[..5], &code[5..]));
    }
    Ok((shown, stored))
}

/// The code as stored (upper case, no dash or spaces), or `None` if it cannot be a backup code.
pub fn normalize(submitted: &str) -> Option<String> {
    let code: String = submitted
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_ascii_uppercase();
    (code.len() == LENGTH && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_look_like_backup_codes_and_sms_codes_do_not() {
        assert_eq!(normalize("abcde-fghjk").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(normalize("ABCDE FGHJK").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(normalize("123456"), None);
        assert_eq!(
            normalize("ABCDE-FGHI0"),
            None,
            "I and 0 are not in the alphabet"
        );
    }
}
