//! `PURGE` over HTTP: the demo binary and the proxy, with and without a token.

mod support;

use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::purge::PurgeAccess;
use cache_middleware::CacheMiddleware;
use http::{Method, Request, StatusCode};
use support::{over_http, DemoServer, Observed};

const TOKEN: &str = "a-purge-token-for-tests";

async fn purge(demo: &DemoServer, path: &str, headers: &[(&str, &str)]) -> Observed {
    let mut request = Request::builder()
        .method(Method::from_bytes(b"PURGE").unwrap())
        .uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    demo.request(request, Bytes::new()).await
}

const BEARER: (&str, &str) = ("authorization", "Bearer a-purge-token-for-tests");

#[tokio::test]
async fn without_a_token_purge_is_not_special() {
    let demo = DemoServer::start(&[]);
    demo.get("/items/1").await;
    let refused = purge(&demo, "/items/1", &[BEARER]).await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(demo.get("/items/1").await.x_cache(), "HIT");
}

#[tokio::test]
async fn only_the_token_purges_urls_tags_and_everything() {
    let demo = DemoServer::start(&[("CACHE_PURGE_TOKEN", TOKEN)]);
    for path in ["/items/1", "/items/2", "/users/1", "/"] {
        demo.get(path).await;
    }
    for headers in [
        &[][..],
        &[("authorization", "Bearer wrong-token-of-some-length")][..],
        &[("authorization", TOKEN)][..],
    ] {
        let refused = purge(&demo, "/items/1", headers).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(
        demo.get("/items/1").await.x_cache(),
        "HIT",
        "a refused purge changes nothing"
    );

    let url = purge(&demo, "/items/1", &[BEARER]).await;
    assert_eq!(url.status, StatusCode::OK, "{}", url.text());
    let after = [demo.get("/items/1").await, demo.get("/items/2").await];
    assert_eq!([after[0].x_cache(), after[1].x_cache()], ["MISS", "HIT"]);

    // Soft: the entry is stale (these routes have no stale window, so it is fetched again).
    let soft = purge(&demo, "/items/2", &[BEARER, ("soft-purge", "1")]).await;
    assert_eq!(soft.status, StatusCode::OK, "{}", soft.text());
    assert!(soft.text().contains(r#""kind":"soft""#), "{}", soft.text());
    let after = [demo.get("/items/2").await, demo.get("/items/1").await];
    assert_eq!([after[0].x_cache(), after[1].x_cache()], ["MISS", "HIT"]);
    let nothing = purge(&demo, "/items/77", &[BEARER, ("soft-purge", "1")]).await;
    assert!(
        nothing.text().contains(r#""kind":"none""#),
        "{}",
        nothing.text()
    );

    let tag = purge(&demo, "/", &[BEARER, ("surrogate-key", "items")]).await;
    assert_eq!(tag.status, StatusCode::OK, "{}", tag.text());
    assert!(tag.text().contains("items"), "{}", tag.text());
    std::thread::sleep(std::time::Duration::from_millis(2));
    let after = [
        demo.get("/items/2").await,
        demo.get("/users/1").await,
        demo.get("/").await,
    ];
    assert_eq!(
        after.each_ref().map(Observed::x_cache),
        ["MISS", "HIT", "HIT"]
    );

    let bad = purge(&demo, "/", &[BEARER, ("surrogate-key", "caf\u{e9}")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    let empty = purge(&demo, "/", &[BEARER, ("surrogate-key", " , ")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "{}", empty.text());
    assert_eq!(
        demo.get("/").await.x_cache(),
        "HIT",
        "a refused tag purge is no URL purge"
    );

    let all = purge(&demo, "/", &[BEARER, ("surrogate-key", "*")]).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text());
    assert_eq!(demo.get("/users/1").await.x_cache(), "MISS");
    assert!(!demo.logs().contains(TOKEN), "the token is never logged");
}

#[test]
fn a_short_token_stops_the_demo_with_the_variables_name() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"))
        .env("PORT", "0")
        .env("CACHE_PURGE_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CACHE_PURGE_TOKEN") && stderr.contains("16"),
        "{stderr}"
    );
    assert!(!stderr.contains("short\""), "{stderr}");
}

#[tokio::test]
async fn the_proxy_answers_purge_itself_on_the_path_it_keyed() {
    let (item, asked) = support::counted_route(&[("cache-control", "max-age=60")]);
    let origin = support::serve(Router::new().route("/items/1", item)).await;
    let middleware = CacheMiddleware::new(MemoryBackend::new(100));
    let access = PurgeAccess::new(middleware.handle(), TOKEN)
        .unwrap()
        .normalizing_paths();
    let config = ProxyConfig::from_toml("").unwrap();
    let proxy = router(
        format!("http://{origin}").parse().unwrap(),
        &config,
        middleware,
    )
    .unwrap();
    let proxy = support::serve(access.serve_on(proxy)).await;
    let get_item = || over_http(proxy, "GET", "/items/1", &[], Bytes::new());
    get_item().await;
    assert_eq!(get_item().await.x_cache(), "HIT");
    let refused = over_http(proxy, "PURGE", "/items/1", &[], Bytes::new()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(asked.get(), 1, "a PURGE never reaches the origin");
    // The path as the edge reads it: dot segments and escapes resolved.
    let purged = over_http(proxy, "PURGE", "/items/./%31", &[BEARER], Bytes::new()).await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    let again = get_item().await;
    assert_eq!((again.x_cache(), again.text().as_str()), ("MISS", "run 2"));
}
