//! Attacks on the proxy, one test per class of docs/security.md, against a real origin on loopback
//! that reflects what it receives into cacheable responses. Each test is the attack; what it
//! asserts is what a victim or another client would observe.

mod support;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::server::{serve, ServerLimits};
use cache_middleware::{cache, CacheMiddleware};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{over_http, Counter, Observed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the origin received, as the body of its answer.
fn reflect(parts: &http::request::Parts, body: &[u8]) -> String {
    let header = |name: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join("|")
    };
    format!(
        "method={} path={} query={} host={} xfh={} xff={} xfp={} cookie={} override={} capability={} \
         renamed={}|{}|{} body={}",
        parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        header("host"),
        header("x-forwarded-host"),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
        header("cookie"),
        header("x-http-method-override"),
        header("surrogate-capability"),
        header("x-forwarded-uri"),
        header("x-script-name"),
        header("x-original-method"),
        String::from_utf8_lossy(body),
    )
}

/// The origin. Every path answers what it received; the path decides the caching headers:
/// - `/account`: no caching headers (a typical app page), the caller's cookie in the body;
/// - `/rolling`: `max-age=1` with an ETag; a conditional request gets a 304 that sets the
///   caller's cookie (or, with `?private`, `Cache-Control: private`);
/// - `/targeted?other-device` / `?invalid`: `no-store` plus a targeted field that must not apply;
/// - `/ancient`: `max-age=600` with an `Age` that does not fit in 64-bit milliseconds;
/// - `/by-client`: `public, max-age=600, Vary: X-Forwarded-For` (content per client address);
/// - `/preconditions`: `public, max-age=600` on every answer, as a framework that sets caching
///   headers per route does: `416` to any `Range`, `412` to any `If-Match` or
///   `If-Unmodified-Since`, else `200` (after 200 ms with `?slow`, and with `?slow-private` only
///   `max-age=600`);
/// - `/tenant`: `public, max-age=600`, the body the tenant whose host is the request's `Host`,
///   compared as written (a map of tenants by host), else the default one;
/// - `/first-language`: `public, max-age=600, Vary: Accept-Language`, the body the first tag it
///   has (`en-US`, `fr-FR`; else `en-US`) in the order and spelling sent, weights ignored (a
///   common way to pick a language);
/// - `/by-agent` and `/by-language`: `public, max-age=600`, varying on `User-Agent` or
///   `Accept-Language`, the body that field's first line only (as `HeaderMap::get`, Go's
///   `Header.Get` and Starlette's `headers.get` read it);
/// - anything else: `public, max-age=600`.
async fn origin() -> (SocketAddr, Counter) {
    let counter = Counter::default();
    let runs = counter.clone();
    let app = Router::new().fallback(any(move |request: Request| {
        let runs = runs.clone();
        async move {
            runs.bump();
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let text = reflect(&parts, &body);
            let mut headers = HeaderMap::new();
            let query = parts.uri.query().unwrap_or("");
            match parts.uri.path() {
                "/account" => {}
                "/rolling" => {
                    headers.insert("etag", "\"v1\"".parse().unwrap());
                    headers.insert("cache-control", "max-age=1".parse().unwrap());
                    if parts.headers.contains_key("if-none-match") {
                        if query == "private" {
                            headers
                                .insert("cache-control", "private, max-age=600".parse().unwrap());
                        } else if let Some(cookie) = parts.headers.get("cookie") {
                            headers.insert("set-cookie", cookie.clone());
                        }
                        return (StatusCode::NOT_MODIFIED, headers, Body::empty()).into_response();
                    }
                }
                "/targeted" => {
                    headers.insert("cache-control", "no-store".parse().unwrap());
                    let (name, value) = if query == "invalid" {
                        ("cdn-cache-control", "max-age=10000, &&&&&")
                    } else {
                        ("surrogate-control", "max-age=10000;other-device")
                    };
                    headers.insert(name, value.parse().unwrap());
                }
                "/by-client" => {
                    headers.insert("cache-control", "public, max-age=600".parse().unwrap());
                    headers.insert("vary", "x-forwarded-for".parse().unwrap());
                }
                "/preconditions" => {
                    // Without `public` with `?slow-private`: not shared with credentials.
                    let cc = if query == "slow-private" {
                        "max-age=600"
                    } else {
                        "public, max-age=600"
                    };
                    headers.insert("cache-control", cc.parse().unwrap());
                    let failed = ["if-match", "if-unmodified-since"]
                        .iter()
                        .any(|name| parts.headers.contains_key(*name));
                    let status = if parts.headers.contains_key("range") {
                        headers.insert("content-range", "bytes */10".parse().unwrap());
                        StatusCode::RANGE_NOT_SATISFIABLE
                    } else if failed {
                        StatusCode::PRECONDITION_FAILED
                    } else {
                        if query.starts_with("slow") {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        StatusCode::OK
                    };
                    return (status, headers, text).into_response();
                }
                "/tenant" => {
                    headers.insert("cache-control", "public, max-age=600".parse().unwrap());
                    let tenant = match parts.headers["host"].to_str().unwrap() {
                        "acme.example" => "acme",
                        _ => "default",
                    };
                    return (StatusCode::OK, headers, format!("tenant={tenant}")).into_response();
                }
                "/first-language" => {
                    headers.insert("cache-control", "public, max-age=600".parse().unwrap());
                    headers.insert("vary", "accept-language".parse().unwrap());
                    let value = parts.headers["accept-language"].to_str().unwrap();
                    let mut tags = value.split(',').map(|m| m.split(';').next().unwrap());
                    let chosen = tags.find(|tag| ["en-US", "fr-FR"].contains(tag));
                    let body = format!("lang={}", chosen.unwrap_or("en-US"));
                    return (StatusCode::OK, headers, body).into_response();
                }
                "/by-agent" | "/by-language" => {
                    let name = if parts.uri.path() == "/by-agent" {
                        "user-agent"
                    } else {
                        "accept-language"
                    };
                    headers.insert("cache-control", "public, max-age=600".parse().unwrap());
                    headers.insert("vary", name.parse().unwrap());
                    let first = parts
                        .headers
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned());
                    return (StatusCode::OK, headers, format!("{name}={first:?}")).into_response();
                }
                "/ancient" => {
                    headers.insert("cache-control", "max-age=600".parse().unwrap());
                    headers.insert("age", "18446744073709552".parse().unwrap());
                }
                _ => {
                    headers.insert("cache-control", "public, max-age=600".parse().unwrap());
                }
            }
            (StatusCode::OK, headers, text).into_response()
        }
    }));
    (support::serve(app).await, counter)
}

