//! Request cacheability: look up, refresh (fetch fresh and replace), or bypass the cache.

use super::CacheControl;
use http::header::{
    HeaderMap, HeaderName, AUTHORIZATION, CONTENT_LENGTH, COOKIE, HOST, IF_MATCH,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, TRANSFER_ENCODING,
};
use http::{request::Parts, Method};
use std::fmt;
use std::time::Duration;

/// What the route allows, as far as requests are concerned.
#[derive(Debug, Clone, Copy)]
pub struct RequestPolicy {
    /// Requests carrying `Authorization` may use the cache (the credential becomes part of the key).
    pub allow_authorization: bool,
    /// Whether request `Cache-Control` / `Pragma` directives are obeyed.
    pub honor_request_cache_control: bool,
    /// Requests carrying `Cookie` bypass the cache (for origins that answer per user without
    /// saying so, as behind a proxy).
    pub bypass_cookies: bool,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDecision {
    /// Serve from the cache when a fresh entry exists, otherwise run the handler and store.
    Lookup,
    /// Do not read the cache; run the handler and let its response replace the stored one
    /// (`no-cache`, `Pragma: no-cache`, `max-age=0`).
    Refresh,
    /// Neither read nor write the cache.
    Bypass(BypassReason),
}

/// Why a request bypassed the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BypassReason {
    /// Only GET, HEAD and POST are cached.
    Method,
    /// The request said `Cache-Control: no-store`.
    NoStore,
    /// The request carries `Authorization` and the route did not opt in.
    Authorization,
    /// The request carries `Cookie` and the route passes such requests.
    Cookie,
    /// The request body is larger than the configured limit.
    BodyTooLarge,
    /// Reading the request body failed; the handler sees the same failure.
    BodyUnreadable,
    /// A partial-content request (`Range`), passed to the origin in shared-cache mode.
    Range,
    /// A GET or HEAD with content (RFC 9110 §9.3.1): the key does not describe what the
    /// application receives, so such a request is neither answered from nor stored in the cache.
    ContentOnSafeMethod,
    /// The request names two hosts (see [`names_two_hosts`]): the key would hold one of them
    /// while the application may read the other.
    TwoHosts,
}

impl BypassReason {
    /// Every reason, in the order statistics list them.
    pub const ALL: [BypassReason; 9] = [
        BypassReason::Method,
        BypassReason::NoStore,
        BypassReason::Authorization,
        BypassReason::Cookie,
        BypassReason::BodyTooLarge,
        BypassReason::BodyUnreadable,
        BypassReason::Range,
        BypassReason::ContentOnSafeMethod,
        BypassReason::TwoHosts,
    ];

    /// Its place in [`ALL`](Self::ALL): a match, so that a new reason cannot be left out.
    pub(crate) fn index(self) -> usize {
        match self {
            BypassReason::Method => 0,
            BypassReason::NoStore => 1,
            BypassReason::Authorization => 2,
            BypassReason::Cookie => 3,
            BypassReason::BodyTooLarge => 4,
            BypassReason::BodyUnreadable => 5,
            BypassReason::Range => 6,
            BypassReason::ContentOnSafeMethod => 7,
            BypassReason::TwoHosts => 8,
        }
    }

    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::NoStore => "no-store",
            BypassReason::Authorization => "authorization",
            BypassReason::Cookie => "cookie",
            BypassReason::BodyTooLarge => "request-body-too-large",
            BypassReason::BodyUnreadable => "request-body-unreadable",
            BypassReason::Range => "range",
            BypassReason::ContentOnSafeMethod => "content-on-get",
            BypassReason::TwoHosts => "two-hosts",
        }
    }
}

