//! SMS providers and the shipped twilio_sms and stytch scripts against real HTTP servers on
//! 127.0.0.1 that check the exact wire format.

use std::time::Duration;

use crate::support::mock_http::{MockResponse, MockServer};
use crate::support::*;

const TWILIO_SID: &str = "AC0123456789abcdef";
const TWILIO_TOKEN: &str = "tw-token-5ecret-77";
const TWILIO_FROM: &str = "+15550001111";

fn twilio_env(twilio: &MockServer) -> TestEnv {
    TestEnv::new(vec![script("twilio_sms", shipped("twilio_sms")).with(&format!(
        "[scripts.properties]\ntwilio_sid = {TWILIO_SID:?}\ntwilio_token = {TWILIO_TOKEN:?}\nfrom_number = {TWILIO_FROM:?}\ntwilio_api_base = {:?}",
        twilio.url()
    ))])
}

fn twilio_created(sid: &str) -> MockResponse {
    MockResponse::json(
        201,
        &format!(r#"{{"sid":"{sid}","status":"queued","to":"+447700900123"}}"#),
    )
}

fn step_one(env: &TestEnv, acr: &str) -> gatehouse::flow::StepOutcome {
    let page = env.start(Some(acr)).unwrap();
    env.submit(
        &page.login,
        1,
        &[("username", "alice"), ("password", ALICE_PASSWORD)],
    )
    .unwrap()
}

#[test]
fn twilio_sms_login_sends_the_exact_messages_api_request() {
    let twilio = MockServer::sequence(vec![twilio_created("SM001")]);
    let env = twilio_env(&twilio);
    env.wait_for_log("Twilio SMS. Initialized successfully");
    let next = expect_next(step_one(&env, "twilio_sms"));
    assert_eq!(
        next.working.get("sent_to").map(String::as_str),
        Some("+44******0123")
    );
    let requests = twilio.requests();
    assert_eq!(requests.len(), 1, "exactly one provider call per send");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
    );
    request.expect_basic(TWILIO_SID, TWILIO_TOKEN);
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = request.form();
    let names: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["To", "From", "Body"]);
    assert_eq!(form[0].1, ALICE_PHONE);
    assert_eq!(form[1].1, TWILIO_FROM);
    let code = form[2]
        .1
        .strip_suffix(" is your passcode to access your account")
        .expect("the Gluu message text")
        .to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    expect_retry(
        env.submit(&next.login, 2, &[("passcode", "000000x")])
            .unwrap(),
    );
    let done = expect_authenticated(env.submit(&next.login, 2, &[("passcode", &code)]).unwrap());
    assert_eq!(
        (done.user.as_str(), done.acr.as_str()),
        ("alice", "twilio_sms")
    );
    // The log is written off-thread: wait for the last line expected, then look at the others.
    let log = env.wait_for_log("authenticated user alice");
    assert!(
        log.contains("sms sent: provider=twilio to=+44******0123 status=accepted id=SM001"),
        "{log}"
    );
    assert!(
        log.contains("Twilio SMS. Message sent to +44******0123"),
        "{log}"
    );
    assert_log_clean(&env, &[&code, TWILIO_TOKEN, ALICE_PASSWORD, ALICE_PHONE]);
}

