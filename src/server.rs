//! Serving an app on a listener with every client-growable resource bounded (feature `proxy`):
//! the demo and the proxy both run on this.
//!
//! - **Header-read timeout**, which is also the **idle timeout**: a connection with no request open
//!   (none being answered, no response body being sent) for this long is closed: at once in
//!   HTTP/1, gracefully in HTTP/2 (`GOAWAY`, then dropped a second later if it has not gone). That covers a request
//!   head that never completes, an idle keep-alive, and an HTTP/2 connection kept by answering
//!   pings, with one timer per connection instead of one per request.
//! - **Request-body timeout**: a body that sends nothing for this long fails; behind the proxy the
//!   client gets 408.
//! - **Connection cap**: at most this many connections are served at once; further clients wait in
//!   the listen backlog, not in memory. The cap is kept below the process's descriptor limit
//!   (raised to its hard limit at start), so connections to the backend and the origin always
//!   find a descriptor.
//! - HTTP/2 (h2c, prior knowledge) streams per connection are capped too.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tower_http::timeout::TimeoutBody;
use tower_service::Service;

/// Descriptors kept free of client connections, for the backend, the origin and logs.
const RESERVED_DESCRIPTORS: u64 = 128;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);

/// How long an idle HTTP/2 connection gets to close gracefully before it is dropped.
const IDLE_GRACE: Duration = Duration::from_secs(1);

/// The bounds a server keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time to receive a request head, and the longest a keep-alive connection idles (default 10 s).
    pub header_read_timeout: Duration,
    /// Longest silence while reading a request body (default 30 s).
    pub body_read_timeout: Duration,
    /// Connections served at once (default 10,000, lowered to fit the descriptor limit).
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams per connection (default 100).
    pub max_streams: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_streams: 100,
        }
    }
}

/// Connections the process can hold with its descriptor limit raised as far as allowed.
fn connection_budget(wanted: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let budget = limit.saturating_sub(RESERVED_DESCRIPTORS).max(16);
    wanted.min(usize::try_from(budget).unwrap_or(usize::MAX))
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then lets in-flight
/// requests finish (at most 10 s). Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let cap = connection_budget(limits.max_connections);
    if cap < limits.max_connections {
        tracing::info!(
            max_connections = cap,
            "connection cap lowered to fit the descriptor limit"
        );
    }
    let permits = Arc::new(Semaphore::new(cap));
    let mut builder = Builder::new(TokioExecutor::new());
    // hyper's own header-read timer (one per request) is not set: the connection's idle timer
    // below closes a connection that has no request open for that long, which covers a head that
    // never completes and an idle keep-alive alike, at no cost per request.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams);
    let (stop, stopped) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before accept: wait, never spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let body_timeout = limits.body_read_timeout;
        let activity = Arc::new(Activity::default());
        let tracked = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            // Only bodies that exist get a timer: an empty one must stay visibly empty.
            let mut request = request.map(|body| {
                if http_body::Body::is_end_stream(&body) {
                    Body::new(body)
                } else {
                    Body::new(TimeoutBody::new(body_timeout, body))
                }
            });
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            let open = tracked.begin(request.version() == http::Version::HTTP_2);
            async move {
                // The request stays open until its response body is sent (or dropped).
                let response = app.call(request).await;
                response.map(|response| response.map(|body| Tracked { body, _open: open }))
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let idle = limits.header_read_timeout;
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            // Closing: a graceful shutdown was asked for; past this deadline the connection is
            // dropped (a head that never completes does not end gracefully).
            let mut closing: Option<Instant> = None;
            loop {
                let wake = closing.unwrap_or_else(|| activity.next_check(idle));
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(error) = result {
                            tracing::debug!(%peer, %error, "connection closed with an error");
                        }
                        break;
                    }
                    () = tokio::time::sleep_until(wake) => {
                        if closing.is_some() {
                            break;
                        }
                        if activity.is_idle_for(idle) {
                            if !activity.is_h2() {
                                break; // HTTP/1 has nothing to say before closing
                            }
                            closing = Some(Instant::now() + IDLE_GRACE);
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                    _ = stopped.changed(), if closing.is_none() => {
                        closing = Some(Instant::now() + DRAIN);
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is done: all returned means all closed.
    let drained = permits.acquire_many(u32::try_from(cap).unwrap_or(u32::MAX));
    tokio::select! {
        _ = drained => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("connections still open after the drain period"),
    }
}

/// Requests open on one connection, and since when it has had none.
#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    last: Mutex<Instant>,
    h2: AtomicBool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            open: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            h2: AtomicBool::new(false),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>, h2: bool) -> OpenRequest {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenRequest(Arc::clone(self))
    }

    fn idle_since(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection would have been idle for `idle`: while a request is open, look again
    /// one period from now.
    fn next_check(&self, idle: Duration) -> Instant {
        if self.open.load(Ordering::Acquire) > 0 {
            Instant::now() + idle
        } else {
            self.idle_since() + idle
        }
    }

    fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    fn is_idle_for(&self, idle: Duration) -> bool {
        self.open.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= idle
    }
}

/// One request being answered; the connection counts as busy until it is dropped.
struct OpenRequest(Arc<Activity>);

pin_project_lite::pin_project! {
    /// A response body that keeps its request open until it has been sent.
    struct Tracked<B> {
        #[pin]
        body: B,
        _open: OpenRequest,
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}