impl fmt::Display for BypassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a GET or HEAD request carries content: a declared length other than zero, a
/// `Transfer-Encoding` (RFC 9112 §6.3: nothing else frames an HTTP/1 body), or, where content
/// needs no field (HTTP/2 and HTTP/3 DATA frames), a body that does not say it is empty. The
/// fields are read first, so that a body wrapper of another layer cannot hide what they declare;
/// a body that cannot tell whether it is empty counts as content (the request then bypasses the
/// cache, which is safe).
pub fn safe_method_with_content<B: http_body::Body>(parts: &Parts, body: &B) -> bool {
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        return false;
    }
    let declared = parts
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes().iter().any(|&b| b != b'0'));
    let unframed = !body.is_end_stream() && body.size_hint().exact() != Some(0);
    declared || parts.headers.contains_key(TRANSFER_ENCODING) || unframed
}

/// Whether a request names two hosts: `Host` more than once with different values, or a `Host`
/// other than the authority of an absolute target (HTTP/1.1 allows both in one request; RFC 9112
/// §3.2.2 says the target's wins, while many applications read `Host`). The key holds one host;
/// the application may build its links on the other, so such a request stays out of the cache.
/// Hosts are compared as written, as the key holds them: an application may find its tenant by
/// the one it reads, letters as sent.
pub fn names_two_hosts(parts: &Parts) -> bool {
    let mut hosts = parts.headers.get_all(HOST).iter().map(|v| v.as_bytes());
    let Some(first) = hosts.next() else {
        return false;
    };
    hosts.any(|other| other != first)
        || parts
            .uri
            .authority()
            .is_some_and(|authority| authority.as_str().as_bytes() != first)
}

/// The fields by which a request asks for less than the whole, current response: a part, or an
/// answer under conditions (a `206`, a `304`, a `412`), none of which is stored.
const PARTIAL_OR_CONDITIONAL: [HeaderName; 6] = [
    RANGE,
    IF_RANGE,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_MATCH,
    IF_UNMODIFIED_SINCE,
];

/// Makes the request of a refresh no client waits for ask for the whole, current response, which
/// is what it stores: the request that started it may have asked for a part, or under
/// conditions, and a refresh that got a `206` or a `304` would leave the entry stale.
pub(crate) fn ask_for_the_whole(headers: &mut HeaderMap) {
    for name in &PARTIAL_OR_CONDITIONAL {
        headers.remove(name);
    }
}

