//! HTTP surface (axum). Handlers stay thin: parse, call the flow or the OIDC provider on the
//! request threads (ports may block), map the result. The only module that knows axum.

pub mod admin;
mod device;
mod error;
mod extract;
pub mod listener;
mod login;
mod oidc;
pub mod pages;
mod receipts;
mod security;
mod session;
pub mod workers;

pub use error::WebError;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::base::SharedClock;
use crate::config::LiveConfig;
use crate::flow::script_port::{ScriptRuntime, ScriptState, ScriptStatus};
use crate::flow::LoginEngine;
use crate::oidc::Provider;
use crate::ports::{StateStore, UserDirectory};
use pages::Pages;

/// Forms and queries larger than this are refused (413).
const BODY_LIMIT: usize = 16 * 1024;

#[derive(Clone)]
pub struct WebState {
    /// The config in force (the app replaces it on reload).
    pub config: LiveConfig,
    /// Script statuses, for `/health`, discovery and the acr choice.
    pub runtime: Arc<dyn ScriptRuntime>,
    pub engine: Arc<LoginEngine>,
    pub provider: Arc<Provider>,
    pub store: Arc<dyn StateStore>,
    /// For `/health` only (the flow reaches users through the script host).
    pub users: Arc<dyn UserDirectory>,
    pub pages: Arc<Pages>,
    pub log: tracing::Dispatch,
    pub clock: SharedClock,
    /// Signs device cookies (a browser that signed in to an account before).
    pub device_key: std::sync::Arc<[u8; 32]>,
    /// What the server counts (delivery receipts are counted here).
    pub metrics: Arc<crate::base::metrics::Metrics>,
}

impl WebState {
    fn log_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        tracing::dispatcher::with_default(&self.log, f)
    }

    /// Enabled interactive methods that serve, in level order (for discovery and acr choice).
    fn interactive_acrs(&self) -> Vec<String> {
        self.runtime.interactive_acrs()
    }

    /// A plain page for the user (the detail for the operator goes to the log).
    fn error_page(
        &self,
        status: StatusCode,
        heading: &str,
        detail: &str,
        request_id: &str,
    ) -> Response {
        let html = self
            .pages
            .render(
                "error.html",
                minijinja::context! { heading, detail, request_id },
            )
            .unwrap_or_else(|e| {
                self.log_scope(|| tracing::error!(target: "server", "{e}"));
                format!("<!doctype html><title>Error</title><p>{status}</p>")
            });
        (status, Html(html)).into_response()
    }
}

/// Runs a request's work (scripts, the state store, the directory), which may block: a hook may
/// compute until its deadline (a broken script's loop) or wait on a network store. It runs on
/// the request workers ([`workers::Workers`]), never on an async worker, so that nothing waits
/// behind it (/health answers while hooks loop). A panic is caught and reported, not propagated.
///
/// Measured (`cargo bench --bench load`, the do-nothing handler behind each hop): tokio's
/// `spawn_blocking` cost half the rate, as it wakes an idle thread for every task;
/// `block_in_place` (the worker hands its queue to a fresh thread on every request) was slower
/// still; running on the async worker itself was fastest, but a request queued behind a worker
/// held by a looping hook then waited for the hook's deadline.
pub async fn run_blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    workers::Workers::global().run(work).await
}

