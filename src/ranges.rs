//! `Range` requests answered from a stored complete response (RFC 9110 §14): one byte range gets
//! `206 Partial Content` with that slice of the stored body (no copy), a range past the end gets
//! `416 Range Not Satisfiable`. Several ranges in one request, a unit other than `bytes`, a
//! malformed or repeated field, and an `If-Range` that does not match the stored validator get
//! the full response, as §14.2 allows. A stored `206` (RFC 9111 §3.3) answers the ranges that
//! lie within the part it holds; any other goes to the origin.

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
    let Some(range) = one_range(request_headers) else {
        return RangeAnswer::Full;
    };
    if stored.status != StatusCode::OK || !if_range_holds(request_headers, stored) {
        return RangeAnswer::Full;
    }
    // Positions within the body fit in `usize`.
    match byte_range(range, stored.body.len() as u64) {
        Asked::Bytes(first, last) => RangeAnswer::Part {
            first: first as usize,
            last: last as usize,
        },
        Asked::Unsatisfiable => RangeAnswer::Unsatisfiable,
        Asked::Other => RangeAnswer::Full,
    }
}

/// The part of a representation a stored `206` holds: bytes `first..=last` of `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub first: u64,
    pub last: u64,
    pub length: u64,
}

/// What a `206` response holds, from its one `Content-Range: bytes first-last/length` (a
/// length it does not know, or several ranges, and nothing can be reused from it).
pub(crate) fn held_range(headers: &HeaderMap) -> Option<Held> {
    let mut fields = headers.get_all(header::CONTENT_RANGE).iter();
    let (Some(value), None) = (fields.next(), fields.next()) else {
        return None;
    };
    let (unit, rest) = value.to_str().ok()?.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (span, length) = rest.trim().split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let held = Held {
        first: number(first)?,
        last: number(last)?,
        length: number(length)?,
    };
    (held.first <= held.last && held.last < held.length).then_some(held)
}

/// The bytes `first..=last` (of the whole representation) that `request_headers` ask of a stored
/// `206`, when it holds all of them, and what it holds; `None` when only the origin can answer.
pub(crate) fn part_of_partial(
    request_headers: &HeaderMap,
    stored: &StoredResponse,
) -> Option<((u64, u64), Held)> {
    let range = one_range(request_headers)?;
    let held = held_range(&stored.headers)?;
    if stored.status != StatusCode::PARTIAL_CONTENT
        || stored.body.len() as u64 != held.last - held.first + 1
        || !if_range_holds(request_headers, stored)
    {
        return None;
    }
    match byte_range(range, held.length) {
        Asked::Bytes(first, last) if held.first <= first && last <= held.last => {
            Some(((first, last), held))
        }
        _ => None,
    }
}

/// The request's `Range` field, when it has exactly one.
fn one_range(request_headers: &HeaderMap) -> Option<&HeaderValue> {
    let mut fields = request_headers.get_all(header::RANGE).iter();
    match (fields.next(), fields.next()) {
        (Some(range), None) => Some(range),
        _ => None,
    }
}

/// What one `Range` field asks of a representation of `length` bytes.
enum Asked {
    /// Bytes `first..=last`, within the representation.
    Bytes(u64, u64),
    /// No byte of the range exists.
    Unsatisfiable,
    /// Not one readable byte range (several, another unit, malformed): ignored.
    Other,
}

fn byte_range(range: &HeaderValue, length: u64) -> Asked {
    let Some(spec) = range
        .to_str()
        .ok()
        .and_then(|value| value.trim().split_once('='))
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, set)| set.trim())
    else {
        return Asked::Other;
    };
    if spec.contains(',') {
        return Asked::Other; // several ranges: the whole response instead of multipart
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Asked::Other;
    };
    let (first, last) = (first.trim(), last.trim());
    match (
        number(first),
        number(last),
        first.is_empty(),
        last.is_empty(),
    ) {
        // `-n`: the last n bytes.
        (None, Some(suffix), true, false) => {
            if suffix == 0 || length == 0 {
                Asked::Unsatisfiable
            } else {
                Asked::Bytes(length.saturating_sub(suffix), length - 1)
            }
        }
        // `a-` and `a-b`.
        (Some(start), end, false, open) if open || end.is_some() => {
            if end.is_some_and(|end| end < start) {
                return Asked::Other; // invalid: ignored
            }
            if start < length {
                Asked::Bytes(start, end.map_or(length - 1, |end| end.min(length - 1)))
            } else {
                Asked::Unsatisfiable
            }
        }
        _ => Asked::Other,
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
            body: Bytes::from_static(body.as_bytes()).into(),
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

    fn part(content_range: &str, body: &'static str) -> StoredResponse {
        let mut stored = stored(body);
        stored.status = StatusCode::PARTIAL_CONTENT;
        stored.headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(content_range).unwrap(),
        );
        stored
    }

    #[test]
    fn a_part_says_what_it_holds_or_is_of_no_use() {
        let held = |value: &str| held_range(&part(value, "").headers);
        assert_eq!(
            held("bytes 4-9/10"),
            Some(Held {
                first: 4,
                last: 9,
                length: 10
            })
        );
        assert_eq!(held("Bytes  0-0/1").map(|h| h.last), Some(0));
        for unusable in [
            "bytes 0-4/*",
            "bytes */10",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "items 0-1/2",
            "bytes 0-1",
        ] {
            assert_eq!(held(unusable), None, "{unusable}");
        }
    }

    #[test]
    fn a_part_answers_only_the_ranges_within_it() {
        let ask = |range: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
            part_of_partial(&headers, &part("bytes 4-9/10", "456789")).map(|(asked, _)| asked)
        };
        assert_eq!(ask("bytes=-5"), Some((5, 9)));
        assert_eq!(ask("bytes=6-8"), Some((6, 8)));
        assert_eq!(ask("bytes=6-"), Some((6, 9)));
        assert_eq!(ask("bytes=4-100"), Some((4, 9)));
        assert_eq!(ask("bytes=0-5"), None, "bytes it does not hold");
        assert_eq!(ask("bytes=-7"), None);
        assert_eq!(ask("bytes=10-"), None, "past the end: the origin says 416");
        assert_eq!(ask("bytes=0-1,5-6"), None);
        let mut wrong_length = part("bytes 4-9/10", "4567");
        wrong_length.status = StatusCode::PARTIAL_CONTENT;
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=5-6"));
        assert_eq!(
            part_of_partial(&headers, &wrong_length),
            None,
            "a body that is not what it says"
        );
    }
}
