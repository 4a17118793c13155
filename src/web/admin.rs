//! The admin listener (`[admin] listen`, its own socket): the Janssen-style operator API under
//! `/admin/` (bearer token, compared in constant time; failures throttled per address) and the
//! Prometheus `/metrics` (no token: bind the listener privately). Handlers are thin: the work
//! is `admin::scripts::ScriptAdmin` and `admin::Admin`, the same code the CLI calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::admin::config_file::{EditError, ScriptEdit};
use crate::admin::scripts::{ScriptAdmin, ScriptAdminError};
use crate::admin::{Admin, AdminError};
use crate::base::metrics::{Metrics, Snapshot};
use crate::base::{digest, store_keys};
use crate::flow::sms_factor::FactorState;
use crate::flow::throttle::Throttle;
use crate::web::WebState;

/// What the admin listener's handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub web: WebState,
    pub scripts: Arc<ScriptAdmin>,
    pub users: Arc<Admin>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of `[admin] token`: compared, digest to digest, in constant time.
    pub token_digest: [u8; 32],
    /// Wrong or missing tokens per client address: delays double after a few.
    pub failures: Arc<Throttle>,
}

pub fn router(state: AdminState) -> Router {
    let admin = Router::new()
        .route("/admin/scripts", get(list_scripts))
        .route("/admin/scripts/{acr}", get(show_script).patch(patch_script))
        .route("/admin/acrs", get(get_acrs).put(put_acrs))
        .route("/admin/users/{name}/sms", get(sms_status))
        .route("/admin/users/{name}/sms/reset", post(reset_sms))
        .route("/admin/users/{name}/backup-codes", post(backup_codes))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(admin)
        .layer(axum::middleware::from_fn_with_state(
            state.web.clone(),
            super::security::headers_and_log,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(super::BODY_LIMIT))
        .with_state(state)
}

/// A JSON error: `{"error": "...", "message": "..."}`.
fn problem(status: StatusCode, error: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": error, "message": message.into() })),
    )
        .into_response()
}

async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such admin endpoint (see README: Operating it)",
    )
}

/// Runs blocking admin work (the config file, the store, the directory) off the async workers,
/// with the instance's log as the destination of its events.
async fn off_thread<R: Send + 'static>(
    state: &AdminState,
    work: impl FnOnce(&AdminState) -> R + Send + 'static,
) -> Result<R, Response> {
    let admin = state.clone();
    super::run_blocking(move || admin.web.log_scope(|| work(&admin)))
        .await
        .map_err(|e| problem(StatusCode::INTERNAL_SERVER_ERROR, "internal", e))
}

/// What the token check found.
enum TokenCheck {
    Right,
    Wrong,
    /// This address failed too often: seconds to wait.
    Wait(u64),
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // RFC 6750: `Bearer TOKEN`, the scheme in any case.
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned())
        .unwrap_or_default();
    let checked = off_thread(&state, move |state| {
        let key = peer.map(|ip| store_keys::admin_auth_failures_from_address(&ip));
        if let Some(key) = &key {
            if let Some(wait) = state.failures.reserve(key)? {
                return Ok(TokenCheck::Wait(wait));
            }
        }
        let right = bool::from(subtle::ConstantTimeEq::ct_eq(
            &digest::sha256(given.as_bytes())[..],
            &state.token_digest[..],
        ));
        if !right {
            state.metrics.admin_auth_failed();
            tracing::warn!(target: "server", "admin API: missing or wrong token from {}", peer.map_or("-".into(), |p| p.to_string()));
            return Ok(TokenCheck::Wrong);
        }
        if let Some(key) = &key {
            state.failures.release(key)?;
        }
        Ok::<_, crate::ports::StoreError>(TokenCheck::Right)
    })
    .await;
    match checked {
        Err(response) => response,
        Ok(Err(error)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the state store does not answer: {error}"),
        ),
        Ok(Ok(TokenCheck::Wait(wait))) => {
            let mut response = problem(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                format!("too many requests with a wrong token: try again in {wait} s"),
            );
            if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Ok(Ok(TokenCheck::Wrong)) => {
            let mut response = problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <[admin] token>",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gatehouse-admin\""),
            );
            response
        }
        Ok(Ok(TokenCheck::Right)) => next.run(request).await,
    }
}

impl IntoResponse for ScriptAdminError {
    fn into_response(self) -> Response {
        let ScriptAdminError::Edit(error) = &self;
        let (status, code) = match error {
            EditError::UnknownAcr(_) => (StatusCode::NOT_FOUND, "unknown_acr"),
            EditError::Refused(_) => (StatusCode::BAD_REQUEST, "refused"),
            EditError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
            EditError::Syntax { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "config_syntax"),
            EditError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "config_io"),
        };
        problem(status, code, self.to_string())
    }
}

fn flatten<T: Serialize>(result: Result<Result<T, ScriptAdminError>, Response>) -> Response {
    match result {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(error)) => error.into_response(),
        Err(response) => response,
    }
}

async fn list_scripts(State(state): State<AdminState>) -> Response {
    flatten(off_thread(&state, |s| s.scripts.list()).await)
}

async fn show_script(State(state): State<AdminState>, Path(acr): Path<String>) -> Response {
    flatten(off_thread(&state, move |s| s.scripts.show(&acr)).await)
}

/// `PATCH /admin/scripts/{acr}`: `{"enabled": true, "properties": {"NAME": "value", "OTHER":
/// null}}`; null removes a property. All of it or nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptPatch {
    enabled: Option<bool>,
    #[serde(default)]
    properties: BTreeMap<String, Option<String>>,
}