#[test]
fn twilio_failures_are_clear_and_the_server_keeps_serving() {
    let twilio = MockServer::sequence(vec![twilio_created("SM-never-used")]);
    let env = twilio_env(&twilio);
    let cases: Vec<(MockResponse, &str)> = vec![
        (
            MockResponse::json(
                400,
                r#"{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
            ),
            "Twilio error 21211: Invalid 'To' Phone Number (HTTP 400)",
        ),
        (
            MockResponse::json(
                401,
                r#"{"code":20003,"message":"Authenticate","status":401}"#,
            ),
            "Twilio error 20003: Authenticate (HTTP 401)",
        ),
        (
            MockResponse::text(503, "upstream unavailable"),
            "HTTP 503 with no Twilio error document",
        ),
        (
            MockResponse::text(201, "{not json"),
            "Twilio answered 201 without a message sid",
        ),
        (
            twilio_created("SM-slow").delayed(Duration::from_millis(2500)),
            "no answer within",
        ),
    ];
    let mut calls = 0;
    for (response, expected) in cases {
        twilio.set_responder(move |_| response.clone());
        let retry = expect_retry(step_one(&env, "twilio_sms"));
        assert_eq!(
            retry.message.as_deref(),
            Some("We could not send the code. Please try again later.")
        );
        calls += 1;
        assert_eq!(
            twilio.requests().len(),
            calls,
            "one call per send, never a retry ({expected})"
        );
        let log = env.wait_for_log(expected);
        assert!(
            log.contains("sms not sent: provider=twilio to=+44******0123"),
            "{log}"
        );
    }
    // And a healthy provider works again.
    twilio.set_responder(|_| twilio_created("SM-ok"));
    let next = expect_next(step_one(&env, "twilio_sms"));
    let code = twilio.requests().last().unwrap().form()[2].1[..6].to_owned();
    expect_authenticated(env.submit(&next.login, 2, &[("passcode", &code)]).unwrap());
    assert_log_clean(&env, &[TWILIO_TOKEN, ALICE_PASSWORD, ALICE_PHONE, &code]);
}

#[test]
fn twilio_init_names_the_missing_property_and_refuses() {
    let twilio = MockServer::sequence(vec![twilio_created("SM")]);
    let env = TestEnv::new(vec![script("twilio_sms", shipped("twilio_sms")).with(&format!(
        "[scripts.properties]\ntwilio_sid = {TWILIO_SID:?}\nfrom_number = {TWILIO_FROM:?}\ntwilio_api_base = {:?}",
        twilio.url()
    ))]);
    env.wait_for_log("Twilio SMS. Initialization. Property twilio_token is missing");
    assert_eq!(env.revision("twilio_sms"), None);
    assert!(env
        .last_error("twilio_sms")
        .unwrap()
        .contains("init returned"));
}

const STYTCH_PROJECT: &str = "project-test-11111111-2222";
const STYTCH_SECRET: &str = "secret-test-Zq9xXk3";

fn stytch_env(stytch: &MockServer) -> TestEnv {
    let base = stytch.url();
    TestEnv::new(vec![script("stytch", shipped("stytch")).with(&format!(
        "[scripts.properties]\nSMS_ENDPOINT = \"{base}/v1/otps/sms/send\"\nAUTH_ENDPOINT = \"{base}/v1/otps/authenticate\"\nENROLL_ENDPOINT = \"{base}/v1/otps/sms/login_or_create\"\nPROJECT_ID = {STYTCH_PROJECT:?}\nSECRET = {STYTCH_SECRET:?}"
    ))])
}

/// Plays Stytch: remembers the code it "sent" and checks it at /authenticate.
fn stytch_mock() -> MockServer {
    MockServer::start(|request| match request.path.as_str() {
        "/v1/otps/sms/login_or_create" => MockResponse::json(
            200,
            r#"{"status_code":200,"request_id":"req-1","user_id":"user-test-1","phone_id":"phone-number-test-abc","user_created":true}"#,
        ),
        "/v1/otps/sms/send" => MockResponse::json(
            200,
            r#"{"status_code":200,"request_id":"req-2","user_id":"user-test-1","phone_id":"phone-number-test-abc"}"#,
        ),
        "/v1/otps/authenticate" if request.json()["code"] == "246810" => MockResponse::json(
            200,
            r#"{"status_code":200,"request_id":"req-3","user_id":"user-test-1","method_id":"phone-number-test-abc"}"#,
        ),
        "/v1/otps/authenticate" => MockResponse::json(
            404,
            r#"{"status_code":404,"request_id":"req-4","error_type":"otp_code_not_found","error_message":"The OTP code is invalid or expired."}"#,
        ),
        _ => MockResponse::text(404, "no such endpoint"),
    })
}

