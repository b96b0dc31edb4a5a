//! Route mode through a real axum `Router`: what a client observes of each caching rule.

mod support;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get as get_route};
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::{Backend, MemoryBackend};
use cache_middleware::{cache, CacheHandle, CacheLayer, CacheMiddleware, PurgeKind};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use support::{empty, fetch, fetch_with, get, send, x_caches, Counter};

/// A handler that counts its runs and answers as the request's query tells it:
/// `status=N` sets the status, `h-NAME=VALUE` adds a response header; the body names the run,
/// the method and the request body.
fn echo(counter: Counter) -> axum::routing::MethodRouter {
    any(move |request: Request| {
        let counter = counter.clone();
        async move {
            let run = counter.bump();
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let mut response = Response::builder().status(200);
            for pair in parts.uri.query().unwrap_or("").split('&') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = value.replace("%20", " ").replace("%3D", "=");
                if name == "status" {
                    response = response.status(value.parse::<u16>().unwrap());
                } else if let Some(header) = name.strip_prefix("h-") {
                    response = response.header(header, value);
                }
            }
            let text = format!("run={run} method={} body={}", parts.method, body.len());
            response.body(Body::from(text)).unwrap()
        }
    })
}

fn app_with(layer: CacheLayer, middleware: CacheMiddleware) -> (Router, Counter) {
    let counter = Counter::default();
    let app = Router::new()
        .route("/r", echo(counter.clone()).layer(layer))
        .route("/plain", echo(counter.clone()))
        .layer(middleware);
    (app, counter)
}

fn app() -> (Router, Counter) {
    app_with(cache(60), CacheMiddleware::new(MemoryBackend::new(100)))
}

#[tokio::test]
async fn a_second_get_is_a_hit_with_identical_status_headers_and_body() {
    let (app, counter) = app();
    let uri = "/r?status=200&h-content-type=image/png&h-x-app=1";
    let miss = fetch(&app, uri).await;
    let hit = fetch(&app, uri).await;
    assert_eq!(x_caches([&miss, &hit]), ["MISS", "HIT"]);
    assert_eq!(counter.get(), 1);
    assert_eq!(hit.status, miss.status);
    assert_eq!(hit.body, miss.body);
    assert_eq!(hit.header("content-type"), Some("image/png"));
    assert_eq!(hit.header("x-app"), Some("1"));
    assert_eq!(hit.header("etag"), miss.header("etag"));
    assert_eq!(hit.header("age"), Some("0"));
    assert_eq!(miss.header("age"), None);
}

