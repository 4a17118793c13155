//! `/authorize` and the login pages: start a login for the application's acr, show each step's
//! page, take its form, and on success send the browser back with a code. The decisions are the
//! `oidc` module's and the flow's; this file maps them to pages and redirects.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::header::{ACCEPT_LANGUAGE, CONTENT_SECURITY_POLICY, RETRY_AFTER, USER_AGENT};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use serde::Serialize;

use crate::config::Config;
use crate::flow::contract;
use crate::flow::host::SignInOrigin;
use crate::flow::params::RequestParams;
use crate::flow::{FlowError, StepOutcome, StepPage};
use crate::oidc::{
    decide_authorization, AuthorizationRequest, AuthorizeDecision, AuthorizeError, CodeGrant,
    ErrorRedirect, SignedIn,
};
use crate::web::error::WebError;
use crate::web::extract::{FormPairs, LoginForm, LoginRequest, PostedLogin};
use crate::web::security::{ClientIp, LimitAddress, DEFAULT_CSP};
use crate::web::session::{self, Session};
use crate::web::{blocking, request_id, see_other, single_values, WebState};

pub async fn authorize_get(
    State(state): State<WebState>,
    Extension(limit): Extension<LimitAddress>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| authorize(app, &headers, pairs, limit.0)).await
}

pub async fn authorize_post(
    State(state): State<WebState>,
    Extension(limit): Extension<LimitAddress>,
    headers: HeaderMap,
    FormPairs(pairs): FormPairs,
) -> Response {
    blocking(&state, move |app| authorize(app, &headers, pairs, limit.0)).await
}

fn redirect_error(config: &Config, error: ErrorRedirect) -> Response {
    tracing::info!(target: "server", "authorization refused: {} ({})", error.error, error.description);
    see_other(&error.location(config.oidc.issuer_base()), HeaderMap::new())
}

fn authorize(
    state: &WebState,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
    limit_address: Option<std::net::IpAddr>,
) -> Result<Response, WebError> {
    let config = state.config.current();
    let id = request_id(headers);
    let params = single_values(pairs).map_err(WebError::RepeatedParameter)?;
    let request = match state.provider.validate_authorization(&config, &params) {
        Ok(request) => request,
        Err(AuthorizeError::Page(detail)) => {
            tracing::warn!(target: "server", request = id.as_str(), "authorization refused: {detail}");
            return Err(WebError::BadRequest {
                heading: "This application cannot sign you in",
                detail,
            });
        }
        Err(AuthorizeError::Redirect(error)) => return Ok(redirect_error(&config, error)),
    };
    let mut session = session::load(state.store.as_ref(), &config.oidc, headers)
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    let client = config.client(&request.client_id).expect("validated");
    let decision = decide_authorization(
        &request,
        client,
        session.data.signed_in.as_ref(),
        state.clock.now_secs(),
        |acr| state.runtime.status(acr).is_interactive(),
    );
    let acr = match decision {
        AuthorizeDecision::SingleSignOn(signed_in) => {
            return finish(state, &config, &mut session, &request, signed_in)
        }
        AuthorizeDecision::Refuse(error) => return Ok(redirect_error(&config, error)),
        AuthorizeDecision::StartLogin { acr } => acr,
    };
    let origin = origin_of(&request);
    // Only the choice is kept (in the session) until the first page is asked for.
    let chosen = match state
        .engine
        .choose_for(acr.as_deref(), &origin, limit_address)
    {
        Ok(chosen) => chosen,
        // Ours, not the application's: a page (429, 503), not a redirect.
        Err(error @ (FlowError::TooManyPending { .. } | FlowError::Store(_))) => {
            return Err(error.into())
        }
        Err(error) => {
            tracing::warn!(target: "server", "cannot start a login: {error}");
            let error = ErrorRedirect {
                redirect_uri: request.redirect_uri.clone(),
                state: request.state.clone(),
                error: "temporarily_unavailable",
                description: "the requested authentication method is not available".into(),
            };
            return Ok(redirect_error(&config, error));
        }
    };
    tracing::info!(target: "server", acr = chosen.acr.as_str(), login = chosen.correlation_id.as_str(), "authorization request from {}", request.client_id);
    session.data.login = None;
    session.data.chosen = Some(chosen);
    session.data.authorization = Some(request);
    let cookie = session
        .save(state.store.as_ref(), &config)
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    Ok(see_other(
        "/login",
        session::with_cookie(HeaderMap::new(), cookie),
    ))
}

