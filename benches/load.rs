//! Load harness: starts Gatehouse on 127.0.0.1 and measures, in one run, with an HTTP load
//! generator (hyper, kept-alive connections): requests/s of `/health`, requests/s of the
//! passcode POSTs of sign-ins in flight, complete
//! logins/s (with the argon2id cost measured on its own), the memory a separate server process
//! grows by for sign-ins left at their passcode step, and the passcode POSTs again on a local
//! redis-server. Loopback only, bounded in time.
//!
//! Run: `cargo bench --bench load`. GATEHOUSE_LOAD_SECONDS sets the timed phases' length
//! (default 3), GATEHOUSE_PASSCODE_LOGINS the sign-ins posted (default 10,000);
//! GATEHOUSE_LOAD_ONLY=ratio runs /health and the passcode POSTs alone (their ratio);
//! GATEHOUSE_LOAD_ONLY=passcode or =memory runs that phase alone (passcode: pauses 2 s before
//! posting, for `perf record -p PID`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse::base::password::{hash_password, PasswordChecker};
use gatehouse::base::secret::Secret;
use gatehouse::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};
use gatehouse::Builder;

const USERS: usize = 64;
const CLIENTS: usize = 8;
/// Kept-alive connections of the load generator.
const CONNECTIONS: usize = 32;
/// Sign-ins brought to the passcode step and left there, for their memory.
const WAITING_SIGN_INS: usize = 20_000;
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk";
const CHALLENGE: &str = "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g";

/// Keeps the last code sent to each number.
#[derive(Default)]
struct Sink(Mutex<HashMap<String, String>>);

impl SmsSender for Sink {
    fn provider(&self) -> &str {
        "load"
    }
    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        let code = message
            .text
            .expose()
            .rsplit(['#', ' ']) // the WebOTP last line ends with "#CODE"
            .next()
            .unwrap_or_default()
            .to_owned();
        self.0.lock().unwrap().insert(message.to.clone(), code);
        Ok(SmsReceipt {
            provider_message_id: None,
            sent_by: None,
        })
    }
}

fn phone(user: usize) -> String {
    format!("+4477009{user:05}")
}

struct Browser(reqwest::blocking::Client);

impl Browser {
    fn new() -> Self {
        Browser(
            reqwest::blocking::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        )
    }

