//! The web login and OIDC endpoints refuse what they must: wrong redirect URIs, replayed or
//! expired codes, PKCE mistakes, unknown acrs, CSRF failures, out-of-order steps; and they send
//! the cookie flags and security headers they promise.

use std::time::Duration;

use crate::support::web::{
    csrf_of, exchange, location, query_param, session_cookie, token_request, WebLogin, VERIFIER,
};
use crate::support::*;

/// Three methods: two enabled at different levels, one disabled.
fn three_methods_with(options: EnvOptions) -> TestEnv {
    let scripts = vec![
        script("sms_otp", shipped_script()).with("level = 10"),
        script("second", shipped_script()).with("level = 5"),
        script("off", shipped_script()).with("enabled = false"),
    ];
    web_env(scripts, options)
}

fn three_methods() -> TestEnv {
    three_methods_with(EnvOptions::default())
}

fn authorize_url(env: &TestEnv, extra: &[(&str, &str)]) -> String {
    let defaults = [
        ("scope", "openid profile"),
        ("state", "s-1"),
        ("nonce", "n-1"),
    ];
    let pairs: Vec<(&str, &str)> = defaults.iter().chain(extra).copied().collect();
    crate::support::web::authorize_url(env.base.as_ref().unwrap(), &pairs)
}

#[test]
fn discovery_lists_enabled_interactive_acrs_in_level_order() {
    let env = three_methods();
    let doc: serde_json::Value = WebLogin::new(env.base.as_ref().unwrap())
        .get(&format!(
            "{}/.well-known/openid-configuration",
            env.base.as_ref().unwrap()
        ))
        .json()
        .unwrap();
    assert_eq!(doc["issuer"], env.base.clone().unwrap());
    assert_eq!(
        doc["acr_values_supported"],
        serde_json::json!(["second", "sms_otp"])
    );
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    let jwks: serde_json::Value = WebLogin::new(env.base.as_ref().unwrap())
        .get(doc["jwks_uri"].as_str().unwrap())
        .json()
        .unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert!(jwks["keys"][0]["kid"]
        .as_str()
        .is_some_and(|k| k.len() == 16));
}

#[test]
fn redirect_uri_must_match_exactly_and_a_mismatch_is_never_a_redirect() {
    let env = three_methods();
    for variant in [
        "http://127.0.0.1:9/callback2",
        "http://127.0.0.1:9/callback?x=1",
        "http://127.0.0.1:9/Callback",
        "HTTP://127.0.0.1:9/callback",
        "http://127.0.0.1:10/callback",
        "http://127.0.0.1:9/callback/",
        "http://127.0.0.1:9/callback#frag",
        "https://127.0.0.1:9/callback",
    ] {
        let response = WebLogin::new(env.base.as_ref().unwrap())
            .get(&authorize_url(&env, &[("redirect_uri", variant)]));
        assert_eq!(response.status(), 400, "{variant}");
        assert!(
            location(&response).is_empty(),
            "{variant} must not redirect"
        );
        assert!(
            response.text().unwrap().contains("not registered"),
            "{variant}"
        );
    }
    let unknown = WebLogin::new(env.base.as_ref().unwrap())
        .get(&authorize_url(&env, &[("client_id", "nobody")]));
    assert_eq!(unknown.status(), 400);
    assert!(location(&unknown).is_empty());
}

#[test]
fn protocol_errors_go_back_to_the_application_with_the_state() {
    let env = three_methods();
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (
            vec![("code_challenge", ""), ("code_challenge_method", "")],
            "invalid_request",
        ),
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("scope", "profile")], "invalid_scope"),
        (vec![("acr_values", "no_such_acr")], "invalid_request"),
        (vec![("acr_values", "off")], "invalid_request"),
        (vec![("prompt", "none")], "login_required"),
    ] {
        let response = WebLogin::new(env.base.as_ref().unwrap()).get(&authorize_url(&env, &extra));
        assert_eq!(response.status(), 303, "{extra:?}");
        let target = location(&response);
        assert!(target.starts_with(RP_REDIRECT), "{target}");
        assert_eq!(
            query_param(&target, "error").as_deref(),
            Some(error),
            "{extra:?}: {target}"
        );
        assert_eq!(query_param(&target, "state").as_deref(), Some("s-1"));
    }
    // Without PKCE, a client configured not to need it is fine.
    let legacy = WebLogin::new(env.base.as_ref().unwrap()).get(&authorize_url(
        &env,
        &[
            ("client_id", "legacy"),
            ("code_challenge", ""),
            ("code_challenge_method", ""),
        ],
    ));
    assert_eq!(location(&legacy), "/login");
}

