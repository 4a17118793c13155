//! The LDAP user directory against a real OpenLDAP (`slapd`) with the shipped schema, a service
//! account and three users: reads, password binds, writes as the service account (and what
//! `ldapsearch` sees of them), TLS, sign-ins with the shipped scripts on LDAP + Redis through a
//! real relying-party library, and an LDAP outage that ends without a restart.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::base::Secret;
use gatehouse::ports::{AttributeChange, DirectoryError, StateStore, UserDirectory};
use gatehouse::users::{LdapDirectory, LdapSettings};

use crate::redis_store::RedisServer;
use crate::support::ldap::*;
use crate::support::web::{location, stayed, WebLogin};
use crate::support::*;

fn settings(url: &str) -> LdapSettings {
    LdapSettings {
        url: url.to_owned(),
        starttls: false,
        ca_pem: None,
        bind_dn: SERVICE_DN.into(),
        bind_password: Secret::new(SERVICE_PASSWORD),
        base_dn: PEOPLE_DN.into(),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={username}))".into(),
        username_attribute: "uid".into(),
        timeout: Duration::from_millis(1000),
        max_connections: 4,
    }
}

fn password(text: &str) -> Secret {
    Secret::new(text)
}

#[test]
fn reads_checks_passwords_by_binding_and_writes_as_the_service_account() {
    let ldap = LdapServer::start();
    let directory = LdapDirectory::new(settings(&ldap.url())).unwrap();
    directory.check().unwrap();

    // Multi-valued attributes; the password is never read.
    let alice = directory.find("alice").unwrap().unwrap();
    assert_eq!(alice.username, "alice");
    assert_eq!(alice.first("phoneNumberVerified"), Some(ALICE_PHONE));
    assert_eq!(alice.attributes["mail"].len(), 2);
    assert!(alice
        .attributes
        .keys()
        .all(|name| !name.eq_ignore_ascii_case("userPassword")));
    // The name as the directory keeps it, whatever the case typed.
    assert_eq!(directory.find("ALICE").unwrap().unwrap().username, "alice");
    assert!(directory.find("dave").unwrap().is_none());
    // Filter metacharacters are escaped (RFC 4515): no wildcard or injected clause matches.
    let long = "a".repeat(100_000);
    for hostile in [
        "*",
        "al*",
        "alice)(uid=*",
        "*)(|(uid=*",
        "alice\\",
        "\0",
        &long,
    ] {
        assert!(directory.find(hostile).unwrap().is_none(), "{hostile:?}");
        assert!(!directory
            .verify_password(hostile, &password(ALICE_PASSWORD))
            .unwrap());
    }
    let bob = directory.find_by_attribute("mobile", BOB_MOBILE).unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].username, "bob");
    assert!(directory
        .find_by_attribute("mobile", "*")
        .unwrap()
        .is_empty());
    assert!(directory
        .find_by_attribute("mobile", &"9".repeat(100_000))
        .unwrap()
        .is_empty());
    assert!(matches!(
        directory.find_by_attribute("mobile)(uid=*", "x"),
        Err(DirectoryError::BadAttributeName(_))
    ));

    // Passwords: by binding as the user. Unknown user and wrong password answer alike; an
    // empty password (an anonymous bind to LDAP) is never accepted.
    assert!(directory
        .verify_password("alice", &password(ALICE_PASSWORD))
        .unwrap());
    assert!(directory
        .verify_password("Alice", &password(ALICE_PASSWORD))
        .unwrap());
    assert!(!directory
        .verify_password("alice", &password("nope"))
        .unwrap());
    assert!(!directory
        .verify_password("dave", &password(ALICE_PASSWORD))
        .unwrap());
    assert!(!directory.verify_password("alice", &password("")).unwrap());
    // The service connections stay the service account's after user binds.
    assert!(directory.find("bob").unwrap().is_some());

    // Writes, as the service account. bob's entry has no class allowing Gatehouse's
    // attributes: it gets gatehouseUser in the same change.
    directory
        .update(
            "bob",
            AttributeChange::Replace {
                attribute: "gatehouseSmsFactor".into(),
                values: vec![r#"{"failures":2}"#.into()],
            },
        )
        .unwrap();
    assert_eq!(
        ldap.values("bob", "gatehouseSmsFactor"),
        [r#"{"failures":2}"#]
    );
    assert!(ldap
        .values("bob", "objectClass")
        .contains(&"gatehouseUser".to_owned()));
    directory
        .update(
            "bob",
            AttributeChange::Replace {
                attribute: "oxMobileDevices".into(),
                values: vec![r#"{"phones":[{"number":"+12025550143"}]}"#.into()],
            },
        )
        .unwrap();
    assert_eq!(ldap.values("bob", "oxMobileDevices").len(), 1);
    // Adding a value that is there and removing one that is not are no-ops, as in the file.
    for _ in 0..2 {
        directory
            .update(
                "alice",
                AttributeChange::Add {
                    attribute: "mail".into(),
                    value: "third@example.org".into(),
                },
            )
            .unwrap();
    }
    assert_eq!(ldap.values("alice", "mail").len(), 3);
    for _ in 0..2 {
        directory
            .update(
                "alice",
                AttributeChange::Remove {
                    attribute: "mail".into(),
                    value: "alice@example.org".into(),
                },
            )
            .unwrap();
    }
    assert_eq!(
        ldap.values("alice", "mail"),
        ["a.liddell@example.org", "third@example.org"]
    );
    // A single-use value is taken once, however many ask for it at once.
    let codes: Vec<String> = (0..3).map(|i| format!("$argon2id$code-{i}")).collect();
    directory
        .update(
            "alice",
            AttributeChange::Replace {
                attribute: "gatehouseBackupCodes".into(),
                values: codes.clone(),
            },
        )
        .unwrap();
    let taken: Vec<bool> = std::thread::scope(|s| {
        let racing: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    directory
                        .update(
                            "alice",
                            AttributeChange::remove("gatehouseBackupCodes", &codes[1]),
                        )
                        .unwrap()
                })
            })
            .collect();
        racing.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(taken.iter().filter(|&&t| t).count(), 1, "{taken:?}");
    let mut left = ldap.values("alice", "gatehouseBackupCodes");
    left.sort();
    assert_eq!(left, [codes[0].as_str(), codes[2].as_str()]);
    directory
        .update(
            "alice",
            AttributeChange::Replace {
                attribute: "gatehouseBackupCodes".into(),
                values: vec![],
            },
        )
        .unwrap();
    for protected in ["userPassword", "password"] {
        assert!(matches!(
            directory.update(
                "alice",
                AttributeChange::Replace {
                    attribute: protected.into(),
                    values: vec!["x".into()]
                }
            ),
            Err(DirectoryError::ProtectedAttribute(_))
        ));
    }
    assert!(matches!(
        directory.update(
            "dave",
            AttributeChange::Add {
                attribute: "mail".into(),
                value: "d@example.org".into()
            }
        ),
        Err(DirectoryError::NoSuchUser(_))
    ));
}

