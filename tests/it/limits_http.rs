//! The OTP policy and sending limits seen from outside: every limit hit exactly at its number
//! through the HTTP endpoints, refusals as 429 with Retry-After, locks that hold on every path,
//! client addresses believed only from trusted proxies, guesses counted atomically.

use reqwest::blocking::Response;

use crate::support::web::{location, message_of, stayed};
use crate::support::*;

const TRUST_LOCALHOST: &str = "trusted_proxies = [\"127.0.0.1\"]";

/// `scripts` served over HTTP with these [sms] and [server] keys.
fn limited_env(scripts: Vec<ScriptSpec>, sms: &str, server: &str) -> TestEnv {
    web_env(
        scripts,
        EnvOptions::default().with_sms(sms).with_server(server),
    )
}

/// The shipped sms_otp served behind a trusted proxy on 127.0.0.1 (X-Forwarded-For believed).
fn behind_a_trusted_proxy(options: EnvOptions) -> TestEnv {
    web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            server: TRUST_LOCALHOST.into(),
            ..options
        },
    )
}

fn sms_otp_env(sms: &str, server: &str) -> TestEnv {
    limited_env(vec![script("sms_otp", shipped_script())], sms, server)
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// alice's password from client address `ip`: (status, Retry-After, page message).
fn password_from(env: &TestEnv, ip: &str) -> (u16, Option<u64>, Option<String>) {
    let login = env.web_login_from(None, ip);
    let answer = login.password("alice", ALICE_PASSWORD);
    let status = answer.status().as_u16();
    let wait = retry_after(&answer);
    let body = answer.text().unwrap();
    let message = if status == 429 {
        message_of(&body)
    } else {
        message_of(&login.page())
    };
    (status, wait, message)
}

fn wrong_for(code: &str) -> String {
    if code.starts_with('1') {
        "2".repeat(code.len())
    } else {
        "1".repeat(code.len())
    }
}

#[test]
fn per_number_limits_are_hit_exactly_at_their_numbers() {
    let env = sms_otp_env(
        "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 5\nper_number_per_day = 10\nper_address_per_hour = 1000",
        TRUST_LOCALHOST,
    );
    for i in 0..5 {
        let (status, wait, _) = password_from(&env, &format!("198.51.100.{i}"));
        assert_eq!((status, wait), (303, None), "send {}", i + 1);
    }
    let (status, wait, message) = password_from(&env, "198.51.100.77");
    assert_eq!(status, 429);
    assert!(wait.is_some_and(|s| (3590..=3600).contains(&s)), "{wait:?}");
    assert_eq!(
        message.as_deref(),
        Some("Too many codes were sent. Try again in 60 minutes.")
    );
    assert_eq!(env.sms.count(), 5);
    let log = env.wait_for_log(
        "sms refused: to=+44******0123: too many codes were sent to this number in the last hour",
    );
    assert!(!log.contains(ALICE_PHONE));

    // The day's limit: here 3 a day (the hour's limit out of the way).
    let env = sms_otp_env(
        "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 3\nper_address_per_hour = 1000",
        TRUST_LOCALHOST,
    );
    for i in 0..3 {
        assert_eq!(password_from(&env, &format!("198.51.100.{i}")).0, 303);
    }
    let (status, wait, _) = password_from(&env, "198.51.100.99");
    assert_eq!(status, 429);
    assert!(
        wait.is_some_and(|s| (86_390..=86_400).contains(&s)),
        "{wait:?}"
    );
    assert_eq!(env.sms.count(), 3);
}

#[test]
fn per_address_limit_believes_forwarded_addresses_only_from_trusted_proxies() {
    let sms = "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 2";
    let env = sms_otp_env(sms, TRUST_LOCALHOST);
    assert_eq!(password_from(&env, "203.0.113.5").0, 303);
    assert_eq!(password_from(&env, "203.0.113.5").0, 303);
    let (status, wait, _) = password_from(&env, "203.0.113.5");
    assert_eq!(status, 429);
    assert!(wait.is_some_and(|s| (3590..=3600).contains(&s)), "{wait:?}");
    // Another address behind the same proxy has its own count.
    assert_eq!(password_from(&env, "203.0.113.6").0, 303);
    assert_eq!(env.sms.count(), 3);

    // No trusted proxy: X-Forwarded-For is ignored and every request counts for 127.0.0.1.
    let env = sms_otp_env(sms, "");
    assert_eq!(password_from(&env, "203.0.113.5").0, 303);
    assert_eq!(password_from(&env, "203.0.113.6").0, 303);
    assert_eq!(password_from(&env, "203.0.113.7").0, 429);
    assert_eq!(env.sms.count(), 2);
}

/// Alice's sign-in sends twice, then twice gets 429 with a wait until the next UTC day.
fn two_sent_then_paused_for_the_day(env: &TestEnv) {
    assert_eq!(password_from(env, "-").0, 303);
    assert_eq!(password_from(env, "-").0, 303);
    for _ in 0..2 {
        let (status, wait, _) = password_from(env, "-");
        assert_eq!(status, 429);
        assert!(wait.is_some_and(|s| s <= 86_400), "until the next UTC day");
    }
}

#[test]
fn the_daily_budget_pauses_sending_with_one_alert() {
    let env = sms_otp_env(
        "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100\ndaily_budget = 2",
        "",
    );
    two_sent_then_paused_for_the_day(&env);
    let log = env.wait_for_log("sending is paused for today");
    assert_eq!(
        log.matches("ALERT: the daily SMS budget of 2 messages is spent")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(env.sms.count(), 2);
}

/// A destination region's own daily budget pauses that region only, with one alert.
#[test]
fn a_regions_daily_budget_pauses_that_region_only() {
    let reading_mobile = shipped_script().replace("\"phoneNumberVerified\";", "\"mobile\";");
    let env = limited_env(
        vec![
            script("sms_otp", shipped_script()),
            script("by_mobile", reading_mobile),
        ],
        "allow_test_numbers = true\nallowed_regions = [\"GB\", \"US\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100\ndaily_budget = 10\ndaily_budget_per_region = { GB = 2 }",
        "",
    );
    // Alice's number is British: two messages, then the region is paused until tomorrow.
    two_sent_then_paused_for_the_day(&env);
    let log = env.wait_for_log("sending to this country is paused for today");
    assert_eq!(
        log.matches("ALERT: the daily SMS budget for GB").count(),
        1,
        "{log}"
    );
    assert_eq!(env.sms.count(), 2);
    // Bob's American number still gets its code.
    let bob = env.web_login_from(Some("by_mobile"), "-");
    assert_eq!(location(&bob.password("bob", ALICE_PASSWORD)), "/login");
    assert_eq!(env.sms.count(), 3);
    assert!(
        !log.contains("the daily SMS budget of 10"),
        "the server's budget is not spent"
    );
}

/// Sign-ins sent at once spend a region's budget exactly: two messages, the rest refused.
#[test]
fn a_regions_budget_holds_for_sign_ins_sent_at_once() {
    let env = sms_otp_env(
        "allow_test_numbers = true\nallowed_regions = [\"GB\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100\ndaily_budget_per_region = { GB = 2 }",
        TRUST_LOCALHOST,
    );
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let env = &env;
        let handles: Vec<_> = (1..=6)
            .map(|i| s.spawn(move || password_from(env, &format!("127.0.12.{i}")).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 303).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(env.sms.count(), 2);
}

#[test]
fn countries_outside_the_allow_list_get_nothing() {
    let env = sms_otp_env("allow_test_numbers = true\nallowed_prefixes = [\"+1\"]", "");
    let (status, _, message) = password_from(&env, "-");
    assert_eq!(status, 303);
    assert_eq!(
        message.as_deref(),
        Some("Text messages cannot be sent to this number.")
    );
    env.wait_for_log(
        "sms refused: to=+44******0123: the destination country is not in [sms] allowed_prefixes",
    );
    // An empty list sends nowhere.
    let env = sms_otp_env("allow_test_numbers = true\nallowed_prefixes = []", "");
    password_from(&env, "-");
    assert_eq!(env.sms.count(), 0);
}

#[test]
fn numbers_are_normalised_or_refused_and_shown_masked_as_configured() {
    let reading = |attribute: &str| {
        shipped_script().replace("\"phoneNumberVerified\";", &format!("\"{attribute}\";"))
    };
    let env = limited_env(
        vec![
            script("local", reading("localPhone")),
            script("tel", reading("telPhone")),
            script("two", reading("twoPhones")),
            script("letters", reading("letterPhone")),
        ],
        "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\ndefault_region = \"GB\"\nvisible_digits = 2",
        "",
    );
    for (attribute, value) in [
        ("localPhone", "07700 900123"),
        ("telPhone", "tel:+447700900123"),
        ("twoPhones", "+447700900123, +447700900124"),
        ("letterPhone", "+44 7700 9OO123"),
    ] {
        env.app
            .users
            .update(
                "alice",
                gatehouse::ports::AttributeChange::Replace {
                    attribute: attribute.into(),
                    values: vec![value.into()],
                },
            )
            .unwrap();
    }
    let login = env.web_login(Some("local"));
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    assert_eq!(env.sms.last().0, ALICE_PHONE, "the provider gets E.164");
    let page = login.page();
    assert!(page.contains("+44********23"), "two digits shown: {page}");
    for acr in ["tel", "two", "letters"] {
        let login = env.web_login(Some(acr));
        assert!(stayed(&login.password("alice", ALICE_PASSWORD)), "{acr}");
        assert!(!login.page().contains("name=\"passcode\""), "{acr}");
    }
    assert_eq!(env.sms.count(), 1);
    let log = env.wait_for_log("sms refused: to=");
    assert!(log.contains("to=+44********23"), "{log}");
}

#[test]
fn resend_cooldown_doubles_and_a_login_gets_three_sends() {
    let env = sms_otp_env(
        "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100\nmax_sends_per_login = 3\nresend_cooldown_seconds = 1",
        "",
    );
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    let first = env.sms.last_code();
    let early = login.resend();
    assert_eq!(
        (early.status().as_u16(), retry_after(&early)),
        (429, Some(1))
    );
    // Waiting out the one-second (then two-second) cooldowns is what is tested.
    env.advance(std::time::Duration::from_millis(1100));
    assert_eq!(location(&login.resend()), "/login");
    assert_eq!(env.sms.count(), 2);
    let early = login.resend();
    assert_eq!(
        (early.status().as_u16(), retry_after(&early)),
        (429, Some(2))
    );
    env.advance(std::time::Duration::from_millis(2100));
    assert_eq!(location(&login.resend()), "/login");
    assert_eq!(env.sms.count(), 3);
    // The fourth send of this sign-in: 429 with no Retry-After, only a new sign-in helps.
    let refused = login.resend();
    assert_eq!(
        (refused.status().as_u16(), retry_after(&refused)),
        (429, None)
    );
    assert_eq!(
        message_of(&refused.text().unwrap()).as_deref(),
        Some("Too many codes were sent for this sign-in. Start again.")
    );
    assert_eq!(env.sms.count(), 3);
    let latest = env.sms.last_code();
    if first != latest {
        assert!(stayed(&login.passcode(&first)), "an old code stops working");
    }
    login.finish(login.passcode(&latest));
}

/// One sign-in of alice through `acr` with `guesses` wrong codes; the last page's message.
fn wrong_codes(env: &TestEnv, acr: Option<&str>, guesses: usize) -> Option<String> {
    let login = env.web_login(acr);
    login.password("alice", ALICE_PASSWORD);
    let code = env.sms.last_code();
    for _ in 0..guesses {
        assert!(stayed(&login.passcode(&wrong_for(&code))));
    }
    message_of(&login.page())
}

#[test]
fn ten_wrong_codes_lock_the_sms_factor_on_every_path() {
    let locked = "Too many wrong codes. Sign-in by text message is locked for 15 minutes.";
    let env = limited_env(
        vec![
            script("sms_otp", shipped_script()).with("[scripts.properties]\nBackupCode = \"true\""),
            script("other", shipped_script()),
            script(
                "mobile",
                shipped_script().replace("\"phoneNumberVerified\";", "\"mobile\";"),
            ),
        ],
        "",
        "",
    );
    // Five burn the first code; in a new sign-in two more, a resend, two more: nine.
    wrong_codes(&env, None, 5);
    let second = env.web_login(None);
    second.password("alice", ALICE_PASSWORD);
    for _ in 0..2 {
        assert!(stayed(&second.passcode(&wrong_for(&env.sms.last_code()))));
    }
    assert_eq!(location(&second.resend()), "/login");
    for _ in 0..2 {
        assert!(stayed(&second.passcode(&wrong_for(&env.sms.last_code()))));
    }
    assert_eq!(
        message_of(&second.page()).as_deref(),
        Some("Wrong code. Please try again.")
    );
    // A sign-in kept open at its passcode page; the tenth wrong code comes from another acr.
    let open = env.web_login(None);
    open.password("alice", ALICE_PASSWORD);
    let open_code = env.sms.last_code();
    assert_eq!(wrong_codes(&env, Some("other"), 1).as_deref(), Some(locked));
    let sent = env.sms.count();
    // A new sign-in, another acr, another application: the password passes, no code is sent.
    let base = env.base.clone().unwrap();
    for (client, acr) in [(RP_ID, "sms_otp"), (RP_ID, "other"), ("legacy", "sms_otp")] {
        let login = crate::support::web::WebLogin::start_as(client, &base, Some(acr), &[]);
        assert!(stayed(&login.password("alice", ALICE_PASSWORD)));
        assert_eq!(
            message_of(&login.page()).as_deref(),
            Some(locked),
            "{client} {acr}"
        );
    }
    // The sign-in already at its passcode page: its right code, a resend, a backup code.
    assert!(stayed(&open.passcode(&open_code)));
    assert_eq!(message_of(&open.page()).as_deref(), Some(locked));
    open.resend();
    assert!(stayed(&open.passcode("ABCD-EFGH-JKMN")));
    assert_eq!(message_of(&open.page()).as_deref(), Some(locked));
    assert_eq!(env.sms.count(), sent, "no SMS while locked");
    env.wait_for_log("locked for 900 s");
    // Refusing a code to a locked account is the policy at work, not a failing script: no
    // error line, and /health does not call the scripts degraded.
    let log = env.wait_for_log("refused by the account's policy");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let health: serde_json::Value = reqwest::blocking::get(format!("{base}/health"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    // Other accounts are not affected.
    let bob = env.web_login(Some("mobile"));
    bob.password("bob", ALICE_PASSWORD);
    bob.finish(bob.passcode(&env.sms.last_code()));
    assert_log_clean(&env, &[&open_code, ALICE_PHONE, BOB_MOBILE]);
}

/// A script that sends its code when step 2 begins (`prepareForStep`, as some Gluu scripts do):
/// for a locked account the user stays at the password step with the lock message, not a 503.
#[test]
fn a_code_step_refused_by_a_lock_keeps_the_user_at_the_step_before() {
    let locked = "Too many wrong codes. Sign-in by text message is locked for 15 minutes.";
    let sends_on_prepare = r#"
fn getCountAuthenticationSteps(config) { 2 }
fn getPageForStep(config, step) { if step == 2 { "otp_sms" } else { "" } }
fn prepareForStep(config, params, step) {
    if step == 2 {
        let code = otp::issue();
        return sms::send(users::get(identity::user(), "phoneNumberVerified"), `Your code is ${code}`);
    }
    true
}
fn authenticate(config, params, step) {
    if step == 1 { return users::authenticate(params.username, params.password); }
    otp::check(params.passcode) == "accepted"
}
"#;
    let env = limited_env(
        vec![
            script("sms_otp", shipped_script()),
            script("prepared", sends_on_prepare),
        ],
        "",
        "",
    );
    // Open: the code goes out as step 2 begins, and the sign-in completes.
    let login = env.web_login(Some("prepared"));
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    login.finish(login.passcode(&env.sms.last_code()));
    // Ten wrong codes lock the account's SMS factor.
    wrong_codes(&env, None, 5);
    assert_eq!(wrong_codes(&env, None, 5).as_deref(), Some(locked));
    let sent = env.sms.count();
    let login = env.web_login(Some("prepared"));
    let answer = login.password("alice", ALICE_PASSWORD);
    assert_eq!(location(&answer), "/login");
    let page = login.page();
    assert_eq!(message_of(&page).as_deref(), Some(locked));
    assert!(
        page.contains("name=\"password\""),
        "still the password step:\n{page}"
    );
    assert_eq!(env.sms.count(), sent, "no SMS while locked");
    let log = env.wait_for_log("refused by the account's policy");
    assert!(!log.contains("cannot be prepared"), "{log}");
}

#[test]
fn the_disable_threshold_holds_until_the_operator_resets_it() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            web: true,
            otp: "lock_after_failures = 5\ndisable_after_failures = 5".into(),
            ..EnvOptions::default()
        },
    );
    let disabled =
        "Sign-in by text message is disabled for this account. Contact your administrator.";
    assert_eq!(wrong_codes(&env, None, 5).as_deref(), Some(disabled));
    let login = env.web_login(None);
    assert!(stayed(&login.password("alice", ALICE_PASSWORD)));
    assert_eq!(message_of(&login.page()).as_deref(), Some(disabled));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["users", "reset-sms", "alice", "--config"])
        .arg(env.root().join("config/gatehouse.toml"))
        .status()
        .unwrap();
    assert!(status.success());
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    login.finish(login.passcode(&env.sms.last_code()));
}

#[test]
fn wrong_passwords_slow_down_without_touching_the_sms_factor() {
    let env = sms_otp_env("", TRUST_LOCALHOST);
    // Three free failures for alice from one address, the fourth sets a wait: even the right
    // password from there is refused unchecked, with the same page as a wrong one.
    for _ in 0..4 {
        let login = env.web_login_from(None, "192.0.2.1");
        assert!(stayed(&login.password("alice", "guess")));
    }
    let login = env.web_login_from(None, "192.0.2.1");
    assert!(stayed(&login.password("alice", ALICE_PASSWORD)));
    assert_eq!(env.sms.count(), 0);
    env.wait_for_log("password not checked: too many recent failures for alice");
    // The SMS factor is untouched: nothing was locked by the password failures.
    let log = env.log_text();
    assert!(!log.contains("locked for"), "{log}");
}

#[test]
fn fifty_wrong_guesses_at_once_over_http_evaluate_at_most_five() {
    let env = sms_otp_env("", "");
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    let code = env.sms.last_code();
    let wrong = wrong_for(&code);
    let page = login.page();
    let csrf = crate::support::web::csrf_of(&page);
    let url = format!("{}/login", login.base);
    std::thread::scope(|s| {
        for _ in 0..50 {
            s.spawn(|| {
                let _ = login
                    .browser
                    .client
                    .post(&url)
                    .form(&[("csrf", csrf.as_str()), ("step", "2"), ("passcode", &wrong)])
                    .send();
            });
        }
    });
    let log = env.wait_for_log("code burned");
    let evaluated = log.matches("guesses left").count() + log.matches("code burned").count();
    assert!(evaluated <= 5, "{evaluated} guesses evaluated:\n{log}");
    assert!(stayed(&login.passcode(&code)), "the code is burned");
}

#[test]
fn a_phone_number_sign_in_is_limited_like_any_other() {
    let env = limited_env(
        vec![script("sms_otp", shipped_script())
            .with("[scripts.properties]\nSendOTPDirectlyToMobile = \"true\"")],
        "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 2\nper_number_per_day = 10\nper_address_per_hour = 100",
        "",
    );
    for _ in 0..2 {
        let login = env.web_login(None);
        assert_eq!(
            location(&login.submit(&[("mobile", "+447700900777")])),
            "/login"
        );
    }
    let login = env.web_login(None);
    let refused = login.submit(&[("mobile", "+447700900777")]);
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused).is_some_and(|s| s > 3500));
    assert_eq!(env.sms.count(), 2);
    // Wrong codes count against the number like against an account.
    let login = env.web_login(None);
    login.submit(&[("mobile", "+447700900888")]);
    let code = env.sms.last_code();
    for _ in 0..5 {
        assert!(stayed(&login.passcode(&wrong_for(&code))));
    }
    assert_eq!(
        message_of(&login.page()).as_deref(),
        Some("Too many wrong codes. Start again to get a new one.")
    );
    assert_log_clean(&env, &["+447700900777", "+447700900888", &code]);
}

