//! `gatehouse test`: script tests that run offline, before a save goes live. A test file
//! (`scripts/tests/*.toml`, format in scripts/README.md) describes sign-ins: the users, the
//! entry's properties, the fields submitted at each step, fake answers for `http::`, and what
//! each step must show. Each test runs on the real host (sandbox, policies, limits) with its own
//! user file, an in-memory store, every SMS captured and no network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::base::password::hash_password;
use crate::base::{random, Secret};
use crate::config::{Config, ConfigError};
use crate::flow::params::RequestParams;
use crate::flow::{LoginHandle, StepOutcome, StepPage};
use crate::outbound::{CannedAnswer, CannedAnswers, Method, OutboundResponse};
use crate::sms::CapturingSms;

use super::{Builder, Mode};

#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{path}: cannot read: {reason}")]
    Read {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(rename = "test")]
    tests: Vec<TestCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    acr: String,
    /// Added to (or replacing) the entry's properties.
    #[serde(default)]
    properties: BTreeMap<String, String>,
    /// The directory of this test: user name to attributes; `password` is hashed by the runner.
    #[serde(default)]
    users: BTreeMap<String, BTreeMap<String, OneOrMany>>,
    #[serde(default)]
    http: Vec<FakeHttp>,
    /// The client address and languages every step's request comes with.
    #[serde(default)]
    client_ip: Option<String>,
    #[serde(default)]
    accept_language: Option<String>,
    steps: Vec<TestStep>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FakeHttp {
    #[serde(default = "post")]
    method: String,
    /// Requests whose URL starts with this get the answer.
    url: String,
    #[serde(default = "ok_status")]
    status: u16,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn post() -> String {
    "POST".into()
}

fn ok_status() -> u16 {
    200
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Expect {
    /// The step passed and a next step is shown.
    Passed,
    /// The same step is shown again.
    Failed,
    /// The sign-in is complete.
    Authenticated,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expect::Passed => "passed",
            Expect::Failed => "failed",
            Expect::Authenticated => "authenticated",
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestStep {
    /// The fields submitted; `{code}` is the code of the last SMS sent.
    #[serde(default)]
    submit: BTreeMap<String, String>,
    /// Press "Send a new code" instead of submitting the step.
    #[serde(default)]
    resend: bool,
    expect: Expect,
    /// The page shown after this step (`login` is the username/password page).
    #[serde(default)]
    page: Option<String>,
    /// The step number shown after this step (a jump, a return to step 1...).
    #[serde(default)]
    step: Option<u32>,
    /// Text the page's message must contain.
    #[serde(default)]
    message: Option<String>,
    /// The SMS this step must have sent (the last one, if several).
    #[serde(default)]
    sms: Option<ExpectedSms>,
    /// This step must send no SMS.
    #[serde(default)]
    no_sms: bool,
    /// For `authenticated`: the subject and the ID token's `amr`.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    amr: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedSms {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    contains: Option<String>,
}

/// One test's result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub file: String,
    pub name: String,
    /// `None`: passed; else what failed, naming the step and the expectation.
    pub failure: Option<String>,
}

impl std::fmt::Display for TestResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.failure {
            None => write!(f, "ok   {}: {}", self.file, self.name),
            Some(why) => write!(f, "FAIL {}: {}: {why}", self.file, self.name),
        }
    }
}

/// The test files of a deployment: `scripts/tests/*.toml` under its scripts directory.
pub fn default_files(config_path: &Path) -> Result<Vec<PathBuf>, TestFileError> {
    let config = Config::load(config_path)?;
    let dir = config.paths.scripts_dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    Ok(files)
}

/// Runs every test of `files` against the deployment of `config_path`.
pub fn run(config_path: &Path, files: &[PathBuf]) -> Result<Vec<TestResult>, TestFileError> {
    let config = Config::load(config_path)?;
    let mut results = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|reason| TestFileError::Read {
            path: file.clone(),
            reason,
        })?;
        let parsed: TestFile = toml::from_str(&text).map_err(|e| TestFileError::Parse {
            path: file.clone(),
            message: e.to_string().replace('\n', " "),
        })?;
        for test in parsed.tests {
            let failure = run_one(config_path, &config, &test).err();
            results.push(TestResult {
                file: file.display().to_string(),
                name: test.name,
                failure,
            });
        }
    }
    Ok(results)
}

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Result<Scratch, String> {
    let name = format!(
        "gatehouse-test-{}",
        random::hex_token(8).map_err(|e| e.to_string())?
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| e.to_string())?;
    Ok(Scratch(dir))
}

