//! Turning responses into stored form and stored entries back into responses: `X-Cache`, `Age`, a stable
//! `ETag`, HEAD without a body, `304 Not Modified` for a matching `If-None-Match`, and `206`/`416`
//! for a `Range` (see `ranges`).

use crate::backends::write_nonce;
use crate::body::CacheBody;
use crate::entry::StoredResponse;
use crate::policy::{http_date, is_hop_by_hop};
use crate::ranges::{part_of_partial, range_answer, RangeAnswer};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{response, Method, Response, StatusCode};
use http_body::Body;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The header that tells how the cache handled a response.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How the cache handled a response, as `X-Cache` reports it (not RFC 9211 `Cache-Status`, which
/// shared-cache mode writes too: see `shared::cache_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XCache {
    /// Served from the cache.
    Hit,
    /// Not in the cache: the handler ran.
    Miss,
    /// The request asked for a fresh response (`no-cache`): the handler ran and replaced the entry.
    Refresh,
    /// A stale entry served: the handler failed (stale-if-error) or is refreshing it in the
    /// background (stale-while-revalidate).
    Stale,
    /// The cache was not used for this request.
    Bypass,
}

impl XCache {
    fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Refresh => "REFRESH",
            XCache::Stale => "STALE",
            XCache::Bypass => "BYPASS",
        })
    }
}

/// The stored form of a fresh response: end-to-end headers only, and an `ETag` derived from the body
/// when the handler set none.
pub(crate) fn to_stored(parts: &response::Parts, body: Bytes) -> StoredResponse {
    let etag = (!parts.headers.contains_key(header::ETAG)).then(|| body_etag(&body));
    let mut stored = end_to_end(parts, body);
    if let Some(etag) = etag {
        stored.headers.insert(header::ETAG, etag);
    }
    stored
}

/// The response with only the fields a cache keeps: no hop-by-hop fields, and none of the fields a
/// cache sets itself when it answers (`Age`, `X-Cache`, `Cache-Status`).
pub(crate) fn end_to_end(parts: &response::Parts, body: Bytes) -> StoredResponse {
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name, &parts.headers) && !is_set_by_cache(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    StoredResponse {
        status: parts.status,
        headers,
        body: body.into(),
    }
}

/// Fields a cache writes when it answers, never stored.
pub(crate) fn is_set_by_cache(name: &HeaderName) -> bool {
    name == X_CACHE || name == header::AGE || name == CACHE_STATUS
}

/// The RFC 9211 field that tells how each cache on the path handled a response.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// A strong validator from the body bytes: the same in every process and on every machine.
pub(crate) fn body_etag(body: &[u8]) -> HeaderValue {
    let digest = blake3::hash(body);
    let hex = digest.to_hex();
    HeaderValue::from_str(&format!("\"{}\"", &hex[..32])).expect("hex is a valid header value")
}

/// A strong validator for a body stored as it streams, whose bytes are not known when its head
/// goes out: unique to this stored copy (a number unique to the write, and the clock), so that it
/// never names other bytes. Every instance reading the copy sees the same one.
pub(crate) fn copy_etag() -> HeaderValue {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&write_nonce().to_le_bytes());
    hasher.update(&now.to_le_bytes());
    let hex = hasher.finalize().to_hex();
    HeaderValue::from_str(&format!("\"{}\"", &hex[..32])).expect("hex is a valid header value")
}

/// The response for `stored`, as the client of this request should see it. Takes the stored
/// response by value: its headers and body move into the response without copies.
pub(crate) fn replay<B: Body>(
    stored: StoredResponse,
    method: &Method,
    request_headers: &HeaderMap,
    status: XCache,
    age: Option<Duration>,
) -> Response<CacheBody<B>> {
    let mut response = if client_has_current(request_headers, &stored) {
        not_modified(&stored)
    } else if method == Method::GET && request_headers.contains_key(header::RANGE) {
        match range_answer(request_headers, &stored) {
            RangeAnswer::Part { first, last } => partial(stored, first, last),
            RangeAnswer::Unsatisfiable => unsatisfiable(&stored),
            RangeAnswer::Full => full(stored, method),
        }
    } else {
        full(stored, method)
    };
    stamp(&mut response, status, age);
    response
}