/// The proxy in front of `upstream`, on the same server loop as the binary (so the peer address
/// and the limits are real).
async fn proxy_with(upstream: SocketAddr, rules: &str, limits: ServerLimits) -> SocketAddr {
    let config = ProxyConfig::from_toml(rules).unwrap();
    let middleware = CacheMiddleware::new(MemoryBackend::new(10_000));
    let app = router(
        format!("http://{upstream}").parse().unwrap(),
        &config,
        middleware,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    address
}

async fn proxy(upstream: SocketAddr, rules: &str) -> SocketAddr {
    proxy_with(upstream, rules, ServerLimits::default()).await
}

async fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Observed {
    over_http(address, "GET", path, headers, Bytes::new()).await
}

/// Sends `raw` bytes on a new connection and reads the answer until the server closes it or a
/// whole response head and its declared body arrived.
async fn raw(address: SocketAddr, raw: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
        let text = String::from_utf8_lossy(&answer);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end].lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            });
            if length.is_some_and(|length| answer.len() >= head_end + 4 + length) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

// 1. Revalidation writes only what may be stored.
#[tokio::test]
async fn a_304_with_a_victims_cookie_or_private_never_reaches_other_clients() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "").await;
    for path in ["/rolling", "/rolling?private"] {
        let first = get(proxy, path, &[]).await;
        assert_eq!(first.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The victim's request makes the proxy validate the stale entry; its 304 is the victim's.
        let victim = get(proxy, path, &[("cookie", "session=victim")]).await;
        assert_eq!(victim.status, StatusCode::OK);
        let before = runs.get();
        let anonymous = get(proxy, path, &[]).await;
        assert_eq!(
            anonymous.header("set-cookie"),
            None,
            "{path}: {anonymous:?}"
        );
        assert!(!anonymous.text().contains("victim"), "{path}");
        if path.ends_with("private") {
            // The entry the private 304 touched is gone: the next client goes to the origin.
            assert_eq!(runs.get(), before + 1, "{path} served from a private entry");
        }
    }
}

