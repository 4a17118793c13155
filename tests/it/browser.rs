//! A real browser: headless Chromium driven through chromedriver (WebDriver) logs in to the shipped
//! demo flow, from `/authorize` to the application's redirect, without JavaScript of ours.
//! Screenshots of each page land in the test's temp dir (and in $GATEHOUSE_SCREENSHOTS if set).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};

use crate::support::mock_http::{MockResponse, MockServer};
use crate::support::*;

struct Chromedriver {
    child: Child,
    port: u16,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_chromedriver() -> Chromedriver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is needed for the browser test: apt-get install chromium chromium-driver (.ci/run does)");
    let driver = Chromedriver { child, port };
    let up = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "chromedriver did not start on port {port}");
    driver
}

fn save(dir: &Path, name: &str, png: &[u8]) {
    std::fs::write(dir.join(name), png).unwrap();
    if let Ok(extra) = std::env::var("GATEHOUSE_SCREENSHOTS") {
        let _ = std::fs::create_dir_all(&extra);
        let _ = std::fs::write(PathBuf::from(extra).join(name), png);
    }
}

#[test]
fn headless_chromium_logs_in_to_the_demo_flow() {
    let application = MockServer::sequence(vec![MockResponse::text(
        200,
        "<html><title>App</title>signed in</html>",
    )
    .with_header("Content-Type", "text/html")]);
    let callback = format!("{}/callback", application.url());
    let env = TestEnv::with_options(
        vec![script("sms_otp", &shipped_script()).with("amr = [\"pwd\", \"sms\", \"mfa\"]")],
        EnvOptions {
            web: true,
            extra_config: format!("[[clients]]\nclient_id = \"browser-app\"\nclient_secret = \"browser-secret\"\nredirect_uris = [{callback:?}]\nrequire_pkce = false\n"),
            ..EnvOptions::default()
        },
    );
    let shots = env.root().join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = env.base.clone().unwrap();
    let authorize = format!(
        "{base}/authorize?client_id=browser-app&redirect_uri={}&response_type=code&scope=openid&state=br-1&acr_values=sms_otp",
        url::form_urlencoded::byte_serialize(callback.as_bytes()).collect::<String>()
    );
    let driver = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let landed = runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=420,860", format!("--user-data-dir={}", profile.path().display())]
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session");
        client.goto(&authorize).await.unwrap();
        let username = client.wait().for_element(Locator::Css("#username")).await.unwrap();
        save(&shots, "1-password.png", &client.screenshot().await.unwrap());
        username.send_keys("alice").await.unwrap();
        client.find(Locator::Css("#password")).await.unwrap().send_keys(ALICE_PASSWORD).await.unwrap();
        client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
        let passcode = client.wait().for_element(Locator::Css("#passcode")).await.unwrap();
        assert_eq!(passcode.attr("autocomplete").await.unwrap().as_deref(), Some("one-time-code"));
        assert_eq!(passcode.attr("inputmode").await.unwrap().as_deref(), Some("numeric"));
        let body = client.find(Locator::Css("body")).await.unwrap().text().await.unwrap();
        assert!(body.contains("+44******0123"), "{body}");
        save(&shots, "2-passcode.png", &client.screenshot().await.unwrap());
        passcode.send_keys("000000").await.unwrap();
        client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
        let message = client.wait().for_element(Locator::Css("#message")).await.unwrap();
        assert!(message.text().await.unwrap().contains("Wrong code"));
        save(&shots, "3-wrong-code.png", &client.screenshot().await.unwrap());
        let passcode = client.find(Locator::Css("#passcode")).await.unwrap();
        passcode.send_keys(&env.sms.last_code()).await.unwrap();
        client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let landed = loop {
            let url = client.current_url().await.unwrap();
            if url.path() == "/callback" || std::time::Instant::now() > deadline {
                break url;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        save(&shots, "4-application.png", &client.screenshot().await.unwrap());
        client.close().await.unwrap();
        landed
    });
    assert!(landed.as_str().starts_with(&callback), "{landed}");
    let pairs: Vec<(String, String)> = landed.query_pairs().into_owned().collect();
    assert!(
        pairs.iter().any(|(k, v)| k == "state" && v == "br-1"),
        "{landed}"
    );
    assert!(
        pairs.iter().any(|(k, v)| k == "code" && v.len() == 64),
        "{landed}"
    );
    for shot in [
        "1-password.png",
        "2-passcode.png",
        "3-wrong-code.png",
        "4-application.png",
    ] {
        assert!(
            std::fs::metadata(shots.join(shot)).unwrap().len() > 1000,
            "{shot}"
        );
    }
}
