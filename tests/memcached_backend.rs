//! The Memcached backend against a real memcached.

mod support;

use bytes::Bytes;
use cache_middleware::backends::{Backend, BackendError, MemcachedBackend};
use std::time::Duration;
use support::servers::{free_port, Memcached};

#[tokio::test]
async fn ttls_over_thirty_days_are_kept_not_expired_at_once() {
    let memcached = Memcached::start();
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    let forty_days = Duration::from_secs(40 * 24 * 3600);
    backend
        .set("long", Bytes::from_static(b"v"), forty_days)
        .await
        .unwrap();
    assert_eq!(
        backend.get("long").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test]
async fn a_clear_by_another_process_is_seen_within_the_generation_refresh() {
    let memcached = Memcached::start();
    let open = || {
        MemcachedBackend::builder(memcached.url())
            .generation_refresh(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let (this, other) = (open(), open());
    this.set("k", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(other.get("k").await.unwrap().is_some());
    this.clear().await.unwrap();
    assert_eq!(
        this.get("k").await.unwrap(),
        None,
        "seen at once by the process that cleared"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        other.get("k").await.unwrap(),
        None,
        "seen by the other after the refresh"
    );
}

/// A value of `length` bytes in which every position shows: a reordered or missing part would.
fn patterned(length: usize) -> Bytes {
    Bytes::from((0..length).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
}

#[tokio::test]
async fn values_over_the_item_limit_are_stored_in_parts_and_read_back_whole() {
    let memcached = Memcached::start(); // Memcached's default item size: 1 MiB
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    for length in [1024 * 1024, 3 * 1024 * 1024 + 17] {
        let value = patterned(length);
        backend
            .set("big", value.clone(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            backend.get("big").await.unwrap() == Some(value),
            "{length} bytes come back exactly"
        );
    }
    // A smaller value written over the large one replaces it; a removal removes it.
    backend
        .set("big", Bytes::from_static(b"small"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        backend.get("big").await.unwrap().as_deref(),
        Some(&b"small"[..])
    );
    backend
        .set("big", patterned(2 * 1024 * 1024), Duration::from_secs(60))
        .await
        .unwrap();
    backend.delete("big").await.unwrap();
    assert_eq!(backend.get("big").await.unwrap(), None);
}

#[tokio::test]
async fn a_large_value_whose_parts_are_gone_is_a_miss_not_a_short_value() {
    let memcached = Memcached::start();
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    backend
        .set("big", patterned(2 * 1024 * 1024), Duration::from_secs(60))
        .await
        .unwrap();
    // Memcached evicts items one by one: here, one part goes and the manifest stays.
    let generation = memcached.command("get cache-middleware:generation\r\n");
    let generation = generation.lines().nth(1).expect("the namespace generation");
    let key = format!("cache-middleware:{generation}:big");
    assert!(memcached
        .command(&format!("get {key}\r\n"))
        .starts_with("VALUE"));
    let gone = memcached.command(&format!("delete {key}~1\r\n"));
    assert_eq!(
        gone, "DELETED",
        "the second part was stored under its own key"
    );
    assert_eq!(backend.get("big").await.unwrap(), None);
}

#[tokio::test]
async fn values_over_the_parts_limit_are_rejected_and_the_backend_keeps_working() {
    let memcached = Memcached::start();
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    let too_big = Bytes::from(vec![0u8; 128 * 1024 * 1024 + 1]);
    let error = backend
        .set("big", too_big, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(matches!(error, BackendError::Rejected(_)), "{error:?}");
    backend
        .set("small", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(backend.get("small").await.unwrap().is_some());
}

#[tokio::test]
async fn a_backend_built_while_memcached_is_down_works_once_it_is_up() {
    let port = free_port();
    let backend = MemcachedBackend::new(format!("memcached://127.0.0.1:{port}")).unwrap();
    let started = std::time::Instant::now();
    assert!(backend.get("k").await.is_err());
    assert!(backend.get("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down server fails fast"
    );
    let _memcached = Memcached::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stored = backend
            .set("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await;
        if stored.is_ok() && backend.get("k").await.unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the server came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_response_larger_than_one_item_is_cached_and_replayed_exactly() {
    use axum::routing::get;
    let memcached = Memcached::start();
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    let body = patterned(3 * 1024 * 1024);
    let served = body.clone();
    let app = axum::Router::new()
        .route(
            "/big",
            get(move || {
                let served = served.clone();
                async move { served }
            })
            .layer(cache_middleware::cache(60)),
        )
        .layer(
            // A budget a loaded machine cannot overrun: this test is about the parts.
            cache_middleware::CacheMiddleware::new(backend)
                .max_body_size(4 * 1024 * 1024)
                .backend_timeout(Duration::from_secs(2)),
        );
    let address = support::serve(app).await;
    let fetch = || support::over_http(address, "GET", "/big", &[], Bytes::new());
    let (first, second) = (fetch().await, fetch().await);
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert!(second.body == body, "the hit replays every byte");
}
