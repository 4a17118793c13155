//! Every response: a request id, security headers, no caching; and one access-log line.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::ConnectInfo;

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::instrument::WithSubscriber;

use crate::base::random;
use crate::config::ServerConfig;
use crate::web::error::ErrorPage;
use crate::web::WebState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Pages may widen `form-action` (the redirect to the application after the last step): they set
/// their own CSP; everything else gets this one.
pub const DEFAULT_CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The client's address: the peer, or, behind a trusted proxy, the last X-Forwarded-For entry
/// that is not itself a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// The address per-address limits count the client under (an IPv6 client by its network).
#[derive(Debug, Clone, Copy)]
pub struct LimitAddress(pub Option<IpAddr>);

fn client_ip(request: &Request, server: &ServerConfig) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())?;
    let is_trusted = |ip: &IpAddr| server.is_trusted_proxy(ip);
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

pub async fn headers_and_log(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let config = state.config.current();
    let client = ClientIp(client_ip(&request, &config.server));
    let bucket = client
        .0
        .map(|ip| crate::base::address::limit_bucket(ip, config.server.ipv6_prefix_length));
    request.extensions_mut().insert(client);
    request.extensions_mut().insert(LimitAddress(bucket));
    let id = random::hex_token(8).unwrap_or_else(|_| "-".into());
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    if let Ok(value) = HeaderValue::from_str(&id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    // A request, its body included, has a time limit: a body that never ends holds nothing.
    // The body is read whole before any handler judges the request: an answer given with body
    // bytes still unread (a 415, a 404, an expired sign-in) made hyper drop the kept-alive
    // connection now and then.
    let limit = std::time::Duration::from_millis(config.server.request_timeout_ms);
    let run = async move {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, super::BODY_LIMIT).await {
            Ok(bytes) => {
                next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                    .await
            }
            Err(_) => axum::response::IntoResponse::into_response(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ),
        }
    };
    let mut response = match tokio::time::timeout(limit, run.with_subscriber(state.log.clone()))
        .await
    {
        Ok(response) => response,
        Err(_) => {
            state.log_scope(|| tracing::warn!(target: "server", request = id.as_str(), "{method} {path}: no complete request within {} ms: 408", limit.as_millis()));
            axum::response::IntoResponse::into_response(axum::http::StatusCode::REQUEST_TIMEOUT)
        }
    };
    if let Some(page) = response.extensions_mut().remove::<ErrorPage>() {
        let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
        response = render_error(&state, response.status(), page, &id, retry_after);
    }
    let https = config.oidc.is_https();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_CSP),
        );
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_micros();
    state.log_scope(|| tracing::debug!(target: "server", request = id.as_str(), "{method} {path} -> {status} in {elapsed} us"));
    response
}

/// The one place an error page is rendered and its log line written, with the request id.
fn render_error(
    state: &WebState,
    status: axum::http::StatusCode,
    page: ErrorPage,
    id: &str,
    original_retry_after: Option<HeaderValue>,
) -> Response {
    if let Some((level, detail)) = &page.log {
        state.log_scope(|| match *level {
            tracing::Level::ERROR => tracing::error!(target: "server", request = id, "{detail}"),
            tracing::Level::WARN => tracing::warn!(target: "server", request = id, "{detail}"),
            _ => tracing::info!(target: "server", request = id, "{detail}"),
        });
    }
    let mut response = state.error_page(status, page.heading, &page.detail, id);
    if let Some(retry_after) = original_retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after);
    }
    response
}