// 2. Targeted fields cannot relax no-store.
#[tokio::test]
async fn targeted_fields_for_other_caches_or_unparsable_never_store_a_no_store_response() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "").await;
    for path in ["/targeted?other-device", "/targeted?invalid"] {
        let before = runs.get();
        get(proxy, path, &[]).await;
        let second = get(proxy, path, &[]).await;
        assert_eq!(runs.get(), before + 2, "{path} was stored: {second:?}");
    }
}

// 3. Cache deception through rules.
#[tokio::test]
async fn encoded_and_dotted_paths_cannot_put_a_private_page_under_a_public_rule() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "[[route]]\npath = \"/static/*\"\nttl = 600\n").await;
    let cookie = [("cookie", "session=victim")];
    for attack in [
        "/static/..%2faccount",
        "/static/..%2Faccount",
        "/static/..%5caccount",
        "/static/..;/account",
        "/static/%2e%2e;/account",
    ] {
        let answer = get(proxy, attack, &cookie).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{attack}");
    }
    for attack in [
        "/static/../account",
        "/static/%2e%2e/account",
        "/static/.%2E/account",
    ] {
        let victim = get(proxy, attack, &cookie).await;
        // The rule never saw it: the path is /account, which has no rule and no caching headers.
        assert!(
            victim.text().contains("path=/account "),
            "{attack}: {}",
            victim.text()
        );
        let anonymous = get(proxy, attack, &[]).await;
        assert!(
            !anonymous.text().contains("victim"),
            "{attack}: {}",
            anonymous.text()
        );
        let direct = get(proxy, "/account", &[]).await;
        assert!(!direct.text().contains("victim"), "{attack}");
    }
    // A rule path requested with a cookie passes uncached, so no cookie-specific page is stored.
    let with_cookie = get(proxy, "/static/app.js", &cookie).await;
    assert_eq!(with_cookie.x_cache(), "BYPASS");
    let anonymous = get(proxy, "/static/app.js", &[]).await;
    assert!(!anonymous.text().contains("victim"));
}

// 4. The key's Host is the Host the origin sees.
#[tokio::test]
async fn host_is_one_value_and_the_one_forwarded() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let twice = raw(
        proxy,
        b"GET /h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&twice), 400, "{twice}");
    let missing = raw(proxy, b"GET /h HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status_of(&missing), 400, "{missing}");
    let stripped = raw(
        proxy,
        b"GET /h2 HTTP/1.1\r\nHost: a.example\r\nConnection: host, close\r\n\r\n",
    )
    .await;
    assert!(stripped.contains("host=a.example "), "{stripped}");
    // Absolute form: the target's host is the Host, for the key and the origin alike.
    let absolute = raw(
        proxy,
        b"GET http://victim.example/abs HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.contains("host=victim.example "), "{absolute}");
    let same = get(proxy, "/abs", &[("host", "victim.example")]).await;
    assert_eq!(same.x_cache(), "HIT");
    let other = get(proxy, "/abs", &[("host", "attacker.example")]).await;
    assert_eq!(other.x_cache(), "MISS");
}

// 5. Unkeyed forwarding headers.
#[tokio::test]
async fn client_forwarding_and_override_fields_never_reach_the_origin() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let answer = get(
        proxy,
        "/fwd",
        &[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "host=evil.example"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("surrogate-capability", "evil=\"ESI/1.0\""),
            ("x-forwarded-uri", "/evil"),
            ("x-script-name", "/evil"),
            ("x-original-method", "evil"),
        ],
    )
    .await;
    let text = answer.text();
    // The cache announces itself to the origin; the client's claim never gets there.
    assert!(
        text.contains("capability=cache-middleware=\"Surrogate/1.0\" "),
        "{text}"
    );
    assert!(
        !text.contains("evil") && !text.contains("6.6.6.6"),
        "{text}"
    );
    assert!(text.contains("xff=127.0.0.1 "), "{text}");
    assert!(text.contains("xfp=http "), "{text}");
    assert!(text.contains("override= "), "{text}");
}

// 5, with Vary: the forwarding fields are set before the cache looks, so a response that varies
// on them is matched against the values its origin saw.
#[tokio::test]
async fn a_response_varying_on_the_client_address_is_never_served_to_another_client() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "trusted_proxies = [\"127.0.0.0/8\"]").await;
    let first = get(proxy, "/by-client", &[("x-forwarded-for", "198.51.100.1")]).await;
    assert!(
        first.text().contains("xff=198.51.100.1, 127.0.0.1 "),
        "{}",
        first.text()
    );
    let again = get(proxy, "/by-client", &[("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(again.x_cache(), "HIT");
    let other = get(proxy, "/by-client", &[("x-forwarded-for", "198.51.100.2")]).await;
    assert_ne!(other.x_cache(), "HIT");
    assert!(
        other.text().contains("xff=198.51.100.2, 127.0.0.1 "),
        "{}",
        other.text()
    );
    assert_eq!(runs.get(), 2);
}

#[tokio::test]
async fn with_request_directives_ignored_no_client_can_replace_a_warm_entry() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "honor_request_cache_control = false\n").await;
    get(proxy, "/warm", &[]).await;
    let forced = get(proxy, "/warm", &[("cache-control", "no-cache")]).await;
    assert_eq!(forced.x_cache(), "HIT");
    assert_eq!(runs.get(), 1);
}

