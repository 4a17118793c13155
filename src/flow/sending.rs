//! Guards around every SMS the host sends: phone numbers parsed and normalised to E.164 (never
//! guessed), destination countries by prefix allow-list, and sending limits per login, per
//! number, per client address and per day, all counted in the state store.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ports::{StateStore, StoreError, StoreUpdate};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

#[derive(Debug, Clone)]
pub struct SendLimits {
    /// Region for numbers written without a country code (ISO 3166 code, e.g. "GB"); none: such
    /// numbers are refused.
    pub default_region: Option<String>,
    /// E.164 prefixes that may receive messages ("+44", "+1"). Empty: no destination at all.
    pub allowed_prefixes: Vec<String>,
    pub per_login: u32,
    /// Wait before the second send of a login; it doubles for each further one.
    pub resend_cooldown_seconds: u64,
    pub per_number_per_hour: u32,
    pub per_number_per_day: u32,
    pub per_address_per_hour: u32,
    pub daily_budget: u32,
    /// Trailing digits shown when a number is masked for a page or a log line (0 to 4).
    pub visible_digits: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a phone number this server accepts: {0}")]
    BadNumber(&'static str),
    #[error("the destination country is not in [sms] allowed_prefixes")]
    Country,
    #[error("{what}: try again in {retry_after_seconds} s")]
    Throttled {
        what: &'static str,
        retry_after_seconds: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Parses a number as written in a user attribute or a form into E.164, or refuses it.
pub fn normalize(raw: &str, default_region: Option<&str>) -> Result<String, Refusal> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(Refusal::BadNumber("empty"));
    }
    // Only what people write in one phone number: digits, a leading +, spaces, dots, dashes and
    // brackets. No "tel:" URIs, no lists, no letters, no extensions.
    if !raw
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '(' | ')'))
    {
        return Err(Refusal::BadNumber(
            "unexpected characters (one number, digits only)",
        ));
    }
    if raw.matches('+').count() > 1 || (raw.contains('+') && !raw.starts_with('+')) {
        return Err(Refusal::BadNumber("a + only at the start"));
    }
    let region = match (raw.starts_with('+'), default_region) {
        (true, _) => None,
        (false, Some(region)) => Some(
            region
                .parse::<phonenumber::country::Id>()
                .map_err(|_| Refusal::BadNumber("bad default region"))?,
        ),
        (false, None) => {
            return Err(Refusal::BadNumber(
                "no country code and no [sms] default_region",
            ))
        }
    };
    let number =
        phonenumber::parse(region, raw).map_err(|_| Refusal::BadNumber("cannot be parsed"))?;
    if number.extension().is_some() {
        return Err(Refusal::BadNumber(
            "extensions cannot receive text messages",
        ));
    }
    if !phonenumber::is_valid(&number) && !has_possible_length(&number) {
        return Err(Refusal::BadNumber(
            "not a number of its country (wrong length)",
        ));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// libphonenumber's "possible number": the national number has a length used in its country.
/// Accepted besides fully valid numbers so that ranges reserved for testing and drama
/// (+44 7700 900xxx, the demo's) work; the country code must still exist.
fn has_possible_length(number: &phonenumber::PhoneNumber) -> bool {
    let national = number.national();
    let digits = national.value().to_string().len() + usize::from(national.zeros());
    let code = number.country().code();
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return false;
    };
    regions.iter().any(|metadata| {
        let kinds = metadata.descriptors();
        [Some(kinds.general()), kinds.mobile(), kinds.fixed_line()]
            .into_iter()
            .flatten()
            .any(|kind| {
                kind.possible_length()
                    .iter()
                    .any(|&len| usize::from(len) == digits)
            })
    })
}

pub struct SendGuard {
    store: Arc<dyn StateStore>,
    limits: SendLimits,
}

