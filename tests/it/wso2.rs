//! The WSO2 SMS OTP options of the shipped sms_otp script, each on and off, driven through the
//! HTTP endpoints (authorize, the step pages, resend, switch, token, userinfo) with the test SMS
//! sink.

use gatehouse::ports::AttributeChange;

use crate::support::web::{location, message_of, stayed, WebLogin};
use crate::support::*;

fn with_options(properties: &str) -> TestEnv {
    web_env(
        vec![script("sms_otp", shipped_script())
            .with(&format!("[scripts.properties]\n{properties}"))],
        EnvOptions::default(),
    )
}

fn wrong(code: &str) -> String {
    if code.starts_with('1') {
        "2".repeat(code.len())
    } else {
        "1".repeat(code.len())
    }
}

/// alice's password on a new sign-in; the passcode page is next.
fn past_password(env: &TestEnv) -> WebLogin {
    let login = env.web_login(None);
    let answer = login.password("alice", ALICE_PASSWORD);
    assert_eq!(location(&answer), "/login");
    assert!(
        login.page().contains("name=\"passcode\""),
        "the passcode page is next"
    );
    login
}

/// Answers with `fields` and expects the same step again; returns its message.
fn refused(login: &WebLogin, fields: &[(&str, &str)]) -> Option<String> {
    let answer = login.submit(fields);
    assert!(stayed(&answer), "expected the same step again");
    message_of(&login.page())
}

/// A typed number that is malformed, two numbers, or in a country outside [sms]
/// allowed_prefixes: the same page again with a hint, and nothing sent.
fn refuses_unusable_numbers(env: &TestEnv, login: &WebLogin) {
    for unusable in [
        "tel:+447700900456",
        "+447700900456, +447700900457",
        "07700 9OO456",
        "not a number",
    ] {
        assert_eq!(
            refused(login, &[("mobile", unusable)]).as_deref(),
            Some("Enter a mobile number with its country code, e.g. +44 7700 900123."),
            "{unusable}"
        );
    }
    assert_eq!(
        refused(login, &[("mobile", "+33 6 12 34 56 78")]).as_deref(),
        Some("Text messages cannot be sent to this number."),
        "a country outside [sms] allowed_prefixes"
    );
    assert_eq!(env.sms.count(), 0);
}

fn amr(claims: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(claims["amr"].clone()).unwrap()
}

#[test]
fn retry_enable() {
    let env = with_options("RetryEnable = \"false\"");
    let login = past_password(&env);
    let code = env.sms.last_code();
    assert_eq!(
        refused(&login, &[("passcode", &wrong(&code))]).as_deref(),
        Some("Wrong code. Start again to get a new one.")
    );
    // The code was dropped with the first wrong guess.
    refused(&login, &[("passcode", &code)]);

    let env = with_options("RetryEnable = \"true\"");
    let login = past_password(&env);
    let code = env.sms.last_code();
    assert_eq!(
        refused(&login, &[("passcode", &wrong(&code))]).as_deref(),
        Some("Wrong code. Please try again.")
    );
    let claims = login.finish(login.passcode(&code));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["acr"], "sms_otp");
    assert_eq!(amr(&claims), ["pwd", "sms", "mfa"]);
}

#[test]
fn resend_enable() {
    let env = with_options("ResendEnable = \"true\"");
    let login = past_password(&env);
    let first = env.sms.last_code();
    assert!(login.page().contains("Send a new code"));
    let answer = login.resend();
    assert_eq!(location(&answer), "/login");
    assert_eq!(env.sms.count(), 2);
    assert_eq!(
        message_of(&login.page()).as_deref(),
        Some("A new code was sent.")
    );
    let second = env.sms.last_code();
    if first != second {
        refused(&login, &[("passcode", &first)]);
    }
    login.finish(login.passcode(&second));

    let env = with_options("ResendEnable = \"false\"");
    let login = past_password(&env);
    let page = login.page();
    assert!(
        !page.contains("Send a new code") && !page.contains("/login/resend"),
        "{page}"
    );
    // The endpoint refuses too: nothing is sent, the passcode page stays.
    let answer = login.resend();
    assert_eq!(location(&answer), "/login");
    assert_eq!(env.sms.count(), 1);
    login.finish(login.passcode(&env.sms.last_code()));
}

