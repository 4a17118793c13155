//! The sandbox: runaway scripts fail their own hook within the deadline, never the server, and
//! do not hold up other logins.

use std::time::{Duration, Instant};

use crate::support::*;

fn runaway(body: &str) -> String {
    format!(
        "fn authenticate(config, params, step) {{\n    identity::set_user(\"alice\");\n    {body}\n    true\n}}\n"
    )
}

const HELPERS: &str = "fn grow(n) { grow(n + 1) }\n";

/// Runs one runaway hook while a good login on another acr completes; returns the runaway's
/// duration and the log.
fn run_beside_a_good_login(body: &str) -> (Duration, String) {
    let env = TestEnv::with_options(
        vec![
            script("bad", format!("{HELPERS}{}", runaway(body))),
            script("good", shipped_script()),
        ],
        EnvOptions {
            sandbox: "hook_timeout_ms = 1500\nmax_operations = 1000000000".into(),
            ..EnvOptions::default()
        },
    );
    let bad = env.start(Some("bad")).unwrap();
    let good_done = std::thread::scope(|s| {
        let good = s.spawn(|| {
            let login = env.pass_password(Some("good"));
            let code = env.sms.last_code();
            expect_authenticated(env.submit(&login, 2, &[("passcode", &code)]).unwrap());
            Instant::now()
        });
        let started = Instant::now();
        expect_retry(env.submit(&bad.login, 1, &[]).unwrap());
        let elapsed = started.elapsed();
        (elapsed, good.join().unwrap())
    });
    let (elapsed, _) = good_done;
    // The runaway's failure line is the last thing it logs.
    (elapsed, env.wait_for_log("(in authenticate, revision 1)"))
}

#[test]
fn infinite_loop_hits_the_deadline() {
    let (elapsed, log) = run_beside_a_good_login("loop {}");
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
    assert!(log.contains("ran past its deadline"), "{log}");
    assert!(
        log.contains("bad.rhai:2:1: the hook ran past its deadline"),
        "{log}"
    );
}

#[test]
fn string_doubling_hits_the_size_limit() {
    let (elapsed, log) = run_beside_a_good_login("let s = \"x\"; loop { s += s; }");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert!(log.contains("Length of string too large"), "{log}");
}

#[test]
fn deep_recursion_hits_the_call_limit() {
    let (elapsed, log) = run_beside_a_good_login("grow(0);");
    assert!(elapsed < Duration::from_millis(1500), "took {elapsed:?}");
    assert!(log.contains("Stack overflow"), "{log}");
}

#[test]
fn operation_limit_stops_busy_work() {
    let env = TestEnv::with_options(
        vec![script("busy", runaway("let n = 0; while true { n += 1; }"))],
        EnvOptions {
            sandbox: "max_operations = 100000".into(),
            ..EnvOptions::default()
        },
    );
    let page = env.start(None).unwrap();
    expect_retry(env.submit(&page.login, 1, &[]).unwrap());
    env.wait_for_log("Too many operations");
}

#[test]
fn eval_import_and_top_level_side_effects_are_refused_at_load() {
    let env = TestEnv::new(vec![
        script("ok", "fn authenticate(config, params, step) { true }"),
        script(
            "ev",
            "fn authenticate(config, params, step) { eval(\"true\") }",
        ),
        script(
            "im",
            "import \"os\" as os;\nfn authenticate(config, params, step) { true }",
        ),
        script(
            "top",
            "print(\"hello\");\nfn authenticate(config, params, step) { true }",
        ),
        script(
            "host",
            "let x = users::exists(\"alice\");\nfn authenticate(config, params, step) { true }",
        ),
        script("arity", "fn authenticate(config, params) { true }"),
    ]);
    for acr in ["ev", "im", "top", "host", "arity"] {
        assert_eq!(env.revision(acr), None, "{acr} should not load");
        let error = env.last_error(acr).unwrap();
        assert!(error.contains(&format!("{acr}.rhai")), "{acr}: {error}");
    }
    assert!(
        env.last_error("ev").unwrap().contains("ev.rhai:1:"),
        "{}",
        env.last_error("ev").unwrap()
    );
    assert!(env
        .last_error("top")
        .unwrap()
        .contains("top level may only declare constants"));
    assert!(env
        .last_error("arity")
        .unwrap()
        .contains("the hook takes 3"));
}

#[test]
fn logins_share_no_script_state() {
    // Every call gets a fresh scope and every login its own working parameters: what one login
    // stored is never visible to the next.
    let source = fixture("isolated_logins");
    let env = TestEnv::new(vec![script("iso", source)]);
    for user in ["first", "second", "third"] {
        let page = env.start(None).unwrap();
        expect_authenticated(env.submit(&page.login, 1, &[("username", user)]).unwrap());
    }
}

#[test]
fn a_misspelt_hook_is_refused_with_its_place_and_the_hook_it_resembles() {
    let typo = "fn authenticate(config, params, step) { identity::set_user(\"alice\"); true }\n\n// the last step\nfn getNextstep(config, params, step) { -1 }\n";
    let env = TestEnv::new(vec![
        script("typo", typo),
        script(
            "arity",
            "fn authenticate(config, params, step) { true }\n  fn getNextStep(config, step) { -1 }\n",
        ),
    ]);
    assert_eq!(env.revision("typo"), None);
    let error = env.last_error("typo").unwrap();
    assert!(
        error.contains(
            "typo.rhai:4:1: fn getNextstep is not a hook the host calls: did you mean getNextStep?"
        ),
        "{error}"
    );
    let error = env.last_error("arity").unwrap();
    assert!(
        error.contains("arity.rhai:2:3: fn getNextStep takes 2 parameter(s); the hook takes 3"),
        "{error}"
    );
    // `gatehouse check` says the same and fails.
    let (passed, printed) = env.check();
    assert!(!passed, "{printed}");
    assert!(printed.contains("did you mean getNextStep?"), "{printed}");
}

