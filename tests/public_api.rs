//! The public API exactly as the documentation names it, used from outside the crate, over a real
//! listener on loopback.

use axum::{routing::get, Router};
use bytes::Bytes;
use cache_middleware::backends::{Backend, MemoryBackend};
use cache_middleware::{cache, CacheMiddleware};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// A backend chosen at run time, as configuration code returns it.
fn backend_from_config(kind: &str) -> Arc<dyn Backend> {
    match kind {
        "memory" => Arc::new(MemoryBackend::new(1000)),
        other => panic!("unknown backend {other}"),
    }
}

#[tokio::test]
async fn the_documented_api_caches_over_a_real_listener() {
    let backend = backend_from_config("memory");
    let app = Router::new()
        .route(
            "/",
            get(|| async { r#"{"Hello":"World"}"# }).layer(cache(Duration::from_secs(300))),
        )
        .route(
            "/seconds",
            get(|| async { "bare seconds" }).layer(cache(300)),
        )
        .route("/health", get(|| async { "ok" }))
        .layer(CacheMiddleware::new(backend.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let fetch = |path: &'static str| {
        let client = client.clone();
        async move {
            let uri = format!("http://{address}{path}").parse().unwrap();
            let response = client.get(uri).await.unwrap();
            let x_cache = response
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (x_cache, body)
        }
    };

    assert_eq!(
        fetch("/").await,
        (
            Some("MISS".into()),
            Bytes::from_static(br#"{"Hello":"World"}"#)
        )
    );
    assert_eq!(
        fetch("/").await,
        (
            Some("HIT".into()),
            Bytes::from_static(br#"{"Hello":"World"}"#)
        )
    );
    assert_eq!(fetch("/seconds").await.0.as_deref(), Some("MISS"));
    assert_eq!(fetch("/seconds").await.0.as_deref(), Some("HIT"));
    assert_eq!(fetch("/health").await.0, None);

    // The backend handle reaches the same store the middleware uses.
    backend
        .set(
            "config:version",
            Bytes::from_static(b"1.0"),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(
        backend.get("config:version").await.unwrap().as_deref(),
        Some(&b"1.0"[..])
    );
    backend.delete("config:version").await.unwrap();
    assert_eq!(backend.get("config:version").await.unwrap(), None);
    backend.clear().await.unwrap();
    assert_eq!(fetch("/").await.0.as_deref(), Some("MISS"));

    server.abort();
}
