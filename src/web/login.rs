//! `/authorize` and the login pages: start a login for the application's acr, show each step's
//! page, take its form, and on success send the browser back with a code.

use std::collections::BTreeMap;

use axum::extract::{Form, Query, State};
use axum::http::header::{ACCEPT_LANGUAGE, CONTENT_SECURITY_POLICY, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use serde::Serialize;

use crate::config::Config;
use crate::flow::contract;
use crate::flow::params::RequestParams;
use crate::flow::{FlowError, LoginHandle, StepOutcome, StepPage};
use crate::oidc::{AuthorizationRequest, AuthorizeError, CodeGrant, ErrorRedirect};
use crate::web::security::{ClientIp, DEFAULT_CSP};
use crate::web::session::{self, Session, SignedIn};
use crate::web::{blocking, request_id, see_other, single_values, WebState};

pub async fn authorize_get(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| authorize(app, &headers, pairs)).await
}

pub async fn authorize_post(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| authorize(app, &headers, pairs)).await
}

fn redirect_error(config: &Config, error: ErrorRedirect) -> Response {
    tracing::info!(target: "server", "authorization refused: {} ({})", error.error, error.description);
    see_other(
        &error.location(config.oidc.issuer.trim_end_matches('/')),
        HeaderMap::new(),
    )
}

fn authorize(state: &WebState, headers: &HeaderMap, pairs: Vec<(String, String)>) -> Response {
    let config = state.config.current();
    let id = request_id(headers);
    let params = match single_values(pairs) {
        Ok(params) => params,
        Err(name) => {
            return state.error_page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &format!("The parameter {name} is repeated."),
                &id,
            )
        }
    };
    let request = match state.provider.validate_authorization(&config, &params) {
        Ok(request) => request,
        Err(AuthorizeError::Page(detail)) => {
            tracing::warn!(target: "server", request = id.as_str(), "authorization refused: {detail}");
            return state.error_page(
                StatusCode::BAD_REQUEST,
                "This application cannot sign you in",
                &detail,
                &id,
            );
        }
        Err(AuthorizeError::Redirect(error)) => return redirect_error(&config, error),
    };
    let refuse = |error: &'static str, description: &str| {
        redirect_error(
            &config,
            ErrorRedirect {
                redirect_uri: request.redirect_uri.clone(),
                state: request.state.clone(),
                error,
                description: description.to_owned(),
            },
        )
    };
    let mut session = match session::load(state.store.as_ref(), &config.oidc, headers) {
        Ok(session) => session,
        Err(e) => return unavailable(state, &e.to_string(), &id),
    };
    let client = config.client(&request.client_id).expect("validated");
    let wanted: &[String] = if request.acr_values.is_empty() {
        &client.default_acr_values
    } else {
        &request.acr_values
    };
    // Single sign-on: a browser signed in with an acceptable method skips the login.
    if let Some(signed_in) = session.data.signed_in.clone().filter(|s| {
        !request.prompt_login && request.accepts_sign_in_from(s.auth_time, state.clock.now_secs())
    }) {
        if wanted.is_empty() || wanted.contains(&signed_in.acr) {
            tracing::info!(target: "server", acr = signed_in.acr.as_str(), "single sign-on for {} to {}", crate::base::phone::subject_for_log(&signed_in.user), request.client_id);
            return finish(state, &config, &mut session, &request, signed_in, &id);
        }
    }
    if request.prompt_none {
        return refuse(
            "login_required",
            "the user is not signed in with a requested method",
        );
    }
    let acr = if wanted.is_empty() {
        None
    } else {
        match wanted
            .iter()
            .find(|acr| state.runtime.status(acr).is_interactive())
        {
            Some(acr) => Some(acr.clone()),
            None => {
                tracing::warn!(target: "server", "none of the acr_values {wanted:?} is enabled for {}", request.client_id);
                return refuse(
                    "invalid_request",
                    "none of the requested acr_values is available",
                );
            }
        }
    };
    let page = match state.engine.start(acr.as_deref()) {
        Ok(page) => page,
        Err(error) => {
            tracing::warn!(target: "server", "cannot start a login: {error}");
            return refuse(
                "temporarily_unavailable",
                "the requested authentication method is not available",
            );
        }
    };
    tracing::info!(target: "server", acr = page.acr.as_str(), login = page.correlation_id.as_str(), "authorization request from {}", request.client_id);
    session.data.login = Some(page.login.as_str().to_owned());
    session.data.authorization = Some(request);
    match session.save(state.store.as_ref(), &config.oidc) {
        Ok(cookie) => see_other("/login", session::with_cookie(HeaderMap::new(), cookie)),
        Err(e) => unavailable(state, &e.to_string(), &id),
    }
}

