//! The running server's config: one swappable handle that the app owns and replaces on reload,
//! and that every reader asks for the current value (one `Arc` clone, no copying).

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::Config;

#[derive(Clone)]
pub struct LiveConfig {
    current: Arc<RwLock<Arc<Config>>>,
    /// Held by a reload from reading the file to applying it, so that two reloads at once (the
    /// watcher's and an admin edit's) apply in the order they read: never an older file last.
    reloading: Arc<Mutex<()>>,
}

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig {
            current: Arc::new(RwLock::new(Arc::new(config))),
            reloading: Arc::default(),
        }
    }

    /// The config in force now; a reload never changes a value already handed out.
    pub fn current(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replace(&self, config: Arc<Config>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    /// One reload at a time: hold this from reading the file until the scripts are reconciled.
    pub fn reload_turn(&self) -> MutexGuard<'_, ()> {
        self.reloading.lock().unwrap_or_else(|p| p.into_inner())
    }
}