// 6. Fat GET.
#[tokio::test]
async fn a_get_with_a_body_is_neither_stored_nor_served_from_storage() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let fat = over_http(proxy, "GET", "/fat", &[], Bytes::from_static(b"poison")).await;
    assert_eq!(fat.x_cache(), "BYPASS");
    let plain = get(proxy, "/fat", &[]).await;
    assert!(!plain.text().contains("poison"), "{}", plain.text());
    assert_eq!(plain.x_cache(), "MISS");
}

/// A GET over HTTP/2 with DATA frames and no `Content-Length` (the body needs no length field
/// there), with `body`.
async fn h2_get_with_body(address: SocketAddr, path: &str, body: &'static [u8]) -> Observed {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from_static(body)),
    )]);
    let request = http::Request::get(format!("http://{address}{path}"))
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    assert!(!request.headers().contains_key("content-length"));
    support::observe(client.request(request).await.unwrap()).await
}

/// The same attack over HTTP/2: the proxy drops content no field frames, so the origin receives
/// what the key describes.
#[tokio::test]
async fn a_get_with_a_body_over_http2_never_reaches_the_origin_or_the_cache() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let fat = h2_get_with_body(proxy, "/fat2", b"poison").await;
    assert!(!fat.text().contains("poison"), "{}", fat.text());
    let plain = get(proxy, "/fat2", &[]).await;
    assert!(!plain.text().contains("poison"), "{}", plain.text());
}

/// And against a cached route of an application served over HTTP/2: the handler gets the body,
/// so its answer is neither stored nor served from storage.
#[tokio::test]
async fn a_get_with_a_body_over_http2_to_a_cached_route_bypasses_the_cache() {
    let echo = |request: Request| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        format!("body={}", String::from_utf8_lossy(&body))
    };
    let app = Router::new()
        .route("/echo", any(echo).layer(cache(60)))
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let fat = h2_get_with_body(address, "/echo", b"poison").await;
    assert_eq!(fat.text(), "body=poison");
    assert_eq!(fat.x_cache(), "BYPASS");
    let plain = get(address, "/echo", &[]).await;
    assert_eq!(
        plain.text(),
        "body=",
        "another client gets the response to its own request"
    );
}

// 7. The key is no wider than what the origin receives.
#[tokio::test]
async fn encodings_the_origin_tells_apart_never_share_an_entry() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "").await;
    let quote = raw(
        proxy,
        b"GET /q?q=' HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(quote.contains("query=q=' "), "{quote}");
    let encoded = get(proxy, "/q?q=%27", &[("host", "a")]).await;
    assert!(
        encoded.text().contains("query=q=%27 "),
        "{}",
        encoded.text()
    );
    assert_eq!(runs.get(), 2);
}

// 7. The variant is no wider than what the origin receives: a field's lines are not one line, and
// a field whose grammar the cache does not know is compared byte for byte.
#[tokio::test]
async fn values_the_origin_reads_apart_never_share_a_variant() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let chrome = "Browser/1.0 (KHTML, like Gecko)";
    // The path, the field, the attacker's lines, the victim's value.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        // Two lines that read as the victim's one when joined; the origin reads the first.
        (
            "/by-agent",
            "user-agent",
            &[
                ("user-agent", "Browser/1.0 (KHTML"),
                ("user-agent", "like Gecko)"),
            ],
            chrome,
        ),
        // One line, spaced otherwise: a User-Agent is text, not a list.
        (
            "/by-agent?spacing",
            "user-agent",
            &[("user-agent", "Browser/1.0 (KHTML,like Gecko)")],
            chrome,
        ),
        (
            "/by-language",
            "accept-language",
            &[
                ("accept-language", "de-AT"),
                ("accept-language", "de;q=0.9"),
            ],
            "de-AT, de;q=0.9",
        ),
    ];
    for (path, name, attacker, victims_value) in cases {
        let planted = get(proxy, path, attacker).await;
        assert_eq!(planted.status, StatusCode::OK, "{path}");
        let victim = get(proxy, path, &[(name, victims_value)]).await;
        assert_eq!(
            victim.text(),
            format!("{name}={:?}", Some(victims_value)),
            "{path}: the victim got the answer to {attacker:?}"
        );
    }
}