/// Timestamps of recent sends, newest last.
fn stamps(bytes: Option<&[u8]>) -> Vec<u64> {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

/// Seconds until a window holding `count` sends of `stamps` has room again.
fn window_wait(stamps: &[u64], now: u64, window: u64, limit: u32) -> Option<u64> {
    let recent: Vec<u64> = stamps
        .iter()
        .copied()
        .filter(|t| now < t + window)
        .collect();
    if (recent.len() as u32) < limit {
        return None;
    }
    let oldest_that_matters = recent[recent.len() - limit as usize];
    Some((oldest_that_matters + window - now).div_ceil(1000).max(1))
}

impl SendGuard {
    pub fn new(store: Arc<dyn StateStore>, limits: SendLimits) -> Self {
        SendGuard { store, limits }
    }

    /// Whether this refusal is the first of `day` to find the budget spent: the alert is logged
    /// once a day, by one instance, however many share the store.
    fn first_to_alert(&self, day: u64) -> Result<bool, SendError> {
        let mut first = false;
        self.store.update(
            &format!("sms:budget-alert:{day}"),
            Some(Duration::from_millis(DAY_MS * 2)),
            &mut |current| {
                first = current.is_none();
                if first {
                    StoreUpdate::Put(b"1".to_vec())
                } else {
                    StoreUpdate::Keep
                }
            },
        )?;
        Ok(first)
    }

    /// `number` masked for a page or a log line, showing `[sms] visible_digits` digits.
    pub fn mask(&self, number: &str) -> String {
        crate::ports::mask_phone_showing(number, self.limits.visible_digits)
    }

    pub fn normalize(&self, raw: &str) -> Result<String, Refusal> {
        normalize(raw, self.limits.default_region.as_deref())
    }

    pub fn allowed(&self, e164: &str) -> bool {
        self.limits
            .allowed_prefixes
            .iter()
            .any(|p| e164.starts_with(p.as_str()))
    }

    fn get(&self, key: &str) -> Result<Vec<u64>, StoreError> {
        Ok(stamps(self.store.get(key)?.as_deref()))
    }

    /// Checks every limit for one send and, if all allow it, counts it.
    pub fn admit(
        &self,
        login_key: &str,
        e164: &str,
        client: Option<IpAddr>,
    ) -> Result<(), SendError> {
        let limits = &self.limits;
        let now = now_ms();
        let login_key = format!("sent:login:{login_key}");
        let number_key = format!("sent:number:{e164}");
        let address_key = client.map(|ip| format!("sent:address:{ip}"));
        let day = now / DAY_MS;
        let budget_key = format!("sent:day:{day}");
        let throttled = |what, retry_after_seconds| {
            SendError::Refused(Refusal::Throttled {
                what,
                retry_after_seconds,
            })
        };

        let login = self.get(&login_key)?;
        if login.len() as u32 >= limits.per_login {
            // No wait helps here: only a new login (whose sends count against the other limits).
            return Err(throttled(
                "the most codes one login may send were sent; start again",
                0,
            ));
        }
        if let Some(last) = login.last() {
            let cooldown = limits
                .resend_cooldown_seconds
                .saturating_mul(1 << (login.len() - 1).min(16))
                * 1000;
            if now < last + cooldown {
                return Err(throttled(
                    "a new code can be sent after a short wait",
                    (last + cooldown - now).div_ceil(1000),
                ));
            }
        }
        let number = self.get(&number_key)?;
        if let Some(wait) = window_wait(&number, now, HOUR_MS, limits.per_number_per_hour) {
            return Err(throttled(
                "too many codes were sent to this number in the last hour",
                wait,
            ));
        }
        if let Some(wait) = window_wait(&number, now, DAY_MS, limits.per_number_per_day) {
            return Err(throttled(
                "too many codes were sent to this number today",
                wait,
            ));
        }
        if let Some(key) = &address_key {
            if let Some(wait) =
                window_wait(&self.get(key)?, now, HOUR_MS, limits.per_address_per_hour)
            {
                return Err(throttled(
                    "too many codes were requested from this address in the last hour",
                    wait,
                ));
            }
        }
        let spent: u32 = self
            .store
            .get(&budget_key)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(0);
        if spent >= limits.daily_budget {
            if self.first_to_alert(day)? {
                tracing::error!(target: "server", "ALERT: the daily SMS budget of {} messages is spent: sending is paused until 00:00 UTC", limits.daily_budget);
            }
            return Err(throttled(
                "sending is paused for today",
                ((day + 1) * DAY_MS - now).div_ceil(1000),
            ));
        }
        // Only the newest `cap` sends can decide a window of that limit: older ones are dropped,
        // so a record never grows past its limit.
        let record = |key: &str, keep: Duration, cap: u32| {
            self.store.update(key, Some(keep), &mut |current| {
                let mut list = stamps(current);
                list.retain(|t| now < t + keep.as_millis() as u64);
                list.push(now);
                let excess = list.len().saturating_sub(cap.max(1) as usize);
                list.drain(..excess);
                StoreUpdate::Put(serde_json::to_vec(&list).expect("timestamps serialise"))
            })
        };
        record(&login_key, Duration::from_millis(DAY_MS), limits.per_login)?;
        record(
            &number_key,
            Duration::from_millis(DAY_MS),
            limits.per_number_per_hour.max(limits.per_number_per_day),
        )?;
        if let Some(key) = &address_key {
            record(
                key,
                Duration::from_millis(HOUR_MS),
                limits.per_address_per_hour,
            )?;
        }
        self.store.update(
            &budget_key,
            Some(Duration::from_millis(DAY_MS + HOUR_MS)),
            &mut |current| {
                let spent: u32 = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(0);
                StoreUpdate::Put(serde_json::to_vec(&(spent + 1)).expect("a number serialises"))
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_or_refused() {
        assert_eq!(normalize("+44 7700 900123", None).unwrap(), "+447700900123");
        assert_eq!(
            normalize("07700 900123", Some("GB")).unwrap(),
            "+447700900123"
        );
        assert_eq!(
            normalize("(202) 555-0143", Some("US")).unwrap(),
            "+12025550143"
        );
        for bad in [
            "tel:+447700900123",
            "+447700900123,+447700900124",
            "+44 7700 900123 / 07700900124",
            "07700 900123",
            "+44",
            "call me",
            "+44 (0) 7700 900123 ext 5",
            "++447700900123",
            "",
        ] {
            assert!(normalize(bad, None).is_err(), "{bad}");
        }
        assert!(normalize("12", Some("GB")).is_err());
    }

    #[test]
    fn window_waits() {
        let now = 10 * HOUR_MS;
        let stamps = [now - 50 * 60_000, now - 40 * 60_000, now - 10 * 60_000];
        assert_eq!(window_wait(&stamps, now, HOUR_MS, 4), None);
        assert_eq!(window_wait(&stamps, now, HOUR_MS, 3), Some(10 * 60));
    }
}
