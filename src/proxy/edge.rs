//! The proxy's edge: every request is made into exactly the request the origin will receive before
//! the cache sees it, so that the key describes what is forwarded.
//!
//! - **Host** (RFC 9112 §3.2): a missing, repeated or malformed `Host` is a 400; an absolute-form
//!   target (or HTTP/2's `:authority`) replaces `Host` (§3.2.2).
//! - **Hop-by-hop fields** (RFC 9110 §7.6.1) are removed here, once, with those `Connection` names,
//!   except the fields the key and the forwarding depend on (`Host`, `Content-Length`).
//! - **Forwarding fields**: by default the proxy is the edge. Client-sent `Forwarded`,
//!   `X-Forwarded-*`, `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL` and method overrides never reach
//!   the origin (they change its answer without being in the key); the proxy sets its own
//!   `X-Forwarded-For`, `-Proto` and `-Host`. Peers listed as trusted proxies keep their
//!   forwarding fields, and the peer is appended to `X-Forwarded-For`. Method overrides are always
//!   removed.
//! - **Path**: normalised once (see `path`): the rule, the key and the upstream see the same path.
//! - `OPTIONS *` is answered here; `CONNECT` is refused.

use super::path::normalize;
use crate::policy::{is_forwarding, is_override, EdgeSettled, HOP_BY_HOP};
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// Fields `Connection` can never remove: the key and the forwarding depend on them.
const PROTECTED: [HeaderName; 2] = [HOST, CONTENT_LENGTH];

/// Peers whose forwarding fields are believed (other proxies in front of this one).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses (`10.0.0.1`) or networks (`10.0.0.0/8`); an error names the entry that is neither.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let net = IpNet::from_str(entry)
                .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{entry:?} is not an IP address or network (e.g. 10.0.0.1 or 10.0.0.0/8)"
                    )
                })?;
            nets.push(net);
        }
        Ok(TrustedProxies(nets))
    }

    fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&peer))
    }
}

/// A request the edge refuses: the client's fault, answered 4xx.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn refuse(status: StatusCode, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Makes `parts` into the request the origin will receive; `peer` is the client's address.
pub(crate) fn prepare(
    parts: &mut Parts,
    peer: Option<IpAddr>,
    trusted: &TrustedProxies,
) -> Result<(), Refusal> {
    if parts.method == Method::CONNECT {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not proxied",
        ));
    }
    settle_host(parts)?;
    let path = parts.uri.path();
    let normal = normalize(path).map_err(|bad| refuse(StatusCode::BAD_REQUEST, bad.as_str()))?;
    let path_and_query = match (normal, parts.uri.query()) {
        (Some(path), Some(query)) => Some(format!("{path}?{query}")),
        (Some(path), None) => Some(path),
        (None, _) if parts.uri.authority().is_some() => Some(
            parts
                .uri
                .path_and_query()
                .map_or("/", PathAndQuery::as_str)
                .to_owned(),
        ),
        (None, _) => None,
    };
    if let Some(target) = path_and_query {
        parts.uri = Uri::try_from(target)
            .map_err(|_| refuse(StatusCode::BAD_REQUEST, "request target cannot be read"))?;
    }
    let from_trusted = peer.is_some_and(|peer| trusted.contains(peer));
    strip_hop_by_hop_and_forwarding(&mut parts.headers, from_trusted);
    // Set before the cache sees the request, not as it leaves: a response that varies on
    // `X-Forwarded-For` must be matched against the value its origin saw.
    set_forwarding(&mut parts.headers, peer);
    parts.extensions.insert(EdgeSettled);
    Ok(())
}