#[test]
fn sleep_is_refused_and_a_slow_http_call_ends_at_the_hook_deadline() {
    use crate::support::mock_http::{MockResponse, MockServer};
    // The answer would come within [http] timeout_ms (1500 ms), but after the hook's deadline.
    let slow = MockServer::sequence(vec![
        MockResponse::json(200, "{}").delayed(Duration::from_millis(1200))
    ]);
    let waits = format!(
        "fn authenticate(config, params, step) {{\n    identity::set_user(\"alice\");\n    if params.how == \"sleep\" {{ sleep(12); return true; }}\n    let answer = http::get(\"{}/slow\");\n    if !answer.ok {{ print(answer.error); }}\n    answer.ok\n}}\n",
        slow.url()
    );
    let env = TestEnv::with_options(
        vec![script("waits", waits)],
        EnvOptions {
            sandbox: "hook_timeout_ms = 400".into(),
            ..EnvOptions::default()
        },
    );
    for how in ["sleep", "http"] {
        let page = env.start(None).unwrap();
        let started = std::time::Instant::now();
        expect_retry(env.submit(&page.login, 1, &[("how", how)]).unwrap());
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "{how}: the hook ran {:?}",
            started.elapsed()
        );
    }
    env.wait_for_log("sleep is not available to scripts");
    env.wait_for_log("no answer before the hook's deadline");
}

#[test]
fn check_reports_unknown_functions_and_pages_without_templates() {
    let env = TestEnv::new(vec![script("findings", fixture("check_findings"))]);
    assert_eq!(
        env.revision("findings"),
        Some(1),
        "it loads: only check sees these"
    );
    let (passed, printed) = env.check();
    assert!(!passed, "{printed}");
    assert!(
        printed.contains("findings.rhai:4:5: users::no_such_function(...) is neither a function of this script nor of the host API"),
        "{printed}"
    );
    assert!(
        printed.contains(
            "findings.rhai:7:32: getPageForStep names page \"no_such_page\", which has no template"
        ),
        "{printed}"
    );
    // The shipped config has no such findings.
    let shipped = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&shipped.stdout);
    assert!(shipped.status.success(), "{printed}");
}

/// Rhai checks a value's size after building it; the host bounds what one hook call may grow
/// the process by, refuses a `replace` that would build an oversize string, and caps what a
/// sign-in keeps.
#[test]
fn a_hook_cannot_grow_the_process_past_its_memory_budget() {
    let env = TestEnv::new(vec![script("hog", fixture("memory_hog"))]);
    for (how, message) in [
        (
            "map",
            "the hook used more memory than it may (sandbox.max_hook_memory_mb)",
        ),
        ("replace", "replace would make a string of 400000000 bytes"),
        (
            "working",
            "a sign-in's working parameters may hold at most 65536 bytes in all",
        ),
    ] {
        let page = env.start(None).unwrap();
        expect_retry(env.submit(&page.login, 1, &[("how", how)]).unwrap());
        env.wait_for_log(message);
    }
}

/// Runaway hooks reached over HTTP, more of them at once than the server has async workers or
/// request threads, do not hold up other requests: /health answers and a good sign-in completes
/// while they run to their deadline.
#[test]
fn runaway_hooks_over_http_do_not_stall_the_server() {
    let env = web_env(
        vec![
            script(
                "bad",
                "fn prepareForStep(config, params, step) { loop {} }\nfn authenticate(config, params, step) { false }\n",
            ),
            script("good", shipped_script()),
        ],
        EnvOptions {
            sandbox: "hook_timeout_ms = 8000\nmax_operations = 1000000000".into(),
            ..EnvOptions::default()
        },
    );
    let base = env.base.clone().unwrap();
    std::thread::scope(|s| {
        // More than the request threads a machine with up to 4 cores starts with (2 per core).
        for i in 0..10 {
            let base = base.clone();
            s.spawn(move || {
                let from = format!("127.0.9.{}", i + 1);
                let login = crate::support::web::WebLogin::new_with_headers(
                    &base,
                    &[("x-forwarded-for", from.as_str())],
                );
                let authorize = crate::support::web::authorize_url(&base, &[("acr_values", "bad")]);
                // The sign-in begins on its first page: prepareForStep loops to the deadline.
                login.get(&authorize);
                let page = login.get(&format!("{base}/login"));
                assert_eq!(page.status(), 503);
            });
        }
        // Give the three a moment to reach their loop, then ask the server something else,
        // again and again on new connections (each may land on any worker).
        std::thread::sleep(Duration::from_millis(300));
        let mut slowest = Duration::ZERO;
        for _ in 0..10 {
            let started = Instant::now();
            let health = crate::support::web::WebLogin::new(&base).get(&format!("{base}/health"));
            slowest = slowest.max(started.elapsed());
            assert_eq!(health.status(), 200);
        }
        assert!(
            slowest < Duration::from_millis(800),
            "/health waited {slowest:?}"
        );
        // A good sign-in completes meanwhile too, before the loops reach their deadline (on
        // cores the loops keep busy: it takes about 1.3 s on 2 cores, not waiting for them).
        let started = Instant::now();
        let login = env.web_login(Some("good"));
        login.password("alice", ALICE_PASSWORD);
        login.finish(login.passcode(&env.sms.last_code()));
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the good sign-in took {:?}",
            started.elapsed()
        );
    });
}