#[test]
fn first_enabled_acr_wins_and_state_is_echoed_byte_for_byte() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    let odd_state = "a b+c/%20&=ü\"<>";
    let url = authorize_url(
        &env,
        &[
            ("acr_values", "off no_such second sms_otp"),
            ("state", odd_state),
        ],
    );
    let callback = browser.sign_in(&url, || env.sms.last_code());
    assert_eq!(query_param(&callback, "state").as_deref(), Some(odd_state));
    let log = env.wait_for_log("authenticated user alice");
    assert!(
        log.contains("acr=second") && log.contains("authenticated user alice"),
        "{log}"
    );
}

#[test]
fn codes_are_single_use_and_pkce_is_checked() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    let code = query_param(
        &browser.sign_in(&authorize_url(&env, &[]), || env.sms.last_code()),
        "code",
    )
    .unwrap();
    let (status, body) = exchange(
        env.base.as_ref().unwrap(),
        &code,
        Some("dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXx"),
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "wrong verifier"
    );
    // The failed attempt used the code up: the right verifier is too late.
    let (status, body) = exchange(env.base.as_ref().unwrap(), &code, Some(VERIFIER));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let code = query_param(
        &browser.sign_in(&authorize_url(&env, &[("prompt", "login")]), || {
            env.sms.last_code()
        }),
        "code",
    )
    .unwrap();
    let (status, body) = exchange(env.base.as_ref().unwrap(), &code, None);
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "missing verifier"
    );

    let code = query_param(
        &browser.sign_in(&authorize_url(&env, &[("prompt", "login")]), || {
            env.sms.last_code()
        }),
        "code",
    )
    .unwrap();
    let (status, body) = exchange(env.base.as_ref().unwrap(), &code, Some(VERIFIER));
    assert_eq!(status, 200, "{body}");
    assert!(body["id_token"].is_string() && body["access_token"].is_string());
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    let userinfo = |token: &str| {
        reqwest::blocking::Client::new()
            .get(format!("{}/userinfo", env.base.as_ref().unwrap()))
            .bearer_auth(token)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(userinfo(&access_token), 200);
    // A replay is refused, and the access token the code gave is revoked (RFC 6749 4.1.2).
    let (status, body) = exchange(env.base.as_ref().unwrap(), &code, Some(VERIFIER));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "replay"
    );
    assert_eq!(userinfo(&access_token), 401);
    env.wait_for_log(
        "authorization code of client rp presented twice: its access token is revoked",
    );
    assert_log_clean(&env, &[&code, &access_token]);
}

#[test]
fn expired_codes_are_refused() {
    let env = three_methods_with(EnvOptions {
        oidc_extra: "code_ttl_seconds = 1".into(),
        ..EnvOptions::default()
    });
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    let code = query_param(
        &browser.sign_in(&authorize_url(&env, &[]), || env.sms.last_code()),
        "code",
    )
    .unwrap();
    // Letting the one-second lifetime pass is the point of this test.
    env.advance(Duration::from_millis(1100));
    let (status, body) = exchange(env.base.as_ref().unwrap(), &code, Some(VERIFIER));
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[test]
fn client_authentication_basic_and_post() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    let code = query_param(
        &browser.sign_in(&authorize_url(&env, &[]), || env.sms.last_code()),
        "code",
    )
    .unwrap();
    let (status, body) = token_request(
        env.base.as_ref().unwrap(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", RP_REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", RP_ID),
            ("client_secret", "wrong"),
        ],
        None,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let code = query_param(
        &browser.sign_in(&authorize_url(&env, &[("prompt", "login")]), || {
            env.sms.last_code()
        }),
        "code",
    )
    .unwrap();
    let (status, body) = token_request(
        env.base.as_ref().unwrap(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", RP_REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", RP_ID),
            ("client_secret", RP_SECRET),
        ],
        None,
    );
    assert_eq!(status, 200, "client_secret_post: {body}");
    let access = body["access_token"].as_str().unwrap();
    let info: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/userinfo", env.base.as_ref().unwrap()))
        .bearer_auth(access)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["sub"], "alice");
    assert_eq!(
        info["given_name"],
        serde_json::Value::Null,
        "alice has no givenName in tests"
    );
    let refused = reqwest::blocking::Client::new()
        .get(format!("{}/userinfo", env.base.as_ref().unwrap()))
        .bearer_auth("nope")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("invalid_token"));
}