#[test]
fn starttls_and_ldaps_verify_the_server_against_the_ca_file() {
    let ldap = LdapServer::start_with_tls();
    let ca = std::fs::read(ldap.ca_file()).unwrap();
    let starttls = LdapDirectory::new(LdapSettings {
        starttls: true,
        ca_pem: Some(ca.clone()),
        ..settings(&ldap.url())
    })
    .unwrap();
    assert!(starttls
        .verify_password("alice", &password(ALICE_PASSWORD))
        .unwrap());
    let ldaps_url = format!("ldaps://127.0.0.1:{}", ldap.tls_port.unwrap());
    let ldaps = LdapDirectory::new(LdapSettings {
        ca_pem: Some(ca),
        ..settings(&ldaps_url)
    })
    .unwrap();
    assert_eq!(ldaps.find("bob").unwrap().unwrap().username, "bob");
    // Without the CA the server's certificate is not trusted: nothing is sent.
    let untrusted = LdapDirectory::new(settings(&ldaps_url)).unwrap();
    let error = untrusted.find("bob").unwrap_err();
    assert!(matches!(error, DirectoryError::Unavailable(_)), "{error}");
    // A CA file that holds no certificate is refused at start.
    assert!(LdapDirectory::new(LdapSettings {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..settings(&ldaps_url)
    })
    .is_err());
}

/// A deployment on OpenLDAP and Redis: `sms_otp` reads phoneNumberVerified (alice), `sms_mobile`
/// (the same script, `phone_attribute = "mobile"`) reads the standard attribute (bob).
fn ldap_env(ldap: &LdapServer, store: Arc<dyn StateStore>, properties: &str) -> TestEnv {
    web_env(
        vec![
            script("sms_otp", shipped_script())
                .with(&format!("[scripts.properties]\n{properties}")),
            script("sms_mobile", shipped_script())
                .with("[scripts.properties]\nphone_attribute = \"mobile\""),
        ],
        EnvOptions {
            store: Some(store),
            otp: "code_key = \"an-ldap-test-code-key-of-32-chars!!\"".into(),
            extra_config: ldap.directory_config(),
            ..EnvOptions::default()
        },
    )
}

