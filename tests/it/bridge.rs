//! The outbound HTTP bridge refuses what it must: redirects, private and loopback destinations,
//! plain http, oversize answers; nothing leaves the machine for a refused destination.

use gatehouse::config::HttpConfig;
use gatehouse::outbound::{HttpBridge, HttpError, Method, OutboundRequest};

use crate::support::mock_http::{MockResponse, MockServer};
use crate::support::*;

fn bridge(allow_loopback: bool, max_response_bytes: u64) -> HttpBridge {
    let config = HttpConfig {
        insecure_http_hosts: vec!["127.0.0.1".into(), "localhost".into()],
        allow_addresses: if allow_loopback {
            vec![gatehouse::config::Network::parse("127.0.0.1").unwrap()]
        } else {
            vec![]
        },
        max_response_bytes,
        timeout_ms: 1500,
        connect_timeout_ms: 1000,
    };
    HttpBridge::new(&config).unwrap()
}

fn get(bridge: &HttpBridge, url: &str) -> Result<gatehouse::outbound::OutboundResponse, HttpError> {
    bridge.send(&OutboundRequest::new(Method::Get, url))
}

#[test]
fn redirects_are_never_followed() {
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9/admin",
    ] {
        let server = MockServer::sequence(vec![
            MockResponse::text(302, "").with_header("Location", target)
        ]);
        let answer = get(&bridge(true, 1024), &format!("{}/start", server.url())).unwrap();
        assert_eq!(answer.status, 302);
        assert_eq!(server.requests().len(), 1);
    }
}

#[test]
fn loopback_private_and_metadata_destinations_are_refused_unless_allowed() {
    let server = MockServer::sequence(vec![MockResponse::text(200, "hello")]);
    let strict = bridge(false, 1024);
    let error = get(&strict, &format!("{}/x?api_key=do-not-show", server.url()))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("destination 127.0.0.1 is a loopback address; refused"),
        "{error}"
    );
    assert!(!error.contains("do-not-show"), "{error}");
    // A name that resolves to loopback is checked on the resolved address.
    let error = get(
        &strict,
        &format!("http://localhost:{}/x", server.addr.port()),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("is a loopback address"), "{error}");
    assert_eq!(server.requests().len(), 0, "nothing reached the server");
    for (url, kind) in [
        (
            "https://169.254.169.254/latest/meta-data/",
            "the cloud metadata address",
        ),
        ("https://10.0.0.8/", "a private address"),
        ("https://192.168.1.1/", "a private address"),
        ("https://[::1]/", "a loopback address"),
        (
            "https://[fd00:ec2::254]/",
            "a private (unique local) address",
        ),
    ] {
        let error = get(&strict, url).unwrap_err();
        assert!(
            matches!(&error, HttpError::RefusedDestination { kind: k, .. } if k == kind),
            "{url}: {error}"
        );
    }
    // Allowed explicitly, the same destination works.
    assert_eq!(
        get(&bridge(true, 1024), &format!("{}/x", server.url()))
            .unwrap()
            .body,
        "hello"
    );
}

#[test]
fn plain_http_is_refused_unless_the_host_is_listed() {
    let error = get(&bridge(true, 1024), "http://example.com/").unwrap_err();
    assert!(matches!(error, HttpError::InsecureScheme(_)), "{error}");
    assert!(matches!(
        get(&bridge(true, 1024), "ftp://example.com/").unwrap_err(),
        HttpError::BadUrl(_)
    ));
}

#[test]
fn oversize_answers_are_cut_with_a_clear_error() {
    let server = MockServer::sequence(vec![MockResponse::text(200, &"x".repeat(5000))]);
    let error = get(&bridge(true, 1024), &server.url())
        .unwrap_err()
        .to_string();
    assert!(
        error.ends_with("the answer is larger than 1024 bytes; refused"),
        "{error}"
    );
}

#[test]
fn scripts_use_the_bridge_through_http_module() {
    let server = MockServer::sequence(vec![MockResponse::json(200, r#"{"ok":true,"n":[1,2]}"#)]);
    let source = format!(
        r#"
fn authenticate(config, params, step) {{
    let answer = http::post("{}/api", #{{ bearer: config.api_token, json: #{{ user: params.username, n: 3 }}, headers: #{{ "X-Trace": "t1" }} }});
    let refused = http::get("https://169.254.169.254/latest/meta-data/");
    identity::set_user("alice");
    answer.ok && answer.status == 200 && answer.json.n[1] == 2 && !refused.ok && refused.status == 0
        && refused.error.contains("cloud metadata")
}}
"#,
        server.url()
    );
    let env = TestEnv::new(vec![script("web", &source).with(
        "secret_hosts = [\"127.0.0.1\"]\n[scripts.properties]\napi_token = \"bearer-5ecret\"",
    )]);
    let page = env.start(None).unwrap();
    expect_authenticated(
        env.submit(&page.login, 1, &[("username", "alice")])
            .unwrap(),
    );
    let request = &server.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some("Bearer bearer-5ecret")
    );
    assert_eq!(request.header("x-trace"), Some("t1"));
    assert_eq!(
        request.json(),
        serde_json::json!({ "user": "alice", "n": 3 })
    );
    env.wait_for_log("http Post");
    assert_log_clean(&env, &["bearer-5ecret"]);
}

/// A script's secrets go only to its own destinations; an answer that echoes one is opaque.
#[test]
fn secrets_go_only_to_the_scripts_own_destinations() {
    let server = MockServer::sequence(vec![
        MockResponse::json(200, r#"{"echo":"bearer-5ecret"}"#),
        MockResponse::json(200, r#"{"ok":true}"#),
    ]);
    let source = r#"
fn authenticate(config, params, step) {
    identity::set_user("alice");
    let target = params.target;
    let what = params.what;
    let options = if what == "token" { #{ bearer: config.api_token } }
        else if what == "typed" { #{ json: #{ t: "bearer-5ecret" } } }
        else { #{ form: #{ p: params.password } } };
    let answer = http::post(target, options);
    print(`Bridge. ${what} body is ${type_of(answer.body)}`);
    true
}
"#;
    let url = server.url();
    let entry =
        |extra: &str| format!("{extra}\n[scripts.properties]\napi_token = \"bearer-5ecret\"\n");
    // No URL property names the mock and no secret_hosts: every secret is refused.
    let env = TestEnv::new(vec![script("strict", source).with(&entry(""))]);
    for what in ["token", "typed", "password"] {
        let page = env.start(None).unwrap();
        expect_retry(
            env.submit(
                &page.login,
                1,
                &[
                    ("target", url.as_str()),
                    ("what", what),
                    ("password", "pw-8c1e"),
                ],
            )
            .unwrap(),
        );
    }
    env.wait_for_log("may go only to this script's own destinations (none), not to 127.0.0.1");
    assert!(server.requests().is_empty(), "nothing left");
    // A URL-valued property makes its host a destination; the echoed token comes back opaque.
    let env = TestEnv::new(vec![script("bound", source).with(&format!(
        "\n[scripts.properties]\napi_token = \"bearer-5ecret\"\napi_base = {url:?}\n"
    ))]);
    let page = env.start(None).unwrap();
    expect_authenticated(
        env.submit(
            &page.login,
            1,
            &[("target", url.as_str()), ("what", "token")],
        )
        .unwrap(),
    );
    env.wait_for_log("Bridge. token body is Secret");
    assert_eq!(server.requests().len(), 1);
    assert_log_clean(&env, &["bearer-5ecret"]);
}