#[tokio::test]
async fn routes_without_cache_are_untouched() {
    let (app, counter) = app();
    for _ in 0..2 {
        let response = fetch(&app, "/plain").await;
        assert_eq!(response.header("x-cache"), None);
        assert_eq!(response.header("etag"), None);
    }
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn head_is_answered_from_the_get_entry_without_a_body() {
    let (app, counter) = app();
    let full = fetch(&app, "/r").await;
    let head = send(&app, get("/r").method(Method::HEAD).body(empty()).unwrap()).await;
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(full.body.len().to_string().as_str())
    );
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn a_head_miss_reaches_the_handler_and_stores_nothing() {
    let (app, counter) = app();
    let head = send(&app, get("/r").method(Method::HEAD).body(empty()).unwrap()).await;
    assert_eq!(head.x_cache(), "MISS");
    let get_after = fetch(&app, "/r").await;
    assert_eq!(get_after.x_cache(), "MISS");
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn query_pairs_count_with_their_order_repeats_and_values_but_empty_segments_do_not() {
    let (app, counter) = app();
    let first = fetch(&app, "/r?b=2&a=1").await;
    let again = fetch(&app, "/r?&b=2&&a=1&").await;
    assert_eq!(x_caches([&first, &again]), ["MISS", "HIT"]);
    for other in ["/r?a=1&b=2", "/r?b=2&a=1&a=1", "/r?b=2", "/r?b=2&a", "/r"] {
        let response = fetch(&app, other).await;
        assert_eq!(response.x_cache(), "MISS", "{other}");
    }
    assert_eq!(counter.get(), 6);
}

#[tokio::test]
async fn one_name_repeated_in_another_order_is_another_request() {
    // The README's own route reads the query into a map, where the last value of a repeated
    // name wins: `?q=a&q=b` asks for `b`, `?q=b&q=a` for `a`. They must not share an entry.
    let app = Router::new()
        .route(
            "/items",
            get_route(
                |axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, String>,
                >| async move { q.get("q").cloned().unwrap_or_default() },
            )
            .layer(cache(60)),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let b = fetch(&app, "/items?q=a&q=b&x=1").await;
    let a = fetch(&app, "/items?x=1&q=b&q=a").await;
    assert_eq!((b.body.as_ref(), a.body.as_ref()), (&b"b"[..], &b"a"[..]));
    // One name written two ways (`%71` is `q`) is one name to the application: sorting the
    // names as sent would put these two in one order.
    let b = fetch(&app, "/items?%71=a&q=b").await;
    let a = fetch(&app, "/items?q=b&%71=a").await;
    assert_eq!((b.body.as_ref(), a.body.as_ref()), (&b"b"[..], &b"a"[..]));
    let again = fetch(&app, "/items?q=b&%71=a").await;
    assert_eq!((again.x_cache(), again.body.as_ref()), ("HIT", &b"a"[..]));
    // Names apart in another order are another request too: one name has many spellings.
    let other = fetch(&app, "/items?x=1&q=a").await;
    assert_eq!(other.x_cache(), "MISS");
}

fn post(uri: &str, body: impl Into<Bytes>) -> Request<Body> {
    http::Request::post(uri)
        .header("host", "test.local")
        .header("content-type", "application/octet-stream")
        .body(Body::from(body.into()))
        .unwrap()
}

#[tokio::test]
async fn post_requests_are_cached_by_their_exact_body_bytes() {
    let (app, counter) = app();
    let a = send(&app, post("/r", &b"\x00\xffbinary"[..])).await;
    let a_again = send(&app, post("/r", &b"\x00\xffbinary"[..])).await;
    let b = send(&app, post("/r", &b"\x00\xfebinary"[..])).await;
    assert_eq!(x_caches([&a, &a_again, &b]), ["MISS", "HIT", "MISS"]);
    assert_eq!(a.body, a_again.body);
    assert_eq!(a.text(), "run=1 method=POST body=8");
    assert_eq!(counter.get(), 2);
    // A GET of the same URL is a different entry.
    assert_eq!(fetch(&app, "/r").await.x_cache(), "MISS");
}

#[tokio::test]
async fn a_post_body_is_keyed_with_how_it_is_encoded() {
    // The same bytes under another `Content-Encoding` are another request: a decompression
    // layer hands the application what they decode to.
    let (app, counter) = app();
    let encoded = |encoding: Option<&str>| {
        let mut request = post("/r", &b"same bytes"[..]);
        if let Some(encoding) = encoding {
            let value = http::HeaderValue::from_str(encoding).unwrap();
            request.headers_mut().append("content-encoding", value);
        }
        request
    };
    let mut answers = Vec::new();
    for encoding in [None, Some("gzip"), Some("br"), Some("gzip"), None] {
        answers.push(send(&app, encoded(encoding)).await.x_cache().to_owned());
    }
    assert_eq!(answers, ["MISS", "MISS", "MISS", "HIT", "HIT"]);
    assert_eq!(counter.get(), 3);
}

#[tokio::test]
async fn a_post_body_is_keyed_with_every_content_type_line() {
    // A server that joins a field's lines (as CGI and WSGI servers do) hands the application
    // `application/json, text/plain`: not the request that says `application/json` alone.
    let (app, counter) = app();
    let typed = |types: &[&str]| {
        let mut request = post("/r", &b"{}"[..]);
        request.headers_mut().remove("content-type");
        for content_type in types {
            let value = http::HeaderValue::from_str(content_type).unwrap();
            request.headers_mut().append("content-type", value);
        }
        request
    };
    let json: &[&str] = &["application/json"];
    let two: &[&str] = &["application/json", "text/plain"];
    let mut answers = Vec::new();
    for types in [json, two, json, two] {
        answers.push(send(&app, typed(types)).await.x_cache().to_owned());
    }
    assert_eq!(answers, ["MISS", "MISS", "HIT", "HIT"]);
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn post_bodies_over_the_limit_bypass_and_reach_the_handler_intact() {
    let middleware = CacheMiddleware::new(MemoryBackend::new(100)).max_request_body_size(16);
    let (app, counter) = app_with(cache(60), middleware);
    let big = vec![b'x'; 1000];
    for _ in 0..2 {
        let response = send(&app, post("/r", big.clone())).await;
        assert_eq!(response.x_cache(), "BYPASS");
        assert!(
            response.text().ends_with("body=1000"),
            "{}",
            response.text()
        );
    }
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn a_streamed_post_body_over_the_limit_is_handed_on_whole() {
    let middleware = CacheMiddleware::new(MemoryBackend::new(100)).max_request_body_size(10);
    let (app, _) = app_with(cache(60), middleware);
    // No Content-Length: the limit is found while reading.
    let chunks = futures_util::stream::iter(
        (0..5).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"0123456789"))),
    );
    let request = http::Request::post("/r")
        .header("host", "test.local")
        .body(Body::from_stream(chunks))
        .unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.x_cache(), "BYPASS");
    assert_eq!(response.text(), "run=1 method=POST body=50");
}

#[tokio::test]
async fn other_methods_pass_through_with_bypass() {
    let (app, counter) = app();
    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        let request = get("/r").method(method.clone()).body(empty()).unwrap();
        assert_eq!(send(&app, request).await.x_cache(), "BYPASS", "{method}");
    }
    assert_eq!(counter.get(), 3);
}

