//! Shared test helpers: a temp deployment (config, users, scripts, logs), an SMS sink that
//! captures messages, provider mocks, and polling with a deadline (no sleeps as synchronisation).

pub mod ldap;
pub mod mock_http;
pub mod process;
pub mod web;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gatehouse::base::password::hash_password;
use gatehouse::base::secret::Secret;
use gatehouse::base::ManualClock;
use gatehouse::flow::params::RequestParams;
use gatehouse::flow::{FlowError, LoginHandle, StepOutcome, StepPage};
use gatehouse::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender, StateStore};
use gatehouse::{Builder, Gatehouse};

pub const ALICE_PASSWORD: &str = "wonderland";
pub const ALICE_PHONE: &str = "+447700900123";
pub const BOB_MOBILE: &str = "+12025550143";

/// The shipped script, so tests exercise what operators run.
pub fn shipped_script() -> String {
    shipped("sms_otp")
}

/// A test script from `tests/it/scripts/NAME.rhai`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/it/scripts/{name}.rhai"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A shipped script by acr.
pub fn shipped(acr: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scripts/{acr}.rhai")),
    )
    .unwrap()
}

/// Asserts that none of `forbidden` appears anywhere in the log directory.
/// Each line's leading timestamp is skipped: its microseconds could equal a 6-digit code.
pub fn assert_log_clean(env: &TestEnv, forbidden: &[&str]) {
    let log = env.log_text();
    let text: String = log
        .lines()
        .map(|line| line.split_once(' ').map_or(line, |(_, rest)| rest))
        .collect::<Vec<_>>()
        .join("\n");
    for needle in forbidden.iter().filter(|n| !n.is_empty()) {
        assert!(
            !text.contains(needle),
            "{needle:?} leaked into the log:\n{log}"
        );
    }
}

fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash_password(&Secret::new(ALICE_PASSWORD)).unwrap())
}

/// Captures every message instead of sending it.
#[derive(Default)]
pub struct CapturedSms {
    pub messages: Mutex<Vec<(String, String)>>,
    pub fail: std::sync::atomic::AtomicBool,
}

impl SmsSender for CapturedSms {
    fn provider(&self) -> &str {
        "test"
    }

    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SmsError::Failed {
                provider: "test".into(),
                message: format!("gateway down for {}", message.to),
            });
        }
        let mut messages = self.messages.lock().unwrap();
        messages.push((message.to.clone(), message.text.expose().to_owned()));
        Ok(SmsReceipt {
            provider_message_id: Some(format!("test-{}", messages.len())),
            sent_by: None,
        })
    }
}

impl CapturedSms {
    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub fn last(&self) -> (String, String) {
        self.messages
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("an SMS was sent")
    }

    /// The last message's code: after the WebOTP "#" when there is one, else its last number.
    pub fn last_code(&self) -> String {
        let (_, text) = self.last();
        if let Some((_, code)) = text.rsplit_once('#') {
            return code.trim().to_owned();
        }
        text.split(|c: char| !c.is_ascii_digit())
            .rfind(|w| w.len() >= 4)
            .expect("a code in the SMS")
            .to_owned()
    }
}

/// One script of a test deployment: acr, file content, extra TOML lines for its entry.
pub struct ScriptSpec {
    pub acr: String,
    pub source: String,
    pub entry_extra: String,
}

pub fn script(acr: &str, source: impl AsRef<str>) -> ScriptSpec {
    ScriptSpec {
        acr: acr.into(),
        source: source.as_ref().into(),
        entry_extra: String::new(),
    }
}

impl ScriptSpec {
    pub fn with(mut self, extra: &str) -> Self {
        self.entry_extra.push_str(extra);
        self.entry_extra.push('\n');
        self
    }
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub app: Gatehouse,
    pub sms: Arc<CapturedSms>,
    /// `http://127.0.0.1:PORT` when serving HTTP.
    pub base: Option<String>,
    /// Held for its `Drop`, which stops the server.
    #[allow(dead_code)]
    pub server: Option<web::WebServer>,
    /// The instance's clock: tests move it instead of sleeping.
    pub clock: Arc<ManualClock>,
}