#[test]
fn stytch_enrols_then_sends_exactly_one_sms_per_login() {
    let stytch = stytch_mock();
    let env = stytch_env(&stytch);
    env.wait_for_log("Stytch Initialized successfully");

    // First login: no enrolled phone, so login_or_create (which sends the SMS) and nothing else.
    let next = expect_next(step_one(&env, "stytch"));
    let requests = stytch.requests();
    assert_eq!(requests.len(), 1);
    let enroll = &requests[0];
    assert_eq!(
        (enroll.method.as_str(), enroll.path.as_str()),
        ("POST", "/v1/otps/sms/login_or_create")
    );
    enroll.expect_basic(STYTCH_PROJECT, STYTCH_SECRET);
    assert_eq!(enroll.header("content-type"), Some("application/json"));
    assert_eq!(
        enroll.json(),
        serde_json::json!({ "phone_number": ALICE_PHONE })
    );
    let saved = std::fs::read_to_string(env.root().join("config/users.toml")).unwrap();
    assert!(
        saved.contains("phone-number-test-abc"),
        "phone id saved on the user:\n{saved}"
    );

    expect_retry(
        env.submit(&next.login, 2, &[("passcode", "111111")])
            .unwrap(),
    );
    expect_authenticated(
        env.submit(&next.login, 2, &[("passcode", "246810")])
            .unwrap(),
    );
    let auth = &stytch.requests()[2];
    assert_eq!(auth.path, "/v1/otps/authenticate");
    auth.expect_basic(STYTCH_PROJECT, STYTCH_SECRET);
    assert_eq!(
        auth.json(),
        serde_json::json!({ "method_id": "phone-number-test-abc", "code": "246810" })
    );

    // Second login: enrolled, so the send endpoint, once.
    let before = stytch.requests().len();
    let next = expect_next(step_one(&env, "stytch"));
    let requests = stytch.requests();
    assert_eq!(requests.len(), before + 1);
    let send = requests.last().unwrap();
    assert_eq!(send.path, "/v1/otps/sms/send");
    send.expect_basic(STYTCH_PROJECT, STYTCH_SECRET);
    assert_eq!(
        send.json(),
        serde_json::json!({ "phone_number": ALICE_PHONE })
    );
    expect_authenticated(
        env.submit(&next.login, 2, &[("passcode", "246810")])
            .unwrap(),
    );
    assert_log_clean(
        &env,
        &[
            STYTCH_SECRET,
            "246810",
            "111111",
            ALICE_PASSWORD,
            ALICE_PHONE,
        ],
    );
}

#[test]
fn stytch_provider_errors_fail_the_step_clearly() {
    let stytch = MockServer::sequence(vec![
        MockResponse::json(
            400,
            r#"{"status_code":400,"error_type":"invalid_phone_number","error_message":"Phone number format is invalid."}"#,
        ),
        MockResponse::text(500, "<html>oops</html>"),
        MockResponse::text(200, "not json at all"),
    ]);
    let env = stytch_env(&stytch);
    for expected in [
        "HTTP 400: Phone number format is invalid.",
        "HTTP 500: no error message",
        "HTTP 200: no error message",
    ] {
        let retry = expect_retry(step_one(&env, "stytch"));
        assert_eq!(
            retry.message.as_deref(),
            Some("We could not send the code. Please try again later.")
        );
        env.wait_for_log(expected);
    }
    assert_eq!(stytch.requests().len(), 3);
    assert_log_clean(&env, &[STYTCH_SECRET, ALICE_PHONE]);
}

fn gateway_env(gateway: &MockServer, provider: &str) -> TestEnv {
    TestEnv::with_options(
        vec![script("sms_otp", shipped_script()).with("sms_provider = \"gateway\"")],
        EnvOptions {
            extra_config: format!(
                "[sms.providers.gateway]\nurl = \"{}/send?to=$ctx.num&key=k-123\"\n{provider}",
                gateway.url()
            ),
            ..EnvOptions::default()
        },
    )
}

