//! Targeted cache-control fields (RFC 9213): which directives this cache follows.
//!
//! A targeted field replaces `Cache-Control` only when it is valid and holds a directive that
//! applies to this cache (§2.1); otherwise `Cache-Control` rules. Anything else would let a field
//! meant for another cache, or one that does not parse, relax an origin's `no-store`.
//!
//! - `CDN-Cache-Control` and any other configured field are Structured Field Dictionaries
//!   (RFC 8941): a value that does not parse as one is ignored whole.
//! - `Surrogate-Control` (Edge Architecture Specification 1.0) is a list of `directive[=value]`,
//!   each optionally targeted with `;device`; only untargeted directives, or those naming this
//!   cache, apply.

use crate::policy::CacheControl;
use http::header::{HeaderMap, HeaderName};

/// Directives a targeted field must hold at least one of to take over from `Cache-Control`.
const KNOWN: [&str; 11] = [
    "max-age",
    "s-maxage",
    "no-store",
    "no-cache",
    "private",
    "public",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "stale-while-revalidate",
    "stale-if-error",
];

/// The response's caching directives for this cache: the first targeted field in `targeted` that is
/// valid and applies, otherwise `Cache-Control`. `device` is the name this cache answers to in
/// `Surrogate-Control` targeting.
pub(crate) fn effective_cache_control(
    headers: &HeaderMap,
    targeted: &[HeaderName],
    device: &str,
) -> CacheControl {
    for field in targeted.iter().filter(|f| headers.contains_key(*f)) {
        let Some(text) = joined(headers, field) else {
            continue;
        };
        let applicable = if field.as_str() == "surrogate-control" {
            surrogate_directives(&text, device)
        } else {
            dictionary_directives(&text)
        };
        if let Some(directives) = applicable {
            return CacheControl::parse(&directives);
        }
    }
    CacheControl::from_field_lines(headers)
}

/// Every line of `field`, joined as one list; `None` if a line is not visible ASCII.
fn joined(headers: &HeaderMap, field: &HeaderName) -> Option<String> {
    let lines: Option<Vec<&str>> = headers
        .get_all(field)
        .iter()
        .map(|v| v.to_str().ok())
        .collect();
    Some(lines?.join(", "))
}

/// A structured Dictionary with at least one directive we act on, as directive text.
fn dictionary_directives(text: &str) -> Option<String> {
    let dictionary: sfv::Dictionary = sfv::Parser::new(text).parse().ok()?;
    dictionary
        .keys()
        .any(|key| KNOWN.contains(&key.as_str()))
        .then(|| text.to_owned())
}

/// The `Surrogate-Control` directives that apply to `device`; `None` when the field is malformed or
/// none apply.
fn surrogate_directives(text: &str, device: &str) -> Option<String> {
    let mut kept = Vec::new();
    for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (directive, target) = match member.split_once(';') {
            Some((directive, target)) => (directive.trim(), Some(target.trim())),
            None => (member, None),
        };
        let name = directive
            .split_once('=')
            .map_or(directive, |(n, _)| n)
            .trim();
        if !is_token(name) || target.is_some_and(|t| !is_token(t)) {
            return None;
        }
        if target.is_none_or(|t| t.eq_ignore_ascii_case(device)) {
            kept.push((name, directive));
        }
    }
    kept.iter()
        .any(|(name, _)| KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name)))
        .then(|| {
            kept.iter()
                .map(|(_, directive)| *directive)
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn effective(fields: &[(&'static str, &'static str)]) -> CacheControl {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, HeaderValue::from_static(value));
        }
        let targeted = [
            HeaderName::from_static("cdn-cache-control"),
            HeaderName::from_static("surrogate-control"),
        ];
        effective_cache_control(&headers, &targeted, "cache-middleware")
    }

    #[test]
    fn a_valid_targeted_field_replaces_cache_control() {
        let cc = effective(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=600"),
        ]);
        assert!(!cc.no_store);
        assert_eq!(cc.max_age, Some(Duration::from_secs(600)));
    }

    #[test]
    fn an_invalid_cdn_cache_control_leaves_cache_control_in_charge() {
        for invalid in [
            "max-age=10000, &&&&&",
            "Max-Age=60",
            "max-age=\"60",
            "max-age=1.5.5",
        ] {
            let cc = effective(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", invalid),
            ]);
            assert!(cc.no_store, "{invalid}");
        }
    }

    #[test]
    fn a_targeted_field_without_a_directive_for_us_is_ignored() {
        let cc = effective(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "foo=1, bar"),
        ]);
        assert!(cc.no_store);
    }

    #[test]
    fn surrogate_directives_for_another_device_do_not_apply() {
        let cc = effective(&[
            ("cache-control", "no-store"),
            ("surrogate-control", "max-age=10000;other-device"),
        ]);
        assert!(cc.no_store);
        let ours = effective(&[
            ("cache-control", "no-store"),
            (
                "surrogate-control",
                "max-age=60;cache-middleware, no-store;other",
            ),
        ]);
        assert!(!ours.no_store);
        assert_eq!(ours.max_age, Some(Duration::from_secs(60)));
        let untargeted = effective(&[
            ("cache-control", "no-store"),
            ("surrogate-control", "content=\"ESI/1.0\", max-age=30"),
        ]);
        assert_eq!(untargeted.max_age, Some(Duration::from_secs(30)));
    }

    #[test]
    fn a_malformed_surrogate_control_is_ignored() {
        let cc = effective(&[
            ("cache-control", "no-store"),
            ("surrogate-control", "max-age=10000, [x] y"),
        ]);
        assert!(cc.no_store);
    }
}
