//! The composition root: builds a Gatehouse instance from a config file. `main.rs` and the tests
//! wire through here, so both run the same thing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, CONSOLE_PROVIDER};
use crate::flow::hooks::{HostServices, PasswordThrottle, SendGuard};
use crate::flow::otp::{AccountPolicy, OtpError, OtpService};
use crate::flow::throttle::{DelayPolicy, Throttle};
use crate::flow::LoginEngine;
use crate::logging::{LogError, ScriptLog};
use crate::oidc::{KeyError, Provider, SigningKey};
use crate::outbound::{HttpBridge, HttpError};
use crate::ports::{DirectoryError, SmsSender, StateStore, UserDirectory};
use crate::script::reload::{self, ReloadWatcher, WatchError};
use crate::script::{ReloadSummary, ScriptHost};
use crate::sms::{ProviderSet, RefusingSms, SmsSetupError};
use crate::store::MemoryStore;
use crate::users::FileDirectory;
use crate::web::pages::Pages;
use crate::web::WebState;

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
}

/// How an instance is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Logs under the log directory, sends SMS through the configured provider.
    Serve,
    /// `gatehouse check`: logs to stderr only, sends nothing.
    Check,
}

pub struct Gatehouse {
    pub config: Config,
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
    watcher: Option<ReloadWatcher>,
}

pub struct Builder {
    config_path: PathBuf,
    mode: Mode,
    sms: Option<Arc<dyn SmsSender>>,
    console_log: Option<bool>,
    store: Option<Arc<dyn StateStore>>,
}

impl Builder {
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Builder {
            config_path: config_path.into(),
            mode: Mode::Serve,
            sms: None,
            console_log: None,
            store: None,
        }
    }

    /// The state store (default: a new in-memory one). Instances given the same store share
    /// logins, codes, sessions and every counter; they also need the same `[otp] code_key`.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.store = Some(store);
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
        let config = Config::load(&self.config_path)?;
        let log = match self.mode {
            Mode::Serve => ScriptLog::open(
                &config.paths.log_dir,
                &config.log.level,
                self.console_log.unwrap_or(config.log.console),
            )?,
            Mode::Check => ScriptLog::console_only(&config.log.level),
        };
        let users: Arc<dyn UserDirectory> =
            Arc::new(FileDirectory::open(&config.paths.users_file)?);
        let store: Arc<dyn StateStore> = self.store.unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let bridge = Arc::new(HttpBridge::new(&config.http)?);
        let default_sms: Option<Arc<dyn SmsSender>> = match self.mode {
            Mode::Check => Some(Arc::new(RefusingSms(
                "gatehouse check sends nothing".into(),
            ))),
            Mode::Serve => self.sms,
        };
        let providers = ProviderSet::new(&config.sms, bridge, default_sms)?;
        if self.mode == Mode::Serve && providers.default_sender().provider() == CONSOLE_PROVIDER {
            log.scope(|| {
                tracing::warn!(
                    target: "server",
                    "SMS provider is 'console': NO SMS IS SENT. Messages are printed on standard output (development only)"
                )
            });
        }
        // Validated with the config; read again here because the environment is read at use.
        let code_key = match &config.otp.code_key {
            Some(raw) => Some(crate::config::otp_code_key(raw).map_err(|(key, message)| {
                StartError::Config(crate::config::ConfigError::Invalid {
                    path: self.config_path.clone(),
                    key,
                    message,
                })
            })?),
            None => None,
        };
        let otp = OtpService::new(
            store.clone(),
            AccountPolicy::from_config(&config.otp),
            code_key.as_ref(),
        )?;
        let delays = |free: i64| DelayPolicy {
            free_failures: free as u32,
            max_delay_seconds: config.login.password_max_delay_seconds as u64,
            memory: Duration::from_secs(3600),
        };
        let password_attempts = PasswordThrottle {
            accounts: Throttle::new(store.clone(), delays(config.login.password_free_failures)),
            addresses: Throttle::new(
                store.clone(),
                delays(config.login.password_free_failures * 4),
            ),
        };
        let sending = SendGuard::new(store.clone(), config.sms.limits());
        let webotp_host = config
            .sms
            .webotp_line
            .then(|| {
                url::Url::parse(&config.oidc.issuer)
                    .ok()?
                    .host_str()
                    .map(str::to_owned)
            })
            .flatten();
        let services = Arc::new(HostServices {
            users: users.clone(),
            otp,
            password_attempts,
            sending,
            webotp_host,
            users_passwords: crate::users::password::PasswordChecker::default(),
        });
        let host = Arc::new(ScriptHost::new(
            config.clone(),
            &self.config_path,
            services.clone(),
            providers,
        ));
        let provider = match self.mode {
            Mode::Check => None,
            Mode::Serve => {
                let path = &config.oidc.signing_key_file;
                let (key, created) = SigningKey::load_or_create(path)?;
                if created {
                    log.scope(|| tracing::warn!(target: "server", "generated a new ID-token signing key {} (kid {}): keep it secret and back it up", path.display(), key.kid));
                }
                Some(Arc::new(Provider::new(store.clone(), users.clone(), key)))
            }
        };
        let pages = Arc::new(Pages::new(config.paths.pages_dir.clone()));
        let engine = Arc::new(LoginEngine::new(
            host.clone(),
            store.clone(),
            services.clone(),
            Duration::from_secs(config.login.ttl_seconds),
            Some(log.dispatch.clone()),
        ));
        Ok(Gatehouse {
            config,
            config_path: self.config_path,
            host,
            engine,
            store,
            users,
            services,
            provider,
            pages,
            log,
            watcher: None,
        })
    }
}

impl Gatehouse {
    /// Compiles and initialises every enabled script.
    pub fn load_scripts(&self) -> ReloadSummary {
        self.log.scope(|| self.host.reconcile(None))
    }

    /// Starts hot reload of scripts and config.
    pub fn watch(&mut self) -> Result<(), StartError> {
        let debounce = Duration::from_millis(self.config.log.reload_debounce_ms);
        self.watcher = Some(reload::watch(
            self.host.clone(),
            debounce,
            self.log.dispatch.clone(),
        )?);
        Ok(())
    }

    /// What the HTTP layer needs; `None` for a `check` instance.
    pub fn web_state(&self) -> Option<WebState> {
        Some(WebState {
            host: self.host.clone(),
            engine: self.engine.clone(),
            provider: self.provider.clone()?,
            store: self.store.clone(),
            pages: self.pages.clone(),
            log: self.log.dispatch.clone(),
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.log.path()
    }

    pub fn scripts_dir(&self) -> &Path {
        &self.config.paths.scripts_dir
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