#[tokio::test]
async fn request_no_cache_fetches_fresh_and_replaces_the_entry() {
    let (app, counter) = app();
    fetch(&app, "/r").await;
    for header in [
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("cache-control", "max-age=0"),
    ] {
        let refreshed = fetch_with(&app, "/r", &[(header.0, header.1)]).await;
        assert_eq!(refreshed.x_cache(), "REFRESH", "{header:?}");
        let after = fetch(&app, "/r").await;
        assert_eq!(after.x_cache(), "HIT");
        assert_eq!(
            after.body, refreshed.body,
            "the fresh response replaced the stored one"
        );
    }
    assert_eq!(counter.get(), 4);
}

#[tokio::test]
async fn request_no_store_neither_reads_nor_writes() {
    let (app, counter) = app();
    let bypass = fetch_with(&app, "/r", &[("cache-control", "no-store")]).await;
    assert_eq!(bypass.x_cache(), "BYPASS");
    let first = fetch(&app, "/r").await;
    assert_eq!(first.x_cache(), "MISS", "no-store wrote nothing");
    let bypass = fetch_with(&app, "/r", &[("cache-control", "no-store")]).await;
    assert_eq!(bypass.x_cache(), "BYPASS", "no-store read nothing");
    assert_eq!(counter.get(), 3);
}

