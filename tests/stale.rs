//! Stale serving, per route and off by default: stale-if-error and stale-while-revalidate.

mod support;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::{cache, CacheLayer, CacheMiddleware};
use http::StatusCode;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{fetch, Counter};

const TTL: Duration = Duration::from_millis(300);

/// A route whose handler answers with the status held in `status`, naming its run in the body.
fn app(layer: CacheLayer, status: Arc<AtomicU16>, work: Duration) -> (Router, Counter) {
    let counter = Counter::default();
    let runs = counter.clone();
    let app = Router::new()
        .route(
            "/r",
            get(move || {
                let run = runs.bump();
                let status = StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap();
                async move {
                    tokio::time::sleep(work).await;
                    (status, format!("run {run}"))
                }
            })
            .layer(layer),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    (app, counter)
}

#[tokio::test]
async fn stale_if_error_serves_the_old_entry_when_the_handler_answers_5xx() {
    let status = Arc::new(AtomicU16::new(200));
    let (app, _) = app(
        cache(TTL).stale_if_error(Duration::from_secs(30)),
        status.clone(),
        Duration::ZERO,
    );
    let fresh = fetch(&app, "/r").await;
    status.store(503, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let stale = fetch(&app, "/r").await;
    assert_eq!((stale.status, stale.x_cache()), (StatusCode::OK, "STALE"));
    assert_eq!(stale.body, fresh.body);
    // Once the handler recovers, its fresh answer replaces the stale one.
    status.store(200, Ordering::SeqCst);
    let recovered = fetch(&app, "/r").await;
    assert_eq!(recovered.x_cache(), "MISS");
    assert_ne!(recovered.body, fresh.body);
}

#[tokio::test]
async fn without_stale_serving_an_expired_entry_is_never_served() {
    let status = Arc::new(AtomicU16::new(200));
    let (app, _) = app(cache(TTL), status.clone(), Duration::ZERO);
    fetch(&app, "/r").await;
    status.store(503, Ordering::SeqCst);
    tokio::time::sleep(TTL + Duration::from_millis(100)).await;
    let response = fetch(&app, "/r").await;
    assert_eq!(
        (response.status, response.x_cache()),
        (StatusCode::SERVICE_UNAVAILABLE, "MISS")
    );
}

#[tokio::test]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_the_background() {
    let status = Arc::new(AtomicU16::new(200));
    // Long enough that the refreshed entry is still fresh when it is read back below.
    let ttl = Duration::from_secs(1);
    let layer = cache(ttl).stale_while_revalidate(Duration::from_secs(30));
    let (app, counter) = app(layer, status, Duration::from_millis(200));
    let first = fetch(&app, "/r").await;
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;

    let stale: Vec<_> = futures_util::future::join_all((0..50).map(|_| fetch(&app, "/r"))).await;
    assert!(stale
        .iter()
        .all(|r| r.x_cache() == "STALE" && r.body == first.body));
    // One background refresh for the 50 stale answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(counter.get(), 2);
    let refreshed = fetch(&app, "/r").await;
    assert_eq!(refreshed.x_cache(), "HIT");
    assert_eq!(refreshed.text(), "run 2");
}

#[tokio::test]
async fn a_refresh_in_the_background_asks_for_the_whole_response_whatever_its_request_asked() {
    // The handler answers a range with 206 and a condition it meets with 304, as a file server
    // does. The request that finds the entry stale asked for one of those: the refresh it starts
    // must still fetch the whole response, or nothing is stored and the entry stays stale.
    let ttl = Duration::from_millis(500);
    for (name, value) in [
        ("range", "bytes=0-1"),
        ("if-none-match", "\"v\""),
        ("if-modified-since", "Sat, 01 Jan 2000 00:00:00 GMT"),
        ("if-match", "\"other\""),
    ] {
        let counter = Counter::default();
        let runs = counter.clone();
        let handler = move |headers: http::HeaderMap| {
            let run = runs.bump();
            async move {
                let etag = [("etag", "\"v\"")];
                let conditional = ["if-none-match", "if-modified-since"];
                if headers.contains_key("range") {
                    let part = [("content-range", "bytes 0-1/5")];
                    (StatusCode::PARTIAL_CONTENT, etag, part, "ru").into_response()
                } else if conditional.iter().any(|name| headers.contains_key(*name)) {
                    (StatusCode::NOT_MODIFIED, etag).into_response()
                } else if headers.contains_key("if-match") {
                    (StatusCode::PRECONDITION_FAILED, etag).into_response()
                } else {
                    (etag, format!("run {run}")).into_response()
                }
            }
        };
        let layer = cache(ttl).stale_while_revalidate(Duration::from_secs(30));
        let app = Router::new()
            .route("/r", get(handler).layer(layer))
            .layer(CacheMiddleware::new(MemoryBackend::new(100)));
        assert_eq!(fetch(&app, "/r").await.text(), "run 1");
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        let stale = support::fetch_with(&app, "/r", &[(name, value)]).await;
        assert_eq!(stale.x_cache(), "STALE", "{name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refreshed = fetch(&app, "/r").await;
        assert_eq!(
            (
                refreshed.x_cache(),
                refreshed.text().as_str(),
                counter.get()
            ),
            ("HIT", "run 2", 2),
            "after a stale answer to {name}"
        );
    }
}