/// The one `Host` of the request, in lower case, set in its fields; the target becomes
/// origin-form. Lower case: a host is case-insensitive (RFC 3986 §3.2.2), while an origin may
/// find its tenant by the host as written, and the key holds it as the origin receives it.
fn settle_host(parts: &mut Parts) -> Result<(), Refusal> {
    let bad = |reason| refuse(StatusCode::BAD_REQUEST, reason);
    let from_target = parts.uri.authority().is_some();
    let host = match parts.uri.authority() {
        Some(authority) => authority.as_str(),
        None => {
            let mut lines = parts.headers.get_all(HOST).iter();
            let (Some(line), None) = (lines.next(), lines.next()) else {
                return Err(bad("a request needs exactly one Host"));
            };
            line.to_str().map_err(|_| bad("Host is not valid"))?
        }
    };
    if !valid_host(host) {
        return Err(bad("Host is not valid"));
    }
    // Most requests name their host once, in lower case: left as it is, with no copy.
    if from_target || host.bytes().any(|b| b.is_ascii_uppercase()) {
        let settled = host.to_ascii_lowercase();
        let value = HeaderValue::from_str(&settled).map_err(|_| bad("Host is not valid"))?;
        parts.headers.insert(HOST, value);
    }
    Ok(())
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2), exactly: no user info, nothing the parser would drop.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && !host.contains('@')
        && Authority::from_str(host).is_ok_and(|authority| authority.as_str() == host)
}

/// What the edge does with a field the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Hop-by-hop: never forwarded.
    HopByHop,
    /// Names another path or method than the request line: never forwarded.
    Override,
    /// Says who the client is or how it connected: kept only from a trusted proxy.
    Forwarding,
    Other,
}

fn sent(name: &HeaderName) -> Sent {
    let name = name.as_str();
    if HOP_BY_HOP.contains(&name) {
        Sent::HopByHop
    } else if is_override(name) {
        Sent::Override
    } else if is_forwarding(name) {
        Sent::Forwarding
    } else {
        Sent::Other
    }
}

