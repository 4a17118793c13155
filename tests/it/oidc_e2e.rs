//! End to end with a real relying-party library (the `openidconnect` crate): discovery, an
//! authorization URL with acr_values, PKCE and nonce, the login forms posted by a cookie-keeping
//! client, the code exchange, the ID token verified (signature via JWKS, nonce, acr), userinfo.
//! Once for each shipped script.

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

use crate::support::mock_http::{MockResponse, MockServer};
use crate::support::web::{query_param, WebLogin};
use crate::support::*;

/// Logs in through the pages: password, then the code `code_for()` finds after step 1; the
/// passcode page shows where the code went, masked.
fn log_in_with_pages(
    login: &WebLogin,
    authorize_url: &str,
    code_for: impl Fn() -> String,
) -> String {
    login.sign_in(authorize_url, || {
        let page = login.page();
        assert!(page.contains("+44******0123"), "{page}");
        code_for()
    })
}

pub(crate) fn relying_party_login(env: &TestEnv, acr: &str, code_for: impl Fn() -> String) {
    let base = env.base.clone().unwrap();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata =
        CoreProviderMetadata::discover(&IssuerUrl::new(base.clone()).unwrap(), &http).unwrap();
    let supported: Vec<String> = metadata
        .acr_values_supported()
        .unwrap()
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    assert!(
        supported.contains(&acr.to_owned()),
        "{acr} in acr_values_supported {supported:?}"
    );
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(RP_ID.into()),
        Some(ClientSecret::new(RP_SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(RP_REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (authorize_url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("phone".into()))
        .add_scope(Scope::new("email".into()))
        .add_auth_context_value(AuthenticationContextClass::new(acr.into()))
        .set_pkce_challenge(challenge)
        .url();
    let login = WebLogin::new(&base);
    let callback = log_in_with_pages(&login, authorize_url.as_str(), code_for);
    assert!(callback.starts_with(RP_REDIRECT), "{callback}");
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some(state.secret().as_str())
    );
    assert_eq!(
        query_param(&callback, "iss").as_deref(),
        Some(base.as_str())
    );
    let code = query_param(&callback, "code").unwrap();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request(&http)
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .expect("signature, issuer, audience, nonce verified");
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some(acr));
    let amr: Vec<String> = claims
        .auth_method_refs()
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(amr, ["pwd", "sms", "mfa"]);
    let userinfo: CoreUserInfoClaims = client
        .user_info(tokens.access_token().clone(), None)
        .unwrap()
        .request(&http)
        .unwrap();
    assert_eq!(userinfo.subject().as_str(), "alice");
    assert_eq!(
        userinfo.phone_number().map(|p| p.as_str()),
        Some(ALICE_PHONE)
    );
}

/// Stytch checks its codes itself: its entry says what the ID token's amr is. The others get
/// theirs from what the host verified (password, then the SMS code).
const AMR: &str = "amr = [\"pwd\", \"sms\", \"mfa\"]";

#[test]
fn relying_party_logs_in_with_sms_otp() {
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions::default(),
    );
    relying_party_login(&env, "sms_otp", || env.sms.last_code());
    assert_log_clean(&env, &[&env.sms.last_code(), ALICE_PASSWORD, RP_SECRET]);
}

