//! Tags and purges: route tags and the tag field, soft and hard purges, in one instance and
//! across instances sharing Redis (Cluster included).

mod support;

use axum::routing::get;
use axum::Router;
use cache_middleware::backends::{Backend, MemoryBackend, RedisBackend};
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::{cache, CacheHandle, CacheMiddleware, PurgeKind};
use http::Method;
use std::sync::Arc;
use std::time::Duration;
use support::servers::{Cluster, Redis};
use support::{fetch, fetch_with, Counter, Observed};

/// `/products/{id}` tagged `products` by the route and `product:{id}` by its response;
/// `/about` untagged. Every response says which run made it.
fn shop(
    backend: Arc<dyn Backend>,
    runs: &Counter,
    route: impl Fn() -> cache_middleware::CacheLayer,
) -> (Router, CacheHandle) {
    let middleware = CacheMiddleware::new(backend);
    let handle = middleware.handle();
    let product = {
        let runs = runs.clone();
        move |axum::extract::Path(id): axum::extract::Path<u32>| {
            let run = runs.bump();
            async move {
                let tags = format!("product:{id} catalog");
                (
                    [("surrogate-key", tags)],
                    format!("product {id}, run {run}"),
                )
            }
        }
    };
    let about = {
        let runs = runs.clone();
        move || {
            let run = runs.bump();
            async move { format!("about, run {run}") }
        }
    };
    let app = Router::new()
        .route(
            "/products/{id}",
            get(product).layer(route().tags(["products"])),
        )
        .route("/about", get(about).layer(cache(300)))
        .layer(middleware);
    (app, handle)
}

fn plain() -> cache_middleware::CacheLayer {
    cache(300)
}

async fn warm(app: &Router) -> [Observed; 3] {
    [
        fetch(app, "/products/1").await,
        fetch(app, "/products/2").await,
        fetch(app, "/about").await,
    ]
}