#[tokio::test]
async fn request_directives_can_be_switched_off() {
    let middleware =
        CacheMiddleware::new(MemoryBackend::new(100)).honor_request_cache_control(false);
    let (app, counter) = app_with(cache(60), middleware);
    fetch(&app, "/r").await;
    let response = fetch_with(&app, "/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(response.x_cache(), "HIT");
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn malformed_request_cache_control_is_ignored() {
    let (app, counter) = app();
    fetch(&app, "/r").await;
    for value in ["max-age=abc", ",,,=", "no-stor", "\u{7f}"] {
        let Ok(request) = get("/r").header("cache-control", value).body(empty()) else {
            continue;
        };
        assert_eq!(send(&app, request).await.x_cache(), "HIT", "{value:?}");
    }
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn error_and_non_200_responses_are_not_stored_by_default() {
    let (app, counter) = app();
    for status in [201, 301, 404, 422, 500, 503] {
        let uri = format!("/r?status={status}");
        for _ in 0..2 {
            let response = fetch(&app, &uri).await;
            assert_eq!(response.status.as_u16(), status);
            assert_eq!(response.x_cache(), "MISS");
        }
    }
    assert_eq!(counter.get(), 12);
}

#[tokio::test]
async fn a_route_may_store_other_statuses() {
    let layer = cache(60).cacheable_statuses([StatusCode::OK, StatusCode::NOT_FOUND]);
    let (app, counter) = app_with(layer, CacheMiddleware::new(MemoryBackend::new(100)));
    fetch(&app, "/r?status=404").await;
    let hit = fetch(&app, "/r?status=404").await;
    assert_eq!((hit.status, hit.x_cache()), (StatusCode::NOT_FOUND, "HIT"));
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn private_responses_are_never_stored() {
    let (app, counter) = app();
    let uris = [
        "/r?h-set-cookie=session%3Dabc",
        "/r?h-cache-control=private",
        "/r?h-cache-control=no-store",
        "/r?h-cache-control=no-cache",
        "/r?h-vary=*",
    ];
    for uri in uris {
        for _ in 0..2 {
            assert_eq!(fetch(&app, uri).await.x_cache(), "MISS", "{uri}");
        }
    }
    assert_eq!(counter.get(), 10);
}

#[tokio::test]
async fn authorization_requests_bypass_unless_the_route_opts_in() {
    let (app, counter) = app();
    fetch(&app, "/r").await;
    let with_credentials = get("/r")
        .header("authorization", "Bearer alice")
        .body(empty())
        .unwrap();
    assert_eq!(send(&app, with_credentials).await.x_cache(), "BYPASS");
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn with_authorization_allowed_each_credential_has_its_own_entry() {
    let layer = cache(60).allow_authorization();
    let (app, counter) = app_with(layer, CacheMiddleware::new(MemoryBackend::new(100)));
    let as_user = |user: &str| {
        get("/r")
            .header("authorization", format!("Bearer {user}"))
            .body(empty())
            .unwrap()
    };
    let alice = send(&app, as_user("alice")).await;
    let bob = send(&app, as_user("bob")).await;
    let alice_again = send(&app, as_user("alice")).await;
    let anonymous = fetch(&app, "/r").await;
    assert_eq!(
        x_caches([&alice, &bob, &alice_again, &anonymous]),
        ["MISS", "MISS", "HIT", "MISS"]
    );
    assert_eq!(alice_again.body, alice.body);
    assert_ne!(bob.body, alice.body);
    assert_eq!(counter.get(), 3);
}

#[tokio::test]
async fn cookies_are_not_part_of_the_key() {
    let (app, counter) = app();
    fetch_with(&app, "/r", &[("cookie", "a=1")]).await;
    let other = fetch_with(&app, "/r", &[("cookie", "a=2")]).await;
    assert_eq!(other.x_cache(), "HIT");
    assert_eq!(counter.get(), 1);
}

#[tokio::test]
async fn response_vary_keeps_one_entry_per_value_of_the_named_fields() {
    let (app, counter) = app();
    let uri = "/r?h-vary=Accept-Language";
    let lang = |value: &str| {
        get(uri)
            .header("accept-language", value)
            .body(empty())
            .unwrap()
    };
    let en = send(&app, lang("en")).await;
    let fr = send(&app, lang("fr")).await;
    let en_again = send(&app, lang("en")).await;
    let fr_again = send(&app, lang("fr")).await;
    assert_eq!(
        x_caches([&en, &fr, &en_again, &fr_again]),
        ["MISS", "MISS", "HIT", "HIT"]
    );
    assert_eq!(en_again.body, en.body);
    assert_eq!(fr_again.body, fr.body);
    assert_eq!(counter.get(), 2);
}

/// Equivalent `Accept-Encoding` values (case, spaces, weights written differently, order between
/// weights) share a variant; values that could be answered differently do not: members on several
/// lines (an origin may read the first line only), and any other spelling of `Accept-Language`
/// (an origin may take the first tag it has, in the order and spelling sent). A client cannot
/// multiply the stored variants with spellings of one `Accept-Encoding`.
#[tokio::test]
async fn equivalent_accept_values_share_a_variant() {
    let (app, counter) = app();
    let uri = "/r?h-vary=Accept-Encoding,Accept-Language";
    let ask = |fields: &[(&str, &str)]| {
        let mut request = get(uri);
        for (name, value) in fields {
            request = request.header(*name, *value);
        }
        send(&app, request.body(empty()).unwrap())
    };
    let first = ask(&[
        ("accept-encoding", "gzip, br;q=0.5"),
        ("accept-language", "fr-CH,fr;q=0.9"),
    ])
    .await;
    assert_eq!(first.x_cache(), "MISS");
    for same in [" GZIP ,BR ; q=0.50", "br;q=0.500, gzip;q=1.0"] {
        let again = ask(&[
            ("accept-encoding", same),
            ("accept-language", "fr-CH,fr;q=0.9"),
        ])
        .await;
        assert_eq!(again.x_cache(), "HIT", "{same:?}");
        assert_eq!(again.body, first.body);
    }
    assert_eq!(counter.get(), 1);
    for different in [
        &[
            ("accept-encoding", "gzip, br;q=0.5, identity;q=0"),
            ("accept-language", "fr-CH,fr;q=0.9"),
        ][..],
        &[
            ("accept-encoding", "br;q=0.5, gzip;q=0.6"),
            ("accept-language", "fr-CH,fr;q=0.9"),
        ],
        &[
            ("accept-encoding", "gzip, br;q=0.5"),
            ("accept-language", "fr;q=0.9,fr-CH"),
        ],
        &[
            ("accept-encoding", "gzip, br;q=0.5"),
            ("accept-language", "FR-ch,fr;q=0.9"),
        ],
        &[
            ("accept-encoding", "gzip, br;q=0.5"),
            ("accept-language", "fr-CH, fr;q=0.9"),
        ],
        &[
            ("accept-encoding", "gzip"),
            ("accept-encoding", "br;q=0.5"),
            ("accept-language", "fr-CH,fr;q=0.9"),
        ],
    ] {
        assert_eq!(ask(different).await.x_cache(), "MISS", "{different:?}");
    }
    assert_eq!(counter.get(), 7);
}

#[tokio::test]
async fn a_cached_route_answers_a_byte_range_from_its_entry() {
    let (app, counter) = app();
    let whole = fetch(&app, "/r").await;
    let part = fetch_with(&app, "/r", &[("range", "bytes=1-3")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, whole.body.slice(1..4));
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 1-3/{}", whole.body.len()).as_str())
    );
    assert_eq!(part.x_cache(), "HIT");
    let past = fetch_with(&app, "/r", &[("range", "bytes=9999-")]).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(counter.get(), 1);
    // A handler that does not read `Range` answers a ranged miss whole: stored, and the part
    // cut from it.
    let first = fetch_with(&app, "/r?other", &[("range", "bytes=1-3")]).await;
    let cut = (first.status, first.x_cache());
    assert_eq!(cut, (StatusCode::PARTIAL_CONTENT, "MISS"));
    assert_eq!(fetch(&app, "/r?other").await.x_cache(), "HIT");
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn a_route_can_vary_on_request_headers() {
    let layer = cache(60).vary_on("x-tenant");
    let (app, counter) = app_with(layer, CacheMiddleware::new(MemoryBackend::new(100)));
    let tenant = |t: &str| get("/r").header("x-tenant", t).body(empty()).unwrap();
    send(&app, tenant("a")).await;
    assert_eq!(send(&app, tenant("b")).await.x_cache(), "MISS");
    assert_eq!(send(&app, tenant("a")).await.x_cache(), "HIT");
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn matching_if_none_match_answers_304_and_others_get_the_body() {
    let (app, _) = app();
    let miss = fetch(&app, "/r").await;
    let etag = miss.header("etag").unwrap().to_owned();
    let revalidated = fetch_with(&app, "/r", &[("if-none-match", &etag)]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
    assert!(revalidated.body.is_empty());
    let other = fetch_with(&app, "/r", &[("if-none-match", "\"nope\"")]).await;
    assert_eq!((other.status, other.body), (StatusCode::OK, miss.body));
}

#[tokio::test]
async fn if_modified_since_answers_304_when_the_handler_gave_last_modified() {
    let app = Router::new()
        .route(
            "/doc",
            get_route(|| async { ([("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT")], "doc") })
                .layer(cache(60)),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(10)));
    fetch(&app, "/doc").await;
    let unchanged = [("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")];
    let changed = [("if-modified-since", "Mon, 13 Nov 2023 00:00:00 GMT")];
    let not_modified = fetch_with(&app, "/doc", &unchanged).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    let full = fetch_with(&app, "/doc", &changed).await;
    assert_eq!(
        (full.status, full.text()),
        (StatusCode::OK, "doc".to_owned())
    );
    // If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.2.2).
    let both = fetch_with(
        &app,
        "/doc",
        &[
            ("if-none-match", "\"other\""),
            ("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(both.status, StatusCode::OK);
}

#[tokio::test]
async fn etags_are_the_same_in_separate_caches() {
    let (first_app, _) = app();
    let (second_app, _) = app();
    let first = fetch(&first_app, "/r").await;
    let second = fetch(&second_app, "/r").await;
    assert_eq!(first.body, second.body);
    assert_eq!(first.header("etag"), second.header("etag"));
    assert!(first.header("etag").unwrap().starts_with('"'));
}

#[tokio::test]
async fn entries_expire_after_the_route_timeout() {
    let (app, counter) = app_with(
        cache(Duration::from_millis(300)),
        CacheMiddleware::new(MemoryBackend::new(100)),
    );
    fetch(&app, "/r").await;
    assert_eq!(fetch(&app, "/r").await.x_cache(), "HIT");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fetch(&app, "/r").await.x_cache(), "MISS");
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn hits_report_their_age_in_whole_seconds() {
    let (app, _) = app();
    fetch(&app, "/r").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = fetch(&app, "/r").await;
    assert_eq!(hit.header("age"), Some("1"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_replayed() {
    let (app, _) = app();
    let uri = "/r?h-connection=x-hop&h-x-hop=1&h-keep-alive=timeout%3D5&h-x-kept=2";
    fetch(&app, uri).await;
    let hit = fetch(&app, uri).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("x-hop"), None);
    assert_eq!(hit.header("keep-alive"), None);
    assert_eq!(hit.header("connection"), None);
    assert_eq!(hit.header("x-kept"), Some("2"));
}

#[tokio::test]
async fn response_bodies_over_the_limit_stream_through_unstored() {
    let middleware = CacheMiddleware::new(MemoryBackend::new(100)).max_body_size(64);
    let counter = Counter::default();
    let c = counter.clone();
    let app = Router::new()
        .route(
            "/big",
            get_route(move || {
                c.bump();
                // Streamed, with no Content-Length: the limit is found while reading.
                let chunks = futures_util::stream::iter(
                    (0..100).map(|i| Ok::<_, std::io::Error>(Bytes::from(format!("{i:04}")))),
                );
                async move { Body::from_stream(chunks) }
            })
            .layer(cache(60)),
        )
        .layer(middleware);
    let expected: String = (0..100).map(|i| format!("{i:04}")).collect();
    for _ in 0..2 {
        let response = fetch(&app, "/big").await;
        assert_eq!(
            (response.status, response.x_cache()),
            (StatusCode::OK, "MISS")
        );
        assert_eq!(response.text(), expected);
    }
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn event_streams_are_passed_on_as_they_come_never_buffered() {
    let app = Router::new()
        .route(
            "/events",
            get_route(|| async {
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: one\n\n"))
                });
                // The stream never ends: a buffering cache would never answer.
                let stream = futures_util::StreamExt::chain(first, futures_util::stream::pending());
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from_stream(stream))
                    .unwrap()
            })
            .layer(cache(60)),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let response = tower::ServiceExt::oneshot(app, get("/events").body(empty()).unwrap());
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    let mut body = response.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
    let data = frame
        .expect("first event arrives at once")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&data[..], b"data: one\n\n");
}

#[tokio::test]
async fn a_garbage_entry_under_our_key_is_a_miss_and_gets_overwritten() {
    let backend = MemoryBackend::new(100);
    let middleware = CacheMiddleware::new(backend.clone()).namespace("t");
    let (app, counter) = app_with(cache(60), middleware);
    fetch(&app, "/r").await;
    let key = only_key(&backend).await;
    for garbage in [&b"garbage"[..], b"CMWE\x01\x00", b""] {
        backend
            .set(&key, Bytes::from_static(garbage), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(fetch(&app, "/r").await.x_cache(), "MISS");
        assert_eq!(fetch(&app, "/r").await.x_cache(), "HIT");
    }
    assert_eq!(counter.get(), 4);
}

#[tokio::test]
async fn an_entry_stored_for_other_key_material_is_never_served() {
    let backend = MemoryBackend::new(100);
    let middleware = CacheMiddleware::new(backend.clone()).namespace("t");
    let (app, _) = app_with(cache(60), middleware);
    fetch(&app, "/r?user=alice").await;
    let alice_key = only_key(&backend).await;
    let alice_entry = backend.get(&alice_key).await.unwrap().unwrap();
    backend.clear().await.unwrap();
    fetch(&app, "/r?user=bob").await;
    let bob_key = only_key(&backend).await;
    // Plant alice's entry under bob's key: the fingerprint does not match.
    backend
        .set(&bob_key, alice_entry, Duration::from_secs(60))
        .await
        .unwrap();
    let bob = fetch(&app, "/r?user=bob").await;
    assert_eq!(bob.x_cache(), "MISS");
}

/// The one key the memory backend holds, found through the key of a known request.
async fn only_key(backend: &MemoryBackend) -> String {
    assert_eq!(backend.entry_count(), 1);
    backend.keys().pop().unwrap()
}

#[tokio::test]
async fn two_namespaces_in_one_backend_never_share_entries() {
    let backend = MemoryBackend::new(100);
    let (app_a, counter_a) = app_with(
        cache(60),
        CacheMiddleware::new(backend.clone()).namespace("a"),
    );
    let (app_b, counter_b) = app_with(
        cache(60),
        CacheMiddleware::new(backend.clone()).namespace("b"),
    );
    fetch(&app_a, "/r").await;
    assert_eq!(fetch(&app_b, "/r").await.x_cache(), "MISS");
    assert_eq!((counter_a.get(), counter_b.get()), (1, 1));
}

#[tokio::test]
async fn identical_cold_requests_run_the_handler_once() {
    let counter = Counter::default();
    let c = counter.clone();
    let app = Router::new()
        .route(
            "/slow",
            get_route(move || {
                let run = c.bump();
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    format!("run {run}")
                }
            })
            .layer(cache(60)),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let requests = (0..200).map(|_| fetch(&app, "/slow"));
    let responses = futures_util::future::join_all(requests).await;
    assert_eq!(counter.get(), 1);
    assert!(responses
        .iter()
        .all(|r| r.status == StatusCode::OK && r.text() == "run 1"));
    let misses = responses.iter().filter(|r| r.x_cache() == "MISS").count();
    assert_eq!(misses, 1);
}

#[tokio::test]
async fn handlers_invalidate_one_url_and_clear_through_the_handle() {
    let counter = Counter::default();
    let app = Router::new()
        .route("/items/{id}", echo(counter.clone()).layer(cache(60)))
        .route(
            "/invalidate",
            axum::routing::post(|cache: CacheHandle| async move {
                cache.invalidate(Method::GET, "/items/1?q=x").await.unwrap();
                "done"
            }),
        )
        .route(
            "/clear",
            axum::routing::post(|cache: CacheHandle| async move {
                cache.clear().await.unwrap();
                "done"
            }),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    for uri in ["/items/1?q=x", "/items/2"] {
        fetch(&app, uri).await;
    }
    send(&app, post("/invalidate", "")).await;
    assert_eq!(fetch(&app, "/items/1?q=x").await.x_cache(), "MISS");
    assert_eq!(fetch(&app, "/items/2").await.x_cache(), "HIT");
    send(&app, post("/clear", "")).await;
    assert_eq!(fetch(&app, "/items/2").await.x_cache(), "MISS");
}

#[tokio::test]
async fn start_up_code_warms_the_backend_and_invalidates_absolute_urls() {
    let middleware = CacheMiddleware::new(MemoryBackend::new(100));
    let handle = middleware.handle();
    handle
        .backend()
        .set(
            "config:version",
            Bytes::from_static(b"1.0"),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(
        handle
            .backend()
            .get("config:version")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"1.0"[..])
    );
    let (app, _) = app_with(cache(60), middleware);
    fetch(&app, "/r").await;
    handle
        .invalidate(Method::GET, "http://test.local/r")
        .await
        .unwrap();
    assert_eq!(fetch(&app, "/r").await.x_cache(), "MISS");
}

#[tokio::test]
async fn a_front_that_gives_the_scheme_keys_by_it_and_a_purge_reaches_both() {
    // What the Python front does: each request carries the scheme its application reads.
    let middleware = CacheMiddleware::new(MemoryBackend::new(100)).keys_by_scheme();
    let handle = middleware.handle();
    let (app, counter) = app_with(cache(60), middleware);
    let with_scheme = |scheme: &'static str| {
        let mut request = get("/r").body(empty()).unwrap();
        let scheme = cache_middleware::RequestScheme(scheme.parse().unwrap());
        request.extensions_mut().insert(scheme);
        request
    };
    let answers = [
        send(&app, with_scheme("https")).await,
        send(&app, with_scheme("http")).await,
        send(&app, with_scheme("https")).await,
    ];
    assert_eq!(x_caches(answers.each_ref()), ["MISS", "MISS", "HIT"]);
    let purged = handle
        .purge_url(Method::GET, "http://test.local/r", PurgeKind::Hard)
        .await
        .unwrap();
    assert_eq!(purged, Some(PurgeKind::Hard));
    for scheme in ["http", "https"] {
        assert_eq!(send(&app, with_scheme(scheme)).await.x_cache(), "MISS");
    }
    assert_eq!(counter.get(), 4);
}

#[tokio::test]
async fn a_route_layer_without_the_middleware_passes_requests_through() {
    let counter = Counter::default();
    let app = Router::new().route("/r", echo(counter.clone()).layer(cache(60)));
    for _ in 0..2 {
        let response = fetch(&app, "/r").await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("x-cache"), None);
    }
    assert_eq!(counter.get(), 2);
}

#[tokio::test]
async fn every_bypass_is_counted_under_its_reason() {
    let middleware = CacheMiddleware::new(MemoryBackend::new(100));
    let handle = middleware.handle();
    let (app, _) = app_with(cache(60).bypass_requests_with_cookie(), middleware);
    let with_cookie = fetch_with(&app, "/r", &[("cookie", "session=1")]).await;
    let with_body = send(&app, get("/r").body(Body::from("x")).unwrap()).await;
    let no_store = fetch_with(&app, "/r", &[("cache-control", "no-store")]).await;
    assert_eq!(
        x_caches([&with_cookie, &with_body, &no_store]),
        ["BYPASS"; 3]
    );
    let stats = handle.stats();
    for reason in ["cookie", "content-on-get", "no-store"] {
        let counted = stats.bypasses.iter().find(|(name, _)| *name == reason);
        assert_eq!(counted, Some(&(reason, 1)), "{:?}", stats.bypasses);
    }
    assert_eq!(stats.bypass_total(), 3);
}

#[tokio::test]
async fn a_request_for_a_part_never_stops_others_sharing_a_handler_run() {
    // The handler answers a range with 206, as a file server does: not stored, and it says
    // nothing of the whole response. The ranged request led the key's single flight and marked
    // the key uncacheable, so the next clients each ran the handler.
    let counter = Counter::default();
    let runs = counter.clone();
    let handler = move |headers: http::HeaderMap| {
        runs.bump();
        async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if headers.contains_key("range") {
                let part = [("content-range", "bytes 0-1/5")];
                return (StatusCode::PARTIAL_CONTENT, part, "wh").into_response();
            }
            "whole".into_response()
        }
    };
    let app = Router::new()
        .route("/file", get_route(handler).layer(cache(60)))
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let part = fetch_with(&app, "/file", &[("range", "bytes=0-1")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    let answers = futures_util::future::join_all((0..8).map(|_| fetch(&app, "/file"))).await;
    assert!(answers.iter().all(|a| a.text() == "whole"));
    assert_eq!(
        counter.get(),
        2,
        "handler runs: the part, then one for 8 clients at once"
    );
    // The stored whole answers ranges from then on.
    let stored = fetch_with(&app, "/file", &[("range", "bytes=0-1")]).await;
    assert_eq!(
        (stored.status, stored.x_cache()),
        (StatusCode::PARTIAL_CONTENT, "HIT")
    );
}
