//! Hot reload: every editor save pattern gives exactly one reload; broken edits keep the last
//! good revision serving; logins never fail during a reload.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gatehouse::flow::FlowError;

use crate::support::*;

fn good_variant(tag: &str) -> String {
    fixture("reload_good").replace("revision A", &format!("revision {tag}"))
}

fn watched(sources: Vec<ScriptSpec>) -> TestEnv {
    TestEnv::with_options(
        sources,
        EnvOptions {
            watch: true,
            ..EnvOptions::default()
        },
    )
}

fn wait_revision(env: &TestEnv, acr: &str, revision: u64) {
    let reached = wait_until(Duration::from_secs(10), || {
        env.revision(acr) == Some(revision)
    });
    assert!(
        reached,
        "revision {revision} of {acr} never served (now {:?}); log:\n{}",
        env.revision(acr),
        env.log_text()
    );
}

/// After a reload settles, nothing else is reloaded for a while: one save, one reload.
fn assert_stays_at(env: &TestEnv, acr: &str, revision: u64) {
    let moved = wait_until(Duration::from_millis(400), || {
        env.revision(acr) != Some(revision)
    });
    assert!(
        !moved,
        "{acr} reloaded again: now at {:?}",
        env.revision(acr)
    );
}

fn login_works(env: &TestEnv, acr: &str) {
    let page = env.start(Some(acr)).unwrap();
    expect_authenticated(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
}

#[test]
fn in_place_edit_is_loaded_once() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    assert_eq!(env.revision("r"), Some(1));
    std::fs::write(env.script_path("r"), good_variant("B")).unwrap();
    wait_revision(&env, "r", 2);
    assert_stays_at(&env, "r", 2);
    env.wait_for_log("Initialized revision B");
    login_works(&env, "r");
}

#[test]
fn temp_file_then_rename_is_loaded_once() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    let temp = env.root().join("scripts/.r.rhai.swp");
    std::fs::write(&temp, good_variant("C")).unwrap();
    std::fs::rename(&temp, env.script_path("r")).unwrap();
    wait_revision(&env, "r", 2);
    assert_stays_at(&env, "r", 2);
    env.wait_for_log("Initialized revision C");
}

#[test]
fn delete_then_create_within_the_debounce_is_one_reload() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    std::fs::remove_file(env.script_path("r")).unwrap();
    std::fs::write(env.script_path("r"), good_variant("D")).unwrap();
    wait_revision(&env, "r", 2);
    assert_stays_at(&env, "r", 2);
}

#[test]
fn deleting_a_script_takes_it_out_of_service_until_it_returns() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    std::fs::remove_file(env.script_path("r")).unwrap();
    let gone = wait_until(Duration::from_secs(10), || env.revision("r").is_none());
    assert!(gone);
    assert!(matches!(
        env.start(Some("r")),
        Err(FlowError::UnavailableAcr { .. })
    ));
    env.wait_for_log("file removed");
    std::fs::write(env.script_path("r"), good_variant("E")).unwrap();
    wait_revision(&env, "r", 2);
    login_works(&env, "r");
}

#[test]
fn syntax_error_keeps_the_old_revision_and_names_file_line_column() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    let broken =
        "fn init(config) { true }\nfn authenticate(config, params, step) {\n    let x = ;\n}\n";
    std::fs::write(env.script_path("r"), broken).unwrap();
    let log = env.wait_for_log("keeps serving");
    let path = env.script_path("r").display().to_string();
    assert!(
        log.contains(&format!("{path}:3:13:")),
        "no file:line:col in:\n{log}"
    );
    assert_eq!(env.revision("r"), Some(1));
    let published = wait_until(Duration::from_secs(10), || {
        env.last_error("r").is_some_and(|e| e.contains(":3:13:"))
    });
    assert!(published, "{:?}", env.last_error("r"));
    login_works(&env, "r");
    // Fixing the file clears the error.
    std::fs::write(env.script_path("r"), good_variant("F")).unwrap();
    wait_revision(&env, "r", 2);
    assert_eq!(env.last_error("r"), None);
}

#[test]
fn init_returning_false_keeps_the_old_revision() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    std::fs::write(
        env.script_path("r"),
        fixture("reload_good").replace("; true }", "; false }"),
    )
    .unwrap();
    let log = env.wait_for_log("init returned");
    assert!(log.contains("revision 1 keeps serving"), "{log}");
    assert_eq!(env.revision("r"), Some(1));
    login_works(&env, "r");
}

#[test]
fn junk_files_are_ignored_with_a_log_line() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    let scripts = env.root().join("scripts");
    std::fs::write(scripts.join(".r.rhai.swp"), "garbage").unwrap();
    std::fs::write(scripts.join("r.rhai~"), "garbage").unwrap();
    std::fs::write(scripts.join("notes.txt"), "garbage").unwrap();
    std::fs::create_dir(scripts.join("dir.rhai")).unwrap();
    let log = env.wait_for_log("notes.txt: not a .rhai file");
    assert!(
        log.contains(".r.rhai.swp: editor swap or backup file"),
        "{log}"
    );
    assert!(log.contains("r.rhai~: editor swap or backup file"), "{log}");
    assert_stays_at(&env, "r", 1);
}

