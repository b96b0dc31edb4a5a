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
    Backend, BackendError, MemcachedBackend, MemoryBackend, RedisBackend, APART_READ_WINDOW,
    STORE_APART_FROM,
};
use cache_middleware::{cache, BreakerState, CacheHandle, CacheMiddleware};
use http::Method;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::servers::{Memcached, Redis};
use support::{empty, fetch, get as get_request, Counter};
use tower::ServiceExt;

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

impl SlowLink {
    async fn over_the_link(found: Option<Bytes>) -> Option<Bytes> {
        let length = found.as_ref().map_or(0, Bytes::len) as u64;
        tokio::time::sleep(Duration::from_millis(length / (64 * 1024))).await;
        found
    }
}

#[async_trait]
impl Backend for SlowLink {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(Self::over_the_link(self.0.get(key).await?).await)
    }
    async fn get_range(
        &self,
        key: &str,
        start: usize,
        len: usize,
    ) -> Result<Option<Bytes>, BackendError> {
        Ok(Self::over_the_link(self.0.get_range(key, start, len).await?).await)
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

/// A backend that knows how many bytes of the values it handed out are still held anywhere: the
/// bytes a client is being sent share the allocation of the value they were read from.
#[derive(Debug)]
struct Held {
    inner: Arc<dyn Backend>,
    held: Arc<AtomicUsize>,
    /// Bytes handed out in all.
    read: Arc<AtomicUsize>,
}

impl Held {
    fn over(inner: Arc<dyn Backend>) -> Arc<Held> {
        Arc::new(Held {
            inner,
            held: Arc::default(),
            read: Arc::default(),
        })
    }
}

/// A value handed out, counted until its last byte is let go.
struct Counted {
    bytes: Bytes,
    held: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes.len(), Ordering::SeqCst);
    }
}

impl Held {
    fn counted(&self, found: Option<Bytes>) -> Option<Bytes> {
        found.map(|bytes| {
            self.held.fetch_add(bytes.len(), Ordering::SeqCst);
            self.read.fetch_add(bytes.len(), Ordering::SeqCst);
            let held = Arc::clone(&self.held);
            Bytes::from_owner(Counted { bytes, held })
        })
    }
}

#[async_trait]
impl Backend for Held {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        Ok(self.counted(self.inner.get(key).await?))
    }
    async fn get_range(
        &self,
        key: &str,
        start: usize,
        len: usize,
    ) -> Result<Option<Bytes>, BackendError> {
        Ok(self.counted(self.inner.get_range(key, start, len).await?))
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        self.inner.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn clear(&self) -> Result<(), BackendError> {
        self.inner.clear().await
    }
    fn name(&self) -> &'static str {
        "held"
    }
    fn store_apart_from(&self) -> Option<usize> {
        self.inner.store_apart_from()
    }
}

