//! The `Cache-Status` field (RFC 9211): how this cache handled a response, appended to what caches
//! closer to the origin said.

use crate::replay::CACHE_STATUS;
use http::{HeaderMap, HeaderValue, StatusCode};
use std::fmt::Write;
use std::time::Duration;

/// Why the request went forward to the origin (the `fwd` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Nothing stored for the URL.
    UriMiss,
    /// The stored response was stale; it was validated or replaced.
    Stale,
    /// The request asked for a response from the origin (`no-cache`, `max-age`, `min-fresh`).
    Request,
    /// The method is not cached.
    Method,
    /// The request is never answered from storage (a Range, `no-store`).
    Bypass,
}

/// One member of `Cache-Status`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Status {
    pub hit: bool,
    pub fwd: Option<Forward>,
    pub fwd_status: Option<StatusCode>,
    pub stored: bool,
    /// Freshness left, for a hit; negative when stale.
    pub ttl: Option<i64>,
    pub detail: Option<&'static str>,
}

impl Status {
    pub(crate) fn hit(ttl: Option<i64>) -> Self {
        Status {
            hit: true,
            ttl,
            ..Status::default()
        }
    }

    pub(crate) fn forward(fwd: Forward) -> Self {
        Status {
            fwd: Some(fwd),
            ..Status::default()
        }
    }

    pub(crate) fn detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Appends this member to `headers`' `Cache-Status`, keeping the members already there.
    pub(crate) fn append_to(&self, name: &str, headers: &mut HeaderMap) {
        let mut text = String::with_capacity(64);
        for existing in headers.get_all(CACHE_STATUS) {
            if let Ok(existing) = existing.to_str() {
                text.push_str(existing);
                text.push_str(", ");
            }
        }
        text.push_str(name);
        if self.hit {
            text.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            text.push_str("; fwd=");
            text.push_str(match fwd {
                Forward::UriMiss => "uri-miss",
                Forward::Stale => "stale",
                Forward::Request => "request",
                Forward::Method => "method",
                Forward::Bypass => "bypass",
            });
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(text, "; fwd-status={}", status.as_u16());
        }
        if self.stored {
            text.push_str("; stored");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(text, "; ttl={ttl}");
        }
        if let Some(detail) = self.detail {
            text.push_str("; detail=");
            text.push_str(detail);
        }
        // The text becomes the value's buffer: no second copy on every answer.
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(text)) {
            headers.insert(CACHE_STATUS, value);
        }
    }
}

/// Seconds of freshness left (negative: seconds stale).
pub(crate) fn ttl_left(lifetime: Duration, age: Duration) -> i64 {
    lifetime.as_secs() as i64 - age.as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_appended_after_those_of_caches_nearer_the_origin() {
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_STATUS, HeaderValue::from_static("origin-cache; hit"));
        let mut status = Status::forward(Forward::Stale);
        status.fwd_status = Some(StatusCode::NOT_MODIFIED);
        status.stored = true;
        status.append_to("cache-middleware", &mut headers);
        assert_eq!(
            headers[CACHE_STATUS],
            "origin-cache; hit, cache-middleware; fwd=stale; fwd-status=304; stored"
        );
        let mut headers = HeaderMap::new();
        Status::hit(Some(-3))
            .detail("stale-while-revalidate")
            .append_to("c", &mut headers);
        assert_eq!(
            headers[CACHE_STATUS],
            "c; hit; ttl=-3; detail=stale-while-revalidate"
        );
    }
}