// 7. An origin that finds its tenant by the host as written answers the case a client chose.
#[tokio::test]
async fn a_host_in_other_letters_never_answers_for_the_host() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let attack = raw(
        proxy,
        b"GET /tenant HTTP/1.1\r\nHost: ACME.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&attack), 200, "{attack}");
    let victim = get(proxy, "/tenant", &[("host", "acme.example")]).await;
    assert_eq!(victim.text(), "tenant=acme");
}

// 7. An origin that picks a language the simple way (in the order and spelling sent) answers the
// order, the case and the spaces a client chose.
#[tokio::test]
async fn a_language_list_spelled_otherwise_gets_its_own_variant() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let french = "fr-FR,fr;q=0.9,en-US;q=0.8";
    let austrian = "de-AT,fr-FR,fr;q=0.9,en-US;q=0.8";
    for (n, (attack, victims)) in [
        ("en-US;q=0.8,fr-FR,fr;q=0.9", french),
        ("FR-fr,fr;q=0.9,en-US;q=0.8", french),
        // Spaced: ` fr-FR` is not a tag the origin has.
        ("de-AT, fr-FR,fr;q=0.9,en-US;q=0.8", austrian),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/first-language?{n}");
        let planted = get(proxy, &path, &[("accept-language", attack)]).await;
        assert_eq!(planted.text(), "lang=en-US", "{attack}");
        let victim = get(proxy, &path, &[("accept-language", victims)]).await;
        assert_eq!(victim.text(), "lang=fr-FR", "after {attack}");
    }
}

// 7. An answer to the request's range or preconditions is not an answer for the URL.
#[tokio::test]
async fn an_answer_to_a_range_or_a_precondition_never_reaches_other_clients() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    for (n, attack) in [
        ("range", "bytes=50-"),
        ("if-match", "\"nope\""),
        ("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT"),
    ]
    .into_iter()
    .enumerate()
    {
        // On a cold URL, and on a warm one with the attack as a refresh.
        let cold = format!("/preconditions?cold-{n}");
        let warm = format!("/preconditions?warm-{n}");
        assert_eq!(get(proxy, &warm, &[]).await.status, StatusCode::OK);
        for (path, also) in [(&cold, None), (&warm, Some(("cache-control", "no-cache")))] {
            let fields: Vec<_> = [attack].into_iter().chain(also).collect();
            let planted = get(proxy, path, &fields).await;
            assert!(planted.status.is_client_error(), "{fields:?}: {planted:?}");
            let victim = get(proxy, path, &[]).await;
            assert_eq!(victim.status, StatusCode::OK, "{path} after {fields:?}");
            if also.is_some() {
                // The refresh left the stored response as it was.
                assert_eq!(
                    victim.header("x-cache"),
                    Some("HIT"),
                    "{path} after {fields:?}"
                );
            }
        }
    }
}

// 13. A client error that one client provoked says nothing of the URL's own answer: the
// requests after it still share one origin request.
#[tokio::test]
async fn a_client_error_one_client_provoked_never_stops_others_sharing_an_origin_request() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "").await;
    // What one request carried made its answer unstorable: a failed precondition, credentials.
    for (path, planted_with) in [
        ("/preconditions?slow", ("if-match", "\"nope\"")),
        (
            "/preconditions?slow-private",
            ("authorization", "Bearer mine"),
        ),
    ] {
        let planted = get(proxy, path, &[planted_with]).await;
        assert_eq!(planted.header("x-cache"), Some("MISS"), "{planted_with:?}");
        let before = runs.get();
        let answers = futures_util::future::join_all((0..8).map(|_| get(proxy, path, &[]))).await;
        assert!(answers.iter().all(|a| a.status == StatusCode::OK));
        let asked = runs.get() - before;
        assert_eq!(
            asked, 1,
            "after {planted_with:?}: origin requests for 8 clients"
        );
    }
}