#[test]
fn only_the_exact_characters_of_the_code_match() {
    let env = sms_otp_env("", "");
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    let code = env.sms.last_code();
    // The same digits in other scripts (Arabic-Indic, full-width), with junk around them, or
    // too long: each is a failed guess (4 of the 5 the code allows), never a match.
    let other_script = |zero: u32| -> String {
        code.chars()
            .map(|c| char::from_u32(zero + c.to_digit(10).unwrap()).unwrap())
            .collect()
    };
    for guess in [
        other_script(0x0660),
        other_script(0xFF10),
        format!("{code}0"),
        format!("{code}\u{200b}"),
    ] {
        assert!(stayed(&login.passcode(&guess)), "{guess:?}");
    }
    assert_eq!(
        message_of(&login.page()).as_deref(),
        Some("Wrong code. Please try again.")
    );
    // The code twice in one form: refused as a malformed request, not counted as a guess.
    let page = login.page();
    let csrf = crate::support::web::csrf_of(&page);
    let doubled = login.browser.post(
        &format!("{}/login", login.base),
        &[
            ("csrf", csrf.as_str()),
            ("step", "2"),
            ("passcode", &code),
            ("passcode", &code),
        ],
    );
    assert_eq!(doubled.status(), 400);
    // ASCII spaces around the right code are trimmed: it still matches.
    login.finish(login.passcode(&format!("  {code} ")));
    assert_log_clean(&env, &[&code]);
}

