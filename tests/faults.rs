//! The cache is never the reason a request fails: backends killed, frozen or absent, stampedes, and
//! handlers that fail, panic or are cancelled. Real redis-server and memcached processes.

mod support;

use axum::routing::get;
use axum::Router;
use cache_middleware::backends::{Backend, MemcachedBackend, RedisBackend};
use cache_middleware::{cache, BreakerState, CacheHandle, CacheMiddleware};
use http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::servers::{free_port, Memcached, Redis};
use support::{fetch, Counter, Observed};

/// An app whose `/n/{i}` handler counts its runs and takes `work` each time.
fn counting_app(backend: Arc<dyn Backend>, work: Duration) -> (Router, Counter, CacheHandle) {
    let counter = Counter::default();
    let runs = counter.clone();
    let middleware = CacheMiddleware::new(backend)
        .backend_timeout(Duration::from_millis(100))
        .breaker_threshold(3)
        .breaker_cooldown(Duration::from_millis(300));
    let handle = middleware.handle();
    let app = Router::new()
        .route(
            "/n/{i}",
            get(move || {
                let run = runs.bump();
                async move {
                    tokio::time::sleep(work).await;
                    format!("run {run}")
                }
            })
            .layer(cache(60)),
        )
        .layer(middleware);
    (app, counter, handle)
}

/// Requests `/n/0` .. `/n/{spread}` round-robin until `stop` returns true; every answer must be 2xx.
async fn requests_until(
    app: &Router,
    spread: usize,
    mut stop: impl FnMut(&Observed) -> bool,
) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    loop {
        let response = fetch(app, &format!("/n/{}", sent % spread)).await;
        sent += 1;
        assert!(
            response.status.is_success(),
            "request {sent}: {}",
            response.status
        );
        if stop(&response) {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached after {sent} requests"
        );
    }
}

#[tokio::test]
async fn a_redis_killed_mid_stream_never_fails_a_request_and_caching_resumes_after_restart() {
    let port = free_port();
    let mut redis = Redis::start_with(port, &[]);
    let backend = RedisBackend::new(redis.url()).unwrap();
    let (app, _, _) = counting_app(Arc::new(backend), Duration::ZERO);
    requests_until(&app, 5, |r| r.x_cache() == "HIT").await;

    // A stream of concurrent requests, with the server killed in the middle of it.
    let stream = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..400 {
                statuses.push(fetch(&app, &format!("/n/{}", i % 20)).await.status);
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    redis.process.kill();
    let statuses = stream.await.unwrap();
    assert!(statuses.iter().all(StatusCode::is_success), "{statuses:?}");

    let _restarted = Redis::start_with(port, &[]);
    requests_until(&app, 5, |r| r.x_cache() == "HIT").await;
}

#[tokio::test]
async fn a_frozen_redis_costs_at_most_the_budget_and_opens_the_breaker_until_it_thaws() {
    let redis = Redis::start();
    // Every lookup a round trip: the local tier would answer the keys it holds through a freeze
    // shorter than its detection bound (rightly: a frozen server changes nothing), without the
    // breaker seeing them.
    let backend = RedisBackend::builder(redis.url())
        .local_tier(0)
        .build()
        .unwrap();
    let (app, _, handle) = counting_app(Arc::new(backend), Duration::ZERO);
    requests_until(&app, 3, |r| r.x_cache() == "HIT").await;

    redis.process.signal("STOP");
    let mut slowest = Duration::ZERO;
    for i in 0..30 {
        let started = Instant::now();
        let response = fetch(&app, &format!("/n/{}", 100 + i)).await;
        slowest = slowest.max(started.elapsed());
        assert!(response.status.is_success());
    }
    let stats = handle.stats();
    redis.process.signal("CONT");
    // The budget is 100 ms per backend call and a lookup makes at most one; without a budget these
    // requests would hang for as long as the server stays frozen.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request took {slowest:?}"
    );
    assert_eq!(stats.breaker_opened, 1, "{stats:?}");

    // After the thaw, the breaker probes, closes, and caching resumes.
    requests_until(&app, 3, |r| r.x_cache() == "HIT").await;
    assert_eq!(handle.stats().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn an_app_started_while_redis_is_down_serves_then_caches_once_redis_is_up() {
    let port = free_port();
    let backend = RedisBackend::new(format!("redis://127.0.0.1:{port}")).unwrap();
    let (app, counter, _) = counting_app(Arc::new(backend), Duration::ZERO);
    for i in 0..20 {
        let response = fetch(&app, &format!("/n/{}", i % 2)).await;
        assert_eq!(
            (response.status, response.x_cache()),
            (StatusCode::OK, "MISS")
        );
    }
    assert_eq!(counter.get(), 20);
    let _redis = Redis::start_with(port, &[]);
    requests_until(&app, 2, |r| r.x_cache() == "HIT").await;
}

#[tokio::test]
async fn a_memcached_killed_mid_stream_never_fails_a_request_and_caching_resumes() {
    let port = free_port();
    let mut memcached = Memcached::start_on(port);
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    let (app, _, _) = counting_app(Arc::new(backend), Duration::ZERO);
    requests_until(&app, 5, |r| r.x_cache() == "HIT").await;
    memcached.process.kill();
    for i in 0..200 {
        assert!(fetch(&app, &format!("/n/{}", i % 20))
            .await
            .status
            .is_success());
    }
    let _restarted = Memcached::start_on(port);
    requests_until(&app, 5, |r| r.x_cache() == "HIT").await;
}

#[tokio::test]
async fn two_hundred_identical_cold_requests_on_redis_run_the_handler_once() {
    let redis = Redis::start();
    let backend = RedisBackend::new(redis.url()).unwrap();
    let (app, counter, handle) = counting_app(Arc::new(backend), Duration::from_millis(300));
    let requests = (0..200).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { fetch(&app, "/n/1").await })
    });
    let responses: Vec<Observed> = futures_util::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(counter.get(), 1);
    assert!(responses
        .iter()
        .all(|r| r.status == StatusCode::OK && r.body == responses[0].body));
    assert_eq!(handle.stats().coalesced, 199);
}