#[derive(Default)]
pub struct EnvOptions {
    /// The state store (default: the instance's own memory store on its clock).
    pub store: Option<Arc<dyn StateStore>>,
    /// Templates written to a `[paths] pages_dir`: (file name, content).
    pub pages: Vec<(String, String)>,
    /// More keys for the [login] section.
    pub login: String,
    pub sandbox: String,
    pub watch: bool,
    /// More config sections (e.g. [sms.providers.NAME]).
    pub extra_config: String,
    /// Serve HTTP on 127.0.0.1 (the issuer is that address).
    pub web: bool,
    /// Overrides the issuer written to the config (e.g. an https one, to check cookie flags).
    pub issuer: Option<String>,
    /// More keys for the [oidc] section.
    pub oidc_extra: String,
    /// Keys for the [otp] section.
    pub otp: String,
    /// Keys for the [server] section.
    pub server: String,
    /// Keys for the [sms] section; empty: +44 and +1 allowed, limits out of the way.
    pub sms: String,
    /// More keys for the [log] section.
    pub log: String,
}

impl EnvOptions {
    /// Keys for the [sms] section.
    pub fn with_sms(mut self, keys: &str) -> Self {
        self.sms = keys.into();
        self
    }

    /// `[log] format` ("text" or "json").
    pub fn with_log_format(mut self, format: &str) -> Self {
        self.log = format!("format = {format:?}");
        self
    }

    /// Keys for the [server] section.
    pub fn with_server(mut self, keys: &str) -> Self {
        self.server = keys.into();
        self
    }
}

/// The one builder of deployments served over HTTP: `scripts` with `options`, on 127.0.0.1.
pub fn web_env(scripts: Vec<ScriptSpec>, options: EnvOptions) -> TestEnv {
    TestEnv::with_options(
        scripts,
        EnvOptions {
            web: true,
            ..options
        },
    )
}

/// Provider mocks listen on 127.0.0.1 over plain http: the test config allows exactly that.
pub const TEST_HTTP: &str = "[http]\ninsecure_http_hosts = [\"127.0.0.1\"]\nallow_addresses = [\"127.0.0.1\"]\ntimeout_ms = 1500\nconnect_timeout_ms = 1000\n";

/// Test deployments send to the demo's countries, with limits that only the limit tests reach.
pub const RELAXED_SMS: &str = "allow_test_numbers = true\nallowed_prefixes = [\"+44\", \"+1\"]\nper_number_per_hour = 1000\nper_number_per_day = 10000\nper_address_per_hour = 100000\nmax_sends_per_login = 10\nresend_cooldown_seconds = 0";

/// The relying party registered in every test deployment.
pub const RP_ID: &str = "rp";
pub const RP_SECRET: &str = "rp-secret-0f3c";
pub const RP_REDIRECT: &str = "http://127.0.0.1:9/callback";
pub const RP_LOGOUT: &str = "http://127.0.0.1:9/signed-out";

/// One RSA key for the whole test run (generating one per test would cost seconds).
fn signing_key_pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        gatehouse::oidc::SigningKey::load_or_create(&path).unwrap();
        std::fs::read_to_string(path).unwrap()
    })
}

fn oidc_text(root: &Path, issuer: &str, extra: &str) -> String {
    format!(
        "[oidc]\nissuer = {issuer:?}\nsigning_key_file = {:?}\n{extra}\n\n[[clients]]\nclient_id = {RP_ID:?}\nclient_secret = {RP_SECRET:?}\nredirect_uris = [{RP_REDIRECT:?}]\npost_logout_redirect_uris = [{RP_LOGOUT:?}]\n\n[[clients]]\nclient_id = \"legacy\"\nclient_secret = \"legacy-secret\"\nredirect_uris = [{RP_REDIRECT:?}]\nrequire_pkce = false\n",
        root.join("config/signing-key.pem")
    )
}

pub fn config_text(root: &Path, scripts: &[ScriptSpec], sandbox: &str, extra: &str) -> String {
    let mut text = format!(
        "[paths]\nscripts_dir = {:?}\nlog_dir = {:?}\nusers_file = {:?}\n\n[login]\ndefault_acr = {:?}\n\n[log]\nlevel = \"debug\"\nconsole = false\n\n[sandbox]\n{sandbox}\n\n{TEST_HTTP}\n{extra}\n",
        root.join("scripts"),
        root.join("logs"),
        root.join("config/users.toml"),
        scripts[0].acr
    );
    for spec in scripts {
        text.push_str(&format!(
            "\n[[scripts]]\nacr = {:?}\nfile = \"{}.rhai\"\n{}",
            spec.acr, spec.acr, spec.entry_extra
        ));
    }
    text
}