#[test]
fn csrf_token_is_required_and_checked() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    browser.get(&authorize_url(&env, &[]));
    let csrf = csrf_of(&browser.page());
    for bad in [None, Some("0".repeat(64)), Some(String::new())] {
        let mut fields = vec![
            ("step", "1"),
            ("username", "alice"),
            ("password", ALICE_PASSWORD),
        ];
        if let Some(bad) = &bad {
            fields.push(("csrf", bad.as_str()));
        }
        let response = browser.post_raw(&fields);
        assert_eq!(response.status(), 403, "{bad:?}");
    }
    assert_eq!(env.sms.count(), 0, "nothing was tried");
    let ok = browser.post_raw(&[
        ("csrf", &csrf),
        ("step", "1"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ]);
    assert_eq!(location(&ok), "/login");
    assert_eq!(env.sms.count(), 1);
}

#[test]
fn repeated_form_fields_are_refused() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    browser.get(&authorize_url(&env, &[]));
    let csrf = csrf_of(&browser.page());
    browser.post_raw(&[
        ("csrf", &csrf),
        ("step", "1"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ]);
    let csrf = csrf_of(&browser.page());
    let code = env.sms.last_code();
    let response = browser.post_raw(&[
        ("csrf", &csrf),
        ("step", "2"),
        ("passcode", "000000"),
        ("passcode", &code),
    ]);
    assert_eq!(response.status(), 400);
    // Nothing was evaluated: the right code still works.
    let done = browser.post_raw(&[("csrf", &csrf), ("step", "2"), ("passcode", &code)]);
    assert!(location(&done).starts_with(RP_REDIRECT));
}

#[test]
fn step_two_cannot_be_reached_before_step_one() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    browser.get(&authorize_url(&env, &[]));
    let csrf = csrf_of(&browser.page());
    let response = browser.post_raw(&[("csrf", &csrf), ("step", "2"), ("passcode", "123456")]);
    assert_eq!(location(&response), "/login");
    let page = browser.page();
    assert!(
        page.contains("name=\"password\""),
        "still the password page: {page}"
    );
    assert_eq!(env.sms.count(), 0);
}

#[test]
fn step_one_failures_look_the_same_and_send_nothing() {
    let env = three_methods();
    let mut pages = Vec::new();
    for (user, password) in [
        ("alice", "wrong"),
        ("nobody", ALICE_PASSWORD),
        ("carol", ALICE_PASSWORD),
    ] {
        let browser = WebLogin::new(env.base.as_ref().unwrap());
        browser.get(&authorize_url(&env, &[]));
        let csrf = csrf_of(&browser.page());
        let response = browser.post_raw(&[
            ("csrf", &csrf),
            ("step", "1"),
            ("username", user),
            ("password", password),
        ]);
        assert_eq!(location(&response), "/login");
        let page = browser.page();
        pages.push(page.replace(&csrf_of(&page), "CSRF"));
    }
    assert!(pages[0].contains("Failed to authenticate."));
    assert_eq!(pages[0], pages[1]);
    assert_eq!(pages[1], pages[2]);
    assert_eq!(env.sms.count(), 0);
}