/// What scripts may read of the authorization request a sign-in serves.
pub(super) fn origin_of(request: &AuthorizationRequest) -> SignInOrigin {
    SignInOrigin {
        client_id: Some(request.client_id.clone()),
        acr_values: request.acr_values.clone(),
        login_hint: request.login_hint.clone(),
        ui_locales: request.ui_locales.clone(),
    }
}

/// Issues the code and sends the browser back to the application.
fn finish(
    state: &WebState,
    config: &Config,
    session: &mut Session,
    request: &AuthorizationRequest,
    signed_in: SignedIn,
) -> Result<Response, WebError> {
    let grant = CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        user: signed_in.user.clone(),
        acr: signed_in.acr.clone(),
        amr: signed_in.amr.clone(),
        auth_time: signed_in.auth_time,
        claims: signed_in.claims.clone(),
        nonce: request.nonce.clone(),
        scope: request.scope.clone(),
        code_challenge: request.code_challenge.clone(),
    };
    let code = state
        .provider
        .issue_code(config, &grant)
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    let device = super::device::issue(state.device_key.as_ref(), &config.oidc, &signed_in.user);
    session.data.signed_in = Some(signed_in);
    session.data.login = None;
    session.data.chosen = None;
    session.data.authorization = None;
    let cookie = rotate(state, config, session)?;
    let mut location =
        url::Url::parse(&request.redirect_uri).expect("registered redirect URIs are valid URLs");
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", &code);
        if let Some(state_value) = &request.state {
            query.append_pair("state", state_value);
        }
        query.append_pair("iss", config.oidc.issuer_base());
    }
    let headers = session::with_cookie(HeaderMap::new(), Some(cookie));
    Ok(see_other(
        location.as_str(),
        session::with_cookie(headers, device),
    ))
}

/// A new session id after every step (no fixation); the cookie to set.
fn rotate(
    state: &WebState,
    config: &Config,
    session: &mut Session,
) -> Result<HeaderValue, WebError> {
    session
        .rotate(state.store.as_ref(), config)
        .map_err(|e| WebError::Unavailable(e.to_string()))
}

