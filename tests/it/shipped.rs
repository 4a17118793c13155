//! The shipped deployment as a newcomer runs it: the real `gatehouse serve` binary on a copy of
//! `config/` and `scripts/`, the demo client and user, the console SMS sink. The code reaches
//! the terminal (standard output) and never `logs/`.

use std::path::Path;
use std::time::Duration;

use crate::support::process::{copy_shipped, serve_in, Served};
use crate::support::web::{query_param, WebLogin};
use crate::support::*;

const DEMO_REDIRECT: &str = "http://localhost:9090/callback";
/// The README's example PKCE pair.
const README_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk";
const README_CHALLENGE: &str = "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g";

fn serve_shipped(root: &Path, port: u16) -> Served {
    copy_shipped(root);
    serve_in(root, port, &[], &[])
}

#[test]
fn the_readme_demo_login_on_the_shipped_defaults_keeps_codes_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = serve_shipped(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let login = WebLogin::new(&base);
    let authorize = format!(
        "{base}/authorize?client_id=demo&redirect_uri={}&response_type=code&scope=openid%20profile%20phone&state=demo-state&nonce=demo-nonce&code_challenge={README_CHALLENGE}&code_challenge_method=S256&acr_values=sms_otp",
        url::form_urlencoded::byte_serialize(DEMO_REDIRECT.as_bytes()).collect::<String>()
    );
    let mut code = String::new();
    let callback = login.sign_in(&authorize, || {
        let page = login.page();
        assert!(page.contains("+44******0123"), "{page}");
        // The code is on the terminal, as the README says.
        let mut line = String::new();
        let printed = wait_until(Duration::from_secs(10), || {
            line = server
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.starts_with("[console SMS, not sent]"))
                .unwrap_or_default()
                .to_owned();
            !line.is_empty()
        });
        assert!(printed, "no console SMS line on standard output");
        assert!(line.contains("to +447700900123: "), "{line}");
        code = line.rsplit('#').next().unwrap().trim().to_owned();
        assert_eq!(code.len(), 6, "{line}");
        code.clone()
    });
    assert!(callback.starts_with(DEMO_REDIRECT), "{callback}");
    let authorization_code = query_param(&callback, "code").unwrap();
    let tokens: serde_json::Value = login
        .browser
        .client
        .post(format!("{base}/token"))
        .basic_auth("demo", Some("demo-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("redirect_uri", DEMO_REDIRECT),
            ("code_verifier", README_VERIFIER),
            ("code", &authorization_code),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let access_token = tokens["access_token"].as_str().expect("an access token");
    assert!(tokens["id_token"].is_string(), "{tokens}");

    let logs = dir.path().join("logs");
    let log = wait_for_log_in(&logs, "authenticated user alice");
    assert!(log.contains("OTP. Initialized successfully"), "{log}");
    assert!(log.contains("Code sent to +44******0123"), "{log}");
    // Nothing under logs/ holds a secret: every file, not only script.log.
    let mut everything = String::new();
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            // Logs are not for others: 0640 at most.
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o037, 0, "{:?} is mode {mode:o}", entry.path());
            everything.push_str(&String::from_utf8_lossy(
                &std::fs::read(entry.path()).unwrap(),
            ));
        }
    }
    let body: String = everything
        .lines()
        .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest))
        .collect::<Vec<_>>()
        .join("\n");
    for secret in [
        code.as_str(),
        "wonderland",
        "demo-secret",
        access_token,
        authorization_code.as_str(),
        "447700900123",
    ] {
        assert!(
            !body.contains(secret),
            "{secret:?} is in logs/:\n{everything}"
        );
    }
}

/// `gatehouse test` runs the shipped script tests offline and passes; a copy of `sms_otp.rhai`
/// broken so that it refuses every right code fails them, naming the step and the expectation.
#[test]
fn gatehouse_test_passes_on_the_shipped_scripts_and_catches_a_broken_one() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |dir: &Path, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("test")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (passed, printed) = run(root, &[]);
    assert!(passed, "{printed}");
    assert!(
        printed.contains("ok   scripts/tests/sms_otp.toml: password, then the code that was sent"),
        "{printed}"
    );
    assert!(printed.contains("scripts/tests/stytch.toml"), "{printed}");
    assert!(
        printed.contains("scripts/tests/twilio_sms.toml"),
        "{printed}"
    );
    assert!(printed.contains(" 0 failed"), "{printed}");

    // The same deployment with a script that refuses every right code.
    let dir = tempfile::tempdir().unwrap();
    for sub in ["config", "scripts/tests"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    for file in [
        "config/gatehouse.toml",
        "config/users.toml",
        "scripts/twilio_sms.rhai",
        "scripts/stytch.rhai",
        "scripts/tests/sms_otp.toml",
    ] {
        std::fs::copy(root.join(file), dir.path().join(file)).unwrap();
    }
    let broken = std::fs::read_to_string(root.join("scripts/sms_otp.rhai"))
        .unwrap()
        .replace("if outcome == \"accepted\" {", "if outcome == \"never\" {");
    std::fs::write(dir.path().join("scripts/sms_otp.rhai"), broken).unwrap();
    let (passed, printed) = run(dir.path(), &[]);
    assert!(!passed, "{printed}");
    assert!(
        printed.contains("FAIL scripts/tests/sms_otp.toml: password, then the code that was sent: step 2: expected authenticated, got failed"),
        "{printed}"
    );
}
