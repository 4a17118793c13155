//! The state-store contract a shared store (Redis) will hold Gatehouse to: an `update` closure
//! may run more than once, a code check is one store operation (both records) and no directory
//! read, and each sending limit admits and counts in one atomic update, so a burst gets no
//! more sends than the limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::base::phone::Phone;
use gatehouse::base::{ManualClock, SystemClock};
use gatehouse::flow::otp::OtpCheck;
use gatehouse::flow::sending::{SendGuard, SendLimits};
use gatehouse::ports::{PairDecision, StateStore, StoreError, StoreUpdate};
use gatehouse::store::MemoryStore;

use crate::support::*;

/// Runs every `update` closure twice on the same value and keeps the second answer, as a
/// shared store does when another writer got in first; counts every operation.
struct RetryingStore {
    inner: MemoryStore,
    operations: AtomicUsize,
}

impl RetryingStore {
    fn new() -> Self {
        RetryingStore {
            inner: MemoryStore::new(),
            operations: AtomicUsize::new(0),
        }
    }

    fn operations(&self) -> usize {
        self.operations.load(Ordering::SeqCst)
    }
}

impl StateStore for RetryingStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.operations.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }

    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        self.operations.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.operations.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key)
    }

    fn update(
        &self,
        key: &str,
        ttl: Option<Duration>,
        decide: &mut dyn FnMut(Option<&[u8]>) -> StoreUpdate,
    ) -> Result<(), StoreError> {
        self.operations.fetch_add(1, Ordering::SeqCst);
        // The first run loses the race: its answer is thrown away.
        let seen = self.inner.get(key)?;
        let _ = decide(seen.as_deref());
        self.inner.update(key, ttl, decide)
    }

    fn update_pair(
        &self,
        keys: [&str; 2],
        ttls: [Option<Duration>; 2],
        decide: &mut PairDecision<'_>,
    ) -> Result<(), StoreError> {
        self.operations.fetch_add(1, Ordering::SeqCst);
        let seen = [self.inner.get(keys[0])?, self.inner.get(keys[1])?];
        let _ = decide([seen[0].as_deref(), seen[1].as_deref()]);
        self.inner.update_pair(keys, ttls, decide)
    }
}

fn env_on(store: Arc<RetryingStore>) -> TestEnv {
    TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            store: Some(store),
            ..EnvOptions::default()
        },
    )
}

#[test]
fn sign_ins_work_when_every_update_closure_runs_twice() {
    let store = Arc::new(RetryingStore::new());
    let env = env_on(store.clone());
    // A wrong code, then the right one: the login is saved, counted and finished through
    // retried updates.
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    let wrong = if code.starts_with('1') {
        "222222"
    } else {
        "111111"
    };
    let retry = expect_retry(env.submit(&login, 2, &[("passcode", wrong)]).unwrap());
    assert_eq!(retry.step, 2);
    let done = expect_authenticated(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
    assert_eq!(done.user, "alice");
    assert_eq!(done.amr, ["pwd", "sms", "mfa"]);
    // A second login's send is counted once per limit, not once per run of the closure.
    env.pass_password(None);
    assert_eq!(env.sms.count(), 2);
}

#[test]
fn a_code_check_is_one_store_operation_and_no_directory_read() {
    let store = Arc::new(RetryingStore::new());
    let env = env_on(store.clone());
    let (context, code, wrong) = code_issued_to_alice(&env, &"a".repeat(64));
    // A broken user file makes any directory read log an error: the guesses must not.
    std::fs::write(env.root().join("config/users.toml"), "[users.alice\n").unwrap();
    env.app.log.scope(|| {
        for (guess, expected) in [
            (wrong, OtpCheck::Rejected { remaining: 4 }),
            (code.as_str(), OtpCheck::Accepted),
        ] {
            let before = store.operations();
            assert_eq!(context.verify_code(guess).unwrap(), expected);
            // The code and the account's record together (update_pair).
            assert_eq!(
                store.operations() - before,
                1,
                "{guess:?} cost {} store operations",
                store.operations() - before
            );
        }
        tracing::info!(target: "server", "guesses done");
        // The control: a directory read now does log the error.
        let _ = gatehouse::ports::UserDirectory::find(env.app.users.as_ref(), "alice");
    });
    let log = env.wait_for_log("the previous content keeps serving");
    let guesses_done = log.find("guesses done").expect("the marker line");
    assert!(
        log.find("the previous content keeps serving").unwrap() > guesses_done,
        "a guess read the directory:\n{log}"
    );
}

/// Sending limits to +44 numbers that the tests below tighten one at a time.
fn send_limits() -> SendLimits {
    SendLimits {
        default_region: None,
        allowed_prefixes: vec!["+44".into()],
        allowed_regions: Vec::new(),
        denied_prefixes: Vec::new(),
        allow_test_numbers: true,
        per_login: 10,
        resend_cooldown_seconds: 0,
        per_number_per_hour: 1000,
        per_number_per_day: 10,
        per_address_per_hour: 1000,
        daily_budget: 1000,
        daily_budget_per_region: Default::default(),
        visible_digits: 4,
    }
}

#[test]
fn a_burst_of_sends_to_one_number_gets_no_more_than_the_limit() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let limits = SendLimits {
        per_login: 3,
        per_number_per_hour: 5,
        ..send_limits()
    };
    let guard = SendGuard::new(store, limits, SystemClock::shared());
    let number = Phone::parse(ALICE_PHONE, None).unwrap();
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..40 {
            let (guard, number, admitted) = (&guard, &number, &admitted);
            s.spawn(move || {
                let ip = format!("127.0.3.{i}").parse().ok();
                if guard.admit(&format!("login-{i}"), number, ip).is_ok() {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::SeqCst), 5);
}

#[test]
fn a_refused_send_counts_against_no_limit() {
    let clock = Arc::new(ManualClock::new());
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::with_clock(clock.clone()));
    let limits = SendLimits {
        per_number_per_hour: 2,
        per_address_per_hour: 3,
        ..send_limits()
    };
    let guard = SendGuard::new(store, limits, clock.clone());
    let ip = "127.0.4.1".parse().ok();
    let first = Phone::parse("+447700900001", None).unwrap();
    let second = Phone::parse("+447700900002", None).unwrap();
    assert!(guard.admit("l1", &first, ip).is_ok());
    assert!(guard.admit("l2", &first, ip).is_ok());
    // Refused by the per-number limit: the address's count must not grow.
    assert!(guard.admit("l3", &first, ip).is_err());
    assert!(
        guard.admit("l4", &second, ip).is_ok(),
        "the third send from this address"
    );
    assert!(
        guard.admit("l5", &second, ip).is_err(),
        "the fourth is over the address limit"
    );
    clock.advance(Duration::from_secs(3601));
    assert!(guard.admit("l6", &second, ip).is_ok(), "an hour later");
}

#[test]
fn the_operator_reset_reaches_phone_subjects_and_directory_users_alike() {
    use gatehouse::flow::sms_factor::{Answer, FactorState};
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            otp: "lock_after_failures = 2\ndisable_after_failures = 2".into(),
            ..EnvOptions::default()
        },
    );
    let factor = &env.app.services.sms_factor;
    let admin = env.app.admin();
    for subject in ["tel:+447700900999", "alice"] {
        for _ in 0..2 {
            factor.settle(subject, Answer::Wrong).unwrap();
        }
        assert_eq!(admin.sms_status(subject).unwrap(), FactorState::Disabled);
        let report = admin.reset_sms(subject).unwrap();
        assert!(report.store_record_removed, "{subject}");
        assert_eq!(report.directory_mark_removed, subject == "alice");
        assert_eq!(admin.sms_status(subject).unwrap(), FactorState::Open);
    }
    assert!(admin.reset_sms("nobody").is_err());
}

