//! The script log: what reaches it, and what never does.

use crate::support::*;

/// A careless script: it prints everything it should not.

#[test]
fn no_code_passcode_password_or_secret_reaches_the_log() {
    std::env::set_var("GATEHOUSE_IT_CLIENT_SECRET", "cs-from-env-8d1f");
    let env = TestEnv::new(vec![
        script("leaky", fixture("leaky")).with(
            "[scripts.properties]\napi_token = \"tok-SECRET-2f9c\"\nclient_secret = \"${env:GATEHOUSE_IT_CLIENT_SECRET}\"",
        ),
        script("sms_otp", shipped_script()),
    ]);
    let mut codes = Vec::new();
    let mut passcodes = vec!["13579".to_owned(), "24680".to_owned()];
    for acr in ["leaky", "sms_otp"] {
        // One login with wrong passcodes, then a fresh one that succeeds.
        let login = env.pass_password(Some(acr));
        codes.push(env.sms.last_code());
        for wrong in ["13579", "24680"] {
            expect_retry(env.submit(&login, 2, &[("passcode", wrong)]).unwrap());
        }
        let login = env.pass_password(Some(acr));
        let code = env.sms.last_code();
        codes.push(code.clone());
        passcodes.push(code.clone());
        expect_authenticated(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
        // A wrong password too.
        let page = env.start(Some(acr)).unwrap();
        expect_retry(
            env.submit(
                &page.login,
                1,
                &[("username", "alice"), ("password", "hunter2-wrong")],
            )
            .unwrap(),
        );
    }
    let mut app = env.app;
    app.shutdown();
    drop(app.log); // flushes the writer
    let log = read_logs(&env.dir.path().join("logs"));
    assert!(
        log.contains("Leaky. issued code ***"),
        "the script's own line is kept, masked:\n{log}"
    );
    assert!(log.contains("Leaky. token is ***"), "{log}");
    let mut forbidden: Vec<String> = vec![
        ALICE_PASSWORD.into(),
        "hunter2-wrong".into(),
        "tok-SECRET-2f9c".into(),
        "cs-from-env-8d1f".into(),
        ALICE_PHONE.into(),
    ];
    forbidden.extend(codes);
    forbidden.extend(passcodes);
    for needle in &forbidden {
        assert!(
            !log.contains(needle.as_str()),
            "{needle:?} leaked into the log:\n{log}"
        );
    }
    // One event per line, each with level, source, acr and correlation id.
    for line in log.lines() {
        let fields: Vec<&str> = line.splitn(6, ' ').filter(|f| !f.is_empty()).collect();
        assert!(fields.len() >= 5, "malformed line: {line}");
        assert!(line.contains(" acr=") && line.contains(" login="), "{line}");
    }
}

#[test]
fn one_correlation_id_follows_a_login() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let first = env.start(None).unwrap();
    let second = expect_next(
        env.submit(
            &first.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    assert_eq!(first.correlation_id, second.correlation_id);
    expect_authenticated(
        env.submit(&second.login, 2, &[("passcode", &env.sms.last_code())])
            .unwrap(),
    );
    let log = env.wait_for_log("authenticated user alice");
    let id = format!("login={}", first.correlation_id);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&id)).collect();
    for expected in [
        "login started",
        "OTP. Code sent to +44******0123",
        "step 1 passed",
        "passcode accepted",
        "OTP. Code accepted",
        "authenticated user alice",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(expected)),
            "{expected:?} not under {id}:\n{log}"
        );
    }
    // The login handle (a bearer secret) never appears; only the correlation id does.
    assert!(!log.contains(first.login.as_str()));
}

#[test]
fn script_errors_are_logged_with_file_line_column_and_hook() {
    let source = "fn authenticate(config, params, step) {\n    let user = params.username;\n    user.no_such_method()\n}\n";
    let env = TestEnv::new(vec![script("oops", source)]);
    let page = env.start(None).unwrap();
    expect_retry(
        env.submit(&page.login, 1, &[("username", "alice")])
            .unwrap(),
    );
    let log = env.wait_for_log("(in authenticate, revision 1)");
    let path = env.script_path("oops").display().to_string();
    assert!(
        log.contains(&format!("{path}:3:10: Function not found: no_such_method")),
        "{log}"
    );
}

#[test]
fn a_multi_line_message_stays_one_log_line() {
    let source = "fn init(config) { print(\"Multi.\\nINFO forged line\\r\\u001b[31m\"); true }\nfn authenticate(config, params, step) { false }\n";
    let env = TestEnv::new(vec![script("multi", source)]);
    let log = env.wait_for_log("Multi.");
    let line = log.lines().find(|l| l.contains("Multi.")).unwrap();
    assert!(
        line.ends_with("Multi.\\nINFO forged line\\r\\u{1b}[31m"),
        "{line}"
    );
    assert!(!log.lines().any(|l| l.starts_with("INFO forged")));
}

/// Masking is for secrets: a client cannot blank words out of the audit log by sending them in
/// a field called `pin`, `code` or `otp`.
#[test]
fn fields_a_client_names_do_not_mask_the_log() {
    let env = TestEnv::new(vec![script(
        "audit",
        "fn authenticate(config, params, step) { print(`Audit. user ${params.username}, ${params.note}`); false }",
    )]);
    let page = env.start(None).unwrap();
    expect_retry(
        env.submit(
            &page.login,
            1,
            &[
                ("username", "alice"),
                ("note", "checked"),
                ("pin", "alice"),
                ("code", "checked"),
                ("otp", "Audit"),
            ],
        )
        .unwrap(),
    );
    env.wait_for_log("Audit. user alice, checked");
}

/// Unicode line separators and bidi controls sent by a client are escaped like ASCII controls:
/// no forged line, no reordered text in the log.
#[test]
fn unicode_line_separators_and_bidi_controls_are_escaped() {
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions::default(),
    );
    let login = crate::support::web::WebLogin::start(env.base.as_ref().unwrap(), None);
    let forged = "mallory\u{2028}2026-12-01T00:00:00Z  INFO server forged\u{202e}desrever\u{2029}x";
    login.password(forged, "not-it");
    let log = env.wait_for_log("Wrong username or password for mallory");
    for raw in ['\u{2028}', '\u{2029}', '\u{202e}'] {
        assert!(!log.contains(raw), "{raw:?} reached the log raw:\n{log}");
    }
    assert!(
        log.contains(
            "mallory\\u{2028}2026-12-01T00:00:00Z  INFO server forged\\u{202e}desrever\\u{2029}x"
        ),
        "{log}"
    );
}