/// The shipped script with SendOTPDirectlyToMobile on, under the `[otp]` keys `otp`.
fn phone_sign_in_env(otp: &str) -> TestEnv {
    TestEnv::with_options(
        vec![script("sms_otp", shipped_script())
            .with("[scripts.properties]\nSendOTPDirectlyToMobile = \"true\"")],
        EnvOptions {
            web: true,
            otp: otp.into(),
            ..EnvOptions::default()
        },
    )
}

#[test]
fn a_phone_number_subject_is_locked_like_an_account() {
    let env =
        phone_sign_in_env("max_attempts = 3\nlock_after_failures = 3\ndisable_after_failures = 6");
    let number = "+447700900321";
    let sign_in = || {
        let login = env.web_login(None);
        login.submit(&[("mobile", number)]);
        login
    };
    let login = sign_in();
    let code = env.sms.last_code();
    for _ in 0..3 {
        assert!(stayed(&login.passcode(&wrong_for(&code))));
    }
    let locked = "Too many wrong codes. Sign-in by text message is locked for 15 minutes.";
    assert_eq!(message_of(&login.page()).as_deref(), Some(locked));
    // Locked: a new sign-in with that number sends nothing.
    let sent = env.sms.count();
    let again = sign_in();
    assert_eq!(message_of(&again.page()).as_deref(), Some(locked));
    assert_eq!(env.sms.count(), sent);
    env.wait_for_log("locked for 900 s");
    // Another number is not affected, and the subject's count is its own.
    let other = env.web_login(None);
    other.submit(&[("mobile", "+447700900322")]);
    let claims = other.finish(other.passcode(&env.sms.last_code()));
    assert_eq!(claims["sub"], "tel:+447700900322");
    // No directory entry is written for a number.
    let users = std::fs::read_to_string(env.root().join("config/users.toml")).unwrap();
    assert!(!users.contains("900321"), "{users}");
}