fn backup_codes(env: &TestEnv) -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["users", "backup-codes", "alice", "--config"])
        .arg(env.root().join("config/gatehouse.toml"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let codes: Vec<String> = text.lines().skip(1).map(|l| l.trim().to_owned()).collect();
    assert_eq!(codes.len(), 10, "{text}");
    codes
}

#[test]
fn backup_code_on_is_single_use_and_logged() {
    let env = with_options("BackupCode = \"true\"");
    let codes = backup_codes(&env);
    let stored = std::fs::read_to_string(env.root().join("config/users.toml")).unwrap();
    assert!(
        !stored.contains(&codes[0]) && stored.contains("gatehouseBackupCodes"),
        "only hashes are stored"
    );
    let login = past_password(&env);
    let claims = login.finish(login.passcode(&codes[0].to_lowercase()));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(amr(&claims), ["pwd", "otp", "mfa"]);
    env.wait_for_log("backup code used by alice: 9 left");
    // Used once: the second time it is a wrong code.
    let login = past_password(&env);
    assert_eq!(
        refused(&login, &[("passcode", &codes[0])]).as_deref(),
        Some("Wrong code. Please try again.")
    );
    login.finish(login.passcode(&codes[1]));
    env.wait_for_log("backup code used by alice: 8 left");
    assert_log_clean(&env, &[&codes[0], &codes[1]]);
}

/// One backup code posted in several sign-ins at once (stolen and raced, or two tabs): it signs
/// in once; the others are wrong codes.
#[test]
fn a_backup_code_used_in_sign_ins_at_once_signs_in_once() {
    let env = with_options("BackupCode = \"true\"");
    let codes = backup_codes(&env);
    let logins: Vec<_> = (0..4).map(|_| past_password(&env)).collect();
    let answers: Vec<_> = std::thread::scope(|s| {
        let sent: Vec<_> = logins
            .iter()
            .map(|login| s.spawn(|| login.passcode(&codes[0])))
            .collect();
        sent.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let signed_in = answers
        .iter()
        .filter(|a| location(a).contains("code="))
        .count();
    assert_eq!(
        signed_in,
        1,
        "{:?}",
        answers.iter().map(location).collect::<Vec<_>>()
    );
    env.wait_for_log("backup code used by alice: 9 left");
    let log = env.wait_for_log("backup code rejected");
    assert_eq!(log.matches("backup code used by alice").count(), 1, "{log}");
}

#[test]
fn backup_code_off_is_just_a_wrong_code() {
    let env = with_options("BackupCode = \"false\"");
    let codes = backup_codes(&env);
    let login = past_password(&env);
    refused(&login, &[("passcode", &codes[0])]);
    login.finish(login.passcode(&env.sms.last_code()));
}

fn opt_out_alice(env: &TestEnv) {
    env.app
        .users
        .update(
            "alice",
            AttributeChange::Replace {
                attribute: "smsOtpDisabled".into(),
                values: vec!["true".into()],
            },
        )
        .unwrap();
}

#[test]
fn sms_otp_enable_by_user_claim_when_not_mandatory() {
    let env = with_options("SMSOTPMandatory = \"false\"\nSMSOTPEnableByUserClaim = \"true\"");
    opt_out_alice(&env);
    let login = env.web_login(None);
    let claims = login.finish(login.password("alice", ALICE_PASSWORD));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(amr(&claims), ["pwd"], "one factor, and the token says so");
    assert_eq!(env.sms.count(), 0);
    // bob did not opt out (and has no phoneNumberVerified): no shortcut for him.
    let login = env.web_login(None);
    assert!(stayed(&login.password("bob", ALICE_PASSWORD)));
}

#[test]
fn sms_otp_mandatory_or_claims_off_keep_the_sms_step() {
    for properties in [
        "SMSOTPMandatory = \"true\"\nSMSOTPEnableByUserClaim = \"true\"",
        "SMSOTPMandatory = \"false\"\nSMSOTPEnableByUserClaim = \"false\"",
    ] {
        let env = with_options(properties);
        opt_out_alice(&env);
        past_password(&env);
        assert_eq!(env.sms.count(), 1, "{properties}");
    }
}

#[test]
fn token_expiry_time() {
    let env = with_options("TokenExpiryTime = \"1\"");
    let login = past_password(&env);
    let code = env.sms.last_code();
    // Letting the one-second lifetime pass is what is tested.
    env.advance(std::time::Duration::from_millis(1100));
    assert_eq!(
        refused(&login, &[("passcode", &code)]).as_deref(),
        Some("The code has expired. Start again to get a new one.")
    );
    // Longer than the [otp] policy: refused, no code sent.
    let env = with_options("TokenExpiryTime = \"900\"");
    let login = env.web_login(None);
    assert!(stayed(&login.password("alice", ALICE_PASSWORD)));
    assert_eq!(env.sms.count(), 0);
    env.wait_for_log("not 900");
}

#[test]
fn capture_and_update_mobile_number_saves_only_a_verified_number() {
    let env = with_options("CaptureAndUpdateMobileNumber = \"true\"");
    // carol has no phone number: she is asked for one.
    let login = env.web_login(None);
    assert_eq!(location(&login.password("carol", ALICE_PASSWORD)), "/login");
    assert!(login.page().contains("Add your mobile number"));
    assert_eq!(env.sms.count(), 0);
    refuses_unusable_numbers(&env, &login);
    assert_eq!(
        location(&login.submit(&[("mobile", "+44 7700 900456")])),
        "/login"
    );
    let page = login.page();
    assert!(page.contains("+44******0456"), "the masked number: {page}");
    assert_eq!(env.sms.last().0, "+447700900456", "sent as E.164");
    let code = env.sms.last_code();
    refused(&login, &[("passcode", &wrong(&code))]);
    let carol = env.app.users.find("carol").unwrap().unwrap();
    assert_eq!(
        carol.first("phoneNumberVerified"),
        None,
        "not saved before the code is verified"
    );
    let claims = login.finish(login.passcode(&code));
    assert_eq!(claims["sub"], "carol");
    let carol = env.app.users.find("carol").unwrap().unwrap();
    assert_eq!(carol.first("phoneNumberVerified"), Some("+447700900456"));
    assert_log_clean(&env, &[&code, "+447700900456"]);

    // Off: no number, no sign-in.
    let env = with_options("CaptureAndUpdateMobileNumber = \"false\"");
    let login = env.web_login(None);
    assert!(stayed(&login.password("carol", ALICE_PASSWORD)));
    assert_eq!(env.sms.count(), 0);
}

#[test]
fn send_otp_directly_to_mobile_signs_in_the_holder_of_a_number() {
    let env = with_options("SendOTPDirectlyToMobile = \"true\"");
    let login = env.web_login(None);
    let page = login.page();
    assert!(
        page.contains("name=\"mobile\"") && page.contains("name=\"password\""),
        "both ways are offered: {page}"
    );
    refuses_unusable_numbers(&env, &login);
    assert_eq!(
        location(&login.submit(&[("mobile", "+44 7700 900999")])),
        "/login"
    );
    assert_eq!(env.sms.last().0, "+447700900999");
    let page = login.page();
    assert!(page.contains("+44******0999"), "{page}");
    let code = env.sms.last_code();
    refused(&login, &[("passcode", &wrong(&code))]);
    let claims = login.finish(login.passcode(&code));
    assert_eq!(claims["sub"], "tel:+447700900999");
    assert_eq!(claims["acr"], "sms_otp");
    assert_eq!(amr(&claims), ["sms"], "one factor: possession of the phone");
    assert_eq!(claims["userinfo"]["phone_number"], "+447700900999");
    assert_eq!(claims["userinfo"]["phone_number_verified"], true);
    assert!(
        env.app.users.find("tel:+447700900999").unwrap().is_none(),
        "no account is created"
    );
    // Directory users still sign in with their password and code.
    let login = past_password(&env);
    let claims = login.finish(login.passcode(&env.sms.last_code()));
    assert_eq!(claims["sub"], "alice");
    assert_log_clean(&env, &[&code, "+447700900999", "7700 900999"]);

    // Off, or on without SMSOTPMandatory: no mobile form, and a number alone signs nobody in.
    for properties in [
        "SendOTPDirectlyToMobile = \"false\"",
        "SendOTPDirectlyToMobile = \"true\"\nSMSOTPMandatory = \"false\"",
    ] {
        let env = with_options(properties);
        let login = env.web_login(None);
        assert!(!login.page().contains("name=\"mobile\""), "{properties}");
        refused(&login, &[("mobile", "+447700900999")]);
        assert_eq!(env.sms.count(), 0, "{properties}");
    }
}

#[test]
fn redirect_to_multi_option_page_on_failure() {
    let scripts = |flag: &str| {
        vec![
            script("sms_otp", shipped_script()).with(&format!(
                "[scripts.properties]\nredirectToMultiOptionPageOnFailure = \"{flag}\"\nalternative_acr = \"other\""
            )),
            script("other", shipped_script()),
        ]
    };
    let env = web_env(scripts("true"), EnvOptions::default());
    let login = past_password(&env);
    assert!(
        !login.page().contains("Other ways to sign in"),
        "nothing offered before a failure"
    );
    refused(&login, &[("passcode", &wrong(&env.sms.last_code()))]);
    let page = login.page();
    assert!(
        page.contains("Other ways to sign in") && page.contains("value=\"other\""),
        "{page}"
    );
    // Only what was offered can be chosen.
    let refused_switch = login.post_from_page("/login/switch", &[("acr", "sms_otp")]);
    assert!(
        refused_switch.status().is_client_error() || location(&refused_switch) == "/login",
        "{}",
        refused_switch.status()
    );
    assert!(login.page().contains("name=\"passcode\""));
    let switched = login.post_from_page("/login/switch", &[("acr", "other")]);
    assert_eq!(location(&switched), "/login");
    assert!(
        login.page().contains("name=\"password\""),
        "the other method starts at its first step"
    );
    let answer = login.password("alice", ALICE_PASSWORD);
    assert_eq!(location(&answer), "/login");
    let claims = login.finish(login.passcode(&env.sms.last_code()));
    assert_eq!(claims["acr"], "other");

    let env = web_env(scripts("false"), EnvOptions::default());
    let login = past_password(&env);
    refused(&login, &[("passcode", &wrong(&env.sms.last_code()))]);
    assert!(!login.page().contains("Other ways to sign in"));
}