#[test]
fn shipped_scripts_sign_in_ldap_users_through_a_relying_party_on_redis() {
    let ldap = LdapServer::start();
    let redis = RedisServer::start();
    let env = ldap_env(&ldap, Arc::new(redis.store("ldap1:")), "");
    crate::oidc_e2e::relying_party_login(&env, "sms_otp", || env.sms.last_code());

    // bob's number is in `mobile`; he types his name in capitals and is bob all the same.
    let login = env.web_login(Some("sms_mobile"));
    assert_eq!(location(&login.password("BOB", ALICE_PASSWORD)), "/login");
    assert_eq!(env.sms.last().0, BOB_MOBILE);
    let claims = login.finish(login.passcode(&env.sms.last_code()));
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["acr"], "sms_mobile");
    assert_log_clean(
        &env,
        &[&env.sms.last_code(), ALICE_PASSWORD, SERVICE_PASSWORD],
    );
}

#[test]
fn wrong_password_and_unknown_user_look_the_same_on_ldap() {
    let ldap = LdapServer::start();
    let redis = RedisServer::start();
    let env = ldap_env(&ldap, Arc::new(redis.store("ldap2:")), "");
    let answer_for = |username: &str| {
        let login = env.web_login(None);
        let answer = login.password(username, "not-the-password");
        let status = answer.status();
        let target = location(&answer);
        let page = login.page();
        let message = page
            .split("class=\"message")
            .nth(1)
            .map(|m| m.split('<').next().unwrap_or("").to_owned());
        (status, target, message)
    };
    let wrong = answer_for("alice");
    assert!(wrong.2.is_some(), "a message is shown");
    assert_eq!(wrong, answer_for("nobody-here"));
    assert_eq!(env.sms.count(), 0);
}

#[test]
fn a_captured_number_is_written_to_ldap_once_verified() {
    let ldap = LdapServer::start();
    let redis = RedisServer::start();
    let env = ldap_env(
        &ldap,
        Arc::new(redis.store("ldap3:")),
        "CaptureAndUpdateMobileNumber = \"true\"",
    );
    let login = env.web_login(None);
    assert_eq!(location(&login.password("carol", ALICE_PASSWORD)), "/login");
    assert!(login.page().contains("Add your mobile number"));
    assert_eq!(
        location(&login.submit(&[("mobile", "+44 7700 900456")])),
        "/login"
    );
    assert!(
        ldap.values("carol", "phoneNumberVerified").is_empty(),
        "not saved before the code is verified"
    );
    let claims = login.finish(login.passcode(&env.sms.last_code()));
    assert_eq!(claims["sub"], "carol");
    assert_eq!(
        ldap.values("carol", "phoneNumberVerified"),
        ["+447700900456"]
    );
}

#[test]
fn an_ldap_outage_answers_503_and_ends_by_itself() {
    let mut ldap = LdapServer::start();
    let redis = RedisServer::start();
    let env = ldap_env(&ldap, Arc::new(redis.store("ldap4:")), "");
    let base = env.base.clone().unwrap();
    let login = env.web_login(None);
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    login.finish(login.passcode(&env.sms.last_code()));

    ldap.stop();
    let login = env.web_login(None);
    let answer = login.password("alice", ALICE_PASSWORD);
    assert_eq!(answer.status(), 503);
    let page = answer.text().unwrap();
    assert!(page.contains("temporarily unavailable"), "{page}");
    assert!(!page.contains("ldap"), "no detail for the user: {page}");
    let health = WebLogin::new(&base).get(&format!("{base}/health"));
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().unwrap();
    assert_eq!(health["status"], "unavailable");
    assert!(
        health["directory_error"]
            .as_str()
            .unwrap()
            .starts_with("user directory unavailable: LDAP ldap://127.0.0.1"),
        "{health}"
    );

    // The same sign-in goes on once slapd is back: no restart of Gatehouse.
    ldap.run();
    assert_eq!(
        WebLogin::new(&base).get(&format!("{base}/health")).status(),
        200
    );
    let answer = login.password("alice", ALICE_PASSWORD);
    assert!(
        stayed(&answer) || answer.status() == 303,
        "{}",
        answer.status()
    );
    assert_eq!(location(&answer), "/login");
    login.finish(login.passcode(&env.sms.last_code()));
}

