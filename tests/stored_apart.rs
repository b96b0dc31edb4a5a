//! Large responses in a backend across a network are stored apart from their key: a read of the
//! key always fits the latency budget, and the response itself is read with time for its size. A
//! large hit is a hit, not a time-out that counts against the breaker. Real redis-server and
//! memcached; a backend whose reads take time for their size stands for a slow link.

mod support;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::{
    Backend, BackendError, MemcachedBackend, MemoryBackend, RedisBackend, STORE_APART_FROM,
};
use cache_middleware::{cache, BreakerState, CacheHandle, CacheMiddleware};
use http::Method;
use std::sync::Arc;
use std::time::Duration;
use support::servers::{Memcached, Redis};
use support::{fetch, Counter};

const LARGE: usize = 4 * 1024 * 1024;

/// The bytes of the large response: no two neighbouring kilobytes alike.
fn large_body() -> Vec<u8> {
    (0..LARGE).map(|i| (i / 1024 % 251) as u8).collect()
}

/// An app whose `/large` route answers `body` (counting its runs), cached for a minute.
fn app_with(backend: Arc<dyn Backend>, body: Vec<u8>) -> (Router, Counter, CacheHandle) {
    let runs = Counter::default();
    let counted = runs.clone();
    let middleware = CacheMiddleware::new(backend)
        .max_body_size(64 * 1024 * 1024)
        .backend_timeout(Duration::from_millis(50))
        .breaker_threshold(2);
    let handle = middleware.handle();
    let route = get(move || {
        counted.bump();
        let body = body.clone();
        async move { body }
    });
    let app = Router::new()
        .route("/large", route.layer(cache(60)))
        .layer(middleware);
    (app, runs, handle)
}

/// A backend across a slow link: every read takes 1 ms per 64 KiB it returns (4 MiB: 64 ms, past
/// a 50 ms latency budget).
#[derive(Debug)]
struct SlowLink(MemoryBackend);

#[async_trait]
impl Backend for SlowLink {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let found = self.0.get(key).await?;
        let length = found.as_ref().map_or(0, Bytes::len) as u64;
        tokio::time::sleep(Duration::from_millis(length / (64 * 1024))).await;
        Ok(found)
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        self.0.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.0.delete(key).await
    }
    async fn clear(&self) -> Result<(), BackendError> {
        self.0.clear().await
    }
    fn name(&self) -> &'static str {
        "slow-link"
    }
    fn store_apart_from(&self) -> Option<usize> {
        Some(STORE_APART_FROM)
    }
}

#[tokio::test]
async fn a_large_hit_over_a_slow_link_is_a_hit_and_the_breaker_stays_closed() {
    let backend = Arc::new(SlowLink(MemoryBackend::new(100)));
    let (app, runs, handle) = app_with(backend, large_body());
    let body = large_body();
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    for _ in 0..3 {
        let again = fetch(&app, "/large").await;
        assert_eq!(again.x_cache(), "HIT");
        assert!(again.body == body, "the exact bytes");
    }
    assert_eq!(runs.get(), 1);
    let stats = handle.stats();
    assert_eq!(stats.lookup_failures, 0, "no read ran out of time");
    assert_eq!(stats.breaker, BreakerState::Closed);
}

#[tokio::test]
async fn through_redis_a_large_response_is_served_whole_and_one_stored_apart_is_never_mixed_up() {
    let redis = Redis::start();
    let backend = Arc::new(RedisBackend::new(redis.url()).unwrap());
    let (app, runs, handle) = app_with(backend, large_body());
    let body = large_body();
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    let hit = fetch(&app, "/large").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(hit.body == body);
    let apart = redis.cli(&["--scan", "--pattern", "*:apart:*"]);
    assert_eq!(apart.lines().count(), 1, "stored apart: {apart:?}");

    // Without the response it names, the entry is a miss, never an error or a short body.
    redis.cli(&["del", apart.trim()]);
    let after = fetch(&app, "/large").await;
    assert_eq!(after.x_cache(), "MISS");
    assert!(after.body == body);
    assert_eq!(runs.get(), 2);
    assert_eq!(fetch(&app, "/large").await.x_cache(), "HIT");

    // Removing the entry removes what it stored apart.
    let url = "http://test.local/large";
    handle.invalidate(Method::GET, url).await.unwrap();
    assert_eq!(redis.cli(&["--scan", "--pattern", "*:apart:*"]).trim(), "");
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    assert_eq!(handle.stats().lookup_failures, 0);
}

#[tokio::test]
async fn through_memcached_a_large_response_is_served_whole() {
    let memcached = Memcached::start();
    let backend = Arc::new(MemcachedBackend::new(memcached.url()).unwrap());
    let (app, runs, handle) = app_with(backend, large_body());
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    let hit = fetch(&app, "/large").await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(hit.body == large_body());
    assert_eq!(runs.get(), 1);
    assert_eq!(handle.stats().lookup_failures, 0);
}
