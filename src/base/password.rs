//! argon2id password hashing and verification, bounded to the number of cores: each check costs
//! ~19 MiB and tens of milliseconds, so an unbounded burst would exhaust memory and threads.

use std::sync::{Condvar, Mutex, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier as _, SaltString};
use argon2::Argon2;

use crate::base::secret::Secret;

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// An argon2id PHC string for `password` with the library's recommended parameters.
pub fn hash_password(password: &Secret) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Counting gate: at most `permits` verifications run at once; the rest wait their turn.
struct Gate {
    free: Mutex<usize>,
    released: Condvar,
}

impl Gate {
    fn run<R>(&self, work: impl FnOnce() -> R) -> R {
        {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            while *free == 0 {
                free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
            }
            *free -= 1;
        }
        let result = work();
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.released.notify_one();
        result
    }
}

pub struct PasswordChecker {
    gate: Gate,
    /// Verified against when the user is unknown, so "no such user" costs what "wrong password" costs.
    decoy: OnceLock<String>,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        PasswordChecker::with_parallelism(cores)
    }
}

impl PasswordChecker {
    pub fn with_parallelism(permits: usize) -> Self {
        PasswordChecker {
            gate: Gate {
                free: Mutex::new(permits.max(1)),
                released: Condvar::new(),
            },
            decoy: OnceLock::new(),
        }
    }

    /// Checks `password` against a PHC string; `None` (unknown user, no password set) still
    /// spends the time of a check and answers false.
    pub fn verify(&self, phc: Option<&str>, password: &Secret) -> bool {
        let decoy = || {
            self.decoy
                .get_or_init(|| hash_password(&Secret::new("decoy")).unwrap_or_default())
                .as_str()
        };
        let (phc, real) = match phc {
            Some(phc) => (phc, true),
            None => (decoy(), false),
        };
        self.gate.run(|| {
            let Ok(parsed) = PasswordHash::new(phc) else {
                return false;
            };
            let ok = Argon2::default()
                .verify_password(password.expose().as_bytes(), &parsed)
                .is_ok();
            ok && real
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let checker = PasswordChecker::with_parallelism(1);
        let phc = hash_password(&Secret::new("wonderland")).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(checker.verify(Some(&phc), &Secret::new("wonderland")));
        assert!(!checker.verify(Some(&phc), &Secret::new("wonderland ")));
        assert!(!checker.verify(None, &Secret::new("decoy")));
        assert!(!checker.verify(Some("not a hash"), &Secret::new("x")));
    }
}
