//! The Redis state store against a real `redis-server` on a loopback port with throw-away data:
//! the port's contract (TTLs, atomic updates under contention), a sign-in served from it, and
//! an outage that ends without restarting Gatehouse.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gatehouse::ports::{StateStore, StoreUpdate};
use gatehouse::store::RedisStore;

use crate::support::web::location;
use crate::support::*;

/// A redis-server of our own, stopped on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    fn start_on(port: u16) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/run installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "redis-server");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub(crate) fn store(&self, prefix: &str) -> RedisStore {
        RedisStore::new(&self.url(), prefix, Duration::from_millis(500)).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn values_expire_and_updates_are_atomic_under_contention() {
    let redis = RedisServer::start();
    let store = Arc::new(redis.store("t1:"));
    store
        .put("a", b"one".to_vec(), Duration::from_secs(60))
        .unwrap();
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"one"[..]));
    store.delete("a").unwrap();
    assert_eq!(store.get("a").unwrap(), None);

    // TTLs are Redis's own; an update without a TTL keeps the remaining lifetime.
    store
        .put("short", b"x".to_vec(), Duration::from_millis(300))
        .unwrap();
    store
        .update("short", None, &mut |_| StoreUpdate::Put(b"y".to_vec()))
        .unwrap();
    assert_eq!(store.get("short").unwrap().as_deref(), Some(&b"y"[..]));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(store.get("short").unwrap(), None, "the update kept the TTL");

    // Four threads, 100 increments each, on one key: none is lost.
    std::thread::scope(|s| {
        for _ in 0..4 {
            let store = store.clone();
            s.spawn(move || {
                for _ in 0..100 {
                    store
                        .update("count", Some(Duration::from_secs(60)), &mut |current| {
                            let n: u32 = current
                                .and_then(|b| std::str::from_utf8(b).ok()?.parse().ok())
                                .unwrap_or(0);
                            StoreUpdate::Put((n + 1).to_string().into_bytes())
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.get("count").unwrap().as_deref(), Some(&b"400"[..]));
    // Keys carry the prefix: another prefix sees nothing.
    assert_eq!(redis.store("t2:").get("count").unwrap(), None);
}

#[test]
fn a_sign_in_is_served_from_redis_and_survives_an_outage() {
    let mut redis = RedisServer::start();
    let store: Arc<dyn StateStore> = Arc::new(redis.store("t3:"));
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            store: Some(store.clone()),
            ..EnvOptions::default()
        },
    );
    let login = env.web_login(None);
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    login.finish(login.passcode(&env.sms.last_code()));

    // Redis goes away: a new sign-in gets a clear 503, nothing panics.
    redis.stop();
    let base = env.base.clone().unwrap();
    let browser = crate::support::web::WebLogin::new_with_headers(&base, &[]);
    let authorize = crate::support::web::authorize_url(&base, &[]);
    let answer = browser.get(&authorize);
    assert_eq!(answer.status(), 503);
    assert!(answer.text().unwrap().contains("temporarily unavailable"));
    // /health says why.
    let health = browser.get(&format!("{base}/health"));
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().unwrap();
    assert_eq!(health["status"], "unavailable");
    assert!(
        health["store_error"]
            .as_str()
            .unwrap()
            .starts_with("state store unavailable: redis"),
        "{health}"
    );

    // A token request: 503 temporarily_unavailable, the detail only in the log.
    let token = reqwest::blocking::Client::new()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("redirect_uri", RP_REDIRECT),
            ("client_id", RP_ID),
            ("code_verifier", "v"),
        ])
        .send()
        .unwrap();
    assert_eq!(token.status(), 503);
    let body: serde_json::Value = token.json().unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(!body.to_string().contains("redis"), "{body}");

    // Redis is back (empty: its data was thrown away): sign-ins work again, no restart.
    redis.run();
    assert_eq!(browser.get(&format!("{base}/health")).status(), 200);
    let login = env.web_login(None);
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    login.finish(login.passcode(&env.sms.last_code()));
}

/// Two nodes on one Redis are one server: a sign-in begun on one node is finished on the
/// other after the first is gone, and wrong guesses made on both count against one limit.
#[test]
fn nodes_sharing_redis_are_one_server() {
    let redis = RedisServer::start();
    let node = || {
        let store: Arc<dyn StateStore> = Arc::new(redis.store("t4:"));
        web_env(
            vec![script("sms_otp", shipped_script())],
            EnvOptions {
                store: Some(store),
                otp: format!("code_key = \"{}\"\nmax_attempts = 3", "k".repeat(40)),
                ..EnvOptions::default()
            },
        )
    };
    let (a, b) = (node(), node());
    let on = |env: &TestEnv, login: &crate::support::web::WebLogin| crate::support::web::WebLogin {
        base: env.base.clone().unwrap(),
        browser: crate::support::web::Browser {
            client: login.browser.client.clone(),
        },
    };

    // Wrong guesses alternate between the nodes: the third, wherever it lands, ends the code.
    let login = a.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    // Each node finds the sign-in (a page back to /login, not "no sign-in in progress").
    assert_eq!(location(&login.passcode("000000")), "/login");
    assert_eq!(location(&on(&b, &login).passcode("000001")), "/login");
    assert_eq!(location(&login.passcode("000002")), "/login");
    let code = a.sms.last_code();
    let fourth = on(&b, &login).passcode(&code);
    assert_eq!(
        location(&fourth),
        "/login",
        "the right code after three wrong guesses (on two nodes) is refused"
    );

    // Begun on A; A goes away; finished on B.
    let login = a.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    let code = a.sms.last_code();
    drop(a);
    let on_b = on(&b, &login);
    on_b.finish(on_b.passcode(&code));
}

/// The two-node example in the README is a valid config (its `${env:...}` values filled in).
#[test]
fn the_readme_two_node_example_is_a_valid_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Running several nodes").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let filled = example
        .replace("${env:GATEHOUSE_REDIS_URL}", "redis://127.0.0.1:6379/0")
        .replace("${env:GATEHOUSE_CODE_KEY}", &"ab".repeat(32));
    let config = gatehouse::config::Config::parse(std::path::Path::new("README.md"), &filled)
        .unwrap_or_else(|e| panic!("{e}\n{filled}"));
    assert_eq!(config.store.backend, gatehouse::config::StoreBackend::Redis);
}

/// The openidconnect relying party signs in against a server whose state lives in Redis; no
/// code, password or secret reaches the log.
#[test]
fn a_relying_party_signs_in_against_a_redis_backed_server() {
    let redis = RedisServer::start();
    let store: Arc<dyn StateStore> = Arc::new(redis.store("t5:"));
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            store: Some(store),
            ..EnvOptions::default()
        },
    );
    crate::oidc_e2e::relying_party_login(&env, "sms_otp", || env.sms.last_code());
    assert_log_clean(&env, &[&env.sms.last_code(), ALICE_PASSWORD, RP_SECRET]);
}

