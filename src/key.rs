//! Cache keys: a namespace plus a blake3 hash of a length-prefixed encoding of the request's key material.
//!
//! Length prefixes make the encoding injective: no choice of path, query or header values can make two
//! different requests produce the same byte string, so a collision needs a blake3 collision.

use crate::variant_values::variant_lines;
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, HOST};
use http::{request::Parts, Method};
use std::fmt;

/// Changed whenever the same request could yield another key, so that an entry stored by an
/// earlier build is never found under a key it does not answer (3: query pairs no longer sorted;
/// 4: a varying field's lines kept apart, fields other than `Accept-Encoding` and
/// `Accept-Language` compared byte for byte, and every `Content-Type` line of a body keyed;
/// 5: `Accept-Language` members kept in their order and case; 6: `Accept-Language` compared byte
/// for byte; 7: the host as written).
const KEY_VERSION: &[u8] = b"cache-middleware/key/7";

/// The scheme the application reads for a request, when its front learns it from elsewhere than
/// the request itself: an ASGI server's scope has one, which a proxy the server trusts sets with
/// `X-Forwarded-Proto`, and links built from the request's URL carry it. A front that knows it
/// puts it in the request's extensions; it is then part of the key, so that one client's scheme
/// never reaches the links another client gets. `http` keys as no scheme at all, so that such
/// entries are shared with fronts that give none (the Rust ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestScheme(pub http::uri::Scheme);

/// A cache key: the backend key string and the digest it was made from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    text: String,
    digest: [u8; 32],
}

impl CacheKey {
    /// The key as stored in the backend: `{namespace}:{hex digest}`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The 32-byte digest of the key material; stored inside each entry and checked on every hit.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    fn from_digest(namespace: &str, digest: blake3::Hash) -> Self {
        let mut text = String::with_capacity(namespace.len() + 1 + 64);
        text.push_str(namespace);
        text.push(':');
        text.push_str(&digest.to_hex());
        CacheKey {
            text,
            digest: *digest.as_bytes(),
        }
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Length-prefixed fields, gathered in one buffer and hashed in one call (many small hasher updates
/// cost several times more for key-sized inputs).
struct Material<'a>(&'a mut Vec<u8>);

impl Material<'_> {
    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }
}

thread_local! {
    static MATERIAL: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
}

/// Gathers the material that `write` produces, after `tag`, and hashes it.
fn digest_of(tag: &[u8], write: impl FnOnce(&mut Material<'_>)) -> blake3::Hash {
    MATERIAL.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        let mut material = Material(&mut buffer);
        material.field(tag);
        write(&mut material);
        let digest = blake3::hash(&buffer);
        // Do not keep a huge buffer alive after a huge request.
        if buffer.capacity() > 64 * 1024 {
            *buffer = Vec::with_capacity(512);
        }
        digest
    })
}

/// The primary key of a request: method (HEAD as GET), host, path, query pairs in the order they
/// came, and for requests with a body its digest and the fields that say how to read it
/// (every line of `Content-Type`, and of `Content-Encoding`, which a decompression layer decodes
/// before the application sees the body).
///
/// Header values the response varies on are not part of it: they select a variant below this key
/// (see [`variant_key`]), so deleting the primary key invalidates every variant of a URL.
pub fn primary_key(namespace: &str, parts: &Parts, body: Option<&[u8]>) -> CacheKey {
    let host = parts
        .headers
        .get(HOST)
        .map(|h| h.as_bytes())
        .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or_default();
    let scheme = parts.extensions.get::<RequestScheme>();
    primary_key_from(
        namespace,
        &parts.method,
        scheme.map(|s| s.0.as_str()),
        host,
        parts.uri.path(),
        parts.uri.query(),
        body.map(|bytes| (bytes, &parts.headers)),
    )
}

