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
    let mut out = String::with_capacity(count);
    let mut buf = [0u8; 32];
    while out.len() < count {
        fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| b < 250) {
            if out.len() == count {
                break;
            }
            out.push(char::from(b'0' + b % 10));
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
