//! SMS that survives a provider outage: a script names two providers, real mock gateways on
//! loopback play them, the first failing in each way. A definite failure (no connection, 5xx,
//! 429 without a message id) hands the message to the second; a timeout never does (the first
//! may have sent it); a provider that keeps failing is skipped by its circuit breaker until a
//! probe after the cool-off. And Twilio's signed delivery receipts.

use std::time::Duration;

use gatehouse::base::metrics::Snapshot;
use gatehouse::flow::script_port::ScriptRuntime;

use crate::support::mock_http::{MockResponse, MockServer};
use crate::support::web::WebLogin;
use crate::support::*;

fn accepted(id: &str) -> MockResponse {
    MockResponse::json(200, &format!(r#"{{"id":"{id}"}}"#))
}

/// `sms_otp` sending through `["primary", "backup"]`, two generic gateways.
fn two_provider_env(primary_url: &str, backup: &MockServer, sms_extra: &str) -> TestEnv {
    let gateway = |name: &str, url: &str| {
        format!("[sms.providers.{name}]\ntype = \"http\"\nurl = \"{url}/send?to=$ctx.num\"\npayload = \"text=$ctx.msg\"\naccepted_status = [200]\nmessage_id_pointer = \"/id\"\n")
    };
    TestEnv::with_options(
        vec![script("sms_otp", shipped_script()).with("sms_provider = [\"primary\", \"backup\"]")],
        EnvOptions {
            extra_config: format!(
                "{}{}",
                gateway("primary", primary_url),
                gateway("backup", &backup.url())
            ),
            sms: format!("{RELAXED_SMS}\n{sms_extra}"),
            ..EnvOptions::default()
        },
    )
}

fn password_step(env: &TestEnv) -> gatehouse::flow::StepOutcome {
    let page = env.start(Some("sms_otp")).unwrap();
    env.submit(
        &page.login,
        1,
        &[("username", "alice"), ("password", ALICE_PASSWORD)],
    )
    .unwrap()
}

/// The code in the last message a mock gateway received.
fn code_sent_to(gateway: &MockServer) -> String {
    let request = gateway.requests().last().cloned().expect("a message");
    let text = request
        .form()
        .into_iter()
        .find(|(n, _)| n == "text")
        .unwrap()
        .1;
    text.rsplit('#').next().unwrap().trim().to_owned()
}

fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[test]
fn a_provider_that_surely_did_not_take_the_message_hands_it_to_the_next() {
    // No connection at all: the second provider sends, the sign-in completes with its code.
    let backup = MockServer::start(|_| accepted("b-1"));
    let env = two_provider_env(&closed_port_url(), &backup, "");
    let next = expect_next(password_step(&env));
    assert_eq!(backup.requests().len(), 1);
    let code = code_sent_to(&backup);
    expect_authenticated(env.submit(&next.login, 2, &[("passcode", &code)]).unwrap());
    env.wait_for_log("sms provider primary did not take the message");
    env.wait_for_log("sms sent: provider=backup to=+44******0123 status=accepted id=b-1");

    // 503 and 429 without a message id: the same.
    for status in [503, 429] {
        let primary = MockServer::start(move |_| MockResponse::json(status, r#"{"error":"busy"}"#));
        let backup = MockServer::start(|_| accepted("b-2"));
        let env = two_provider_env(&primary.url(), &backup, "");
        expect_next(password_step(&env));
        assert_eq!(primary.requests().len(), 1, "HTTP {status}");
        assert_eq!(backup.requests().len(), 1, "HTTP {status}");
        let metrics = env.app.metrics().render(&Snapshot::default());
        for line in [
            "gatehouse_sms_sent_total{provider=\"primary\",outcome=\"not_sent\"} 1",
            "gatehouse_sms_sent_total{provider=\"backup\",outcome=\"accepted\"} 1",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
        }
    }
}

#[test]
fn a_timeout_or_a_refused_message_is_never_sent_twice() {
    // The first provider answers after the request timeout ([http] timeout_ms = 1500): it may
    // have sent the code, so the second never gets the message; the user is asked to retry.
    let primary = MockServer::start(|_| accepted("late").delayed(Duration::from_millis(2500)));
    let backup = MockServer::start(|_| accepted("b-1"));
    let env = two_provider_env(&primary.url(), &backup, "");
    let retry = expect_retry(password_step(&env));
    assert_eq!(
        retry.message.as_deref(),
        Some("We could not send the code. Please try again later.")
    );
    assert_eq!(primary.requests().len(), 1);
    assert_eq!(backup.requests().len(), 0, "a timeout must not send again");
    env.wait_for_log("the request may have arrived and is not re-sent");

    // A 400 refuses the message itself (a bad number): another provider would refuse it too.
    let primary = MockServer::start(|_| MockResponse::json(400, r#"{"error":"invalid number"}"#));
    let backup = MockServer::start(|_| accepted("b-1"));
    let env = two_provider_env(&primary.url(), &backup, "");
    expect_retry(password_step(&env));
    assert_eq!(backup.requests().len(), 0);

    // A 503 that still names a message id may have been sent: not handed on either.
    let primary = MockServer::start(|_| MockResponse::json(503, r#"{"id":"p-9"}"#));
    let backup = MockServer::start(|_| accepted("b-1"));
    let env = two_provider_env(&primary.url(), &backup, "");
    expect_retry(password_step(&env));
    assert_eq!(backup.requests().len(), 0);
}

#[test]
fn a_failing_provider_is_skipped_until_a_probe_after_the_cool_off() {
    let primary = MockServer::start(|_| MockResponse::json(500, r#"{"error":"down"}"#));
    let backup = MockServer::start(|_| accepted("b"));
    let env = two_provider_env(
        &primary.url(),
        &backup,
        "breaker_failures = 2\nbreaker_window_seconds = 60\nbreaker_cool_off_seconds = 30",
    );
    for _ in 0..2 {
        expect_next(password_step(&env));
    }
    env.wait_for_log("sms provider primary failed repeatedly: its circuit is open");
    assert_eq!(primary.requests().len(), 2);
    // Open: the primary is not asked at all, the backup sends at once.
    for _ in 0..3 {
        expect_next(password_step(&env));
    }
    assert_eq!(
        primary.requests().len(),
        2,
        "an open circuit skips the provider"
    );
    assert_eq!(backup.requests().len(), 5);
    let circuits = env.app.host.sms_circuits();
    let open = circuits.iter().find(|c| c.provider == "primary").unwrap();
    assert_eq!(open.state, "open");
    assert_eq!(open.retry_in_seconds, Some(30));
    // After the cool-off one send probes it; the provider is back, so it sends and closes.
    primary.set_responder(|_| accepted("p-back"));
    env.advance(Duration::from_secs(31));
    expect_next(password_step(&env));
    assert_eq!(primary.requests().len(), 3);
    assert_eq!(backup.requests().len(), 5);
    let circuits = env.app.host.sms_circuits();
    assert_eq!(
        circuits
            .iter()
            .find(|c| c.provider == "primary")
            .unwrap()
            .state,
        "closed"
    );
}

#[test]
fn health_and_metrics_show_an_open_circuit() {
    let primary = MockServer::start(|_| MockResponse::json(502, "{}"));
    let backup = MockServer::start(|_| accepted("b"));
    let primary_url = primary.url();
    let gateway = |name: &str, url: &str| {
        format!("[sms.providers.{name}]\ntype = \"http\"\nurl = \"{url}/send?to=$ctx.num\"\npayload = \"text=$ctx.msg\"\naccepted_status = [200]\n")
    };
    let env = web_env(
        vec![script("sms_otp", shipped_script()).with("sms_provider = [\"primary\", \"backup\"]")],
        EnvOptions {
            extra_config: format!(
                "{}{}",
                gateway("primary", &primary_url),
                gateway("backup", &backup.url())
            ),
            sms: format!("{RELAXED_SMS}\nbreaker_failures = 1"),
            ..EnvOptions::default()
        },
    );
    let base = env.base.clone().unwrap();
    let login = WebLogin::start(&base, Some("sms_otp"));
    login.password("alice", ALICE_PASSWORD);
    assert_eq!(backup.requests().len(), 1);
    let health: serde_json::Value = reqwest::blocking::get(format!("{base}/health"))
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    let providers = health["sms_providers"].as_array().unwrap();
    let primary_state = providers
        .iter()
        .find(|p| p["provider"] == "primary")
        .unwrap();
    assert_eq!(primary_state["state"], "open", "{health}");
}

/// A Twilio provider whose messages ask for delivery receipts.
fn twilio_receipts_env(twilio: &MockServer) -> TestEnv {
    web_env(
        vec![script("sms_otp", shipped_script()).with("sms_provider = \"tw\"")],
        EnvOptions {
            extra_config: format!(
                "[sms.providers.tw]\ntype = \"twilio\"\naccount_sid = \"AC0123\"\nauth_token = \"tw-auth-token-9\"\nfrom = \"+15005550006\"\napi_base = {:?}\nstatus_callback = true\n",
                twilio.url()
            ),
            ..EnvOptions::default()
        },
    )
}

#[test]
fn twilio_delivery_receipts_count_only_when_signed() {
    let twilio =
        MockServer::start(|_| MockResponse::json(201, r#"{"sid":"SM0001","status":"queued"}"#));
    let env = twilio_receipts_env(&twilio);
    let base = env.base.clone().unwrap();
    let login = WebLogin::start(&base, Some("sms_otp"));
    login.password("alice", ALICE_PASSWORD);
    // The message named where the receipts go.
    let callback = format!("{base}/sms/twilio/tw/status");
    let form = twilio.requests()[0].form();
    assert!(
        form.contains(&("StatusCallback".to_owned(), callback.clone())),
        "{form:?}"
    );
    let fields: Vec<(String, String)> = [
        ("AccountSid", "AC0123"),
        ("MessageSid", "SM0001"),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("To", ALICE_PHONE),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let signature = gatehouse_twilio_signature("tw-auth-token-9", &callback, &fields);
    let client = reqwest::blocking::Client::new();
    let post = |signature: &str| {
        client
            .post(&callback)
            .header("X-Twilio-Signature", signature)
            .form(&fields)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("bm90IHRoZSBzaWduYXR1cmU="), 403);
    assert_eq!(post(""), 403);
    assert_eq!(post(&signature), 204);
    env.wait_for_log("sms delivery receipt: provider=tw id=SM0001 status=undelivered error=30003");
    env.wait_for_log(
        "sms delivery receipt for provider tw refused: missing or wrong X-Twilio-Signature",
    );
    let metrics = env.app.metrics().render(&Snapshot::default());
    let line = "gatehouse_sms_delivery_total{provider=\"tw\",status=\"undelivered\"} 1";
    assert!(metrics.lines().any(|l| l == line), "{metrics}");
    // Unknown providers and providers without receipts are not there.
    let status = client
        .post(format!("{base}/sms/twilio/nope/status"))
        .form(&fields)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 404);
    assert_log_clean(&env, &["tw-auth-token-9", ALICE_PHONE]);
}

/// Twilio's algorithm, written again here from its documentation (not the server's code): the
/// URL, then each field's name and value sorted by name, HMAC-SHA1 under the auth token, Base64.
fn gatehouse_twilio_signature(token: &str, url: &str, fields: &[(String, String)]) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let mut sorted = fields.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(&name);
        data.push_str(&value);
    }
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
