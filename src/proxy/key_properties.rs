//! Property: the key a request is stored under describes exactly the request the origin receives.
//! Whatever a client sends (dot segments, escapes, `Connection` naming other fields, repeated or
//! absolute-form hosts, forwarding fields), the key of the request after the edge equals the key of
//! the request as it leaves for the upstream, read the way the origin reads it; and a second proxy
//! in front of the same origin would key it the same way.

use super::edge::{prepare, TrustedProxies};
use super::forward::to_upstream;
use crate::key::primary_key;
use http::request::Parts;
use http::{HeaderValue, Method, Request, Uri};
use proptest::prelude::*;
use std::net::IpAddr;

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "B", ".", "..", "%2e", "%2E%2e", "%41", "%7e", "~", "%2f", "%5C", "%00", "%zz", "",
        ";x", "..;", "%25", "static", "%2E",
    ])
}

fn query() -> impl Strategy<Value = Option<String>> {
    let pair = prop::sample::select(vec![
        "q='", "q=%27", "a=1", "a=2", "b", "=", "x=%2F", "x=/", "c=%41",
    ]);
    prop::option::of(prop::collection::vec(pair, 0..4).prop_map(|p| p.join("&")))
}

fn host() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "example.com",
        "Example.COM",
        "a.test:8080",
        "",
        "x@y",
        "bad host",
    ])
}

fn connection() -> impl Strategy<Value = Vec<&'static str>> {
    prop::collection::vec(
        prop::sample::select(vec![
            "host",
            "content-length",
            "x-forwarded-host",
            "keep-alive",
            "x-custom",
            "upgrade",
            "close",
        ]),
        0..3,
    )
}

#[derive(Debug, Clone)]
struct Sent {
    method: Method,
    segments: Vec<&'static str>,
    query: Option<String>,
    absolute: bool,
    hosts: Vec<&'static str>,
    connection: Vec<&'static str>,
    forwarded_host: bool,
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        prop::sample::select(vec![Method::GET, Method::HEAD]),
        prop::collection::vec(segment(), 0..5),
        query(),
        any::<bool>(),
        prop::collection::vec(host(), 0..3),
        connection(),
        any::<bool>(),
    )
        .prop_map(
            |(method, segments, query, absolute, hosts, connection, forwarded_host)| Sent {
                method,
                segments,
                query,
                absolute,
                hosts,
                connection,
                forwarded_host,
            },
        )
}

/// The request as the client wrote it, when it is one `http` can represent at all.
fn request(sent: &Sent) -> Option<Parts> {
    let mut target = format!("/{}", sent.segments.join("/"));
    if let Some(query) = &sent.query {
        target = format!("{target}?{query}");
    }
    if sent.absolute {
        target = format!("http://{}{target}", sent.hosts.first()?);
    }
    let mut builder = Request::builder()
        .method(sent.method.clone())
        .uri(Uri::try_from(target).ok()?);
    for host in &sent.hosts {
        builder = builder.header("host", HeaderValue::from_str(host).ok()?);
    }
    if !sent.connection.is_empty() {
        builder = builder.header("connection", sent.connection.join(", "));
    }
    builder = builder.header("content-length", "0");
    if sent.forwarded_host {
        builder = builder.header("x-forwarded-host", "attacker.example");
    }
    Some(builder.body(()).ok()?.into_parts().0)
}

/// What the origin reads: the method, the `Host` field and the origin-form target.
fn as_the_origin_reads(forwarded: &Parts) -> Parts {
    let target = forwarded
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut builder = Request::builder()
        .method(forwarded.method.clone())
        .uri(target);
    for (name, value) in &forwarded.headers {
        builder = builder.header(name, value);
    }
    builder.body(()).unwrap().into_parts().0
}

proptest! {
    #[test]
    fn the_key_describes_the_request_the_origin_receives(sent in sent()) {
        let Some(mut parts) = request(&sent) else {
            return Ok(());
        };
        let peer = Some(IpAddr::from([192, 0, 2, 7]));
        let trusted = TrustedProxies::default();
        if prepare(&mut parts, peer, &trusted).is_err() {
            return Ok(()); // refused with a 400: nothing is keyed or forwarded
        }
        let key = primary_key("ns", &parts, None);
        let mut forwarded = parts;
        prop_assert!(to_upstream(&mut forwarded, "http://127.0.0.1:9").is_ok());
        let mut received = as_the_origin_reads(&forwarded);
        prop_assert_eq!(received.headers.get_all("host").iter().count(), 1);
        prop_assert!(received.headers.get("x-forwarded-host").is_some());
        prop_assert_eq!(&key, &primary_key("ns", &received, None));
        // A proxy in front of the origin would normalise nothing further.
        prop_assert!(prepare(&mut received, peer, &trusted).is_ok());
        prop_assert_eq!(&key, &primary_key("ns", &received, None));
    }
}