/// Runs a handler's work with [`run_blocking`]. The work gets the state, with this instance's
/// log as the destination of its events; it may return a `Result<Response, WebError>` and use
/// `?`.
async fn blocking<F, R>(state: &WebState, work: F) -> Response
where
    F: FnOnce(&WebState) -> R + Send + 'static,
    R: IntoResponse + Send + 'static,
{
    let app = state.clone();
    match run_blocking(move || app.log_scope(|| work(&app).into_response())).await {
        Ok(response) => response,
        Err(error) => {
            state
                .log_scope(|| tracing::error!(target: "server", "request handler failed: {error}"));
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// First value of each name; a repeated name is refused (RFC 6749 section 3.1).
fn single_values(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (name, value) in pairs {
        if values.insert(name.clone(), value).is_some() {
            return Err(name);
        }
    }
    Ok(values)
}

/// A 303 to `location` with `headers` (cookies) set.
fn see_other(location: &str, headers: HeaderMap) -> Response {
    let mut response = (StatusCode::SEE_OTHER, headers).into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(security::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

#[derive(Serialize)]
struct Health {
    /// "ok" when every enabled script serves its latest edit and the state store and the user
    /// directory answer; "degraded" when a script does not; "unavailable" (503) when the store
    /// or the directory does not.
    status: &'static str,
    /// Why the state store does not answer, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
    /// Why the user directory (LDAP) does not answer, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    directory_error: Option<String>,
    scripts: Vec<ScriptStatus>,
    /// Each SMS provider's circuit breaker; an open one makes the status "degraded".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sms_providers: Vec<crate::ports::ProviderCircuit>,
}

/// Asks a remote service whether it answers, on the request threads; `None` when it does.
async fn remote_error<E: std::fmt::Display>(
    check: impl FnOnce() -> Result<(), E> + Send + 'static,
) -> Option<String> {
    run_blocking(move || check().map_err(|e| e.to_string()))
        .await
        .and_then(|checked| checked)
        .err()
}

async fn health(State(state): State<WebState>) -> Response {
    let scripts = state.runtime.statuses();
    let sms_providers = state.runtime.sms_circuits();
    let degraded = scripts
        .iter()
        .any(|s| s.enabled && (s.state != ScriptState::Active || s.last_error.is_some()))
        || sms_providers.iter().any(|c| c.state != "closed");
    // Only remote services can be down; the in-process ones cost /health nothing.
    let store_error = match state.store.is_remote() {
        true => {
            let store = state.store.clone();
            remote_error(move || store.check()).await
        }
        false => None,
    };
    let directory_error = match state.users.is_remote() {
        true => {
            let users = state.users.clone();
            remote_error(move || users.check()).await
        }
        false => None,
    };
    let (code, status) = match (store_error.is_some() || directory_error.is_some(), degraded) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (false, true) => (StatusCode::OK, "degraded"),
        (false, false) => (StatusCode::OK, "ok"),
    };
    let health = Health {
        status,
        store_error,
        directory_error,
        scripts,
        sms_providers,
    };
    (code, Json(health)).into_response()
}

/// A landing page for people who open the server's address: where to look next.
async fn home(State(state): State<WebState>) -> Html<String> {
    let issuer = state.config.current().oidc.issuer_base().to_owned();
    let acrs = state.interactive_acrs().join(", ");
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Gatehouse</title><link rel=\"stylesheet\" href=\"/static/gatehouse.css\"></head><body><main class=\"card\"><h1>Gatehouse</h1><p>This is an OpenID Connect provider. Applications start at <a href=\"/.well-known/openid-configuration\">{issuer}/.well-known/openid-configuration</a>.</p><p>Authentication methods: {}</p><p><a href=\"/health\">Health</a></p></main></body></html>",
        minijinja::HtmlEscape(&acrs)
    ))
}

async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", pages::STYLESHEET)
}

async fn script() -> Response {
    static_file("text/javascript; charset=utf-8", pages::SCRIPT)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        ),
    ];
    (headers, body).into_response()
}

/// Serves `state` on `listener` until `shutdown` completes (peer addresses are recorded for the
/// per-address limits).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: WebState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = state.config.current().server.clone();
    let limits = listener::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_millis(server.header_read_timeout_ms),
        max_per_address: server.max_connections_per_address as usize,
    };
    listener::serve(listener, router(state), limits, shutdown).await
}

/// Serves the admin API and `/metrics` on their own listener until `shutdown` completes.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    state: admin::AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = state.web.config.current().server.clone();
    let limits = listener::ConnectionLimits {
        header_read_timeout: std::time::Duration::from_millis(server.header_read_timeout_ms),
        max_per_address: server.max_connections_per_address as usize,
    };
    listener::serve(listener, admin::router(state), limits, shutdown).await
}

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/health", get(health))
        .route("/static/gatehouse.css", get(stylesheet))
        .route("/static/gatehouse.js", get(script))
        .route("/.well-known/openid-configuration", get(oidc::discovery))
        .route("/jwks", get(oidc::jwks))
        .route(
            "/authorize",
            get(login::authorize_get).post(login::authorize_post),
        )
        .route("/login", get(login::show_step).post(login::submit_step))
        .route("/login/resend", axum::routing::post(login::resend_code))
        .route("/login/switch", axum::routing::post(login::switch_method))
        .route("/token", axum::routing::post(oidc::token))
        .route(
            "/sms/twilio/{name}/status",
            axum::routing::post(receipts::twilio_status),
        )
        .route("/userinfo", get(oidc::userinfo).post(oidc::userinfo))
        .route(
            "/end_session",
            get(oidc::end_session).post(oidc::end_session_post),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::headers_and_log,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
