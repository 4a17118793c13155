//! The composition root: builds a Gatehouse instance from a config file. `main.rs` and the tests
//! wire through here, so both run the same thing. Only this module knows every layer; it owns
//! the live config and the reload that replaces it.

pub mod reload;
pub mod script_tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::admin::config_file::ConfigFile;
use crate::admin::scripts::ScriptAdmin;
use crate::admin::Admin;
use crate::base::metrics::Metrics;
use crate::base::password::PasswordChecker;
use crate::base::{Secret, SharedClock, SystemClock};
use crate::config::{restart_only_changes, Config, ConfigError, LiveConfig, CONSOLE_PROVIDER};
use crate::flow::host::{HostServices, PasswordThrottle};
use crate::flow::otp::{OtpError, OtpService};
use crate::flow::script_port::ScriptRuntime;
use crate::flow::sending::{SendGuard, SendLimits};
use crate::flow::sms_factor::{AccountPolicy, SmsFactor};
use crate::flow::throttle::{DelayPolicy, Throttle};
use crate::flow::LoginEngine;
use crate::logging::{LogError, ScriptLog};
use crate::oidc::{KeyError, Provider, SigningKey};
use crate::outbound::{HttpBridge, HttpError};
use crate::ports::{DirectoryError, SmsSender, StateStore, UserDirectory};
use crate::script::{ReloadSummary, ScriptHost};
use crate::sms::{ProviderSet, RefusingSms, SmsSetupError};
use crate::store::MemoryStore;
use crate::users::{FileDirectory, LdapDirectory, LdapSettings};
use crate::web::admin::AdminState;
use crate::web::pages::Pages;
use crate::web::WebState;
use reload::{ReloadWatcher, WatchError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Otp(#[from] OtpError),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Sms(#[from] SmsSetupError),
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

/// How an instance is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Logs under the log directory, sends SMS through the configured provider.
    Serve,
    /// `gatehouse check` and the operator commands: logs to stderr only, sends nothing.
    Check,
    /// `gatehouse test`: logs under the log directory, every script sends through the given SMS
    /// sender, no OIDC provider.
    Test,
}

pub struct Gatehouse {
    /// The config in force; a reload replaces it (restart-only values stay as they started).
    pub config: LiveConfig,
    pub config_path: PathBuf,
    pub host: Arc<ScriptHost>,
    pub engine: Arc<LoginEngine>,
    pub store: Arc<dyn StateStore>,
    pub users: Arc<dyn UserDirectory>,
    pub services: Arc<HostServices>,
    /// The OpenID Connect provider (not built for `check`).
    pub provider: Option<Arc<Provider>>,
    pub pages: Arc<Pages>,
    pub log: ScriptLog,
    pub clock: SharedClock,
    /// Signs device cookies: derived from `[otp] code_key` when set (instances sharing a store
    /// accept each other's cookies), else random for this process.
    device_key: Arc<[u8; 32]>,
    watcher: Option<ReloadWatcher>,
}

pub struct Builder {
    config_path: PathBuf,
    /// A config given in memory instead of read from `config_path` (`gatehouse test`).
    config: Option<Config>,
    /// Fake answers for outbound HTTP (`gatehouse test`).
    http_answers: Option<crate::outbound::CannedAnswers>,
    mode: Mode,
    sms: Option<Arc<dyn SmsSender>>,
    console_log: Option<bool>,
    store: Option<Arc<dyn StateStore>>,
    clock: Option<SharedClock>,
    /// Use the `[store]` a server uses (Redis) outside `Mode::Serve`.
    configured_store: bool,
}

impl Builder {
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Builder {
            config_path: config_path.into(),
            config: None,
            http_answers: None,
            mode: Mode::Serve,
            sms: None,
            console_log: None,
            store: None,
            clock: None,
            configured_store: false,
        }
    }

    /// For operator commands: the state store the config names (Redis), as the servers use it,
    /// so a reset reaches their shared state. (Otherwise only `Mode::Serve` connects to Redis.)
    pub fn configured_store(mut self) -> Self {
        self.configured_store = true;
        self
    }

    /// The state store (default: a new in-memory one). Instances given the same store share
    /// logins, codes, sessions and every counter; they also need the same `[otp] code_key`.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock every expiry, lock and window reads (default: the system clock). Tests pass a
    /// [`crate::base::ManualClock`] and move time instead of sleeping.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds from `config` (already loaded and checked) instead of reading the file.
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Outbound HTTP answered from these instead of the network.
    pub fn http_answers(mut self, answers: crate::outbound::CannedAnswers) -> Self {
        self.http_answers = Some(answers);
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Replaces the configured SMS provider (tests capture messages this way).
    pub fn sms(mut self, sms: Arc<dyn SmsSender>) -> Self {
        self.sms = Some(sms);
        self
    }

    /// Overrides `log.console` (tests keep stderr quiet).
    pub fn console_log(mut self, console: bool) -> Self {
        self.console_log = Some(console);
        self
    }

    /// Loads config and users and builds every part; no script is loaded yet (see [`Gatehouse::load_scripts`]).
    pub fn build(self) -> Result<Gatehouse, StartError> {
        let config = match self.config {
            Some(config) => config,
            None => Config::load(&self.config_path)?,
        };
        if self.mode == Mode::Serve {
            // A server with an admin listener starts only with its token at hand.
            config
                .admin
                .serving_token()
                .map_err(|(key, message)| ConfigError::Invalid {
                    path: self.config_path.clone(),
                    key,
                    message,
                })?;
        }
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let log = match self.mode {
            Mode::Serve | Mode::Test => ScriptLog::open(
                &config.paths.log_dir,
                &config.log.level,
                self.console_log.unwrap_or(config.log.console),
                config.log.format == crate::config::LogFormat::Json,
            )?,
            Mode::Check => ScriptLog::console_only(
                &config.log.level,
                config.log.format == crate::config::LogFormat::Json,
            ),
        };
        // One argon2id gate for the whole server: passwords and backup codes together never run
        // more checks at once than there are cores.
        let passwords = Arc::new(PasswordChecker::default());
        let users = match ldap_directory(
            &config,
            self.mode == Mode::Serve || self.configured_store,
            &log,
        )? {
            Some(ldap) => ldap,
            None => {
                let directory =
                    FileDirectory::open_with(&config.paths.users_file, passwords.clone())?;
                if let Some(mode) = directory.exposed_mode() {
                    log.scope(|| {
                        tracing::warn!(
                            target: "server",
                            "{} is readable by others (mode {mode:o}): it holds password and backup-code hashes; chmod 600 it",
                            config.paths.users_file.display()
                        )
                    });
                }
                Arc::new(directory) as Arc<dyn UserDirectory>
            }
        };
        let store: Arc<dyn StateStore> = match self.store {
            Some(store) => store,
            None => shared_store(
                &config,
                self.mode == Mode::Serve || self.configured_store,
                &log,
            )?
            .unwrap_or_else(|| Arc::new(MemoryStore::with_clock(clock.clone()))),
        };
        let bridge = Arc::new(match self.http_answers {
            Some(answers) => HttpBridge::canned(&config.http, answers)?,
            None => HttpBridge::new(&config.http)?,
        });
        let default_sms: Option<Arc<dyn SmsSender>> = match self.mode {
            Mode::Check => Some(Arc::new(RefusingSms(
                "gatehouse check sends nothing".into(),
            ))),
            Mode::Serve | Mode::Test => self.sms,
        };
        let metrics = Arc::new(Metrics::new());
        let mut providers = ProviderSet::new(
            &config.sms,
            bridge,
            default_sms,
            clock.clone(),
            metrics.clone(),
            config.oidc.issuer_base(),
        )?;
        if self.mode == Mode::Test {
            providers = providers.everything_to_default();
        }
        if self.mode == Mode::Serve && providers.default_sender().provider() == CONSOLE_PROVIDER {
            log.scope(|| {
                tracing::warn!(
                    target: "server",
                    "SMS provider is 'console': NO SMS IS SENT. Messages are printed on standard output (development only)"
                )
            });
        }
        let services = Arc::new(host_services(
            &config,
            store.clone(),
            users.clone(),
            passwords,
            clock.clone(),
            metrics,
        )?);
        let host = Arc::new(ScriptHost::new(&config, services.clone(), providers));
        let provider = match self.mode {
            Mode::Check | Mode::Test => None,
            Mode::Serve => {
                let path = &config.oidc.signing_key_file;
                let (key, created) = SigningKey::load_or_create(path)?;
                if created {
                    log.scope(|| tracing::warn!(target: "server", "generated a new ID-token signing key {} (kid {}): keep it secret and back it up", path.display(), key.kid));
                }
                Some(Arc::new(Provider::new(
                    store.clone(),
                    users.clone(),
                    key,
                    clock.clone(),
                )))
            }
        };
        let pages = Arc::new(Pages::new(config.paths.pages_dir.clone()));
        let login_ttl = Duration::from_secs(config.login.ttl_seconds);
        let device_key = Arc::new(match config.otp.shared_code_key() {
            Some(key) => crate::base::digest::sha256(
                format!("gatehouse device cookies\0{}", key.expose()).as_bytes(),
            ),
            None => crate::base::random::key32().map_err(|e| {
                StartError::Config(ConfigError::Parse {
                    path: self.config_path.clone(),
                    message: e.to_string(),
                })
            })?,
        });
        let live = LiveConfig::new(config);
        let engine = Arc::new(LoginEngine::new(
            host.clone(),
            store.clone(),
            services.clone(),
            live.clone(),
            login_ttl,
            Some(log.dispatch.clone()),
        ));
        Ok(Gatehouse {
            config: live,
            config_path: self.config_path,
            host,
            engine,
            store,
            users,
            services,
            provider,
            pages,
            log,
            clock,
            device_key,
            watcher: None,
        })
    }
}

/// What every login shares, each policy converted from its own config section.
fn host_services(
    config: &Config,
    store: Arc<dyn StateStore>,
    users: Arc<dyn UserDirectory>,
    passwords: Arc<PasswordChecker>,
    clock: SharedClock,
    metrics: Arc<Metrics>,
) -> Result<HostServices, StartError> {
    let otp = OtpService::new(
        store.clone(),
        config.otp.shared_code_key().as_ref(),
        clock.clone(),
    )?;
    let sms_factor = Arc::new(
        SmsFactor::new(
            store.clone(),
            users.clone(),
            AccountPolicy::from_config(&config.otp),
            clock.clone(),
        )
        .with_metrics(metrics.clone()),
    );
    let delays = |free: i64| DelayPolicy {
        first_delay_seconds: 1,
        free_failures: free as u32,
        max_delay_seconds: config.login.password_max_delay_seconds as u64,
        memory: Duration::from_secs(3600),
    };
    let password_attempts = PasswordThrottle {
        pairs: Throttle::new(
            store.clone(),
            delays(config.login.password_free_failures),
            clock.clone(),
        ),
        accounts: Throttle::new(
            store.clone(),
            DelayPolicy {
                first_delay_seconds: 1,
                free_failures: config.login.password_account_free_failures as u32,
                max_delay_seconds: config.login.password_account_max_delay_seconds as u64,
                memory: Duration::from_secs(3600),
            },
            clock.clone(),
        ),
        addresses: Throttle::new(
            store.clone(),
            delays(config.login.password_free_failures * 4),
            clock.clone(),
        ),
    };
    let sending = SendGuard::new(store, SendLimits::from_config(&config.sms), clock.clone());
    let webotp_host = config
        .sms
        .webotp_line
        .then(|| config.oidc.issuer.host().to_owned())
        .filter(|host| !host.is_empty());
    Ok(HostServices {
        users,
        otp,
        sms_factor,
        password_attempts,
        sending,
        webotp_host,
        passwords,
        clock,
        working_limits: crate::flow::host::WorkingLimits {
            max_count: config.sandbox.max_working_parameters,
            max_bytes: config.sandbox.max_working_bytes,
        },
        metrics,
    })
}

impl Gatehouse {
    /// Compiles and initialises every enabled script.
    pub fn load_scripts(&self) -> ReloadSummary {
        self.log
            .scope(|| self.host.reconcile(&self.config.current()))
    }

    /// Re-reads the config file (when `config_touched`) and reconciles the scripts with it. A
    /// config that does not load is logged and the running one kept; an edit of a value that
    /// needs a restart is named in a warning and not applied.
    pub fn reload(&self, config_touched: bool) -> ReloadSummary {
        self.log
            .scope(|| reload_now(&self.config, &self.host, &self.config_path, config_touched))
    }

    /// Starts hot reload of scripts and config.
    pub fn watch(&mut self) -> Result<(), StartError> {
        let config = self.config.current();
        let debounce = Duration::from_millis(config.log.reload_debounce_ms);
        let (live, host, path) = (
            self.config.clone(),
            self.host.clone(),
            self.config_path.clone(),
        );
        self.watcher = Some(reload::watch(
            &config.paths.scripts_dir,
            &self.config_path,
            debounce,
            self.log.dispatch.clone(),
            Box::new(move |config_touched| {
                reload_now(&live, &host, &path, config_touched);
            }),
        )?);
        Ok(())
    }

    /// What the HTTP layer needs; `None` for a `check` instance.
    pub fn web_state(&self) -> Option<WebState> {
        let runtime: Arc<dyn ScriptRuntime> = self.host.clone();
        Some(WebState {
            config: self.config.clone(),
            runtime,
            engine: self.engine.clone(),
            provider: self.provider.clone()?,
            store: self.store.clone(),
            users: self.users.clone(),
            pages: self.pages.clone(),
            log: self.log.dispatch.clone(),
            clock: self.clock.clone(),
            device_key: self.device_key.clone(),
            metrics: self.metrics(),
        })
    }

    /// The operator's user actions (CLI; later the admin API).
    /// Whether the state store is shared with the servers (Redis), so operator commands reach it.
    pub fn shares_state(&self) -> bool {
        self.config.current().store.backend == crate::config::StoreBackend::Redis
    }

    pub fn admin(&self) -> Admin {
        Admin::new(self.users.clone(), self.services.sms_factor.clone())
    }

    /// The script and acr operations on this instance's config file. A server applies an edit
    /// at once (its reload, as the watcher would); an operator command leaves it to the running
    /// server's watcher.
    pub fn script_admin(&self) -> ScriptAdmin {
        let runtime: Arc<dyn ScriptRuntime> = self.host.clone();
        let (live, host, path) = (
            self.config.clone(),
            self.host.clone(),
            self.config_path.clone(),
        );
        let apply: Arc<dyn Fn() + Send + Sync> = match self.watcher.is_some() {
            true => Arc::new(move || {
                reload_now(&live, &host, &path, true);
            }),
            false => Arc::new(|| {}),
        };
        ScriptAdmin::new(ConfigFile::new(&self.config_path), runtime, apply)
    }

    /// What the server counts.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.services.metrics.clone()
    }

    /// The admin listener's state, when `[admin] listen` is set (and this instance serves).
    pub fn admin_state(&self) -> Option<AdminState> {
        let config = self.config.current();
        // Checked when a server is built: off or missing here means no listener.
        let token = config.admin.serving_token().ok().flatten()?;
        Some(AdminState {
            web: self.web_state()?,
            scripts: Arc::new(self.script_admin()),
            users: Arc::new(self.admin()),
            metrics: self.metrics(),
            token_digest: crate::base::digest::sha256(token.expose().as_bytes()),
            failures: Arc::new(Throttle::new(
                self.store.clone(),
                // Five wrong tokens, then a minute's wait, doubling up to 15 minutes: a
                // 32-character token is not guessed, but a script gone wrong should not spin.
                DelayPolicy {
                    free_failures: 4,
                    first_delay_seconds: 60,
                    max_delay_seconds: 900,
                    memory: Duration::from_secs(3600),
                },
                self.clock.clone(),
            )),
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.path()
    }

    pub fn scripts_dir(&self) -> &Path {
        self.host.scripts_dir()
    }

    /// Stops watching and runs `destroy` on every serving script.
    pub fn shutdown(&mut self) {
        self.watcher = None;
        self.log.scope(|| {
            self.host.shutdown();
            tracing::info!(target: "server", "stopped");
        });
    }
}

fn reload_now(
    live: &LiveConfig,
    host: &ScriptHost,
    config_path: &Path,
    config_touched: bool,
) -> ReloadSummary {
    let _turn = live.reload_turn();
    if !config_touched {
        return host.reconcile(&live.current());
    }
    match Config::load(config_path) {
        Ok(loaded) => {
            let running = live.current();
            for key in restart_only_changes(&running, &loaded) {
                tracing::warn!(target: "server", "configuration {key} changed: it takes effect after a restart");
            }
            let applied = Arc::new(loaded.with_restart_only_values_of(&running));
            live.replace(applied.clone());
            host.reconcile(&applied)
        }
        Err(error) => {
            let message = error.to_string();
            tracing::error!(target: "server", "{message}; the previous configuration keeps serving");
            host.reconcile(&live.current()).with_config_error(message)
        }
    }
}

/// The Redis store `[store]` asks for, when `wanted` (serving, operator commands; `check` and
/// `test` stay offline, in memory). An unreachable Redis at start is logged, not fatal: the
/// store reconnects on its own.
/// The LDAP directory `[directory]` names, for a server (and operator commands); `gatehouse
/// check` and `gatehouse test` keep to the user file.
fn ldap_directory(
    config: &Config,
    wanted: bool,
    log: &ScriptLog,
) -> Result<Option<Arc<dyn UserDirectory>>, StartError> {
    let directory = &config.directory;
    if !wanted || directory.backend != crate::config::DirectoryBackend::Ldap {
        return Ok(None);
    }
    let expanded = |value: &Option<crate::config::EnvValue>| {
        value
            .as_ref()
            .and_then(|v| v.resolved().ok())
            .cloned()
            .unwrap_or_else(|| Secret::new(String::new()))
    };
    let ca_pem = match &directory.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| DirectoryError::Unreadable {
            path: path.display().to_string(),
            message: format!("[directory] ca_file: {e}"),
        })?),
        None => None,
    };
    let ldap = LdapDirectory::new(LdapSettings {
        url: expanded(&directory.url).expose().to_owned(),
        starttls: directory.starttls,
        ca_pem,
        bind_dn: directory.bind_dn.clone().unwrap_or_default(),
        bind_password: expanded(&directory.bind_password),
        base_dn: directory.base_dn.clone().unwrap_or_default(),
        user_filter: directory.user_filter.clone(),
        username_attribute: directory.username_attribute.clone(),
        timeout: Duration::from_millis(directory.timeout_ms),
        max_connections: directory.max_connections as usize,
    })?;
    if let Err(error) = ldap.check() {
        log.scope(|| tracing::error!(target: "server", "{error}: sign-ins answer 503 until the directory answers"));
    }
    Ok(Some(Arc::new(ldap)))
}

fn shared_store(
    config: &Config,
    wanted: bool,
    log: &ScriptLog,
) -> Result<Option<Arc<dyn StateStore>>, StartError> {
    if !wanted || config.store.backend != crate::config::StoreBackend::Redis {
        return Ok(None);
    }
    let url = config
        .store
        .url
        .as_ref()
        .and_then(|url| url.resolved().ok())
        .map(|url| url.expose().to_owned())
        .unwrap_or_default();
    let store = crate::store::RedisStore::new(
        &url,
        &config.store.key_prefix,
        Duration::from_millis(config.store.timeout_ms),
    )?;
    if let Err(error) = store.ping() {
        log.scope(|| tracing::error!(target: "server", "{error}: sign-ins answer 503 until Redis answers"));
    }
    Ok(Some(Arc::new(store)))
}