/// The response for a stored head whose body is still arriving (`body`: read from a fill), for
/// a GET: whole, or `304` for a client that has it. A
/// `Range` is not answered from a body not yet complete: the whole response is (RFC 9110 §14.2
/// lets a server ignore `Range`).
pub(crate) fn replay_arriving<B: Body>(
    head: StoredResponse,
    body: CacheBody<B>,
    request_headers: &HeaderMap,
    status: XCache,
    age: Option<Duration>,
) -> Response<CacheBody<B>> {
    let mut response = if client_has_current(request_headers, &head) {
        not_modified(&head)
    } else {
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        response
    };
    stamp(&mut response, status, age);
    response
}

/// The fields the cache sets on every response it answers from storage.
fn stamp<B>(response: &mut Response<B>, status: XCache, age: Option<Duration>) {
    let headers = response.headers_mut();
    headers.insert(X_CACHE, status.header_value());
    if let Some(age) = age {
        headers.insert(header::AGE, age_value(age.as_secs()));
    }
}

/// The stored response whole (for HEAD, its fields and no body).
fn full<B: Body>(stored: StoredResponse, method: &Method) -> Response<CacheBody<B>> {
    let StoredResponse {
        status,
        mut headers,
        body,
    } = stored;
    if method == Method::HEAD && !headers.contains_key(header::CONTENT_LENGTH) {
        // The empty body would otherwise announce a length of 0; HEAD reports the GET body's length.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let body = if method == Method::HEAD {
        CacheBody::empty()
    } else {
        CacheBody::stored(body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// `206`: bytes `first..=last` of the stored body, a slice of it (no copy).
fn partial<B: Body>(stored: StoredResponse, first: usize, last: usize) -> Response<CacheBody<B>> {
    let length = stored.body.len() as u64;
    part(stored, (first as u64, last as u64), 0, length)
}

/// `206`: bytes `first..=last` of a representation of `length` bytes, from a stored body that
/// begins at byte `held_first` of it (0 for a complete one).
fn part<B: Body>(
    stored: StoredResponse,
    (first, last): (u64, u64),
    held_first: u64,
    length: u64,
) -> Response<CacheBody<B>> {
    let StoredResponse {
        mut headers, body, ..
    } = stored;
    let range = format!("bytes {first}-{last}/{length}");
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&range).expect("digits and a dash are a valid field value"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last - first + 1));
    let part = body.part((first - held_first) as usize, (last - held_first) as usize);
    let mut response = Response::new(CacheBody::stored(part));
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    *response.headers_mut() = headers;
    response
}

/// The answer to a `Range` request from a stored `206` that holds all of the bytes asked
/// (`part_of_partial` decides); `None` when it does not, and the origin must answer.
pub(crate) fn replay_from_partial<B: Body>(
    stored: StoredResponse,
    request_headers: &HeaderMap,
    age: Duration,
) -> Option<Response<CacheBody<B>>> {
    let (asked, held) = part_of_partial(request_headers, &stored)?;
    let mut response = part(stored, asked, held.first, held.length);
    stamp(&mut response, XCache::Hit, Some(age));
    Some(response)
}

/// `416`: the range names no byte of the stored body; says how long it is.
fn unsatisfiable<B: Body>(stored: &StoredResponse) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    let headers = response.headers_mut();
    let range = format!("bytes */{}", stored.body.len());
    headers.insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&range).expect("digits are a valid field value"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    for name in [header::DATE, header::ETAG, header::LAST_MODIFIED] {
        if let Some(value) = stored.headers.get(&name) {
            headers.insert(name, value.clone());
        }
    }
    response
}

/// `Age` values, made once for the first hour so that most hits need no allocation for it.
fn age_value(seconds: u64) -> HeaderValue {
    static FIRST_HOUR: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..3600u64).map(HeaderValue::from).collect());
    match FIRST_HOUR.get(seconds as usize) {
        Some(value) => value.clone(),
        None => HeaderValue::from(seconds),
    }
}

/// Marks a response the cache passed on without storing.
pub(crate) fn mark<B>(mut response: Response<B>, status: XCache) -> Response<B> {
    response
        .headers_mut()
        .insert(X_CACHE, status.header_value());
    response
}

