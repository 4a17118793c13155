//! The HTTP side of tests: Gatehouse served on 127.0.0.1 in its own runtime, and a
//! cookie-keeping client that acts like a browser without JavaScript (it never follows redirects
//! by itself, so every hop can be checked).

use std::thread::JoinHandle;
use std::time::Duration;

use gatehouse::web::WebState;
use reqwest::blocking::{Client, Response};
use reqwest::header::LOCATION;

pub struct WebServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    pub fn start(listener: std::net::TcpListener, state: WebState) -> WebServer {
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                gatehouse::web::serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        WebServer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Browser {
    pub client: Client,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        let client = Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser { client }
    }

    pub fn get(&self, url: &str) -> Response {
        self.client.get(url).send().unwrap()
    }

    pub fn post(&self, url: &str, form: &[(&str, &str)]) -> Response {
        self.client.post(url).form(form).send().unwrap()
    }
}

pub fn location(response: &Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The hidden CSRF token of a page's form.
pub fn csrf_of(html: &str) -> String {
    let start =
        html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The session cookie value the server set on this response, if any.
pub fn session_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("gatehouse"))
        .map(str::to_owned)
}

/// The PKCE pair every web login of the tests uses (RFC 7636, appendix B).
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk";
pub const CHALLENGE: &str = "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g";

/// One sign-in driven through the HTTP endpoints the way a browser without JavaScript does it:
/// `/authorize`, the step pages of `/login` (each form posted with the CSRF token and step
/// number of the page just shown), then the authorization code at `/token`.
pub struct WebLogin {
    pub base: String,
    pub browser: Browser,
}

impl WebLogin {
    /// A browser at `base` with no sign-in yet: for tests that send their own `/authorize`.
    pub fn new(base: &str) -> WebLogin {
        WebLogin::new_with_headers(base, &[])
    }

