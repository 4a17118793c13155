//! Script host benchmarks: one hook call, compiling the shipped script, a full two-step login
//! through the step engine (no password hash), and rename-to-serving reload latency.
//!
//! Run: `cargo bench --bench script_host`

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use gatehouse::config::SandboxConfig;
use gatehouse::flow::host::{HookContext, HookState};
use gatehouse::flow::params::RequestParams;
use gatehouse::flow::script_port::{HookCall, ScriptRuntime};
use gatehouse::flow::{LoginEngine, StepOutcome};
use gatehouse::ports::{SmsError, SmsMessage, SmsReceipt, SmsSender};
use gatehouse::script::sandbox::build_engine;
use gatehouse::{Builder, Gatehouse};

/// Keeps the last message so the login can read its code.
#[derive(Default)]
struct LastSms(Mutex<String>);

impl SmsSender for LastSms {
    fn provider(&self) -> &str {
        "bench"
    }
    fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, SmsError> {
        *self.0.lock().unwrap() = message.text.expose().to_owned();
        Ok(SmsReceipt {
            provider_message_id: None,
            sent_by: None,
        })
    }
}

/// Step 1 trusts the username (no argon2: its cost is reported separately), step 2 checks a code.
const NO_HASH_OTP: &str = r#"
const DIGITS = 6;
fn getCountAuthenticationSteps(config) { 2 }
fn getPageForStep(config, step) { if step == 2 { "otp_sms" } else { "" } }
fn getExtraParametersForStep(config, step) { if step == 2 { ["sent_to"] } else { () } }
fn authenticate(config, params, step) {
    if step == 1 {
        if !identity::set_user(params.username) { return false; }
        let phone = users::get(params.username, "phoneNumberVerified");
        let code = otp::issue(global::DIGITS);
        identity::set("sent_to", sms::mask(phone));
        return sms::send(phone, `Your code is ${code}`);
    }
    otp::verify(params.passcode)
}
"#;