/// One pass over the fields the client sent (a handful, usually), instead of one removal per
/// name the edge knows (each of which would hash): the removals happen only for fields present.
fn strip_hop_by_hop_and_forwarding(headers: &mut HeaderMap, keep_forwarding: bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let drop = match sent(name) {
            Sent::HopByHop | Sent::Override => true,
            Sent::Forwarding => !keep_forwarding,
            Sent::Other => false,
        };
        if drop {
            doomed.push(name.clone());
        }
    }
    for line in headers.get_all(CONNECTION) {
        let Ok(line) = line.to_str() else { continue };
        for listed in line.split(',') {
            if let Ok(name) = HeaderName::from_str(listed.trim()) {
                if !PROTECTED.contains(&name) && headers.contains_key(&name) {
                    doomed.push(name);
                }
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The proxy's own forwarding fields: `X-Forwarded-For` gets the peer appended, `-Proto` and
/// `-Host` are set unless a trusted proxy sent them (the edge removed everyone else's).
fn set_forwarding(headers: &mut HeaderMap, peer: Option<IpAddr>) {
    if let Some(peer) = peer {
        // Only a trusted proxy's request still has a chain to extend.
        let value = if headers.contains_key(&X_FORWARDED_FOR) {
            let chain = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            format!("{chain}, {peer}")
        } else {
            peer.to_string()
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

/// The edge in front of the proxy's routes.
#[derive(Clone)]
pub(crate) struct Edge<S> {
    pub inner: S,
    pub trusted: Arc<TrustedProxies>,
}

impl<S, B> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        if parts.method == Method::OPTIONS && parts.uri == "*" {
            // RFC 9110 §9.3.7: a request about the server, not a resource; nothing to cache.
            return Box::pin(async { Ok(plain(StatusCode::OK, "")) });
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        if let Err(refusal) = prepare(&mut parts, peer, &self.trusted) {
            tracing::debug!(
                method = %parts.method,
                reason = refusal.reason,
                status = refusal.status.as_u16(),
                "client request refused"
            );
            return Box::pin(async move { Ok(plain(refusal.status, refusal.reason)) });
        }
        // HTTP/2 content without a length on a GET or HEAD: dropped, so the origin receives what
        // the key describes (with a length, the cache passes it; see `safe_method_with_content`).
        let framed = parts.headers.contains_key(CONTENT_LENGTH)
            || parts.headers.contains_key(http::header::TRANSFER_ENCODING);
        let body = if matches!(parts.method, Method::GET | Method::HEAD)
            && !framed
            && !http_body::Body::is_end_stream(&body)
        {
            Body::empty()
        } else {
            body
        };
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let response = inner.call(Request::from_parts(parts, body)).await?;
            Ok(response.map(Body::new))
        })
    }
}

pub(crate) fn plain(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(Bytes::from_static(message.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(builder: http::request::Builder) -> Parts {
        builder.body(()).unwrap().into_parts().0
    }

    const PEER: [u8; 4] = [192, 0, 2, 7];

    fn prepared(builder: http::request::Builder) -> Result<Parts, Refusal> {
        let mut parts = parts(builder);
        let peer = Some(IpAddr::from(PEER));
        prepare(&mut parts, peer, &TrustedProxies::default())?;
        Ok(parts)
    }

    #[test]
    fn host_must_be_present_once_and_valid() {
        assert!(prepared(Request::get("/")).is_err());
        let twice = Request::get("/")
            .header("host", "a.example")
            .header("host", "b.example");
        assert_eq!(prepared(twice).unwrap_err().status, StatusCode::BAD_REQUEST);
        for bad in ["a b", "user@host", "a/b", ""] {
            assert!(
                prepared(Request::get("/").header("host", bad)).is_err(),
                "{bad}"
            );
        }
        let ok = prepared(Request::get("/").header("host", "Example.com:8080")).unwrap();
        assert_eq!(ok.headers[HOST], "example.com:8080", "in lower case");
    }

    #[test]
    fn an_absolute_target_sets_host() {
        let request = Request::get("http://victim.example/account").header("host", "other");
        let parts = prepared(request).unwrap();
        assert_eq!(parts.headers[HOST], "victim.example");
        assert_eq!(parts.uri, "/account");
        let parts = prepared(Request::get("http://victim.example/a?b=1")).unwrap();
        assert_eq!(parts.headers[HOST], "victim.example");
        assert_eq!(parts.uri, "/a?b=1");
    }

    #[test]
    fn connection_cannot_remove_host_but_removes_what_it_names() {
        let request = Request::get("/")
            .header("host", "a.example")
            .header("connection", "host, x-secret, content-length")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5");
        let parts = prepared(request).unwrap();
        assert_eq!(parts.headers[HOST], "a.example");
        assert!(!parts.headers.contains_key("x-secret"));
        assert!(!parts.headers.contains_key("keep-alive"));
        assert!(!parts.headers.contains_key(CONNECTION));
    }

    #[test]
    fn client_forwarding_fields_are_replaced_by_the_proxys_own() {
        let request = Request::get("/")
            .header("host", "a.example")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-for", "1.2.3.4")
            .header("forwarded", "host=evil.example")
            .header("x-original-url", "/admin")
            .header("x-http-method-override", "DELETE");
        let parts = prepared(request).unwrap();
        assert_eq!(parts.headers["x-forwarded-host"], "a.example");
        assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");
        for gone in ["forwarded", "x-original-url", "x-http-method-override"] {
            assert!(!parts.headers.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn trusted_proxies_keep_their_chain() {
        let trusted = TrustedProxies::parse(["192.0.2.0/24"]).unwrap();
        let mut parts = parts(
            Request::get("/")
                .header("host", "a.example")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-forwarded-proto", "https")
                .header("x-http-method-override", "DELETE"),
        );
        let peer = Some(IpAddr::from(PEER));
        prepare(&mut parts, peer, &trusted).unwrap();
        assert_eq!(parts.headers["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
        assert_eq!(parts.headers["x-forwarded-proto"], "https");
        assert!(!parts.headers.contains_key("x-http-method-override"));
        assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        let parts =
            prepared(Request::get("/static/%2e%2e/account?x=1").header("host", "a")).unwrap();
        assert_eq!(parts.uri, "/account?x=1");
        let refused = prepared(Request::get("/static/..%2faccount").header("host", "a"));
        assert_eq!(refused.unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
