//! Shared-cache mode: the handlers say how long their responses may be cached, in their own
//! headers, and the cache follows them as RFC 9111 asks of a shared cache.
//!
//! Run: `cargo run --example shared_cache`, then try
//! - `curl -i localhost:8000/news` twice: the second answer has `Cache-Status: ...; hit` and an `Age`;
//! - `curl -i localhost:8000/profile`: `private`, never stored;
//! - `curl -i localhost:8000/report` after 5 s: stale, validated with `If-None-Match`, and the 304
//!   refreshes the stored copy (`fwd=stale; fwd-status=304`);
//! - `curl -i -X POST localhost:8000/news`: invalidates the stored `/news`.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::CacheMiddleware;
use std::time::Duration;

async fn news() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, s-maxage=30, max-age=10")],
        "headlines",
    )
}

async fn post_news() -> &'static str {
    "published"
}

async fn profile() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "private, max-age=60")],
        "your profile",
    )
}

/// Fresh for 5 s, then validated: the origin answers 304 while the report has not changed.
async fn report(request: HeaderMap) -> impl IntoResponse {
    const ETAG: &str = "\"report-v1\"";
    let cache_control = (header::CACHE_CONTROL, "max-age=5");
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag == ETAG)
    {
        return (
            StatusCode::NOT_MODIFIED,
            [cache_control, (header::ETAG, ETAG)],
            "",
        )
            .into_response();
    }
    (
        [cache_control, (header::ETAG, ETAG)],
        "the quarterly report",
    )
        .into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cache = CacheMiddleware::new(MemoryBackend::new(10_000))
        .http_semantics()
        .keep_stale(Duration::from_secs(600));
    let app = Router::new()
        .route("/news", get(news).post(post_news))
        .route("/profile", get(profile))
        .route("/report", get(report))
        .layer(cache);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("listening on http://127.0.0.1:8000");
    axum::serve(listener, app).await
}
