//! A caching reverse proxy (feature `proxy`): put an application written in any language behind the
//! cache without changing it.
//!
//! Requests go to one upstream, with bodies streamed both ways. Hop-by-hop fields are dropped,
//! `Via` is added, and an unreachable upstream answers 502, a slow one 504. Paths that match a
//! rule are cached in route mode with the rule's TTL. Everything else is cached in shared-cache
//! mode, as the origin's own headers allow (RFC 9111; see [`SharedCache`](crate::SharedCache)).
//!
//! ```toml
//! # rules.toml
//! upstream_timeout_secs = 30
//! http_semantics = true    # cache other paths by the origin's headers (default); false: forward
//! store_set_cookie = false # store responses that set cookies (default false)
//!
//! [[route]]
//! path = "/items/*"      # everything below /items/; exact paths too
//! ttl = 600              # seconds
//!
//! [[route]]
//! path = "/calculate"
//! ttl = 300
//! post = true            # also cache POST, keyed by body (off by default)
//! ```
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cache_middleware::{backends::MemoryBackend, proxy, CacheMiddleware};
//!
//! let config = proxy::ProxyConfig::from_toml(&std::fs::read_to_string("rules.toml")?)?;
//! let app = proxy::router("http://127.0.0.1:8000".parse()?, &config, CacheMiddleware::new(MemoryBackend::new(10_000)))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use crate::policy::is_hop_by_hop;
use crate::{cache, CacheMiddleware};
use axum::body::Body;
use axum::routing::{any_service, get_service, MethodRouter};
use axum::Router;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderMap, HeaderValue, VIA};
use http::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

const VIA_VALUE: &str = "1.1 cache-middleware";

/// The proxy's rules, usually read from a TOML file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Most time the upstream may take to start answering (default 30 s).
    #[serde(default = "default_timeout")]
    pub upstream_timeout_secs: u64,
    /// Cache the paths no rule names by the origin's headers (default `true`); `false` forwards
    /// them uncached.
    #[serde(default = "yes")]
    pub http_semantics: bool,
    /// Store responses that set cookies in shared-cache mode (default `false`; see
    /// [`SharedCache::store_set_cookie`](crate::SharedCache::store_set_cookie)).
    #[serde(default)]
    pub store_set_cookie: bool,
    /// Paths cached with a fixed TTL, for origins that send no caching headers.
    #[serde(default, rename = "route")]
    pub routes: Vec<Rule>,
}

fn default_timeout() -> u64 {
    30
}

fn yes() -> bool {
    true
}

/// One cached path.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// An exact path (`/config`) or everything below a prefix (`/items/*`).
    pub path: String,
    /// Seconds a response stays fresh.
    pub ttl: u64,
    /// Also cache POST requests, keyed by their body.
    #[serde(default)]
    pub post: bool,
}

/// A configuration that cannot be used; the message says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    #[error("proxy rules: {0}")]
    Rules(String),
    #[error("upstream {0:?} must be an http:// URL with a host, e.g. http://127.0.0.1:8000")]
    Upstream(String),
}

impl ProxyConfig {
    /// Reads and checks rules from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ProxyError> {
        let config: ProxyConfig =
            toml::from_str(text).map_err(|e| ProxyError::Rules(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        for rule in &config.routes {
            axum_path(&rule.path)?;
            if !seen.insert(rule.path.as_str()) {
                return Err(ProxyError::Rules(format!(
                    "path {:?} appears twice",
                    rule.path
                )));
            }
        }
        Ok(config)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstream_timeout_secs: default_timeout(),
            http_semantics: true,
            store_set_cookie: false,
            routes: Vec::new(),
        }
    }
}

/// `/items/*` becomes axum's `/items/{*rest}`; only plain path characters are accepted, so that no
/// rule can be read as axum syntax by accident.
fn axum_path(pattern: &str) -> Result<String, ProxyError> {
    let (base, wildcard) = match pattern.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (pattern, false),
    };
    let plain = base
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if !pattern.starts_with('/') || !plain || base.contains("//") {
        return Err(ProxyError::Rules(format!(
            "path {pattern:?} must start with / and hold only letters, digits, /-._~, optionally ending in /*"
        )));
    }
    Ok(if wildcard {
        format!("{base}/{{*rest}}")
    } else {
        base.to_owned()
    })
}