#[test]
fn cookie_flags_session_rotation_and_security_headers() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    let start = browser.get(&authorize_url(&env, &[]));
    let first = session_cookie(&start).unwrap();
    assert!(
        first.starts_with("gatehouse_session=")
            && first.contains("HttpOnly")
            && first.contains("SameSite=Lax")
            && first.contains("Path=/"),
        "{first}"
    );
    assert!(
        !first.contains("Secure"),
        "no Secure flag over http: {first}"
    );
    let page = browser.get(&format!("{}/login", env.base.as_ref().unwrap()));
    for (name, expected) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(page.headers()[name], expected, "{name}");
    }
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'")
            && csp.contains("form-action 'self' http://127.0.0.1:9")
            && csp.contains("script-src 'self'")
            && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.headers().contains_key("x-request-id"));
    // The pages' one script (each form sent once), from the server itself.
    let script = browser.get(&format!(
        "{}/static/gatehouse.js",
        env.base.as_ref().unwrap()
    ));
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script
        .text()
        .unwrap()
        .contains("addEventListener(\"submit\""));
    let csrf = csrf_of(&page.text().unwrap());
    let passed = browser.post_raw(&[
        ("csrf", &csrf),
        ("step", "1"),
        ("username", "alice"),
        ("password", ALICE_PASSWORD),
    ]);
    let second = session_cookie(&passed).expect("a new session id after a passed step");
    assert_ne!(first.split(';').next(), second.split(';').next());
    // The old session id is worthless now.
    let stale = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let old = stale
        .get(format!("{}/login", env.base.as_ref().unwrap()))
        .header("cookie", first.split(';').next().unwrap())
        .send()
        .unwrap();
    assert_eq!(old.status(), 400);
    for path in ["/.well-known/openid-configuration", "/health", "/authorize"] {
        let response = WebLogin::new(env.base.as_ref().unwrap())
            .get(&format!("{}{path}", env.base.as_ref().unwrap()));
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
        assert!(
            response.headers().contains_key("content-security-policy"),
            "{path}"
        );
    }
}

