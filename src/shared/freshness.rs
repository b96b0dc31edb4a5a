//! Freshness and age of a stored response (RFC 9111 §4.2), as a shared cache computes them.

use crate::entry::millis;
use crate::policy::{http_date, parse_delta_seconds, CacheControl};
use http::header::{HeaderMap, AGE, DATE, EXPIRES, LAST_MODIFIED};
use http::StatusCode;
use std::time::{Duration, UNIX_EPOCH};

/// Heuristic freshness (§4.2.2) is a fraction of the time since `Last-Modified`, never more than this.
pub(crate) const DEFAULT_MAX_HEURISTIC: Duration = Duration::from_secs(24 * 3600);
const HEURISTIC_FRACTION: u32 = 10;

/// When a response was asked for and when it arrived, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub request_ms: u64,
    pub response_ms: u64,
}

/// §4.2.3: the age the response already had when it arrived (`corrected_initial_age`).
pub(crate) fn initial_age(headers: &HeaderMap, exchange: Exchange) -> Duration {
    let apparent_ms =
        date_ms(headers, DATE).map_or(0, |date| exchange.response_ms.saturating_sub(date));
    let delay_ms = exchange.response_ms.saturating_sub(exchange.request_ms);
    let age = match age_field(headers) {
        AgeField::Valid(age) => millis(age),
        AgeField::Absent | AgeField::Invalid => 0,
    };
    Duration::from_millis(apparent_ms.max(age.saturating_add(delay_ms)))
}

/// §5.1: a response whose `Age` cannot be read is to be considered stale.
pub(crate) fn age_is_invalid(headers: &HeaderMap) -> bool {
    matches!(age_field(headers), AgeField::Invalid)
}

/// §4.2.1: how long the response is fresh, from `s-maxage`, `max-age`, `Expires` or (where
/// allowed) heuristically. `None`: no freshness at all.
pub(crate) fn lifetime(
    cc: &CacheControl,
    headers: &HeaderMap,
    status: StatusCode,
    response_ms: u64,
    max_heuristic: Duration,
) -> Option<Duration> {
    if let Some(lifetime) = cc.s_maxage.or(cc.max_age) {
        return Some(lifetime);
    }
    if headers.contains_key(EXPIRES) {
        let date = date_ms(headers, DATE).unwrap_or(response_ms);
        // An invalid Expires (or several) means "already expired" (§5.3).
        let expires = single(headers, EXPIRES).and_then(|_| date_ms(headers, EXPIRES));
        return Some(Duration::from_millis(
            expires.map_or(0, |e| e.saturating_sub(date)),
        ));
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return None;
    }
    let last_modified = date_ms(headers, LAST_MODIFIED)?;
    let date = date_ms(headers, DATE).unwrap_or(response_ms);
    let since = Duration::from_millis(date.saturating_sub(last_modified));
    Some((since / HEURISTIC_FRACTION).min(max_heuristic))
}

/// Whether the response carries explicit freshness (§3): a heuristic is not.
pub(crate) fn has_explicit_freshness(cc: &CacheControl, headers: &HeaderMap) -> bool {
    cc.s_maxage.is_some() || cc.max_age.is_some() || headers.contains_key(EXPIRES)
}

/// RFC 9110 §15.1: status codes whose responses may be reused on a heuristic.
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

enum AgeField {
    Absent,
    Valid(Duration),
    Invalid,
}

/// `Age` (§5.1): the first member of the field is read, and must be a non-negative integer.
fn age_field(headers: &HeaderMap) -> AgeField {
    let Some(value) = headers.get(AGE) else {
        return AgeField::Absent;
    };
    let first = value
        .to_str()
        .ok()
        .and_then(|text| text.split(',').next())
        .unwrap_or_default();
    match parse_delta_seconds(first) {
        Some(age) => AgeField::Valid(age),
        None => AgeField::Invalid,
    }
}

fn single(headers: &HeaderMap, name: http::HeaderName) -> Option<&http::HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