#[test]
fn a_disabled_phone_number_subject_stays_disabled_without_a_directory_entry() {
    let env =
        phone_sign_in_env("max_attempts = 3\nlock_after_failures = 3\ndisable_after_failures = 3");
    let disabled =
        "Sign-in by text message is disabled for this account. Contact your administrator.";
    let login = env.web_login(None);
    login.submit(&[("mobile", "+447700900321")]);
    let code = env.sms.last_code();
    for _ in 0..3 {
        assert!(stayed(&login.passcode(&wrong_for(&code))));
    }
    assert_eq!(message_of(&login.page()).as_deref(), Some(disabled));
    let sent = env.sms.count();
    let again = env.web_login(None);
    assert!(stayed(&again.submit(&[("mobile", "+447700900321")])));
    assert_eq!(message_of(&again.page()).as_deref(), Some(disabled));
    assert_eq!(env.sms.count(), sent);
    let users = std::fs::read_to_string(env.root().join("config/users.toml")).unwrap();
    assert!(!users.contains("900321"), "{users}");
}

/// Password attempts are counted before they are checked: 30 wrong passwords sent at once from
/// one address get no more checks than the same attempts sent one by one (three free, the
/// fourth sets the wait), and the right password in the burst's wake is refused unchecked.
#[test]
fn a_burst_of_passwords_gets_no_more_checks_than_one_by_one() {
    let env = sms_otp_env("", TRUST_LOCALHOST);
    let logins: Vec<_> = (0..30)
        .map(|_| env.web_login_from(None, "127.0.6.1"))
        .collect();
    std::thread::scope(|s| {
        for login in &logins {
            s.spawn(move || login.password("alice", "guess"));
        }
    });
    let refused = |env: &TestEnv| {
        env.log_text()
            .matches("password not checked: too many recent failures for alice")
            .count()
    };
    // Log lines may land a little after the answers: wait for them, then count exactly.
    wait_until(std::time::Duration::from_secs(5), || refused(&env) >= 26);
    assert_eq!(
        30 - refused(&env),
        4,
        "checked {} of 30",
        30 - refused(&env)
    );
    let login = env.web_login_from(None, "127.0.6.1");
    assert!(stayed(&login.password("alice", ALICE_PASSWORD)));
    assert_eq!(env.sms.count(), 0);
}

