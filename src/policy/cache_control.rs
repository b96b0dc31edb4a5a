//! A typed `Cache-Control` parser (RFC 9111 §5.2).
//!
//! Directives are parsed once into fields; nothing downstream searches header text for substrings.
//! Malformed directives are skipped, never errors: a client or origin that sends garbage gets the
//! behaviour of a header without that directive.

use http::header::{HeaderMap, CACHE_CONTROL, PRAGMA};
use std::time::Duration;

/// The directives this crate acts on, from every `Cache-Control` field line of a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_cache: bool,
    pub no_store: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub only_if_cached: bool,
    pub must_understand: bool,
    pub max_age: Option<Duration>,
    pub s_maxage: Option<Duration>,
    pub max_stale: Option<Duration>,
    pub min_fresh: Option<Duration>,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    /// Field names of a qualified `no-cache="Set-Cookie"` (lower-case). Empty when every
    /// `no-cache` is unqualified; `no_cache` is set either way, the strict reading.
    pub no_cache_fields: Vec<String>,
    /// Field names of a qualified `private="Set-Cookie"` (lower-case), as for `no_cache_fields`.
    pub private_fields: Vec<String>,
    // An unqualified directive seen: it covers the whole response, whatever names others list.
    no_cache_whole: bool,
    private_whole: bool,
}

impl CacheControl {
    /// Parses every `Cache-Control` value in `headers`. A request's `Pragma: no-cache` counts as
    /// `no-cache` when no `Cache-Control` is present (RFC 9111 §5.4).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut cc = Self::from_field_lines(headers);
        let readable_cache_control = headers
            .get_all(CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().is_ok());
        if !readable_cache_control {
            cc.no_cache = headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"));
        }
        cc
    }

    /// Parses every `Cache-Control` field line, without the request-only `Pragma` fallback (responses
    /// are judged on `Cache-Control` alone).
    pub fn from_field_lines(headers: &HeaderMap) -> Self {
        let mut cc = CacheControl::default();
        for text in headers
            .get_all(CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            cc.apply_all(text);
        }
        cc
    }

    /// Parses one header value, e.g. `"max-age=60, no-cache"`.
    pub fn parse(text: &str) -> Self {
        let mut cc = CacheControl::default();
        cc.apply_all(text);
        cc
    }

    fn apply_all(&mut self, text: &str) {
        for (name, value) in directives(text) {
            self.apply(name, value);
        }
    }

    fn apply(&mut self, name: &str, value: Option<&str>) {
        let seconds = || value.and_then(parse_delta_seconds);
        match name.to_ascii_lowercase().as_str() {
            // `no-cache="Set-Cookie"` (field names) sets `no_cache` too: the strict reading.
            "no-cache" => {
                self.no_cache = true;
                qualify(&mut self.no_cache_fields, &mut self.no_cache_whole, value);
            }
            "no-store" => self.no_store = true,
            "private" => {
                self.private = true;
                qualify(&mut self.private_fields, &mut self.private_whole, value);
            }
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "only-if-cached" => self.only_if_cached = true,
            "must-understand" => self.must_understand = true,
            // A duplicated max-age is conflicting (RFC 9111 §4.2.1): the strictest value wins.
            "max-age" => self.max_age = lowest(self.max_age, seconds()),
            "s-maxage" => self.s_maxage = lowest(self.s_maxage, seconds()),
            // `max-stale` without a value means "any staleness".
            "max-stale" => self.max_stale = seconds().or(Some(Duration::MAX)),
            "min-fresh" => self.min_fresh = seconds().or(self.min_fresh),
            "stale-while-revalidate" => self.stale_while_revalidate = seconds(),
            "stale-if-error" => self.stale_if_error = seconds(),
            _ => {}
        }
    }
}

impl CacheControl {
    /// `no-cache` without field names: no stored response may be used without revalidation.
    pub fn no_cache_whole(&self) -> bool {
        self.no_cache && self.no_cache_fields.is_empty()
    }

    /// `private` without field names: the response is for one user only.
    pub fn private_whole(&self) -> bool {
        self.private && self.private_fields.is_empty()
    }
}