/// Clients reading one large stored response at the same time, each at its own pace: each holds
/// a window of it at a time, never a whole copy (eight slow clients of a 64 MiB response would
/// otherwise hold 512 MiB). Each still gets the exact bytes.
async fn slow_clients_hold_a_window_each(inner: Arc<dyn Backend>) {
    const CLIENTS: usize = 8;
    let backend = Held::over(inner);
    let held = Arc::clone(&backend.held);
    let (app, runs, handle) = app_with(backend, large_body());
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    let mut reading = Vec::new();
    for _ in 0..CLIENTS {
        let request = get_request("/large").body(empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-cache"], "HIT");
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        reading.push((first, body));
    }
    let at_once = held.load(Ordering::SeqCst);
    assert!(
        at_once <= CLIENTS * 2 * APART_READ_WINDOW,
        "{CLIENTS} clients part-way through a {LARGE}-byte response hold {at_once} bytes of it"
    );
    for (first, body) in reading {
        let rest = body.collect().await.unwrap().to_bytes();
        assert!([first, rest].concat() == large_body(), "the exact bytes");
    }
    assert_eq!(runs.get(), 1);
    assert_eq!(handle.stats().lookup_failures, 0);
}

#[tokio::test]
async fn through_redis_slow_clients_of_a_large_response_hold_a_window_each() {
    let redis = Redis::start();
    slow_clients_hold_a_window_each(untiered(&redis)).await;
}

/// Redis without its local tier, whose copies clients would share and `Held` count once each.
fn untiered(redis: &Redis) -> Arc<dyn Backend> {
    let backend = RedisBackend::builder(redis.url()).local_tier(0).build();
    Arc::new(backend.unwrap())
}

#[tokio::test]
async fn through_memcached_slow_clients_of_a_large_response_hold_a_window_each() {
    let memcached = Memcached::start();
    slow_clients_hold_a_window_each(Arc::new(MemcachedBackend::new(memcached.url()).unwrap()))
        .await;
}

/// A `Range` of a large stored response is read from storage: the windows that hold it, not the
/// whole response.
#[tokio::test]
async fn through_redis_a_range_of_a_large_response_reads_only_its_windows() {
    let redis = Redis::start();
    let backend = Held::over(Arc::new(RedisBackend::new(redis.url()).unwrap()));
    let read = Arc::clone(&backend.read);
    let (app, _, _) = app_with(backend, large_body());
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    let before = read.load(Ordering::SeqCst);
    let (first, last) = (3 * 1024 * 1024 - 50, 3 * 1024 * 1024 + 49);
    let range = format!("bytes={first}-{last}");
    let part = support::fetch_with(&app, "/large", &[("range", &range)]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.x_cache(), "HIT");
    assert!(part.body == large_body()[first..=last]);
    let read = read.load(Ordering::SeqCst) - before;
    assert!(
        read <= 2 * APART_READ_WINDOW + 4096,
        "{read} bytes read for 100 bytes of a {LARGE}-byte response"
    );
}

/// A large response whose stored copy disappears while a client reads it (purged, evicted) ends
/// in an error, never in a short body presented as complete; the next request is a miss that
/// gets it whole.
#[tokio::test]
async fn through_redis_a_large_response_gone_part_way_ends_in_an_error_not_a_short_body() {
    let redis = Redis::start();
    let backend = Arc::new(RedisBackend::new(redis.url()).unwrap());
    let (app, runs, _) = app_with(backend, large_body());
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    let request = get_request("/large").body(empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.headers()["x-cache"], "HIT");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(first.len() < LARGE);
    let apart = redis.cli(&["--scan", "--pattern", "*:apart:*"]);
    redis.cli(&["del", apart.trim()]);
    assert!(body.collect().await.is_err(), "the rest fails");
    let after = fetch(&app, "/large").await;
    assert_eq!(after.x_cache(), "MISS");
    assert!(after.body == large_body());
    assert_eq!(runs.get(), 2);
}

/// The proxy over Redis: a large response that went stale and that the origin confirms with a
/// 304 takes the 304's fields and is stored again whole (read back from storage once, for the
/// write), then served from storage with the new fields and the same bytes.
#[tokio::test]
async fn through_the_proxy_a_large_response_confirmed_by_a_304_is_stored_again_whole() {
    use axum::response::IntoResponse;
    let redis = Redis::start();
    let full_answers = Counter::default();
    let origin = {
        let full_answers = full_answers.clone();
        let answer = move |headers: http::HeaderMap| {
            let full_answers = full_answers.clone();
            async move {
                if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                    let fields = [("cache-control", "max-age=60"), ("x-version", "2")];
                    return (http::StatusCode::NOT_MODIFIED, fields).into_response();
                }
                full_answers.bump();
                // Two seconds: `Date` counts whole seconds, so a response may look up to one
                // second older than it is.
                let fields = [("cache-control", "max-age=2"), ("etag", "\"v1\"")];
                (fields, large_body()).into_response()
            }
        };
        support::serve(Router::new().route("/big", get(answer))).await
    };
    let middleware = CacheMiddleware::new(RedisBackend::new(redis.url()).unwrap())
        .max_body_size(64 * 1024 * 1024);
    let config = cache_middleware::proxy::ProxyConfig::from_toml("").unwrap();
    let proxy = cache_middleware::proxy::router(
        format!("http://{origin}").parse().unwrap(),
        &config,
        middleware,
    )
    .unwrap();
    let proxy = support::serve(proxy).await;
    let call = || support::over_http(proxy, "GET", "/big", &[], Bytes::new());

    assert_eq!(call().await.x_cache(), "MISS");
    let hit = call().await;
    assert_eq!(hit.x_cache(), "HIT");
    assert!(hit.body == large_body());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let validated = call().await;
    assert_eq!(validated.headers["x-version"], "2");
    assert!(validated.body == large_body());
    let after = call().await;
    assert_eq!(after.x_cache(), "HIT");
    assert_eq!(
        after.headers["x-version"], "2",
        "stored with the 304's fields"
    );
    assert!(after.body == large_body(), "and the same bytes");
    assert_eq!(full_answers.get(), 1);
}