/// Anyone can fail a named account's password from anywhere; that must not lock its owner out.
/// Failures from many addresses reach only the account's softer cap, and a browser that signed
/// in to the account before (device cookie) is not held by it.
#[test]
fn failing_an_account_from_everywhere_does_not_lock_its_owner_out() {
    let env = sms_otp_env("", TRUST_LOCALHOST);
    let base = env.base.clone().unwrap();
    // The owner signs in once from their browser: it now carries a device cookie.
    let owner = env.web_login_from(None, "127.0.10.200");
    owner.password("alice", ALICE_PASSWORD);
    owner.finish(owner.passcode(&env.sms.last_code()));
    // 25 wrong passwords from 25 addresses: past the account's 20 free failures.
    for i in 0..25 {
        let login = env.web_login_from(None, &format!("127.0.10.{}", i + 1));
        assert!(stayed(&login.password("alice", "guess")));
    }
    let stranger = env.web_login_from(None, "127.0.10.100");
    assert!(
        stayed(&stranger.password("alice", ALICE_PASSWORD)),
        "the soft cap holds others"
    );
    // The owner's browser signs in again (prompt=login skips single sign-on).
    let url = crate::support::web::authorize_url(&base, &[("prompt", "login")]);
    assert_eq!(location(&owner.get(&url)), "/login");
    let answer = owner.password("alice", ALICE_PASSWORD);
    assert_eq!(location(&answer), "/login");
    assert!(
        owner.page().contains("one-time-code"),
        "the owner's browser is not held"
    );
}

