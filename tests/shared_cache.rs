//! Shared-cache mode (RFC 9111) through the proxy, in front of a real origin, both on loopback.

mod support;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::CacheMiddleware;
use http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::serve;

/// What the origin answers for one path, and what it saw.
#[derive(Default, Clone)]
struct Script {
    status: Option<StatusCode>,
    headers: Vec<(&'static str, String)>,
    /// Answer 304 to a conditional request carrying this ETag.
    etag_304: Option<&'static str>,
    /// Extra fields on that 304.
    headers_304: Vec<(&'static str, &'static str)>,
}

#[derive(Default)]
struct Seen {
    count: usize,
    last: HeaderMap,
}

#[derive(Clone, Default)]
struct Origin {
    scripts: Arc<Mutex<HashMap<String, Script>>>,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

impl Origin {
    fn set(&self, path: &str, headers: &[(&'static str, &str)]) {
        self.script(path, |s| {
            s.headers = headers.iter().map(|(n, v)| (*n, v.to_string())).collect();
        });
    }

    fn script(&self, path: &str, change: impl FnOnce(&mut Script)) {
        change(
            self.scripts
                .lock()
                .unwrap()
                .entry(path.to_owned())
                .or_default(),
        );
    }

    fn count(&self, path: &str) -> usize {
        self.seen.lock().unwrap().get(path).map_or(0, |s| s.count)
    }

    fn last_request(&self, path: &str) -> HeaderMap {
        self.seen.lock().unwrap()[path].last.clone()
    }
}

async fn answer(State(origin): State<Origin>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let count = {
        let mut seen = origin.seen.lock().unwrap();
        let seen = seen.entry(path.clone()).or_default();
        seen.count += 1;
        seen.last = request.headers().clone();
        seen.count
    };
    let script = origin
        .scripts
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_default();
    let conditional = request
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    if script.etag_304.is_some() && conditional == script.etag_304 {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        for (name, value) in script.headers_304 {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    let mut response = format!("{} {path} #{count}", request.method()).into_response();
    *response.status_mut() = script.status.unwrap_or(StatusCode::OK);
    for (name, value) in script.headers {
        response.headers_mut().append(name, value.parse().unwrap());
    }
    response
}

struct Setup {
    origin: Origin,
    proxy: SocketAddr,
}

async fn setup(rules: &str) -> Setup {
    let origin = Origin::default();
    let app = Router::new().fallback(answer).with_state(origin.clone());
    let upstream = serve(app).await;
    let config = ProxyConfig::from_toml(rules).unwrap();
    let proxy = router(
        format!("http://{upstream}").parse().unwrap(),
        &config,
        CacheMiddleware::new(MemoryBackend::new(1000)),
    )
    .unwrap();
    Setup {
        origin,
        proxy: serve(proxy).await,
    }
}

struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

impl Setup {
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
        let got = support::over_http(self.proxy, method, path, headers, Bytes::new()).await;
        Got {
            status: got.status,
            body: got.text(),
            headers: got.headers,
        }
    }

    async fn get(&self, path: &str) -> Got {
        self.call("GET", path, &[]).await
    }
}

#[tokio::test]
async fn fresh_responses_are_served_from_the_cache_with_age_and_cache_status() {
    let s = setup("").await;
    s.origin.set("/a", &[("cache-control", "max-age=60")]);
    let first = s.get("/a").await;
    let second = s.get("/a").await;
    assert_eq!(first.body, "GET /a #1");
    assert_eq!(second.body, "GET /a #1");
    assert_eq!(s.origin.count("/a"), 1);
    assert_eq!(
        first.header("cache-status"),
        "cache-middleware; fwd=uri-miss; fwd-status=200; stored"
    );
    assert!(second
        .header("cache-status")
        .starts_with("cache-middleware; hit; ttl="));
    assert_eq!(second.header("x-cache"), "HIT");
    assert!(
        second.header("age").parse::<u64>().is_ok(),
        "{:?}",
        second.headers
    );
    assert_eq!(
        first.header("age"),
        "",
        "a response fresh from the origin has no Age"
    );
}

#[tokio::test]
async fn what_the_origin_forbids_is_never_stored() {
    let s = setup("").await;
    for (path, cc) in [
        ("/no-store", "max-age=60, no-store"),
        ("/private", "max-age=60, private"),
        ("/nothing", ""),
    ] {
        s.origin.set(path, &[("cache-control", cc)]);
        s.get(path).await;
        let second = s.get(path).await;
        assert_eq!(second.body, format!("GET {path} #2"), "{cc}");
        assert_eq!(second.header("x-cache"), "MISS");
    }
    // Vary: * matches no later request.
    s.origin
        .set("/star", &[("cache-control", "max-age=60"), ("vary", "*")]);
    s.get("/star").await;
    assert_eq!(s.get("/star").await.body, "GET /star #2");
}

#[tokio::test]
async fn s_maxage_overrides_max_age_for_a_shared_cache() {
    let s = setup("").await;
    s.origin
        .set("/s", &[("cache-control", "max-age=60, s-maxage=0")]);
    s.get("/s").await;
    assert_eq!(s.get("/s").await.body, "GET /s #2");
    s.origin
        .set("/t", &[("cache-control", "max-age=0, s-maxage=60")]);
    s.get("/t").await;
    assert_eq!(s.get("/t").await.body, "GET /t #1");
}

#[tokio::test]
async fn stale_responses_are_validated_and_a_304_updates_the_stored_fields() {
    let s = setup("").await;
    s.origin.set(
        "/v",
        &[
            ("cache-control", "max-age=0"),
            ("etag", "\"v1\""),
            ("x-version", "1"),
        ],
    );
    s.origin.script("/v", |script| {
        script.etag_304 = Some("\"v1\"");
        script.headers_304 = vec![("x-version", "2"), ("cache-control", "max-age=60")];
    });
    assert_eq!(s.get("/v").await.body, "GET /v #1");
    let validated = s.get("/v").await;
    assert_eq!(s.origin.last_request("/v")["if-none-match"], "\"v1\"");
    assert_eq!(validated.status, StatusCode::OK);
    assert_eq!(
        validated.body, "GET /v #1",
        "the stored body, confirmed by the 304"
    );
    assert_eq!(validated.header("x-version"), "2");
    assert_eq!(
        validated.header("cache-status"),
        "cache-middleware; fwd=stale; fwd-status=304; stored"
    );
    // The 304 made it fresh for 60 s: the next request does not reach the origin.
    let hit = s.get("/v").await;
    assert_eq!(
        (hit.header("x-cache"), hit.header("x-version")),
        ("HIT", "2")
    );
    assert_eq!(s.origin.count("/v"), 2);
}

#[tokio::test]
async fn clients_revalidating_their_own_copy_get_304_from_the_cache() {
    let s = setup("").await;
    s.origin.set(
        "/c",
        &[
            ("cache-control", "max-age=60"),
            ("etag", "\"abc\""),
            ("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ],
    );
    s.get("/c").await;
    let by_etag = s.call("GET", "/c", &[("if-none-match", "W/\"abc\"")]).await;
    let by_date = s
        .call(
            "GET",
            "/c",
            &[("if-modified-since", "Wed, 15 Nov 2023 00:00:00 GMT")],
        )
        .await;
    let changed = s
        .call(
            "GET",
            "/c",
            &[("if-modified-since", "Mon, 13 Nov 2023 00:00:00 GMT")],
        )
        .await;
    assert_eq!(by_etag.status, StatusCode::NOT_MODIFIED);
    assert_eq!(by_date.status, StatusCode::NOT_MODIFIED);
    assert_eq!(changed.status, StatusCode::OK);
    assert_eq!(s.origin.count("/c"), 1);
}

#[tokio::test]
async fn variants_are_selected_by_the_fields_vary_names() {
    let s = setup("").await;
    s.origin.set(
        "/l",
        &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
    );
    let en = s.call("GET", "/l", &[("accept-language", "en")]).await;
    let fr = s.call("GET", "/l", &[("accept-language", "fr")]).await;
    let en_again = s.call("GET", "/l", &[("accept-language", "en")]).await;
    let fr_again = s.call("GET", "/l", &[("accept-language", "fr")]).await;
    assert_eq!(
        (en.body.as_str(), fr.body.as_str()),
        ("GET /l #1", "GET /l #2")
    );
    assert_eq!(en_again.body, "GET /l #1");
    assert_eq!(fr_again.body, "GET /l #2");
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_and_the_locations_they_name() {
    let s = setup("").await;
    for path in ["/doc", "/other"] {
        s.origin.set(path, &[("cache-control", "max-age=60")]);
        s.get(path).await;
    }
    s.origin.set(
        "/doc",
        &[("cache-control", "max-age=60"), ("location", "/other")],
    );
    let post = s.call("POST", "/doc", &[]).await;
    assert_eq!(post.body, "POST /doc #2");
    assert_eq!(s.get("/doc").await.body, "GET /doc #3");
    assert_eq!(s.get("/other").await.body, "GET /other #2");
    // A failed unsafe request changes nothing.
    s.origin.script("/other", |script| {
        script.status = Some(StatusCode::INTERNAL_SERVER_ERROR)
    });
    s.call("DELETE", "/other", &[]).await;
    s.origin.script("/other", |script| script.status = None);
    assert_eq!(s.get("/other").await.body, "GET /other #2");
}

#[tokio::test]
async fn authenticated_requests_are_stored_only_with_explicit_permission() {
    let s = setup("").await;
    let auth = [("authorization", "Bearer alice")];
    s.origin.set("/me", &[("cache-control", "max-age=60")]);
    s.call("GET", "/me", &auth).await;
    assert_eq!(
        s.get("/me").await.body,
        "GET /me #2",
        "alice's response is not shared"
    );
    s.origin
        .set("/pub", &[("cache-control", "public, max-age=60")]);
    s.call("GET", "/pub", &auth).await;
    assert_eq!(s.get("/pub").await.body, "GET /pub #1");
}

#[tokio::test]
async fn responses_setting_cookies_are_not_shared_unless_configured() {
    let s = setup("").await;
    let headers = [
        ("cache-control", "max-age=60"),
        ("set-cookie", "session=alice"),
    ];
    s.origin.set("/login", &headers);
    s.get("/login").await;
    let second = s.get("/login").await;
    assert_eq!(second.body, "GET /login #2");
    assert!(second.header("cache-status").contains("detail=set-cookie"));
    // no-cache="set-cookie" lets the cache store the rest and drop the cookie.
    s.origin.set(
        "/strip",
        &[
            ("cache-control", "max-age=60, no-cache=\"set-cookie\""),
            ("set-cookie", "s=1"),
        ],
    );
    s.get("/strip").await;
    let stripped = s.get("/strip").await;
    assert_eq!(
        (stripped.body.as_str(), stripped.header("set-cookie")),
        ("GET /strip #1", "")
    );

    let opted_in = setup("store_set_cookie = true").await;
    opted_in.origin.set("/login", &headers);
    opted_in.get("/login").await;
    assert_eq!(
        opted_in.get("/login").await.header("set-cookie"),
        "session=alice"
    );
}

#[tokio::test]
async fn request_directives_are_obeyed() {
    let s = setup("").await;
    let empty = s
        .call("GET", "/r", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(empty.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(s.origin.count("/r"), 0);
    s.origin.set("/r", &[("cache-control", "max-age=60")]);
    s.get("/r").await;
    let cached = s
        .call("GET", "/r", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(cached.body, "GET /r #1");
    let reload = s.call("GET", "/r", &[("cache-control", "no-cache")]).await;
    assert_eq!(reload.body, "GET /r #2");
    let young = s.call("GET", "/r", &[("cache-control", "max-age=0")]).await;
    assert_eq!(young.body, "GET /r #3");
    let fresh_enough = s
        .call("GET", "/r", &[("cache-control", "min-fresh=30")])
        .await;
    assert_eq!(fresh_enough.body, "GET /r #3");
    let too_short = s
        .call("GET", "/r", &[("cache-control", "min-fresh=3600")])
        .await;
    assert_eq!(too_short.body, "GET /r #4");
    s.call("GET", "/r", &[("cache-control", "no-store")]).await;
    assert_eq!(s.origin.count("/r"), 5);
}

#[tokio::test]
async fn stale_if_error_serves_the_stored_response_when_the_origin_fails() {
    let s = setup("").await;
    s.origin
        .set("/e", &[("cache-control", "max-age=0, stale-if-error=60")]);
    s.get("/e").await;
    s.origin.script("/e", |script| {
        script.status = Some(StatusCode::SERVICE_UNAVAILABLE)
    });
    let served = s.get("/e").await;
    assert_eq!(
        (served.status, served.body.as_str()),
        (StatusCode::OK, "GET /e #1")
    );
    assert!(served.header("cache-status").contains("fwd-status=503"));
    // must-revalidate forbids it.
    s.origin.set(
        "/m",
        &[(
            "cache-control",
            "max-age=0, must-revalidate, stale-if-error=60",
        )],
    );
    s.get("/m").await;
    s.origin.script("/m", |script| {
        script.status = Some(StatusCode::SERVICE_UNAVAILABLE)
    });
    assert_eq!(s.get("/m").await.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn cdn_cache_control_overrides_cache_control_for_this_cache() {
    let s = setup("").await;
    s.origin.set(
        "/cdn",
        &[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ],
    );
    s.get("/cdn").await;
    let hit = s.get("/cdn").await;
    assert_eq!(hit.body, "GET /cdn #1");
    assert_eq!(
        hit.header("cache-control"),
        "no-store",
        "passed on for the browser"
    );
}

#[tokio::test]
async fn heuristic_freshness_comes_from_last_modified() {
    let s = setup("").await;
    s.origin
        .set("/h", &[("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT")]);
    s.get("/h").await;
    assert_eq!(s.get("/h").await.body, "GET /h #1");
    // Not for a status the RFC does not list as heuristically cacheable.
    s.origin.set(
        "/h302",
        &[("last-modified", "Tue, 14 Nov 2023 22:13:20 GMT")],
    );
    s.origin
        .script("/h302", |script| script.status = Some(StatusCode::FOUND));
    s.get("/h302").await;
    assert_eq!(s.get("/h302").await.body, "GET /h302 #2");
}

/// With nothing stored, a range goes to the origin with its `Range`; an origin that answers with
/// the whole response gets it stored, and the client its range of it.
#[tokio::test]
async fn a_range_with_nothing_stored_goes_to_the_origin_and_a_whole_answer_is_kept() {
    let s = setup("").await;
    s.origin.set("/big", &[("cache-control", "max-age=60")]);
    let partial = s.call("GET", "/big", &[("range", "bytes=0-3")]).await;
    assert_eq!(s.origin.last_request("/big")["range"], "bytes=0-3");
    assert_eq!(
        (partial.status, partial.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "GET ")
    );
    assert_eq!(partial.header("content-range"), "bytes 0-3/11");
    let whole = s.get("/big").await;
    assert_eq!(
        (whole.header("x-cache"), whole.body.as_str()),
        ("HIT", "GET /big #1")
    );
    assert_eq!(s.origin.count("/big"), 1);
}

/// A `206` the origin sent is kept apart from the whole (RFC 9111 §3.3): ranges within the part
/// it holds are answered from it; others, and requests for the whole, go to the origin.
#[tokio::test]
async fn a_stored_part_answers_the_ranges_it_holds_and_nothing_else() {
    let s = setup("").await;
    // The origin's body is "GET /part #1" (12 bytes): bytes 10-21 of a 100-byte representation.
    s.origin.script("/part", |script| {
        script.status = Some(StatusCode::PARTIAL_CONTENT);
        script.headers = vec![
            ("cache-control", "max-age=60".to_owned()),
            ("content-range", "bytes 10-21/100".to_owned()),
        ];
    });
    let first = s.call("GET", "/part", &[("range", "bytes=10-21")]).await;
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "GET /part #1")
    );
    for (asked, body, range) in [
        ("bytes=12-15", "T /p", "bytes 12-15/100"),
        ("bytes=10-21", "GET /part #1", "bytes 10-21/100"),
        ("bytes=20-21", "#1", "bytes 20-21/100"),
    ] {
        let reused = s.call("GET", "/part", &[("range", asked)]).await;
        assert_eq!(reused.status, StatusCode::PARTIAL_CONTENT, "{asked}");
        assert_eq!(
            (reused.header("x-cache"), reused.body.as_str()),
            ("HIT", body),
            "{asked}"
        );
        assert_eq!(reused.header("content-range"), range, "{asked}");
    }
    assert_eq!(s.origin.count("/part"), 1);
    // Bytes it does not hold, and the whole, are the origin's to send.
    s.call("GET", "/part", &[("range", "bytes=0-5")]).await;
    assert_eq!(s.origin.count("/part"), 2);
    let whole = s.get("/part").await;
    assert_ne!(
        whole.header("x-cache"),
        "HIT",
        "a part never answers for the whole"
    );
    assert_eq!(s.origin.count("/part"), 3);
}

/// A `206` that does not say what it holds (no length, or several ranges) is not kept.
#[tokio::test]
async fn a_part_that_does_not_say_what_it_holds_is_not_kept() {
    let s = setup("").await;
    for (path, range) in [("/unknown-length", "bytes 0-11/*"), ("/no-range", "")] {
        s.origin.script(path, |script| {
            script.status = Some(StatusCode::PARTIAL_CONTENT);
            script.headers = vec![("cache-control", "max-age=60".to_owned())];
            if !range.is_empty() {
                script.headers.push(("content-range", range.to_owned()));
            }
        });
        for _ in 0..2 {
            s.call("GET", path, &[("range", "bytes=0-3")]).await;
        }
        assert_eq!(s.origin.count(path), 2, "{path}");
    }
}

/// A stored complete response answers a single byte range itself (206), says 416 for one past
/// its end, and gives the whole response for several ranges or an `If-Range` naming another
/// version; the origin is asked once.
#[tokio::test]
async fn a_stored_response_answers_ranges_itself() {
    let s = setup("").await;
    s.origin.set(
        "/doc",
        &[("cache-control", "max-age=60"), ("etag", "\"d1\"")],
    );
    let whole = s.get("/doc").await;
    assert_eq!(whole.body, "GET /doc #1");
    let proxy = &s;
    let ranged = |value: &'static str, extra: Option<(&'static str, &'static str)>| {
        let mut fields = vec![("range", value)];
        fields.extend(extra);
        async move { proxy.call("GET", "/doc", &fields).await }
    };
    let part = ranged("bytes=4-6", None).await;
    assert_eq!(
        (part.status, part.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "/do")
    );
    assert_eq!(part.header("content-range"), "bytes 4-6/11");
    assert_eq!(part.header("content-length"), "3");
    assert_eq!(part.header("etag"), "\"d1\"");
    assert!(
        part.header("cache-status").contains("hit"),
        "{}",
        part.header("cache-status")
    );
    let suffix = ranged("bytes=-2", None).await;
    assert_eq!(
        (suffix.status, suffix.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "#1")
    );
    let past = ranged("bytes=11-", None).await;
    assert_eq!(past.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(past.header("content-range"), "bytes */11");
    assert_eq!(past.body, "");
    let several = ranged("bytes=0-1,4-5", None).await;
    assert_eq!(
        (several.status, several.body.as_str()),
        (StatusCode::OK, "GET /doc #1")
    );
    let other_version = ranged("bytes=0-2", Some(("if-range", "\"d0\""))).await;
    assert_eq!(other_version.status, StatusCode::OK);
    let same_version = ranged("bytes=0-2", Some(("if-range", "\"d1\""))).await;
    assert_eq!(
        (same_version.status, same_version.body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "GET")
    );
    let head = s.call("HEAD", "/doc", &[("range", "bytes=0-1")]).await;
    assert_eq!(head.status, StatusCode::OK, "HEAD ignores Range");
    assert_eq!(s.origin.count("/doc"), 1, "every answer from storage");
    // Nothing stored and `only-if-cached`: 504, the origin not asked, range or not.
    let cold = s
        .call(
            "GET",
            "/cold",
            &[("range", "bytes=0-1"), ("cache-control", "only-if-cached")],
        )
        .await;
    assert_eq!(cold.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(s.origin.count("/cold"), 0);
}

#[tokio::test]
async fn absurd_or_malformed_origin_headers_never_break_a_request() {
    let s = setup("").await;
    let cases: [(&str, &[(&'static str, &str)]); 5] = [
        (
            "/huge",
            &[("cache-control", "max-age=99999999999999999999999")],
        ),
        (
            "/garbage",
            &[(
                "cache-control",
                "max-age=\"x, ,,=;=\", s-maxage=-1, no-cache=\"\", =5",
            )],
        ),
        (
            "/dates",
            &[
                ("expires", "yesterday"),
                ("date", "not a date"),
                ("last-modified", "0"),
            ],
        ),
        (
            "/age",
            &[
                ("cache-control", "max-age=60"),
                ("age", "99999999999999999999999"),
            ],
        ),
        (
            "/vary",
            &[("cache-control", "max-age=60"), ("vary", ",, ,Accept,")],
        ),
    ];
    for (path, headers) in cases {
        s.origin.set(path, headers);
        for _ in 0..2 {
            let got = s.get(path).await;
            assert_eq!(got.status, StatusCode::OK, "{path}");
            assert!(
                got.body.starts_with(&format!("GET {path} #")),
                "{path}: {}",
                got.body
            );
        }
    }
    // The huge lifetime is capped, not an error: the second request was a hit.
    assert_eq!(s.origin.count("/huge"), 1);
}

#[tokio::test]
async fn a_backend_that_is_down_never_fails_a_request() {
    // A Redis URL on a port nothing listens on: every backend call fails.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let backend =
        cache_middleware::backends::RedisBackend::new(format!("redis://127.0.0.1:{dead_port}"))
            .unwrap();
    let origin = Origin::default();
    origin.set("/d", &[("cache-control", "max-age=60"), ("etag", "\"1\"")]);
    let upstream = serve(Router::new().fallback(answer).with_state(origin.clone())).await;
    let proxy = router(
        format!("http://{upstream}").parse().unwrap(),
        &ProxyConfig::default(),
        CacheMiddleware::new(backend),
    )
    .unwrap();
    let s = Setup {
        origin,
        proxy: serve(proxy).await,
    };
    for n in 1..=8 {
        let got = s.get("/d").await;
        assert_eq!(
            (got.status, got.body),
            (StatusCode::OK, format!("GET /d #{n}"))
        );
    }
    assert_eq!(s.call("POST", "/d", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_background_validation_asks_for_the_whole_response_whatever_its_request_asked() {
    // The request that finds the entry stale asks for a part and under conditions; the
    // validation it starts refreshes what is stored, so it asks for the whole, unconditionally
    // (but for the cache's own validator): an origin's 206 or 412 would leave the entry stale.
    let s = setup("").await;
    let path = "/swr-whole";
    s.origin.set(
        path,
        &[("cache-control", "max-age=1, stale-while-revalidate=60")],
    );
    s.call("GET", path, &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let asked = [
        ("range", "bytes=0-1"),
        ("if-match", "\"other\""),
        ("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ];
    let stale = s.call("GET", path, &asked).await;
    assert_eq!(stale.status, StatusCode::PARTIAL_CONTENT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.origin.count(path), 2);
    let sent = s.origin.last_request(path);
    for (name, _) in asked {
        assert!(
            !sent.contains_key(name),
            "{name} reached the origin: {sent:?}"
        );
    }
}