/// `gatehouse users reset-sms` on a config that names the Redis store clears a lock the servers
/// keep there: the next sign-in gets its code at once.
#[test]
fn the_operator_resets_a_lock_kept_in_redis() {
    let redis = RedisServer::start();
    let store: Arc<dyn StateStore> = Arc::new(redis.store("t6:"));
    let code_key = "k".repeat(40);
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            store: Some(store),
            otp: format!("code_key = \"{code_key}\"\nlock_after_failures = 3\nmax_attempts = 5"),
            ..EnvOptions::default()
        },
    );
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    for guess in ["000000", "000001", "000002"] {
        assert_eq!(location(&login.passcode(guess)), "/login");
    }
    let locked = env.web_login(None);
    locked.password("alice", ALICE_PASSWORD);
    assert!(locked.page().contains("locked"), "{}", locked.page());

    // The operator's config: the server's, naming the same Redis and prefix.
    let (ok, stdout) = operator_reset_sms(
        &env,
        "alice",
        &format!(
            "[store]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"t6:\"",
            redis.url()
        ),
    );
    assert!(ok, "{stdout}");
    assert!(stdout.contains("in the shared state store"), "{stdout}");

    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    login.finish(login.passcode(&env.sms.last_code()));
}

/// A server started while Redis is down serves 503s and says why; when Redis comes up it serves
/// sign-ins, without a restart.
#[test]
fn a_server_started_before_redis_waits_for_it() {
    let port = free_port();
    let env = web_env(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            otp: format!("code_key = \"{}\"", "k".repeat(40)),
            extra_config: format!(
                "[store]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\nkey_prefix = \"t7:\"\ntimeout_ms = 500\n"
            ),
            ..EnvOptions::default()
        },
    );
    env.wait_for_log("sign-ins answer 503 until Redis answers");
    let base = env.base.clone().unwrap();
    let browser = crate::support::web::WebLogin::new(&base);
    assert_eq!(
        browser
            .get(&crate::support::web::authorize_url(&base, &[]))
            .status(),
        503
    );
    assert_eq!(browser.get(&format!("{base}/health")).status(), 503);

    let _redis = RedisServer::start_on(port);
    assert_eq!(browser.get(&format!("{base}/health")).status(), 200);
    let login = env.web_login(None);
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    login.finish(login.passcode(&env.sms.last_code()));
}