/// The primary key from its parts; used for invalidation, where there is no request. `scheme` is
/// the request's [`RequestScheme`], when its front gave one; `body` a body with the request's
/// fields.
pub fn primary_key_from(
    namespace: &str,
    method: &Method,
    scheme: Option<&str>,
    host: &[u8],
    path: &str,
    query: Option<&str>,
    body: Option<(&[u8], &HeaderMap)>,
) -> CacheKey {
    let digest = digest_of(KEY_VERSION, |m| {
        // The namespace is hashed too, so an entry copied into another namespace fails the fingerprint check.
        m.field(namespace.as_bytes());
        // A HEAD is answered from the GET entry.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        m.field(method.as_str().as_bytes());
        match scheme {
            // `http` is what a request that names no scheme is taken to have: such entries are
            // shared with fronts that give none. Schemes are case-insensitive (RFC 3986 §3.1).
            None => m.field(b""),
            Some(scheme) if scheme.eq_ignore_ascii_case("http") => m.field(b""),
            Some(scheme) if scheme.bytes().any(|b| b.is_ascii_uppercase()) => {
                m.field(scheme.to_ascii_lowercase().as_bytes());
            }
            Some(scheme) => m.field(scheme.as_bytes()),
        }
        // As written: an application may find its tenant by the host, letters as sent (the
        // proxy's edge writes it in lower case, so that its entries are shared).
        m.field(host);
        m.field(path.as_bytes());
        let pairs = query_pairs(query.unwrap_or(""));
        m.count(pairs.clone().count());
        for pair in pairs {
            m.field(pair.name);
            m.field(&[u8::from(pair.has_value)]);
            m.field(pair.value);
        }
        match body {
            Some((body, fields)) => {
                m.field(b"body");
                m.field(blake3::hash(body).as_bytes());
                // Every line of each: a server may hand the application the first, the last
                // or all of them joined.
                for name in [CONTENT_TYPE, CONTENT_ENCODING] {
                    let lines = fields.get_all(name);
                    m.count(lines.iter().count());
                    for line in lines {
                        m.field(line.as_bytes());
                    }
                }
            }
            None => m.field(b"no-body"),
        }
    });
    CacheKey::from_digest(namespace, digest)
}

/// Where a part of the response for `primary` is kept (a stored `206`): apart from the complete
/// response, which it never replaces and which a request for the whole never finds in its place.
pub fn partial_key(namespace: &str, primary: &CacheKey) -> CacheKey {
    let digest = digest_of(b"partial", |m| m.field(primary.digest()));
    CacheKey::from_digest(namespace, digest)
}

/// The key of one variant below `primary`: the request's values of the header fields in `names`.
/// `names` must be lower-case and sorted so that equal sets produce equal keys.
pub fn variant_key(
    namespace: &str,
    primary: &CacheKey,
    names: &[String],
    headers: &HeaderMap,
) -> CacheKey {
    let digest = digest_of(b"variant", |m| {
        m.field(primary.digest());
        m.count(names.len());
        for name in names {
            m.field(name.as_bytes());
            // Equivalent values select the same variant (see `variant_values`).
            let sent = headers.get_all(name.as_str());
            let lines = variant_lines(name, sent.iter().map(HeaderValue::as_bytes));
            m.count(lines.len());
            for members in &lines {
                m.count(members.len());
                for member in members {
                    m.field(member);
                }
            }
        }
    });
    CacheKey::from_digest(namespace, digest)
}

/// One query parameter exactly as the client sent it. Nothing is decoded: two requests share an
/// entry only if the application receives the same bytes, or a cache could serve the answer to
/// `?q='` for `?q=%27` (a known way to deliver a reflected script through a cache). The pairs keep
/// the order they came in: a map of the query keeps the last value of a name (`?q=a&q=b` asks
/// for `b`), and one name has many spellings (`%71` is `q`; some frameworks read `a.b` as `a_b`),
/// so no reordering is safe for every application. Only empty `&&` segments, which no framework
/// reads, are ignored. `?a` and `?a=` differ.
#[derive(Debug, PartialEq, Eq)]
struct QueryPair<'a> {
    name: &'a [u8],
    has_value: bool,
    value: &'a [u8],
}

