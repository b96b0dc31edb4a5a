//! Validation of a stored response (RFC 9111 §4.3): the conditional request, and the stored
//! response updated from a `304 Not Modified`.

use crate::entry::StoredResponse;
use crate::policy::is_hop_by_hop;
use crate::replay::is_set_by_cache;
use http::header::{
    HeaderMap, HeaderName, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};

/// Turns the client's request headers into those of a conditional request for `stored`; `false`
/// when `stored` has no validator to ask with.
pub(crate) fn make_conditional(headers: &mut HeaderMap, stored: &StoredResponse) -> bool {
    let etag = stored.headers.get(ETAG).cloned();
    let last_modified = stored.headers.get(LAST_MODIFIED).cloned();
    if etag.is_none() && last_modified.is_none() {
        return false;
    }
    // The client's own validators name its copy, not ours; the answer to ours is what we need.
    headers.remove(IF_NONE_MATCH);
    headers.remove(IF_MODIFIED_SINCE);
    if let Some(etag) = etag {
        headers.insert(IF_NONE_MATCH, etag);
    }
    if let Some(last_modified) = last_modified {
        headers.insert(IF_MODIFIED_SINCE, last_modified);
    }
    true
}

/// §3.2: the stored response with the fields of a `304` in place of its own, except those that
/// describe the stored body itself.
pub(crate) fn update_from_304(stored: &mut StoredResponse, not_modified: &HeaderMap) {
    const KEEP_STORED: [HeaderName; 4] = [CONTENT_LENGTH, CONTENT_ENCODING, CONTENT_RANGE, ETAG];
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in not_modified {
        let skip = KEEP_STORED.contains(name)
            || name.as_str() == "content-md5"
            || is_hop_by_hop(name, not_modified)
            || is_set_by_cache(name);
        if skip {
            continue;
        }
        if !replaced.contains(&name) {
            stored.headers.remove(name);
            replaced.push(name);
        }
        stored.headers.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};

    fn stored() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert("x-kept", HeaderValue::from_static("old"));
        headers.insert("x-updated", HeaderValue::from_static("old"));
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(b"hello").into(),
        }
    }

    #[test]
    fn a_304_replaces_fields_but_not_those_of_the_body() {
        let mut stored = stored();
        let mut answer = HeaderMap::new();
        answer.insert(ETAG, HeaderValue::from_static("\"v2\""));
        answer.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        answer.append("x-updated", HeaderValue::from_static("a"));
        answer.append("x-updated", HeaderValue::from_static("b"));
        answer.insert("connection", HeaderValue::from_static("close"));
        update_from_304(&mut stored, &answer);
        assert_eq!(stored.headers[ETAG], "\"v1\"");
        assert_eq!(stored.headers[CONTENT_LENGTH], "5");
        assert_eq!(stored.headers["x-kept"], "old");
        let updated: Vec<_> = stored.headers.get_all("x-updated").iter().collect();
        assert_eq!(updated, ["a", "b"]);
        assert!(!stored.headers.contains_key("connection"));
    }

    #[test]
    fn conditional_requests_carry_the_stored_validators_not_the_clients() {
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("\"client\""));
        assert!(make_conditional(&mut headers, &stored()));
        assert_eq!(headers[IF_NONE_MATCH], "\"v1\"");
        let mut bare = stored();
        bare.headers.remove(ETAG);
        assert!(!make_conditional(&mut HeaderMap::new(), &bare));
    }
}
