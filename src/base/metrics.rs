//! The server's Prometheus metrics (prometheus-client): one [`Metrics`] per instance, handed to
//! every part that counts something, rendered by the admin listener's `/metrics`.
//!
//! Label values are bounded: configured acrs, configured provider names, hook names and fixed
//! outcome and reason words. Never a user, a number, an address or a message id.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcrOutcome {
    acr: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcome {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderState {
    provider: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderStatus {
    provider: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AcrHook {
    acr: String,
    hook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

type Seconds = Family<ProviderLabel, Histogram, fn() -> Histogram>;
type HookSeconds = Family<AcrHook, Histogram, fn() -> Histogram>;

fn sms_buckets() -> Histogram {
    // 10 ms .. ~20 s
    Histogram::new(exponential_buckets(0.01, 2.0, 12))
}

fn hook_buckets() -> Histogram {
    // 50 us .. ~3 s
    Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
}

/// What the server counts. Cheap to record from any thread.
pub struct Metrics {
    registry: Registry,
    logins: Family<AcrOutcome, Counter>,
    code_checks: Family<AcrOutcome, Counter>,
    sms_sent: Family<ProviderOutcome, Counter>,
    sms_send_seconds: Seconds,
    sms_refused: Family<Reason, Counter>,
    sms_delivery: Family<ProviderStatus, Counter>,
    script_reloads: Family<AcrOutcome, Counter>,
    hook_seconds: HookSeconds,
    hook_failures: Family<AcrHook, Counter>,
    sms_factor_locks: Counter,
    admin_auth_failures: Counter,
    sign_ins_in_flight: Gauge<i64, AtomicI64>,
    sms_sent_today: Gauge<i64, AtomicI64>,
    sms_daily_budget: Gauge<i64, AtomicI64>,
    scripts: Family<StateLabel, Gauge>,
    circuits: Family<ProviderState, Gauge>,
}

/// Values read when `/metrics` is asked for (the gauges).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sign_ins_in_flight: i64,
    /// Messages counted against today's (UTC) budget, and `[sms] daily_budget`.
    pub sms_sent_today: i64,
    pub sms_daily_budget: i64,
    /// Scripts by state ("active", "degraded", "failed", "disabled").
    pub scripts: Vec<(&'static str, i64)>,
    /// Each provider's circuit breaker state ("closed", "open", "half_open").
    pub circuits: Vec<(String, &'static str)>,
}

pub const CIRCUIT_STATES: [&str; 3] = ["closed", "open", "half_open"];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let logins = Family::default();
        registry.register(
            "logins",
            "Login step submissions by acr and outcome: success (the sign-in completed), failure (a step refused the answer), unavailable (store or directory down), error",
            Family::clone(&logins),
        );
        let code_checks = Family::default();
        registry.register(
            "code_checks",
            "Passcodes checked by the host, by acr and outcome (right, wrong, expired, locked)",
            Family::clone(&code_checks),
        );
        let sms_sent = Family::default();
        registry.register(
            "sms_sent",
            "Messages handed to a provider, by provider and outcome (accepted, refused, not_sent, failed)",
            Family::clone(&sms_sent),
        );
        let sms_send_seconds: Seconds = Family::new_with_constructor(sms_buckets);
        registry.register(
            "sms_send_seconds",
            "Time a provider took to answer a send",
            Family::clone(&sms_send_seconds),
        );
        let sms_refused = Family::default();
        registry.register(
            "sms_refused",
            "Sends refused by the sending policy, by reason",
            Family::clone(&sms_refused),
        );
        let sms_delivery = Family::default();
        registry.register(
            "sms_delivery",
            "Delivery receipts from providers (Twilio status callbacks), by provider and status",
            Family::clone(&sms_delivery),
        );
        let script_reloads = Family::default();
        registry.register(
            "script_reloads",
            "Script (re)loads, by acr and outcome (loaded, failed)",
            Family::clone(&script_reloads),
        );
        let hook_seconds: HookSeconds = Family::new_with_constructor(hook_buckets);
        registry.register(
            "hook_seconds",
            "Time spent in script hooks, by acr and hook",
            Family::clone(&hook_seconds),
        );
        let hook_failures = Family::default();
        registry.register(
            "hook_failures",
            "Hook calls that failed at run time (the script's failures: not outages of the store or directory, not refusals by an account's policy), by acr and hook",
            Family::clone(&hook_failures),
        );
        let sms_factor_locks = Counter::default();
        registry.register(
            "sms_factor_locks",
            "Accounts whose SMS factor was locked (or disabled) after wrong codes",
            sms_factor_locks.clone(),
        );
        let admin_auth_failures = Counter::default();
        registry.register(
            "admin_auth_failures",
            "Admin API requests refused for a missing or wrong token",
            admin_auth_failures.clone(),
        );
        let sign_ins_in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "sign_ins_in_flight",
            "Sign-ins started and not finished (the admission window's count)",
            sign_ins_in_flight.clone(),
        );
        let sms_sent_today = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "sms_sent_today",
            "Messages counted against today's (UTC) SMS budget, every node's with a shared store",
            sms_sent_today.clone(),
        );
        let sms_daily_budget = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "sms_daily_budget",
            "[sms] daily_budget: messages per UTC day for the whole server",
            sms_daily_budget.clone(),
        );
        let scripts = Family::default();
        registry.register(
            "scripts",
            "Configured scripts by state",
            Family::clone(&scripts),
        );
        let circuits = Family::default();
        registry.register(
            "sms_provider_circuit",
            "Each SMS provider's circuit breaker: 1 for its current state",
            Family::clone(&circuits),
        );
        Metrics {
            registry,
            logins,
            code_checks,
            sms_sent,
            sms_send_seconds,
            sms_refused,
            sms_delivery,
            script_reloads,
            hook_seconds,
            hook_failures,
            sms_factor_locks,
            admin_auth_failures,
            sign_ins_in_flight,
            sms_sent_today,
            sms_daily_budget,
            scripts,
            circuits,
        }
    }

    pub fn login(&self, acr: &str, outcome: &'static str) {
        self.logins
            .get_or_create(&AcrOutcome {
                acr: acr.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn code_check(&self, acr: &str, outcome: &'static str) {
        self.code_checks
            .get_or_create(&AcrOutcome {
                acr: acr.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn sms_send(&self, provider: &str, outcome: &'static str, seconds: f64) {
        let provider = provider.to_owned();
        self.sms_send_seconds
            .get_or_create(&ProviderLabel {
                provider: provider.clone(),
            })
            .observe(seconds);
        self.sms_sent
            .get_or_create(&ProviderOutcome { provider, outcome })
            .inc();
    }

    pub fn sms_refused(&self, reason: &'static str) {
        self.sms_refused.get_or_create(&Reason { reason }).inc();
    }

    pub fn sms_delivery(&self, provider: &str, status: &'static str) {
        self.sms_delivery
            .get_or_create(&ProviderStatus {
                provider: provider.to_owned(),
                status,
            })
            .inc();
    }

    pub fn script_reload(&self, acr: &str, loaded: bool) {
        self.script_reloads
            .get_or_create(&AcrOutcome {
                acr: acr.to_owned(),
                outcome: if loaded { "loaded" } else { "failed" },
            })
            .inc();
    }

    pub fn hook(&self, acr: &str, hook: &'static str, seconds: f64, failed: bool) {
        let labels = AcrHook {
            acr: acr.to_owned(),
            hook,
        };
        self.hook_seconds.get_or_create(&labels).observe(seconds);
        if failed {
            self.hook_failures.get_or_create(&labels).inc();
        }
    }

    pub fn sms_factor_locked(&self) {
        self.sms_factor_locks.inc();
    }

    pub fn admin_auth_failed(&self) {
        self.admin_auth_failures.inc();
    }

    /// The text exposition (OpenMetrics), with the gauges set from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        self.sign_ins_in_flight.set(snapshot.sign_ins_in_flight);
        self.sms_sent_today.set(snapshot.sms_sent_today);
        self.sms_daily_budget.set(snapshot.sms_daily_budget);
        for (state, count) in &snapshot.scripts {
            self.scripts
                .get_or_create(&StateLabel { state })
                .set(*count);
        }
        for (provider, current) in &snapshot.circuits {
            for state in CIRCUIT_STATES {
                self.circuits
                    .get_or_create(&ProviderState {
                        provider: provider.clone(),
                        state,
                    })
                    .set(i64::from(state == *current));
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_labels() {
        let metrics = Metrics::new();
        metrics.login("sms_otp", "success");
        metrics.code_check("sms_otp", "wrong");
        metrics.sms_send("twilio", "accepted", 0.2);
        metrics.sms_refused("per_number");
        metrics.script_reload("sms_otp", true);
        metrics.hook("sms_otp", "authenticate", 0.001, true);
        metrics.sms_factor_locked();
        let text = metrics.render(&Snapshot {
            sign_ins_in_flight: 7,
            scripts: vec![("active", 2), ("disabled", 1)],
            circuits: vec![("twilio".into(), "open")],
            sms_sent_today: 12,
            sms_daily_budget: 100,
        });
        for line in [
            "gatehouse_logins_total{acr=\"sms_otp\",outcome=\"success\"} 1",
            "gatehouse_code_checks_total{acr=\"sms_otp\",outcome=\"wrong\"} 1",
            "gatehouse_sms_sent_total{provider=\"twilio\",outcome=\"accepted\"} 1",
            "gatehouse_sms_send_seconds_count{provider=\"twilio\"} 1",
            "gatehouse_sms_refused_total{reason=\"per_number\"} 1",
            "gatehouse_script_reloads_total{acr=\"sms_otp\",outcome=\"loaded\"} 1",
            "gatehouse_hook_seconds_count{acr=\"sms_otp\",hook=\"authenticate\"} 1",
            "gatehouse_hook_failures_total{acr=\"sms_otp\",hook=\"authenticate\"} 1",
            "gatehouse_sms_factor_locks_total 1",
            "gatehouse_sign_ins_in_flight 7",
            "gatehouse_sms_sent_today 12",
            "gatehouse_sms_daily_budget 100",
            "gatehouse_scripts{state=\"active\"} 2",
            "gatehouse_sms_provider_circuit{provider=\"twilio\",state=\"open\"} 1",
            "gatehouse_sms_provider_circuit{provider=\"twilio\",state=\"closed\"} 0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