/// Classifies a request by its method and headers (the body limit is checked once the body is read).
pub fn classify_request(parts: &Parts, policy: RequestPolicy) -> RequestDecision {
    if !matches!(parts.method, Method::GET | Method::HEAD | Method::POST) {
        return RequestDecision::Bypass(BypassReason::Method);
    }
    // RFC 9111 §3.5: a shared cache must not reuse a response to an authenticated request unless told
    // so; in route mode the route says so explicitly.
    if !policy.allow_authorization && parts.headers.contains_key(AUTHORIZATION) {
        return RequestDecision::Bypass(BypassReason::Authorization);
    }
    if policy.bypass_cookies && parts.headers.contains_key(COOKIE) {
        return RequestDecision::Bypass(BypassReason::Cookie);
    }
    if !policy.honor_request_cache_control {
        return RequestDecision::Lookup;
    }
    let cc = CacheControl::from_headers(&parts.headers);
    if cc.no_store {
        RequestDecision::Bypass(BypassReason::NoStore)
    } else if cc.no_cache || cc.max_age == Some(Duration::ZERO) {
        RequestDecision::Refresh
    } else {
        RequestDecision::Lookup
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    const DEFAULT: RequestPolicy = RequestPolicy {
        allow_authorization: false,
        honor_request_cache_control: true,
        bypass_cookies: false,
    };

    fn classify(builder: http::request::Builder, policy: RequestPolicy) -> RequestDecision {
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        classify_request(&parts, policy)
    }

    #[test]
    fn plain_get_head_and_post_are_looked_up() {
        for method in [Method::GET, Method::HEAD, Method::POST] {
            let req = Request::builder().method(method);
            assert_eq!(classify(req, DEFAULT), RequestDecision::Lookup);
        }
    }

    #[test]
    fn other_methods_bypass() {
        for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            let req = Request::builder().method(method);
            assert_eq!(
                classify(req, DEFAULT),
                RequestDecision::Bypass(BypassReason::Method)
            );
        }
    }

    #[test]
    fn no_store_bypasses_and_no_cache_refreshes() {
        let req = Request::builder().header("cache-control", "no-store");
        assert_eq!(
            classify(req, DEFAULT),
            RequestDecision::Bypass(BypassReason::NoStore)
        );
        for value in ["no-cache", "max-age=0", "NO-CACHE, max-stale"] {
            let req = Request::builder().header("cache-control", value);
            assert_eq!(classify(req, DEFAULT), RequestDecision::Refresh, "{value}");
        }
        let req = Request::builder().header("pragma", "no-cache");
        assert_eq!(classify(req, DEFAULT), RequestDecision::Refresh);
    }

    #[test]
    fn request_directives_are_ignored_when_switched_off() {
        let policy = RequestPolicy {
            honor_request_cache_control: false,
            ..DEFAULT
        };
        let req = Request::builder().header("cache-control", "no-store");
        assert_eq!(classify(req, policy), RequestDecision::Lookup);
    }

    #[test]
    fn authorization_requests_bypass_by_default() {
        let req = Request::builder().header("authorization", "Bearer abc");
        assert_eq!(
            classify(req, DEFAULT),
            RequestDecision::Bypass(BypassReason::Authorization)
        );
        let allowed = RequestPolicy {
            allow_authorization: true,
            ..DEFAULT
        };
        let req = Request::builder().header("authorization", "Bearer abc");
        assert_eq!(classify(req, allowed), RequestDecision::Lookup);
    }

    #[test]
    fn cookie_requests_bypass_only_where_the_route_says_so() {
        let req = || Request::builder().header("cookie", "session=abc");
        assert_eq!(classify(req(), DEFAULT), RequestDecision::Lookup);
        let policy = RequestPolicy {
            bypass_cookies: true,
            ..DEFAULT
        };
        assert_eq!(
            classify(req(), policy),
            RequestDecision::Bypass(BypassReason::Cookie)
        );
    }

    #[test]
    fn every_bypass_reason_is_listed_once_in_its_place() {
        for (at, reason) in BypassReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), at, "{reason}");
        }
    }

    #[test]
    fn get_and_head_with_content_are_told_apart_from_empty_ones() {
        use http_body_util::{Empty, Full, StreamBody};
        let parts = |builder: http::request::Builder| builder.body(()).unwrap().into_parts().0;
        let empty = Empty::<bytes::Bytes>::new();
        assert!(!safe_method_with_content(&parts(Request::get("/")), &empty));
        let zero = parts(Request::get("/").header("content-length", "0"));
        assert!(!safe_method_with_content(&zero, &empty));
        let five = parts(Request::get("/").header("content-length", "5"));
        assert!(
            safe_method_with_content(&five, &empty),
            "declared, whatever the body says"
        );
        let chunked = parts(Request::head("/").header("transfer-encoding", "chunked"));
        assert!(safe_method_with_content(&chunked, &empty));
        let post = parts(Request::post("/").header("content-length", "5"));
        assert!(!safe_method_with_content(&post, &empty));
        // HTTP/2: DATA frames with no field to frame them.
        let data = Full::new(bytes::Bytes::from_static(b"x"));
        assert!(safe_method_with_content(&parts(Request::get("/")), &data));
        let unknown = StreamBody::new(futures_util::stream::empty::<
            Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
        >());
        assert!(safe_method_with_content(
            &parts(Request::get("/")),
            &unknown
        ));
    }

    #[test]
    fn malformed_cache_control_is_a_plain_lookup() {
        for value in ["=,=,max-age=oops-", ",,;;", "no-stor", "\"no-store\""] {
            let req = Request::builder().header("cache-control", value);
            assert_eq!(classify(req, DEFAULT), RequestDecision::Lookup, "{value}");
        }
    }
}
