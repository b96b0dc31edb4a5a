//! A caching reverse proxy (feature `proxy`): put an application written in any language behind the
//! cache without changing it.
//!
//! Requests go to one upstream, with bodies streamed both ways. Before the cache sees a request,
//! the edge makes it the request the origin will receive (one `Host`, one normalised path, no
//! client-set forwarding fields; see `docs/security.md`), so the key describes exactly what is
//! forwarded. Hop-by-hop fields are dropped, `Via` is added, and an unreachable upstream answers
//! 502, a slow one 504; a request the client broke is a 4xx. Paths that match a rule are cached in
//! route mode with the rule's TTL. Everything else is cached in shared-cache mode, as the origin's
//! own headers allow (RFC 9111; see [`SharedCache`](crate::SharedCache)).
//!
//! ```toml
//! # rules.toml
//! upstream_timeout_secs = 30
//! http_semantics = true    # cache other paths by the origin's headers (default); false: forward
//! store_set_cookie = false # store responses that set cookies (default false)
//! honor_request_cache_control = true # obey clients' no-cache / no-store (default true)
//! trusted_proxies = []     # peers whose X-Forwarded-* / Forwarded fields are kept
//!
//! [[route]]
//! path = "/items/*"      # everything below /items/; exact paths too
//! ttl = 600              # seconds
//!
//! [[route]]
//! path = "/calculate"
//! ttl = 300
//! post = true            # also cache POST, keyed by body (off by default)
//! cookies = false        # requests with Cookie pass uncached (default); true: cache them too
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

mod edge;
mod forward;
#[cfg(test)]
mod key_properties;
pub(crate) mod path;

pub use edge::TrustedProxies;
pub use forward::Forward;

use crate::{cache, CacheMiddleware};
use axum::routing::{any_service, get_service, MethodRouter};
use axum::Router;
use http::Uri;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

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
    /// Obey request `Cache-Control`/`Pragma` (`no-cache` refreshes, `no-store` bypasses). Default
    /// `true`; `false` stops any client from forcing origin requests or replacing entries.
    #[serde(default = "yes")]
    pub honor_request_cache_control: bool,
    /// Peers (addresses or networks) whose forwarding fields are kept; from anyone else they are
    /// removed and the proxy sets its own.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
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
    /// Cache requests that carry `Cookie` too (default `false`: they pass to the origin
    /// uncached, since the origin may answer them per user without saying so).
    #[serde(default)]
    pub cookies: bool,
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
        config.trusted()?;
        Ok(config)
    }
}

impl ProxyConfig {
    fn trusted(&self) -> Result<TrustedProxies, ProxyError> {
        TrustedProxies::parse(self.trusted_proxies.iter().map(String::as_str))
            .map_err(|e| ProxyError::Rules(format!("trusted_proxies: {e}")))
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstream_timeout_secs: default_timeout(),
            http_semantics: true,
            store_set_cookie: false,
            honor_request_cache_control: true,
            trusted_proxies: Vec::new(),
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
/// headers (or forwarded uncached, with `http_semantics = false`), behind the edge that settles
/// each request before any of them sees it.
pub fn router(
    upstream: Uri,
    config: &ProxyConfig,
    middleware: CacheMiddleware,
) -> Result<Router, ProxyError> {
    let forward = Forward::new(upstream, Duration::from_secs(config.upstream_timeout_secs))?;
    let trusted = Arc::new(config.trusted()?);
    // Off in the rules turns it off; on leaves the middleware's setting (the environment's).
    let middleware = if config.honor_request_cache_control {
        middleware
    } else {
        middleware.honor_request_cache_control(false)
    };
    // The edge runs before routing: the rule is chosen on the path the origin will receive. Without
    // rules there is nothing to route, and every request goes straight to the fallback.
    let shared = config.http_semantics.then(|| {
        middleware
            .clone()
            .http_semantics()
            .store_set_cookie(config.store_set_cookie)
    });
    if config.routes.is_empty() {
        return Ok(match shared {
            Some(shared) => Router::new().fallback_service(edge::Edge {
                inner: shared.layer(forward),
                trusted,
            }),
            None => Router::new().fallback_service(edge::Edge {
                inner: forward,
                trusted,
            }),
        });
    }
    let mut routes = Router::new();
    for rule in &config.routes {
        let mut layer = cache(rule.ttl);
        if !rule.cookies {
            layer = layer.bypass_requests_with_cookie();
        }
        let cached = layer.layer(forward.clone());
        let mut methods: MethodRouter = get_service(cached.clone());
        if rule.post {
            methods = methods.post_service(cached);
        }
        routes = routes.route(
            &axum_path(&rule.path)?,
            methods.fallback_service(forward.clone()),
        );
    }
    let routes = match shared {
        Some(shared) => routes.fallback_service(shared.layer(forward)),
        None => routes.fallback_service(any_service(forward)),
    };
    // Only rule routes read the middleware's engine from the request.
    let routes = routes.layer(middleware);
    Ok(Router::new().fallback_service(edge::Edge {
        inner: routes,
        trusted,
    }))
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
}