impl TestEnv {
    pub fn new(scripts: Vec<ScriptSpec>) -> TestEnv {
        TestEnv::with_options(scripts, EnvOptions::default())
    }

    pub fn with_options(scripts: Vec<ScriptSpec>, options: EnvOptions) -> TestEnv {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["config", "scripts", "logs"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("config/signing-key.pem"), signing_key_pem()).unwrap();
        let listener = options
            .web
            .then(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let base = listener
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().unwrap()));
        let issuer = options
            .issuer
            .clone()
            .or(base.clone())
            .unwrap_or_else(|| "http://localhost:8080".into());
        let users = format!(
            "[users.alice]\npassword = {:?}\n[users.alice.attributes]\nphoneNumberVerified = {ALICE_PHONE:?}\n\n\
             [users.bob]\npassword = {:?}\n[users.bob.attributes]\nmobile = {BOB_MOBILE:?}\n\n\
             [users.carol]\npassword = {:?}\n",
            password_hash(),
            password_hash(),
            password_hash()
        );
        std::fs::write(root.join("config/users.toml"), users).unwrap();
        for spec in &scripts {
            std::fs::write(
                root.join(format!("scripts/{}.rhai", spec.acr)),
                &spec.source,
            )
            .unwrap();
        }
        let mut pages_line = String::new();
        if !options.pages.is_empty() {
            let pages = root.join("pages");
            std::fs::create_dir_all(&pages).unwrap();
            for (name, content) in &options.pages {
                std::fs::write(pages.join(name), content).unwrap();
            }
            pages_line = format!("pages_dir = {pages:?}\n");
        }
        std::fs::write(
            root.join("config/gatehouse.toml"),
            config_text(
                root,
                &scripts,
                &options.sandbox,
                &format!(
                    "[sms]\n{}\n\n[server]\n{}\n\n[otp]\n{}\n\n{}\n{}",
                    if options.sms.is_empty() {
                        RELAXED_SMS
                    } else {
                        options.sms.as_str()
                    },
                    options.server,
                    options.otp,
                    oidc_text(root, &issuer, &options.oidc_extra),
                    options.extra_config
                ),
            )
            .replacen("[paths]\n", &format!("[paths]\n{pages_line}"), 1)
            .replacen("[login]\n", &format!("[login]\n{}\n", options.login), 1)
            .replacen("[log]\n", &format!("[log]\n{}\n", options.log), 1),
        )
        .unwrap();
        let sms = Arc::new(CapturedSms::default());
        let clock = Arc::new(ManualClock::new());
        let mut builder = Builder::new(root.join("config/gatehouse.toml"))
            .sms(sms.clone())
            .console_log(false)
            .clock(clock.clone());
        if let Some(store) = options.store.clone() {
            builder = builder.store(store);
        }
        let mut app = builder.build().unwrap();
        app.load_scripts();
        if options.watch {
            app.watch().unwrap();
        }
        let server =
            listener.map(|listener| web::WebServer::start(listener, app.web_state().unwrap()));
        TestEnv {
            dir,
            app,
            sms,
            base,
            server,
            clock,
        }
    }

    /// `gatehouse check` on this deployment: whether it passed, and what it printed.
    pub fn check(&self) -> (bool, String) {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["check", "--config"])
            .arg(self.root().join("config/gatehouse.toml"))
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// Moves this instance's clock forward: codes, locks, cooldowns and tokens age at once.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn script_path(&self, acr: &str) -> PathBuf {
        self.root().join(format!("scripts/{acr}.rhai"))
    }

    pub fn start(&self, acr: Option<&str>) -> Result<StepPage, FlowError> {
        self.app.engine.start(acr)
    }

    pub fn submit(
        &self,
        login: &LoginHandle,
        step: u32,
        pairs: &[(&str, &str)],
    ) -> Result<StepOutcome, FlowError> {
        self.app.engine.submit(
            login,
            step,
            &RequestParams::from_pairs(pairs.iter().copied()),
        )
    }

    /// A sign-in through the HTTP endpoints (the env must serve HTTP).
    pub fn web_login(&self, acr: Option<&str>) -> web::WebLogin {
        web::WebLogin::start(self.base.as_deref().expect("a web env"), acr)
    }

    /// A sign-in through HTTP from client address `ip`, as a trusted proxy in front of the
    /// server reports it (the env's `[server] trusted_proxies` must list 127.0.0.1).
    pub fn web_login_from(&self, acr: Option<&str>, ip: &str) -> web::WebLogin {
        web::WebLogin::start_with(
            self.base.as_deref().expect("a web env"),
            acr,
            &[("x-forwarded-for", ip)],
        )
    }

    /// Step 1 with alice's password; returns the handle, now at step 2.
    pub fn pass_password(&self, acr: Option<&str>) -> LoginHandle {
        let page = self.start(acr).unwrap();
        match self
            .submit(
                &page.login,
                1,
                &[("username", "alice"), ("password", ALICE_PASSWORD)],
            )
            .unwrap()
        {
            StepOutcome::Next(next) => {
                assert_eq!(next.step, 2);
                next.login
            }
            other => panic!("step 1 should pass: {other:?}"),
        }
    }

    pub fn revision(&self, acr: &str) -> Option<u64> {
        self.app
            .host
            .statuses()
            .into_iter()
            .find(|s| s.acr == acr)
            .and_then(|s| s.revision)
    }

    pub fn last_error(&self, acr: &str) -> Option<String> {
        self.app
            .host
            .statuses()
            .into_iter()
            .find(|s| s.acr == acr)
            .and_then(|s| s.last_error)
    }

    /// Everything written to the log directory so far.
    pub fn log_text(&self) -> String {
        read_logs(&self.root().join("logs"))
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_log_in(&self.root().join("logs"), needle)
    }
}