#[test]
fn relying_party_logs_in_with_twilio_sms() {
    let twilio = MockServer::sequence(vec![MockResponse::json(201, r#"{"sid":"SM9"}"#)]);
    let env = web_env(vec![
        script("sms_otp", shipped_script()),
        script("twilio_sms", shipped("twilio_sms")).with(&format!(
            "[scripts.properties]\ntwilio_sid = \"AC1\"\ntwilio_token = \"tw-tok-x\"\nfrom_number = \"+15550001111\"\ntwilio_api_base = {:?}",
            twilio.url()
        )),
    ], EnvOptions::default());
    relying_party_login(&env, "twilio_sms", || {
        twilio.requests().last().unwrap().form()[2].1[..6].to_owned()
    });
    assert_eq!(twilio.requests().len(), 1);
    assert_eq!(env.sms.count(), 0, "the default provider was not used");
}

#[test]
fn relying_party_logs_in_with_stytch() {
    let stytch = MockServer::start(|request| match request.path.as_str() {
        "/v1/otps/sms/login_or_create" => MockResponse::json(
            200,
            r#"{"status_code":200,"phone_id":"phone-number-test-e2e"}"#,
        ),
        "/v1/otps/authenticate" if request.json()["code"] == "135790" => {
            MockResponse::json(200, r#"{"status_code":200}"#)
        }
        _ => MockResponse::json(404, r#"{"status_code":404,"error_message":"nope"}"#),
    });
    let base = stytch.url();
    let env = web_env(vec![
        script("sms_otp", shipped_script()),
        script("stytch", shipped("stytch")).with(&format!(
            "{AMR}\n[scripts.properties]\nSMS_ENDPOINT = \"{base}/v1/otps/sms/send\"\nAUTH_ENDPOINT = \"{base}/v1/otps/authenticate\"\nENROLL_ENDPOINT = \"{base}/v1/otps/sms/login_or_create\"\nPROJECT_ID = \"project-test-e2e\"\nSECRET = \"secret-test-e2e\""
        )),
    ], EnvOptions::default());
    relying_party_login(&env, "stytch", || "135790".to_owned());
    assert_eq!(
        stytch.requests().len(),
        2,
        "one enrolment/send, one authenticate"
    );
}

/// A second step that verifies nothing adds nothing to `amr`: the ID token says what the host
/// verified, never how many steps passed.
#[test]
fn amr_names_only_what_was_verified_not_how_many_steps_passed() {
    let env = web_env(
        vec![
            script("two_steps", fixture("second_step_verifies_nothing")),
            script("nothing", fixture("verifies_nothing")),
        ],
        EnvOptions::default(),
    );
    let login = WebLogin::start(env.base.as_ref().unwrap(), Some("two_steps"));
    login.password("alice", ALICE_PASSWORD);
    let claims = login.finish(login.submit(&[("anything", "x")]));
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
    let login = WebLogin::start(env.base.as_ref().unwrap(), Some("nothing"));
    let claims = login.finish(login.submit(&[("username", "alice")]));
    assert!(claims.get("amr").is_none(), "{claims}");
}

/// What a Gluu author porting a script reaches for: the request, the time, digests, base64,
/// random tokens, regular expressions, and claims of their own in the ID token.
#[test]
fn scripts_read_the_request_use_helpers_and_add_claims() {
    let env = web_env(
        vec![script("helpers", fixture("helpers"))],
        EnvOptions {
            server: "trusted_proxies = [\"127.0.0.1\"]".into(),
            ..EnvOptions::default()
        },
    );
    let base = env.base.clone().unwrap();
    let login = WebLogin::new_with_headers(
        &base,
        &[
            ("user-agent", "Helper-Test/1.0"),
            ("x-forwarded-for", "198.51.100.7"),
        ],
    );
    login.get(&crate::support::web::authorize_url(
        &base,
        &[
            ("state", "s"),
            ("acr_values", "helpers"),
            ("login_hint", "alice@example.com"),
            ("ui_locales", "fr-CA en"),
        ],
    ));
    let claims = login.finish(login.password("alice", ALICE_PASSWORD));
    assert_eq!(claims["department"], "finance", "{claims}");
    assert_eq!(claims["level"], 3);
    assert_eq!(
        claims["sub"], "alice",
        "a script cannot replace the host's claims"
    );
    let log = env.wait_for_log("Helpers. refused");
    for expected in [
        "ip=198.51.100.7 ua=Helper-Test/1.0 client=rp acr=[\"helpers\"] hint=alice@example.com langs=[\"fr-ca\", \"fr\", \"en\"]",
        "sha=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad hmac=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
        "b64=aGk= back=hi token=16",
        "match=true find=123 caps=[\"me@example\", \"me\", \"example\"]",
        "refused=[\"sub\", \"amr\"] recent=true",
    ] {
        assert!(log.contains(expected), "{expected}\n{log}");
    }
}
