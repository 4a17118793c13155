//! Extractors for the login pages: the browser's session with its login in progress
//! ([`InLogin`]), and a posted login form with its CSRF token checked ([`LoginForm`]). Handlers
//! start from a request that is known to belong to a sign-in.
//!
//! Loading the session may block (a shared store is a network call; beginning a chosen sign-in
//! runs its script), so the extractors only take what the request carries ([`LoginRequest`],
//! [`PostedLogin`]) and the handler opens it inside its one blocking section: one step aside
//! from the async workers per request, not one for the session and one for the work.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::flow::LoginHandle;
use crate::web::error::WebError;
use crate::web::session::{self, Session};
use crate::web::WebState;

/// The browser's session and the login it has in progress.
pub struct InLogin {
    pub session: Session,
    pub login: LoginHandle,
}

/// A request to a login page, its session not loaded yet: [`LoginRequest::open`] it on the
/// blocking side.
pub struct LoginRequest {
    headers: HeaderMap,
}

impl<S: Send + Sync> FromRequestParts<S> for LoginRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(LoginRequest {
            headers: parts.headers.clone(),
        })
    }
}

impl LoginRequest {
    /// Loads the session (beginning the sign-in `/authorize` chose, if not begun yet) and finds
    /// its login. Blocks.
    pub fn open(&self, app: &WebState) -> Result<InLogin, WebError> {
        open_login(app, &self.headers)
    }
}

fn open_login(app: &WebState, headers: &HeaderMap) -> Result<InLogin, WebError> {
    let config = app.config.current();
    let mut session = session::load(app.store.as_ref(), &config.oidc, headers)
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    if session.id.is_some() {
        begin_chosen(app, &config, &mut session)?;
    }
    let login = session
        .data
        .login
        .as_deref()
        .and_then(LoginHandle::parse)
        .filter(|_| session.id.is_some())
        .ok_or(WebError::NoLogin)?;
    Ok(InLogin { session, login })
}

/// Whether the request's body is declared `application/x-www-form-urlencoded`.
pub fn is_urlencoded_form(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A posted urlencoded form as name/value pairs, in order. The body is read whole (bounded by
/// the body limit) before its content type is judged: a refusal that left unread bytes on a
/// kept-alive connection made hyper drop that connection now and then.
pub struct FormPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequest<S> for FormPairs {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let is_form = is_urlencoded_form(request.headers());
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !is_form {
            return Err(WebError::NotAForm.into_response());
        }
        Ok(FormPairs(
            url::form_urlencoded::parse(&body).into_owned().collect(),
        ))
    }
}

/// Begins the sign-in `/authorize` chose, on the first request that needs it.
fn begin_chosen(
    app: &WebState,
    config: &crate::config::Config,
    session: &mut Session,
) -> Result<(), WebError> {
    let Some(chosen) = session.data.chosen.clone() else {
        return Ok(());
    };
    let origin = session
        .data
        .authorization
        .as_ref()
        .map(super::login::origin_of)
        .unwrap_or_default();
    let page = app.engine.begin(&chosen, origin)?;
    session.data.chosen = None;
    session.data.login = Some(page.login.as_str().to_owned());
    session
        .save(app.store.as_ref(), config)
        .map_err(|e| WebError::Unavailable(e.to_string()))?;
    Ok(())
}

/// A posted login form: the session and its login, the form's fields, the CSRF token compared
/// in constant time.
pub struct LoginForm {
    pub session: Session,
    pub login: LoginHandle,
    /// The fields as posted, in order (`csrf` included).
    pub fields: Vec<(String, String)>,
    /// The request's headers.
    pub headers: HeaderMap,
}

/// A posted login form as it arrived, its session not loaded yet: [`PostedLogin::open`] it on
/// the blocking side. The body is read whole first (see [`FormPairs`]).
pub struct PostedLogin {
    headers: HeaderMap,
    is_form: bool,
    fields: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequest<S> for PostedLogin {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let is_form = is_urlencoded_form(&headers);
        let body = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = match is_form {
            true => url::form_urlencoded::parse(&body).into_owned().collect(),
            false => Vec::new(),
        };
        Ok(PostedLogin {
            headers,
            is_form,
            fields,
        })
    }
}

impl PostedLogin {
    /// The session and its login (as [`LoginRequest::open`]), then the form and its CSRF
    /// token. Blocks.
    pub fn open(self, app: &WebState) -> Result<LoginForm, WebError> {
        let InLogin { session, login } = open_login(app, &self.headers)?;
        if !self.is_form {
            return Err(WebError::NotAForm);
        }
        let csrf = self
            .fields
            .iter()
            .find(|(n, _)| n == "csrf")
            .map_or("", |(_, v)| v.as_str());
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            csrf.as_bytes(),
            session.data.csrf.as_bytes(),
        )) {
            return Err(WebError::Csrf);
        }
        Ok(LoginForm {
            session,
            login,
            fields: self.fields,
            headers: self.headers,
        })
    }
}

impl LoginForm {
    /// The first value of `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
