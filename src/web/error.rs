//! [`WebError`]: everything a handler can fail with, and the one place each becomes a response.
//! Handlers return `Result<_, WebError>` and use `?`. An error page is rendered by the request
//! middleware (`security::headers_and_log`), which knows the request id the page shows and the
//! log line carries; internals go to the log, never to the browser.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::flow::FlowError;
use crate::web::see_other;

#[derive(Debug)]
pub enum WebError {
    /// A query or form parameter was sent twice (RFC 6749 section 3.1).
    RepeatedParameter(String),
    /// A login form that cannot be read: what is wrong with it.
    InvalidForm(&'static str),
    /// A POST whose body is not `application/x-www-form-urlencoded`.
    NotAForm,
    /// No sign-in in progress in this browser: expired, or never started.
    NoLogin,
    /// A form whose CSRF token is missing or wrong.
    Csrf,
    /// A request Gatehouse refuses with a page of its own (never a redirect): what to tell.
    BadRequest {
        heading: &'static str,
        detail: String,
    },
    /// The state store (or another dependency) failed: the detail is for the log.
    Unavailable(String),
    /// The login flow could not go on.
    Flow(FlowError),
    /// A step's page cannot be shown (its template is missing or fails): the detail is logged.
    PageUnavailable(String),
}

impl From<FlowError> for WebError {
    fn from(error: FlowError) -> Self {
        WebError::Flow(error)
    }
}

/// An error page the middleware renders: status, what the user reads, what the log says.
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub heading: &'static str,
    pub detail: String,
    pub log: Option<(tracing::Level, String)>,
}

fn page(
    status: StatusCode,
    heading: &'static str,
    detail: impl Into<String>,
    log: Option<(tracing::Level, String)>,
) -> Response {
    let mut response = status.into_response();
    response.extensions_mut().insert(ErrorPage {
        heading,
        detail: detail.into(),
        log,
    });
    response
}

fn unavailable(detail: String) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        "The service is temporarily unavailable.",
        Some((tracing::Level::ERROR, detail)),
    )
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        use tracing::Level;
        match self {
            WebError::RepeatedParameter(name) => page(
                StatusCode::BAD_REQUEST,
                "Invalid request",
                format!("The parameter {name} is repeated."),
                None,
            ),
            WebError::InvalidForm(detail) => page(
                StatusCode::BAD_REQUEST,
                "Invalid form",
                detail,
                Some((Level::WARN, format!("login form refused: {detail}"))),
            ),
            WebError::NotAForm => page(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Invalid form",
                "Send the form as application/x-www-form-urlencoded.",
                None,
            ),
            WebError::NoLogin => page(
                StatusCode::BAD_REQUEST,
                "No sign-in in progress",
                "Your sign-in has expired or was never started. Go back to the application and start again.",
                None,
            ),
            WebError::Csrf => page(
                StatusCode::FORBIDDEN,
                "This form has expired",
                "Go back to the application and start again.",
                Some((
                    Level::WARN,
                    "form refused: missing or wrong CSRF token".into(),
                )),
            ),
            WebError::BadRequest { heading, detail } => {
                page(StatusCode::BAD_REQUEST, heading, detail, None)
            }
            WebError::Unavailable(detail) => unavailable(detail),
            WebError::PageUnavailable(detail) => page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Sign-in is not available",
                "This sign-in step cannot be shown.",
                Some((Level::ERROR, detail)),
            ),
            WebError::Flow(error) => match error {
                FlowError::StepOutOfOrder { .. }
                | FlowError::Conflict
                | FlowError::NothingToResend => see_other("/login", HeaderMap::new()),
                FlowError::LoginNotFound => WebError::NoLogin.into_response(),
                // Only a sign-in's first step ends here (a later one stays at the step before).
                FlowError::StepRefused { .. } => page(
                    StatusCode::FORBIDDEN,
                    "Sign-in is not available",
                    "This account cannot sign in this way right now. Please try again later.",
                    Some((Level::INFO, format!("login cannot begin: {error}"))),
                ),
                FlowError::UnknownAcr(_)
                | FlowError::DisabledAcr(_)
                | FlowError::UnavailableAcr { .. }
                | FlowError::NotInteractive(_)
                | FlowError::NoDefaultAcr
                | FlowError::MethodNotValid(_)
                | FlowError::StepNotPrepared { .. }
                | FlowError::Script(_) => page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in is not available",
                    "Please try again later.",
                    Some((Level::ERROR, format!("login cannot continue: {error}"))),
                ),
                FlowError::Store(_)
                | FlowError::Corrupt(_)
                | FlowError::ServiceUnavailable(_) => unavailable(error.to_string()),
                FlowError::TooManyPending {
                    from_this_address,
                    retry_after_seconds,
                } => {
                    let status = if from_this_address {
                        StatusCode::TOO_MANY_REQUESTS
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let mut response = page(
                        status,
                        "Too many sign-ins",
                        "Too many sign-ins were started. Try again in a few minutes.",
                        Some((Level::WARN, error.to_string())),
                    );
                    response.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from(retry_after_seconds),
                    );
                    response
                }
            },
        }
    }
}