/// The proxy as a router: rule paths cached with their TTL, everything else by the origin's
/// headers (or forwarded uncached, with `http_semantics = false`).
pub fn router(
    upstream: Uri,
    config: &ProxyConfig,
    middleware: CacheMiddleware,
) -> Result<Router, ProxyError> {
    let forward = Forward::new(upstream, Duration::from_secs(config.upstream_timeout_secs))?;
    let mut router = Router::new();
    for rule in &config.routes {
        let cached = cache(rule.ttl).layer(forward.clone());
        let mut methods: MethodRouter = get_service(cached.clone());
        if rule.post {
            methods = methods.post_service(cached);
        }
        router = router.route(
            &axum_path(&rule.path)?,
            methods.fallback_service(forward.clone()),
        );
    }
    let router = if config.http_semantics {
        let shared = middleware
            .clone()
            .http_semantics()
            .store_set_cookie(config.store_set_cookie);
        router.fallback_service(shared.layer(forward))
    } else {
        router.fallback_service(any_service(forward))
    };
    if config.routes.is_empty() {
        // Only rule routes read the middleware's engine from the request; spare the others.
        return Ok(router);
    }
    Ok(router.layer(middleware))
}

/// Forwards requests to the upstream, streaming bodies both ways.
#[derive(Clone)]
pub struct Forward {
    // Shared: the service is cloned for every request, and a client is many handles.
    upstream: std::sync::Arc<Upstream>,
}

struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme_and_authority: String,
    timeout: Duration,
}

impl Forward {
    /// A forwarder to `upstream` (`http://host:port`), waiting at most `timeout` for its answer.
    pub fn new(upstream: Uri, timeout: Duration) -> Result<Self, ProxyError> {
        match (upstream.scheme_str(), upstream.authority()) {
            (Some("http"), Some(authority)) => Ok(Forward {
                upstream: std::sync::Arc::new(Upstream {
                    client: Client::builder(TokioExecutor::new()).build_http(),
                    scheme_and_authority: format!("http://{authority}"),
                    timeout,
                }),
            }),
            _ => Err(ProxyError::Upstream(upstream.to_string())),
        }
    }
}

impl<B> Service<Request<B>> for Forward
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let upstream = std::sync::Arc::clone(&self.upstream);
        Box::pin(async move { Ok(upstream.forward(request).await) })
    }
}

impl Upstream {
    async fn forward<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = match format!("{}{path}", self.scheme_and_authority).parse() {
            Ok(uri) => uri,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "request target cannot be forwarded",
                )
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .append(VIA, HeaderValue::from_static(VIA_VALUE));
        let upstream = Request::from_parts(parts, Body::new(body));
        match tokio::time::timeout(self.timeout, self.client.request(upstream)).await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .append(VIA, HeaderValue::from_static(VIA_VALUE));
                Response::from_parts(parts, Body::new(body))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream unreachable");
                error(StatusCode::BAD_GATEWAY, "upstream unreachable")
            }
            Err(_) => {
                tracing::warn!(timeout_secs = self.timeout.as_secs(), "upstream timed out");
                error(StatusCode::GATEWAY_TIMEOUT, "upstream timed out")
            }
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name, headers))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

fn error(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(VIA, HeaderValue::from_static(VIA_VALUE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_from_toml_with_defaults() {
        let config = ProxyConfig::from_toml(
            "[[route]]\npath = \"/items/*\"\nttl = 600\n\n[[route]]\npath = \"/calc\"\nttl = 5\npost = true\n",
        )
        .unwrap();
        assert_eq!(config.upstream_timeout_secs, 30);
        assert_eq!(config.routes.len(), 2);
        assert!(!config.routes[0].post && config.routes[1].post);
    }

    #[test]
    fn bad_rules_are_errors_that_say_what_to_fix() {
        for (text, expected) in [
            (
                "[[route]]\npath = \"items\"\nttl = 1\n",
                "must start with /",
            ),
            (
                "[[route]]\npath = \"/{id}\"\nttl = 1\n",
                "must start with /",
            ),
            (
                "[[route]]\npath = \"/a\"\nttl = 1\n[[route]]\npath = \"/a\"\nttl = 2\n",
                "appears twice",
            ),
            ("[[route]]\npath = \"/a\"\n", "ttl"),
            ("[[route]]\npath = \"/a\"\nttl = 1\ncolour = 2\n", "colour"),
        ] {
            let error = ProxyConfig::from_toml(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn patterns_become_axum_paths() {
        assert_eq!(axum_path("/items/*").unwrap(), "/items/{*rest}");
        assert_eq!(axum_path("/config").unwrap(), "/config");
    }

    #[test]
    fn only_http_upstreams_with_a_host_are_accepted() {
        assert!(Forward::new(
            "http://127.0.0.1:8000".parse().unwrap(),
            Duration::from_secs(1)
        )
        .is_ok());
        for bad in ["https://a:1", "/relative", "ftp://a"] {
            assert!(
                Forward::new(bad.parse().unwrap(), Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