/// An app whose handler misbehaves on its first run (`first`), then answers normally.
fn app_failing_first(first: &'static str) -> (Router, Counter) {
    let counter = Counter::default();
    let runs = counter.clone();
    let app = Router::new()
        .route(
            "/flaky",
            get(move || {
                let run = runs.bump();
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    match (run, first) {
                        (1, "panic") => panic!("handler panicked"),
                        (1, "error") => (StatusCode::INTERNAL_SERVER_ERROR, "failed".to_owned()),
                        (1, "slow") => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            (StatusCode::OK, "too late".to_owned())
                        }
                        _ => (StatusCode::OK, format!("run {run}")),
                    }
                }
            })
            .layer(cache(60)),
        )
        .layer(CacheMiddleware::new(
            cache_middleware::backends::MemoryBackend::new(100),
        ));
    (app, counter)
}

async fn waiters_after(app: &Router, n: usize) -> Vec<Observed> {
    let waiters = (0..n).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { fetch(&app, "/flaky").await })
    });
    futures_util::future::join_all(waiters)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn when_the_leader_fails_waiters_run_the_handler_themselves() {
    let (app, counter) = app_failing_first("error");
    let leader = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/flaky").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiters = waiters_after(&app, 5).await;
    assert_eq!(
        leader.await.unwrap().status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(
        waiters.iter().all(|r| r.status == StatusCode::OK),
        "the error is never shared"
    );
    assert!(counter.get() >= 2);
}

#[tokio::test]
async fn when_the_leader_panics_waiters_proceed() {
    let (app, _) = app_failing_first("panic");
    let leader = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/flaky").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiters = waiters_after(&app, 5).await;
    assert!(leader.await.unwrap_err().is_panic());
    assert!(waiters.iter().all(|r| r.status == StatusCode::OK));
}

#[tokio::test]
async fn when_the_leader_is_cancelled_waiters_proceed_without_waiting_for_it() {
    let (app, _) = app_failing_first("slow");
    let leader = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/flaky").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let waiters = tokio::spawn({
        let app = app.clone();
        async move { waiters_after(&app, 5).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    let waiters = waiters.await.unwrap();
    assert!(waiters.iter().all(|r| r.status == StatusCode::OK));
    // They ran their own handler (0.3 s) instead of waiting out the 10 s coalescing limit.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