fn users_file(users: &BTreeMap<String, BTreeMap<String, OneOrMany>>) -> Result<String, String> {
    let mut file = toml::Table::new();
    let mut all = toml::Table::new();
    for (name, attributes) in users {
        let mut record = toml::Table::new();
        let mut rest = toml::Table::new();
        for (attribute, value) in attributes {
            let value = match value {
                OneOrMany::One(v) => toml::Value::String(v.clone()),
                OneOrMany::Many(vs) => {
                    toml::Value::Array(vs.iter().cloned().map(toml::Value::String).collect())
                }
            };
            if attribute == "password" {
                let plain = value.as_str().unwrap_or_default();
                let phc = hash_password(&Secret::new(plain)).map_err(|e| e.to_string())?;
                record.insert("password".into(), toml::Value::String(phc));
            } else {
                rest.insert(attribute.clone(), value);
            }
        }
        record.insert("attributes".into(), toml::Value::Table(rest));
        all.insert(name.clone(), toml::Value::Table(record));
    }
    file.insert("users".into(), toml::Value::Table(all));
    toml::to_string(&file).map_err(|e| e.to_string())
}

fn fake_answers(http: &[FakeHttp]) -> Result<CannedAnswers, String> {
    let answers = http
        .iter()
        .map(|fake| {
            let method = Method::parse(&fake.method).ok_or_else(|| {
                format!(
                    "http: method {:?} is not GET, POST, PUT, PATCH or DELETE",
                    fake.method
                )
            })?;
            Ok(CannedAnswer {
                method,
                url_prefix: fake.url.clone(),
                response: OutboundResponse {
                    status: fake.status,
                    headers: fake
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect(),
                    body: fake.body.clone(),
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CannedAnswers::new(answers))
}

/// The code of an SMS: after the WebOTP `#` when there is one, else its last run of 4+ digits.
fn code_of(text: &str) -> Option<String> {
    if let Some((_, code)) = text.rsplit_once('#') {
        return Some(code.trim().to_owned());
    }
    text.split(|c: char| !c.is_ascii_digit())
        .rfind(|w| w.len() >= 4)
        .map(str::to_owned)
}

fn run_one(config_path: &Path, config: &Config, test: &TestCase) -> Result<(), String> {
    let scratch = scratch()?;
    let users_path = scratch.0.join("users.toml");
    std::fs::write(&users_path, users_file(&test.users)?).map_err(|e| e.to_string())?;
    let mut config = config.clone();
    config.paths.users_file = users_path;
    config.paths.log_dir = scratch.0.join("logs");
    config.log.console = false;
    config.login.default_acr = Some(test.acr.clone());
    let mut found = false;
    for entry in &mut config.scripts {
        let tested = entry.acr == test.acr;
        found |= tested;
        entry.enabled = tested;
        if tested {
            entry.properties.extend(test.properties.clone());
            entry.resolve();
        }
    }
    if !found {
        return Err(format!("no [[scripts]] entry has acr {:?}", test.acr));
    }
    let sms = Arc::new(CapturingSms::default());
    let app = Builder::new(config_path)
        .config(config)
        .mode(Mode::Test)
        .sms(sms.clone())
        .http_answers(fake_answers(&test.http)?)
        .console_log(false)
        .build()
        .map_err(|e| e.to_string())?;
    let summary = app.load_scripts();
    if let Some((_, why)) = summary.refused.first() {
        return Err(format!("the script does not load: {why}"));
    }
    let page = app
        .engine
        .start(Some(&test.acr))
        .map_err(|e| format!("the sign-in does not start: {e}"))?;
    let mut login: LoginHandle = page.login.clone();
    let mut current: StepPage = page;
    for (index, step) in test.steps.iter().enumerate() {
        let number = index + 1;
        let at = |what: String| format!("step {number}: {what}");
        let sent_before = sms.messages().len();
        let last_code = sms.messages().last().and_then(|(_, text)| code_of(text));
        let mut fields: Vec<(String, String)> = Vec::new();
        for (name, value) in &step.submit {
            let value = if value.contains("{code}") {
                let code = last_code
                    .clone()
                    .ok_or_else(|| at("{code} is used but no SMS with a code was sent".into()))?;
                value.replace("{code}", &code)
            } else {
                value.clone()
            };
            fields.push((name.clone(), value));
        }
        let params = RequestParams::from_pairs(fields)
            .with_client_ip(test.client_ip.as_deref().and_then(|ip| ip.parse().ok()))
            .with_accept_language(test.accept_language.clone());
        let outcome = if step.resend {
            app.engine.resend(&login, &params)
        } else {
            app.engine.submit(&login, current.step, &params)
        }
        .map_err(|e| at(format!("the host refused the step: {e}")))?;
        let (got, page) = match outcome {
            StepOutcome::Next(page) => (Expect::Passed, Some(page)),
            StepOutcome::Retry(page) => (Expect::Failed, Some(page)),
            StepOutcome::Authenticated(done) => {
                if step.expect != Expect::Authenticated {
                    return Err(at(format!(
                        "expected {}, but the sign-in completed as {}",
                        step.expect, done.user
                    )));
                }
                if let Some(user) = &step.user {
                    if &done.user != user {
                        return Err(at(format!("expected user {user:?}, got {:?}", done.user)));
                    }
                }
                if let Some(amr) = &step.amr {
                    if &done.amr != amr {
                        return Err(at(format!("expected amr {amr:?}, got {:?}", done.amr)));
                    }
                }
                (Expect::Authenticated, None)
            }
        };
        if got != step.expect {
            let said = page
                .as_ref()
                .and_then(|p| p.message.clone())
                .map(|m| format!(" (message: {m:?})"))
                .unwrap_or_default();
            return Err(at(format!("expected {}, got {got}{said}", step.expect)));
        }
        let sent = &sms.messages()[sent_before..];
        if step.no_sms && !sent.is_empty() {
            return Err(at(format!("expected no SMS, {} were sent", sent.len())));
        }
        if let Some(expected) = &step.sms {
            let Some((to, text)) = sent.last() else {
                return Err(at("expected an SMS, none was sent".into()));
            };
            if let Some(number) = &expected.to {
                if to != number {
                    return Err(at(format!("expected an SMS to {number}, it went to {to}")));
                }
            }
            if let Some(part) = &expected.contains {
                if !text.contains(part.as_str()) {
                    return Err(at(format!(
                        "expected the SMS to contain {part:?}: {text:?}"
                    )));
                }
            }
        }
        if let Some(page) = page {
            let name = if page.page.is_empty() {
                "login"
            } else {
                page.page.as_str()
            };
            if let Some(expected) = &step.page {
                if expected != name {
                    return Err(at(format!("expected page {expected:?}, got {name:?}")));
                }
            }
            if let Some(expected) = step.step {
                if expected != page.step {
                    return Err(at(format!(
                        "expected step {expected}, got step {}",
                        page.step
                    )));
                }
            }
            if let Some(part) = &step.message {
                let message = page.message.clone().unwrap_or_default();
                if !message.contains(part.as_str()) {
                    return Err(at(format!(
                        "expected the message to contain {part:?}, got {message:?}"
                    )));
                }
            }
            login = page.login.clone();
            current = page;
        } else if index + 1 < test.steps.len() {
            return Err(at(
                "the sign-in completed, but the test has more steps".into()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{code_of, TestFile};

    /// The format shown in scripts/README.md is the format read here.
    #[test]
    fn the_documented_test_file_parses() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/README.md"),
        )
        .unwrap();
        let start = readme
            .find("## Testing a script before it goes live")
            .unwrap();
        let block = &readme[start..];
        let toml_text = &block[block.find("```toml\n").unwrap() + 8..];
        let toml_text = &toml_text[..toml_text.find("```").unwrap()];
        let file: TestFile = toml::from_str(toml_text).unwrap();
        assert_eq!(file.tests[0].steps.len(), 2);
        assert_eq!(file.tests[0].http.len(), 1);
    }

    #[test]
    fn codes_come_from_the_webotp_line_or_the_last_number() {
        assert_eq!(
            code_of("Your code is 123456.\n\n@h #123456").as_deref(),
            Some("123456")
        );
        assert_eq!(
            code_of("Code 4242 expires in 5 minutes").as_deref(),
            Some("4242")
        );
        assert_eq!(code_of("no code"), None);
    }
}