fn unavailable(state: &WebState, detail: &str, id: &str) -> Response {
    tracing::error!(target: "server", request = id, "{detail}");
    state.error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        "The service is temporarily unavailable.",
        id,
    )
}

/// Issues the code and sends the browser back to the application.
fn finish(
    state: &WebState,
    config: &Config,
    session: &mut Session,
    request: &AuthorizationRequest,
    signed_in: SignedIn,
    id: &str,
) -> Response {
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        user: signed_in.user.clone(),
        acr: signed_in.acr.clone(),
        amr: signed_in.amr.clone(),
        auth_time: signed_in.auth_time,
        nonce: request.nonce.clone(),
        scope: request.scope.clone(),
        code_challenge: request.code_challenge.clone(),
    };
    let code = match state.provider.issue_code(config, &grant) {
        Ok(code) => code,
        Err(e) => return unavailable(state, &e.to_string(), id),
    };
    session.data.signed_in = Some(signed_in);
    session.data.login = None;
    session.data.authorization = None;
    let cookie = match session.rotate(state.store.as_ref(), &config.oidc) {
        Ok(cookie) => cookie,
        Err(e) => return unavailable(state, &e.to_string(), id),
    };
    let mut location =
        url::Url::parse(&request.redirect_uri).expect("registered redirect URIs are valid URLs");
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(state_value) = &request.state {
            query.append_pair("state", state_value);
        }
        query.append_pair("iss", config.oidc.issuer.trim_end_matches('/'));
    }
    see_other(
        location.as_str(),
        session::with_cookie(HeaderMap::new(), Some(cookie)),
    )
}

#[derive(Serialize)]
struct StepView<'a> {
    csrf: &'a str,
    step: u32,
    acr: &'a str,
    message: Option<&'a str>,
    sent_to: Option<&'a str>,
    working: &'a BTreeMap<String, String>,
    alternatives: &'a [String],
    can_resend: bool,
    numeric_code: bool,
}

fn template_for(page: &str) -> Option<String> {
    if page.is_empty() {
        return Some("login.html".into());
    }
    let plain = page
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    plain.then(|| format!("{page}.html"))
}

fn render_step(state: &WebState, session: &Session, page: &StepPage, id: &str) -> Response {
    let Some(template) = template_for(&page.page).filter(|t| state.pages.exists(t)) else {
        tracing::error!(target: "server", acr = page.acr.as_str(), login = page.correlation_id.as_str(), "getPageForStep named page {:?}, which has no template: add {}.html to the pages directory", page.page, page.page);
        return state.error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in is not available",
            "This sign-in step cannot be shown.",
            id,
        );
    };
    let view = StepView {
        csrf: &session.data.csrf,
        step: page.step,
        acr: &page.acr,
        message: page.message.as_deref(),
        sent_to: page.working.get(contract::SENT_TO).map(String::as_str),
        working: &page.working,
        alternatives: &page.alternatives,
        can_resend: page.can_resend,
        numeric_code: page.numeric_code,
    };
    match state.pages.render(&template, &view) {
        Ok(html) => {
            // The last step's answer redirects to the application: allow that origin as a form target.
            let target = session
                .data
                .authorization
                .as_ref()
                .and_then(|a| url::Url::parse(&a.redirect_uri).ok())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default();
            let csp = DEFAULT_CSP.replace(
                "form-action 'self'",
                &format!("form-action 'self' {target}"),
            );
            let mut response = Html(html).into_response();
            if let Ok(value) = HeaderValue::from_str(&csp) {
                response
                    .headers_mut()
                    .insert(CONTENT_SECURITY_POLICY, value);
            }
            response
        }
        Err(error) => {
            tracing::error!(target: "server", acr = page.acr.as_str(), "{error}");
            state.error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not available",
                "This sign-in step cannot be shown.",
                id,
            )
        }
    }
}

