//! The code policy and the protection of each account's SMS factor, enforced by the host around
//! the scripts: a script can tighten the policy, never loosen it.

use gatehouse::flow::params::RequestParams;
use gatehouse::flow::StepOutcome;

use crate::support::*;

fn wrong_for(code: &str) -> String {
    if code.starts_with('1') {
        "2".repeat(code.len())
    } else {
        "1".repeat(code.len())
    }
}

fn fail_one_code(env: &TestEnv, guesses: usize) -> Option<String> {
    let login = env.pass_password(None);
    let wrong = wrong_for(&env.sms.last_code());
    let mut last = None;
    for _ in 0..guesses {
        match env.submit(&login, 2, &[("passcode", &wrong)]).unwrap() {
            StepOutcome::Retry(page) => last = page.message,
            other => panic!("{other:?}"),
        }
    }
    last
}

#[test]
fn alphanumeric_codes_of_the_configured_length() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            otp: "length = 8\nalphabet = \"alphanumeric\"".into(),
            ..EnvOptions::default()
        },
    );
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    assert_eq!(code.len(), 8);
    assert!(
        code.bytes()
            .all(|b| b"23456789ABCDEFGHJKMNPQRSTUVWXYZ".contains(&b)),
        "{code}"
    );
    // Case and look-alikes are not guessed at: only the exact characters match.
    expect_retry(
        env.submit(&login, 2, &[("passcode", &code.to_lowercase())])
            .unwrap(),
    );
    expect_authenticated(
        env.submit(&login, 2, &[("passcode", &format!("  {code}\t"))])
            .unwrap(),
    );
}

#[test]
fn a_script_can_tighten_the_policy_but_never_loosen_it() {
    let shorter = shipped_script().replace("otp::issue()", "otp::issue(4)");
    let longer_life = shipped_script().replace("otp::issue()", "otp::issue(6, 900)");
    let tighter = shipped_script().replace("otp::issue()", "otp::issue(8, 60)");
    let env = TestEnv::new(vec![
        script("sms_otp", &tighter),
        script("shorter", &shorter),
        script("longer", &longer_life),
        script("own", shipped_script())
            .with("[scripts.otp]\nlength = 9\nttl_seconds = 120\nmax_attempts = 2"),
    ]);
    let login = env.pass_password(Some("sms_otp"));
    assert_eq!(env.sms.last_code().len(), 8);
    expect_authenticated(
        env.submit(&login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
    for acr in ["shorter", "longer"] {
        let page = env.start(Some(acr)).unwrap();
        expect_retry(
            env.submit(
                &page.login,
                1,
                &[("username", "alice"), ("password", ALICE_PASSWORD)],
            )
            .unwrap(),
        );
    }
    let log = env.wait_for_log("not 900");
    assert!(
        log.contains("the policy asks for at least 6), not 4"),
        "{log}"
    );
    // The per-script policy: 9 characters, and 2 guesses burn the code.
    let login = env.pass_password(Some("own"));
    let code = env.sms.last_code();
    assert_eq!(code.len(), 9);
    expect_retry(
        env.submit(&login, 2, &[("passcode", &wrong_for(&code))])
            .unwrap(),
    );
    let burned = expect_retry(
        env.submit(&login, 2, &[("passcode", &wrong_for(&code))])
            .unwrap(),
    );
    assert_eq!(
        burned.message.as_deref(),
        Some("Too many wrong codes. Start again to get a new one.")
    );
}

#[test]
fn a_right_code_resets_the_count() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    fail_one_code(&env, 4);
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    for _ in 0..4 {
        expect_retry(
            env.submit(&login, 2, &[("passcode", &wrong_for(&code))])
                .unwrap(),
        );
    }
    expect_authenticated(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
    // Eight failures were forgiven: nine more do not lock.
    fail_one_code(&env, 5);
    let message = fail_one_code(&env, 4);
    assert_eq!(message.as_deref(), Some("Wrong code. Please try again."));
}

fn password_attempt(env: &TestEnv, user: &str, password: &str, ip: &str) -> StepOutcome {
    let page = env.start(None).unwrap();
    let params = gatehouse::flow::params::RequestParams::from_pairs([
        ("username", user),
        ("password", password),
    ])
    .with_client_ip(Some(ip.parse().unwrap()));
    env.app.engine.submit(&page.login, 1, &params).unwrap()
}

#[test]
fn wrong_passwords_bring_growing_delays_per_account_and_address_without_touching_the_sms_factor() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    for _ in 0..4 {
        expect_retry(password_attempt(&env, "alice", "guess", "198.51.100.7"));
    }
    // The fourth failure set a one-second wait for alice from that address: even the right
    // password is not checked now, and the answer looks like any failure.
    let refused = expect_retry(password_attempt(
        &env,
        "alice",
        ALICE_PASSWORD,
        "198.51.100.7",
    ));
    assert_eq!(refused.message.as_deref(), Some("Failed to authenticate."));
    assert_eq!(env.sms.count(), 0);
    env.wait_for_log("password not checked: too many recent failures for alice");
    // Another address is not held: four wrong passwords do not lock the owner out.
    expect_next(password_attempt(
        &env,
        "alice",
        ALICE_PASSWORD,
        "203.0.113.9",
    ));
    // Waiting out the delay is the point here.
    env.advance(std::time::Duration::from_millis(1100));
    let login = expect_next(password_attempt(
        &env,
        "alice",
        ALICE_PASSWORD,
        "198.51.100.7",
    ))
    .login;
    expect_authenticated(
        env.submit(&login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
}

#[test]
fn one_address_trying_many_accounts_is_slowed_down() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    // Twelve failures are free per address (four times the per-account allowance).
    for i in 0..13 {
        expect_retry(password_attempt(
            &env,
            &format!("user{i}"),
            "guess",
            "198.51.100.8",
        ));
    }
    expect_retry(password_attempt(
        &env,
        "alice",
        ALICE_PASSWORD,
        "198.51.100.8",
    ));
    // The same account from another address is fine.
    expect_next(password_attempt(
        &env,
        "alice",
        ALICE_PASSWORD,
        "198.51.100.99",
    ));
}

/// A second instance of the env's deployment on the same state store.
fn second_instance(env: &TestEnv) -> gatehouse::Gatehouse {
    let other = gatehouse::Builder::new(env.root().join("config/gatehouse.toml"))
        .sms(env.sms.clone())
        .console_log(false)
        .store(env.app.store.clone())
        .build()
        .unwrap();
    other.load_scripts();
    other
}

#[test]
fn instances_sharing_a_store_and_code_key_accept_each_others_codes() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            // Normally "${env:NAME}"; a literal keeps this test off the process environment.
            otp: format!("code_key = \"{}\"", "k".repeat(40)),
            ..EnvOptions::default()
        },
    );
    let other = second_instance(&env);
    let login = env.pass_password(None);
    let params = RequestParams::from_pairs([("passcode", env.sms.last_code().as_str())]);
    expect_authenticated(other.engine.submit(&login, 2, &params).unwrap());

    // Without a shared key each instance hashes codes under its own random key.
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let other = second_instance(&env);
    let login = env.pass_password(None);
    let params = RequestParams::from_pairs([("passcode", env.sms.last_code().as_str())]);
    expect_retry(other.engine.submit(&login, 2, &params).unwrap());
}

