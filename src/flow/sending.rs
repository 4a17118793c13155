//! Guards around every SMS the host sends: phone numbers parsed and normalised to E.164 (never
//! guessed), destination countries by prefix allow-list, and sending limits per login, per
//! number, per client address and per day, all counted in the state store. Each limit is checked
//! and counted in one atomic store update, so instances sharing a store share every limit.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::base::phone::{LineKind, Phone, Region};
use crate::base::{store_keys, SharedClock};
use crate::config::SmsConfig;
use crate::ports::{counter_value, StateStore, StoreError, StoreUpdate};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

#[derive(Debug, Clone)]
pub struct SendLimits {
    /// Region for numbers written without a country code; none: such numbers are refused.
    pub default_region: Option<Region>,
    /// E.164 prefixes that may receive messages ("+44", "+1").
    pub allowed_prefixes: Vec<String>,
    /// ISO regions that may receive messages (either list admits).
    pub allowed_regions: Vec<String>,
    /// Prefixes that never receive messages.
    pub denied_prefixes: Vec<String>,
    /// Test and drama ranges (only "possible" numbers) may receive messages.
    pub allow_test_numbers: bool,
    pub per_login: u32,
    /// Wait before the second send of a login; it doubles for each further one.
    pub resend_cooldown_seconds: u64,
    pub per_number_per_hour: u32,
    pub per_number_per_day: u32,
    pub per_address_per_hour: u32,
    pub daily_budget: u32,
    /// Messages per UTC day to one destination region, within `daily_budget`.
    pub daily_budget_per_region: std::collections::BTreeMap<String, u32>,
    /// Trailing digits shown when a number is masked for a page or a log line (0 to 4).
    pub visible_digits: usize,
}

