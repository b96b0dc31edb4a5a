//! The decisions of shared-cache mode (RFC 9111), as pure functions that return what to do and why:
//! what a stored response may be used for, how long a response is kept, and when a stale one may
//! answer for a failed origin. `flow` and `origin` only sequence them; storability itself is
//! judged in `storable` (and sealed by [`Storable`](crate::storable::Storable)).

use super::cache_status::Forward;
use super::freshness::{age_is_invalid, initial_age, lifetime, Exchange};
use super::storable::has_validator;
use super::SharedOptions;
use crate::engine::Lifetime;
use crate::entry::millis;
use crate::policy::CacheControl;
use http::header::{HeaderMap, HeaderValue, DATE};
use http::StatusCode;
use std::time::Duration;

/// The longest a response is kept fresh, and kept stale after that: a year each (a cache may drop
/// entries early, and no backend keeps them longer).
const MAX_KEPT: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a stored response may be used for, given the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Use {
    Fresh,
    /// Stale, and the request accepts that (`max-stale`).
    Stale,
    /// Stale within `stale-while-revalidate`: served, and validated in the background.
    WhileRevalidating,
    /// Only after validation with the origin, for the reason given.
    Validate(Forward),
}

/// §4: what a stored response of `age` and `lifetime` may be used for, by its directives and the
/// request's.
pub(crate) fn reuse(
    request: &CacheControl,
    response: &CacheControl,
    age: Duration,
    lifetime: Duration,
) -> Use {
    if response.no_cache_whole() {
        return Use::Validate(Forward::Stale);
    }
    if request.no_cache || request.max_age.is_some_and(|max_age| age > max_age) {
        return Use::Validate(Forward::Request);
    }
    if age < lifetime {
        let left = lifetime - age;
        if request.min_fresh.is_some_and(|min_fresh| left < min_fresh) {
            return Use::Validate(Forward::Request);
        }
        return Use::Fresh;
    }
    let staleness = age - lifetime;
    if !forbids_stale(response) {
        if request
            .max_stale
            .is_some_and(|max_stale| staleness <= max_stale)
        {
            return Use::Stale;
        }
        if response
            .stale_while_revalidate
            .is_some_and(|window| staleness < window)
        {
            return Use::WhileRevalidating;
        }
    }
    Use::Validate(Forward::Stale)
}

/// §4.2.4, §5.2.2.2, §5.2.2.8: directives that forbid serving the response stale.
pub(crate) fn forbids_stale(cc: &CacheControl) -> bool {
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache_whole()
}

/// RFC 5861 §4: whether a response stale by `staleness` may answer in place of a failed origin.
pub(crate) fn stale_on_error(
    response: &CacheControl,
    request: &CacheControl,
    staleness: Duration,
) -> bool {
    let Some(window) = response.stale_if_error.max(request.stale_if_error) else {
        return false;
    };
    !forbids_stale(response) && staleness <= window
}

/// How long a response that arrived in `exchange` is kept: fresh for its lifetime (none when the
/// `Age` it arrived with is invalid, §5.1), then stale for as long as it may still serve. `arrived`
/// are the fields of the message that came (a 304's, when a stored response was validated);
/// `headers` and `status` those of the response as stored.
pub(crate) fn kept_for(
    cc: &CacheControl,
    headers: &HeaderMap,
    status: StatusCode,
    arrived: &HeaderMap,
    exchange: Exchange,
    options: &SharedOptions,
) -> Lifetime {
    let fresh_for = if age_is_invalid(arrived) {
        Duration::ZERO
    } else {
        lifetime(
            cc,
            headers,
            status,
            exchange.response_ms,
            options.max_heuristic,
        )
        .unwrap_or_default()
    };
    let mut grace = options.keep_stale;
    if !forbids_stale(cc) {
        grace = grace
            .max(cc.stale_while_revalidate.unwrap_or_default())
            .max(cc.stale_if_error.unwrap_or_default());
    }
    let age = initial_age(arrived, exchange);
    Lifetime {
        born_ms: exchange.response_ms.saturating_sub(millis(age)),
        ttl: fresh_for.min(MAX_KEPT),
        grace: grace.min(MAX_KEPT),
    }
}

/// A storable response is still worth keeping only if it can be used: it is fresh for a while,
/// can be validated, or may be served stale.
pub(crate) fn worth_keeping(
    cc: &CacheControl,
    headers: &HeaderMap,
    kept: &Lifetime,
) -> Result<(), &'static str> {
    let usable = !kept.ttl.is_zero()
        || has_validator(headers)
        || cc.stale_while_revalidate.is_some()
        || cc.stale_if_error.is_some();
    if usable {
        Ok(())
    } else {
        Err("no-freshness-or-validator")
    }
}