    fn csrf(&self, base: &str) -> String {
        csrf_of(
            &self
                .0
                .get(format!("{base}/login"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        )
    }

    /// Authorize and pass the password step; afterwards the login waits for its passcode.
    /// Starts a login of `{prefix}{user}` and passes its password step; the passcode page's CSRF.
    fn start_login(&self, base: &str, prefix: &str, user: usize) -> String {
        let authorize = format!(
            "{base}/authorize?client_id=load&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256"
        );
        assert_eq!(self.0.get(authorize).send().unwrap().status(), 303);
        let csrf = self.csrf(base);
        let username = format!("{prefix}{user}");
        let form = [
            ("csrf", csrf.as_str()),
            ("step", "1"),
            ("username", username.as_str()),
            ("password", "load-test"),
        ];
        assert_eq!(
            self.0
                .post(format!("{base}/login"))
                .form(&form)
                .send()
                .unwrap()
                .status(),
            303
        );
        self.csrf(base)
    }

    /// Posts the passcode; returns the authorization code from the redirect.
    fn finish_login(&self, base: &str, csrf: &str, passcode: &str) -> String {
        let form = [("csrf", csrf), ("step", "2"), ("passcode", passcode)];
        let response = self
            .0
            .post(format!("{base}/login"))
            .form(&form)
            .send()
            .unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        location
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    }

    fn exchange(&self, base: &str, code: &str) {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", VERIFIER),
        ];
        let response = self
            .0
            .post(format!("{base}/token"))
            .basic_auth("load", Some("load-secret"))
            .form(&form)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

/// Runs `work` on `threads` threads for `seconds`; returns completed operations per second.
fn rate(threads: usize, seconds: f64, work: impl Fn(usize) + Sync) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (stop, done, work) = (&stop, &done, &work);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    work(i);
                    done.fetch_add(1, Ordering::Relaxed);
                    i += threads;
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let seconds: f64 = std::env::var("GATEHOUSE_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for sub in ["config", "scripts", "logs"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    let hash = hash_password(&Secret::new("load-test")).unwrap();
    // `user{i}`: the server's own password hash (complete logins, bound by argon2id).
    // `quick{i}`: a minimal argon2id hash, so that preparing thousands of sign-ins at the
    // passcode step does not take minutes; the passcode phases never check a password.
    let quick_hash = {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(
                b"load-test",
                &SaltString::encode_b64(b"load-harness-salt").unwrap(),
            )
            .unwrap()
            .to_string()
    };
    let users: String = (0..USERS)
        .map(|i| {
            format!(
                "[users.user{i}]\npassword = {hash:?}\n[users.user{i}.attributes]\nphoneNumberVerified = {phone:?}\n\
                 [users.quick{i}]\npassword = {quick_hash:?}\n[users.quick{i}.attributes]\nphoneNumberVerified = {phone:?}\n",
                phone = phone(i)
            )
        })
        .collect();
    std::fs::write(root.join("config/users.toml"), users).unwrap();
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sms_otp.rhai"),
    )
    .unwrap();
    std::fs::write(root.join("scripts/sms_otp.rhai"), script).unwrap();
    let sink = Arc::new(Sink::default());
    let memory = Arc::new(gatehouse::store::MemoryStore::new());
    let base = start_server(root, &sink, Some(memory.clone()));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!(
        "load harness: {base}, {CLIENTS} client threads, {seconds} s per phase, {cores} cores"
    );
    let generator = Generator::new(CONNECTIONS);
    let in_flight: usize = std::env::var("GATEHOUSE_PASSCODE_LOGINS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    // GATEHOUSE_LOAD_ONLY=passcode: the passcode phase alone (for a profiler).
    if std::env::var("GATEHOUSE_LOAD_ONLY").as_deref() == Ok("passcode") {
        let waiting = prepare_waiting(&base, &sink, in_flight, 4, true, usize::MAX);
        // Time to attach a profiler to the posts alone: `perf record -p PID`.
        eprintln!("prepared; pid {}; posting in 2 s", std::process::id());
        std::thread::sleep(Duration::from_secs(2));
        let passcode = generator.passcode_rate(&base, waiting);
        println!(
            "POST /login passcode (in flight)    {passcode:>10.0} req/s   ({in_flight} logins)"
        );
        return;
    }
    // GATEHOUSE_LOAD_ONLY=ratio: /health, then the passcode POSTs, and their ratio.
    if std::env::var("GATEHOUSE_LOAD_ONLY").as_deref() == Ok("ratio") {
        let health = generator.get_rate(&format!("{base}/health"), seconds, 200);
        let mut waiting = prepare_waiting(&base, &sink, in_flight, 4, true, usize::MAX);
        let (floor, hop) = http_floor(&generator, &base, &mut waiting);
        let passcode = generator.passcode_rate(&base, waiting);
        println!(
            "GET /health {health:.0} req/s; passcode POST {passcode:.0} req/s; ratio {:.3}; \
             the same POSTs answered by a do-nothing handler {floor:.0} req/s ({:.3}x), with the \
             hop to the request threads {hop:.0} req/s ({:.3}x)",
            passcode / health,
            floor / health,
            hop / health
        );
        return;
    }
    // First, on the fresh server: later phases leave freed memory that would hide the growth.
    let waiting_bytes = waiting_sign_in_bytes(root, WAITING_SIGN_INS);
    prepare_waiting(&base, &sink, WAITING_SIGN_INS, 4, false, 250);
    let (entries, record_bytes) = memory.footprint();
    if std::env::var("GATEHOUSE_LOAD_ONLY").as_deref() == Ok("memory") {
        println!("{WAITING_SIGN_INS} sign-ins waiting at the passcode step: {waiting_bytes} bytes resident each ({} store entries, {} bytes of keys and values each)", entries / WAITING_SIGN_INS, record_bytes / WAITING_SIGN_INS);
        return;
    }
    let long_state_mib = long_state_sign_ins_mib(&base);
    let unfinished_mib = unfinished_sign_ins_mib(&base);

    // Baseline: the cheapest endpoint, then the passcode POSTs of sign-ins in flight, each
    // answered with the redirect to the application; the same generator for both.
    let health = generator.get_rate(&format!("{base}/health"), seconds, 200);
    println!(
        "GET /health                         {health:>10.0} req/s   ({CONNECTIONS} connections)"
    );
    let mut waiting = prepare_waiting(&base, &sink, in_flight, 4, true, usize::MAX);
    let (floor, hop) = http_floor(&generator, &base, &mut waiting);
    let passcode = generator.passcode_rate(&base, waiting);
    println!("POST /login passcode (in flight)    {passcode:>10.0} req/s   ({in_flight} logins)");
    println!("the same POSTs, do-nothing handler  {floor:>10.0} req/s   ({:.3}x /health: the most the passcode POST can reach here)", floor / health);
    println!(
        "  ... with the request-thread hop   {hop:>10.0} req/s   ({:.3}x /health)",
        hop / health
    );

    // Complete logins: authorize, password, passcode, token.
    let logins = rate(CLIENTS.min(USERS), seconds, |i| {
        let user = i % USERS;
        let browser = Browser::new();
        let csrf = browser.start_login(&base, "user", user);
        let code = sink.0.lock().unwrap()[&phone(user)].clone();
        let authorization = browser.finish_login(&base, &csrf, &code);
        browser.exchange(&base, &authorization);
    });
    println!("complete logins (authorize..token)  {logins:>10.1} logins/s");

    // The password hash on its own: what bounds complete logins.
    let checker = PasswordChecker::with_parallelism(1);
    let samples = 10;
    let started = Instant::now();
    for _ in 0..samples {
        assert!(checker.verify(Some(&hash), &Secret::new("load-test")));
    }
    let hash_ms = started.elapsed().as_secs_f64() * 1000.0 / samples as f64;
    let bound = cores as f64 * 1000.0 / hash_ms;
    println!("argon2id verify (one thread)        {hash_ms:>10.1} ms   -> at most {bound:.0} logins/s on {cores} cores");
    println!();
    println!("ratios: passcode POST / health = {:.3}; logins / health = {:.4}; logins / argon2 bound = {:.2}", passcode / health, logins / health, logins / bound);
    println!("2,000 sign-ins with a 30 KB state and nonce (measured second): +{long_state_mib} MiB resident");
    println!("30,000 unfinished sign-ins (30,000 addresses, measured next): +{unfinished_mib} MiB resident");
    println!("{WAITING_SIGN_INS} sign-ins waiting at the passcode step (measured first): {waiting_bytes} bytes resident each ({} store entries, {} bytes of keys and values each)", entries / WAITING_SIGN_INS, record_bytes / WAITING_SIGN_INS);

    // The same passcode phase on a second server whose state store is a local redis-server.
    match RedisServer::start(root) {
        Some(redis) => {
            let store =
                gatehouse::store::RedisStore::new(&redis.url(), "load:", Duration::from_secs(2))
                    .unwrap();
            let on_redis = start_server(root, &sink, Some(Arc::new(store)));
            let waiting = prepare_waiting(&on_redis, &sink, in_flight, 4, true, usize::MAX);
            let redis_rate = generator.passcode_rate(&on_redis, waiting);
            println!("POST /login passcode on Redis       {redis_rate:>10.0} req/s   ({in_flight} logins; {:.2}x the memory store)", redis_rate / passcode);
        }
        None => println!("POST /login passcode on Redis       skipped: no redis-server on PATH"),
    }
}

/// A redis-server with throw-away data on a free loopback port, stopped on drop.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start(root: &std::path::Path) -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(RedisServer { child, port })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The harness's server config (`extra` is put at the end of `[server]`).
fn server_config(root: &std::path::Path, base: &str, extra: &str) -> String {
    // The shipped level (every sign-in's steps in logs/script.log); GATEHOUSE_LOAD_LOG_LEVEL
    // sets another, to see what the lines cost.
    let level = std::env::var("GATEHOUSE_LOAD_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    format!(
        "[paths]\nscripts_dir = {:?}\nlog_dir = {:?}\nusers_file = {:?}\n[sms]\nallow_test_numbers = true\nallowed_prefixes = [\"+44\"]\nper_number_per_hour = 1000000\nper_number_per_day = 10000000\nper_address_per_hour = 10000000\nmax_sends_per_login = 10\nresend_cooldown_seconds = 0\ndaily_budget = 100000000\n[login]\ndefault_acr = \"sms_otp\"\nmax_pending_per_address = 10000000\nmax_pending_total = 10000000\n[server]\nmax_connections_per_address = 100000\ntrusted_proxies = [\"127.0.0.1\"]\n{extra}\n[log]\nconsole = false\nlevel = {level:?}\n[oidc]\nissuer = {base:?}\nsigning_key_file = {:?}\n[[clients]]\nclient_id = \"load\"\nclient_secret = \"load-secret\"\nredirect_uris = [\"http://127.0.0.1:9/cb\"]\n[[scripts]]\nacr = \"sms_otp\"\nfile = \"sms_otp.rhai\"\n",
        root.join("scripts"),
        root.join("logs"),
        root.join("config/users.toml"),
        root.join("config/key.pem")
    )
}

/// The release binary serving the harness's config in a process of its own (the console SMS
/// sink, output dropped), so that its memory is the server's alone; stopped on drop.
struct ServerProcess {
    child: std::process::Child,
    base: String,
}

impl ServerProcess {
    fn start(root: &std::path::Path) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}");
        let config_file = root.join(format!("config/process-{port}.toml"));
        let listen = format!("listen = \"127.0.0.1:{port}\"");
        std::fs::write(&config_file, server_config(root, &base, &listen)).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--config")
            .arg(&config_file)
            .arg("serve")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server process did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ServerProcess { child, base }
    }

    fn resident_bytes(&self) -> u64 {
        let statm =
            std::fs::read_to_string(format!("/proc/{}/statm", self.child.id())).unwrap_or_default();
        statm
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
            * 4096
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server on a free loopback port with the harness's config (its own file, issuer
/// and, when given, state store); its base URL.
fn start_server(
    root: &std::path::Path,
    sink: &Arc<Sink>,
    store: Option<Arc<dyn gatehouse::ports::StateStore>>,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config_file = root.join(format!(
        "config/gatehouse-{}.toml",
        listener.local_addr().unwrap().port()
    ));
    std::fs::write(&config_file, server_config(root, &base, "")).unwrap();
    let mut builder = Builder::new(&config_file).sms(sink.clone());
    if let Some(store) = store {
        builder = builder.store(store);
    }
    let app = builder.console_log(false).build().unwrap();
    app.load_scripts();
    let state = app.web_state().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        // As `gatehouse serve` builds it; GATEHOUSE_WORKERS sets the worker count, to compare.
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = std::env::var("GATEHOUSE_WORKERS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            builder.worker_threads(n);
        }
        let runtime = builder.thread_name("server").enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            gatehouse::web::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
    });
    base
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

fn resident_mib() -> u64 {
    resident_bytes() / (1 << 20)
}

/// Resident memory grown by 2,000 sign-ins asked for with a 30 KB `state` and `nonce` (issue
/// target: under 8 MB; they are refused, so nothing is kept).
fn long_state_sign_ins_mib(base: &str) -> u64 {
    let long = "s".repeat(30_000);
    authorize_growth_mib(base, &format!("state={long}&nonce={long}"), 2_000, 3, 400)
}

/// Resident memory grown by 30,000 sign-ins started and never finished, each from its own
/// address, on a fresh server (issue target: under 32 MiB).
fn unfinished_sign_ins_mib(base: &str) -> u64 {
    authorize_growth_mib(base, "state=s", 30_000, 2, 303)
}

/// Resident memory grown by `count` authorization requests with `extra` parameters, each from
/// its own address in 127.`net`.0.0/16, every one answered `status`.
fn authorize_growth_mib(base: &str, extra: &str, count: u32, net: u32, status: u16) -> u64 {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = format!(
        "{base}/authorize?client_id=load&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid&{extra}&code_challenge={CHALLENGE}&code_challenge_method=S256"
    );
    let before = resident_mib();
    for i in 0..count {
        let from = format!("127.{net}.{}.{}", i / 250, i % 250 + 1);
        let answer = client
            .get(&authorize)
            .header("x-forwarded-for", from)
            .send()
            .unwrap();
        assert_eq!(answer.status(), status);
    }
    resident_mib().saturating_sub(before)
}

/// A sign-in waiting at its passcode step: what a client needs to finish it.
#[derive(Clone)]
struct Waiting {
    cookie: String,
    csrf: String,
    code: String,
}

/// `name=value` of every Set-Cookie of `response`, merged into `cookies` (by name).
fn keep_cookies(cookies: &mut Vec<(String, String)>, response: &reqwest::blocking::Response) {
    for value in response.headers().get_all("set-cookie") {
        let pair = value.to_str().unwrap().split(';').next().unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        cookies.retain(|(n, _)| n != name);
        cookies.push((name.to_owned(), value.to_owned()));
    }
}

fn cookie_header(cookies: &[(String, String)]) -> String {
    cookies
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").unwrap() + 19;
    page[start..].split('"').next().unwrap().to_owned()
}

/// Brings `count` sign-ins of the `quick{i}` users to their passcode step, each in a browser
/// session of its own, on `threads` threads (each its own users, so each code is known).
/// Each thread's sign-ins come (through the trusted proxy) from `addresses` addresses of its
/// own, in turn: 1 is one client; a large number, one address per sign-in.
fn prepare_waiting(
    base: &str,
    sink: &Sink,
    count: usize,
    threads: usize,
    keep: bool,
    addresses: usize,
) -> Vec<Waiting> {
    let authorize = format!(
        "{base}/authorize?client_id=load&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&response_type=code&scope=openid&state=s&code_challenge={CHALLENGE}&code_challenge_method=S256"
    );
    let per_thread = count.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let authorize = authorize.as_str();
                s.spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .unwrap();
                    let users: Vec<usize> = (t..USERS).step_by(threads).collect();
                    let mut waiting = Vec::new();
                    for k in 0..per_thread.min(count.saturating_sub(t * per_thread)) {
                        let user = users[k % users.len()];
                        // Each sign-in from an address of its own, as real traffic comes
                        // (through the trusted proxy 127.0.0.1).
                        let a = k % addresses.max(1);
                        let from = format!("127.{}.{}.{}", 10 + t, a / 250, a % 250 + 1);
                        let mut cookies = Vec::new();
                        let answer = client
                            .get(authorize)
                            .header("x-forwarded-for", &from)
                            .send()
                            .unwrap();
                        assert_eq!(answer.status(), 303);
                        keep_cookies(&mut cookies, &answer);
                        let page = client
                            .get(format!("{base}/login"))
                            .header("cookie", cookie_header(&cookies))
                            .send()
                            .unwrap();
                        keep_cookies(&mut cookies, &page);
                        let csrf = csrf_of(&page.text().unwrap());
                        let username = format!("quick{user}");
                        let answer = client
                            .post(format!("{base}/login"))
                            .header("x-forwarded-for", &from)
                            .header("cookie", cookie_header(&cookies))
                            .form(&[
                                ("csrf", csrf.as_str()),
                                ("step", "1"),
                                ("username", &username),
                                ("password", "load-test"),
                            ])
                            .send()
                            .unwrap();
                        assert_eq!(answer.status(), 303);
                        keep_cookies(&mut cookies, &answer);
                        let cookie = cookie_header(&cookies);
                        if keep {
                            let page = client
                                .get(format!("{base}/login"))
                                .header("cookie", &cookie)
                                .send()
                                .unwrap();
                            let csrf = csrf_of(&page.text().unwrap());
                            let code = sink.0.lock().unwrap()[&phone(user)].clone();
                            waiting.push(Waiting { cookie, csrf, code });
                        }
                    }
                    waiting
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// The HTTP floor of the passcode POSTs: the same requests (those of `waiting`, which stay
/// unposted) sent to replay servers that answer each with the answer Gatehouse gave the first
/// of them (posted, and taken off `waiting`); requests/s without and with the request-thread hop.
fn http_floor(generator: &Generator, base: &str, waiting: &mut Vec<Waiting>) -> (f64, f64) {
    let answer = sample_answer(base, &waiting.pop().unwrap());
    let floor =
        generator.passcode_rate(&start_replay_server(answer.clone(), false), waiting.clone());
    let hop = generator.passcode_rate(&start_replay_server(answer, true), waiting.clone());
    (floor, hop)
}

/// The answer the server gave one passcode POST (status 303), without the headers hyper adds.
fn sample_answer(base: &str, waiting: &Waiting) -> Vec<(String, String)> {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .post(format!("{base}/login"))
        .header("cookie", &waiting.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&step=2&passcode={}",
            waiting.csrf, waiting.code
        ))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 303);
    answer
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect()
}

/// What the passcode POST could reach at most on this machine: a server with Gatehouse's
/// runtime and accept loop that reads the same requests (cookie header, form body) and answers each with the
/// recorded answer of a real passcode POST, doing nothing else. With `hop`, each request also
/// crosses to Gatehouse's request threads and back with no work, as its handlers do.
fn start_replay_server(answer: Vec<(String, String)>, hop: bool) -> String {
    use axum::http::{HeaderName, HeaderValue};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let headers: axum::http::HeaderMap = answer
        .iter()
        .map(|(n, v)| {
            (
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect();
    let reply = move |request: axum::http::HeaderMap, body: axum::body::Bytes| {
        let headers = headers.clone();
        async move {
            let read = move || {
                let cookies = request
                    .get("cookie")
                    .and_then(|c| c.to_str().ok())
                    .map_or(0, |c| c.split(';').count());
                let fields = url::form_urlencoded::parse(&body).count();
                assert!(cookies > 0 && fields == 3);
                (axum::http::StatusCode::SEE_OTHER, headers)
            };
            match hop {
                true => gatehouse::web::run_blocking(read).await.unwrap(),
                false => read(),
            }
        }
    };
    let router = axum::Router::new().route("/login", axum::routing::post(reply));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("replay")
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let limits = gatehouse::web::listener::ConnectionLimits {
                header_read_timeout: Duration::from_secs(10),
                max_per_address: 1024,
            };
            gatehouse::web::listener::serve(listener, router, limits, std::future::pending())
                .await
                .unwrap();
        });
    });
    base
}