/// `add` (the counters of pending sign-ins and SMS budgets): exact under concurrent writers,
/// works through `update` for stores that do not override it (its closure may run twice), and
/// the key lives as long as the last add says.
#[test]
fn counters_add_exactly_and_expire() {
    let clock = Arc::new(ManualClock::new());
    let memory = Arc::new(MemoryStore::with_clock(clock.clone()));
    let retrying = Arc::new(RetryingStore::new());
    for store in [
        memory.clone() as Arc<dyn StateStore>,
        retrying.clone() as Arc<dyn StateStore>,
    ] {
        std::thread::scope(|s| {
            for _ in 0..8 {
                let store = store.clone();
                s.spawn(move || {
                    for i in 0..100 {
                        let delta = if i % 4 == 3 { -1 } else { 1 };
                        store.add("n", delta, Duration::from_secs(60)).unwrap();
                    }
                });
            }
        });
        assert_eq!(store.add("n", 0, Duration::from_secs(60)).unwrap(), 400);
        assert_eq!(
            gatehouse::ports::counter_value(store.get("n").unwrap().as_deref()),
            400
        );
    }
    clock.advance(Duration::from_secs(61));
    assert_eq!(memory.get("n").unwrap(), None);
    assert_eq!(memory.add("n", 1, Duration::from_secs(60)).unwrap(), 1);
}

/// The daily budgets (store counters since this change) hold under a burst: forty sends to forty
/// numbers from forty addresses at once get exactly the budget, on a store whose updates run
/// their closure twice too, and a refused send takes nothing from the whole-server count.
#[test]
fn a_burst_gets_no_more_than_the_daily_budgets() {
    for store in [
        Arc::new(MemoryStore::new()) as Arc<dyn StateStore>,
        Arc::new(RetryingStore::new()) as Arc<dyn StateStore>,
    ] {
        let limits = SendLimits {
            daily_budget: 7,
            daily_budget_per_region: [("GB".to_owned(), 5)].into(),
            ..send_limits()
        };
        let guard = SendGuard::new(store, limits, SystemClock::shared());
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for i in 0..40 {
                let (guard, admitted) = (&guard, &admitted);
                s.spawn(move || {
                    let number = Phone::parse(&format!("+4477009001{i:02}"), None).unwrap();
                    let ip = format!("127.0.5.{i}").parse().ok();
                    if guard.admit(&format!("login-{i}"), &number, ip).is_ok() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 5, "the GB budget");
        assert_eq!(guard.budget_today().unwrap(), (5, 7));
    }
}