/// IPv6 clients are counted by their /64: one client rotating through its addresses shares one
/// per-address limit, a neighbouring network does not.
#[test]
fn ipv6_clients_share_the_per_address_limits_of_their_network() {
    let env = sms_otp_env("", TRUST_LOCALHOST);
    // Per address, four times the per-account free failures (12); different accounts, so only
    // the address limit is at stake.
    for i in 0..13 {
        let login = env.web_login_from(None, &format!("2001:db8:1:2::{:x}", i + 1));
        assert!(stayed(&login.password(&format!("user{i}"), "guess")));
    }
    let same_network = env.web_login_from(None, "2001:db8:1:2:ffff::9");
    assert!(stayed(&same_network.password("user-a", "guess")));
    env.wait_for_log("password not checked: too many recent failures for user-a or this address");
    let other_network = env.web_login_from(None, "2001:db8:1:3::1");
    let answer = other_network.password("alice", ALICE_PASSWORD);
    assert_eq!(location(&answer), "/login");
    assert!(
        other_network.page().contains("one-time-code"),
        "the neighbouring /64 is not held"
    );
}

/// Sign-ins started and never finished are capped per address (429, Retry-After) and in total
/// (503); state and nonce are bounded and an over-long one is refused, not cut.
#[test]
fn unfinished_sign_ins_are_capped_per_address_and_in_total() {
    let env = behind_a_trusted_proxy(EnvOptions {
        login: "max_pending_per_address = 3\nmax_pending_total = 5".into(),
        ..EnvOptions::default()
    });
    let base = env.base.clone().unwrap();
    let authorize = |from: &str, state: &str| {
        let login =
            crate::support::web::WebLogin::new_with_headers(&base, &[("x-forwarded-for", from)]);
        login.get(&crate::support::web::authorize_url(
            &base,
            &[("state", state)],
        ))
    };
    // Three from one address, all at once: the fourth and later get 429.
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| authorize("127.0.7.1", "s")))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let r = h.join().unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (r.status().as_u16(), retry)
            })
            .collect()
    });
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 303).count(),
        3,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, r)| r.is_some()),
        "{answers:?}"
    );
    // Two more from elsewhere reach the total of five; the next anywhere gets 503.
    assert_eq!(authorize("127.0.7.2", "s").status(), 303);
    assert_eq!(authorize("127.0.7.3", "s").status(), 303);
    assert_eq!(authorize("127.0.7.4", "s").status(), 503);
    // Past the sign-in lifetime they may start again.
    env.advance(std::time::Duration::from_secs(901));
    assert_eq!(authorize("127.0.7.1", "s").status(), 303);
    // An over-long state is refused on a page of ours, not cut and not echoed.
    let long = authorize("127.0.7.9", &"x".repeat(513));
    assert_eq!(long.status(), 400);
    assert!(long.text().unwrap().contains("longer than 512 bytes"));
}