fn query_pairs(query: &str) -> impl Iterator<Item = QueryPair<'_>> + Clone {
    query
        .split('&')
        .filter(|segment| !segment.is_empty())
        .map(|segment| {
            let (name, value) = match segment.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (segment, None),
            };
            QueryPair {
                name: name.as_bytes(),
                has_value: value.is_some(),
                value: value.map_or(&[][..], str::as_bytes),
            }
        })
}

/// What debug logs show of a key's parts: never header values or query values, which may hold secrets.
pub(crate) struct KeyDescription<'a> {
    pub parts: &'a Parts,
    pub body_len: Option<usize>,
}

impl fmt::Display for KeyDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self
            .parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        write!(
            f,
            "method={} host={host} path={}",
            self.parts.method,
            self.parts.uri.path()
        )?;
        let mut pairs = query_pairs(self.parts.uri.query().unwrap_or("")).peekable();
        if pairs.peek().is_some() {
            f.write_str(" query_params=[")?;
            for (i, pair) in pairs.enumerate() {
                let sep = if i == 0 { "" } else { "," };
                write!(f, "{sep}{}", String::from_utf8_lossy(pair.name))?;
            }
            f.write_str("]")?;
        }
        if let Some(len) = self.body_len {
            write!(f, " body_bytes={len}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn key(uri: &str) -> CacheKey {
        key_with(Request::get(uri).header("host", "example.com"), None)
    }

    fn key_with(builder: http::request::Builder, body: Option<&[u8]>) -> CacheKey {
        let (parts, ()) = builder.body(()).unwrap().into_parts();
        primary_key("ns", &parts, body)
    }

    #[test]
    fn pairs_count_in_the_order_they_came_and_empty_segments_do_not() {
        assert_ne!(key("/p?b=2&a=1"), key("/p?a=1&b=2"));
        assert_ne!(key("/p?a=1&a=2"), key("/p?a=2"));
        assert_ne!(key("/p?a=1&a=2"), key("/p?a=2&a=1"));
        assert_ne!(key("/p?%61=1&a=2"), key("/p?a=2&%61=1"));
        assert_ne!(key("/p?a&a="), key("/p?a=&a"));
        assert_ne!(key("/p?a=1&a=1"), key("/p?a=1"));
        assert_eq!(key("/p?a=1&&b=2&"), key("/p?&a=1&b=2"));
    }

    #[test]
    fn a_scheme_the_front_gives_is_part_of_the_key_in_any_case() {
        let with = |scheme: &str| {
            let mut request = Request::get("/p").header("host", "h").body(()).unwrap();
            let scheme = RequestScheme(scheme.parse().unwrap());
            request.extensions_mut().insert(scheme);
            primary_key("ns", &request.into_parts().0, None)
        };
        let none = key_with(Request::get("/p").header("host", "h"), None);
        assert_ne!(with("http"), with("https"));
        assert_eq!(with("http"), none);
        assert_eq!(with("HTTPS"), with("https"));
        assert_ne!(with("https"), none);
    }

    #[test]
    fn query_bytes_are_compared_as_sent_never_decoded() {
        // The application receives these differently, so they never share an entry.
        assert_ne!(key("/p?q=%27"), key("/p?q='"));
        assert_ne!(key("/p?q=a%20b"), key("/p?q=a+b"));
        assert_ne!(key("/p?%71=1"), key("/p?q=1"));
        assert_ne!(key("/p?q=%FF"), key("/p?q=%FE"));
        assert_ne!(key("/p?a"), key("/p?a="));
        assert_eq!(key("/p?a=1&&b=2"), key("/p?a=1&b=2"));
    }

    #[test]
    fn length_prefixes_prevent_field_boundary_collisions() {
        assert_ne!(key("/p?ab=c"), key("/p?a=bc"));
        assert_ne!(key("/p?a=b%26c=d"), key("/p?a=b&c=d"));
        assert_ne!(key("/p?a=%3D"), key("/p?a%3D="));
        assert_ne!(key("/p?a==b"), key("/p?a=&=b"));
        // An empty query is no query, as every framework reads it.
        assert_eq!(key("/a"), key("/a?"));
    }

    #[test]
    fn method_path_and_host_are_part_of_the_key_and_head_is_get() {
        assert_ne!(key("/a"), key("/b"));
        let get = key_with(Request::get("/a").header("host", "x"), None);
        let head = key_with(Request::head("/a").header("host", "x"), None);
        let post = key_with(Request::post("/a").header("host", "x"), Some(b""));
        let other_host = key_with(Request::get("/a").header("host", "y"), None);
        assert_eq!(get, head);
        assert_ne!(get, post);
        assert_ne!(get, other_host);
    }

    #[test]
    fn post_bodies_and_their_content_type_are_part_of_the_key() {
        let post = |body: &[u8], ct: &'static str| {
            key_with(
                Request::post("/calc")
                    .header("host", "x")
                    .header("content-type", ct),
                Some(body),
            )
        };
        assert_eq!(post(b"{\"n\":1}", "json"), post(b"{\"n\":1}", "json"));
        assert_ne!(post(b"{\"n\":1}", "json"), post(b"{\"n\":2}", "json"));
        assert_ne!(post(b"\xff\x00", "json"), post(b"\xff\x01", "json"));
        assert_ne!(post(b"a=1", "json"), post(b"a=1", "form"));
    }

    #[test]
    fn keys_are_namespaced_hex_digests() {
        let k = key("/");
        assert!(k.as_str().starts_with("ns:"));
        assert_eq!(k.as_str().len(), 3 + 64);
        assert_eq!(&k.as_str()[3..5], format!("{:02x}", k.digest()[0]));
    }

    #[test]
    fn variants_differ_by_the_named_header_values_only() {
        let primary = key("/");
        let names = vec!["accept-language".to_string()];
        let variant = |lang: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("accept-language", lang.parse().unwrap());
            headers.insert("cookie", "irrelevant".parse().unwrap());
            variant_key("ns", &primary, &names, &headers)
        };
        assert_eq!(variant("en"), variant("en"));
        assert_ne!(variant("en"), variant("fr"));
        assert_ne!(variant("en"), primary);
        let absent = variant_key("ns", &primary, &names, &HeaderMap::new());
        assert_ne!(absent, variant(""));
    }

    #[test]
    fn variant_keys_tell_apart_what_an_origin_may_read_apart() {
        let primary = key("/");
        let names = vec!["x-foo".to_string()];
        let variant = |lines: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append("x-foo", line.parse().unwrap());
            }
            variant_key("ns", &primary, &names, &headers)
        };
        assert_eq!(variant(&["a, b"]), variant(&["a, b"]));
        assert_ne!(variant(&["a, b"]), variant(&["a", "b"]));
        assert_ne!(variant(&["a,b"]), variant(&["a ,  b"]));
        assert_ne!(variant(&["a, b"]), variant(&["b, a"]));
        assert_ne!(variant(&["ab"]), variant(&["a", "b"]));
        assert_ne!(variant(&["a", ""]), variant(&["a"]));
        assert_ne!(variant(&[""]), variant(&[]));
    }

    #[test]
    fn key_descriptions_name_query_parameters_but_not_their_values() {
        let (parts, ()) = Request::get("/p?token=secret&b=2")
            .body(())
            .unwrap()
            .into_parts();
        let text = KeyDescription {
            parts: &parts,
            body_len: None,
        }
        .to_string();
        assert!(text.contains("query_params=[token,b]"), "{text}");
        assert!(!text.contains("secret"));
    }
}
