//! The accept loop: HTTP/1.1 connections with a header read timeout (a client that never
//! finishes its headers is dropped), a cap on open connections per client address, and a
//! graceful stop. Request bodies are bounded in time by the request timeout of the middleware.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

/// Open connections per peer address (a proxy in front limits its own clients); a permit gives
/// its place back when dropped.
#[derive(Clone)]
struct ConnectionCounts {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max: usize,
}

struct Permit {
    counts: ConnectionCounts,
    address: IpAddr,
}

impl ConnectionCounts {
    fn admit(&self, address: IpAddr) -> Option<Permit> {
        let mut counts = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let open = counts.entry(address).or_insert(0);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(Permit {
            counts: self.clone(),
            address,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = counts.get_mut(&self.address) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// The most a request line and its headers may take (431 beyond). hyper's default, about
/// 400 KB, let each open connection hold that much; browsers send a few KB, and an
/// authorization request with a long `state` or `nonce` is refused well below this anyway.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// What one connection and one client address may take (`[server]`, read at start).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// How long a client has to send a request's headers (also between kept-alive requests).
    pub header_read_timeout: Duration,
    pub max_per_address: usize,
}

/// Serves `router` on `listener` until `shutdown` completes; connections in progress then
/// finish their current request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let counts = ConnectionCounts {
        open: Arc::default(),
        max: limits.max_per_address,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A failed accept (no file descriptors left, a reset) is not the server's end.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(permit) = counts.admit(remote.ip()) else {
            drop(stream);
            continue;
        };
        // Answers are small and written whole: do not hold them back for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(remote));
                    router.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(MAX_REQUEST_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    let _ = stop.send(true);
    Ok(())
}
