//! Response cacheability in route mode: the route decides the TTL, the response can still refuse.

use super::CacheControl;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode};
use std::fmt;

/// What the engine and route allow, as far as responses are concerned.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePolicy<'a> {
    /// Status codes that may be stored (200 by default).
    pub statuses: &'a [StatusCode],
    /// Largest body that is stored, in bytes.
    pub max_body: usize,
}

/// The decision for one response, before its body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDecision {
    /// Read the body (up to the limit) and store it.
    Store,
    /// Pass the response through untouched.
    Skip(SkipReason),
}

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The status is not in the cacheable set (errors are never stored by default).
    Status,
    /// The response sets a cookie: it belongs to one client.
    SetCookie,
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: no-cache`: every reuse would need revalidation.
    NoCache,
    /// `Vary: *`: no later request can be shown to match.
    VaryStar,
    /// The body is larger than the limit.
    BodyTooLarge,
    /// A stream (`text/event-stream`): never buffered.
    Streaming,
    /// Responses to HEAD carry no body to store.
    Head,
}

impl SkipReason {
    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Status => "status",
            SkipReason::SetCookie => "set-cookie",
            SkipReason::Private => "private",
            SkipReason::NoStore => "no-store",
            SkipReason::NoCache => "no-cache",
            SkipReason::VaryStar => "vary-star",
            SkipReason::BodyTooLarge => "response-body-too-large",
            SkipReason::Streaming => "streaming",
            SkipReason::Head => "head",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a response by its status and headers.
pub fn classify_response(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    policy: ResponsePolicy<'_>,
) -> ResponseDecision {
    use ResponseDecision::Skip;
    if method == Method::HEAD {
        return Skip(SkipReason::Head);
    }
    if !policy.statuses.contains(&status) {
        return Skip(SkipReason::Status);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Skip(SkipReason::SetCookie);
    }
    let cc = CacheControl::from_field_lines(headers);
    if cc.no_store {
        return Skip(SkipReason::NoStore);
    }
    if cc.private {
        return Skip(SkipReason::Private);
    }
    if cc.no_cache {
        return Skip(SkipReason::NoCache);
    }
    if vary_names(headers).any(|name| name == "*") {
        return Skip(SkipReason::VaryStar);
    }
    if content_length(headers).is_some_and(|len| len > policy.max_body as u64) {
        return Skip(SkipReason::BodyTooLarge);
    }
    let is_event_stream = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        });
    if is_event_stream {
        return Skip(SkipReason::Streaming);
    }
    ResponseDecision::Store
}

/// The field names a `Vary` header lists, lower-cased, across all its field lines.
pub(crate) fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
}

/// The response's `Vary` names, lower-case, sorted, without duplicates.
pub(crate) fn sorted_vary(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = vary_names(headers).collect();
    names.sort();
    names.dedup();
    names
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Hop-by-hop fields (RFC 9110 §7.6.1): never stored, never forwarded.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Hop-by-hop fields and those named by `Connection` are never stored.
pub fn is_hop_by_hop(name: &HeaderName, headers: &HeaderMap) -> bool {
    if HOP_BY_HOP.contains(&name.as_str()) {
        return true;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|listed| listed.trim().eq_ignore_ascii_case(name.as_str()))
}

/// A client error other than those that describe the resource (`404`, `405`, `410`, `414`: its
/// path, method and target are the key's). The others answer what the key does not hold: the
/// request's range (`416`), preconditions (`412`), expectation (`417`), size or form (`400`,
/// `431`, `422`), rate or credentials (`429`, `401`, `403`). Stored, they would answer every
/// client with what one client's request provoked, whatever freshness the origin gave them (a
/// framework often sets a route's caching fields on all its answers). An unknown `4xx` is a
/// `400` (RFC 9110 §15).
pub(crate) fn answers_the_request_alone(status: StatusCode) -> bool {
    status.is_client_error() && !matches!(status.as_u16(), 404 | 405 | 410 | 414)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const OK: &[StatusCode] = &[StatusCode::OK];
    const POLICY: ResponsePolicy<'static> = ResponsePolicy {
        statuses: OK,
        max_body: 1024,
    };

    fn classify(status: u16, pairs: &[(&'static str, &'static str)]) -> ResponseDecision {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        classify_response(
            &Method::GET,
            StatusCode::from_u16(status).unwrap(),
            &headers,
            POLICY,
        )
    }

    fn skipped(reason: SkipReason) -> ResponseDecision {
        ResponseDecision::Skip(reason)
    }

    #[test]
    fn plain_200_is_stored() {
        assert_eq!(
            classify(200, &[("content-type", "text/plain")]),
            ResponseDecision::Store
        );
    }

    #[test]
    fn errors_and_other_statuses_are_not_stored_by_default() {
        for status in [201, 204, 301, 304, 400, 404, 422, 500, 503] {
            assert_eq!(
                classify(status, &[]),
                skipped(SkipReason::Status),
                "{status}"
            );
        }
    }

    #[test]
    fn responses_that_set_cookies_are_never_stored() {
        assert_eq!(
            classify(200, &[("set-cookie", "session=1")]),
            skipped(SkipReason::SetCookie)
        );
    }

    #[test]
    fn private_no_store_and_no_cache_responses_are_not_stored() {
        let cases = [
            ("private, max-age=60", SkipReason::Private),
            ("no-store", SkipReason::NoStore),
            ("no-cache=\"x\"", SkipReason::NoCache),
        ];
        for (value, reason) in cases {
            assert_eq!(classify(200, &[("cache-control", value)]), skipped(reason));
        }
    }

    #[test]
    fn vary_star_is_never_stored_but_named_vary_is() {
        assert_eq!(
            classify(200, &[("vary", "Accept, *")]),
            skipped(SkipReason::VaryStar)
        );
        assert_eq!(
            classify(200, &[("vary", "accept-encoding")]),
            ResponseDecision::Store
        );
    }

    #[test]
    fn declared_oversized_bodies_and_event_streams_are_not_buffered() {
        assert_eq!(
            classify(200, &[("content-length", "1025")]),
            skipped(SkipReason::BodyTooLarge)
        );
        assert_eq!(
            classify(200, &[("content-type", "Text/Event-Stream; charset=utf-8")]),
            skipped(SkipReason::Streaming)
        );
    }

    #[test]
    fn responses_to_head_are_not_stored() {
        let decision = classify_response(&Method::HEAD, StatusCode::OK, &HeaderMap::new(), POLICY);
        assert_eq!(decision, skipped(SkipReason::Head));
    }

    #[test]
    fn hop_by_hop_fields_include_those_named_by_connection() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("close, X-Internal"));
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING, &headers));
        assert!(is_hop_by_hop(
            &HeaderName::from_static("x-internal"),
            &headers
        ));
        assert!(!is_hop_by_hop(&header::CONTENT_TYPE, &headers));
    }
}