/// The cap per address holds sign-ins left unfinished: an office behind one address signs in
/// as often as it likes, and only unfinished ones fill the cap.
#[test]
fn finished_sign_ins_do_not_fill_the_pending_cap() {
    let env = behind_a_trusted_proxy(EnvOptions {
        login: "max_pending_per_address = 2".into(),
        ..EnvOptions::default()
    });
    let office = "127.0.11.1";
    for _ in 0..5 {
        let login = env.web_login_from(None, office);
        login.password("alice", ALICE_PASSWORD);
        login.finish(login.passcode(&env.sms.last_code()));
    }
    let _left = [
        env.web_login_from(None, office),
        env.web_login_from(None, office),
    ];
    let base = env.base.clone().unwrap();
    let third =
        crate::support::web::WebLogin::new_with_headers(&base, &[("x-forwarded-for", office)]);
    let url = crate::support::web::authorize_url(&base, &[]);
    assert_eq!(third.get(&url).status(), 429, "two unfinished fill the cap");
}

/// `/authorize` keeps only the choice in the browser session: the login itself is stored when
/// its first page is asked for, once even when asked for twice at once, and not after the
/// sign-in lifetime.
#[test]
fn a_sign_in_is_stored_only_when_its_first_page_is_asked_for() {
    use gatehouse::store::MemoryStore;
    let store = std::sync::Arc::new(MemoryStore::new());
    let env = behind_a_trusted_proxy(EnvOptions {
        store: Some(store.clone()),
        ..EnvOptions::default()
    });
    let base = env.base.clone().unwrap();
    let start = |from: &str| {
        let login =
            crate::support::web::WebLogin::new_with_headers(&base, &[("x-forwarded-for", from)]);
        let url = crate::support::web::authorize_url(&base, &[]);
        assert_eq!(login.get(&url).status(), 303);
        login
    };
    let before = store.len();
    let logins: Vec<_> = (1..=10).map(|i| start(&format!("127.0.8.{i}"))).collect();
    // Per start: the session and the address's pending count (plus the total's, once).
    assert_eq!(store.len() - before, 2 * 10 + 1);
    let stored = store.len();
    // Two first requests at once begin one login.
    let pages: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| s.spawn(|| logins[0].get(&format!("{base}/login")).text().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(pages.iter().all(|p| p.contains("password")), "{pages:?}");
    assert_eq!(store.len(), stored + 1);
    // The login goes on as usual.
    assert!(logins[0]
        .get(&format!("{base}/login"))
        .text()
        .unwrap()
        .contains("password"));
    assert_eq!(store.len(), stored + 1);
    // Past the sign-in lifetime a chosen sign-in is not begun.
    env.advance(std::time::Duration::from_secs(901));
    let late = logins[1].get(&format!("{base}/login"));
    assert_ne!(late.status(), 200);
    assert!(!late.text().unwrap().contains("name=\"password\""));
}

/// A client that never finishes its headers or its body holds nothing for long, a request head
/// is at most 64 KiB, and one address holds at most `max_connections_per_address` connections.
#[test]
fn slow_clients_are_cut_and_connections_per_address_capped() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            server: "header_read_timeout_ms = 1500\nrequest_timeout_ms = 600\nmax_connections_per_address = 4".into(),
            ..EnvOptions::default()
        },
    );
    let address = env
        .base
        .as_ref()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let connect = || {
        let stream = TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    };
    let closed_within = |mut stream: TcpStream| {
        let started = Instant::now();
        let mut buffer = Vec::new();
        let _ = stream.read_to_end(&mut buffer);
        (
            started.elapsed(),
            String::from_utf8_lossy(&buffer).into_owned(),
        )
    };
    // Headers never finished: the connection is closed after the header timeout.
    let mut slow = connect();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (waited, _) = closed_within(slow);
    assert!(waited < Duration::from_secs(3), "held {waited:?}");
    // A body that never ends: 408 after the request timeout.
    let mut slow = connect();
    slow.write_all(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=").unwrap();
    let (waited, answer) = closed_within(slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(waited < Duration::from_secs(3), "held {waited:?}");
    // A request head over 64 KiB is refused (431) and the server serves on.
    let mut big = connect();
    let _ = big.write_all(
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(100 * 1024)
        )
        .as_bytes(),
    );
    let (_, answer) = closed_within(big);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let mut fits = connect();
    fits.write_all(
        format!(
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(32 * 1024)
        )
        .as_bytes(),
    )
    .unwrap();
    let (_, answer) = closed_within(fits);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Four kept-alive connections from one address are the most: a fifth is closed at once.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = connect();
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            let mut answer = [0u8; 64];
            let read = stream.read(&mut answer).unwrap();
            assert!(
                answer[..read].starts_with(b"HTTP/1.1 200"),
                "served and kept alive"
            );
            stream
        })
        .collect();
    let (_, answer) = {
        let mut fifth = connect();
        let _ = fifth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        closed_within(fifth)
    };
    assert!(answer.is_empty(), "a fifth connection was served: {answer}");
    drop(idle);
    assert!(wait_until(Duration::from_secs(5), || {
        let mut again = connect();
        let _ = again.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        closed_within(again).1.starts_with("HTTP/1.1 200")
    }));
}

