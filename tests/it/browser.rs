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

/// A WebDriver session with headless Chromium, phone-sized, its profile in `profile`.
async fn chromium(driver: &Chromedriver, profile: &Path) -> fantoccini::Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=420,860", format!("--user-data-dir={}", profile.display())]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

async fn click(client: &fantoccini::Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Signs in as alice on the password page.
async fn enter_alices_password(client: &fantoccini::Client) {
    appears(client, "#username")
        .await
        .send_keys("alice")
        .await
        .unwrap();
    appears(client, "#password")
        .await
        .send_keys(ALICE_PASSWORD)
        .await
        .unwrap();
    click(client, "button[type=submit]").await;
}

/// The element once it is on the page (WebDriver's wait).
async fn appears(client: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    client.wait().for_element(Locator::Css(css)).await.unwrap()
}

async fn screenshot(client: &fantoccini::Client, dir: &Path, name: &str) {
    save(dir, name, &client.screenshot().await.unwrap());
}

/// Waits (at most 15 s) until the browser is at `path`; the URL it ended at.
async fn wait_for_path(client: &fantoccini::Client, path: &str) -> url::Url {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let url = client.current_url().await.unwrap();
        if url.path() == path || std::time::Instant::now() > deadline {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One browser test: a deployment serving HTTP with an application (a mock HTTP server)
/// registered as client `browser-app`, chromedriver, and a folder for screenshots.
struct BrowserRun {
    env: TestEnv,
    callback: String,
    shots: PathBuf,
    driver: Chromedriver,
    profile: tempfile::TempDir,
    #[allow(dead_code)] // held for its Drop: the application stops with the run
    application: MockServer,
}

impl BrowserRun {
    fn new(scripts: Vec<ScriptSpec>) -> BrowserRun {
        let application = MockServer::sequence(vec![MockResponse::text(
            200,
            "<html><title>App</title>signed in</html>",
        )
        .with_header("Content-Type", "text/html")]);
        let callback = format!("{}/callback", application.url());
        let env = TestEnv::with_options(
            scripts,
            EnvOptions {
                web: true,
                extra_config: format!("[[clients]]\nclient_id = \"browser-app\"\nclient_secret = \"browser-secret\"\nredirect_uris = [{callback:?}]\nrequire_pkce = false\n"),
                ..EnvOptions::default()
            },
        );
        let shots = env.root().join("screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        BrowserRun {
            env,
            callback,
            shots,
            driver: start_chromedriver(),
            profile: tempfile::tempdir().unwrap(),
            application,
        }
    }

    /// Opens the application's authorization request for acr sms_otp in Chromium, then runs
    /// `steps`; the URL they end at.
    fn drive<F, Fut>(&self, steps: F) -> url::Url
    where
        F: FnOnce(fantoccini::Client) -> Fut,
        Fut: std::future::Future<Output = url::Url>,
    {
        let authorize = format!(
            "{}/authorize?client_id=browser-app&redirect_uri={}&response_type=code&scope=openid&state=br-1&acr_values=sms_otp",
            self.env.base.as_ref().unwrap(),
            url::form_urlencoded::byte_serialize(self.callback.as_bytes()).collect::<String>()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = chromium(&self.driver, self.profile.path()).await;
            client.goto(&authorize).await.unwrap();
            steps(client).await
        })
    }
}

#[test]
fn headless_chromium_logs_in_to_the_demo_flow() {
    let run = BrowserRun::new(vec![script("sms_otp", shipped_script())]);
    let (env, shots, callback) = (&run.env, &run.shots, &run.callback);
    let landed = run.drive(|client| async move {
        appears(&client, "#username").await;
        screenshot(&client, shots, "1-password.png").await;
        enter_alices_password(&client).await;
        let passcode = appears(&client, "#passcode").await;
        assert_eq!(
            passcode.attr("autocomplete").await.unwrap().as_deref(),
            Some("one-time-code")
        );
        assert_eq!(
            passcode.attr("inputmode").await.unwrap().as_deref(),
            Some("numeric")
        );
        let body = client
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("+44******0123"), "{body}");
        screenshot(&client, shots, "2-passcode.png").await;
        passcode.send_keys("000000").await.unwrap();
        click(&client, "button[type=submit]").await;
        let message = appears(&client, "#message").await;
        assert!(message.text().await.unwrap().contains("Wrong code"));
        screenshot(&client, shots, "3-wrong-code.png").await;
        let passcode = client.find(Locator::Css("#passcode")).await.unwrap();
        passcode.send_keys(&env.sms.last_code()).await.unwrap();
        click(&client, "button[type=submit]").await;
        let landed = wait_for_path(&client, "/callback").await;
        screenshot(&client, shots, "4-application.png").await;
        client.close().await.unwrap();
        landed
    });
    assert!(landed.as_str().starts_with(callback.as_str()), "{landed}");
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

#[test]
fn headless_chromium_signs_in_with_a_mobile_number_alone() {
    let run = BrowserRun::new(vec![script("sms_otp", shipped_script())
        .with("[scripts.properties]\nSendOTPDirectlyToMobile = \"true\"")]);
    let (env, shots, callback) = (&run.env, &run.shots, &run.callback);
    let landed = run.drive(|client| async move {
        let mobile = appears(&client, "#mobile").await;
        assert_eq!(mobile.attr("type").await.unwrap().as_deref(), Some("tel"));
        screenshot(&client, shots, "1-login-or-mobile.png").await;
        mobile.send_keys("+44 7700 900456").await.unwrap();
        click(&client, "form[aria-labelledby=by-mobile] button").await;
        let passcode = appears(&client, "#passcode").await;
        let body = client
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("+44******0456"), "{body}");
        screenshot(&client, shots, "2-passcode.png").await;
        passcode.send_keys(&env.sms.last_code()).await.unwrap();
        click(&client, "button[type=submit]").await;
        let landed = wait_for_path(&client, "/callback").await;
        client.close().await.unwrap();
        landed
    });
    assert!(landed.as_str().starts_with(callback.as_str()), "{landed}");
    assert_eq!(env.sms.last().0, "+447700900456");
    for shot in ["1-login-or-mobile.png", "2-passcode.png"] {
        assert!(
            std::fs::metadata(shots.join(shot)).unwrap().len() > 1000,
            "{shot}"
        );
    }
}

/// A double click on the passcode page (two clicks a few milliseconds apart, the first answer
/// still on its way): the form is sent once and the user lands at the application, not on the
/// page the second, duplicate answer would have been.
#[test]
fn a_double_click_on_the_passcode_page_lands_at_the_application() {
    let run = BrowserRun::new(vec![script("sms_otp", shipped_script())]);
    let env = &run.env;
    let landed = run.drive(|client| async move {
        enter_alices_password(&client).await;
        let passcode = appears(&client, "#passcode").await;
        passcode.send_keys(&env.sms.last_code()).await.unwrap();
        client
            .execute(
                "const button = document.querySelector('form[action=\"/login\"] button[type=submit]');
                 button.click();
                 setTimeout(() => button.click(), 5);
                 return true;",
                vec![],
            )
            .await
            .unwrap();
        let landed = wait_for_path(&client, "/callback").await;
        client.close().await.unwrap();
        landed
    });
    assert_eq!(landed.path(), "/callback", "{landed}");
    assert!(
        landed
            .query_pairs()
            .any(|(k, v)| k == "code" && v.len() == 64),
        "{landed}"
    );
    let log = env.wait_for_log("authenticated user alice");
    assert_eq!(
        log.matches("step 2 ").count(),
        1,
        "one answer posted:\n{log}"
    );
}