    /// Like [`WebLogin::new`], sending `headers` on every request (User-Agent, X-Forwarded-For...).
    pub fn new_with_headers(base: &str, headers: &[(&str, &str)]) -> WebLogin {
        let mut defaults = reqwest::header::HeaderMap::new();
        for (name, value) in headers {
            defaults.insert(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let client = Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .default_headers(defaults)
            .build()
            .unwrap();
        WebLogin {
            base: base.to_owned(),
            browser: Browser { client },
        }
    }

    pub fn get(&self, url: &str) -> Response {
        self.browser.get(url)
    }

    /// Posts `fields` to `/login` as they are, with no CSRF token or step added: for tests of
    /// what the server refuses.
    pub fn post_raw(&self, fields: &[(&str, &str)]) -> Response {
        self.browser.post(&format!("{}/login", self.base), fields)
    }

    /// The demo user's whole sign-in from `authorize_url`: the password page, then the code
    /// `code_for` finds once it was sent. The redirect to the application.
    pub fn sign_in(&self, authorize_url: &str, code_for: impl FnOnce() -> String) -> String {
        let start = self.get(authorize_url);
        assert_eq!(
            location(&start),
            "/login",
            "authorize: {} {}",
            start.status(),
            start.text().unwrap_or_default()
        );
        let page = self.page();
        assert!(page.contains("name=\"password\""), "{page}");
        assert_eq!(
            location(&self.password("alice", super::ALICE_PASSWORD)),
            "/login"
        );
        let page = self.page();
        assert!(page.contains("autocomplete=\"one-time-code\""), "{page}");
        let done = self.passcode(&code_for());
        assert_eq!(done.status(), 303);
        location(&done)
    }

    /// Starts a sign-in for `acr` (none: the server's default) from 127.0.0.1.
    pub fn start(base: &str, acr: Option<&str>) -> WebLogin {
        WebLogin::start_with(base, acr, &[])
    }

    /// Like [`WebLogin::start`], sending `headers` on every request (X-Forwarded-For,
    /// Accept-Language...).
    pub fn start_with(base: &str, acr: Option<&str>, headers: &[(&str, &str)]) -> WebLogin {
        WebLogin::start_as(super::RP_ID, base, acr, headers)
    }

    /// Like [`WebLogin::start_with`], for the registered client `client_id`.
    pub fn start_as(
        client_id: &str,
        base: &str,
        acr: Option<&str>,
        headers: &[(&str, &str)],
    ) -> WebLogin {
        let login = WebLogin::new_with_headers(base, headers);
        let url = authorize_url(
            base,
            &[
                ("client_id", client_id),
                ("scope", "openid profile phone"),
                ("state", "web-login"),
                ("acr_values", acr.unwrap_or("")),
            ],
        );
        let response = login.browser.get(&url);
        assert_eq!(
            location(&response),
            "/login",
            "authorize: {}",
            response.status()
        );
        login
    }

    /// The page of the current step.
    pub fn page(&self) -> String {
        let response = self.browser.get(&format!("{}/login", self.base));
        response.text().unwrap()
    }

    /// Posts `fields` with the CSRF token and step of the page now shown, to `path`.
    pub fn post_from_page(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let page = self.page();
        let csrf = csrf_of(&page);
        let step = hidden_of(&page, "step").unwrap_or_default();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        if path == "/login" {
            form.push(("step", &step));
        }
        form.extend_from_slice(fields);
        self.browser.post(&format!("{}{path}", self.base), &form)
    }

    /// Answers the current step with `fields`.
    pub fn submit(&self, fields: &[(&str, &str)]) -> Response {
        self.post_from_page("/login", fields)
    }

    pub fn password(&self, username: &str, password: &str) -> Response {
        self.submit(&[("username", username), ("password", password)])
    }

    pub fn passcode(&self, code: &str) -> Response {
        self.submit(&[("passcode", code)])
    }

    /// The "Send a new code" button.
    pub fn resend(&self) -> Response {
        self.post_from_page("/login/resend", &[])
    }

    /// The ID token's claims after a step answer that completed the sign-in: the redirect to
    /// the application is followed by the code exchange at `/token`.
    pub fn finish(&self, answer: Response) -> serde_json::Value {
        let to_app = location(&answer);
        assert!(
            to_app.starts_with(super::RP_REDIRECT),
            "expected the redirect to the application, got {} {to_app:?}: {}",
            answer.status(),
            answer.text().unwrap_or_default()
        );
        let code = query_param(&to_app, "code").expect("an authorization code");
        let tokens: serde_json::Value = self
            .browser
            .client
            .post(format!("{}/token", self.base))
            .basic_auth(super::RP_ID, Some(super::RP_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", super::RP_REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id_token = tokens["id_token"].as_str().expect("an ID token");
        let payload = id_token.split('.').nth(1).unwrap();
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let mut claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let userinfo: serde_json::Value = self
            .browser
            .client
            .get(format!("{}/userinfo", self.base))
            .bearer_auth(tokens["access_token"].as_str().unwrap())
            .send()
            .unwrap()
            .json()
            .unwrap();
        claims["userinfo"] = userinfo;
        claims
    }
}

/// A token request to `{base}/token` with `form`, the client authenticated by `basic` if given.
pub fn token_request(
    base: &str,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let client = Client::new();
    let mut request = client.post(format!("{base}/token")).form(form);
    if let Some((user, password)) = basic {
        request = request.basic_auth(user, Some(password));
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.json().unwrap())
}

/// Trades an authorization code of the test client at `{base}/token`.
pub fn exchange(base: &str, code: &str, verifier: Option<&str>) -> (u16, serde_json::Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", super::RP_REDIRECT),
    ];
    if let Some(verifier) = verifier {
        form.push(("code_verifier", verifier));
    }
    token_request(base, &form, Some((super::RP_ID, super::RP_SECRET)))
}

/// Whether a step answer went back to the same step (a 303 to /login with the page's message,
/// or a 429) rather than on: the caller reads the page to tell which.
pub fn stayed(response: &Response) -> bool {
    response.status() == 429 || location(response) == "/login"
}

/// The value of a hidden form field.
pub fn hidden_of(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    html[start..].split('"').next().map(str::to_owned)
}

/// The message banner of a page (`role="alert"`), HTML entities left as they are.
pub fn message_of(html: &str) -> Option<String> {
    let marker = "id=\"message\">";
    let start = html.find(marker)? + marker.len();
    html[start..].split("</p>").next().map(str::to_owned)
}

/// `/authorize` at `base` for the test application with PKCE (S256) and scope `openid`.
/// `extra` adds parameters or replaces these (the last value of a name wins; an empty value
/// leaves the name out).
pub fn authorize_url(base: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("client_id", super::RP_ID),
        ("redirect_uri", super::RP_REDIRECT),
        ("response_type", "code"),
        ("scope", "openid"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for &(name, value) in extra {
        match pairs.iter_mut().find(|(n, _)| *n == name) {
            Some(pair) => pair.1 = value,
            None => pairs.push((name, value)),
        }
    }
    let mut url = url::Url::parse(&format!("{base}/authorize")).unwrap();
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().filter(|(_, value)| !value.is_empty()));
    url.to_string()
}
