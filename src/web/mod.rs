//! HTTP surface (axum). Handlers stay thin: parse, call the flow or the host, map the result.
//! This module is the only one that knows axum.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::script::{ScriptHost, ScriptState, ScriptStatus};

#[derive(Clone)]
pub struct WebState {
    pub host: Arc<ScriptHost>,
}

#[derive(Serialize)]
struct Health {
    /// "ok" when every enabled script serves its latest edit; "degraded" otherwise.
    status: &'static str,
    scripts: Vec<ScriptStatus>,
}

async fn health(State(state): State<WebState>) -> Json<Health> {
    let scripts = state.host.statuses();
    let degraded = scripts
        .iter()
        .any(|s| s.enabled && (s.state != ScriptState::Active || s.last_error.is_some()));
    Json(Health {
        status: if degraded { "degraded" } else { "ok" },
        scripts,
    })
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/health", get(health))
        .with_state(state)
}