#[test]
fn a_short_or_missing_code_key_is_refused_at_load() {
    for (value, expected) in [
        (
            "\"too-short\"",
            "otp.code_key: is 9 characters; use at least 32",
        ),
        (
            "\"${env:GATEHOUSE_TEST_UNSET_CODE_KEY}\"",
            "otp.code_key: environment variable GATEHOUSE_TEST_UNSET_CODE_KEY is not set",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, format!("[otp]\ncode_key = {value}\n")).unwrap();
        let error = gatehouse::config::Config::load(&path)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{error}");
    }
}

/// A lock is kept where the disable is kept (the user's entry), so a restart with an empty
/// memory store forgets neither the lock nor the count.
#[test]
fn a_restart_forgets_no_lock() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            otp: "lock_after_failures = 2\ndisable_after_failures = 10".into(),
            ..EnvOptions::default()
        },
    );
    let login = env.pass_password(None);
    for _ in 0..2 {
        expect_retry(env.submit(&login, 2, &[("passcode", "000000x")]).unwrap());
    }
    // The same deployment started again: a new, empty state store.
    let restarted = gatehouse::Builder::new(env.root().join("config/gatehouse.toml"))
        .sms(env.sms.clone())
        .console_log(false)
        .build()
        .unwrap();
    restarted.load_scripts();
    let page = restarted.engine.start(None).unwrap();
    let params = RequestParams::from_pairs([("username", "alice"), ("password", ALICE_PASSWORD)]);
    let sent_before = env.sms.count();
    let refused = expect_retry(restarted.engine.submit(&page.login, 1, &params).unwrap());
    assert_eq!(
        refused.message.as_deref(),
        Some("Too many wrong codes. Sign-in by text message is locked for 15 minutes.")
    );
    assert_eq!(env.sms.count(), sent_before, "no code while locked");
}
