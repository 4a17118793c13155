//! Operating a running server as a Janssen operator would: the `gatehouse scripts` / `acrs`
//! commands and the admin API (`[admin] listen`, bearer token), against the real binary on a
//! copy of the shipped config; `/metrics`; JSON log lines.

use std::path::Path;
use std::time::Duration;

use gatehouse::base::metrics::Snapshot;
use serde_json::{json, Value};

use crate::support::process::{copy_shipped, run_in, serve_in, Ran};
use crate::support::*;

const TOKEN: &str = "admin-token-0123456789-abcdefghijklmnop";

fn gatehouse(root: &Path, args: &[&str]) -> Ran {
    run_in(root, args, &[], "")
}

fn config_text(root: &Path) -> String {
    std::fs::read_to_string(root.join("config/gatehouse.toml")).unwrap()
}

fn discovered_acrs(base: &str) -> Vec<String> {
    let discovery: Value =
        reqwest::blocking::get(format!("{base}/.well-known/openid-configuration"))
            .unwrap()
            .json()
            .unwrap();
    discovery["acr_values_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn cli_edits_keep_comments_refuse_bad_edits_and_reach_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_shipped(root);
    let shipped = config_text(root);

    let listed = gatehouse(root, &["scripts", "list", "--json"]);
    assert!(listed.ok, "{}", listed.stderr);
    let scripts: Value = serde_json::from_str(&listed.stdout).unwrap();
    let acrs: Vec<&str> = scripts
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["acr"].as_str().unwrap())
        .collect();
    assert_eq!(acrs, ["sms_otp", "twilio_sms", "stytch", "sms_phone"]);
    assert_eq!(scripts[0]["state"], "active");
    assert_eq!(scripts[0]["default"], true);
    assert_eq!(scripts[1]["state"], "disabled");

    // Refused edits say why and leave the file as it was, byte for byte.
    for (args, why) in [
        (
            vec!["scripts", "disable", "sms_otp"],
            "sms_otp is the default acr",
        ),
        (
            vec!["scripts", "enable", "nope"],
            "no [[scripts]] entry has acr \"nope\"",
        ),
        (vec!["acrs", "default", ""], "blank"),
        (
            vec!["acrs", "default", "stytch"],
            "stytch is disabled: enable it first",
        ),
        (
            vec!["scripts", "set", "sms_otp", "bad name", "x"],
            "is not a property name",
        ),
    ] {
        let ran = gatehouse(root, &args);
        assert!(!ran.ok, "{args:?} was accepted");
        assert!(ran.stderr.contains(why), "{args:?}: {}", ran.stderr);
        assert_eq!(config_text(root), shipped, "{args:?} touched the file");
    }

    // A secret is never echoed, on the command line or from standard input.
    let set = gatehouse(
        root,
        &[
            "scripts",
            "set",
            "twilio_sms",
            "twilio_token",
            "tok-SECRET-1",
        ],
    );
    assert!(set.ok, "{}", set.stderr);
    assert!(!set.stdout.contains("tok-SECRET-1"), "{}", set.stdout);
    assert!(set.stdout.contains("secret"), "{}", set.stdout);
    let piped = run_in(
        root,
        &["scripts", "set", "stytch", "SECRET", "-"],
        &[],
        "stytch-SECRET-2\n",
    );
    assert!(piped.ok, "{}", piped.stderr);
    assert!(!piped.stdout.contains("stytch-SECRET-2"));
    let text = config_text(root);
    assert!(text.contains("twilio_token = \"tok-SECRET-1\""));
    assert!(text.contains("SECRET = \"stytch-SECRET-2\""));
    let shown = gatehouse(root, &["scripts", "show", "twilio_sms"]);
    assert!(
        shown.stdout.contains("twilio_token = ********"),
        "{}",
        shown.stdout
    );
    assert!(!shown.stdout.contains("tok-SECRET-1"));
    assert!(!shown.stderr.contains("tok-SECRET-1"));

    // Plain properties: set, then unset; comments stay.
    assert!(
        gatehouse(
            root,
            &["scripts", "set", "sms_otp", "phone_attribute", "mobile"]
        )
        .ok
    );
    assert!(gatehouse(root, &["scripts", "unset", "sms_otp", "message.de"]).ok);
    let text = config_text(root);
    assert!(text
        .contains("# User attribute that holds the phone number.\nphone_attribute = \"mobile\""));
    assert!(!text.contains("message.de"));
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count(),
        shipped
            .lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .count(),
        "every comment kept"
    );

    // The user operations the admin API also has.
    let status = gatehouse(root, &["users", "sms-status", "alice"]);
    assert!(
        status.stdout.contains("alice: SMS sign-in open"),
        "{}",
        status.stdout
    );
    let unknown = gatehouse(root, &["users", "sms-status", "nobody"]);
    assert!(!unknown.ok && unknown.stderr.contains("no user \"nobody\""));

    // A running server picks the edits up by its reload.
    let port = free_port();
    let _server = serve_in(root, port, &[], &[]);
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(discovered_acrs(&base), ["sms_otp"]);
    assert!(gatehouse(root, &["scripts", "enable", "sms_phone"]).ok);
    assert!(
        wait_until(Duration::from_secs(10), || discovered_acrs(&base)
            .contains(&"sms_phone".to_owned())),
        "the server did not apply the enable"
    );
    let made = gatehouse(root, &["acrs", "default", "sms_phone"]);
    assert!(made.ok, "{}", made.stderr);
    assert_eq!(
        gatehouse(root, &["acrs", "default"]).stdout.trim(),
        "sms_phone"
    );
    assert!(gatehouse(root, &["scripts", "disable", "sms_otp"]).ok);
    assert!(
        wait_until(Duration::from_secs(10), || discovered_acrs(&base)
            == ["sms_phone"]),
        "{:?}",
        discovered_acrs(&base)
    );
    let log = read_logs(&root.join("logs"));
    for secret in ["tok-SECRET-1", "stytch-SECRET-2"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// The shipped config with the admin listener on `admin_port`, its token from the environment:
/// the two commented lines of the shipped `[admin]` uncommented, as an operator would.
fn with_admin(root: &Path, admin_port: u16) {
    let text = config_text(root);
    let listen = "# listen = \"127.0.0.1:8081\"";
    let token = "# token = \"${env:GATEHOUSE_ADMIN_TOKEN}\"";
    assert!(
        text.contains(listen) && text.contains(token),
        "the shipped [admin] changed"
    );
    let text = text
        .replace(listen, &format!("listen = \"127.0.0.1:{admin_port}\""))
        .replace(token, "token = \"${env:GATEHOUSE_ADMIN_TOKEN}\"");
    std::fs::write(root.join("config/gatehouse.toml"), text).unwrap();
}

fn client_from(address: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn the_admin_api_needs_its_token_throttles_failures_and_edits_like_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_shipped(root);
    let (port, admin_port) = (free_port(), free_port());
    with_admin(root, admin_port);
    let _server = serve_in(
        root,
        port,
        &[("GATEHOUSE_ADMIN_TOKEN", TOKEN)],
        &[admin_port],
    );
    let base = format!("http://127.0.0.1:{port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = client_from("127.0.0.1");
    let authorized = |request: reqwest::blocking::RequestBuilder| request.bearer_auth(TOKEN);

    // The admin API is on its own listener only.
    assert_eq!(
        client
            .get(format!("{base}/admin/scripts"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .status(),
        404
    );
    // No token, a wrong one, one of another scheme: 401 with a challenge.
    for request in [
        client.get(format!("{admin}/admin/scripts")),
        client
            .get(format!("{admin}/admin/scripts"))
            .bearer_auth("wrong"),
        client
            .get(format!("{admin}/admin/scripts"))
            .basic_auth("admin", Some(TOKEN)),
    ] {
        let response = request.send().unwrap();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
    }
    // Failures are throttled per address: after five, even the right token waits.
    let attacker = client_from("127.0.0.77");
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = attacker
            .get(format!("{admin}/admin/scripts"))
            .bearer_auth("guess")
            .send()
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses[..5], [401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let held = authorized(attacker.get(format!("{admin}/admin/scripts")))
        .send()
        .unwrap();
    assert_eq!(held.status(), 429);
    assert!(held.headers().contains_key("retry-after"));
    // Sent at once, wrong tokens from one address get no more checks than one by one.
    let burst: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let admin = &admin;
                s.spawn(move || {
                    client_from("127.0.0.78")
                        .get(format!("{admin}/admin/scripts"))
                        .bearer_auth("guess")
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(burst.iter().filter(|s| **s == 401).count(), 5, "{burst:?}");
    assert_eq!(burst.iter().filter(|s| **s == 429).count(), 11, "{burst:?}");
    // Another address is not held back.
    let listed: Value = authorized(client.get(format!("{admin}/admin/scripts")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4);
    // The scheme is case-insensitive (RFC 6750).
    let lower = client
        .get(format!("{admin}/admin/acrs"))
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .unwrap();
    assert_eq!(lower.status(), 200);
    assert_eq!(listed[0]["acr"], "sms_otp");
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(
        listed[1]["properties"]["twilio_token"],
        "${env:TWILIO_TOKEN}"
    );

    // PATCH: applied at once (the answer shows the served state), refused edits explained.
    let patch = |acr: &str, body: Value| {
        let response = authorized(client.patch(format!("{admin}/admin/scripts/{acr}")))
            .json(&body)
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    let (status, view) = patch("sms_phone", json!({"enabled": true}));
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["enabled"], true);
    assert_eq!(view["state"], "active", "{view}");
    assert!(discovered_acrs(&base).contains(&"sms_phone".to_owned()));
    let (status, view) = patch(
        "sms_otp",
        json!({"properties": {"phone_attribute": "mobile", "message.fr": null, "api_key": "k-SECRET-3"}}),
    );
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["properties"]["phone_attribute"], "mobile");
    assert_eq!(view["properties"]["api_key"], "********");
    assert!(view["properties"].get("message.fr").is_none());
    let before = config_text(root);
    for (acr, body, expected_status, why) in [
        (
            "sms_otp",
            json!({"enabled": false}),
            400,
            "sms_otp is the default acr",
        ),
        (
            "nope",
            json!({"enabled": true}),
            404,
            "no [[scripts]] entry",
        ),
        ("sms_otp", json!({"enabled": "yes"}), 400, "expected"),
        ("sms_otp", json!({"level": 3}), 400, "unknown field"),
        (
            "sms_otp",
            json!({"properties": {"a b": "x"}}),
            400,
            "not a property name",
        ),
    ] {
        let (status, problem) = patch(acr, body.clone());
        assert_eq!(status, expected_status, "{body}: {problem}");
        assert!(
            problem["message"].as_str().unwrap().contains(why),
            "{body}: {problem}"
        );
    }
    assert_eq!(
        config_text(root),
        before,
        "refused edits left the file as it was"
    );
    // Edits sent at once are all kept: none overwrites another.
    std::thread::scope(|scope| {
        for i in 0..6 {
            let patch = &patch;
            scope.spawn(move || {
                let (status, view) = patch(
                    "stytch",
                    json!({"properties": {format!("extra_{i}"): format!("value-{i}")}}),
                );
                assert_eq!(status, 200, "{view}");
            });
        }
    });
    let (_, view) = patch("stytch", json!({}));
    for i in 0..6 {
        assert_eq!(
            view["properties"][format!("extra_{i}")],
            format!("value-{i}"),
            "{view}"
        );
    }

    // acrs: Janssen's body.
    let acrs = |method: reqwest::Method, body: Option<Value>| {
        let mut request = authorized(client.request(method, format!("{admin}/admin/acrs")));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    assert_eq!(
        acrs(reqwest::Method::GET, None),
        (200, json!({"defaultAcr": "sms_otp"}))
    );
    for (body, why) in [
        (json!({"defaultAcr": ""}), "blank"),
        (json!({"defaultAcr": "  "}), "blank"),
        (json!({"defaultAcr": "nope"}), "no [[scripts]] entry"),
        (json!({"defaultAcr": "stytch"}), "disabled"),
        (json!({}), "defaultAcr"),
        (json!({"defaultAcr": 5}), "defaultAcr"),
    ] {
        let (status, problem) = acrs(reqwest::Method::PUT, Some(body.clone()));
        assert_eq!(status, 400, "{body}: {problem}");
        assert!(
            problem["message"].as_str().unwrap().contains(why),
            "{body}: {problem}"
        );
    }
    assert_eq!(
        acrs(
            reqwest::Method::PUT,
            Some(json!({"defaultAcr": "sms_phone"}))
        ),
        (200, json!({"defaultAcr": "sms_phone"}))
    );
    assert!(config_text(root).contains("default_acr = \"sms_phone\""));

    // Users: SMS factor state and reset, backup codes (shown once, never logged).
    let user = |method: reqwest::Method, path: &str| {
        let response = authorized(client.request(method, format!("{admin}/admin/users/{path}")))
            .send()
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().unwrap(),
        )
    };
    assert_eq!(
        user(reqwest::Method::GET, "alice/sms"),
        (200, json!({"user": "alice", "state": "open"}))
    );
    let (status, reset) = user(reqwest::Method::POST, "alice/sms/reset");
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["state"], "open");
    let (status, issued) = user(reqwest::Method::POST, "alice/backup-codes");
    assert_eq!(status, 200, "{issued}");
    let codes: Vec<String> = issued["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(user(reqwest::Method::GET, "nobody/sms").0, 404);

    // /metrics: no token, Prometheus text, bounded labels.
    let response = client.get(format!("{admin}/metrics")).send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let metrics = response.text().unwrap();
    for line in [
        "gatehouse_script_reloads_total{acr=\"sms_phone\",outcome=\"loaded\"} 1",
        "gatehouse_scripts{state=\"active\"} 2",
        "gatehouse_admin_auth_failures_total 13",
        "gatehouse_sms_daily_budget 10000",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    assert!(metrics.ends_with("# EOF\n"));

    let log = wait_for_log_in(
        &root.join("logs"),
        "admin API: new backup codes issued for alice",
    );
    assert!(
        log.contains("admin API: missing or wrong token from 127.0.0.77"),
        "{log}"
    );
    for secret in codes
        .iter()
        .map(String::as_str)
        .chain([TOKEN, "k-SECRET-3", "guess"])
    {
        assert!(!log.contains(secret), "{secret} is in the log");
    }
}

#[test]
fn a_short_or_missing_admin_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_shipped(root);
    with_admin(root, free_port());
    for (env, why) in [
        (
            vec![],
            "environment variable GATEHOUSE_ADMIN_TOKEN is not set",
        ),
        (
            vec![("GATEHOUSE_ADMIN_TOKEN", "short-token")],
            "the token has 11 characters; use 32 or more",
        ),
    ] {
        let ran = run_in(root, &["serve", "--listen", "127.0.0.1:0"], &env, "");
        assert!(!ran.ok);
        assert!(ran.stderr.contains("admin.token"), "{}", ran.stderr);
        assert!(ran.stderr.contains(why), "{}", ran.stderr);
        assert!(!ran.stderr.contains("short-token"), "{}", ran.stderr);
    }
    // `gatehouse check` names what `serve` will miss.
    let checked = run_in(root, &["check"], &[], "");
    assert!(!checked.ok);
    assert!(
        checked
            .stdout
            .contains("admin.token: environment variable GATEHOUSE_ADMIN_TOKEN is not set"),
        "{}",
        checked.stdout
    );
    // The operator commands read the same file from shells without the token: they work.
    let listed = gatehouse(root, &["scripts", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert!(gatehouse(root, &["acrs", "default"]).ok);
}

#[test]
fn metrics_count_logins_code_checks_and_hooks_with_bounded_labels() {
    let env = TestEnv::new(vec![script("sms_otp", shipped_script())]);
    let page = env.start(Some("sms_otp")).unwrap();
    let next = expect_next(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    expect_retry(
        env.submit(&next.login, 2, &[("passcode", "000000")])
            .unwrap(),
    );
    let code = env.sms.last_code();
    expect_authenticated(env.submit(&next.login, 2, &[("passcode", &code)]).unwrap());
    let metrics = env.app.metrics().render(&Snapshot::default());
    for line in [
        "gatehouse_logins_total{acr=\"sms_otp\",outcome=\"success\"} 1",
        "gatehouse_logins_total{acr=\"sms_otp\",outcome=\"failure\"} 1",
        "gatehouse_code_checks_total{acr=\"sms_otp\",outcome=\"right\"} 1",
        "gatehouse_code_checks_total{acr=\"sms_otp\",outcome=\"wrong\"} 1",
        "gatehouse_hook_seconds_count{acr=\"sms_otp\",hook=\"authenticate\"} 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    // No label carries a user, a number or a code.
    for private in ["alice", "447700900123", code.as_str()] {
        assert!(!metrics.contains(private), "{private} in the metrics");
    }
}

#[test]
fn json_log_lines_carry_the_same_fields_and_the_same_masking() {
    let env = TestEnv::with_options(
        vec![script("sms_otp", shipped_script())],
        EnvOptions {
            extra_config: String::new(),
            ..EnvOptions::default()
        }
        .with_log_format("json"),
    );
    let page = env.start(Some("sms_otp")).unwrap();
    let next = expect_next(
        env.submit(
            &page.login,
            1,
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
        )
        .unwrap(),
    );
    let code = env.sms.last_code();
    expect_authenticated(env.submit(&next.login, 2, &[("passcode", &code)]).unwrap());
    let text = env.wait_for_log("Code sent to +44******0123");
    let mut logins = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        for field in ["time", "level", "source", "acr", "login", "message"] {
            assert!(value.get(field).is_some(), "{field} missing: {line}");
        }
        if value["message"] == "OTP. Code sent to +44******0123" {
            assert_eq!(value["source"], "script");
            assert_eq!(value["acr"], "sms_otp");
            logins.insert(value["login"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(logins.len(), 1, "one login id per sign-in");
    assert_log_clean(&env, &[&code, ALICE_PASSWORD, ALICE_PHONE]);
}

/// The dashboard and the alert rules name only metrics the server exports (a renamed metric
/// would leave a panel empty and an alert silent).
#[test]
fn monitoring_files_name_only_exported_metrics() {
    // One of everything, so that every family has a series to show.
    let metrics = gatehouse::base::metrics::Metrics::new();
    metrics.login("a", "success");
    metrics.code_check("a", "right");
    metrics.sms_send("p", "accepted", 0.1);
    metrics.sms_refused("budget");
    metrics.sms_delivery("p", "delivered");
    metrics.script_reload("a", true);
    metrics.hook("a", "authenticate", 0.001, true);
    let exported = metrics.render(&Snapshot {
        scripts: vec![("active", 1)],
        circuits: vec![("p".into(), "closed")],
        ..Snapshot::default()
    });
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/monitoring");
    let dashboard = std::fs::read_to_string(repo.join("grafana-dashboard.json")).unwrap();
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(!parsed["panels"].as_array().unwrap().is_empty());
    let alerts = std::fs::read_to_string(repo.join("alerts.yml")).unwrap();
    let named = regex::Regex::new(r"gatehouse_[a-z_]+").unwrap();
    let mut checked = 0;
    for text in [&dashboard, &alerts] {
        for found in named.find_iter(text) {
            let name = found.as_str();
            let family = ["_bucket", "_count", "_sum", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            let declared = format!("# TYPE {family} ");
            assert!(
                exported.lines().any(|l| l.starts_with(&declared)),
                "{name} is not exported:\n{exported}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");
    assert_eq!(alerts.matches("- alert: ").count(), 9);
}