// 8. Slowloris.
#[tokio::test]
async fn slow_clients_are_closed_and_never_stop_a_normal_request() {
    let (origin, _) = origin().await;
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(2),
        ..ServerLimits::default()
    };
    let proxy = proxy_with(origin, "", limits).await;
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    let normal = get(proxy, "/normal", &[]).await;
    assert_eq!(normal.status, StatusCode::OK);
    // Past the header timeout, the server has closed every one of them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut open = 0;
    for stream in &mut slow {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            _ => open += 1,
        }
    }
    assert_eq!(open, 0, "slow connections still open");
}

// 8, the other side: the idle timer never cuts a response still being sent.
#[tokio::test]
async fn a_response_slower_than_the_idle_timeout_is_sent_whole() {
    let chunks = || {
        futures_util::stream::unfold(0, |sent| async move {
            if sent == 4 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
            Some((
                Ok::<_, std::io::Error>(Bytes::from_static(b"chunk;")),
                sent + 1,
            ))
        })
    };
    let origin = support::serve(Router::new().fallback(any(move || async move {
        ([("cache-control", "no-store")], Body::from_stream(chunks()))
    })))
    .await;
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let proxy = proxy_with(origin, "", limits).await;
    let answer = get(proxy, "/stream", &[]).await;
    assert_eq!(answer.text(), "chunk;chunk;chunk;chunk;");
}

// 8, HTTP/2: answering pings must not keep an idle connection (and its slot under the cap).
#[tokio::test]
async fn idle_h2_connections_are_closed_after_the_idle_timeout() {
    let (origin, _) = origin().await;
    let limits = ServerLimits {
        header_read_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let proxy = proxy_with(origin, "", limits).await;
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let request = http::Request::get(format!("http://{proxy}/h2-idle"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap();
    // One idle period after the request, the server says GOAWAY and the connection ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "idle h2 connection still open after 5 s");
}

// 11. Arithmetic.
#[tokio::test]
async fn an_age_beyond_64_bit_milliseconds_is_old_not_young() {
    let (origin, runs) = origin().await;
    let proxy = proxy(origin, "").await;
    get(proxy, "/ancient", &[]).await;
    let second = get(proxy, "/ancient", &[]).await;
    assert_ne!(second.x_cache(), "HIT");
    assert_eq!(runs.get(), 2);
}

// 12. Client faults are 4xx; h2c clients are served.
#[tokio::test]
async fn client_faults_are_4xx_and_h2c_is_forwarded() {
    let (origin, _) = origin().await;
    let proxy = proxy(origin, "").await;
    let options = raw(
        proxy,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&options), 200, "{options}");
    let chunked = raw(
        proxy,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&chunked), 400, "{chunked}");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let request = http::Request::get(format!("http://{proxy}/h2c"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains(&format!("host={proxy} ")), "{text}");
}

// 13. Refresh storms.
#[tokio::test]
async fn concurrent_refreshes_of_one_key_share_one_handler_run() {
    let runs = Counter::default();
    let counted = runs.clone();
    let slow = move || {
        let counted = counted.clone();
        async move {
            counted.bump();
            tokio::time::sleep(Duration::from_millis(300)).await;
            "expensive"
        }
    };
    let app: Router = Router::new()
        .route("/expensive", axum::routing::get(slow).layer(cache(60)))
        .layer(CacheMiddleware::new(MemoryBackend::new(100)));
    let app = Arc::new(app);
    let requests =
        (0..16).map(|_| {
            let app = Arc::clone(&app);
            async move {
                support::fetch_with(&app, "/expensive", &[("cache-control", "no-cache")]).await
            }
        });
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.text() == "expensive"));
    assert_eq!(runs.get(), 1);
}

#[tokio::test]
async fn concurrent_no_cache_requests_through_the_proxy_make_one_origin_request() {
    let runs = Counter::default();
    let counted = runs.clone();
    let origin_app = Router::new().fallback(any(move || {
        let counted = counted.clone();
        async move {
            counted.bump();
            tokio::time::sleep(Duration::from_millis(300)).await;
            (
                [("cache-control", "max-age=600"), ("etag", "\"e\"")],
                "slow",
            )
        }
    }));
    let origin = support::serve(origin_app).await;
    let proxy = proxy(origin, "").await;
    get(proxy, "/storm", &[]).await;
    let requests = (0..16).map(|_| get(proxy, "/storm", &[("cache-control", "no-cache")]));
    let answers = futures_util::future::join_all(requests).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    assert_eq!(runs.get(), 2, "one fill and one shared validation");
}