/// RFC 9110 §6.6.1: a cache stores a `Date` with a response that arrived without one.
pub(crate) fn add_date_if_missing(headers: &mut HeaderMap, response_ms: u64) {
    if !headers.contains_key(DATE) {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(response_ms);
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(time)) {
            headers.insert(DATE, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(text: &str) -> CacheControl {
        CacheControl::parse(text)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn options() -> SharedOptions {
        SharedOptions {
            name: "test".to_owned(),
            store_set_cookie: false,
            keep_stale: S(3600),
            max_heuristic: S(86_400),
            targeted: Vec::new(),
            surrogate_capability: None,
        }
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const AT: Exchange = Exchange {
        request_ms: 1_700_000_000_000,
        response_ms: 1_700_000_000_000,
    };

    fn kept(fields: &[(&'static str, &'static str)]) -> Lifetime {
        let h = headers(fields);
        let cc = CacheControl::from_field_lines(&h);
        kept_for(&cc, &h, StatusCode::OK, &h, AT, &options())
    }

    #[test]
    fn fresh_responses_are_used_unless_the_request_asks_otherwise() {
        let any = cc("");
        assert_eq!(reuse(&any, &cc("max-age=60"), S(10), S(60)), Use::Fresh);
        assert_eq!(
            reuse(&cc("max-age=5"), &cc("max-age=60"), S(10), S(60)),
            Use::Validate(Forward::Request)
        );
        assert_eq!(
            reuse(&cc("min-fresh=55"), &cc("max-age=60"), S(10), S(60)),
            Use::Validate(Forward::Request)
        );
        assert_eq!(
            reuse(&cc("no-cache"), &cc("max-age=60"), S(0), S(60)),
            Use::Validate(Forward::Request)
        );
        assert_eq!(
            reuse(&any, &cc("max-age=60, no-cache"), S(0), S(60)),
            Use::Validate(Forward::Stale)
        );
    }

    #[test]
    fn stale_responses_are_served_only_where_allowed() {
        let swr = cc("max-age=1, stale-while-revalidate=30");
        assert_eq!(reuse(&cc(""), &swr, S(10), S(1)), Use::WhileRevalidating);
        assert_eq!(
            reuse(&cc(""), &swr, S(40), S(1)),
            Use::Validate(Forward::Stale)
        );
        assert_eq!(
            reuse(&cc("max-stale=20"), &cc("max-age=1"), S(10), S(1)),
            Use::Stale
        );
        for forbidding in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "s-maxage=1",
        ] {
            assert_eq!(
                reuse(&cc("max-stale"), &cc(forbidding), S(10), S(1)),
                Use::Validate(Forward::Stale),
                "{forbidding}"
            );
        }
    }

    #[test]
    fn stale_answers_for_a_failed_origin_only_within_the_window_and_when_allowed() {
        let sie = cc("max-age=1, stale-if-error=60");
        assert!(stale_on_error(&sie, &cc(""), S(30)));
        assert!(!stale_on_error(&sie, &cc(""), S(61)));
        assert!(stale_on_error(
            &cc("max-age=1"),
            &cc("stale-if-error=60"),
            S(30)
        ));
        assert!(!stale_on_error(&cc("max-age=1"), &cc(""), S(0)));
        let forbidden = cc("max-age=1, must-revalidate, stale-if-error=60");
        assert!(!stale_on_error(&forbidden, &cc(""), S(1)));
    }

    #[test]
    fn a_response_is_kept_fresh_then_stale_for_the_longest_window_allowed() {
        let plain = kept(&[("cache-control", "max-age=60")]);
        assert_eq!((plain.ttl, plain.grace), (S(60), S(3600)));
        let long_swr = kept(&[("cache-control", "max-age=60, stale-while-revalidate=7200")]);
        assert_eq!(long_swr.grace, S(7200));
        // A response that may not be served stale gets only the revalidation grace.
        let strict = kept(&[(
            "cache-control",
            "max-age=60, must-revalidate, stale-if-error=7200",
        )]);
        assert_eq!(strict.grace, S(3600));
        let forever = kept(&[("cache-control", "max-age=2147483648")]);
        assert_eq!(forever.ttl, MAX_KEPT);
    }

    #[test]
    fn age_counts_from_when_the_response_was_born_and_an_invalid_age_means_stale() {
        let aged = kept(&[("cache-control", "max-age=60"), ("age", "10")]);
        assert_eq!(aged.born_ms, AT.response_ms - 10_000);
        let invalid = kept(&[("cache-control", "max-age=60"), ("age", "-1")]);
        assert_eq!(invalid.ttl, Duration::ZERO);
    }

    #[test]
    fn only_responses_that_can_be_used_are_worth_keeping() {
        let check = |fields: &[(&'static str, &'static str)]| {
            let h = headers(fields);
            let cc = CacheControl::from_field_lines(&h);
            worth_keeping(
                &cc,
                &h,
                &kept_for(&cc, &h, StatusCode::OK, &h, AT, &options()),
            )
        };
        assert!(check(&[("cache-control", "max-age=60")]).is_ok());
        assert!(check(&[("cache-control", "max-age=0"), ("etag", "\"a\"")]).is_ok());
        assert!(check(&[("cache-control", "max-age=0, stale-if-error=60")]).is_ok());
        assert_eq!(
            check(&[("cache-control", "max-age=0")]),
            Err("no-freshness-or-validator")
        );
    }
}
