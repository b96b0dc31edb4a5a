//! Invalidation after unsafe methods (RFC 9111 §4.4): the target URI, and the URIs in `Location`
//! and `Content-Location` when they are on the same host.

use crate::key::{primary_key_from, CacheKey};
use http::header::{HeaderMap, CONTENT_LOCATION, HOST, LOCATION};
use http::request::Parts;
use http::{Method, Uri};

/// Whether `method` may change state at the origin.
pub(crate) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The request's host and path, kept to find what its response invalidates.
pub(crate) struct Target {
    host: Vec<u8>,
    uri: Uri,
}

impl Target {
    pub(crate) fn of(parts: &Parts) -> Self {
        let host = parts
            .headers
            .get(HOST)
            .map(|h| h.as_bytes().to_vec())
            .or_else(|| {
                parts
                    .uri
                    .authority()
                    .map(|a| a.as_str().as_bytes().to_vec())
            })
            .unwrap_or_default();
        Target {
            host,
            uri: parts.uri.clone(),
        }
    }

    /// The GET keys of the target URI and of the same-host URIs the response names.
    pub(crate) fn keys(&self, namespace: &str, response: &HeaderMap) -> Vec<CacheKey> {
        let mut keys = vec![self.key(namespace, self.uri.path(), self.uri.query())];
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(reference) = response.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if let Some((path, query)) = self.same_host(reference.trim()) {
                keys.push(self.key(namespace, &path, query.as_deref()));
            }
        }
        keys
    }

    fn key(&self, namespace: &str, path: &str, query: Option<&str>) -> CacheKey {
        primary_key_from(namespace, &Method::GET, None, &self.host, path, query, None)
    }

    /// The path and query of `reference` resolved against the target, if it is on the same host.
    fn same_host(&self, reference: &str) -> Option<(String, Option<String>)> {
        if reference.contains("://") {
            let uri: Uri = reference.parse().ok()?;
            let authority = uri.authority()?;
            if !authority
                .as_str()
                .as_bytes()
                .eq_ignore_ascii_case(&self.host)
            {
                return None;
            }
            return Some((uri.path().to_owned(), uri.query().map(str::to_owned)));
        }
        let (path, query) = match reference.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (reference, None),
        };
        if path.starts_with('/') {
            return Some((path.to_owned(), query));
        }
        // A relative reference: resolved against the target's directory.
        let base = self.uri.path();
        let directory = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        Some((format!("{directory}{path}"), query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Request};

    fn target(path: &str) -> Target {
        let (parts, ()) = Request::post(path)
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts();
        Target::of(&parts)
    }

    #[test]
    fn same_host_locations_are_resolved_and_other_hosts_ignored() {
        let t = target("/a/b?x=1");
        assert_eq!(t.same_host("/c"), Some(("/c".into(), None)));
        assert_eq!(
            t.same_host("d?y=2"),
            Some(("/a/d".into(), Some("y=2".into())))
        );
        assert_eq!(
            t.same_host("http://EXAMPLE.com/e"),
            Some(("/e".into(), None))
        );
        assert_eq!(t.same_host("http://other.example/e"), None);
    }

    #[test]
    fn keys_cover_the_target_and_named_locations() {
        let t = target("/a/b");
        let mut response = HeaderMap::new();
        response.insert(LOCATION, HeaderValue::from_static("/new"));
        response.insert(
            CONTENT_LOCATION,
            HeaderValue::from_static("http://elsewhere/x"),
        );
        let keys = t.keys("ns", &response);
        assert_eq!(keys.len(), 2);
        let (get, ()) = Request::get("/new")
            .header("host", "example.com")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(keys[1], crate::key::primary_key("ns", &get, None));
    }
}
