//! The HTTP side of tests: Gatehouse served on 127.0.0.1 in its own runtime, and a
//! cookie-keeping client that acts like a browser without JavaScript (it never follows redirects
//! by itself, so every hop can be checked).

use std::thread::JoinHandle;
use std::time::Duration;

use gatehouse::web::WebState;
use reqwest::blocking::{Client, Response};
use reqwest::header::LOCATION;

pub struct WebServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    pub fn start(listener: std::net::TcpListener, state: WebState) -> WebServer {
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                gatehouse::web::serve(listener, state, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        WebServer {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Browser {
    pub client: Client,
}

impl Default for Browser {
    fn default() -> Self {
        Browser::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        let client = Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Browser { client }
    }

    pub fn get(&self, url: &str) -> Response {
        self.client.get(url).send().unwrap()
    }

    pub fn post(&self, url: &str, form: &[(&str, &str)]) -> Response {
        self.client.post(url).form(form).send().unwrap()
    }
}

pub fn location(response: &Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The hidden CSRF token of a page's form.
pub fn csrf_of(html: &str) -> String {
    let start =
        html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[start..].split('"').next().unwrap().to_owned()
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The session cookie value the server set on this response, if any.
pub fn session_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("gatehouse"))
        .map(str::to_owned)
}
