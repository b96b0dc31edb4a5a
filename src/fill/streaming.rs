//! Which storable responses stream to their client while they are stored, and the length a
//! response announces.

use http::header::{CONTENT_LENGTH, RANGE};
use http::{HeaderMap, Method, StatusCode};
use http_body::SizeHint;

/// How a storable response's body goes to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// As it arrives, through a fill: of this announced length, or (`None`) of a length not
    /// announced.
    Fill(Option<u32>),
    /// Read first, up to the storage limit.
    ReadFirst,
}

/// What decides [`streaming`]: the smallest announced length worth a fill, the storage limit,
/// and the fill budget (0: nothing streams while stored).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    pub fill_from: u32,
    pub max_body: usize,
    pub fill_max_bytes: u64,
}

/// How a storable response's body goes to its client: only the whole response to a GET (no
/// range asked, not a part) streams while it is stored; through a fill when it announces a
/// length from `fill_from` up to the storage limit, or when it announces none.
pub(crate) fn streaming(
    limits: StreamLimits,
    (method, request_headers): (&Method, &HeaderMap),
    (status, headers): (StatusCode, &HeaderMap),
    hint: &SizeHint,
) -> Streaming {
    let whole_get = method == Method::GET
        && !request_headers.contains_key(RANGE)
        && status != StatusCode::PARTIAL_CONTENT;
    if !whole_get || limits.fill_max_bytes == 0 {
        return Streaming::ReadFirst;
    }
    let Some(announced) = announced_length(headers, hint) else {
        return Streaming::Fill(None);
    };
    match u32::try_from(announced) {
        Ok(length) if length >= limits.fill_from.max(1) && length as usize <= limits.max_body => {
            Streaming::Fill(Some(length))
        }
        _ => Streaming::ReadFirst,
    }
}

/// The length a response announces for its body: its one `Content-Length` (digits only), unless
/// the body says otherwise, or else the body's exact length. `None` when unknown or in conflict.
fn announced_length(headers: &HeaderMap, hint: &SizeHint) -> Option<u64> {
    let mut fields = headers.get_all(CONTENT_LENGTH).iter();
    let Some(field) = fields.next() else {
        return hint.exact();
    };
    let digits = field.as_bytes();
    if fields.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let within = length >= hint.lower() && hint.upper().is_none_or(|upper| length <= upper);
    within.then_some(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_length_is_one_plain_content_length_that_the_body_agrees_with() {
        let headers = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONTENT_LENGTH, http::HeaderValue::from_static(value));
            }
            headers
        };
        let unknown = SizeHint::new();
        let exact = |n| SizeHint::with_exact(n);
        assert_eq!(announced_length(&headers(&["300"]), &unknown), Some(300));
        assert_eq!(announced_length(&headers(&[]), &exact(7)), Some(7));
        assert_eq!(announced_length(&headers(&[]), &unknown), None);
        assert_eq!(announced_length(&headers(&["300"]), &exact(300)), Some(300));
        for (values, hint) in [
            (&["300"][..], exact(299)),
            (&["300", "300"][..], unknown),
            (&["+300"][..], unknown),
            (&["3 00"][..], unknown),
            (&[""][..], unknown),
            (&["99999999999999999999999"][..], unknown),
        ] {
            assert_eq!(
                announced_length(&headers(values), &hint),
                None,
                "{values:?}"
            );
        }
    }
}
