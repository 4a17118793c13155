//! Randomness from the operating system's CSPRNG: codes, login handles, correlation ids.

use std::fmt::Write;

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

fn fill(buf: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
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
    Ok(buf
        .iter()
        .fold(String::with_capacity(bytes * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }))
}

pub fn key32() -> Result<[u8; 32], RandomError> {
    let mut key = [0u8; 32];
    fill(&mut key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
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