/// A TCP relay between a client and redis-server that counts the client's round trips: each
/// time the client writes after having been answered (a pipeline is one write).
struct CountingRelay {
    port: u16,
    trips: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingRelay {
    fn start(upstream: u16) -> CountingRelay {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let trips = Arc::new(AtomicUsize::new(0));
        let counted = trips.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let mut server = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Whether the last bytes on this connection went to the client (an answer).
                let answered = Arc::new(AtomicBool::new(true));
                let (to_server, trips) = (answered.clone(), counted.clone());
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 65536];
                    while let Ok(n) = client_in.read(&mut buffer) {
                        if n == 0 || server_out.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                        if to_server.swap(false, Ordering::SeqCst) {
                            trips.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 65536];
                    while let Ok(n) = server.read(&mut buffer) {
                        answered.store(true, Ordering::SeqCst);
                        if n == 0 || client.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        CountingRelay { port, trips }
    }

    fn trips(&self) -> usize {
        self.trips.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A code check (the code and the account's record, one transaction) costs at most two round
/// trips to Redis, wrong or right.
#[test]
fn a_code_check_costs_two_round_trips_to_redis() {
    use gatehouse::flow::otp::OtpCheck;
    let redis = RedisServer::start();
    let relay = CountingRelay::start(redis.port);
    let store: Arc<dyn StateStore> = Arc::new(
        RedisStore::new(
            &format!("redis://127.0.0.1:{}/0", relay.port),
            "trips:",
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            store: Some(store),
            ..EnvOptions::default()
        },
    );
    let (context, code, wrong) = code_issued_to_alice(&env, &"b".repeat(64));
    for (guess, expected) in [
        (wrong, OtpCheck::Rejected { remaining: 4 }),
        (wrong, OtpCheck::Rejected { remaining: 3 }),
        (code.as_str(), OtpCheck::Accepted),
    ] {
        let before = relay.trips();
        assert_eq!(context.verify_code(guess).unwrap(), expected);
        let trips = relay.trips() - before;
        assert!(trips <= 2, "{guess:?} took {trips} round trips");
        assert!(trips >= 1, "the relay counts");
    }
}

/// Two keys updated together stay in step under contention (one transaction per update).
#[test]
fn pair_updates_are_atomic_under_contention() {
    let redis = RedisServer::start();
    let store = Arc::new(redis.store("pair:"));
    let count = |bytes: Option<&[u8]>| {
        bytes.map_or(0, |b| String::from_utf8_lossy(b).parse::<u64>().unwrap())
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            let store = store.clone();
            s.spawn(move || {
                for _ in 0..50 {
                    store
                        .update_pair(
                            ["a", "b"],
                            [Some(Duration::from_secs(60)), None],
                            &mut |[a, b]| {
                                assert_eq!(count(a), count(b), "seen out of step");
                                [
                                    StoreUpdate::Put((count(a) + 1).to_string().into_bytes()),
                                    StoreUpdate::Put((count(b) + 1).to_string().into_bytes()),
                                ]
                            },
                        )
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"200"[..]));
    assert_eq!(store.get("b").unwrap().as_deref(), Some(&b"200"[..]));
}

/// One key that every node updates at once (the count of pending sign-ins): optimistic pair
/// updates from 32 writers on two store clients all land (a lost attempt waits a random,
/// doubling time; it used to give up after 64 immediate retries: 10 of 3,200 failed), and the
/// store's counter adds from 64 writers are exact.
#[test]
fn a_hot_key_updated_from_many_nodes_at_once_loses_no_update() {
    let redis = RedisServer::start();
    let stores: Vec<Arc<gatehouse::store::RedisStore>> =
        (0..2).map(|_| Arc::new(redis.store("hot:"))).collect();
    let minute = Some(Duration::from_secs(60));
    std::thread::scope(|s| {
        for t in 0..32 {
            let store = stores[t % 2].clone();
            s.spawn(move || {
                for i in 0..100 {
                    let key = format!("address-{t}-{i}");
                    store
                        .update_pair([&key, "total"], [minute, minute], &mut |[_, total]| {
                            let n = gatehouse::ports::counter_value(total);
                            [
                                StoreUpdate::Put(b"1".to_vec()),
                                StoreUpdate::Put((n + 1).to_string().into_bytes()),
                            ]
                        })
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(
        stores[0].get("total").unwrap().as_deref(),
        Some(&b"3200"[..])
    );
    std::thread::scope(|s| {
        for t in 0..64 {
            let store = stores[t % 2].clone();
            s.spawn(move || {
                for i in 0..100 {
                    let delta = if i % 4 == 3 { -1 } else { 1 };
                    store
                        .add("counter", delta, Duration::from_secs(60))
                        .unwrap();
                }
            });
        }
    });
    // 64 writers x (75 up, 25 down).
    assert_eq!(
        stores[1].get("counter").unwrap().as_deref(),
        Some(&b"3200"[..])
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("hot:counter")
        .query(
            &mut redis::Client::open(redis.url())
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    assert!((59_000..=60_000).contains(&ttl), "{ttl}");
}

/// Two nodes on one Redis, a burst of sign-in starts on both at once: every one is admitted
/// (the pending counts are store counters, not optimistic updates of one hot key).
#[test]
fn a_burst_of_sign_ins_on_two_nodes_is_all_admitted() {
    let redis = RedisServer::start();
    let node = || {
        let store: Arc<dyn StateStore> = Arc::new(redis.store("burst:"));
        web_env(
            vec![script("sms_otp", shipped_script())],
            EnvOptions {
                store: Some(store),
                otp: format!("code_key = \"{}\"", "k".repeat(40)),
                // Every start comes from 127.0.0.1: only the total and the store are tested.
                login: "max_pending_per_address = 100000".into(),
                ..EnvOptions::default()
            },
        )
    };
    let nodes = [node(), node()];
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..48)
            .map(|t| {
                let base = nodes[t % 2].base.clone().unwrap();
                s.spawn(move || {
                    (0..8)
                        .map(|_| {
                            let login = crate::support::web::WebLogin::new(&base);
                            let url = crate::support::web::authorize_url(&base, &[]);
                            login.get(&url).status().as_u16()
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(statuses.len(), 384);
    assert!(statuses.iter().all(|s| *s == 303), "{statuses:?}");
    assert_eq!(nodes[0].app.engine.sign_ins_in_flight().unwrap(), 384);
}