#[test]
fn symlinks_out_of_the_folder_and_oversize_files_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.rhai"), fixture("reload_good")).unwrap();
    let env = TestEnv::with_options(
        vec![
            script("r", fixture("reload_good")),
            script("big", fixture("reload_good")),
        ],
        EnvOptions {
            sandbox: "max_script_bytes = 4096".into(),
            watch: true,
            ..EnvOptions::default()
        },
    );
    // Put the symlink in place atomically (a rename), so the folder never lacks r.rhai.
    let link = env.root().join("scripts/.link.tmp");
    std::os::unix::fs::symlink(outside.path().join("evil.rhai"), &link).unwrap();
    std::fs::rename(&link, env.script_path("r")).unwrap();
    env.wait_for_log("a symlink out of the scripts directory");
    // Refused like any broken edit: the last good revision keeps serving.
    assert_eq!(env.revision("r"), Some(1));
    // The log line comes just before the new state is published: poll for it.
    let refused = wait_until(std::time::Duration::from_secs(10), || {
        env.last_error("r")
            .is_some_and(|e| e.contains("symlink out of the scripts directory"))
    });
    assert!(refused, "{:?}", env.last_error("r"));
    std::fs::write(
        env.script_path("big"),
        format!("{}\n// {}\n", fixture("reload_good"), "x".repeat(5000)),
    )
    .unwrap();
    env.wait_for_log("over the 4096-byte limit");
    assert_eq!(env.revision("big"), Some(1));
}

#[test]
fn config_edits_reload_properties_enabled_flag_and_default_acr() {
    let property_script = fixture("property_greeting");
    let env = watched(vec![
        script("p", property_script).with("[scripts.properties]\ngreeting = \"hello\""),
        script("q", fixture("reload_good")),
    ]);
    env.wait_for_log("greeting is hello");
    let config_path = env.root().join("config/gatehouse.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("greeting = \"hello\"", "greeting = \"bonjour\""),
    )
    .unwrap();
    wait_revision(&env, "p", 2);
    env.wait_for_log("greeting is bonjour");
    // Disable p and make q the default.
    let text = std::fs::read_to_string(&config_path).unwrap();
    let text = text
        .replace("default_acr = \"p\"", "default_acr = \"q\"")
        .replace(
            "file = \"p.rhai\"\n",
            "file = \"p.rhai\"\nenabled = false\n",
        );
    std::fs::write(&config_path, text).unwrap();
    let switched = wait_until(Duration::from_secs(10), || {
        matches!(env.start(Some("p")), Err(FlowError::DisabledAcr(_)))
    });
    assert!(switched, "p was never disabled; log:\n{}", env.log_text());
    assert_eq!(env.start(None).unwrap().acr, "q");
    // A config that does not parse keeps the running one.
    std::fs::write(&config_path, "this is = = not toml").unwrap();
    env.wait_for_log("the previous configuration keeps serving");
    assert_eq!(env.start(None).unwrap().acr, "q");
}

#[test]
fn no_login_fails_during_reloads() {
    let env = watched(vec![script("r", fixture("reload_good"))]);
    let stop = AtomicBool::new(false);
    let completed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let page = env.start(Some("r")).expect("start during reload");
                    let outcome = env
                        .submit(
                            &page.login,
                            1,
                            &[("username", "alice"), ("password", ALICE_PASSWORD)],
                        )
                        .expect("submit during reload");
                    expect_authenticated(outcome);
                    completed.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        for i in 0..10u64 {
            std::fs::write(env.script_path("r"), good_variant(&format!("N{i}"))).unwrap();
            wait_revision(&env, "r", i + 2);
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(completed.load(Ordering::SeqCst) > 0);
}

#[test]
fn an_edit_that_needs_a_restart_is_named_by_key_and_not_applied() {
    let env = TestEnv::with_options(
        vec![
            script("r", fixture("reload_good")),
            script("q", fixture("reload_good")),
        ],
        EnvOptions {
            extra_config:
                "[sms.providers.gw]\ntype = \"http\"\nurl = \"https://sms.example/send?token=t1\"\n"
                    .into(),
            ..EnvOptions::default()
        },
    );
    let config_path = env.root().join("config/gatehouse.toml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let edited = text
        .replace("token=t1", "token=t2")
        .replace("default_acr = \"r\"", "default_acr = \"q\"");
    std::fs::write(&config_path, edited).unwrap();
    env.app.reload(true);
    let log = env.wait_for_log(
        "configuration sms.providers.gw.url changed: it takes effect after a restart",
    );
    assert!(
        !log.contains("token=t2"),
        "the value itself is never logged:\n{log}"
    );
    let live = env.app.config.current();
    // Not applied: the running value stays; a live key in the same edit is applied.
    let gatehouse::config::ProviderConfig::Http(gateway) = &live.sms.providers["gw"] else {
        panic!("an http provider")
    };
    assert!(gateway
        .url
        .resolved()
        .unwrap()
        .expose()
        .ends_with("token=t1"));
    assert_eq!(live.login.default_acr.as_deref(), Some("q"));
}