#[test]
fn a_directory_that_does_not_answer_is_unavailable_within_the_timeout() {
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ldap://{}", silent.local_addr().unwrap());
    let directory = LdapDirectory::new(LdapSettings {
        timeout: Duration::from_millis(300),
        ..settings(&url)
    })
    .unwrap();
    let started = std::time::Instant::now();
    let error = directory
        .verify_password("alice", &password(ALICE_PASSWORD))
        .unwrap_err();
    assert!(matches!(error, DirectoryError::Unavailable(_)), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(directory.check().is_err());
}

/// The two schema files say the same, and slapd accepts the slapd.conf one (the cn=config one
/// is what every test server above is built from).
#[test]
fn the_shipped_schema_loads_in_both_formats() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ldap");
    let names = |text: &str| {
        let mut names: Vec<String> = text
            .split("NAME '")
            .skip(1)
            .map(|rest| rest.split('\'').next().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let schema = std::fs::read_to_string(root.join("gatehouse.schema")).unwrap();
    let ldif = std::fs::read_to_string(root.join("gatehouse.ldif")).unwrap();
    assert_eq!(names(&schema), names(&ldif));
    for attribute in [
        "phoneNumberVerified",
        "oxMobileDevices",
        "gatehouseSmsDisabled",
        "gatehouseSmsFactor",
        "gatehouseBackupCodes",
        gatehouse::users::AUXILIARY_CLASS,
    ] {
        assert!(
            names(&schema).contains(&attribute.to_owned()),
            "{attribute}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("slapd.conf");
    std::fs::write(
        &conf,
        format!(
            "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\ninclude /etc/ldap/schema/inetorgperson.schema\ninclude {}\n",
            root.join("gatehouse.schema").display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(sbin("slaptest"))
        .arg("-u")
        .arg("-f")
        .arg(&conf)
        .output()
        .expect("slaptest (Debian package slapd)");
    assert!(output.status.success(), "{output:?}");
}

/// Password checks and lookups sent at once share a few connections and all get the right
/// answer: a bind as one user never answers for another.
#[test]
fn concurrent_checks_share_a_capped_pool_and_answer_each_user() {
    let ldap = LdapServer::start();
    let directory = Arc::new(LdapDirectory::new(settings(&ldap.url())).unwrap());
    std::thread::scope(|s| {
        for t in 0..24 {
            let directory = directory.clone();
            s.spawn(move || {
                for i in 0..4 {
                    let user = if (t + i) % 2 == 0 { "alice" } else { "bob" };
                    let right = (t + i) % 3 != 0;
                    let typed = if right { ALICE_PASSWORD } else { "wrong-one" };
                    assert_eq!(
                        directory.verify_password(user, &password(typed)).unwrap(),
                        right,
                        "{user} {typed}"
                    );
                    assert_eq!(directory.find(user).unwrap().unwrap().username, user);
                }
            });
        }
    });
}

/// `gatehouse users reset-sms` with the servers' config reaches their LDAP directory: an
/// operator's disable kept in the entry is removed, and the user signs in by SMS again.
#[test]
fn the_operator_reset_clears_a_disable_kept_in_ldap() {
    let ldap = LdapServer::start();
    let redis = RedisServer::start();
    let env = ldap_env(&ldap, Arc::new(redis.store("ldap5:")), "");
    LdapDirectory::new(settings(&ldap.url()))
        .unwrap()
        .update(
            "alice",
            AttributeChange::Replace {
                attribute: "gatehouseSmsDisabled".into(),
                values: vec!["true".into()],
            },
        )
        .unwrap();
    let login = env.web_login(None);
    login.password("alice", ALICE_PASSWORD);
    assert_eq!(env.sms.count(), 0, "no code for a disabled factor");

    let (ok, stdout) = operator_reset_sms(
        &env,
        "alice",
        &format!(
            "[store]\nbackend = \"redis\"\nurl = \"{}\"\nkey_prefix = \"ldap5:\"",
            redis.url()
        ),
    );
    assert!(ok, "{stdout}");
    assert!(
        ldap.values("alice", "gatehouseSmsDisabled").is_empty(),
        "{stdout}"
    );

    let login = env.web_login(None);
    assert_eq!(location(&login.password("alice", ALICE_PASSWORD)), "/login");
    login.finish(login.passcode(&env.sms.last_code()));
}
