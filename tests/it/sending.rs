//! Sending limits and number handling around every SMS: each limit is hit exactly at its number,
//! refusals say when to try again (429 + Retry-After over HTTP), numbers are normalised or refused.

use crate::support::web::{csrf_of, Browser};
use crate::support::*;

fn env_with_sms(sms: &str) -> TestEnv {
    TestEnv::with_options(
        vec![script("sms_otp", &shipped_script())],
        EnvOptions {
            sms: sms.into(),
            ..EnvOptions::default()
        },
    )
}

fn step_one_from(env: &TestEnv, ip: &str) -> gatehouse::flow::StepOutcome {
    let page = env.start(None).unwrap();
    let params = gatehouse::flow::hooks::RequestParams::from_pairs([
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ])
    .with_client_ip(Some(ip.parse().unwrap()));
    env.app.engine.submit(&page.login, 1, &params).unwrap()
}

#[test]
fn per_number_limit_is_hit_exactly_at_five_an_hour() {
    let env = env_with_sms("allowed_prefixes = [\"+44\"]\nper_number_per_hour = 5\nper_number_per_day = 10\nper_address_per_hour = 1000");
    for i in 0..5 {
        expect_next(step_one_from(&env, &format!("198.51.100.{i}")));
    }
    let refused = expect_retry(step_one_from(&env, "198.51.100.77"));
    assert_eq!(env.sms.count(), 5);
    let wait = refused.retry_after.expect("a retry-after");
    assert!((3590..=3600).contains(&wait), "{wait}");
    assert_eq!(
        refused.message.as_deref(),
        Some("Too many codes were sent. Try again in 60 minutes.")
    );
    let log = env.wait_for_log(
        "sms refused: to=+44******0123: too many codes were sent to this number in the last hour",
    );
    assert!(!log.contains(ALICE_PHONE), "{log}");
}

#[test]
fn per_address_limit_counts_each_client_address() {
    let env = env_with_sms("allowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 2");
    expect_next(step_one_from(&env, "203.0.113.5"));
    expect_next(step_one_from(&env, "203.0.113.5"));
    let refused = expect_retry(step_one_from(&env, "203.0.113.5"));
    assert!(refused.retry_after.is_some_and(|s| s > 3500));
    expect_next(step_one_from(&env, "203.0.113.6"));
    assert_eq!(env.sms.count(), 3);
}

#[test]
fn daily_budget_pauses_sending_and_alerts() {
    let env = env_with_sms("allowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100\ndaily_budget = 2");
    expect_next(step_one_from(&env, "192.0.2.1"));
    expect_next(step_one_from(&env, "192.0.2.2"));
    expect_retry(step_one_from(&env, "192.0.2.3"));
    expect_retry(step_one_from(&env, "192.0.2.4"));
    let log = env.wait_for_log("sending is paused for today");
    assert_eq!(
        log.matches("ALERT: the daily SMS budget of 2 messages is spent")
            .count(),
        1,
        "one alert:\n{log}"
    );
    assert_eq!(env.sms.count(), 2);
}

#[test]
fn destinations_outside_the_allowed_prefixes_are_refused() {
    let env = env_with_sms("allowed_prefixes = [\"+1\"]");
    let refused = expect_retry(step_one_from(&env, "192.0.2.9"));
    assert_eq!(
        refused.message.as_deref(),
        Some("Text messages cannot be sent to this number.")
    );
    assert_eq!(env.sms.count(), 0);
    env.wait_for_log(
        "sms refused: to=+44******0123: the destination country is not in [sms] allowed_prefixes",
    );
    // An empty list sends nowhere.
    let nowhere = TestEnv::with_options(
        vec![script("sms_otp", &shipped_script())],
        EnvOptions {
            sms: "allowed_prefixes = []".into(),
            ..EnvOptions::default()
        },
    );
    expect_retry(step_one_from(&nowhere, "192.0.2.9"));
    assert_eq!(nowhere.sms.count(), 0);
}