#[test]
fn https_issuer_turns_on_host_prefix_secure_cookies_and_hsts() {
    let env = three_methods_with(EnvOptions {
        issuer: Some("https://login.example.test".into()),
        ..EnvOptions::default()
    });
    let start = WebLogin::new(env.base.as_ref().unwrap()).get(&authorize_url(&env, &[]));
    let cookie = session_cookie(&start).unwrap();
    assert!(
        cookie.starts_with("__Host-gatehouse=")
            && cookie.contains("; Secure")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Domain="));
    assert!(start.headers()["strict-transport-security"]
        .to_str()
        .unwrap()
        .starts_with("max-age="));
}

#[test]
fn single_sign_on_and_logout() {
    let env = three_methods();
    let browser = WebLogin::new(env.base.as_ref().unwrap());
    let callback = browser.sign_in(&authorize_url(&env, &[]), || env.sms.last_code());
    let code = query_param(&callback, "code").unwrap();
    let (_, tokens) = exchange(env.base.as_ref().unwrap(), &code, Some(VERIFIER));
    let sent = env.sms.count();
    // Signed in: the next authorization skips the login.
    let again = browser.get(&authorize_url(&env, &[("state", "s-2")]));
    let target = location(&again);
    assert!(
        target.starts_with(RP_REDIRECT) && query_param(&target, "code").is_some(),
        "{target}"
    );
    assert_eq!(env.sms.count(), sent);
    // prompt=login forces a new login; an acr the session did not use does too.
    assert_eq!(
        location(&browser.get(&authorize_url(&env, &[("prompt", "login")]))),
        "/login"
    );
    assert_eq!(
        location(&browser.get(&authorize_url(&env, &[("acr_values", "second")]))),
        "/login"
    );
    // max_age: a recent sign-in is reused, max_age=0 always asks again, junk is refused.
    let recent = location(&browser.get(&authorize_url(&env, &[("max_age", "3600")])));
    assert!(query_param(&recent, "code").is_some(), "{recent}");
    assert_eq!(
        location(&browser.get(&authorize_url(&env, &[("max_age", "0")]))),
        "/login"
    );
    let junk = location(&browser.get(&authorize_url(&env, &[("max_age", "-5")])));
    assert_eq!(
        query_param(&junk, "error").as_deref(),
        Some("invalid_request"),
        "{junk}"
    );
    assert_eq!(env.sms.count(), sent);
    // Logout: only to a registered URI, with the state echoed.
    let base = env.base.clone().unwrap();
    let id_token = tokens["id_token"].as_str().unwrap();
    let bad = browser.get(&format!(
        "{base}/end_session?id_token_hint={id_token}&post_logout_redirect_uri=http://evil.test/"
    ));
    assert_eq!(bad.status(), 400);
    assert!(location(&bad).is_empty());
    let out = browser.get(&format!("{base}/end_session?id_token_hint={id_token}&post_logout_redirect_uri={RP_LOGOUT}&state=bye-1"));
    assert_eq!(location(&out), format!("{RP_LOGOUT}?state=bye-1"));
    env.wait_for_log("logout of alice: hook returned true");
    assert_eq!(
        location(&browser.get(&authorize_url(&env, &[]))),
        "/login",
        "signed out"
    );
}

/// Thirteen wrong passwords from one client address; returns whether alice's right password
/// is then accepted from `final_forwarded_for`.
fn address_throttle_run(
    env: &TestEnv,
    attacker_forwarded_for: &str,
    final_forwarded_for: &str,
) -> bool {
    let base = env.base.clone().unwrap();
    let attempt = |user: &str, password: &str, forwarded: &str| {
        let browser = WebLogin::new(env.base.as_ref().unwrap());
        browser
            .browser
            .client
            .get(authorize_url(env, &[]))
            .header("x-forwarded-for", forwarded)
            .send()
            .unwrap();
        let csrf = csrf_of(
            &browser
                .browser
                .client
                .get(format!("{base}/login"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let form = [
            ("csrf", csrf.as_str()),
            ("step", "1"),
            ("username", user),
            ("password", password),
        ];
        browser
            .browser
            .client
            .post(format!("{base}/login"))
            .header("x-forwarded-for", forwarded)
            .form(&form)
            .send()
            .unwrap();
        browser
            .browser
            .client
            .get(format!("{base}/login"))
            .send()
            .unwrap()
            .text()
            .unwrap()
            .contains("name=\"passcode\"")
    };
    for i in 0..13 {
        assert!(!attempt(
            &format!("user{i}"),
            "guess",
            attacker_forwarded_for
        ));
    }
    attempt("alice", ALICE_PASSWORD, final_forwarded_for)
}

#[test]
fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    // Untrusted: the header is ignored, so the attacker's own address (127.0.0.1) is throttled and a
    // forged header does not help.
    let env = three_methods();
    assert!(!address_throttle_run(&env, "198.51.100.1", "198.51.100.2"));
    // Behind a trusted proxy on 127.0.0.1, each forwarded client is counted on its own.
    let trusted = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            web: true,
            server: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..EnvOptions::default()
        },
    );
    assert!(address_throttle_run(
        &trusted,
        "198.51.100.1",
        "198.51.100.2"
    ));
}

/// The smallest custom page of scripts/README.md works as written.
#[test]
fn the_documented_custom_page_works() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/README.md"),
    )
    .unwrap();
    let start = readme.find("The smallest working page:").unwrap();
    let block = &readme[start..];
    let html = &block[block.find("```html\n").unwrap() + 8..];
    let html = &html[..html.find("```").unwrap()];
    let env = web_env(
        vec![script("custom", fixture("custom_page"))],
        EnvOptions {
            pages: vec![("custom.html".into(), html.into())],
            ..EnvOptions::default()
        },
    );
    let login = WebLogin::start(env.base.as_ref().unwrap(), None);
    login.password("alice", ALICE_PASSWORD);
    login.passcode("wrong");
    assert!(login.page().contains("Not that one."));
    let claims = login.finish(login.passcode("open-sesame"));
    assert_eq!(claims["sub"], "alice");
}