/// Clients reading one large response at the same time share its windows: it is read from
/// storage about once, not once per client.
#[tokio::test]
async fn through_redis_concurrent_clients_of_a_large_response_read_it_from_storage_once() {
    const CLIENTS: usize = 8;
    let redis = Redis::start();
    let backend = Held::over(untiered(&redis));
    let read = Arc::clone(&backend.read);
    let (app, runs, _) = app_with(backend, large_body());
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    let before = read.load(Ordering::SeqCst);
    let hits = futures_util::future::join_all((0..CLIENTS).map(|_| fetch(&app, "/large"))).await;
    for hit in &hits {
        assert_eq!(hit.x_cache(), "HIT");
        assert!(hit.body == large_body(), "the exact bytes");
    }
    let read = read.load(Ordering::SeqCst) - before;
    assert!(
        read < 2 * LARGE,
        "{CLIENTS} clients of a {LARGE}-byte response read {read} bytes from storage"
    );
    assert_eq!(runs.get(), 1);
}

/// A large response read again while its windows are kept is served from them: the backend is
/// asked only whether the copy is still there (its last byte), not for the response again.
#[tokio::test]
async fn through_redis_a_large_response_read_again_soon_comes_from_the_kept_windows() {
    let redis = Redis::start();
    let backend = Held::over(untiered(&redis));
    let read = Arc::clone(&backend.read);
    let (app, _, _) = app_with(backend, large_body());
    assert_eq!(fetch(&app, "/large").await.x_cache(), "MISS");
    assert!(fetch(&app, "/large").await.body == large_body());
    let before = read.load(Ordering::SeqCst);
    let again = fetch(&app, "/large").await;
    assert_eq!(again.x_cache(), "HIT");
    assert!(again.body == large_body());
    let read = read.load(Ordering::SeqCst) - before;
    assert!(
        read < 4096,
        "{read} bytes read from storage for a hit of {LARGE} kept bytes"
    );
}

/// `/chunked`: the large response sent in 64 KiB pieces, a pause before each, with no length:
/// stored as it arrives, so its entry says its body runs to the end.
fn chunked_app(backend: Arc<dyn Backend>) -> (Router, Counter, CacheHandle) {
    let runs = Counter::default();
    let counted = runs.clone();
    let route = get(move || {
        counted.bump();
        let pieces = large_body()
            .chunks(64 * 1024)
            .map(Bytes::copy_from_slice)
            .collect();
        let stream = futures_util::stream::unfold(pieces, |mut pieces: Vec<Bytes>| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let next = (!pieces.is_empty()).then(|| pieces.remove(0))?;
            Some((Ok::<_, std::io::Error>(next), pieces))
        });
        async move { axum::body::Body::from_stream(stream) }
    });
    // Time enough for a 4 MiB write in a debug build: this is not about time.
    let middleware = CacheMiddleware::new(backend)
        .max_body_size(64 * 1024 * 1024)
        .backend_timeout(Duration::from_secs(5));
    let handle = middleware.handle();
    let app = Router::new()
        .route("/chunked", route.layer(cache(60)))
        .layer(middleware);
    (app, runs, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_of_unknown_length_is_stored_apart_and_read_back_whole_and_in_ranges() {
    let redis = Redis::start();
    let memcached = Memcached::start();
    let backends: [(&str, Arc<dyn Backend>); 2] = [
        ("redis", untiered(&redis)),
        (
            "memcached",
            Arc::new(MemcachedBackend::new(memcached.url()).unwrap()),
        ),
    ];
    for (name, backend) in backends {
        let (app, runs, handle) = chunked_app(backend);
        let first = fetch(&app, "/chunked").await;
        assert_eq!(first.x_cache(), "MISS", "{name}");
        assert!(
            first.headers.get("content-length").is_none(),
            "{name}: sent chunked"
        );
        assert!(
            first.body == large_body(),
            "{name}: the first client's bytes"
        );
        // Stored off the response's path: read back once it is there.
        for _ in 0..500 {
            if handle.stats().stores == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(handle.stats().stores, 1, "{name}: {:?}", handle.stats());
        let hit = fetch(&app, "/chunked").await;
        assert_eq!(hit.x_cache(), "HIT", "{name}");
        assert!(hit.body == large_body(), "{name}: the stored bytes");
        let part =
            support::fetch_with(&app, "/chunked", &[("range", "bytes=3000000-3000099")]).await;
        assert_eq!(
            (part.status.as_u16(), part.x_cache()),
            (206, "HIT"),
            "{name}"
        );
        assert!(
            part.body[..] == large_body()[3_000_000..3_000_100],
            "{name}"
        );
        assert_eq!(runs.get(), 1, "{name}");
        assert_eq!(
            handle.stats().coalesced,
            0,
            "{name}: every hit read storage"
        );
    }
    let apart = redis.cli(&["--scan", "--pattern", "*:apart:*"]);
    assert_eq!(apart.lines().count(), 1, "stored apart in Redis: {apart:?}");
}