/// Records the field names of a qualified directive; an unqualified one clears them for good.
fn qualify(fields: &mut Vec<String>, whole: &mut bool, value: Option<&str>) {
    let names = value.map(|v| {
        v.split(',')
            .map(|name| name.trim().to_ascii_lowercase())
            .filter(|name| !name.is_empty())
            .collect::<Vec<_>>()
    });
    match names {
        Some(names) if !names.is_empty() && !*whole => fields.extend(names),
        _ => {
            *whole = true;
            fields.clear();
        }
    }
}

fn lowest(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; values too large saturate.
/// RFC 9111 §1.2.2: a delta-seconds value too large to represent counts as 2^31 seconds, so no
/// later calculation can overflow.
pub(crate) const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// A delta-seconds value (digits only), capped at [`DELTA_SECONDS_MAX`].
pub(crate) fn parse_delta_seconds(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(seconds.min(DELTA_SECONDS_MAX)))
}

/// Splits a header value into `(name, value)` pairs, honouring quoted strings so that a comma inside
/// quotes does not start a new directive. Empty names are skipped.
fn directives(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let end = directive_end(rest);
        let item = &rest[..end];
        rest = &rest[end..];
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
            None => (item.trim(), None),
        };
        if !name.is_empty() {
            return Some((name, value));
        }
    })
}

fn directive_end(text: &str) -> usize {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => return i,
            _ => {}
        }
    }
    text.len()
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn parses_flags_and_durations_case_insensitively() {
        let cc = CacheControl::parse("No-Cache, MAX-AGE=60, s-maxage=\"30\", private");
        assert!(cc.no_cache && cc.private && !cc.no_store);
        assert_eq!(cc.max_age, Some(Duration::from_secs(60)));
        assert_eq!(cc.s_maxage, Some(Duration::from_secs(30)));
    }

    #[test]
    fn malformed_directives_are_ignored_not_errors() {
        let cc = CacheControl::parse(",,, =5, no-store, max-stale=abc, min-fresh=-3, ===, \"");
        assert!(cc.no_store);
        assert_eq!(cc.max_stale, Some(Duration::MAX));
        assert_eq!(cc.min_fresh, None);
    }

    #[test]
    fn invalid_max_age_is_ignored_and_duplicates_keep_the_strictest_value() {
        assert_eq!(CacheControl::parse("max-age=abc").max_age, None);
        assert_eq!(CacheControl::parse("max-age").max_age, None);
        assert_eq!(
            CacheControl::parse("max-age=60, max-age=10").max_age,
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn commas_inside_quoted_values_do_not_split_directives() {
        let cc = CacheControl::parse("no-cache=\"set-cookie, x-foo\", max-age=5");
        assert!(cc.no_cache);
        assert_eq!(cc.max_age, Some(Duration::from_secs(5)));
    }

    #[test]
    fn huge_numbers_count_as_two_to_the_31_seconds() {
        // RFC 9111 §1.2.2: the greatest value is 2^31; nothing downstream can overflow.
        for text in [
            "max-age=99999999999999999999999",
            "max-age=18446744073709552",
        ] {
            let cc = CacheControl::parse(text);
            assert_eq!(cc.max_age, Some(Duration::from_secs(1 << 31)), "{text}");
        }
    }

    #[test]
    fn directives_from_several_field_lines_combine() {
        let cc = CacheControl::from_headers(&headers(&[
            ("cache-control", "max-age=0"),
            ("cache-control", "no-store"),
        ]));
        assert!(cc.no_store);
        assert_eq!(cc.max_age, Some(Duration::ZERO));
    }

    #[test]
    fn pragma_no_cache_counts_only_without_cache_control() {
        assert!(CacheControl::from_headers(&headers(&[("pragma", "no-cache")])).no_cache);
        let both = headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]);
        assert!(!CacheControl::from_headers(&both).no_cache);
    }

    #[test]
    fn non_ascii_header_values_are_skipped() {
        let mut map = HeaderMap::new();
        map.insert(
            CACHE_CONTROL,
            HeaderValue::from_bytes(b"no-store\xff").unwrap(),
        );
        assert_eq!(CacheControl::from_headers(&map), CacheControl::default());
    }
}
