//! The caching reverse proxy in front of a real origin server, both on loopback.

mod support;

use axum::body::Body;
use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::CacheMiddleware;
use http::StatusCode;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{serve, Counter};
use tokio::sync::Notify;

/// An origin that counts its runs: `/items/{id}`, `/other`, `/echo` (any method, echoes the body),
/// `/slow` (answers after 2 s) and `/stream` (a chunked body whose second chunk waits for
/// `release`).
async fn origin() -> (SocketAddr, Counter) {
    origin_with(Arc::new(Notify::new())).await
}

async fn origin_with(release: Arc<Notify>) -> (SocketAddr, Counter) {
    let counter = Counter::default();
    let runs = counter.clone();
    let app = Router::new()
        .route(
            "/items/{id}",
            get(move || {
                let run = runs.bump();
                async move { format!("item run {run}") }
            }),
        )
        .route("/other", get(|| async { "other" }))
        .route(
            "/echo",
            any(|request: Request| async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.unwrap().to_bytes();
                let via = parts
                    .headers
                    .get("via")
                    .map(|v| v.to_str().unwrap().to_owned());
                format!("{} {} bytes via={via:?}", parts.method, bytes.len())
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route(
            "/stream",
            get(move || {
                let release = Arc::clone(&release);
                async move {
                    let chunks = futures_util::stream::iter([1, 2]).then(move |n| {
                        let release = Arc::clone(&release);
                        async move {
                            if n == 2 {
                                release.notified().await;
                            }
                            Ok::<_, std::io::Error>(Bytes::from(format!("chunk {n}\n")))
                        }
                    });
                    Body::from_stream(chunks)
                }
            }),
        );
    (serve(app).await, counter)
}

use futures_util::StreamExt;

async fn proxy_to(upstream: SocketAddr, rules: &str) -> SocketAddr {
    proxy_on(upstream, rules, MemoryBackend::new(100)).await
}

async fn proxy_on(upstream: SocketAddr, rules: &str, backend: MemoryBackend) -> SocketAddr {
    let config = ProxyConfig::from_toml(rules).unwrap();
    let upstream = format!("http://{upstream}").parse().unwrap();
    let app = router(upstream, &config, CacheMiddleware::new(backend)).unwrap();
    serve(app).await
}

struct Answer {
    status: StatusCode,
    x_cache: Option<String>,
    via: Option<String>,
    body: String,
}

async fn call(address: SocketAddr, method: &str, path: &str, body: &'static str) -> Answer {
    let got = support::over_http(
        address,
        method,
        path,
        &[],
        Bytes::from_static(body.as_bytes()),
    )
    .await;
    let header = |name: &str| got.header(name).map(str::to_owned);
    Answer {
        status: got.status,
        x_cache: header("x-cache"),
        via: header("via"),
        body: got.text(),
    }
}

const RULES: &str = "[[route]]\npath = \"/items/*\"\nttl = 60\n";

#[tokio::test]
async fn rule_paths_are_cached_and_other_paths_are_forwarded_every_time() {
    let (origin, counter) = origin().await;
    let proxy = proxy_to(origin, RULES).await;
    let first = call(proxy, "GET", "/items/1", "").await;
    let second = call(proxy, "GET", "/items/1", "").await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(
        (first.x_cache.as_deref(), second.x_cache.as_deref()),
        (Some("MISS"), Some("HIT"))
    );
    assert_eq!(second.body, first.body);
    assert_eq!(counter.get(), 1);
    assert_eq!(first.via.as_deref(), Some("1.1 cache-middleware"));
    // Other paths follow the origin's headers: this origin sends none, so nothing is stored.
    for _ in 0..2 {
        let other = call(proxy, "GET", "/other", "").await;
        assert_eq!(
            (other.status, other.x_cache.as_deref(), other.body.as_str()),
            (StatusCode::OK, Some("MISS"), "other")
        );
    }
    let config = ProxyConfig::from_toml("http_semantics = false").unwrap();
    assert!(!config.http_semantics);
    let plain = proxy_to(origin, "http_semantics = false").await;
    let other = call(plain, "GET", "/other", "").await;
    assert_eq!((other.x_cache, other.body.as_str()), (None, "other"));
}

#[tokio::test]
async fn behind_the_edge_a_clients_forwarding_fields_do_not_make_entries_vary() {
    // The edge replaces them with its own, the same for every client of a host: an entry stays
    // one stored response (a variant below a marker would be two reads a hit).
    let (origin, counter) = origin().await;
    let backend = MemoryBackend::new(100);
    let proxy = proxy_on(origin, RULES, backend.clone()).await;
    let headers = [
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "host=evil"),
    ];
    let first = support::over_http(proxy, "GET", "/items/1", &headers, Bytes::new()).await;
    let second = call(proxy, "GET", "/items/1", "").await;
    assert_eq!(
        (first.header("x-cache"), second.x_cache.as_deref()),
        (Some("MISS"), Some("HIT"))
    );
    assert_eq!(counter.get(), 1);
    assert_eq!(backend.keys().len(), 1, "{:?}", backend.keys());
}

#[tokio::test]
async fn request_bodies_are_forwarded_intact_and_post_is_not_cached_unless_asked() {
    let (origin, _) = origin().await;
    let proxy = proxy_to(origin, "[[route]]\npath = \"/echo\"\nttl = 60\n").await;
    for _ in 0..2 {
        let answer = call(proxy, "POST", "/echo", "hello body").await;
        assert_eq!(
            answer.body,
            "POST 10 bytes via=Some(\"1.1 cache-middleware\")"
        );
        assert_eq!(answer.x_cache, None, "POST is forwarded, not cached");
    }
    let proxy = proxy_to(
        origin,
        "[[route]]\npath = \"/echo\"\nttl = 60\npost = true\n",
    )
    .await;
    call(proxy, "POST", "/echo", "hello").await;
    assert_eq!(
        call(proxy, "POST", "/echo", "hello")
            .await
            .x_cache
            .as_deref(),
        Some("HIT")
    );
    assert_eq!(
        call(proxy, "POST", "/echo", "other")
            .await
            .x_cache
            .as_deref(),
        Some("MISS")
    );
}

#[tokio::test]
async fn response_bodies_are_streamed_not_buffered() {
    // The origin sends its second chunk only after the client has received the first: a proxy that
    // buffered the body would never deliver the first one.
    let release = Arc::new(Notify::new());
    let (origin, _) = origin_with(Arc::clone(&release)).await;
    let proxy = proxy_to(origin, RULES).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let uri = format!("http://{proxy}/stream").parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .expect("headers arrive while the origin still holds the second chunk")
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first chunk arrives while the origin still holds the second");
    assert_eq!(
        &first.unwrap().unwrap().into_data().unwrap()[..],
        b"chunk 1\n"
    );
    release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the rest follows once released")
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"chunk 2\n");
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_a_slow_one_a_504() {
    let dead = format!("127.0.0.1:{}", support::servers::free_port())
        .parse()
        .unwrap();
    let proxy = proxy_to(dead, RULES).await;
    let answer = call(proxy, "GET", "/items/1", "").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        answer.x_cache.as_deref(),
        Some("MISS"),
        "errors are not stored"
    );

    let (origin, _) = origin().await;
    let proxy = proxy_to(origin, "upstream_timeout_secs = 1\n").await;
    assert_eq!(
        call(proxy, "GET", "/slow", "").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test]
async fn the_proxy_command_serves_an_origin_with_rules_from_a_file() {
    let (origin, counter) = origin().await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let port = support::servers::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"))
        .args(["proxy", "--upstream", &format!("http://{origin}")])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--rules")
        .arg(&rules)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    support::servers::wait_until("the proxy to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(address).is_ok()
    });
    call(address, "GET", "/items/7", "").await;
    let hit = call(address, "GET", "/items/7", "").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(hit.x_cache.as_deref(), Some("HIT"));
    assert_eq!(counter.get(), 1);
}

#[test]
fn bad_proxy_arguments_and_rules_stop_it_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad_rules = dir.path().join("bad.toml");
    std::fs::write(&bad_rules, "[[route]]\npath = \"nope\"\nttl = 1\n").unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["proxy"], "--upstream"),
        (&["proxy", "--upstream", "ftp://x"], "http://"),
        (
            &[
                "proxy",
                "--upstream",
                "http://127.0.0.1:1",
                "--listen",
                "nowhere",
            ],
            "--listen",
        ),
        (
            &[
                "proxy",
                "--upstream",
                "http://127.0.0.1:1",
                "--rules",
                bad_rules.to_str().unwrap(),
            ],
            "must start with /",
        ),
    ];
    for (args, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