fn date_ms(headers: &HeaderMap, name: http::HeaderName) -> Option<u64> {
    let time = http_date(single(headers, name))?;
    Some(millis(time.duration_since(UNIX_EPOCH).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const NOW_MS: u64 = 1_700_000_000_000; // Tue, 14 Nov 2023 22:13:20 GMT
    const NOW: &str = "Tue, 14 Nov 2023 22:13:20 GMT";
    const DAY: Duration = Duration::from_secs(86_400);

    fn life(fields: &[(&'static str, &str)], status: u16) -> Option<Duration> {
        let h = headers(fields);
        let cc = CacheControl::from_field_lines(&h);
        lifetime(&cc, &h, StatusCode::from_u16(status).unwrap(), NOW_MS, DAY)
    }

    #[test]
    fn s_maxage_wins_over_max_age_which_wins_over_expires() {
        let expires = ("expires", "Tue, 14 Nov 2023 23:13:20 GMT");
        assert_eq!(
            life(&[("cache-control", "max-age=60, s-maxage=5"), expires], 200),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            life(&[("cache-control", "max-age=60"), expires], 200),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            life(&[("date", NOW), expires], 200),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn invalid_or_repeated_expires_means_already_expired() {
        assert_eq!(life(&[("expires", "0")], 200), Some(Duration::ZERO));
        assert_eq!(
            life(
                &[
                    ("expires", "Tue, 14 Nov 2023 23:13:20 GMT"),
                    ("expires", "Tue, 14 Nov 2023 23:13:20 GMT")
                ],
                200
            ),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn heuristics_only_for_listed_statuses_or_public() {
        let lm = ("last-modified", "Tue, 14 Nov 2023 12:13:20 GMT"); // ten hours before
        assert_eq!(
            life(&[("date", NOW), lm], 200),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(life(&[("date", NOW), lm], 302), None);
        assert_eq!(
            life(&[("date", NOW), lm, ("cache-control", "public")], 302),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(life(&[("date", NOW)], 200), None, "no Last-Modified");
    }

    #[test]
    fn initial_age_takes_the_larger_of_apparent_and_corrected_age() {
        let exchange = Exchange {
            request_ms: NOW_MS - 2_000,
            response_ms: NOW_MS,
        };
        // The Age field plus the round trip.
        let h = headers(&[("date", NOW), ("age", "30")]);
        assert_eq!(initial_age(&h, exchange), Duration::from_secs(32));
        // A Date far in the past.
        let h = headers(&[("date", "Tue, 14 Nov 2023 22:12:20 GMT")]);
        assert_eq!(initial_age(&h, exchange), Duration::from_secs(60));
        // The first member of a list counts.
        let h = headers(&[("date", NOW), ("age", "30, old")]);
        assert_eq!(initial_age(&h, exchange), Duration::from_secs(32));
        assert!(!age_is_invalid(&h));
    }

    #[test]
    fn an_unreadable_age_marks_the_response_stale() {
        for bad in ["abc", "-7200", "7200.0", "old, 0", "7200;foo=bar", ""] {
            assert!(age_is_invalid(&headers(&[("age", bad)])), "{bad:?}");
        }
        assert!(!age_is_invalid(&headers(&[])));
        assert!(!age_is_invalid(&headers(&[("age", "0,7200")])));
    }

    #[test]
    fn a_huge_age_is_capped_not_wrapped() {
        let h = headers(&[("age", "18446744073709552")]);
        let exchange = Exchange {
            request_ms: NOW_MS,
            response_ms: NOW_MS,
        };
        assert_eq!(initial_age(&h, exchange), Duration::from_secs(1 << 31));
        let h = headers(&[("age", "99999999999999999999999999")]);
        assert_eq!(initial_age(&h, exchange), Duration::from_secs(1 << 31));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn header_text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9]{0,30}",
                "[ -~]{0,40}",
                Just("Tue, 14 Nov 2023 22:13:20 GMT".to_owned()),
                Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
                Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
            ]
        }

        proptest! {
            #[test]
            fn freshness_arithmetic_never_panics_or_wraps(
                age in header_text(),
                date in header_text(),
                expires in header_text(),
                last_modified in header_text(),
                cache_control in "[ -~]{0,60}|max-age=[0-9]{1,30}|s-maxage=[0-9]{1,30}",
                request_ms in any::<u64>(),
                delay_ms in any::<u64>(),
                status in 100u16..600,
            ) {
                let mut h = HeaderMap::new();
                for (name, value) in [
                    ("age", &age),
                    ("date", &date),
                    ("expires", &expires),
                    ("last-modified", &last_modified),
                    ("cache-control", &cache_control),
                ] {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        h.insert(name, value);
                    }
                }
                let exchange = Exchange {
                    request_ms,
                    response_ms: request_ms.saturating_add(delay_ms),
                };
                let initial = initial_age(&h, exchange);
                // The age is never less than the Age field said (capped at 2^31 s): no wrap
                // turns an old response into a young one.
                if let Ok(n) = age.trim().parse::<u64>() {
                    prop_assert!(initial >= Duration::from_secs(n.min(1 << 31)));
                }
                let cc = CacheControl::from_field_lines(&h);
                let status = StatusCode::from_u16(status).unwrap();
                if let Some(fresh_for) =
                    lifetime(&cc, &h, status, exchange.response_ms, DAY)
                {
                    prop_assert!(fresh_for <= Duration::from_millis(u64::MAX));
                }
                let _ = age_is_invalid(&h);
            }
        }
    }
}