async fn patch_script(
    State(state): State<AdminState>,
    Path(acr): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let patch: ScriptPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(error) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("expected {{\"enabled\": bool, \"properties\": {{\"NAME\": \"value\" or null}}}}: {error}"),
            )
        }
    };
    let edit = ScriptEdit {
        enabled: patch.enabled,
        properties: patch.properties.into_iter().collect(),
    };
    flatten(
        off_thread(&state, move |s| {
            let (view, changed) = s.scripts.edit(&acr, &edit)?;
            let names: Vec<&str> = edit.properties.iter().map(|(n, _)| n.as_str()).collect();
            tracing::info!(target: "server", acr = acr.as_str(), "admin API: script edited (enabled: {:?}, properties: {names:?}; changed: {changed})", edit.enabled);
            Ok(view)
        })
        .await,
    )
}

/// Janssen's `{"defaultAcr": "..."}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Acrs {
    #[serde(rename = "defaultAcr")]
    default_acr: Option<String>,
}

async fn get_acrs(State(state): State<AdminState>) -> Response {
    flatten(
        off_thread(&state, |s| {
            Ok(Acrs {
                default_acr: s.scripts.default_acr()?,
            })
        })
        .await,
    )
}

async fn put_acrs(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let acr = match serde_json::from_slice::<Acrs>(&body) {
        Ok(Acrs {
            default_acr: Some(acr),
        }) => acr,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "expected {\"defaultAcr\": \"ACR\"} with an acr of `GET /admin/scripts`",
            )
        }
    };
    let result = off_thread(&state, move |s| {
        s.scripts.set_default_acr(&acr)?;
        tracing::info!(target: "server", acr = acr.as_str(), "admin API: default acr set");
        Ok(Acrs {
            default_acr: s.scripts.default_acr()?,
        })
    })
    .await;
    match result {
        // Janssen answers a bad acr in the body with 400, not 404.
        Ok(Err(ScriptAdminError::Edit(error @ EditError::UnknownAcr(_)))) => {
            problem(StatusCode::BAD_REQUEST, "unknown_acr", error.to_string())
        }
        other => flatten(other),
    }
}

fn user_problem(error: AdminError) -> Response {
    match error {
        AdminError::NoSuchUser(_) => {
            problem(StatusCode::NOT_FOUND, "unknown_user", error.to_string())
        }
        AdminError::PhoneSubject(_) => {
            problem(StatusCode::BAD_REQUEST, "phone_subject", error.to_string())
        }
        AdminError::Directory(crate::ports::DirectoryError::Unavailable(_)) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            error.to_string(),
        ),
        other => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            other.to_string(),
        ),
    }
}

fn factor_json(name: &str, state: FactorState) -> serde_json::Value {
    match state {
        FactorState::Open => json!({ "user": name, "state": "open" }),
        FactorState::Locked {
            retry_after_seconds,
        } => json!({ "user": name, "state": "locked", "retryAfterSeconds": retry_after_seconds }),
        FactorState::Disabled => json!({ "user": name, "state": "disabled" }),
    }
}

async fn sms_status(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match off_thread(&state, move |s| {
        s.users.sms_status(&name).map(|f| factor_json(&name, f))
    })
    .await
    {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(error)) => user_problem(error),
        Err(response) => response,
    }
}

async fn reset_sms(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match off_thread(&state, move |s| {
        let report = s.users.reset_sms(&name)?;
        tracing::info!(target: "server", "admin API: SMS factor of {name} reset");
        let now = s.users.sms_status(&name)?;
        let mut value = factor_json(&name, now);
        value["directoryMarkRemoved"] = report.directory_mark_removed.into();
        value["storeRecordRemoved"] = report.store_record_removed.into();
        Ok::<_, AdminError>(value)
    })
    .await
    {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(error)) => user_problem(error),
        Err(response) => response,
    }
}

async fn backup_codes(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    match off_thread(&state, move |s| {
        let codes = s.users.issue_backup_codes(&name)?;
        // Never the codes: only that they were issued.
        tracing::info!(target: "server", "admin API: new backup codes issued for {name}");
        Ok::<_, AdminError>(json!({ "user": name, "codes": codes }))
    })
    .await
    {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(error)) => user_problem(error),
        Err(response) => response,
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let snapshot = off_thread(&state, |s| {
        let statuses = s.web.runtime.statuses();
        let count = |state| statuses.iter().filter(|st| st.state == state).count() as i64;
        use crate::flow::script_port::ScriptState;
        let (sent_today, budget) = s.web.engine.sms_budget_today().unwrap_or((0, 0));
        Snapshot {
            sign_ins_in_flight: s.web.engine.sign_ins_in_flight().unwrap_or(0) as i64,
            sms_sent_today: i64::from(sent_today),
            sms_daily_budget: i64::from(budget),
            scripts: vec![
                ("active", count(ScriptState::Active)),
                ("degraded", count(ScriptState::Degraded)),
                ("failed", count(ScriptState::Failed)),
                ("disabled", count(ScriptState::Disabled)),
            ],
            circuits: s
                .web
                .runtime
                .sms_circuits()
                .into_iter()
                .map(|c| (c.provider, c.state))
                .collect(),
        }
    })
    .await;
    match snapshot {
        Ok(snapshot) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::base::metrics::CONTENT_TYPE),
            );
            (headers, state.metrics.render(&snapshot)).into_response()
        }
        Err(response) => response,
    }
}
