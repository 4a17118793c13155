//! The running server's config: one swappable handle that the app owns and replaces on reload,
//! and that every reader asks for the current value (one `Arc` clone, no copying).

use std::sync::{Arc, RwLock};

use super::Config;

#[derive(Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    pub fn new(config: Config) -> Self {
        LiveConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The config in force now; a reload never changes a value already handed out.
    pub fn current(&self) -> Arc<Config> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, config: Arc<Config>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config;
    }
}