/// A script that loads but fails on every call is not "ok": /health says degraded, with the
/// count and the last error at the failing expression.
#[test]
fn run_time_failures_show_in_health() {
    let env = web_env(
        vec![
            script("good", shipped_script()),
            script("broken", fixture("fails_at_run_time")),
        ],
        EnvOptions::default(),
    );
    let base = env.base.clone().unwrap();
    let health = |env: &TestEnv| -> serde_json::Value {
        WebLogin::new(env.base.as_ref().unwrap())
            .get(&format!("{base}/health"))
            .json()
            .unwrap()
    };
    assert_eq!(health(&env)["status"], "ok");
    for _ in 0..2 {
        let login = WebLogin::start(&base, Some("broken"));
        login.password("alice", ALICE_PASSWORD);
    }
    let doc = health(&env);
    assert_eq!(doc["status"], "degraded", "{doc}");
    let broken = &doc["scripts"][0];
    assert_eq!(broken["acr"], "broken", "{doc}");
    assert_eq!(broken["state"], "degraded");
    assert_eq!(broken["failures"]["total"], 2);
    assert_eq!(broken["failures"]["recent"], 2);
    assert_eq!(broken["failures"]["last"]["hook"], "authenticate");
    let error = broken["failures"]["last"]["error"].as_str().unwrap();
    assert!(
        error.contains("broken.rhai:4:"),
        "the failing expression's line: {error}"
    );
    assert!(error.contains("no_such_function"), "{error}");
    assert_eq!(doc["scripts"][1]["state"], "active");
    // Five quiet minutes later it is no longer degraded; the count stays.
    env.advance(Duration::from_secs(301));
    let doc = health(&env);
    assert_eq!(doc["status"], "ok", "{doc}");
    assert_eq!(doc["scripts"][0]["failures"]["recent"], 0);
    assert_eq!(doc["scripts"][0]["failures"]["total"], 2);
}

/// The reference an error page shows is on the log line that says what went wrong.
#[test]
fn an_error_page_reference_is_in_the_matching_log_line() {
    let env = web_env(
        vec![script("missing", fixture("missing_page"))],
        EnvOptions::default(),
    );
    let login = WebLogin::start(env.base.as_ref().unwrap(), None);
    login.submit(&[("username", "alice")]);
    let page = login.get(&format!("{}/login", login.base));
    assert_eq!(page.status(), 500);
    let html = page.text().unwrap();
    let start = html
        .find("Reference: <code>")
        .expect("a reference on the page")
        + "Reference: <code>".len();
    let reference: String = html[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    assert_eq!(reference.len(), 16, "{html}");
    let log = env.wait_for_log("which has no template");
    let line = log
        .lines()
        .find(|l| l.contains("which has no template"))
        .unwrap();
    assert!(line.contains(&format!("request={reference}")), "{line}");
}

/// The token endpoint refuses a body client_id that differs from the Basic one, and throttles
/// failed client authentication per client and per address, even for a burst sent at once.
#[test]
fn token_endpoint_refuses_mixed_clients_and_throttles_wrong_secrets() {
    let env = three_methods_with(EnvOptions {
        server: "trusted_proxies = [\"127.0.0.1\"]".into(),
        ..EnvOptions::default()
    });
    let base = env.base.clone().unwrap();
    let post = |form: &[(&str, &str)], basic: Option<(&str, &str)>, from: &str| {
        let client = reqwest::blocking::Client::new();
        let mut request = client
            .post(format!("{base}/token"))
            .header("x-forwarded-for", from)
            .form(form);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().unwrap();
        (status, body, retry_after)
    };
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", "x"),
        ("redirect_uri", RP_REDIRECT),
    ];
    let mut mixed = grant.to_vec();
    mixed.push(("client_id", "legacy"));
    let (status, body, _) = post(&mixed, Some((RP_ID, RP_SECRET)), "198.51.100.1");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    // 30 wrong secrets for one client at once, from 30 addresses: the 9 tries left of the 10 a
    // minute allows (the mixed request above was one) are made, the rest get 429.
    let answers: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..30)
            .map(|i| {
                let post = &post;
                let grant = &grant;
                s.spawn(move || {
                    post(
                        grant,
                        Some((RP_ID, "wrong")),
                        &format!("198.51.100.{}", i + 10),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|s| **s == 401).count(),
        9,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|s| **s == 429).count(),
        21,
        "{answers:?}"
    );
    // Even the right secret waits out the window, with Retry-After.
    let (status, _, retry_after) = post(&grant, Some((RP_ID, RP_SECRET)), "198.51.100.99");
    assert_eq!(status, 429);
    assert!(retry_after.is_some());
    env.advance(std::time::Duration::from_secs(61));
    let (status, body, _) = post(&grant, Some((RP_ID, RP_SECRET)), "198.51.100.99");
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    // Per address: 20 failures from one address across clients, then 429 for any client.
    for i in 0..20 {
        let client = if i % 2 == 0 { "legacy" } else { "nobody" };
        assert_eq!(
            post(&grant, Some((client, "wrong")), "203.0.113.5").0,
            401,
            "try {i}"
        );
    }
    assert_eq!(
        post(&grant, Some(("legacy", "legacy-secret")), "203.0.113.5").0,
        429
    );
}

#[test]
fn the_shipped_demo_secret_is_refused_with_an_https_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        "[oidc]\nissuer = \"https://login.example.com\"\n[[clients]]\nclient_id = \"demo\"\nclient_secret = \"demo-secret\"\nredirect_uris = [\"https://app.example.com/cb\"]\n",
    )
    .unwrap();
    let error = gatehouse::config::Config::load(&path)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("clients[0].client_secret: is the shipped demo secret"),
        "{error}"
    );
}

