//! OpenID Connect endpoints: discovery, JWKS, token, userinfo, RP-initiated logout.

use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::Engine as _;

use crate::flow::params::RequestParams;
use crate::oidc::logout_target;
use crate::web::error::WebError;
use crate::web::extract::{is_urlencoded_form, FormPairs};
use crate::web::security::LimitAddress;
use crate::web::session;
use crate::web::{blocking, request_id, see_other, single_values, WebState};

pub async fn discovery(State(state): State<WebState>) -> Response {
    let config = state.config.current();
    let document = state.provider.discovery(&config, &state.interactive_acrs());
    (
        [(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        Json(document),
    )
        .into_response()
}

pub async fn jwks(State(state): State<WebState>) -> Response {
    (
        [(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(state.provider.jwks()),
    )
        .into_response()
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 section 2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

fn token_error(status: u16, error: &str, description: &str, basic: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(serde_json::json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED && basic {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gatehouse\""),
        );
    }
    response
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The form of a token request. The body is always read whole first (bounded by the body
/// limit), so an answer about its content type never leaves unread bytes on a kept-alive
/// connection (which made hyper drop the connection now and then).
/// `None` when the body is not a form (the caller answers 415).
fn token_form(headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, String)>> {
    is_urlencoded_form(headers).then(|| url::form_urlencoded::parse(body).into_owned().collect())
}

pub async fn token(
    State(state): State<WebState>,
    Extension(limit): Extension<LimitAddress>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(pairs) = token_form(&headers, &body) else {
        return token_error(
            415,
            "invalid_request",
            "send the token request as application/x-www-form-urlencoded",
            false,
        );
    };
    blocking(&state, move |app| {
            let basic = basic_credentials(&headers);
            let used_basic = headers.contains_key(AUTHORIZATION);
            let form = match single_values(pairs) {
                Ok(form) => form,
                Err(name) => return token_error(400, "invalid_request", &format!("parameter {name} is repeated"), used_basic),
            };
            let config = app.config.current();
            match app.provider.exchange_code(&config, &form, basic, limit.0) {
                Ok(tokens) => {
                    tracing::info!(target: "server", request = request_id(&headers).as_str(), "tokens issued ({})", tokens.scope);
                    let mut response = Json(tokens).into_response();
                    response.headers_mut().insert(PRAGMA, HeaderValue::from_static("no-cache"));
                    response
                }
                Err(error) => {
                    tracing::warn!(target: "server", request = request_id(&headers).as_str(), "token request refused: {} ({})", error.error, error.description);
                    let mut response = token_error(error.status, error.error, &error.description, used_basic);
                    if let Some(seconds) = error.retry_after {
                        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
                    }
                    response
                }
            }
    })
    .await
}

pub async fn userinfo(State(state): State<WebState>, headers: HeaderMap) -> Response {
    blocking(&state, move |app| {
        let refuse = || {
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            response
        };
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(token) = token else { return refuse() };
        match app.provider.userinfo(token.trim()) {
            Ok(Some(claims)) => Json(claims).into_response(),
            Ok(None) => refuse(),
            Err(e) => {
                tracing::error!(target: "server", "userinfo: {e}");
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    })
    .await
}

pub async fn end_session(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    blocking(&state, move |app| {
        end_session_now(app, &headers, pairs, false)
    })
    .await
}

/// RP-Initiated Logout by POST (the spec allows it), and the user's confirmation.
pub async fn end_session_post(
    State(state): State<WebState>,
    headers: HeaderMap,
    FormPairs(pairs): FormPairs,
) -> Response {
    blocking(&state, move |app| {
        end_session_now(app, &headers, pairs, true)
    })
    .await
}

/// Ends the browser's session. Without a valid `id_token_hint` the request could come from any
/// site (a cross-site GET would sign the user out), so the user is asked to confirm unless the
/// request is that confirmation: a POST with the session's CSRF token (RP-Initiated Logout 1.0,
/// section 2).
fn end_session_now(
    app: &WebState,
    headers: &HeaderMap,
    pairs: Vec<(String, String)>,
    posted: bool,
) -> Result<Response, WebError> {
    let config = app.config.current();
    let invalid = |detail: &str| WebError::BadRequest {
        heading: "Invalid request",
        detail: detail.to_owned(),
    };
    let params = single_values(pairs).map_err(WebError::RepeatedParameter)?;
    let hint = params
        .get("id_token_hint")
        .and_then(|t| app.provider.logout_hint(&config, t));
    if params.contains_key("id_token_hint") && hint.is_none() {
        return Err(invalid("The id_token_hint is not valid."));
    }
    let client_id = hint
        .as_ref()
        .map(|h| h.client_id.clone())
        .or_else(|| params.get("client_id").cloned());
    let target = logout_target(
        &config,
        client_id.as_deref(),
        params.get("post_logout_redirect_uri").map(String::as_str),
    )
    .map_err(|refused| invalid(&refused.to_string()))?;
    let mut session = session::load(app.store.as_ref(), &config.oidc, headers)
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    let confirmed = posted
        && params.get("csrf").is_some_and(|csrf| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                csrf.as_bytes(),
                session.data.csrf.as_bytes(),
            ))
        });
    if hint.is_none() && !confirmed && session.data.signed_in.is_some() {
        let html = app
            .pages
            .render(
                "confirm_sign_out.html",
                minijinja::context! {
                    csrf => session.data.csrf.clone(),
                    client_id => client_id.clone(),
                    post_logout_redirect_uri => target.clone(),
                    state => params.get("state").cloned(),
                },
            )
            .map_err(|e| WebError::PageUnavailable(e.to_string()))?;
        return Ok(Html(html).into_response());
    }
    if let Some(signed_in) = session.data.signed_in.clone() {
        let same_user = hint.as_ref().is_none_or(|h| h.user == signed_in.user);
        if same_user {
            let params = RequestParams::from_pairs(
                params
                    .iter()
                    .filter(|(n, _)| *n != "id_token_hint" && *n != "csrf")
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            app.engine.logout(&signed_in.acr, &signed_in.user, &params);
        }
    }
    let cookie = session.destroy(app.store.as_ref(), &config.oidc).ok();
    let headers = session::with_cookie(HeaderMap::new(), cookie);
    Ok(match target {
        Some(uri) => {
            let mut location = url::Url::parse(&uri).expect("registered URIs are valid");
            if let Some(state_value) = params.get("state") {
                location.query_pairs_mut().append_pair("state", state_value);
            }
            see_other(location.as_str(), headers)
        }
        None => {
            let html = app
                .pages
                .render("signed_out.html", minijinja::context! {})
                .unwrap_or_default();
            (headers, Html(html)).into_response()
        }
    })
}