/// An HTTP load generator in the style of wrk: `connections` kept-alive connections on a
/// two-thread runtime of its own, each sending its next request as soon as the last answered.
struct Generator {
    runtime: tokio::runtime::Runtime,
    connections: usize,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    axum::body::Body,
>;

impl Generator {
    fn new(connections: usize) -> Generator {
        Generator {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .thread_name("loadgen")
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            connections,
        }
    }

    fn client(&self) -> HttpClient {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(self.connections)
            .build_http()
    }

    /// GETs `url` for `seconds`; requests per second (every answer must be `status`).
    fn get_rate(&self, url: &str, seconds: f64, status: u16) -> f64 {
        let client = self.client();
        let done = Arc::new(AtomicU64::new(0));
        let url: axum::http::Uri = url.parse().unwrap();
        let started = Instant::now();
        self.runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
            let tasks: Vec<_> = (0..self.connections)
                .map(|_| {
                    let (client, url, done) = (client.clone(), url.clone(), done.clone());
                    tokio::spawn(async move {
                        while tokio::time::Instant::now() < deadline {
                            let answer = client.get(url.clone()).await.unwrap();
                            assert_eq!(answer.status().as_u16(), status);
                            axum::body::to_bytes(
                                axum::body::Body::new(answer.into_body()),
                                1 << 20,
                            )
                            .await
                            .unwrap();
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
    }

    /// POSTs the passcode of every waiting sign-in once; requests per second (each answer must
    /// be the 303 back to the application).
    fn passcode_rate(&self, base: &str, waiting: Vec<Waiting>) -> f64 {
        let client = self.client();
        let count = waiting.len();
        let queue = Arc::new(Mutex::new(waiting));
        let url: axum::http::Uri = format!("{base}/login").parse().unwrap();
        let started = Instant::now();
        self.runtime.block_on(async {
            let tasks: Vec<_> = (0..self.connections)
                .map(|_| {
                    let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
                    tokio::spawn(async move {
                        loop {
                            let Some(next) = queue.lock().unwrap().pop() else {
                                break;
                            };
                            let request = axum::http::Request::post(url.clone())
                                .header("cookie", next.cookie)
                                .header("content-type", "application/x-www-form-urlencoded")
                                .body(axum::body::Body::from(format!(
                                    "csrf={}&step=2&passcode={}",
                                    next.csrf, next.code
                                )))
                                .unwrap();
                            let answer = client.request(request).await.unwrap();
                            assert_eq!(answer.status().as_u16(), 303);
                            let location =
                                answer.headers()["location"].to_str().unwrap().to_owned();
                            assert!(location.contains("code="), "{location}");
                            axum::body::to_bytes(
                                axum::body::Body::new(answer.into_body()),
                                1 << 20,
                            )
                            .await
                            .unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        count as f64 / started.elapsed().as_secs_f64()
    }
}

/// Resident memory of a server process grown by `count` sign-ins brought to their passcode
/// step and left there, in bytes per sign-in (after a warm-up: threads and pools cost once).
fn waiting_sign_in_bytes(root: &std::path::Path, count: usize) -> u64 {
    let server = ServerProcess::start(root);
    // The console sink: codes are not needed, nothing is posted.
    let sink = Sink::default();
    // 4 x 250 client addresses (offices, carrier NATs): per-address records are shared.
    let addresses = 250;
    prepare_waiting(&server.base, &sink, 1_000, 4, false, addresses);
    let before = server.resident_bytes();
    prepare_waiting(&server.base, &sink, count, 4, false, addresses);
    server.resident_bytes().saturating_sub(before) / count as u64
}
