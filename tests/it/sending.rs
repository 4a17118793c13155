//! What goes out with a code: the message text by language with the WebOTP line, and the
//! resend button of the passcode page (its refusals are 429 with Retry-After; the limits
//! themselves are in limits_http.rs).

use crate::support::web::message_of;
use crate::support::*;

#[test]
fn the_passcode_page_resends_over_http() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            web: true,
            sms: "allow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nresend_cooldown_seconds = 60".into(),
            ..EnvOptions::default()
        },
    );
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    let page = login.page();
    assert!(page.contains("action=\"/login/resend\""), "{page}");
    let early = login.resend();
    assert_eq!(early.status(), 429);
    let wait: u64 = early.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&wait), "{wait}");
    assert_eq!(
        message_of(&early.text().unwrap()).as_deref(),
        Some("Too many codes were sent. Try again in 1 minute.")
    );
    let forged = login.browser.post(
        &format!("{}/login/resend", login.base),
        &[("csrf", "forged")],
    );
    assert_eq!(forged.status(), 403);
    assert_eq!(env.sms.count(), 1);
}

#[test]
fn messages_follow_accept_language_and_end_with_the_webotp_line() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script()).with(
            "[scripts.properties]\nmessage = \"Code {code} ({minutes} min)\"\n\"message.fr\" = \"Code {code} ({minutes} min) en français\"",
        )],
        EnvOptions {
            web: true,
            ..EnvOptions::default()
        },
    );
    let base = env.base.clone().unwrap();
    let host = url::Url::parse(&base)
        .unwrap()
        .host_str()
        .unwrap()
        .to_owned();
    let send = |language: Option<&str>| {
        let headers: Vec<(&str, &str)> = language
            .map(|l| ("accept-language", l))
            .into_iter()
            .collect();
        let login = crate::support::web::WebLogin::start_with(&base, None, &headers);
        login.password("alice", ALICE_PASSWORD);
        env.sms.last().1
    };
    let french = send(Some("fr-CH, fr;q=0.9, en;q=0.5"));
    let code = env.sms.last_code();
    assert_eq!(
        french,
        format!("Code {code} (5 min) en français\n\n@{host} #{code}")
    );
    let other = send(Some("de-DE, ja;q=0.5"));
    let code = env.sms.last_code();
    assert_eq!(other, format!("Code {code} (5 min)\n\n@{host} #{code}"));
    let none = send(None);
    assert!(!none.contains("français"), "{none}");
}