#[test]
fn numbers_are_normalised_to_e164_or_refused() {
    let script_reading = |attribute: &str| {
        shipped_script().replace("\"phoneNumberVerified\";", &format!("\"{attribute}\";"))
    };
    let env = TestEnv::with_options(
        vec![
            script("local", &script_reading("localPhone")),
            script("tel", &script_reading("telPhone")),
            script("two", &script_reading("twoPhones")),
        ],
        EnvOptions {
            sms: "allowed_prefixes = [\"+44\"]\ndefault_region = \"GB\"".into(),
            ..EnvOptions::default()
        },
    );
    for (attribute, value) in [
        ("localPhone", "07700 900123"),
        ("telPhone", "tel:+447700900123"),
        ("twoPhones", "+447700900123, +447700900124"),
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
    let page = env.start(Some("local")).unwrap();
    expect_next(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(env.sms.last().0, ALICE_PHONE, "the provider gets E.164");
    for acr in ["tel", "two"] {
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
    assert_eq!(env.sms.count(), 1);
    env.wait_for_log("not a phone number this server accepts: unexpected characters");
}

#[test]
fn a_refused_send_answers_429_with_retry_after_over_http() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", &shipped_script())],
        EnvOptions { web: true, sms: "allowed_prefixes = [\"+44\"]\nper_number_per_hour = 1\nper_number_per_day = 10\nper_address_per_hour = 100".into(), ..EnvOptions::default() },
    );
    let base = env.base.clone().unwrap();
    let url = format!("{base}/authorize?client_id={RP_ID}&redirect_uri={}&response_type=code&scope=openid&code_challenge=bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g&code_challenge_method=S256", url::form_urlencoded::byte_serialize(RP_REDIRECT.as_bytes()).collect::<String>());
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let browser = Browser::new();
        browser.get(&url);
        let csrf = csrf_of(&browser.get(&format!("{base}/login")).text().unwrap());
        let response = browser.post(
            &format!("{base}/login"),
            &[
                ("csrf", &csrf),
                ("step", "1"),
                ("username", "alice"),
                ("password", ALICE_PASSWORD),
            ],
        );
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let status = response.status().as_u16();
        let body = response.text().unwrap();
        statuses.push((
            status,
            retry_after,
            body.contains("Try again in 60 minutes"),
        ));
    }
    assert_eq!(statuses[0], (303, None, false));
    assert_eq!(statuses[1].0, 429);
    assert!(
        statuses[1].1.is_some_and(|s| (3590..=3600).contains(&s)),
        "{statuses:?}"
    );
    assert!(statuses[1].2);
}

#[test]
fn resend_has_a_doubling_cooldown_and_at_most_three_sends_per_login() {
    let env = env_with_sms("allowed_prefixes = [\"+44\"]\nper_number_per_hour = 100\nper_number_per_day = 100\nper_address_per_hour = 100\nmax_sends_per_login = 3\nresend_cooldown_seconds = 1");
    let login = env.pass_password(None);
    let first = env.sms.last_code();
    let params = gatehouse::flow::hooks::RequestParams::new();
    // Too early: the cooldown says when.
    let early = expect_retry(env.app.engine.resend(&login, &params).unwrap());
    assert_eq!(early.retry_after, Some(1));
    assert_eq!(env.sms.count(), 1);
    // Waiting out the one-second (then two-second) cooldowns is what is tested here.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let resent = expect_retry(env.app.engine.resend(&login, &params).unwrap());
    assert_eq!(resent.message.as_deref(), Some("A new code was sent."));
    let second = env.sms.last_code();
    assert_eq!(env.sms.count(), 2);
    assert_eq!(
        env.sms.last().1,
        format!("Your code is {second}. It expires in 5 minutes.\n\n@localhost #{second}"),
        "same text, new code"
    );
    assert_eq!(
        expect_retry(env.app.engine.resend(&login, &params).unwrap()).retry_after,
        Some(2)
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    expect_retry(env.app.engine.resend(&login, &params).unwrap());
    assert_eq!(env.sms.count(), 3);
    // The fourth send of this login is refused outright: only a new login helps.
    let refused = expect_retry(env.app.engine.resend(&login, &params).unwrap());
    assert_eq!(refused.retry_after, Some(0));
    assert_eq!(
        refused.message.as_deref(),
        Some("Too many codes were sent for this sign-in. Start again.")
    );
    assert_eq!(env.sms.count(), 3);
    // Only the latest code works.
    if first != env.sms.last_code() {
        expect_retry(env.submit(&login, 2, &[("passcode", &first)]).unwrap());
    }
    expect_authenticated(
        env.submit(&login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
}

#[test]
fn resend_enable_false_turns_resending_off() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", &shipped_script())
            .with("[scripts.properties]\nResendEnable = \"false\"")],
        EnvOptions::default(),
    );
    let login = env.pass_password(None);
    let params = gatehouse::flow::hooks::RequestParams::new();
    assert!(matches!(
        env.app.engine.resend(&login, &params),
        Err(gatehouse::flow::FlowError::NothingToResend)
    ));
    assert_eq!(env.sms.count(), 1);
}