/// RFC 9110 §15.4.5: a 304 carries the fields a 200 would have sent that describe caching.
fn not_modified<B: Body>(stored: &StoredResponse) -> Response<CacheBody<B>> {
    const KEPT: [HeaderName; 6] = [
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
    ];
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in KEPT {
        for value in stored.headers.get_all(&name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

/// Whether the client's conditional GET or HEAD names the stored response, so that a 304 answers
/// it (RFC 9110 §13.2.2): `If-None-Match` when present, otherwise `If-Modified-Since`.
pub(crate) fn client_has_current(request_headers: &HeaderMap, stored: &StoredResponse) -> bool {
    if request_headers.contains_key(header::IF_NONE_MATCH) {
        return stored
            .headers
            .get(header::ETAG)
            .is_some_and(|etag| if_none_match(request_headers, etag));
    }
    let Some(since) = http_date(request_headers.get(header::IF_MODIFIED_SINCE)) else {
        return false;
    };
    // Without Last-Modified, the stored Date is the latest the representation can have changed.
    let changed = http_date(stored.headers.get(header::LAST_MODIFIED))
        .or_else(|| http_date(stored.headers.get(header::DATE)));
    changed.is_some_and(|changed| changed <= since)
}

/// RFC 9110 §13.1.2: `If-None-Match` uses the weak comparison; `*` matches any current entry.
fn if_none_match(request_headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = opaque_tag(etag.as_bytes());
    request_headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|candidate| candidate.trim_ascii())
        .any(|candidate| candidate == b"*" || opaque_tag(candidate) == ours)
}

fn opaque_tag(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    fn stored() -> StoredResponse {
        let (parts, ()) = Response::builder()
            .header("content-type", "text/csv")
            .header("connection", "x-secret-hop")
            .header("x-secret-hop", "1")
            .header("transfer-encoding", "chunked")
            .header("x-cache", "HIT")
            .header("cache-control", "max-age=60")
            .body(())
            .unwrap()
            .into_parts();
        to_stored(&parts, Bytes::from_static(b"a,b\n1,2\n"))
    }

    fn request_with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn stored_form_drops_hop_by_hop_fields_and_adds_a_stable_etag() {
        let stored = stored();
        let names: Vec<_> = stored.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-type", "cache-control", "etag"]);
        let etag = stored.headers[header::ETAG].to_str().unwrap();
        assert_eq!(etag, body_etag(b"a,b\n1,2\n"));
        assert!(
            etag.len() == 34 && etag.starts_with('"') && etag.ends_with('"'),
            "{etag}"
        );
        assert_eq!(body_etag(b"x"), body_etag(b"x"));
        assert_ne!(body_etag(b"x"), body_etag(b"y"));
    }

    #[test]
    fn an_etag_set_by_the_handler_is_kept() {
        let (parts, ()) = Response::builder()
            .header("etag", "W/\"v1\"")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            to_stored(&parts, Bytes::new()).headers[header::ETAG],
            "W/\"v1\""
        );
    }

    #[tokio::test]
    async fn replays_carry_status_headers_body_x_cache_and_age() {
        let response = replay::<Empty<Bytes>>(
            stored(),
            &Method::GET,
            &HeaderMap::new(),
            XCache::Hit,
            Some(Duration::from_millis(7900)),
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-cache"], "HIT");
        assert_eq!(response.headers()["age"], "7");
        assert_eq!(response.headers()["content-type"], "text/csv");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"a,b\n1,2\n");
    }

    #[tokio::test]
    async fn head_replays_have_headers_but_no_body() {
        let response = replay::<Empty<Bytes>>(
            stored(),
            &Method::HEAD,
            &HeaderMap::new(),
            XCache::Hit,
            None,
        );
        assert!(response.headers().contains_key("etag"));
        assert_eq!(response.headers()["content-length"], "8");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }

    #[test]
    fn matching_if_none_match_answers_304_with_the_etag() {
        let stored = stored();
        let etag = stored.headers[header::ETAG].to_str().unwrap().to_owned();
        for candidate in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"x\", {etag}"),
            "*".into(),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, candidate.parse().unwrap());
            let response =
                replay::<Empty<Bytes>>(stored.clone(), &Method::GET, &headers, XCache::Hit, None);
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{candidate}");
            assert_eq!(response.headers()["etag"], etag.as_str());
            assert!(!response.headers().contains_key("content-type"));
        }
        let other = request_with("if-none-match", "\"other\"");
        let response = replay::<Empty<Bytes>>(stored, &Method::GET, &other, XCache::Hit, None);
        assert_eq!(response.status(), StatusCode::OK);
    }
}