fn no_login(state: &WebState, id: &str) -> Response {
    state.error_page(
        StatusCode::BAD_REQUEST,
        "No sign-in in progress",
        "Your sign-in has expired or was never started. Go back to the application and start again.",
        id,
    )
}

fn current_login(session: &Session) -> Option<LoginHandle> {
    session.data.login.as_deref().and_then(LoginHandle::parse)
}

/// The browser's session and its login in progress, or the page that says why there is none.
// The error is the response to return: built at most once per request, size does not matter.
#[allow(clippy::result_large_err)]
fn session_with_login(
    state: &WebState,
    config: &Config,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Session, LoginHandle), Response> {
    let session = session::load(state.store.as_ref(), &config.oidc, headers)
        .map_err(|e| unavailable(state, &e.to_string(), id))?;
    match current_login(&session).filter(|_| session.id.is_some()) {
        Some(login) => Ok((session, login)),
        None => Err(no_login(state, id)),
    }
}

/// Refuses a form whose CSRF token is missing or wrong (compared in constant time).
#[allow(clippy::result_large_err)]
fn check_csrf(
    state: &WebState,
    session: &Session,
    pairs: &[(String, String)],
    id: &str,
) -> Result<(), Response> {
    let csrf = pairs
        .iter()
        .find(|(n, _)| n == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        csrf.as_bytes(),
        session.data.csrf.as_bytes(),
    )) {
        return Ok(());
    }
    tracing::warn!(target: "server", request = id, "form refused: missing or wrong CSRF token");
    Err(state.error_page(
        StatusCode::FORBIDDEN,
        "This form has expired",
        "Go back to the application and start again.",
        id,
    ))
}

pub async fn show_step(State(state): State<WebState>, headers: HeaderMap) -> Response {
    blocking(&state, move |app| {
        let config = app.config.current();
        let id = request_id(&headers);
        let (session, login) = match session_with_login(app, &config, &headers, &id) {
            Ok(found) => found,
            Err(response) => return response,
        };
        match app.engine.current(&login) {
            Ok(page) => render_step(app, &session, &page, &id),
            Err(error) => flow_failure(app, error, &id),
        }
    })
    .await
}

pub async fn submit_step(
    State(state): State<WebState>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| submit(app, &headers, client, pairs)).await
}

fn submit(
    state: &WebState,
    headers: &HeaderMap,
    client: ClientIp,
    pairs: Vec<(String, String)>,
) -> Response {
    let config = state.config.current();
    let id = request_id(headers);
    let (mut session, login) = match session_with_login(state, &config, headers, &id) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Err(response) = check_csrf(state, &session, &pairs, &id) {
        return response;
    }
    // A repeated field (two passcodes, two passwords) is refused, never guessed at.
    let mut seen = std::collections::HashSet::new();
    if let Some((name, _)) = pairs.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        tracing::warn!(target: "server", request = id.as_str(), "login form refused: field {name} is repeated");
        return state.error_page(
            StatusCode::BAD_REQUEST,
            "Invalid form",
            "A field of the form is repeated.",
            &id,
        );
    }
    let Some(step) = pairs
        .iter()
        .find(|(n, _)| n == "step")
        .and_then(|(_, v)| v.parse::<u32>().ok())
    else {
        return state.error_page(
            StatusCode::BAD_REQUEST,
            "Invalid form",
            "The form is missing its step.",
            &id,
        );
    };
    let language = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let params = RequestParams::from_pairs(
        pairs
            .into_iter()
            .filter(|(n, _)| n != "csrf" && n != "step"),
    )
    .with_client_ip(client.0)
    .with_accept_language(language);
    match state.engine.submit(&login, step, &params) {
        Ok(StepOutcome::Next(_)) => match session.rotate(state.store.as_ref(), &config.oidc) {
            Ok(cookie) => see_other(
                "/login",
                session::with_cookie(HeaderMap::new(), Some(cookie)),
            ),
            Err(e) => unavailable(state, &e.to_string(), &id),
        },
        Ok(StepOutcome::Retry(page)) => retry_response(state, &session, &page, &id),
        Ok(StepOutcome::Authenticated(done)) => {
            let Some(request) = session.data.authorization.clone() else {
                return no_login(state, &id);
            };
            let signed_in = SignedIn {
                user: done.user,
                acr: done.acr,
                amr: done.amr,
                auth_time: done.auth_time,
            };
            finish(state, &config, &mut session, &request, signed_in, &id)
        }
        Err(error) => flow_failure(state, error, &id),
    }
}

