//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod servers;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

/// What a client observes of one response.
#[derive(Debug)]
pub struct Observed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Observed {
    pub fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("<none>", |v| v.to_str().unwrap())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` through `app` (as the server would) and reads the whole response.
pub async fn send(app: &Router, request: Request<Body>) -> Observed {
    observe(app.clone().oneshot(request).await.unwrap()).await
}

/// What a client observes of `response`, read whole.
pub async fn observe<B>(response: http::Response<B>) -> Observed
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    Observed {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A GET with a Host header, as every HTTP/1.1 client sends.
pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "test.local")
}

pub fn empty() -> Body {
    Body::empty()
}

/// Counts handler runs.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// An origin's GET route that answers `run N` (its Nth run) with `headers`, and its counter.
pub fn counted_route(
    headers: &'static [(&'static str, &'static str)],
) -> (axum::routing::MethodRouter, Counter) {
    let runs = Counter::default();
    let counted = runs.clone();
    let route = axum::routing::get(move || {
        let run = counted.bump();
        async move {
            let mut response = axum::response::IntoResponse::into_response(format!("run {run}"));
            for (name, value) in headers {
                let value = http::HeaderValue::from_static(value);
                response.headers_mut().append(*name, value);
            }
            response
        }
    });
    (route, runs)
}

/// The demo binary, running on a free loopback port; stopped when dropped.
pub struct DemoServer {
    child: std::process::Child,
    pub base: String,
    log_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl DemoServer {
    /// Starts the demo with `env` added to this process's environment.
    pub fn start(env: &[(&str, &str)]) -> DemoServer {
        use std::io::{BufRead, BufReader};
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"));
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("METRICS_ADDR", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("demo binary starts");
        let logs = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&log_lines);
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(logs).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if !sent {
                    if let Some(at) = line.find("listening on http://") {
                        let address = line[at + "listening on ".len()..].trim().to_owned();
                        sent = tx.send(address).is_ok();
                    }
                }
            }
        });
        let base = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the demo announces its address");
        DemoServer {
            child,
            base,
            log_lines,
        }
    }

    /// The base URL of the metrics listener, as the demo announced it.
    pub fn metrics_base(&self) -> String {
        let lines = self.log_lines.lock().unwrap();
        let line = lines
            .iter()
            .find(|line| line.contains("metrics on http://"))
            .expect("the demo announces its metrics address");
        let at = line.find("http://").unwrap();
        line[at..].trim().trim_end_matches("/metrics").to_owned()
    }

    /// Stops the demo as a service manager would (SIGTERM), and waits for it to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// What the demo has logged so far (stderr).
    pub fn logs(&self) -> String {
        self.log_lines.lock().unwrap().join("\n")
    }

    /// One request to the demo; returns what the client observes.
    pub async fn request(&self, request: http::request::Builder, body: Bytes) -> Observed {
        Self::request_to(&self.base, request, body).await
    }

    /// A GET of `path` on the metrics listener.
    pub async fn get_metrics(&self, path: &str) -> Observed {
        Self::request_to(&self.metrics_base(), Request::get(path), Bytes::new()).await
    }

    async fn request_to(base: &str, request: http::request::Builder, body: Bytes) -> Observed {
        use hyper_util::client::legacy::Client;
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<http_body_util::Full<Bytes>>();
        let uri = request.uri_ref().unwrap().to_string();
        let request = request
            .uri(format!("{base}{uri}"))
            .body(http_body_util::Full::new(body))
            .unwrap();
        observe(client.request(request).await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> Observed {
        self.request(Request::get(path), Bytes::new()).await
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `app` on a free loopback port, for the rest of the test.
pub async fn serve(app: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// One request over a real connection to `address`, and the whole response.
pub async fn over_http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Observed {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<Bytes>>();
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(http_body_util::Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Observed {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A GET of `uri` through `app`.
pub async fn fetch(app: &Router, uri: &str) -> Observed {
    fetch_with(app, uri, &[]).await
}

/// A GET of `uri` through `app` with extra request headers.
pub async fn fetch_with(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Observed {
    let mut request = get(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(empty()).unwrap()).await
}

/// The `X-Cache` values of several responses, for one comparison.
pub fn x_caches<const N: usize>(responses: [&Observed; N]) -> [&str; N] {
    responses.map(Observed::x_cache)
}