/// Waits up to 5 s for the handler to have run `n` times (a background refresh).
async fn until_runs(runs: &Counter, n: usize) {
    for _ in 0..500 {
        if runs.get() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hard_purge_by_tag_removes_exactly_the_entries_that_carry_it() {
    let runs = Counter::default();
    let (app, handle) = shop(Arc::new(MemoryBackend::new(100)), &runs, plain);
    let first = warm(&app).await;
    assert!(
        first.iter().all(|r| r.header("surrogate-key").is_none()),
        "the tag field never reaches clients"
    );
    assert_eq!(runs.get(), 3);

    // A tag the response named: only that product.
    handle
        .purge_tag("product:1", PurgeKind::Hard)
        .await
        .unwrap();
    let [one, two, about] = warm(&app).await;
    assert_eq!(
        (one.x_cache(), two.x_cache(), about.x_cache()),
        ("MISS", "HIT", "HIT")
    );
    assert_eq!(one.text(), "product 1, run 4");
    assert!(one.header("surrogate-key").is_none());

    // The route's tag: every product, not /about.
    handle.purge_tag("products", PurgeKind::Hard).await.unwrap();
    // (A response stored in the purge's own millisecond counts as purged: it may predate it.)
    tokio::time::sleep(Duration::from_millis(2)).await;
    let [one, two, about] = warm(&app).await;
    assert_eq!(
        (one.x_cache(), two.x_cache(), about.x_cache()),
        ("MISS", "MISS", "HIT")
    );
    // Entries stored after the purge are not affected by it.
    let [one, two, _] = warm(&app).await;
    assert_eq!((one.x_cache(), two.x_cache()), ("HIT", "HIT"));

    let error = handle
        .purge_tag("two words", PurgeKind::Hard)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a valid tag"), "{error}");
}

#[tokio::test]
async fn a_soft_purge_makes_entries_stale_served_while_revalidating_where_the_route_allows() {
    let runs = Counter::default();
    let with_window = || cache(300).stale_while_revalidate(Duration::from_secs(60));
    let (app, handle) = shop(Arc::new(MemoryBackend::new(100)), &runs, with_window);
    fetch(&app, "/products/1").await;
    handle.purge_tag("catalog", PurgeKind::Soft).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    let stale = fetch(&app, "/products/1").await;
    assert_eq!(stale.x_cache(), "STALE");
    assert_eq!(
        stale.text(),
        "product 1, run 1",
        "the old response, at once"
    );
    until_runs(&runs, 2).await;
    assert_eq!(runs.get(), 2, "one background run of the handler");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = fetch(&app, "/products/1").await;
    assert_eq!(
        (fresh.x_cache(), fresh.text().as_str()),
        ("HIT", "product 1, run 2")
    );

    // Without a stale window, a softly purged entry is fetched again.
    let runs = Counter::default();
    let (app, handle) = shop(Arc::new(MemoryBackend::new(100)), &runs, plain);
    fetch(&app, "/products/1").await;
    handle.purge_tag("catalog", PurgeKind::Soft).await.unwrap();
    assert_eq!(fetch(&app, "/products/1").await.x_cache(), "MISS");
}

/// A soft purge of one URL: its entry becomes stale (served while revalidating where the route
/// allows); a response that varies has variants no purge can list, so it is purged hard, and
/// the caller is told so.
#[tokio::test]
async fn a_soft_purge_of_a_url_makes_its_entry_stale_and_a_varying_one_goes() {
    let runs = Counter::default();
    let with_window = || cache(300).stale_while_revalidate(Duration::from_secs(60));
    let (app, handle) = shop(Arc::new(MemoryBackend::new(100)), &runs, with_window);
    fetch(&app, "/products/1").await;
    fetch(&app, "/products/2").await;
    let done = handle
        .purge_url(Method::GET, "http://test.local/products/1", PurgeKind::Soft)
        .await
        .unwrap();
    assert_eq!(done, Some(PurgeKind::Soft));
    let stale = fetch(&app, "/products/1").await;
    assert_eq!(
        (stale.x_cache(), stale.text().as_str()),
        ("STALE", "product 1, run 1")
    );
    until_runs(&runs, 3).await;
    assert_eq!(runs.get(), 3, "one background run of the handler");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = fetch(&app, "/products/1").await;
    assert_eq!(
        (fresh.x_cache(), fresh.text().as_str()),
        ("HIT", "product 1, run 3")
    );
    assert_eq!(
        fetch(&app, "/products/2").await.x_cache(),
        "HIT",
        "only that URL"
    );
    let nothing = handle
        .purge_url(Method::GET, "http://test.local/products/9", PurgeKind::Soft)
        .await
        .unwrap();
    assert_eq!(nothing, None, "nothing stored there");

    // Without a stale window, the softly purged entry is fetched again.
    let runs = Counter::default();
    let (app, handle) = shop(Arc::new(MemoryBackend::new(100)), &runs, plain);
    fetch(&app, "/products/1").await;
    handle
        .purge_url(Method::GET, "http://test.local/products/1", PurgeKind::Soft)
        .await
        .unwrap();
    assert_eq!(fetch(&app, "/products/1").await.x_cache(), "MISS");

    // Variants: purged hard.
    let runs = Counter::default();
    let varying = || {
        cache(300)
            .stale_while_revalidate(Duration::from_secs(60))
            .vary_on("accept-language")
    };
    let (app, handle) = shop(Arc::new(MemoryBackend::new(100)), &runs, varying);
    fetch_with(&app, "/products/1", &[("accept-language", "fr")]).await;
    let done = handle
        .purge_url(Method::GET, "http://test.local/products/1", PurgeKind::Soft)
        .await
        .unwrap();
    assert_eq!(done, Some(PurgeKind::Hard));
    let again = fetch_with(&app, "/products/1", &[("accept-language", "fr")]).await;
    assert_eq!(again.x_cache(), "MISS");
}

#[tokio::test]
async fn a_purge_in_one_instance_reaches_another_sharing_redis() {
    let redis = Redis::start();
    let backend = || -> Arc<dyn Backend> {
        Arc::new(
            RedisBackend::builder(redis.url())
                .namespace("tags")
                .build()
                .unwrap(),
        )
    };
    let runs = Counter::default();
    let (a, a_handle) = shop(backend(), &runs, plain);
    let (b, _) = shop(backend(), &runs, plain);
    warm(&a).await;
    let [one, _, _] = warm(&b).await;
    assert_eq!(one.x_cache(), "HIT", "b reads a's entries");
    a_handle
        .purge_tag("product:2", PurgeKind::Hard)
        .await
        .unwrap();
    let [one, two, about] = warm(&b).await;
    assert_eq!(
        (one.x_cache(), two.x_cache(), about.x_cache()),
        ("HIT", "MISS", "HIT")
    );
}

#[tokio::test]
async fn purges_work_on_a_cluster_where_markers_share_one_slot() {
    let cluster = Cluster::start();
    let backend = || -> Arc<dyn Backend> {
        Arc::new(
            RedisBackend::cluster_builder(cluster.urls())
                .build()
                .unwrap(),
        )
    };
    let runs = Counter::default();
    let (a, handle) = shop(backend(), &runs, plain);
    for id in 0..20 {
        fetch(&a, &format!("/products/{id}")).await;
    }
    handle.purge_tag("catalog", PurgeKind::Hard).await.unwrap();
    let (b, _) = shop(backend(), &runs, plain);
    for id in 0..20 {
        let again = fetch(&b, &format!("/products/{id}")).await;
        assert_eq!(again.x_cache(), "MISS", "product {id}");
        assert_eq!(fetch(&b, &format!("/products/{id}")).await.x_cache(), "HIT");
    }
}

#[tokio::test]
async fn the_proxy_takes_tags_from_the_origin_and_never_shows_them() {
    let (page, _asked) = support::counted_route(&[
        ("cache-control", "max-age=60"),
        ("surrogate-key", "page home"),
    ]);
    let origin = {
        let private = || async {
            (
                [
                    ("cache-control", "private"),
                    ("surrogate-key", "secret-tag"),
                ],
                "mine",
            )
        };
        support::serve(
            Router::new()
                .route("/page", page)
                .route("/private", get(private)),
        )
        .await
    };
    let middleware = CacheMiddleware::new(MemoryBackend::new(100));
    let handle = middleware.handle();
    let config = ProxyConfig::from_toml("").unwrap();
    let proxy = router(
        format!("http://{origin}").parse().unwrap(),
        &config,
        middleware,
    )
    .unwrap();
    let proxy = support::serve(proxy).await;
    let get_page = || support::over_http(proxy, "GET", "/page", &[], bytes::Bytes::new());
    let first = get_page().await;
    assert!(first.header("surrogate-key").is_none());
    assert_eq!(get_page().await.text(), "run 1");
    let private = support::over_http(proxy, "GET", "/private", &[], bytes::Bytes::new()).await;
    assert_eq!(private.text(), "mine");
    assert!(
        private.header("surrogate-key").is_none(),
        "nor on what is not stored"
    );
    let bypass = [("cache-control", "no-store")];
    let passed = support::over_http(proxy, "GET", "/private", &bypass, bytes::Bytes::new()).await;
    assert_eq!(passed.x_cache(), "BYPASS");
    assert!(
        passed.header("surrogate-key").is_none(),
        "nor on what passes by the cache"
    );
    handle.purge_tag("home", PurgeKind::Hard).await.unwrap();
    let after = get_page().await;
    assert_eq!(after.text(), "run 2");
    assert!(after.header("surrogate-key").is_none());
}