/// Toll fraud inside allowed prefixes: destinations are allowed by ISO region (US and CA, not
/// the other +1 countries), only to lines that receive text messages, never to denied prefixes
/// nor (unless allowed) to test ranges; numbers written the usual ways are read.
#[test]
fn codes_go_only_to_mobile_lines_of_allowed_regions() {
    let env = web_env(
        vec![script("sms_otp", shipped_script())
            .with("[scripts.properties]\nSendOTPDirectlyToMobile = \"true\"")],
        EnvOptions {
            sms: "allowed_regions = [\"US\", \"CA\", \"GB\"]\ndenied_prefixes = [\"+4474009\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100".into(),
            ..EnvOptions::default()
        },
    );
    let refused = "Text messages cannot be sent to this number.";
    for (typed, sent_to) in [
        ("+1 876 555 0123", None),  // Jamaica: +1, not US or CA
        ("+44 909 879 0123", None), // premium rate
        ("+44 800 123 4567", None), // toll free
        ("+44 20 7946 0123", None), // a London landline
        ("+44 7400 999999", None),  // a denied prefix
        ("+44 7700 900123", None),  // a drama range, test numbers not allowed
        ("+44 (0)7400 123456", Some("+447400123456")),
        ("(+44) 7400 123457", Some("+447400123457")),
        ("+1 650 253 0000", Some("+16502530000")), // US: fixed line or mobile
    ] {
        let before = env.sms.count();
        let login = env.web_login(None);
        let answer = login.submit(&[("mobile", typed)]);
        match sent_to {
            None => {
                assert!(stayed(&answer), "{typed}");
                assert_eq!(
                    message_of(&login.page()).as_deref(),
                    Some(refused),
                    "{typed}"
                );
                assert_eq!(env.sms.count(), before, "{typed}: nothing sent");
            }
            Some(number) => {
                assert_eq!(env.sms.count(), before + 1, "{typed}");
                assert_eq!(env.sms.last().0, number, "{typed}");
            }
        }
    }
}
