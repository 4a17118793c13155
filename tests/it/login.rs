//! Full logins through the step engine, with the shipped script and small purpose-made ones.

use gatehouse::flow::{FlowError, StepOutcome, DEFAULT_FAILURE_MESSAGE};

use crate::support::*;

#[test]
fn happy_path_password_then_sms_code() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let first = env.start(None).unwrap();
    assert_eq!(
        (first.acr.as_str(), first.step, first.page.as_str()),
        ("sms_otp", 1, "")
    );
    let second = expect_next(
        env.submit(
            &first.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!((second.step, second.page.as_str()), (2, "otp_sms"));
    assert_eq!(
        second.working.get("sent_to").map(String::as_str),
        Some("+44******0123")
    );
    let (to, text) = env.sms.last();
    assert_eq!(to, ALICE_PHONE);
    let code = env.sms.last_code();
    assert_eq!(code.len(), 6);
    assert!(text.contains(&code));
    let done = expect_authenticated(
        env.submit(&second.login, 2, &[("passcode", &code)])
            .unwrap(),
    );
    assert_eq!(
        (
            done.user.as_str(),
            done.acr.as_str(),
            done.steps_passed.clone()
        ),
        ("alice", "sms_otp", vec![1, 2])
    );
    // The login is gone once finished: its handle cannot be replayed.
    assert!(matches!(
        env.submit(&second.login, 2, &[("passcode", &code)]),
        Err(FlowError::LoginNotFound)
    ));
}

#[test]
fn wrong_password_and_unknown_user_fail_alike_and_send_nothing() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    for (user, password) in [
        ("alice", "nope"),
        ("mallory", ALICE_PASSWORD),
        ("alice", ""),
        ("carol", ALICE_PASSWORD),
    ] {
        let page = env.start(None).unwrap();
        let retry = expect_retry(
            env.submit(
                &page.login,
                1,
                &[("username", user), ("password", password)],
            )
            .unwrap(),
        );
        assert_eq!(
            (retry.step, retry.message.as_deref()),
            (1, Some(DEFAULT_FAILURE_MESSAGE)),
            "{user}"
        );
    }
    assert_eq!(env.sms.count(), 0);
}

#[test]
fn wrong_code_is_retried_then_the_right_one_passes() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let retry = expect_retry(env.submit(&login, 2, &[("passcode", wrong)]).unwrap());
    assert_eq!(
        (retry.step, retry.message.as_deref()),
        (2, Some("Wrong code. Please try again."))
    );
    // Not-quite-codes count as wrong guesses, never as matches.
    for near in [format!("{code}0"), code[..5].to_owned(), format!("+{code}")] {
        expect_retry(env.submit(&login, 2, &[("passcode", &near)]).unwrap());
    }
    let done = expect_authenticated(
        env.submit(&login, 2, &[("passcode", &format!(" {code}\n"))])
            .unwrap(),
    );
    assert_eq!(done.user, "alice");
}

#[test]
fn five_wrong_codes_burn_the_code() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    let wrong = if code == "123456" { "654321" } else { "123456" };
    for _ in 0..4 {
        let retry = expect_retry(env.submit(&login, 2, &[("passcode", wrong)]).unwrap());
        assert_eq!(
            retry.message.as_deref(),
            Some("Wrong code. Please try again.")
        );
    }
    let burned = expect_retry(env.submit(&login, 2, &[("passcode", wrong)]).unwrap());
    assert_eq!(
        burned.message.as_deref(),
        Some("Too many wrong codes. Start again to get a new one.")
    );
    // The right code no longer helps.
    expect_retry(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
}

#[test]
fn expired_code_is_refused() {
    let source = shipped_script().replace("otp::issue()", "otp::issue(6, 1)");
    let env = TestEnv::new(vec![script("sms_otp", &source)]);
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    // Letting the one-second lifetime pass is the point of this test, not synchronisation.
    env.advance(std::time::Duration::from_millis(1100));
    let retry = expect_retry(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
    assert_eq!(
        retry.message.as_deref(),
        Some("The code has expired. Start again to get a new one.")
    );
}

#[test]
fn step_two_cannot_be_submitted_before_step_one() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let page = env.start(None).unwrap();
    let err = env
        .submit(&page.login, 2, &[("passcode", "123456")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            FlowError::StepOutOfOrder {
                expected: 1,
                submitted: 2
            }
        ),
        "{err}"
    );
    // And a failed step 1 does not open step 2 either.
    expect_retry(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", "bad")],
        )
        .unwrap(),
    );
    assert!(matches!(
        env.submit(&page.login, 2, &[("passcode", "1")]),
        Err(FlowError::StepOutOfOrder { .. })
    ));
}

