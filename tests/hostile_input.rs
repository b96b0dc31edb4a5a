//! Hostile and malformed input never panics and never fails a request.

mod support;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::{Backend, MemoryBackend, RedisBackend};
use cache_middleware::{cache, CacheMiddleware};
use http::{HeaderValue, Request, StatusCode};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;
use support::servers::Redis;
use support::{fetch, fetch_with, send, Counter};

fn app(backend: Arc<dyn Backend>) -> (Router, Counter) {
    let counter = Counter::default();
    let runs = counter.clone();
    let echo_vary = |request: Request<Body>| async move {
        let mut response = http::Response::new(Body::from("varied"));
        if let Some(vary) = request.headers().get("x-send-vary") {
            response.headers_mut().insert("vary", vary.clone());
        }
        response
    };
    let app = Router::new()
        .route(
            "/r",
            get(move || {
                let run = runs.bump();
                async move { format!("run {run}") }
            })
            .layer(cache(60)),
        )
        .route(
            "/vary",
            get(echo_vary).layer(cache(60).allow_authorization()),
        )
        .layer(CacheMiddleware::new(backend));
    (app, counter)
}

fn raw(name: &'static str, value: &[u8]) -> Request<Body> {
    raw_at("/vary", name, value)
}

fn raw_at(uri: &str, name: &'static str, value: &[u8]) -> Request<Body> {
    let mut request = Request::get(uri)
        .header("host", "test.local")
        .body(Body::empty())
        .unwrap();
    request
        .headers_mut()
        .insert(name, HeaderValue::from_bytes(value).unwrap());
    request
}

#[tokio::test]
async fn malformed_header_values_are_served_normally() {
    let (app, _) = app(Arc::new(MemoryBackend::new(100)));
    let values: [&[u8]; 5] = [
        b"\xff\xfe",
        b"no-cache\x80",
        b"\"unterminated",
        b"W/",
        &[b'a'; 60_000],
    ];
    for name in [
        "cache-control",
        "if-none-match",
        "host",
        "authorization",
        "accept-language",
        "pragma",
    ] {
        for value in values {
            let response = send(&app, raw(name, value)).await;
            assert!(
                response.status.is_success(),
                "{name}: {:?}",
                response.status
            );
        }
    }
    // A Vary that is not text cannot be matched: the response is served but not stored.
    for _ in 0..2 {
        let response = send(
            &app,
            raw_at("/vary?bad-vary", "x-send-vary", b"accept, \xff"),
        )
        .await;
        assert_eq!(
            (response.status, response.x_cache()),
            (StatusCode::OK, "MISS")
        );
    }
}