#[test]
fn the_passcode_page_resends_over_http() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", &shipped_script())],
        EnvOptions {
            web: true,
            sms: "allowed_prefixes = [\"+44\"]\nresend_cooldown_seconds = 60".into(),
            ..EnvOptions::default()
        },
    );
    let base = env.base.clone().unwrap();
    let browser = Browser::new();
    browser.get(&format!("{base}/authorize?client_id={RP_ID}&redirect_uri={}&response_type=code&scope=openid&code_challenge=bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g&code_challenge_method=S256", url::form_urlencoded::byte_serialize(RP_REDIRECT.as_bytes()).collect::<String>()));
    let csrf = csrf_of(&browser.get(&format!("{base}/login")).text().unwrap());
    browser.post(
        &format!("{base}/login"),
        &[
            ("csrf", &csrf),
            ("step", "1"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ],
    );
    let page = browser.get(&format!("{base}/login")).text().unwrap();
    assert!(page.contains("action=\"/login/resend\""), "{page}");
    let csrf = csrf_of(&page);
    let early = browser.post(&format!("{base}/login/resend"), &[("csrf", &csrf)]);
    assert_eq!(early.status(), 429);
    let wait: u64 = early.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&wait), "{wait}");
    assert!(early.text().unwrap().contains("Try again in 1 minutes"));
    assert_eq!(
        browser
            .post(&format!("{base}/login/resend"), &[("csrf", "forged")])
            .status(),
        403
    );
    assert_eq!(env.sms.count(), 1);
}

#[test]
fn messages_follow_accept_language_and_end_with_the_webotp_line() {
    let env = TestEnv::new(vec![script("sms_otp", &shipped_script()).with(
        "[scripts.properties]\nmessage = \"Code {code} ({minutes} min)\"\n\"message.fr\" = \"Code {code} ({minutes} min) en français\"",
    )]);
    let send = |language: Option<&str>| {
        let page = env.start(None).unwrap();
        let params = gatehouse::flow::hooks::RequestParams::from_pairs([
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ])
        .with_accept_language(language.map(str::to_owned));
        expect_next(env.app.engine.submit(&page.login, 1, &params).unwrap());
        env.sms.last().1
    };
    let french = send(Some("fr-CH, fr;q=0.9, en;q=0.5"));
    let code = env.sms.last_code();
    assert_eq!(
        french,
        format!("Code {code} (5 min) en français\n\n@localhost #{code}")
    );
    let other = send(Some("de-DE, ja;q=0.5"));
    assert!(
        other.starts_with("Code ") && other.contains("(5 min)\n\n@localhost #"),
        "{other}"
    );
    assert!(!other.contains("français"));
    let none = send(None);
    assert!(!none.contains("français"), "{none}");
}
