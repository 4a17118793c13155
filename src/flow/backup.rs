//! Backup codes: ten single-use codes an operator prints for a user, kept only as argon2id hashes
//! in the user's `gatehouseBackupCodes` attribute, accepted on the passcode page when the
//! script's `BackupCode` option is on.

use crate::flow::random::{self, RandomError};
use crate::secret::Secret;
use crate::users::password::{hash_password, HashError};

pub const ATTRIBUTE: &str = "gatehouseBackupCodes";
pub const COUNT: usize = 10;
/// Letters and digits without look-alikes; a code is 10 of them (about 49 bits), shown as XXXXX-XXXXX.
const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
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
pub fn normalise(submitted: &str) -> Option<String> {
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
        assert_eq!(normalise("abcde-fghjk").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(normalise("ABCDE FGHJK").as_deref(), Some("ABCDEFGHJK"));
        assert_eq!(normalise("123456"), None);
        assert_eq!(
            normalise("ABCDE-FGHI0"),
            None,
            "I and 0 are not in the alphabet"
        );
    }
}