#[tokio::test]
async fn odd_and_enormous_queries_are_keyed_without_failing() {
    let (app, counter) = app(Arc::new(MemoryBackend::new(100)));
    // Just under the longest URI the http crate accepts (64 KiB).
    let long = format!("/r?q={}", "x".repeat(60_000));
    let many = format!(
        "/r?{}",
        (0..5_000)
            .map(|i| format!("p{i}={i}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    let odd = [
        "/r?%%%&=&==&a=%ZZ&%FF=1&%00=%00",
        "/r?a=%E2%82",
        "/r?&&&",
        "/r?=",
        "/r?a==b=c",
        "/r?%2",
        long.as_str(),
        many.as_str(),
    ];
    for uri in odd {
        let first = fetch(&app, uri).await;
        let second = fetch(&app, uri).await;
        assert_eq!(
            (first.status, second.status),
            (StatusCode::OK, StatusCode::OK),
            "{uri}"
        );
        assert_eq!(second.x_cache(), "HIT", "{}", &uri[..uri.len().min(40)]);
    }
    assert_eq!(counter.get(), odd.len());
}

/// Sends raw bytes to `address` and returns the status line of the answer.
fn raw_exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(request);
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_server_with_the_cache_survives_malformed_requests_on_the_wire() {
    let (app, _) = app(Arc::new(MemoryBackend::new(100)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let ok = b"GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let huge_header = [
        &b"GET /r HTTP/1.1\r\nHost: x\r\nX-Big: "[..],
        &vec![b'a'; 1 << 20],
        b"\r\n\r\n",
    ]
    .concat();
    let cases: Vec<(&[u8], &str)> = vec![
        (b"GARBAGE\r\n\r\n", "HTTP/1.1 400"),
        (
            b"GET /r HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
            "HTTP/1.1 400",
        ),
        (&huge_header, "HTTP/1.1 431"),
    ];
    for (request, expected) in cases {
        let status = tokio::task::spawn_blocking({
            let request = request.to_vec();
            move || raw_exchange(address, &request)
        })
        .await
        .unwrap();
        assert!(
            status.is_empty() || status.starts_with(expected),
            "{status}"
        );
        let after = tokio::task::spawn_blocking(move || raw_exchange(address, ok))
            .await
            .unwrap();
        assert_eq!(after, "HTTP/1.1 200 OK", "the server still serves");
    }
    server.abort();
}

#[tokio::test]
async fn garbage_truncated_and_foreign_entries_in_redis_are_misses_then_overwritten() {
    let redis = Redis::start();
    let backend = RedisBackend::builder(redis.url())
        .namespace("app")
        .build()
        .unwrap();
    let (app, counter) = app(Arc::new(backend.clone()));
    fetch(&app, "/r?user=bob").await;
    // (Entries only: a fleet lease may still be on its way out.)
    let entries = || redis.cli(&["--scan", "--pattern", "app:*"]);
    let bob_key = entries()
        .lines()
        .find(|k| !k.starts_with("app:lease:"))
        .and_then(|k| k.strip_prefix("app:"))
        .expect("one entry")
        .to_owned();
    let bob_entry = backend.get(&bob_key).await.unwrap().unwrap();
    fetch(&app, "/r?user=alice").await;
    let alice_key = entries()
        .lines()
        .find(|k| *k != format!("app:{bob_key}") && !k.starts_with("app:lease:"))
        .unwrap()
        .strip_prefix("app:")
        .unwrap()
        .to_owned();

    let planted: [Bytes; 4] = [
        Bytes::from_static(b"garbage"),
        bob_entry.slice(..bob_entry.len() / 2),
        Bytes::from_static(b"CMWE\x09"),
        bob_entry.clone(),
    ];
    for (i, value) in planted.into_iter().enumerate() {
        backend
            .set(&alice_key, value, Duration::from_secs(60))
            .await
            .unwrap();
        let planted_read = fetch(&app, "/r?user=alice").await;
        assert_eq!(
            (planted_read.status, planted_read.x_cache()),
            (StatusCode::OK, "MISS"),
            "case {i}"
        );
        assert_ne!(
            planted_read.text(),
            "run 1",
            "bob's response is never served to alice"
        );
        assert_eq!(
            fetch(&app, "/r?user=alice").await.x_cache(),
            "HIT",
            "overwritten, case {i}"
        );
    }
    assert_eq!(counter.get(), 6);
}

/// A route that builds a link from the request's target, as an application building absolute
/// URLs from `Uri` does (the target's authority, when the request names one, else `Host`).
fn links(layer_shared: bool) -> Router {
    let link = |uri: http::Uri, headers: http::HeaderMap| async move {
        let host = match uri.authority() {
            Some(authority) => authority.as_str().to_owned(),
            None => headers["host"].to_str().unwrap().to_owned(),
        };
        (
            [("cache-control", "public, max-age=60")],
            format!("http://{host}/next"),
        )
    };
    at_links(link, layer_shared)
}

/// `handler` at `/links`, cached in shared-cache mode or in route mode.
fn at_links<H, T>(handler: H, shared: bool) -> Router
where
    H: axum::handler::Handler<T, ()>,
    T: 'static,
{
    let middleware = CacheMiddleware::new(MemoryBackend::new(100));
    if shared {
        Router::new()
            .route("/links", get(handler))
            .layer(middleware.http_semantics())
    } else {
        Router::new()
            .route("/links", get(handler).layer(cache(60)))
            .layer(middleware)
    }
}

#[tokio::test]
async fn a_request_that_names_two_hosts_is_neither_stored_nor_answered_from_storage() {
    // HTTP/1.1 lets a request name its host twice: an absolute target and `Host`. The key took
    // `Host`; an application reading the target built its links on the other host, and the
    // next client of `Host` got them.
    for shared in [false, true] {
        let app = links(shared);
        let two_hosts = || {
            Request::get("http://evil.example/links")
                .header("host", "test.local")
                .body(Body::empty())
                .unwrap()
        };
        let attack = send(&app, two_hosts()).await;
        assert_eq!(&attack.body[..], b"http://evil.example/next");
        assert_eq!(attack.x_cache(), "BYPASS", "shared: {shared}");
        let victim = fetch(&app, "/links").await;
        assert_eq!(
            &victim.body[..],
            b"http://test.local/next",
            "shared: {shared}"
        );
        // A `Host` repeated with another value is two hosts too.
        let mut repeated = Request::get("/links").header("host", "test.local");
        repeated = repeated.header("host", "evil.example");
        let repeated = send(&app, repeated.body(Body::empty()).unwrap()).await;
        assert_eq!(repeated.x_cache(), "BYPASS", "shared: {shared}");
        // One host said twice the same way is one host.
        let same = Request::get("http://test.local/links").header("host", "test.local");
        let same = send(&app, same.body(Body::empty()).unwrap()).await;
        assert_eq!(same.x_cache(), "HIT", "shared: {shared}");
    }
}

#[tokio::test]
async fn fields_that_rename_the_request_are_part_of_the_key() {
    // An application behind a proxy builds its links on the host and scheme the proxy reports;
    // a client that reaches it directly can report others. Neither may reach another client.
    let link = |headers: http::HeaderMap| async move {
        let field = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        let host = field("x-forwarded-host")
            .or_else(|| {
                let forwarded = field("forwarded")?;
                let host = forwarded
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("host="))?;
                Some(host.to_owned())
            })
            .unwrap_or_else(|| field("host").unwrap());
        let scheme = field("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
        (
            [("cache-control", "public, max-age=60")],
            format!("{scheme}://{host}/next"),
        )
    };
    let with = |name: &'static str, value: &'static str| {
        Request::get("/links")
            .header("host", "test.local")
            .header(name, value)
            .body(Body::empty())
            .unwrap()
    };
    for shared in [false, true] {
        let app = at_links(link, shared);
        for (name, value, link) in [
            (
                "x-forwarded-host",
                "evil.example",
                "http://evil.example/next",
            ),
            ("x-forwarded-proto", "https", "https://test.local/next"),
            (
                "forwarded",
                "for=192.0.2.1;host=evil.example",
                "http://evil.example/next",
            ),
        ] {
            let attack = send(&app, with(name, value)).await;
            assert_eq!(std::str::from_utf8(&attack.body).unwrap(), link);
            let victim = fetch(&app, "/links").await;
            let after = format!("after {name}, shared: {shared}");
            assert_eq!(&victim.body[..], b"http://test.local/next", "{after}");
        }
        // A proxy that sends the same values on every request keeps one entry for them all.
        let proxied = || with("x-forwarded-proto", "https");
        let (first, again) = (send(&app, proxied()).await, send(&app, proxied()).await);
        assert_eq!((first.x_cache(), again.x_cache()), ("MISS", "HIT"));
        assert_eq!(&again.body[..], b"https://test.local/next");
    }
}

#[tokio::test]
async fn a_varying_field_sent_otherwise_than_the_victims_gets_its_own_variant() {
    // The route varies on `User-Agent` and reads its first line, as `HeaderMap::get` does. A
    // client sent the victim's value split in two lines, or spaced otherwise; the cache joined
    // the lines and ignored spaces after commas, and the victim got the answer to the attack.
    let by_agent = |headers: http::HeaderMap| async move {
        let agent = headers["user-agent"].to_str().unwrap().to_owned();
        (
            [
                ("cache-control", "public, max-age=60"),
                ("vary", "user-agent"),
            ],
            agent,
        )
    };
    let victims = "Browser/1.0 (KHTML, like Gecko)";
    let attacks: [&[&str]; 2] = [
        &["Browser/1.0 (KHTML", "like Gecko)"],
        &["Browser/1.0 (KHTML,like Gecko)"],
    ];
    for shared in [false, true] {
        for attack in attacks {
            let app = at_links(by_agent, shared);
            let mut request = Request::get("/links").header("host", "test.local");
            for line in attack {
                request = request.header("user-agent", *line);
            }
            let planted = send(&app, request.body(Body::empty()).unwrap()).await;
            let mut r2 = Request::get("/links");
            for line in attack {
                r2 = r2.header("user-agent", *line);
            }
            eprintln!(
                "replant {}",
                send(&app, r2.body(Body::empty()).unwrap()).await.x_cache()
            );
            assert_eq!(&planted.body[..], attack[0].as_bytes());
            let victim = fetch_with(&app, "/links", &[("user-agent", victims)]).await;
            let after = format!("after {attack:?}, shared: {shared}");
            eprintln!(
                "{after} planted={} victim={} {:?}",
                planted.x_cache(),
                victim.x_cache(),
                victim.body
            );
            assert_eq!(&victim.body[..], victims.as_bytes(), "{after}");
            let again = fetch_with(&app, "/links", &[("user-agent", victims)]).await;
            assert_eq!(again.x_cache(), "HIT", "{after}");
        }
    }
}

#[tokio::test]
async fn a_host_in_other_letters_is_another_request() {
    // An application that finds its tenant by the host as written (a map of tenants by host)
    // answers `ACME.example` with its default tenant: not what `acme.example` gets.
    let tenant = |headers: http::HeaderMap| async move {
        let tenant = match headers["host"].to_str().unwrap() {
            "acme.example" => "acme",
            _ => "default",
        };
        ([("cache-control", "public, max-age=60")], tenant)
    };
    for shared in [false, true] {
        let app = at_links(tenant, shared);
        let at = |target: &str, host: &str| {
            let request = Request::get(target).header("host", host);
            request.body(Body::empty()).unwrap()
        };
        let attack = send(&app, at("/links", "ACME.example")).await;
        assert_eq!(&attack.body[..], b"default", "shared: {shared}");
        let victim = send(&app, at("/links", "acme.example")).await;
        assert_eq!(&victim.body[..], b"acme", "shared: {shared}");
        // A target naming the host in other letters than `Host` names two hosts.
        let two = send(&app, at("http://ACME.example/links", "acme.example")).await;
        assert_eq!(two.x_cache(), "BYPASS", "shared: {shared}");
    }
}