/// To the next page, with the rotated session cookie.
fn next_page(state: &WebState, session: &mut Session) -> Result<Response, WebError> {
    let cookie = rotate(state, &state.config.current(), session)?;
    Ok(see_other(
        "/login",
        session::with_cookie(HeaderMap::new(), Some(cookie)),
    ))
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

fn render_step(state: &WebState, session: &Session, page: &StepPage) -> Result<Response, WebError> {
    let Some(template) = template_for(&page.page).filter(|t| state.pages.exists(t)) else {
        return Err(WebError::PageUnavailable(format!(
            "acr={} login={}: getPageForStep named page {:?}, which has no template: add {}.html to the pages directory",
            page.acr, page.correlation_id, page.page, page.page
        )));
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
    let html = state
        .pages
        .render(&template, &view)
        .map_err(|e| WebError::PageUnavailable(format!("acr={}: {e}", page.acr)))?;
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
    Ok(response)
}

pub async fn show_step(State(state): State<WebState>, request: LoginRequest) -> Response {
    blocking(&state, move |app| {
        let in_login = request.open(app)?;
        let page = app.engine.current(&in_login.login)?;
        render_step(app, &in_login.session, &page)
    })
    .await
}

pub async fn submit_step(
    State(state): State<WebState>,
    Extension(client): Extension<ClientIp>,
    Extension(limit): Extension<LimitAddress>,
    posted: PostedLogin,
) -> Response {
    blocking(&state, move |app| {
        submit(app, client, limit, posted.open(app)?)
    })
    .await
}

fn submit(
    state: &WebState,
    client: ClientIp,
    limit: LimitAddress,
    form: LoginForm,
) -> Result<Response, WebError> {
    // A repeated field (two passcodes, two passwords) is refused, never guessed at.
    let mut seen = std::collections::HashSet::new();
    if form.fields.iter().any(|(n, _)| !seen.insert(n.as_str())) {
        return Err(WebError::InvalidForm("A field of the form is repeated."));
    }
    let step = form
        .field("step")
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or(WebError::InvalidForm("The form is missing its step."))?;
    let LoginForm {
        mut session,
        login,
        fields,
        headers,
    } = form;
    let headers = &headers;
    let language = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let user_agent = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let params = RequestParams::from_pairs(
        fields
            .into_iter()
            .filter(|(n, _)| n != "csrf" && n != "step"),
    )
    .with_user_agent(user_agent)
    .with_device_user(super::device::user_of(
        state.device_key.as_ref(),
        &state.config.current().oidc,
        headers,
    ))
    .with_client_ip(client.0)
    .with_limit_address(limit.0)
    .with_accept_language(language);
    match state.engine.submit(&login, step, &params)? {
        StepOutcome::Next(_) => next_page(state, &mut session),
        StepOutcome::Retry(page) => retry_response(state, &session, &page),
        StepOutcome::Authenticated(done) => {
            let request = session
                .data
                .authorization
                .clone()
                .ok_or(WebError::NoLogin)?;
            let signed_in = SignedIn {
                user: done.user,
                acr: done.acr,
                amr: done.amr,
                auth_time: done.auth_time,
                claims: done.claims,
            };
            finish(
                state,
                &state.config.current(),
                &mut session,
                &request,
                signed_in,
            )
        }
    }
}

/// The same page again: after a 303 normally, or at once with 429 (and Retry-After when waiting
/// helps) when a sending limit refused a message.
fn retry_response(
    state: &WebState,
    session: &Session,
    page: &StepPage,
) -> Result<Response, WebError> {
    let Some(seconds) = page.retry_after else {
        return Ok(see_other("/login", HeaderMap::new()));
    };
    let mut response = render_step(state, session, page)?;
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    if seconds > 0 {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    Ok(response)
}

pub async fn resend_code(
    State(state): State<WebState>,
    Extension(client): Extension<ClientIp>,
    Extension(limit): Extension<LimitAddress>,
    posted: PostedLogin,
) -> Response {
    blocking(&state, move |app| {
        let form = posted.open(app)?;
        let params = RequestParams::new()
            .with_client_ip(client.0)
            .with_limit_address(limit.0);
        match app.engine.resend(&form.login, &params)? {
            StepOutcome::Retry(page) => retry_response(app, &form.session, &page),
            _ => Ok(see_other("/login", HeaderMap::new())),
        }
    })
    .await
}

/// `POST /login/switch`: the user picks one of the other methods the page offered.
pub async fn switch_method(State(state): State<WebState>, posted: PostedLogin) -> Response {
    blocking(&state, move |app| {
        let form = posted.open(app)?;
        let acr = form.field("acr").unwrap_or("").to_owned();
        let mut session = form.session;
        match app.engine.switch(&form.login, &acr) {
            Ok(page) => {
                session.data.login = Some(page.login.as_str().to_owned());
                next_page(app, &mut session)
            }
            Err(FlowError::UnknownAcr(_)) => Ok(see_other("/login", HeaderMap::new())),
            Err(error) => Err(error.into()),
        }
    })
    .await
}