#[test]
fn generic_gateway_fills_json_and_form_payloads_exactly() {
    let gateway = MockServer::sequence(vec![MockResponse::json(
        202,
        r#"{"messages":[{"id":"gw-7"}]}"#,
    )]);
    let env = gateway_env(
        &gateway,
        "type = \"http\"\nmethod = \"POST\"\npayload = '{\"to\":[\"$ctx.num\"],\"text\":\"$ctx.msg\"}'\naccepted_status = [202]\nmessage_id_pointer = \"/messages/0/id\"\n[sms.providers.gateway.headers]\nAuthorization = \"Bearer gw-token-000\"",
    );
    let next = expect_next(step_one(&env, "sms_otp"));
    let request = &gateway.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/send?to=%2B447700900123&key=k-123");
    assert_eq!(request.header("authorization"), Some("Bearer gw-token-000"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    let body = request.json();
    assert_eq!(body["to"], serde_json::json!([ALICE_PHONE]));
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Your code is "),
        "the script's message: {text}"
    );
    let code = text.rsplit_once('#').expect("the WebOTP line").1.to_owned();
    expect_authenticated(env.submit(&next.login, 2, &[("passcode", &code)]).unwrap());
    env.wait_for_log("sms sent: provider=gateway to=+44******0123 status=accepted id=gw-7");
    assert_log_clean(&env, &["gw-token-000", "k-123", &code, ALICE_PHONE]);
}

#[test]
fn generic_gateway_form_payload_and_a_200_that_carries_an_error() {
    let gateway = MockServer::sequence(vec![
        MockResponse::json(
            200,
            r#"{"messages":[{"status":"0","message-id":"vonage-1"}]}"#,
        ),
        MockResponse::json(
            200,
            r#"{"messages":[{"status":"4","error-text":"Bad Credentials"}]}"#,
        ),
        MockResponse::json(429, r#"{"error":"slow down"}"#),
    ]);
    let env = gateway_env(
        &gateway,
        "type = \"http\"\npayload = \"to=$ctx.num&text=$ctx.msg\"\naccepted_status = [200]\nsuccess_body_contains = '\"status\":\"0\"'\nmessage_id_pointer = \"/messages/0/message-id\"",
    );
    expect_next(step_one(&env, "sms_otp"));
    let request = &gateway.requests()[0];
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = request.form();
    assert_eq!(form[0], ("to".to_owned(), ALICE_PHONE.to_owned()));
    assert!(
        form[1].1.starts_with("Your code is ") && form[1].1.contains("\n\n@localhost #"),
        "{}",
        form[1].1
    );
    expect_retry(step_one(&env, "sms_otp"));
    env.wait_for_log("HTTP 200 but the answer lacks");
    expect_retry(step_one(&env, "sms_otp"));
    env.wait_for_log("HTTP 429 (accepted: [200])");
    assert_eq!(gateway.requests().len(), 3);
}

#[test]
fn shipped_presets_parse_and_send_their_documented_shape() {
    #[derive(serde::Deserialize)]
    struct Presets(std::collections::BTreeMap<String, gatehouse::config::ProviderConfig>);
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sms-presets.toml"),
    )
    .unwrap();
    // `${env:NAME}` is expanded when the config is read: set the variables first.
    for variable in [
        "VONAGE_API_KEY",
        "VONAGE_API_SECRET",
        "CLICKATELL_API_KEY",
        "PLIVO_AUTH_ID",
        "PLIVO_AUTH_TOKEN",
        "PLIVO_FROM",
        "BULKSMS_USERNAME",
        "BULKSMS_PASSWORD",
        "TWILIO_SID",
        "TWILIO_TOKEN",
        "TWILIO_FROM",
    ] {
        std::env::set_var(variable, format!("v-{variable}"));
    }
    let presets: Presets = toml::from_str(&text).unwrap();
    assert_eq!(
        presets.0.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bulksms", "clickatell", "plivo", "twilio_http", "vonage"]
    );
    let gateway = MockServer::sequence(vec![MockResponse::json(
        200,
        r#"{"messages":[{"status":"0","message-id":"m1","apiMessageId":"m1"}],"message_uuid":["m1"],"sid":"m1"}"#,
    )]);
    let config: gatehouse::config::HttpConfig =
        toml::from_str(TEST_HTTP.trim_start_matches("[http]\n")).unwrap();
    let bridge = std::sync::Arc::new(gatehouse::outbound::HttpBridge::new(&config).unwrap());
    for (name, preset) in presets.0 {
        let gatehouse::config::ProviderConfig::Http(mut gateway_config) = preset else {
            panic!("{name} is an http preset")
        };
        // Point the preset at the mock, keeping its path and query.
        let url = url::Url::parse(gateway_config.url.resolved().unwrap().expose()).unwrap();
        gateway_config.url = gatehouse::config::EnvValue::new(format!(
            "{}{}{}",
            gateway.url(),
            url.path(),
            url.query().map(|q| format!("?{q}")).unwrap_or_default()
        ));
        gateway_config.accepted_status.push(200);
        gateway_config.success_body_contains = None;
        let sender =
            gatehouse::sms::GatewaySms::new(&name, bridge.clone(), &gateway_config).unwrap();
        let message = gatehouse::ports::SmsMessage {
            to: ALICE_PHONE.into(),
            text: gatehouse::base::secret::Secret::new("Code 123456 \"now\""),
        };
        gatehouse::ports::SmsSender::send(&sender, &message)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let request = gateway.requests().pop().unwrap();
        let body = request.body_text();
        if request.header("content-type") == Some("application/json") {
            let json = request.json();
            assert!(json.to_string().contains(ALICE_PHONE), "{name}: {json}");
            assert!(
                json.to_string().contains("Code 123456 \\\"now\\\""),
                "{name}: {json}"
            );
        } else {
            let form: Vec<(String, String)> = request.form();
            assert!(form.iter().any(|(_, v)| v == ALICE_PHONE), "{name}: {body}");
            assert!(
                form.iter().any(|(_, v)| v == "Code 123456 \"now\""),
                "{name}: {body}"
            );
        }
    }
}

#[test]
fn every_shipped_script_reads_the_phone_from_the_phone_attribute_property() {
    // Bob keeps his number in `mobile`: one property, no script edit.
    let twilio = MockServer::sequence(vec![twilio_created("SM002")]);
    let env = TestEnv::new(vec![script("twilio_sms", shipped("twilio_sms")).with(&format!(
        "[scripts.properties]\nphone_attribute = \"mobile\"\ntwilio_sid = {TWILIO_SID:?}\ntwilio_token = {TWILIO_TOKEN:?}\nfrom_number = {TWILIO_FROM:?}\ntwilio_api_base = {:?}",
        twilio.url()
    ))]);
    let page = env.start(Some("twilio_sms")).unwrap();
    expect_next(
        env.submit(
            &page.login,
            1,
            &[("username", "bob"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    let form = twilio.requests()[0].form();
    assert!(
        form.contains(&("To".to_owned(), BOB_MOBILE.to_owned())),
        "{form:?}"
    );
    // The rule is written the same way in every script header and both READMEs.
    let rule = "the entry's `phone_attribute` property";
    for file in [
        "scripts/sms_otp.rhai",
        "scripts/twilio_sms.rhai",
        "scripts/stytch.rhai",
        "scripts/README.md",
        "README.md",
    ] {
        let text =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
                .unwrap();
        assert!(
            text.replace("\n// ", " ").replace('\n', " ").contains(rule),
            "{file}"
        );
    }
}

/// A slow SMS gateway gets only the time left in the hook, not the whole [http] timeout.
#[test]
fn a_slow_gateway_is_cut_at_the_hook_deadline() {
    let gateway = MockServer::sequence(vec![
        MockResponse::json(200, "{}").delayed(std::time::Duration::from_millis(1200))
    ]);
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script()).with("sms_provider = \"gateway\"")],
        EnvOptions {
            sandbox: "hook_timeout_ms = 400".into(),
            extra_config: format!(
                "[sms.providers.gateway]\nurl = \"{}/send?to=$ctx.num\"\ntype = \"http\"\n",
                gateway.url()
            ),
            ..EnvOptions::default()
        },
    );
    let started = std::time::Instant::now();
    expect_retry(step_one(&env, "sms_otp"));
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    env.wait_for_log("no answer before the hook's deadline");
}