fn deployment(dir: &Path, sms: Arc<LastSms>) -> Gatehouse {
    for sub in ["config", "scripts", "logs"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(dir.join("scripts/bench.rhai"), NO_HASH_OTP).unwrap();
    // Many users with their own numbers, so the login bench stays under the default per-number
    // limits (5 an hour, 10 a day) and measures the sending guards as they run in production.
    let users: String = (0..BENCH_USERS)
        .map(|i| format!("[users.user{i}]\n[users.user{i}.attributes]\nphoneNumberVerified = \"+4477009{i:05}\"\n"))
        .collect();
    std::fs::write(dir.join("config/users.toml"), users).unwrap();
    let config = format!(
        "[paths]\nscripts_dir = {:?}\nlog_dir = {:?}\nusers_file = {:?}\n[sms]\nallow_test_numbers = true\nallowed_prefixes = [\"+44\"]\ndaily_budget = 100000000\n[login]\ndefault_acr = \"bench\"\n[log]\nconsole = false\nlevel = \"warn\"\n[[scripts]]\nacr = \"bench\"\nfile = \"bench.rhai\"\n",
        dir.join("scripts"),
        dir.join("logs"),
        dir.join("config/users.toml")
    );
    std::fs::write(dir.join("config/gatehouse.toml"), config).unwrap();
    let app = Builder::new(dir.join("config/gatehouse.toml"))
        .sms(sms)
        .console_log(false)
        .build()
        .unwrap();
    app.load_scripts();
    app
}

const BENCH_USERS: usize = 20_000;
static NEXT_USER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn full_login(engine: &LoginEngine, sms: &LastSms) {
    let page = engine.start(None).unwrap();
    let user = NEXT_USER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % BENCH_USERS;
    let params = RequestParams::from_pairs([("username", format!("user{user}"))]);
    let StepOutcome::Next(next) = engine.submit(&page.login, 1, &params).unwrap() else {
        panic!("step 1")
    };
    let code = sms
        .0
        .lock()
        .unwrap()
        .rsplit(['#', ' '])
        .next()
        .unwrap()
        .to_owned();
    let params = RequestParams::from_pairs([("passcode", code)]);
    let StepOutcome::Authenticated(_) = engine.submit(&next.login, 2, &params).unwrap() else {
        panic!("step 2")
    };
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sms = Arc::new(LastSms::default());
    let mut app = deployment(dir.path(), sms.clone());

    c.bench_function("hook: getPageForStep on a compiled script", |b| {
        let context = lifecycle_context(&app);
        b.iter(|| {
            app.host
                .call("bench", HookCall::GetPageForStep { step: 2 }, &context)
                .unwrap()
        })
    });
    c.bench_function(
        "hook: authenticate step 2 (otp::verify, no code issued)",
        |b| {
            let context = lifecycle_context(&app);
            let params = RequestParams::from_pairs([("passcode", "123456")]);
            b.iter(|| {
                let _ = app.host.call(
                    "bench",
                    HookCall::Authenticate {
                        params: &params,
                        step: 2,
                    },
                    &context,
                );
            })
        },
    );
    // What the metrics add to one passcode POST: three hook timings (authenticate,
    // getNextStep, getCountAuthenticationSteps), one code check, one login outcome.
    c.bench_function("metrics: what one passcode POST records", |b| {
        let metrics = gatehouse::base::metrics::Metrics::new();
        b.iter(|| {
            for hook in ["authenticate", "getNextStep", "getCountAuthenticationSteps"] {
                metrics.hook("sms_otp", hook, 0.000_02, false);
            }
            metrics.code_check("sms_otp", "right");
            metrics.login("sms_otp", "success");
        })
    });
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sms_otp.rhai"))
            .unwrap();
    let engine = build_engine(&SandboxConfig::default());
    c.bench_function("compile: shipped scripts/sms_otp.rhai", |b| {
        b.iter(|| engine.compile(&shipped).unwrap())
    });
    let mut group = c.benchmark_group("login");
    // Bounded so that no number reaches its default daily limit of 10 sends.
    group
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(20);
    group.bench_function(
        "full 2-step login through the step engine (no password hash)",
        |b| b.iter(|| full_login(&app.engine, &sms)),
    );
    group.finish();

    let phc = gatehouse::base::password::hash_password(&gatehouse::base::secret::Secret::new(
        "wonderland",
    ))
    .unwrap();
    let checker = gatehouse::base::password::PasswordChecker::with_parallelism(1);
    let mut group = c.benchmark_group("password");
    group.sample_size(10);
    group.bench_function("argon2id verify (reported separately)", |b| {
        b.iter(|| {
            assert!(checker.verify(
                Some(&phc),
                &gatehouse::base::secret::Secret::new("wonderland")
            ))
        })
    });
    group.finish();

    app.watch().unwrap();
    let mut group = c.benchmark_group("reload");
    group.sample_size(20);
    let mut version = 0u64;
    group.bench_function("rename into scripts/ until the new revision serves", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                version += 1;
                let before = revision(&app);
                let temp = dir.path().join("scripts/.bench.rhai.tmp");
                std::fs::write(&temp, format!("{NO_HASH_OTP}\n// edit {version}\n")).unwrap();
                let started = Instant::now();
                std::fs::rename(&temp, dir.path().join("scripts/bench.rhai")).unwrap();
                while revision(&app) == before {
                    assert!(
                        started.elapsed() < Duration::from_secs(5),
                        "reload never happened"
                    );
                    std::thread::sleep(Duration::from_micros(200));
                }
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    app.shutdown();
}

fn revision(app: &Gatehouse) -> Option<u64> {
    app.host.statuses()[0].revision
}

fn lifecycle_context(app: &Gatehouse) -> Arc<HookContext> {
    let login_key = "0".repeat(64);
    HookContext::for_login(
        "bench",
        "bench",
        &login_key,
        app.services.clone(),
        HookState::default(),
        None,
    )
}

criterion_group!(script_host, benches);
criterion_main!(script_host);