#[test]
fn unknown_and_disabled_acrs_are_errors_never_a_fallback() {
    let env = TestEnv::new(vec![
        script("sms_otp", shipped_script()),
        script("off", "fn authenticate(config, params, step) { true }").with("enabled = false"),
    ]);
    assert!(matches!(
        env.start(Some("nope")),
        Err(FlowError::UnknownAcr(_))
    ));
    assert!(matches!(
        env.start(Some("off")),
        Err(FlowError::DisabledAcr(_))
    ));
    assert_eq!(env.start(Some("sms_otp")).unwrap().acr, "sms_otp");
}

#[test]
fn only_named_working_parameters_survive_to_the_next_step() {
    let env = TestEnv::new(vec![script("wp", fixture("working_params"))]);
    let login = env.pass_password(Some("wp"));
    let page = env.app.engine.current(&login).unwrap();
    assert_eq!(page.working.keys().collect::<Vec<_>>(), vec!["kept"]);
    expect_authenticated(env.submit(&login, 2, &[]).unwrap());
}

#[test]
fn get_next_step_resets_the_login() {
    let env = TestEnv::new(vec![script("three", fixture("three_steps_with_reset"))]);
    let login = env.pass_password(Some("three"));
    let back = expect_next(env.submit(&login, 2, &[("restart", "yes")]).unwrap());
    assert_eq!((back.step, back.page.as_str()), (1, "page1"));
    assert!(matches!(
        env.submit(&login, 2, &[]),
        Err(FlowError::StepOutOfOrder { expected: 1, .. })
    ));
    expect_next(
        env.submit(
            &login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    let third = expect_next(env.submit(&login, 2, &[]).unwrap());
    assert_eq!((third.step, third.page.as_str()), (3, "page3"));
    expect_retry(env.submit(&login, 3, &[("answer", "41")]).unwrap());
    let done = expect_authenticated(env.submit(&login, 3, &[("answer", "42")]).unwrap());
    assert_eq!(done.steps_passed, vec![1, 2, 3]);
}

#[test]
fn a_script_that_reads_mobile_instead_of_phone_number_verified() {
    // The one-line edit an operator makes for a directory that keeps numbers in `mobile`.
    let source = shipped_script().replace(
        r#"const DEFAULT_PHONE_ATTRIBUTE = "phoneNumberVerified";"#,
        r#"const DEFAULT_PHONE_ATTRIBUTE = "mobile";"#,
    );
    assert_ne!(
        source,
        shipped_script(),
        "the shipped script names its attribute in one line"
    );
    let env = TestEnv::new(vec![script("sms_otp", &source)]);
    let page = env.start(None).unwrap();
    let next = expect_next(
        env.submit(
            &page.login,
            1,
            &[("username", "bob"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(env.sms.last().0, BOB_MOBILE);
    expect_authenticated(
        env.submit(&next.login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
    // alice has no `mobile`: step 1 fails and nothing is sent.
    let page = env.start(None).unwrap();
    expect_retry(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(env.sms.count(), 1);
}

#[test]
fn only_a_boolean_true_is_success() {
    for value in ["1", "\"true\"", "()", "[true]", "#{ok: true}"] {
        let source = format!(
            "fn authenticate(config, params, step) {{ identity::set_user(\"alice\"); {value} }}"
        );
        let env = TestEnv::new(vec![script("odd", &source)]);
        let page = env.start(None).unwrap();
        expect_retry(env.submit(&page.login, 1, &[]).unwrap());
    }
}

#[test]
fn every_step_passed_but_no_user_is_not_a_login() {
    let env = TestEnv::new(vec![script(
        "nouser",
        "fn authenticate(config, params, step) { true }",
    )]);
    let page = env.start(None).unwrap();
    expect_retry(env.submit(&page.login, 1, &[]).unwrap());
}

#[test]
fn sms_failure_keeps_the_user_on_step_one_with_the_script_message() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    env.sms
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let page = env.start(None).unwrap();
    let retry = expect_retry(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(
        retry.message.as_deref(),
        Some("We could not send the code. Please try again later.")
    );
    let log = env.wait_for_log("sms not sent");
    assert!(
        log.contains("+44******0123") && !log.contains(ALICE_PHONE),
        "{log}"
    );
}

#[test]
fn attribute_writes_by_scripts_are_persisted() {
    let env = TestEnv::new(vec![script("enrol", fixture("enrol_attribute"))]);
    let page = env.start(None).unwrap();
    expect_authenticated(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    // A fresh directory on the same file (a restart) sees the write.
    let reopened =
        gatehouse::users::FileDirectory::open(&env.root().join("config/users.toml")).unwrap();
    let alice = gatehouse::ports::UserDirectory::find(&reopened, "alice")
        .unwrap()
        .unwrap();
    assert_eq!(
        alice.first("oxMobileDevices"),
        Some(r#"{"phone_id":"p-1"}"#)
    );
    assert_eq!(alice.first("lastLoginAcr"), Some("enrol"));
    assert_eq!(alice.first("phoneNumberVerified"), Some(ALICE_PHONE));
}

#[test]
fn concurrent_wrong_guesses_are_counted_atomically() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let login = env.pass_password(None);
    let code = env.sms.last_code();
    let wrong = if code == "999999" { "888888" } else { "999999" };
    std::thread::scope(|s| {
        for _ in 0..50 {
            s.spawn(|| {
                let _ = env.submit(&login, 2, &[("passcode", wrong)]);
            });
        }
    });
    let log = env.wait_for_log("code burned");
    // Each evaluated guess logs "N guesses left" or, the last one, "code burned"; the rest find no code.
    let evaluated = log.matches("guesses left").count() + log.matches("code burned").count();
    assert!(evaluated <= 5, "{evaluated} guesses evaluated:\n{log}");
    expect_retry(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
}

/// A double click on the passcode page: the same right code several times at once. One
/// submission takes the code and the others find none; the sign-in must finish once, whichever
/// of them is saved first (a failed attempt saved meanwhile used to void the right one).
#[test]
fn the_right_code_sent_several_times_at_once_signs_in_once() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    for round in 0..20 {
        let login = env.pass_password(None);
        let code = env.sms.last_code();
        let outcomes: Vec<_> = std::thread::scope(|s| {
            let sent: Vec<_> = (0..8)
                .map(|_| s.spawn(|| env.submit(&login, 2, &[("passcode", &code)])))
                .collect();
            sent.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let signed_in = outcomes
            .iter()
            .filter(|o| matches!(o, Ok(StepOutcome::Authenticated(_))))
            .count();
        assert_eq!(signed_in, 1, "round {round}: {outcomes:?}");
    }
}

#[test]
fn what_get_next_step_changes_is_kept() {
    let env = TestEnv::new(vec![script("next", fixture("next_step_keeps_its_changes"))]);
    let page = env.start(None).unwrap();
    let next = expect_next(env.submit(&page.login, 1, &[]).unwrap());
    assert_eq!(
        next.working.get("from_next").map(String::as_str),
        Some("kept")
    );
    expect_authenticated(env.submit(&page.login, 2, &[]).unwrap());
}

#[test]
fn scripts_write_only_their_own_user_and_never_host_managed_attributes() {
    for (extra, bob_written) in [("", false), ("write_other_users = true", true)] {
        let env = TestEnv::new(vec![script("w", fixture("writes_attributes")).with(extra)]);
        let page = env.start(None).unwrap();
        expect_authenticated(
            env.submit(
                &page.login,
                1,
                &[("username", "alice"), ("password", ALICE_PASSWORD)],
            )
            .unwrap(),
        );
        let refused = if bob_written {
            "refused: [\"disable\", \"backup\", \"password\"]"
        } else {
            "refused: [\"disable\", \"backup\", \"password\", \"bob\"]"
        };
        env.wait_for_log(refused);
        let alice = env.app.users.find("alice").unwrap().unwrap();
        assert_eq!(alice.first("nickname"), Some("Al"));
        assert!(alice.first("gatehouseBackupCodes").is_none());
        let bob = env.app.users.find("bob").unwrap().unwrap();
        assert_eq!(
            bob.first("mobile") == Some("+447700900666"),
            bob_written,
            "{extra:?}"
        );
    }
}

/// The user file holds password and backup-code hashes: a readable one is named at start, and
/// every rewrite leaves it readable by the server's user alone.
#[test]
fn the_user_file_is_written_owner_only_and_a_readable_one_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let path = env.root().join("config/users.toml");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_ne!(
        mode(&path) & 0o077,
        0,
        "the test writes it with the default mode"
    );
    env.wait_for_log("users.toml is readable by others (mode 644)");
    env.app.admin().issue_backup_codes("alice").unwrap();
    assert_eq!(mode(&path), 0o600);
}
