//! Request fields by which proxies describe a request to the application behind them, and fields
//! that make an application serve another method or URL than the request line says. A client that
//! reaches the application directly can send any of them: the proxy's edge removes them, and
//! route mode varies on those that can change an answer (`renaming_fields`).

use http::{HeaderMap, HeaderName};

/// Where the request was addressed before a proxy: another host, scheme, port or path prefix
/// than the request's own (sorted).
const ADDRESSED: [&str; 14] = [
    "forwarded",
    "front-end-https",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-uri",
    "x-host",
    "x-original-host",
    "x-script-name",
    "x-url-scheme",
];

/// Who the client is, by address: different for every client, so never a reason to keep apart
/// what a route answers (sorted).
#[cfg(any(feature = "proxy", test))]
const CLIENT: [&str; 4] = [
    "true-client-ip",
    "x-client-ip",
    "x-forwarded-for",
    "x-real-ip",
];

/// Another method or URL than the request line's (sorted).
const OVERRIDES: [&str; 7] = [
    "x-http-method",
    "x-http-method-override",
    "x-method-override",
    "x-original-method",
    "x-original-uri",
    "x-original-url",
    "x-rewrite-url",
];

/// Whether `name` (lower-case, as `HeaderName` keeps it) says where or from whom a request was
/// forwarded: kept from trusted proxies only.
#[cfg(feature = "proxy")]
pub(crate) fn is_forwarding(name: &str) -> bool {
    ADDRESSED.binary_search(&name).is_ok() || CLIENT.binary_search(&name).is_ok()
}

/// Whether `name` overrides the request line's method or URL: never kept.
#[cfg(feature = "proxy")]
pub(crate) fn is_override(name: &str) -> bool {
    OVERRIDES.binary_search(&name).is_ok()
}

/// Set on a request by the proxy's edge: its forwarding fields are the proxy's own (or a trusted
/// proxy's), and override fields are gone, so none of them is a client's to choose.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeSettled;

/// [`renaming_fields`], except for a request the proxy's edge settled (none are a client's).
pub(crate) fn renaming_fields_of(parts: &http::request::Parts) -> Vec<String> {
    if parts.extensions.get::<EdgeSettled>().is_some() {
        return Vec::new();
    }
    renaming_fields(&parts.headers)
}

/// `vary` (sorted, without duplicates) with `renaming` added.
pub(crate) fn with_renaming(mut vary: Vec<String>, renaming: &[String]) -> Vec<String> {
    if !renaming.is_empty() {
        vary.extend_from_slice(renaming);
        vary.sort();
        vary.dedup();
    }
    vary
}

/// The fields a request carries that may give the application another address, method or URL
/// than its own (`ADDRESSED` and `OVERRIDES`), sorted: route mode varies on them for this
/// request, so that a response built on their values is stored, and shared with waiting
/// requests, only for requests that carry the same values (axum-extra's `Host` reads
/// `Forwarded` and `X-Forwarded-Host` first). Requests without any (most, unless a proxy adds
/// them to all) cost one pass over their field names and no allocation.
fn renaming_fields(headers: &HeaderMap) -> Vec<String> {
    let renames = |name: &HeaderName| {
        let name = name.as_str();
        (name.starts_with("x-") || name == "forwarded" || name == "front-end-https")
            && (ADDRESSED.binary_search(&name).is_ok() || OVERRIDES.binary_search(&name).is_ok())
    };
    // Collecting nothing allocates nothing: most requests carry none.
    let mut names: Vec<String> = headers
        .keys()
        .filter(|name| renames(name))
        .map(|name| name.as_str().to_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    #[test]
    fn the_lists_are_sorted_for_binary_search() {
        for list in [&ADDRESSED[..], &CLIENT[..], &OVERRIDES[..]] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
        }
    }

    #[test]
    fn renaming_fields_are_found_by_name_sorted_and_once() {
        let (parts, ()) = Request::get("/")
            .header("x-forwarded-proto", "https")
            .header("accept", "*/*")
            .header("Forwarded", "host=a")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-http-method-override", "DELETE")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            renaming_fields(&parts.headers),
            ["forwarded", "x-forwarded-proto", "x-http-method-override"]
        );
        assert!(renaming_fields(&HeaderMap::new()).is_empty());
    }
}
