//! Request cacheability: look up, refresh (fetch fresh and replace), or bypass the cache.

use super::CacheControl;
use http::{header::AUTHORIZATION, request::Parts, Method};
use std::fmt;
use std::time::Duration;

/// What the route allows, as far as requests are concerned.
#[derive(Debug, Clone, Copy)]
pub struct RequestPolicy {
    /// Requests carrying `Authorization` may use the cache (the credential becomes part of the key).
    pub allow_authorization: bool,
    /// Whether request `Cache-Control` / `Pragma` directives are obeyed.
    pub honor_request_cache_control: bool,
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
    /// The request body is larger than the configured limit.
    BodyTooLarge,
    /// Reading the request body failed; the handler sees the same failure.
    BodyUnreadable,
    /// No `CacheMiddleware` is installed around this route.
    NoMiddleware,
    /// A partial-content request (`Range`), passed to the origin in shared-cache mode.
    Range,
}

impl BypassReason {
    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Method => "method",
            BypassReason::NoStore => "no-store",
            BypassReason::Authorization => "authorization",
            BypassReason::BodyTooLarge => "request-body-too-large",
            BypassReason::BodyUnreadable => "request-body-unreadable",
            BypassReason::NoMiddleware => "no-middleware",
            BypassReason::Range => "range",
        }
    }
}

impl fmt::Display for BypassReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn malformed_cache_control_is_a_plain_lookup() {
        for value in ["=,=,max-age=oops-", ",,;;", "no-stor", "\"no-store\""] {
            let req = Request::builder().header("cache-control", value);
            assert_eq!(classify(req, DEFAULT), RequestDecision::Lookup, "{value}");
        }
    }
}