/// The same page again: after a 303 normally, or at once with 429 (and Retry-After when waiting
/// helps) when a sending limit refused a message.
fn retry_response(state: &WebState, session: &Session, page: &StepPage, id: &str) -> Response {
    match page.retry_after {
        Some(seconds) => {
            let mut response = render_step(state, session, page, id);
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            if seconds > 0 {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(seconds));
            }
            response
        }
        None => see_other("/login", HeaderMap::new()),
    }
}

pub async fn resend_code(
    State(state): State<WebState>,
    Extension(client): Extension<ClientIp>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| {
        let config = app.config.current();
        let id = request_id(&headers);
        let (session, login) = match session_with_login(app, &config, &headers, &id) {
            Ok(found) => found,
            Err(response) => return response,
        };
        if let Err(response) = check_csrf(app, &session, &pairs, &id) {
            return response;
        }
        let params = RequestParams::new().with_client_ip(client.0);
        match app.engine.resend(&login, &params) {
            Ok(StepOutcome::Retry(page)) => retry_response(app, &session, &page, &id),
            Ok(_) => see_other("/login", HeaderMap::new()),
            Err(error) => flow_failure(app, error, &id),
        }
    })
    .await
}

/// `POST /login/switch`: the user picks one of the other methods the page offered.
pub async fn switch_method(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| {
        let config = app.config.current();
        let id = request_id(&headers);
        let (mut session, login) = match session_with_login(app, &config, &headers, &id) {
            Ok(found) => found,
            Err(response) => return response,
        };
        if let Err(response) = check_csrf(app, &session, &pairs, &id) {
            return response;
        }
        let acr = pairs
            .iter()
            .find(|(n, _)| n == "acr")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        match app.engine.switch(&login, acr) {
            Ok(page) => {
                session.data.login = Some(page.login.as_str().to_owned());
                match session.rotate(app.store.as_ref(), &config.oidc) {
                    Ok(cookie) => see_other(
                        "/login",
                        session::with_cookie(HeaderMap::new(), Some(cookie)),
                    ),
                    Err(e) => unavailable(app, &e.to_string(), &id),
                }
            }
            Err(FlowError::UnknownAcr(_)) => see_other("/login", HeaderMap::new()),
            Err(error) => flow_failure(app, error, &id),
        }
    })
    .await
}

/// The one place login flow errors become responses.
fn flow_failure(state: &WebState, error: FlowError, id: &str) -> Response {
    match error {
        FlowError::StepOutOfOrder { .. } | FlowError::Conflict | FlowError::NothingToResend => {
            see_other("/login", HeaderMap::new())
        }
        FlowError::LoginNotFound => no_login(state, id),
        FlowError::UnknownAcr(_)
        | FlowError::DisabledAcr(_)
        | FlowError::UnavailableAcr { .. }
        | FlowError::NotInteractive(_)
        | FlowError::NoDefaultAcr
        | FlowError::MethodNotValid(_)
        | FlowError::StepNotPrepared { .. }
        | FlowError::Script(_) => {
            tracing::error!(target: "server", request = id, "login cannot continue: {error}");
            state.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is not available",
                "Please try again later.",
                id,
            )
        }
        FlowError::Store(_) | FlowError::Corrupt(_) => unavailable(state, &error.to_string(), id),
    }
}
