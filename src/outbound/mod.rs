//! Outbound HTTP (the only module that knows reqwest): one shared client for SMS providers and
//! the scripts' `http::` module. Bounded in time and size, no redirects, https only, and the
//! destination checked on the resolved address so a name cannot smuggle in 127.0.0.1.

pub mod policy;

use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::base::Secret;
use crate::config::HttpConfig;
pub use policy::DestinationPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }

    fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// A value that may be secret (header values, form fields): secrets are sent, never shown.
#[derive(Debug, Clone)]
pub enum MaybeSecret {
    Plain(String),
    Secret(Secret),
}

impl MaybeSecret {
    fn expose(&self) -> &str {
        match self {
            MaybeSecret::Plain(v) => v,
            MaybeSecret::Secret(s) => s.expose(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Auth {
    Basic { user: String, password: Secret },
    Bearer(Secret),
}

#[derive(Debug, Clone, Default)]
pub enum Body {
    #[default]
    Empty,
    Json(serde_json::Value),
    Form(Vec<(String, MaybeSecret)>),
    Text {
        content_type: String,
        text: Secret,
    },
}

#[derive(Debug, Clone)]
pub struct OutboundRequest {
    pub method: Method,
    /// May carry secrets in its query (some gateways want keys there): only its redacted form is shown.
    pub url: Secret,
    pub headers: Vec<(String, MaybeSecret)>,
    pub auth: Option<Auth>,
    pub body: Body,
}

impl OutboundRequest {
    /// Whether any of `values` appears anywhere in the request: URL, headers, credentials, body.
    pub fn carries_any(&self, values: &[&str]) -> bool {
        let mut parts: Vec<String> = vec![self.url.expose().to_owned()];
        parts.extend(self.headers.iter().map(|(_, v)| v.expose().to_owned()));
        match &self.auth {
            Some(Auth::Basic { user, password }) => {
                parts.push(user.clone());
                parts.push(password.expose().to_owned());
            }
            Some(Auth::Bearer(token)) => parts.push(token.expose().to_owned()),
            None => {}
        }
        match &self.body {
            Body::Empty => {}
            Body::Json(value) => parts.push(value.to_string()),
            Body::Form(fields) => {
                parts.extend(fields.iter().map(|(k, v)| format!("{k}={}", v.expose())))
            }
            Body::Text { text, .. } => parts.push(text.expose().to_owned()),
        }
        values
            .iter()
            .filter(|v| !v.is_empty())
            .any(|value| parts.iter().any(|part| part.contains(value)))
    }

    pub fn new(method: Method, url: impl Into<String>) -> Self {
        OutboundRequest {
            method,
            url: Secret::new(url.into()),
            headers: Vec::new(),
            auth: None,
            body: Body::Empty,
        }
    }
}

#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl OutboundResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// Errors name the destination as `scheme://host:port/path`: never its query or credentials.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error("{0}: not a valid http(s) URL")]
    BadUrl(String),
    #[error("{0}: plain http is refused; use https, or list the host in [http] insecure_http_hosts (development only)")]
    InsecureScheme(String),
    #[error("{url}: destination {address} is {kind}; refused (allow it in [http] allow_addresses for development only)")]
    RefusedDestination {
        url: String,
        address: String,
        kind: String,
    },
    #[error("{url}: cannot connect: {message}")]
    Connect { url: String, message: String },
    #[error(
        "{url}: no answer within {millis} ms; the request may have arrived and is not re-sent"
    )]
    Timeout { url: String, millis: u64 },
    #[error("{url}: the answer is larger than {limit} bytes; refused")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: header {name:?} is not valid")]
    BadHeader { url: String, name: String },
    #[error("{url}: no answer before the hook's deadline ([sandbox] hook_timeout_ms); the request may have arrived and is not re-sent")]
    Deadline { url: String },
}

thread_local! {
    /// The deadline of the hook running on this thread, if any: every request made on its
    /// behalf (an `http::` call, a provider's `sms::send`) must answer before it.
    static DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Runs `work` with every request on this thread bounded by `deadline` (the time left in a
/// script hook), whatever `[http] timeout_ms` allows.
pub fn within_deadline<R>(deadline: Instant, work: impl FnOnce() -> R) -> R {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEADLINE.with(|d| d.replace(Some(deadline))));
    work()
}

/// `https://api.example.com:443/v1/messages` without query, fragment or user info.
pub fn redacted(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Marker error returned by the resolver so refusals can be told apart from DNS failures.
#[derive(Debug)]
struct Refused {
    address: String,
    kind: &'static str,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination {} is {}", self.address, self.kind)
    }
}

impl std::error::Error for Refused {}

/// Resolves names with the system resolver and drops every address the policy refuses.
struct CheckedResolver {
    policy: Arc<DestinationPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::task::spawn_blocking(move || {
                (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>())
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let mut first_refusal = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_address(addr.ip()) {
                    Ok(()) => true,
                    Err(kind) => {
                        first_refusal.get_or_insert(Refused {
                            address: addr.ip().to_string(),
                            kind,
                        });
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                if let Some(refused) = first_refusal {
                    return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

pub struct HttpBridge {
    client: reqwest::blocking::Client,
    policy: Arc<DestinationPolicy>,
    timeout: Duration,
    max_response_bytes: u64,
    /// `gatehouse test`: answers from the test file instead of the network.
    canned: Option<CannedAnswers>,
}

/// Fake answers for `gatehouse test`: the first whose method and URL prefix match answers, and
/// every request is recorded. Nothing leaves the machine.
#[derive(Default)]
pub struct CannedAnswers {
    answers: Vec<CannedAnswer>,
    sent: std::sync::Mutex<Vec<(Method, String)>>,
}

#[derive(Debug, Clone)]
pub struct CannedAnswer {
    pub method: Method,
    /// The answer matches requests whose URL starts with this.
    pub url_prefix: String,
    pub response: OutboundResponse,
}

impl CannedAnswers {
    pub fn new(answers: Vec<CannedAnswer>) -> Self {
        CannedAnswers {
            answers,
            sent: Default::default(),
        }
    }

    /// The requests made, as method and URL (query included: these are test values).
    pub fn sent(&self) -> Vec<(Method, String)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn answer(&self, request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
        let url = request.url.expose();
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((request.method, url.to_owned()));
        self.answers
            .iter()
            .find(|a| a.method == request.method && url.starts_with(&a.url_prefix))
            .map(|a| a.response.clone())
            .ok_or_else(|| HttpError::Transport {
                url: url.split('?').next().unwrap_or_default().to_owned(),
                message: format!(
                    "no fake answer for {:?} in the test file (add an [[test.http]] entry)",
                    request.method
                ),
            })
    }
}

impl HttpBridge {
    pub fn new(config: &HttpConfig) -> Result<Self, HttpError> {
        let policy = Arc::new(DestinationPolicy::from_config(config));
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(Duration::from_millis(config.timeout_ms))
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpError::Transport {
                url: "-".into(),
                message: e.without_url().to_string(),
            })?;
        Ok(HttpBridge {
            client,
            policy,
            timeout: Duration::from_millis(config.timeout_ms),
            max_response_bytes: config.max_response_bytes,
            canned: None,
        })
    }

    /// A bridge that answers from `answers` and never opens a connection (`gatehouse test`).
    pub fn canned(config: &HttpConfig, answers: CannedAnswers) -> Result<Self, HttpError> {
        let mut bridge = HttpBridge::new(config)?;
        bridge.canned = Some(answers);
        Ok(bridge)
    }

    /// The fake answers, when this bridge has them.
    pub fn canned_answers(&self) -> Option<&CannedAnswers> {
        self.canned.as_ref()
    }

    /// Checks scheme and (for IP literals) address before anything leaves the machine.
    fn checked_url(&self, raw: &str) -> Result<Url, HttpError> {
        let url = Url::parse(raw)
            .map_err(|_| HttpError::BadUrl(raw.split('?').next().unwrap_or("").to_owned()))?;
        let shown = redacted(&url);
        let host = url
            .host_str()
            .ok_or_else(|| HttpError::BadUrl(shown.clone()))?
            .to_owned();
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allows_plain_http(host.trim_matches(['[', ']'])) => {}
            "http" => return Err(HttpError::InsecureScheme(shown)),
            _ => return Err(HttpError::BadUrl(shown)),
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal {
            self.policy
                .check_address(ip)
                .map_err(|kind| HttpError::RefusedDestination {
                    url: shown,
                    address: ip.to_string(),
                    kind: kind.to_owned(),
                })?;
        }
        Ok(url)
    }

    /// Sends one request, once. Never follows redirects: a 3xx comes back as it is.
    pub fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
        if let Some(canned) = &self.canned {
            return canned.answer(request);
        }
        let url = self.checked_url(request.url.expose())?;
        let shown = redacted(&url);
        let mut builder = self
            .client
            .request(request.method.as_reqwest(), url.clone());
        for (name, value) in &request.headers {
            let header =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    HttpError::BadHeader {
                        url: shown.clone(),
                        name: name.clone(),
                    }
                })?;
            let sensitive = matches!(value, MaybeSecret::Secret(_));
            let mut value =
                reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                    HttpError::BadHeader {
                        url: shown.clone(),
                        name: name.clone(),
                    }
                })?;
            value.set_sensitive(sensitive);
            builder = builder.header(header, value);
        }
        builder = match &request.auth {
            Some(Auth::Basic { user, password }) => {
                builder.basic_auth(user, Some(password.expose()))
            }
            Some(Auth::Bearer(token)) => builder.bearer_auth(token.expose()),
            None => builder,
        };
        builder = match &request.body {
            Body::Empty => builder,
            Body::Json(value) => builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(value).unwrap_or_default()),
            Body::Form(fields) => {
                let encoded = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(fields.iter().map(|(k, v)| (k.as_str(), v.expose())))
                    .finish();
                builder
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(encoded)
            }
            Body::Text { content_type, text } => builder
                .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                .body(text.expose().to_owned()),
        };
        let started = Instant::now();
        // A hook's deadline cuts the request short when it comes before [http] timeout_ms.
        let deadline = DEADLINE.with(std::cell::Cell::get);
        let left = deadline.map(|d| d.saturating_duration_since(started));
        let by_deadline = left.is_some_and(|left| left < self.timeout);
        if left.is_some_and(|left| left.is_zero()) {
            return Err(HttpError::Deadline { url: shown });
        }
        if let Some(left) = left.filter(|_| by_deadline) {
            builder = builder.timeout(left);
        }
        let past_deadline = |error: HttpError| match error {
            HttpError::Timeout { url, .. } if by_deadline => HttpError::Deadline { url },
            other => other,
        };
        let response = builder
            .send()
            .map_err(|e| past_deadline(self.classify(&shown, &e, started)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes)
        {
            return Err(HttpError::TooLarge {
                url: shown,
                limit: self.max_response_bytes,
            });
        }
        let mut bytes = Vec::new();
        response
            .take(self.max_response_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| past_deadline(self.classify_read(&shown, &e, started)))?;
        if bytes.len() as u64 > self.max_response_bytes {
            return Err(HttpError::TooLarge {
                url: shown,
                limit: self.max_response_bytes,
            });
        }
        Ok(OutboundResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    fn classify(&self, shown: &str, error: &reqwest::Error, started: Instant) -> HttpError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(current) = source {
            if let Some(refused) = current.downcast_ref::<Refused>() {
                return HttpError::RefusedDestination {
                    url: shown.to_owned(),
                    address: refused.address.clone(),
                    kind: refused.kind.to_owned(),
                };
            }
            source = current.source();
        }
        if error.is_timeout() {
            return HttpError::Timeout {
                url: shown.to_owned(),
                millis: started.elapsed().as_millis() as u64,
            };
        }
        let message = root_cause(error);
        if error.is_connect() {
            HttpError::Connect {
                url: shown.to_owned(),
                message,
            }
        } else {
            HttpError::Transport {
                url: shown.to_owned(),
                message,
            }
        }
    }

    fn classify_read(&self, shown: &str, error: &std::io::Error, started: Instant) -> HttpError {
        if started.elapsed() >= self.timeout || error.kind() == std::io::ErrorKind::TimedOut {
            HttpError::Timeout {
                url: shown.to_owned(),
                millis: started.elapsed().as_millis() as u64,
            }
        } else {
            HttpError::Transport {
                url: shown.to_owned(),
                message: format!("reading the answer: {error}"),
            }
        }
    }
}

/// The innermost cause, without the URL reqwest would print (it may hold secrets).
fn root_cause(error: &reqwest::Error) -> String {
    let mut message = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(current) = source {
        message = current.to_string();
        source = current.source();
    }
    if message.is_empty() {
        message = "request failed".into();
    }
    message
}
