//! `Range` requests answered from a stored complete response (RFC 9110 §14): one byte range gets
//! `206 Partial Content` with that slice of the stored body (no copy), a range past the end gets
//! `416 Range Not Satisfiable`. Several ranges in one request, a unit other than `bytes`, a
//! malformed or repeated field, and an `If-Range` that does not match the stored validator get
//! the full response, as §14.2 allows.

use crate::entry::StoredResponse;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;

/// What a `Range` request gets from a stored complete response.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// The whole response (no range asked, or one this cache does not answer partially).
    Full,
    /// Bytes `first..=last` of the body.
    Part { first: usize, last: usize },
    /// No byte of the range exists.
    Unsatisfiable,
}

/// How `request_headers` ask for `stored` (a complete `200` response to a GET).
pub(crate) fn range_answer(request_headers: &HeaderMap, stored: &StoredResponse) -> RangeAnswer {
    let mut fields = request_headers.get_all(header::RANGE).iter();
    let (Some(range), None) = (fields.next(), fields.next()) else {
        return RangeAnswer::Full;
    };
    if stored.status != StatusCode::OK || !if_range_holds(request_headers, stored) {
        return RangeAnswer::Full;
    }
    let Some(spec) = range
        .to_str()
        .ok()
        .and_then(|value| value.trim().split_once('='))
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, set)| set.trim())
    else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full; // several ranges: the whole response instead of multipart
    }
    let length = stored.body.len();
    let Some((first, last)) = spec.split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (
        number(first),
        number(last),
        first.is_empty(),
        last.is_empty(),
    ) {
        // `-n`: the last n bytes.
        (None, Some(suffix), true, false) => match usize::try_from(suffix) {
            _ if suffix == 0 || length == 0 => RangeAnswer::Unsatisfiable,
            Ok(suffix) => RangeAnswer::Part {
                first: length.saturating_sub(suffix),
                last: length - 1,
            },
            Err(_) => RangeAnswer::Part {
                first: 0,
                last: length - 1,
            },
        },
        // `a-` and `a-b`.
        (Some(start), end, false, open) if open || end.is_some() => {
            if end.is_some_and(|end| end < start) {
                return RangeAnswer::Full; // invalid: ignored
            }
            match usize::try_from(start) {
                Ok(start) if start < length => RangeAnswer::Part {
                    first: start,
                    last: end
                        .and_then(|end| usize::try_from(end).ok())
                        .map_or(length - 1, |end| end.min(length - 1)),
                },
                _ => RangeAnswer::Unsatisfiable,
            }
        }
        _ => RangeAnswer::Full,
    }
}

/// A byte position: ASCII digits only, and within `u64`.
fn number(text: &str) -> Option<u64> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

/// §13.1.5: without `If-Range`, or when it names the stored response by a strong entity tag or
/// its exact `Last-Modified` date, the range applies; otherwise the full response is sent.
fn if_range_holds(request_headers: &HeaderMap, stored: &StoredResponse) -> bool {
    let Some(condition) = request_headers.get(header::IF_RANGE) else {
        return true;
    };
    let condition = condition.as_bytes().trim_ascii();
    if condition.starts_with(b"\"") {
        let stored_tag = stored.headers.get(header::ETAG).map(HeaderValue::as_bytes);
        return stored_tag.is_some_and(|tag| tag.trim_ascii() == condition);
    }
    if condition.starts_with(b"W/") {
        return false; // weak tags never match for ranges
    }
    stored
        .headers
        .get(header::LAST_MODIFIED)
        .is_some_and(|date| date.as_bytes().trim_ascii() == condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stored(body: &'static str) -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        headers.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Tue, 14 Nov 2023 22:13:20 GMT"),
        );
        StoredResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    fn ask(fields: &[(&str, &str)], body: &'static str) -> RangeAnswer {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        range_answer(&headers, &stored(body))
    }

    fn range(value: &str) -> RangeAnswer {
        ask(&[("range", value)], "0123456789A")
    }

    #[test]
    fn one_byte_range_of_each_form() {
        let part = |first, last| RangeAnswer::Part { first, last };
        assert_eq!(range("bytes=0-1"), part(0, 1));
        assert_eq!(range("bytes=1-"), part(1, 10));
        assert_eq!(range("bytes=-1"), part(10, 10));
        assert_eq!(range("bytes=-100"), part(0, 10));
        assert_eq!(range("bytes=5-100"), part(5, 10));
        assert_eq!(range("Bytes = 2-3"), part(2, 3));
        assert_eq!(range("bytes=10-10"), part(10, 10));
        assert_eq!(
            range("bytes=0-99999999999999999999999"),
            RangeAnswer::Full,
            "a position past u64 is malformed"
        );
    }

    #[test]
    fn past_the_end_is_unsatisfiable() {
        assert_eq!(range("bytes=11-"), RangeAnswer::Unsatisfiable);
        assert_eq!(range("bytes=11-20"), RangeAnswer::Unsatisfiable);
        assert_eq!(range("bytes=-0"), RangeAnswer::Unsatisfiable);
        assert_eq!(
            ask(&[("range", "bytes=0-")], ""),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn what_is_not_one_readable_byte_range_gets_the_full_response() {
        for value in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=3-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=0x1-2",
            "bytes 0-1",
            "bytes=+1-2",
        ] {
            assert_eq!(range(value), RangeAnswer::Full, "{value}");
        }
        assert_eq!(
            ask(&[("range", "bytes=0-1"), ("range", "bytes=2-3")], "0123"),
            RangeAnswer::Full,
            "a repeated field"
        );
        assert_eq!(ask(&[], "0123"), RangeAnswer::Full);
    }

    #[test]
    fn if_range_applies_the_range_only_to_the_same_response() {
        let with = |condition| ask(&[("range", "bytes=0-1"), ("if-range", condition)], "0123");
        let part = RangeAnswer::Part { first: 0, last: 1 };
        assert_eq!(with("\"v1\""), part);
        assert_eq!(with("Tue, 14 Nov 2023 22:13:20 GMT"), part);
        assert_eq!(with("\"v2\""), RangeAnswer::Full);
        assert_eq!(with("W/\"v1\""), RangeAnswer::Full);
        assert_eq!(with("Wed, 15 Nov 2023 22:13:20 GMT"), RangeAnswer::Full);
    }
}
