//! Randomness from the operating system's CSPRNG: codes, login handles, correlation ids.
//! Drawn in blocks of 256 bytes per thread (one system call per block rather than per token);
//! a byte handed out is wiped from the block at once.

use std::cell::RefCell;

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// Bytes of an id that names state (a session, a sign-in, a CSRF token): 128 bits, as 32 hex
/// digits. Authorization codes and access tokens, which are bearer secrets on their own, take
/// 256 bits.
pub const ID_BYTES: usize = 16;

/// `ID_BYTES` random bytes as hex: a session id, a sign-in handle, a CSRF token.
pub fn id_token() -> Result<String, RandomError> {
    hex_token(ID_BYTES)
}

/// Whether `value` has the form of [`id_token`]'s answers (lowercase hex, `ID_BYTES` long).
pub fn is_id_token(value: &str) -> bool {
    value.len() == ID_BYTES * 2
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

const BLOCK: usize = 256;

thread_local! {
    /// Unused random bytes of this thread, from `used` on.
    static POOL: RefCell<([u8; BLOCK], usize)> = const { RefCell::new(([0; BLOCK], BLOCK)) };
}

fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    if buf.len() > BLOCK {
        return getrandom::fill(buf).map_err(|e| RandomError(e.to_string()));
    }
    POOL.with(|pool| {
        let (block, used) = &mut *pool.borrow_mut();
        let mut written = 0;
        while written < buf.len() {
            if *used == BLOCK {
                getrandom::fill(block).map_err(|e| RandomError(e.to_string()))?;
                *used = 0;
            }
            let take = (buf.len() - written).min(BLOCK - *used);
            buf[written..written + take].copy_from_slice(&block[*used..*used + take]);
            block[*used..*used + take].fill(0);
            *used += take;
            written += take;
        }
        Ok(())
    })
}

/// A random number below `bound` (jitter; a small modulo bias does not matter there). Zero when
/// the bound is zero or the system has no randomness to give.
pub fn below(bound: u64) -> u64 {
    let mut bytes = [0u8; 8];
    match (bound, fill(&mut bytes)) {
        (0, _) | (_, Err(_)) => 0,
        (bound, Ok(())) => u64::from_le_bytes(bytes) % bound,
    }
}

/// `count` uniformly random decimal digits (rejection sampling: no modulo bias).
pub fn digits(count: usize) -> Result<String, RandomError> {
    from_alphabet(count, b"0123456789")
}

/// `count` characters drawn uniformly from `alphabet` (at most 256 symbols), by rejection sampling.
pub fn from_alphabet(count: usize, alphabet: &[u8]) -> Result<String, RandomError> {
    let size = alphabet.len();
    assert!((1..=256).contains(&size), "alphabet of 1 to 256 symbols");
    // The largest multiple of `size` that fits in a byte: bytes at or above it are redrawn.
    let limit = 256 - 256 % size;
    let mut out = String::with_capacity(count);
    let mut buf = [0u8; 32];
    while out.len() < count {
        fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| usize::from(b) < limit) {
            if out.len() == count {
                break;
            }
            out.push(char::from(alphabet[usize::from(b) % size]));
        }
    }
    Ok(out)
}

/// `bytes` random bytes as lowercase hex.
pub fn hex_token(bytes: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf)?;
    Ok(super::digest::hex(&buf))
}

pub fn key32() -> Result<[u8; 32], RandomError> {
    let mut key = [0u8; 32];
    fill(&mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ_and_span_blocks() {
        let tokens: std::collections::HashSet<String> =
            (0..1000).map(|_| super::hex_token(32).unwrap()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(tokens.iter().all(|t| t.len() == 64));
        // Larger than a block: straight from the system.
        assert_eq!(super::hex_token(300).unwrap().len(), 600);
    }

    #[test]
    fn digits_are_digits_and_spread() {
        let sample = super::digits(10_000).unwrap();
        assert_eq!(sample.len(), 10_000);
        for d in '0'..='9' {
            let n = sample.chars().filter(|&c| c == d).count();
            assert!((800..1200).contains(&n), "digit {d} seen {n} times");
        }
    }
}