/// A cross-site GET /end_session without an id_token_hint does not sign the user out: it asks,
/// and only the user's POST with the session's CSRF token ends the session.
#[test]
fn logout_without_a_hint_asks_the_user_first() {
    let env = three_methods();
    let base = env.base.clone().unwrap();
    let browser = WebLogin::new(&base);
    let callback = browser.sign_in(&authorize_url(&env, &[]), || env.sms.last_code());
    assert!(callback.starts_with(RP_REDIRECT));
    let asked = browser.get(&format!(
        "{base}/end_session?client_id={RP_ID}&post_logout_redirect_uri={RP_LOGOUT}&state=bye-2"
    ));
    assert_eq!(asked.status(), 200);
    let page = asked.text().unwrap();
    assert!(page.contains("Sign out?"), "{page}");
    // Still signed in: single sign-on still works.
    let again = browser.get(&authorize_url(&env, &[]));
    assert!(location(&again).starts_with(RP_REDIRECT), "still signed in");
    // A forged POST without the token asks again.
    let forged = browser.browser.post(
        &format!("{base}/end_session"),
        &[
            ("client_id", RP_ID),
            ("post_logout_redirect_uri", RP_LOGOUT),
        ],
    );
    let page = forged.text().unwrap();
    assert!(page.contains("Sign out?"));
    // The user's confirmation signs out and goes back to the application.
    let csrf = csrf_of(&page);
    let out = browser.browser.post(
        &format!("{base}/end_session"),
        &[
            ("csrf", csrf.as_str()),
            ("client_id", RP_ID),
            ("post_logout_redirect_uri", RP_LOGOUT),
            ("state", "bye-2"),
        ],
    );
    assert_eq!(location(&out), format!("{RP_LOGOUT}?state=bye-2"));
    assert_eq!(location(&browser.get(&authorize_url(&env, &[]))), "/login");
}

/// A refusal with a body unread (a 415 from /token and the form endpoints, a 400 for a sign-in
/// that does not exist, a 404, a 405) leaves a kept-alive connection usable: each refused
/// request followed by a good one, on one connection.
#[test]
fn a_kept_alive_connection_survives_refusals_of_requests_with_a_body() {
    use std::io::{BufRead, BufReader, Read, Write};
    let env = three_methods();
    let address = env
        .base
        .as_ref()
        .unwrap()
        .trim_start_matches("http://")
        .to_owned();
    let stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Reads one response: its status and (by Content-Length) its body.
    let mut response = || -> u16 {
        let mut status = String::new();
        if reader.read_line(&mut status).unwrap() == 0 {
            return 0; // the server closed the connection
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            assert_ne!(reader.read_line(&mut line).unwrap(), 0, "closed mid-answer");
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        status.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0)
    };
    let body = "grant_type=authorization_code&code=x&redirect_uri=x";
    let refusals = [
        ("/token", "text/plain", 415),
        ("/authorize", "text/plain", 415),
        ("/end_session", "application/json", 415),
        ("/login", "application/x-www-form-urlencoded", 400),
        ("/health", "application/x-www-form-urlencoded", 405),
        ("/nowhere", "application/x-www-form-urlencoded", 404),
    ];
    for (path, content_type, status) in refusals {
        for i in 0..100 {
            write!(
                writer,
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            assert_eq!(response(), status, "{path}, try {i}");
            writer
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(response(), 200, "{path}, try {i}: the connection went on");
        }
    }
}
