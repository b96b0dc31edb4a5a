//! Hit-for-miss: a key whose response could not be stored is remembered for a while, and its
//! requests go straight to the handler (or origin) instead of queueing behind another request
//! whose answer they could not take anyway. A response that can be stored ends it.

mod support;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::{cache, CacheMiddleware};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::servers::wait_until;
use support::{fetch, over_http};
use tokio::sync::Semaphore;

/// A handler that counts the runs that entered it and holds each until the test lets it go;
/// its response sets a cookie (so it cannot be stored) while `private` is set.
#[derive(Clone)]
struct Gate {
    entered: Arc<AtomicUsize>,
    open: Arc<Semaphore>,
    private: Arc<AtomicBool>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            entered: Arc::default(),
            open: Arc::new(Semaphore::new(0)),
            private: Arc::new(AtomicBool::new(true)),
        }
    }

    fn handler(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = axum::response::Response> + Send>>
           + Clone
           + Send
           + Sync
           + 'static {
        let gate = self.clone();
        move || {
            let gate = gate.clone();
            Box::pin(async move {
                use axum::response::IntoResponse;
                gate.entered.fetch_add(1, Ordering::SeqCst);
                gate.open.acquire().await.unwrap().forget();
                let cookie = if gate.private.load(Ordering::SeqCst) {
                    "session=abc"
                } else {
                    ""
                };
                let mut response = ([("cache-control", "max-age=60")], "page").into_response();
                if !cookie.is_empty() {
                    response
                        .headers_mut()
                        .insert("set-cookie", cookie.parse().unwrap());
                }
                response
            })
        }
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }

    fn let_one_go(&self) {
        self.open.add_permits(1);
    }
}

/// Drives `ask` (one request) while the gate is closed: a first request runs alone; once its
/// response is known to be unstorable, two more run side by side instead of one waiting.
async fn passes_after_an_unstorable_response<F, Fut>(gate: &Gate, ask: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = support::Observed> + Send + 'static,
{
    gate.let_one_go();
    let first = ask().await;
    assert_eq!(first.status, 200);
    assert_eq!(gate.entered(), 1);
    let a = tokio::spawn(ask());
    let b = tokio::spawn(ask());
    wait_until(
        "both requests to reach the handler",
        Duration::from_secs(5),
        || gate.entered() == 3,
    );
    gate.let_one_go();
    gate.let_one_go();
    for response in [a.await.unwrap(), b.await.unwrap()] {
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "page");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_an_unstorable_route_do_not_queue_until_it_is_storable_again() {
    let gate = Gate::new();
    let app = Router::new()
        .route("/page", get(gate.handler()).layer(cache(60)))
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let ask = || {
        let app = app.clone();
        async move { fetch(&app, "/page").await }
    };
    passes_after_an_unstorable_response(&gate, ask).await;

    // Storable again: the response is stored, and the key is shared again.
    gate.private.store(false, Ordering::SeqCst);
    gate.let_one_go();
    assert_eq!(ask().await.x_cache(), "MISS");
    assert_eq!(ask().await.x_cache(), "HIT");
    assert_eq!(gate.entered(), 4);

    // Off: a request waits for the one in flight, as single flight does.
    let gate = Gate::new();
    let app = Router::new()
        .route("/page", get(gate.handler()).layer(cache(60)))
        .layer(CacheMiddleware::new(MemoryBackend::new(100)).hit_for_miss(Duration::ZERO));
    gate.let_one_go();
    fetch(&app, "/page").await;
    let a = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/page").await }
    });
    wait_until("the leader to run", Duration::from_secs(5), || {
        gate.entered() == 2
    });
    let b = tokio::spawn({
        let app = app.clone();
        async move { fetch(&app, "/page").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gate.entered(), 2, "the second request waits for the first");
    gate.let_one_go();
    gate.let_one_go();
    a.await.unwrap();
    b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_requests_for_an_unstorable_url_to_the_origin_at_once() {
    let gate = Gate::new();
    let origin = support::serve(Router::new().route("/page", get(gate.handler()))).await;
    let config = ProxyConfig::from_toml("").unwrap();
    let proxy = router(
        format!("http://{origin}").parse().unwrap(),
        &config,
        CacheMiddleware::new(MemoryBackend::new(100)),
    )
    .unwrap();
    let proxy = support::serve(proxy).await;
    let ask = move || async move { over_http(proxy, "GET", "/page", &[], Bytes::new()).await };
    passes_after_an_unstorable_response(&gate, ask).await;
}
