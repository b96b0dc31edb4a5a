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
use http::header::{HeaderMap, HeaderName, HeaderValue};

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

/// The request field by which caches announce themselves to the origin (Edge Architecture 1.0).
pub(crate) const SURROGATE_CAPABILITY: HeaderName = HeaderName::from_static("surrogate-capability");

/// The Edge Architecture's `Surrogate-Capability` request field, announcing `device` as the
/// name `Surrogate-Control` can target; `None` when `Surrogate-Control` is not honoured or the
/// name cannot be sent. It replaces the client's own: the field is not part of the key, and no
/// client may choose what the origin believes about the caches in front of it (a claimed `ESI`
/// capability would have the origin send markup that every later client gets unprocessed).
pub(crate) fn surrogate_capability(targeted: &[HeaderName], device: &str) -> Option<HeaderValue> {
    let honoured = targeted.iter().any(|f| f.as_str() == "surrogate-control");
    let token = !device.is_empty()
        && device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !(honoured && token) {
        return None;
    }
    HeaderValue::from_str(&format!("{device}=\"Surrogate/1.0\"")).ok()
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

/// Directives whose value is a number of seconds; every other one in [`KNOWN`] is a flag.
const DELTA_SECONDS: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// The directives of a structured Dictionary, as directive text, each kept only with the type it
/// must have (RFC 9213 §2.1): an Integer of at least 0 for seconds, `?1` for a flag, a String of
/// field names for `no-cache` and `private`. `None` when the field does not parse, or when no
/// directive we act on remains (`max-age="10000"` is not one).
fn dictionary_directives(text: &str) -> Option<String> {
    use sfv::{BareItem, ListEntry};
    let dictionary: sfv::Dictionary = sfv::Parser::new(text).parse().ok()?;
    let mut kept = Vec::new();
    for (key, entry) in &dictionary {
        let (name, ListEntry::Item(item)) = (key.as_str(), entry) else {
            continue;
        };
        let directive = match &item.bare_item {
            BareItem::Integer(seconds) if DELTA_SECONDS.contains(&name) => {
                let seconds = i64::from(*seconds);
                (seconds >= 0).then(|| format!("{name}={seconds}"))
            }
            BareItem::String(fields) if name == "no-cache" || name == "private" => {
                let fields = fields.as_str();
                let plain = !fields.contains(['"', '\\']);
                plain.then(|| format!("{name}=\"{fields}\""))
            }
            BareItem::Boolean(true) if KNOWN.contains(&name) && !DELTA_SECONDS.contains(&name) => {
                Some(name.to_owned())
            }
            _ => None,
        };
        kept.extend(directive);
    }
    (!kept.is_empty()).then(|| kept.join(", "))
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
    fn the_cache_announces_its_name_only_when_it_honours_surrogate_control() {
        let fields = [HeaderName::from_static("surrogate-control")];
        let announced = surrogate_capability(&fields, "edge-1").unwrap();
        assert_eq!(announced, "edge-1=\"Surrogate/1.0\"");
        assert!(surrogate_capability(&[], "edge-1").is_none());
        assert!(surrogate_capability(&fields, "two words").is_none());
        assert!(surrogate_capability(&fields, "").is_none());
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
            "max-age=\"10000\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age=?0",
        ] {
            let cc = effective(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", invalid),
            ]);
            assert!(cc.no_store, "{invalid}");
        }
    }

    #[test]
    fn directives_of_the_right_type_are_kept_and_the_rest_dropped() {
        let cc = effective(&[
            ("cache-control", "no-store"),
            (
                "cdn-cache-control",
                "max-age=60, public, private=?0, no-cache=\"set-cookie\", s-maxage=\"9\"",
            ),
        ]);
        assert!(!cc.no_store && cc.public && !cc.private_whole());
        assert_eq!(cc.max_age, Some(Duration::from_secs(60)));
        assert_eq!(cc.s_maxage, None);
        assert_eq!(cc.no_cache_fields, ["set-cookie"]);
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