impl SendLimits {
    /// The limits of `[sms]` (validated at load).
    pub fn from_config(sms: &SmsConfig) -> SendLimits {
        SendLimits {
            default_region: sms.default_region.as_deref().and_then(Region::parse),
            allowed_prefixes: sms.allowed_prefixes.clone(),
            allowed_regions: sms.allowed_regions.clone(),
            denied_prefixes: sms.denied_prefixes.clone(),
            allow_test_numbers: sms.allow_test_numbers,
            per_login: sms.max_sends_per_login as u32,
            resend_cooldown_seconds: sms.resend_cooldown_seconds as u64,
            per_number_per_hour: sms.per_number_per_hour as u32,
            per_number_per_day: sms.per_number_per_day as u32,
            per_address_per_hour: sms.per_address_per_hour as u32,
            daily_budget: sms.daily_budget as u32,
            daily_budget_per_region: sms
                .daily_budget_per_region
                .iter()
                .map(|(region, budget)| (region.clone(), *budget as u32))
                .collect(),
            visible_digits: sms.visible_digits as usize,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a phone number this server accepts: {0}")]
    BadNumber(&'static str),
    #[error(
        "the destination country is not in [sms] allowed_prefixes or allowed_regions, or is denied"
    )]
    Country,
    #[error("{0} cannot receive text messages")]
    Line(&'static str),
    #[error("{what}: try again in {retry_after_seconds} s")]
    Throttled {
        /// Which limit, as a fixed word (`gatehouse_sms_refused_total{reason}`).
        reason: &'static str,
        what: &'static str,
        retry_after_seconds: u64,
    },
}

impl Refusal {
    /// A fixed word for the metrics (`gatehouse_sms_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadNumber(_) => "bad_number",
            Refusal::Country => "country",
            Refusal::Line(_) => "line_type",
            Refusal::Throttled { reason, .. } => reason,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses a number as written in a user attribute or a form into E.164, or refuses it.
pub fn normalize(raw: &str, default_region: Option<Region>) -> Result<Phone, Refusal> {
    Phone::parse(raw, default_region).map_err(Refusal::BadNumber)
}

pub struct SendGuard {
    store: Arc<dyn StateStore>,
    limits: SendLimits,
    clock: SharedClock,
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
    pub fn new(store: Arc<dyn StateStore>, limits: SendLimits, clock: SharedClock) -> Self {
        SendGuard {
            store,
            limits,
            clock,
        }
    }

    /// Whether this refusal is the first to find the budget of `alert_key` (one per budget and
    /// day) spent: the alert is logged once a day, by one instance, however many share the store.
    fn first_to_alert(&self, alert_key: &str) -> Result<bool, StoreError> {
        let mut first = false;
        self.store.update(
            alert_key,
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
        crate::base::phone::mask_phone_showing(number, self.limits.visible_digits)
    }

    pub fn normalize(&self, raw: &str) -> Result<Phone, Refusal> {
        normalize(raw, self.limits.default_region)
    }

    /// Whether `number` may receive a message: not denied, its region or prefix allowed, and a
    /// line that receives text messages (mobile; fixed-or-mobile where the region cannot tell).
    pub fn check_destination(&self, number: &Phone) -> Result<(), Refusal> {
        let limits = &self.limits;
        let admitted = number.has_prefix_in(&limits.allowed_prefixes)
            || number
                .region()
                .is_some_and(|region| limits.allowed_regions.iter().any(|r| r == region));
        if !admitted || number.has_prefix_in(&limits.denied_prefixes) {
            return Err(Refusal::Country);
        }
        match number.kind() {
            LineKind::Mobile | LineKind::FixedLineOrMobile => Ok(()),
            LineKind::TestRange if limits.allow_test_numbers => Ok(()),
            LineKind::TestRange => Err(Refusal::Line(
                "a test-range number ([sms] allow_test_numbers is off)",
            )),
            LineKind::Other(what) => Err(Refusal::Line(what)),
        }
    }

    /// Checks every limit for one send and, if all allow it, counts it. Each limit is one atomic
    /// update that admits and counts together; when a later limit refuses, the sends counted by
    /// the earlier ones are taken back, so a refused send counts nowhere.
    pub fn admit(
        &self,
        login_handle: &str,
        number: &Phone,
        client: Option<IpAddr>,
    ) -> Result<(), SendError> {
        let limits = &self.limits;
        let now = self.clock.now_ms();
        let day = now / DAY_MS;
        let mut counted: Vec<(String, Duration)> = Vec::new();
        let result = self.admit_each(login_handle, number, client, now, day, &mut counted);
        if result.is_err() {
            for (key, keep) in counted {
                self.uncount(&key, keep, now)?;
            }
        }
        if let Err(SendError::Refused(Refusal::Throttled { what, .. })) = &result {
            if *what == PAUSED && self.first_to_alert(&store_keys::budget_alert(day))? {
                tracing::error!(target: "server", "ALERT: the daily SMS budget of {} messages is spent: sending is paused until 00:00 UTC", limits.daily_budget);
            }
        }
        result
    }

    fn admit_each(
        &self,
        login_handle: &str,
        number: &Phone,
        client: Option<IpAddr>,
        now: u64,
        day: u64,
        counted: &mut Vec<(String, Duration)>,
    ) -> Result<(), SendError> {
        let limits = &self.limits;
        let throttled = |reason, what, retry_after_seconds| {
            SendError::Refused(Refusal::Throttled {
                reason,
                what,
                retry_after_seconds,
            })
        };
        let per_login = limits.per_login;
        let cooldown_seconds = limits.resend_cooldown_seconds;
        // Only the newest `cap` sends can decide a window of that limit: older ones are dropped,
        // so a record never grows past its limit.
        let key = store_keys::sent_by_login(login_handle);
        let keep = Duration::from_millis(DAY_MS);
        let refused = self.count_if(&key, keep, per_login, now, |login| {
            if login.len() as u32 >= per_login {
                // No wait helps here: only a new login (whose sends count elsewhere).
                return Some(throttled(
                    "per_login",
                    "the most codes one login may send were sent; start again",
                    0,
                ));
            }
            let last = login.last()?;
            let cooldown = cooldown_seconds.saturating_mul(1 << (login.len() - 1).min(16)) * 1000;
            (now < last + cooldown).then(|| {
                throttled(
                    "cooldown",
                    "a new code can be sent after a short wait",
                    (last + cooldown - now).div_ceil(1000),
                )
            })
        })?;
        refused.map_or(Ok(()), Err)?;
        counted.push((key, keep));

        let key = store_keys::sent_to_number(number.as_str());
        let cap = limits.per_number_per_hour.max(limits.per_number_per_day);
        let refused = self.count_if(&key, keep, cap, now, |sent| {
            if let Some(wait) = window_wait(sent, now, HOUR_MS, limits.per_number_per_hour) {
                return Some(throttled(
                    "per_number",
                    "too many codes were sent to this number in the last hour",
                    wait,
                ));
            }
            window_wait(sent, now, DAY_MS, limits.per_number_per_day).map(|wait| {
                throttled(
                    "per_number",
                    "too many codes were sent to this number today",
                    wait,
                )
            })
        })?;
        refused.map_or(Ok(()), Err)?;
        counted.push((key, keep));

        if let Some(ip) = client {
            let key = store_keys::sent_from_address(&ip);
            let keep = Duration::from_millis(HOUR_MS);
            let refused = self.count_if(&key, keep, limits.per_address_per_hour, now, |sent| {
                window_wait(sent, now, HOUR_MS, limits.per_address_per_hour).map(|wait| {
                    throttled(
                        "per_address",
                        "too many codes were requested from this address in the last hour",
                        wait,
                    )
                })
            })?;
            refused.map_or(Ok(()), Err)?;
            counted.push((key, keep));
        }

        let until_tomorrow = ((day + 1) * DAY_MS - now).div_ceil(1000);
        let region_budget = number
            .region()
            .and_then(|region| Some((region, *limits.daily_budget_per_region.get(region)?)));
        if let Some((region, budget)) = region_budget {
            let key = store_keys::sent_on_day_to_region(day, region);
            if !self.take_daily(&key, budget)? {
                if self.first_to_alert(&store_keys::budget_alert_for_region(day, region))? {
                    tracing::error!(target: "server", "ALERT: the daily SMS budget for {region} ([sms] daily_budget_per_region, {budget} messages) is spent: sending there is paused until 00:00 UTC");
                }
                return Err(throttled(
                    "region_budget",
                    PAUSED_FOR_REGION,
                    until_tomorrow,
                ));
            }
            if !self.take_daily(&store_keys::sent_on_day(day), limits.daily_budget)? {
                self.give_back_daily(&key)?;
                return Err(throttled("budget", PAUSED, until_tomorrow));
            }
            return Ok(());
        }
        if !self.take_daily(&store_keys::sent_on_day(day), limits.daily_budget)? {
            return Err(throttled("budget", PAUSED, until_tomorrow));
        }
        Ok(())
    }

    /// Messages counted against today's (UTC) budget so far, and the budget.
    pub fn budget_today(&self) -> Result<(u32, u32), StoreError> {
        let day = self.clock.now_ms() / DAY_MS;
        let spent = counter_value(self.store.get(&store_keys::sent_on_day(day))?.as_deref());
        Ok((
            spent.clamp(0, i64::from(u32::MAX)) as u32,
            self.limits.daily_budget,
        ))
    }

    /// Counts one message against the day counter at `key` unless `budget` is spent (then false).
    /// A store counter: every node's sends hit the same key at once, and a counter never loses
    /// to another writer (an optimistic update would retry, and under a burst give up).
    fn take_daily(&self, key: &str, budget: u32) -> Result<bool, StoreError> {
        let keep = Duration::from_millis(DAY_MS + HOUR_MS);
        if self.store.add(key, 1, keep)? > i64::from(budget) {
            self.store.add(key, -1, keep)?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Takes back one message counted by [`SendGuard::take_daily`] (a later budget refused it).
    fn give_back_daily(&self, key: &str) -> Result<(), StoreError> {
        self.store
            .add(key, -1, Duration::from_millis(DAY_MS + HOUR_MS))
            .map(|_| ())
    }

    /// One atomic update of the send record at `key`: `refuse` looks at the recent sends; when it
    /// finds nothing to refuse, this send is counted. The closure may run more than once (a
    /// shared store retries), so it only reads its input and overwrites its output.
    fn count_if(
        &self,
        key: &str,
        keep: Duration,
        cap: u32,
        now: u64,
        refuse: impl Fn(&[u64]) -> Option<SendError>,
    ) -> Result<Option<SendError>, SendError> {
        let mut refused = None;
        self.store.update(key, Some(keep), &mut |current| {
            let mut list = stamps(current);
            list.retain(|t| now < t + keep.as_millis() as u64);
            refused = refuse(&list);
            if refused.is_some() {
                return StoreUpdate::Keep;
            }
            list.push(now);
            let excess = list.len().saturating_sub(cap.max(1) as usize);
            list.drain(..excess);
            StoreUpdate::Put(serde_json::to_vec(&list).expect("timestamps serialise"))
        })?;
        Ok(refused)
    }

    /// Takes back one send counted at `now` (a later limit refused it).
    fn uncount(&self, key: &str, keep: Duration, now: u64) -> Result<(), StoreError> {
        self.store.update(key, Some(keep), &mut |current| {
            let mut list = stamps(current);
            match list.iter().rposition(|&t| t == now) {
                Some(i) => {
                    list.remove(i);
                    StoreUpdate::Put(serde_json::to_vec(&list).expect("timestamps serialise"))
                }
                None => StoreUpdate::Keep,
            }
        })
    }
}

/// What a refusal says while the daily budget is spent.
const PAUSED: &str = "sending is paused for today";
const PAUSED_FOR_REGION: &str = "sending to this country is paused for today";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_normalised_or_refused() {
        assert_eq!(
            normalize("+44 7700 900123", None).unwrap().as_str(),
            "+447700900123"
        );
        assert_eq!(
            normalize("07700 900123", Region::parse("GB"))
                .unwrap()
                .as_str(),
            "+447700900123"
        );
        assert_eq!(
            normalize("(202) 555-0143", Region::parse("US"))
                .unwrap()
                .as_str(),
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
        assert!(normalize("12", Region::parse("GB")).is_err());
    }

    #[test]
    fn window_waits() {
        let now = 10 * HOUR_MS;
        let stamps = [now - 50 * 60_000, now - 40 * 60_000, now - 10 * 60_000];
        assert_eq!(window_wait(&stamps, now, HOUR_MS, 4), None);
        assert_eq!(window_wait(&stamps, now, HOUR_MS, 3), Some(10 * 60));
    }
}
