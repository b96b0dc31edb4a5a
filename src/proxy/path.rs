//! The one normalised path that selects the rule, goes into the key and is sent upstream.
//!
//! A cache in front of an application that reads paths differently from the cache can be made to
//! store a private page under a public rule (cache deception: `/static/..%2faccount`). So the proxy
//! reads the path once, in one way, and forwards exactly what it read:
//!
//! - Percent-encoded unreserved characters (`%2E`, `%41`, `%7E`, ...) are decoded, and the hex of the
//!   other encodings is upper-cased (RFC 3986 §6.2.2.1, §6.2.2.2).
//! - Dot segments are removed (RFC 3986 §5.2.4), so `/static/%2e%2e/account` is `/account`.
//! - Paths that applications read in incompatible ways are refused with 400: an encoded `/` (`%2F`)
//!   or `\` (`%5C`), a literal `\`, an encoded NUL, a malformed `%` escape, and dot segments with
//!   parameters (`..;`, read as `..` by some servers).

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadPath {
    NotAbsolute,
    EncodedSeparator,
    Backslash,
    BadEscape,
    DotSegmentWithParameters,
}

impl BadPath {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BadPath::NotAbsolute => "path must start with /",
            BadPath::EncodedSeparator => "encoded / or \\ in path",
            BadPath::Backslash => "\\ in path",
            BadPath::BadEscape => "malformed percent-encoding in path",
            BadPath::DotSegmentWithParameters => "dot segment with parameters in path",
        }
    }
}

/// The normalised form of `path`; `Ok(None)` when it is already normal (the common case costs no
/// allocation).
pub(crate) fn normalize(path: &str) -> Result<Option<String>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    let plain = !path.contains('%') && !has_dot_segment(path);
    if plain {
        if path.contains('\\') {
            return Err(BadPath::Backslash);
        }
        check_segments(path)?;
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    if decoded.contains('\\') {
        return Err(BadPath::Backslash);
    }
    check_segments(&decoded)?;
    let normal = remove_dot_segments(&decoded);
    Ok((normal != path).then_some(normal))
}

fn has_dot_segment(path: &str) -> bool {
    path.split('/')
        .any(|segment| segment == "." || segment == "..")
}

fn check_segments(path: &str) -> Result<(), BadPath> {
    let ambiguous = path.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        segment.contains(';') && (name == "." || name == "..")
    });
    if ambiguous {
        return Err(BadPath::DotSegmentWithParameters);
    }
    Ok(())
}

/// Decodes the escapes of unreserved characters and upper-cases the others; refuses encoded
/// separators and malformed escapes.
fn decode_unreserved(path: &str) -> Result<String, BadPath> {
    let bytes = path.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(BadPath::BadEscape)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(BadPath::BadEscape);
        }
        let byte = (hex_value(hex[0]) << 4) | hex_value(hex[1]);
        match byte {
            b'/' | b'\\' => return Err(BadPath::EncodedSeparator),
            0 => return Err(BadPath::BadEscape),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(b),
            b => out.extend_from_slice(format!("%{b:02X}").as_bytes()),
        }
        i += 3;
    }
    // Only ASCII was decoded into a valid &str, so the result is still valid UTF-8.
    String::from_utf8(out).map_err(|_| BadPath::BadEscape)
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => (digit | 0x20) - b'a' + 10,
    }
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    kept.push("");
                }
            }
            ".." => {
                kept.pop();
                if i == last {
                    kept.push("");
                }
            }
            other => kept.push(other),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> Result<String, BadPath> {
        normalize(path).map(|n| n.unwrap_or_else(|| path.to_owned()))
    }

    #[test]
    fn plain_paths_are_left_alone() {
        for path in [
            "/",
            "/static/app.js",
            "/a/b/",
            "/items/1",
            "/a;b=c/d",
            "//double",
        ] {
            assert_eq!(normalize(path), Ok(None), "{path}");
        }
    }

    #[test]
    fn dot_segments_are_removed_in_every_spelling() {
        for path in [
            "/static/../account",
            "/static/%2e%2e/account",
            "/static/%2E%2E/account",
            "/static/.%2e/account",
            "/static/./../account",
            "/static/x/../../account",
            "/../../account",
        ] {
            assert_eq!(normal(path).as_deref(), Ok("/account"), "{path}");
        }
        assert_eq!(normal("/a/./b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(normal("/a/..").as_deref(), Ok("/"));
        assert_eq!(normal("/..").as_deref(), Ok("/"));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(normal("/%7Euser/%41").as_deref(), Ok("/~user/A"));
        assert_eq!(normal("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normal("/a%20b").as_deref(), Ok("/a%20b"));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for (path, why) in [
            ("/static/..%2faccount", BadPath::EncodedSeparator),
            ("/static/..%2Faccount", BadPath::EncodedSeparator),
            ("/static/..%5caccount", BadPath::EncodedSeparator),
            ("/static/..\\account", BadPath::Backslash),
            ("/static/%2e%2e%5caccount", BadPath::EncodedSeparator),
            ("/static/..;/account", BadPath::DotSegmentWithParameters),
            ("/static/.;x/account", BadPath::DotSegmentWithParameters),
            ("/static/%2e%2e;/account", BadPath::DotSegmentWithParameters),
            ("/a%zz", BadPath::BadEscape),
            ("/a%2", BadPath::BadEscape),
            ("/a%+1", BadPath::BadEscape),
            ("/a%00", BadPath::BadEscape),
            ("*", BadPath::NotAbsolute),
        ] {
            assert_eq!(normalize(path), Err(why), "{path}");
        }
    }
}
