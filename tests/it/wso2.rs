//! The WSO2 SMS OTP options of the shipped sms_otp script, each on and off.

use gatehouse::ports::AttributeChange;

use crate::support::*;

fn with_options(properties: &str) -> TestEnv {
    TestEnv::new(vec![
        script("sms_otp", &shipped_script()).with(&format!("[scripts.properties]\n{properties}"))
    ])
}

fn wrong(code: &str) -> String {
    if code.starts_with('1') {
        "2".repeat(code.len())
    } else {
        "1".repeat(code.len())
    }
}

#[test]
fn retry_enable() {
    let env = with_options("RetryEnable = \"false\"");
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    let page = expect_retry(
        env.submit(&login, 2, &[("passcode", &wrong(&code))])
            .unwrap(),
    );
    assert_eq!(
        page.message.as_deref(),
        Some("Wrong code. Start again to get a new one.")
    );
    expect_retry(env.submit(&login, 2, &[("passcode", &code)]).unwrap());

    let env = with_options("RetryEnable = \"true\"");
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    expect_retry(
        env.submit(&login, 2, &[("passcode", &wrong(&code))])
            .unwrap(),
    );
    expect_authenticated(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
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
    let login = env.pass_password(None);
    let done = expect_authenticated(
        env.submit(&login, 2, &[("passcode", &codes[0].to_lowercase())])
            .unwrap(),
    );
    assert_eq!(done.user, "alice");
    env.wait_for_log("backup code used by alice: 9 left");
    let login = env.pass_password(None);
    let again = expect_retry(env.submit(&login, 2, &[("passcode", &codes[0])]).unwrap());
    assert_eq!(
        again.message.as_deref(),
        Some("Wrong code. Please try again.")
    );
    // The SMS code still works alongside.
    expect_authenticated(
        env.submit(&login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
    assert_log_clean(&env, &[&codes[0], &codes[1]]);
}

#[test]
fn backup_code_off_is_just_a_wrong_code() {
    let env = with_options("BackupCode = \"false\"");
    let codes = backup_codes(&env);
    let login = env.pass_password(None);
    expect_retry(env.submit(&login, 2, &[("passcode", &codes[0])]).unwrap());
    expect_authenticated(
        env.submit(&login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
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
    let page = env.start(None).unwrap();
    let done = expect_authenticated(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(done.steps_passed, vec![1]);
    assert_eq!(env.sms.count(), 0);
    // bob did not opt out (and has no phoneNumberVerified): still no shortcut for him.
    let page = env.start(None).unwrap();
    expect_retry(
        env.submit(
            &page.login,
            1,
            &[("username", "bob"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
}

#[test]
fn sms_otp_mandatory_or_claims_off_keep_the_sms_step() {
    for properties in [
        "SMSOTPMandatory = \"true\"\nSMSOTPEnableByUserClaim = \"true\"",
        "SMSOTPMandatory = \"false\"\nSMSOTPEnableByUserClaim = \"false\"",
    ] {
        let env = with_options(properties);
        opt_out_alice(&env);
        env.pass_password(None);
        assert_eq!(env.sms.count(), 1, "{properties}");
    }
}

#[test]
fn token_expiry_time() {
    let env = with_options("TokenExpiryTime = \"1\"");
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    // Letting the one-second lifetime pass is what is tested.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let page = expect_retry(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
    assert_eq!(
        page.message.as_deref(),
        Some("The code has expired. Start again to get a new one.")
    );
    // Longer than the [otp] policy: refused, no code sent.
    let env = with_options("TokenExpiryTime = \"900\"");
    let page = env.start(None).unwrap();
    expect_retry(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(env.sms.count(), 0);
    env.wait_for_log("not 900");
}

#[test]
fn capture_and_update_mobile_number_saves_only_a_verified_number() {
    let env = with_options("CaptureAndUpdateMobileNumber = \"true\"");
    // carol has no phone number.
    let page = env.start(None).unwrap();
    let ask = expect_next(
        env.submit(
            &page.login,
            1,
            &[("username", "carol"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!((ask.step, ask.page.as_str()), (2, "mobile"));
    assert_eq!(env.sms.count(), 0);
    let retry = expect_retry(
        env.submit(&ask.login, 2, &[("mobile", "tel:+447700900456")])
            .unwrap(),
    );
    assert_eq!(
        retry.message.as_deref(),
        Some("Enter a mobile number with its country code, e.g. +44 7700 900123.")
    );
    let code_page = expect_next(
        env.submit(&ask.login, 2, &[("mobile", "+44 7700 900456")])
            .unwrap(),
    );
    assert_eq!((code_page.step, code_page.page.as_str()), (3, "otp_sms"));
    assert_eq!(env.sms.last().0, "+447700900456");
    let code = env.sms.last_code();
    expect_retry(
        env.submit(&ask.login, 3, &[("passcode", &wrong(&code))])
            .unwrap(),
    );
    let carol = env.app.users.find("carol").unwrap().unwrap();
    assert_eq!(
        carol.first("phoneNumberVerified"),
        None,
        "not saved before the code is verified"
    );
    let done = expect_authenticated(env.submit(&ask.login, 3, &[("passcode", &code)]).unwrap());
    assert_eq!(done.steps_passed, vec![1, 2, 3]);
    let carol = env.app.users.find("carol").unwrap().unwrap();
    assert_eq!(carol.first("phoneNumberVerified"), Some("+447700900456"));
    // Off: no number, no login.
    let env = with_options("CaptureAndUpdateMobileNumber = \"false\"");
    let page = env.start(None).unwrap();
    expect_retry(
        env.submit(
            &page.login,
            1,
            &[("username", "carol"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
}

#[test]
fn redirect_to_multi_option_page_on_failure() {
    let scripts = |flag: &str| {
        vec![
            script("sms_otp", &shipped_script()).with(&format!(
                "[scripts.properties]\nredirectToMultiOptionPageOnFailure = \"{flag}\"\nalternative_acr = \"other\""
            )),
            script("other", &shipped_script()),
        ]
    };
    let env = TestEnv::new(scripts("true"));
    let login = env.pass_password(None);
    assert!(
        env.app
            .engine
            .current(&login)
            .unwrap()
            .alternatives
            .is_empty(),
        "nothing offered before a failure"
    );
    let failed = expect_retry(
        env.submit(&login, 2, &[("passcode", &wrong(&env.sms.last_code()))])
            .unwrap(),
    );
    assert_eq!(failed.alternatives, ["other"]);
    // Only what was offered can be chosen.
    assert!(env.app.engine.switch(&login, "sms_otp").is_err());
    let switched = env.app.engine.switch(&login, "other").unwrap();
    assert_eq!((switched.acr.as_str(), switched.step), ("other", 1));
    assert!(matches!(
        env.submit(&login, 2, &[("passcode", "1")]),
        Err(gatehouse::flow::FlowError::LoginNotFound)
    ));
    let next = expect_next(
        env.submit(
            &switched.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    let done = expect_authenticated(
        env.submit(&next.login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
    assert_eq!(done.acr, "other");

    let env = TestEnv::new(scripts("false"));
    let login = env.pass_password(None);
    let failed = expect_retry(
        env.submit(&login, 2, &[("passcode", &wrong(&env.sms.last_code()))])
            .unwrap(),
    );
    assert!(failed.alternatives.is_empty());
}

#[test]
fn the_multi_option_page_switches_methods_over_http() {
    use crate::support::web::{csrf_of, location, Browser};
    let env = TestEnv::with_options(
        vec![
            script("sms_otp", &shipped_script())
                .with("[scripts.properties]\nredirectToMultiOptionPageOnFailure = \"true\"\nalternative_acr = \"other\""),
            script("other", &shipped_script()),
        ],
        EnvOptions { web: true, ..EnvOptions::default() },
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
    let csrf = csrf_of(&browser.get(&format!("{base}/login")).text().unwrap());
    browser.post(
        &format!("{base}/login"),
        &[
            ("csrf", &csrf),
            ("step", "2"),
            ("passcode", &wrong(&env.sms.last_code())),
        ],
    );
    let page = browser.get(&format!("{base}/login")).text().unwrap();
    assert!(
        page.contains("Other ways to sign in") && page.contains("value=\"other\""),
        "{page}"
    );
    let csrf = csrf_of(&page);
    let switched = browser.post(
        &format!("{base}/login/switch"),
        &[("csrf", &csrf), ("acr", "other")],
    );
    assert_eq!(location(&switched), "/login");
    let page = browser.get(&format!("{base}/login")).text().unwrap();
    assert!(
        page.contains("name=\"password\""),
        "the other method starts at its first step: {page}"
    );
}