/// Waits (10 s at most) until the logs in `dir` contain `needle`; their text.
pub fn wait_for_log_in(dir: &Path, needle: &str) -> String {
    let mut text = String::new();
    let found = wait_until(Duration::from_secs(10), || {
        text = read_logs(dir);
        text.contains(needle)
    });
    assert!(found, "log never showed {needle:?}; log:\n{text}");
    text
}

pub fn read_logs(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("script.log.")
                && e.file_type().map(|t| t.is_file()).unwrap_or(false)
        })
        .map(|e| e.path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

/// Polls `condition` until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn expect_authenticated(outcome: StepOutcome) -> gatehouse::flow::AuthenticatedLogin {
    match outcome {
        StepOutcome::Authenticated(done) => done,
        other => panic!("expected an authenticated login, got {other:?}"),
    }
}

pub fn expect_retry(outcome: StepOutcome) -> StepPage {
    match outcome {
        StepOutcome::Retry(page) => page,
        other => panic!("expected the same page again, got {other:?}"),
    }
}

pub fn expect_next(outcome: StepOutcome) -> StepPage {
    match outcome {
        StepOutcome::Next(page) => page,
        other => panic!("expected the next page, got {other:?}"),
    }
}

/// A loopback port free now (for servers a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (at most 10 s) until a server a test started accepts connections on `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `gatehouse users reset-sms USER` as an operator would: with this deployment's config
/// plus `more` (e.g. the `[store]` its servers share). Whether it succeeded, and its output.
pub fn operator_reset_sms(env: &TestEnv, user: &str, more: &str) -> (bool, String) {
    let config = env.root().join("config/gatehouse.toml");
    let operator = env.root().join("config/operator.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&operator, format!("{text}\n{more}\n")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["users", "reset-sms", user, "--config"])
        .arg(&operator)
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// A hook context of alice's sign-in `login_key` on this deployment's `sms_otp`, with a code
/// issued: (the context, the code, a wrong code of the same form).
pub fn code_issued_to_alice(
    env: &TestEnv,
    login_key: &str,
) -> (
    std::sync::Arc<gatehouse::flow::host::HookContext>,
    String,
    &'static str,
) {
    use gatehouse::flow::script_port::ScriptRuntime;
    let state = gatehouse::flow::host::HookState {
        user: Some("alice".into()),
        ..Default::default()
    };
    let context = gatehouse::flow::host::HookContext::for_login(
        "sms_otp",
        "test",
        login_key,
        env.app.services.clone(),
        state,
        None,
    );
    let policy = env.app.host.code_policy("sms_otp").unwrap();
    let code = context.issue_code(&policy, None, None).unwrap();
    let wrong = if code.starts_with('1') {
        "222222"
    } else {
        "111111"
    };
    (context, code, wrong)
}
