//! Backends configured from environment variables: the guide's `auto_configure_backend()` and
//! `get_backend_for_environment(env)`.
//!
//! Each function has a `_from` variant that takes a lookup function instead of reading the process
//! environment, so configuration can be tested (and sourced from elsewhere) without `set_var`.
//!
//! ```
//! use cache_middleware::helpers::{auto_configure_backend_from, CACHE_BACKEND, MEMORY_CACHE_SIZE};
//!
//! let env = |name: &str| match name {
//!     CACHE_BACKEND => Some("memory".to_owned()),
//!     MEMORY_CACHE_SIZE => Some("5000".to_owned()),
//!     _ => None,
//! };
//! let backend = auto_configure_backend_from(env).unwrap();
//! assert_eq!(backend.name(), "memory");
//!
//! let error = auto_configure_backend_from(|name| (name == CACHE_BACKEND).then(|| "mongo".into()));
//! assert_eq!(
//!     error.unwrap_err().to_string(),
//!     "CACHE_BACKEND=\"mongo\" is not valid: accepted values are memory, redis, memcached"
//! );
//! ```

use crate::backends::{Backend, BuildError, MemoryBackend};
use crate::entry::MAX_STORED_BODY;
use crate::redact::redact_url;
use crate::CacheMiddleware;
use std::sync::Arc;
use std::time::Duration;

/// `memory` (default), `redis` or `memcached`.
pub const CACHE_BACKEND: &str = "CACHE_BACKEND";
/// Entries kept by the memory backend (default 1000).
pub const MEMORY_CACHE_SIZE: &str = "MEMORY_CACHE_SIZE";
/// Bytes kept by the memory backend: keys, values and a fixed cost per entry (default 256 MiB).
pub const MEMORY_CACHE_MAX_BYTES: &str = "MEMORY_CACHE_MAX_BYTES";
/// `true`/`false`: obey clients' `Cache-Control: no-cache` / `no-store` (default `true`).
pub const CACHE_HONOR_REQUEST_CACHE_CONTROL: &str = "CACHE_HONOR_REQUEST_CACHE_CONTROL";
/// Key namespace of the Redis and Memcached backends (default `cache-middleware`).
pub const CACHE_NAMESPACE: &str = "CACHE_NAMESPACE";
/// `redis://[:password@]host[:port][/db]` or `rediss://...` for TLS.
pub const REDIS_URL: &str = "REDIS_URL";
/// Most open Redis connections (default 10).
pub const REDIS_MAX_CONNECTIONS: &str = "REDIS_MAX_CONNECTIONS";
/// Redis password, instead of one in the URL.
pub const REDIS_PASSWORD: &str = "REDIS_PASSWORD";
/// `true` to retry once on a time-out or dropped connection.
pub const REDIS_RETRY_ON_TIMEOUT: &str = "REDIS_RETRY_ON_TIMEOUT";
/// `true` to enable TCP keepalive.
pub const REDIS_SOCKET_KEEPALIVE: &str = "REDIS_SOCKET_KEEPALIVE";
/// Keepalive idle time in seconds (`TCP_KEEPIDLE`).
pub const REDIS_SOCKET_KEEPALIVE_IDLE: &str = "REDIS_SOCKET_KEEPALIVE_IDLE";
/// Keepalive probe interval in seconds (`TCP_KEEPINTVL`).
pub const REDIS_SOCKET_KEEPALIVE_INTERVAL: &str = "REDIS_SOCKET_KEEPALIVE_INTERVAL";
/// Keepalive probe count (`TCP_KEEPCNT`).
pub const REDIS_SOCKET_KEEPALIVE_COUNT: &str = "REDIS_SOCKET_KEEPALIVE_COUNT";
/// Seconds between background connection checks.
pub const REDIS_HEALTH_CHECK_INTERVAL: &str = "REDIS_HEALTH_CHECK_INTERVAL";
/// Bytes of the in-process tier in front of Redis (standalone, Sentinel or Cluster), kept
/// consistent by key tracking; `0` turns it off (default 64 MiB).
pub const REDIS_LOCAL_TIER_MAX_BYTES: &str = "REDIS_LOCAL_TIER_MAX_BYTES";
/// Seconds one Redis operation attempt may take (default 0.05).
pub const REDIS_TIMEOUT: &str = "REDIS_TIMEOUT";
/// Path of the CA certificate (PEM) for `rediss://`.
pub const REDIS_SSL_CA_CERTS: &str = "REDIS_SSL_CA_CERTS";
/// `required` (default) or `none`.
pub const REDIS_SSL_CERT_REQS: &str = "REDIS_SSL_CERT_REQS";
/// Comma-separated cluster seed URLs; set to use Redis Cluster (`REDIS_URL` is then optional).
pub const REDIS_CLUSTER_NODES: &str = "REDIS_CLUSTER_NODES";
/// Comma-separated sentinel URLs; set to use Redis Sentinel.
pub const REDIS_SENTINELS: &str = "REDIS_SENTINELS";
/// The master's name known to the sentinels (default `mymaster`).
pub const REDIS_SENTINEL_MASTER: &str = "REDIS_SENTINEL_MASTER";
/// `memcached://host:11211[,host2:11211...]`.
pub const MEMCACHED_URL: &str = "MEMCACHED_URL";
/// Most open connections to each Memcached server (default 8).
pub const MEMCACHED_MAX_CONNECTIONS: &str = "MEMCACHED_MAX_CONNECTIONS";
/// `development`, `testing`, `staging` or `production`, for [`get_backend_for_environment`].
pub const ENVIRONMENT: &str = "ENVIRONMENT";

/// Largest response body stored, in bytes (default 1 MiB), for [`configure_middleware`].
pub const CACHE_MAX_BODY_SIZE: &str = "CACHE_MAX_BODY_SIZE";

/// Largest POST body read to build a key, in bytes (default 64 KiB).
pub const CACHE_MAX_REQUEST_BODY_SIZE: &str = "CACHE_MAX_REQUEST_BODY_SIZE";

/// Seconds one backend call may take before the cache gives up on it (default 0.1).
pub const CACHE_BACKEND_TIMEOUT: &str = "CACHE_BACKEND_TIMEOUT";

/// Seconds a request waits for an identical request's handler run, here or in another instance,
/// before running its own; also the lifetime of a fleet lease whose holder died (default 10).
pub const CACHE_COALESCE_TIMEOUT: &str = "CACHE_COALESCE_TIMEOUT";

/// The last part of a cached route entry's lifetime in which hits refresh it in the background,
/// between 0 (never early, the default) and 1; e.g. `0.1`.
pub const CACHE_EARLY_REFRESH: &str = "CACHE_EARLY_REFRESH";

/// A secret of at least 16 characters: with it, `PURGE` requests to the demo and the proxy purge
/// URLs, tags or everything; unset, `PURGE` is not special (default).
pub const CACHE_PURGE_TOKEN: &str = "CACHE_PURGE_TOKEN";

/// Seconds a key whose response could not be stored goes straight to the handler or origin
/// instead of queueing behind single flight (default 10; `0` turns it off).
pub const CACHE_HIT_FOR_MISS: &str = "CACHE_HIT_FOR_MISS";

/// Bytes that cacheable responses of known length, streamed to their clients while they are
/// stored (shared-cache mode, the proxy), may hold at once (default 256 MiB); `0`: such responses
/// are read whole before they are answered, as before.
pub const CACHE_FILL_MAX_BYTES: &str = "CACHE_FILL_MAX_BYTES";

/// The response field that names an entry's tags (default `Surrogate-Key`; e.g. `Cache-Tag`),
/// removed before responses reach clients.
pub const CACHE_TAG_HEADER: &str = "CACHE_TAG_HEADER";

/// `true`/`false`: one handler run per missing key in the whole fleet sharing Redis (default `true`).
pub const CACHE_FLEET_SINGLE_FLIGHT: &str = "CACHE_FLEET_SINGLE_FLIGHT";

/// A configuration error: it names the variable, the value (passwords masked) and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{variable}={value:?} is not valid: {accepted}")]
    Invalid {
        variable: &'static str,
        value: String,
        accepted: String,
    },
    #[error("{variable} is required {context}")]
    Missing {
        variable: &'static str,
        context: String,
    },
    #[error("{variable}: {source}")]
    Backend {
        variable: &'static str,
        source: BuildError,
    },
}

/// The backend that `CACHE_BACKEND` and its companion variables describe.
pub fn auto_configure_backend() -> Result<Arc<dyn Backend>, ConfigError> {
    auto_configure_backend_from(process_env)
}

/// [`auto_configure_backend`] with variables from `lookup`.
pub fn auto_configure_backend_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Backend>, ConfigError> {
    let env = Env(&lookup);
    let kind = env
        .get(CACHE_BACKEND)
        .unwrap_or_else(|| "memory".to_owned());
    match kind.trim().to_ascii_lowercase().as_str() {
        "memory" => memory(&env, 1000),
        "redis" => redis(&env, &format!("when {CACHE_BACKEND}=redis")),
        "memcached" => memcached(&env),
        _ => Err(ConfigError::Invalid {
            variable: CACHE_BACKEND,
            value: kind,
            accepted: "accepted values are memory, redis, memcached".to_owned(),
        }),
    }
}

/// The guide's environments: `development` → memory, `testing` → a small memory cache,
/// `staging` and `production` → Redis from `REDIS_URL` (required) and the other `REDIS_*` variables.
pub fn get_backend_for_environment(environment: &str) -> Result<Arc<dyn Backend>, ConfigError> {
    get_backend_for_environment_from(environment, process_env)
}

/// [`get_backend_for_environment`] with variables from `lookup`.
pub fn get_backend_for_environment_from(
    environment: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Backend>, ConfigError> {
    let env = Env(&lookup);
    match environment.trim().to_ascii_lowercase().as_str() {
        "development" | "dev" => memory(&env, 1000),
        "testing" | "test" => memory(&env, 100),
        "staging" | "production" | "prod" => {
            redis(&env, &format!("when {ENVIRONMENT}={}", environment.trim()))
        }
        _ => Err(ConfigError::Invalid {
            variable: ENVIRONMENT,
            value: environment.to_owned(),
            accepted: "accepted values are development, testing, staging, production".to_owned(),
        }),
    }
}

/// `middleware` with the limits from [`CACHE_MAX_BODY_SIZE`], [`CACHE_MAX_REQUEST_BODY_SIZE`],
/// [`CACHE_BACKEND_TIMEOUT`], [`CACHE_HONOR_REQUEST_CACHE_CONTROL`], [`CACHE_COALESCE_TIMEOUT`],
/// [`CACHE_FLEET_SINGLE_FLIGHT`], [`CACHE_EARLY_REFRESH`], [`CACHE_HIT_FOR_MISS`],
/// [`CACHE_FILL_MAX_BYTES`] and [`CACHE_TAG_HEADER`]; unset variables keep its settings.
pub fn configure_middleware(middleware: CacheMiddleware) -> Result<CacheMiddleware, ConfigError> {
    configure_middleware_from(middleware, process_env)
}

/// [`configure_middleware`] with variables from `lookup`.
pub fn configure_middleware_from(
    mut middleware: CacheMiddleware,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<CacheMiddleware, ConfigError> {
    let env = Env(&lookup);
    if let Some(bytes) = env.count_up_to(CACHE_MAX_BODY_SIZE, MAX_STORED_BODY as u64)? {
        middleware = middleware.max_body_size(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    if let Some(bytes) = env.count(CACHE_MAX_REQUEST_BODY_SIZE)? {
        middleware = middleware.max_request_body_size(usize::try_from(bytes).unwrap_or(usize::MAX));
    }
    if let Some(limit) = env.seconds(CACHE_BACKEND_TIMEOUT)? {
        middleware = middleware.backend_timeout(limit);
    }
    if let Some(honor) = env.flag(CACHE_HONOR_REQUEST_CACHE_CONTROL)? {
        middleware = middleware.honor_request_cache_control(honor);
    }
    if let Some(limit) = env.seconds(CACHE_COALESCE_TIMEOUT)? {
        middleware = middleware.coalesce_timeout(limit);
    }
    if let Some(on) = env.flag(CACHE_FLEET_SINGLE_FLIGHT)? {
        middleware = middleware.fleet_single_flight(on);
    }
    if let Some(fraction) = env.fraction(CACHE_EARLY_REFRESH)? {
        middleware = middleware.early_refresh(fraction);
    }
    if let Some(limit) = env.seconds_or_off(CACHE_HIT_FOR_MISS)? {
        middleware = middleware.hit_for_miss(limit);
    }
    if let Some(bytes) = env.bytes_or_off(CACHE_FILL_MAX_BYTES)? {
        middleware = middleware.fill_max_bytes(bytes);
    }
    if let Some(value) = env.get(CACHE_TAG_HEADER) {
        middleware = middleware.tag_header(tag_field(&value)?);
    }
    Ok(middleware)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Typed reads of the variables; empty values count as unset. (Flags and lists are read only
/// for Redis.)
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn count(&self, name: &'static str) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(invalid(name, &value, "a whole number of at least 1")),
        }
    }

    /// A count from 1 to `most`.
    fn count_up_to(&self, name: &'static str, most: u64) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.trim().parse::<u64>() {
            Ok(n) if (1..=most).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                name,
                &value,
                &format!("a whole number from 1 to {most}"),
            )),
        }
    }

    /// A size where `0` means off.
    fn bytes_or_off(&self, name: &'static str) -> Result<Option<u64>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        value
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid(name, &value, "a whole number of bytes, or 0 for none"))
    }

    fn flag(&self, name: &'static str) -> Result<Option<bool>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(invalid(
                name,
                &value,
                "true or false (also 1/0, yes/no, on/off)",
            )),
        }
    }

    fn fraction(&self, name: &'static str) -> Result<Option<f64>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.trim().parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(Some(f)),
            _ => Err(invalid(
                name,
                &value,
                "a fraction between 0 and 1, e.g. 0.1",
            )),
        }
    }

    fn seconds(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match value.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(invalid(
                name,
                &value,
                "a number of seconds greater than 0, e.g. 30 or 0.5",
            )),
        }
    }

    /// Seconds where `0` means off.
    fn seconds_or_off(&self, name: &'static str) -> Result<Option<Duration>, ConfigError> {
        match self.get(name) {
            Some(value) if value.trim().parse::<f64>() == Ok(0.0) => Ok(Some(Duration::ZERO)),
            Some(value) => self.seconds(name).map_err(|_| {
                invalid(
                    name,
                    &value,
                    "a number of seconds, e.g. 10 or 0.5, or 0 for off",
                )
            }),
            None => Ok(None),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A field name for tags. Fields HTTP gives a meaning are refused: the tag field is removed from
/// every response, so naming one of them would strip it from what clients receive.
fn tag_field(value: &str) -> Result<http::HeaderName, ConfigError> {
    const MEANINGFUL: &[&str] = &[
        "age",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expires",
        "last-modified",
        "location",
        "set-cookie",
        "transfer-encoding",
        "vary",
        "www-authenticate",
        "x-cache",
        "cache-status",
    ];
    let accepted = "a response field name for tags, e.g. Surrogate-Key or Cache-Tag, not one HTTP gives a meaning";
    match http::HeaderName::from_bytes(value.trim().as_bytes()) {
        Ok(name) if !MEANINGFUL.contains(&name.as_str()) => Ok(name),
        _ => Err(invalid(CACHE_TAG_HEADER, value, accepted)),
    }
}

fn invalid(variable: &'static str, value: &str, accepted: &str) -> ConfigError {
    ConfigError::Invalid {
        variable,
        value: redact_url(value),
        accepted: format!("expected {accepted}"),
    }
}

fn memory(env: &Env<'_>, default_size: u64) -> Result<Arc<dyn Backend>, ConfigError> {
    let size = env.count(MEMORY_CACHE_SIZE)?.unwrap_or(default_size);
    let mut builder = MemoryBackend::builder().max_size(size);
    if let Some(bytes) = env.count(MEMORY_CACHE_MAX_BYTES)? {
        builder = builder.max_bytes(bytes);
    }
    Ok(Arc::new(builder.build()))
}

#[cfg(feature = "redis")]
fn redis(env: &Env<'_>, context: &str) -> Result<Arc<dyn Backend>, ConfigError> {
    use crate::backends::{KeepaliveOptions, RedisBackend};
    let sentinels = env.list(REDIS_SENTINELS);
    let mut cluster_nodes = env.list(REDIS_CLUSTER_NODES);
    let url = env.get(REDIS_URL);
    let (mut builder, url_variable) = if !sentinels.is_empty() {
        let master = env
            .get(REDIS_SENTINEL_MASTER)
            .unwrap_or_else(|| "mymaster".to_owned());
        (
            RedisBackend::sentinel_builder(master, sentinels),
            REDIS_SENTINELS,
        )
    } else if !cluster_nodes.is_empty() {
        cluster_nodes.extend(url);
        (
            RedisBackend::cluster_builder(cluster_nodes),
            REDIS_CLUSTER_NODES,
        )
    } else {
        let url = url.ok_or_else(|| ConfigError::Missing {
            variable: REDIS_URL,
            context: format!("{context} (e.g. redis://localhost:6379)"),
        })?;
        (RedisBackend::builder(url), REDIS_URL)
    };
    if let Some(n) = env.count(REDIS_MAX_CONNECTIONS)? {
        builder = builder.max_connections(n as usize);
    }
    if let Some(password) = env.get(REDIS_PASSWORD) {
        builder = builder.password(password);
    }
    if let Some(retry) = env.flag(REDIS_RETRY_ON_TIMEOUT)? {
        builder = builder.retry_on_timeout(retry);
    }
    let mut keepalive = KeepaliveOptions::new();
    if let Some(idle) = env.seconds(REDIS_SOCKET_KEEPALIVE_IDLE)? {
        keepalive = keepalive.idle(idle);
    }
    if let Some(interval) = env.seconds(REDIS_SOCKET_KEEPALIVE_INTERVAL)? {
        keepalive = keepalive.interval(interval);
    }
    if let Some(count) = env.count(REDIS_SOCKET_KEEPALIVE_COUNT)? {
        let count = u32::try_from(count).map_err(|_| {
            invalid(
                REDIS_SOCKET_KEEPALIVE_COUNT,
                &count.to_string(),
                "a small whole number",
            )
        })?;
        keepalive = keepalive.count(count);
    }
    let keepalive_set = keepalive != KeepaliveOptions::default();
    if let Some(enabled) = env
        .flag(REDIS_SOCKET_KEEPALIVE)?
        .or(keepalive_set.then_some(true))
    {
        builder = builder
            .socket_keepalive(enabled)
            .socket_keepalive_options(keepalive);
    }
    if let Some(every) = env.seconds(REDIS_HEALTH_CHECK_INTERVAL)? {
        builder = builder.health_check_interval(every);
    }
    if let Some(bytes) = env.bytes_or_off(REDIS_LOCAL_TIER_MAX_BYTES)? {
        builder = builder.local_tier(bytes);
    }
    if let Some(limit) = env.seconds(REDIS_TIMEOUT)? {
        builder = builder.timeout(limit);
    }
    if let Some(path) = env.get(REDIS_SSL_CA_CERTS) {
        builder = builder.ssl_ca_certs(path);
    }
    if let Some(reqs) = env.get(REDIS_SSL_CERT_REQS) {
        let parsed = reqs
            .parse()
            .map_err(|accepted: String| ConfigError::Invalid {
                variable: REDIS_SSL_CERT_REQS,
                value: reqs.clone(),
                accepted,
            })?;
        builder = builder.ssl_cert_reqs(parsed);
    }
    if let Some(namespace) = env.get(CACHE_NAMESPACE) {
        builder = builder.namespace(namespace);
    }
    let backend = builder.build().map_err(|source| ConfigError::Backend {
        variable: build_error_variable(&source, url_variable),
        source,
    })?;
    Ok(Arc::new(backend))
}

#[cfg(not(feature = "redis"))]
fn redis(_: &Env<'_>, _: &str) -> Result<Arc<dyn Backend>, ConfigError> {
    Err(ConfigError::Invalid {
        variable: CACHE_BACKEND,
        value: "redis".to_owned(),
        accepted: "this build has no Redis support: enable the crate feature \"redis\"".to_owned(),
    })
}

/// The variable a builder error points back to.
#[cfg(feature = "redis")]
fn build_error_variable(error: &BuildError, url_variable: &'static str) -> &'static str {
    match error {
        BuildError::InvalidOption { option, .. } => match *option {
            "max_connections" => REDIS_MAX_CONNECTIONS,
            "ssl_ca_certs" => REDIS_SSL_CA_CERTS,
            "namespace" => CACHE_NAMESPACE,
            "master_name" => REDIS_SENTINEL_MASTER,
            "health_check_interval" => REDIS_HEALTH_CHECK_INTERVAL,
            "timeout" => REDIS_TIMEOUT,
            _ => url_variable,
        },
        _ => url_variable,
    }
}

#[cfg(feature = "memcached")]
fn memcached(env: &Env<'_>) -> Result<Arc<dyn Backend>, ConfigError> {
    use crate::backends::MemcachedBackend;
    let url = env.get(MEMCACHED_URL).ok_or_else(|| ConfigError::Missing {
        variable: MEMCACHED_URL,
        context: format!("when {CACHE_BACKEND}=memcached (e.g. memcached://localhost:11211)"),
    })?;
    let mut builder = MemcachedBackend::builder(url);
    if let Some(n) = env.count(MEMCACHED_MAX_CONNECTIONS)? {
        builder = builder.max_connections(n as usize);
    }
    if let Some(namespace) = env.get(CACHE_NAMESPACE) {
        builder = builder.namespace(namespace);
    }
    let backend = builder.build().map_err(|source| ConfigError::Backend {
        variable: match source {
            BuildError::InvalidOption {
                option: "namespace",
                ..
            } => CACHE_NAMESPACE,
            _ => MEMCACHED_URL,
        },
        source,
    })?;
    Ok(Arc::new(backend))
}

#[cfg(not(feature = "memcached"))]
fn memcached(_: &Env<'_>) -> Result<Arc<dyn Backend>, ConfigError> {
    Err(ConfigError::Invalid {
        variable: CACHE_BACKEND,
        value: "memcached".to_owned(),
        accepted: "this build has no Memcached support: enable the crate feature \"memcached\""
            .to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn configure(pairs: &[(&str, &str)]) -> Result<Arc<dyn Backend>, ConfigError> {
        auto_configure_backend_from(vars(pairs))
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        configure(pairs).expect_err("an error").to_string()
    }

    #[test]
    fn limits_reach_the_middleware_and_bad_ones_are_named() {
        let base = || CacheMiddleware::new(MemoryBackend::new(10));
        let configured = configure_middleware_from(
            base(),
            vars(&[
                (CACHE_MAX_BODY_SIZE, "5000000"),
                (CACHE_MAX_REQUEST_BODY_SIZE, "1024"),
                (CACHE_BACKEND_TIMEOUT, "0.25"),
                (CACHE_COALESCE_TIMEOUT, "2.5"),
                (CACHE_FLEET_SINGLE_FLIGHT, "false"),
                (CACHE_EARLY_REFRESH, "0.1"),
                (CACHE_TAG_HEADER, "Cache-Tag"),
                (CACHE_HIT_FOR_MISS, "0"),
                (CACHE_FILL_MAX_BYTES, "0"),
            ]),
        )
        .unwrap();
        let text = format!("{configured:?}");
        for expected in [
            "max_body_size: 5000000",
            "max_request_body_size: 1024",
            "backend_timeout: 250ms",
            "coalesce_timeout: 2.5s",
            "fleet_single_flight: false",
            "early_refresh: 0.1",
            "tag_header: \"cache-tag\"",
            "hit_for_miss: 0ns",
            "fill_max_bytes: 0",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
        let error = configure_middleware_from(base(), vars(&[(CACHE_MAX_BODY_SIZE, "1MB")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "CACHE_MAX_BODY_SIZE=\"1MB\" is not valid: expected a whole number from 1 to 4294967294"
        );
        // The entry format holds bodies up to 4 GiB.
        let error = configure_middleware_from(base(), vars(&[(CACHE_MAX_BODY_SIZE, "4294967295")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("from 1 to 4294967294"), "{error}");
        let error =
            configure_middleware_from(base(), vars(&[(CACHE_FLEET_SINGLE_FLIGHT, "yes please")]))
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("CACHE_FLEET_SINGLE_FLIGHT") && error.contains("true"),
            "{error}"
        );
        let error = configure_middleware_from(base(), vars(&[(CACHE_EARLY_REFRESH, "10%")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "CACHE_EARLY_REFRESH=\"10%\" is not valid: expected a fraction between 0 and 1, e.g. 0.1"
        );
        let error = configure_middleware_from(base(), vars(&[(CACHE_HIT_FOR_MISS, "soon")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("CACHE_HIT_FOR_MISS=") && error.contains("0 for off"),
            "{error}"
        );
        for meaningful in ["Cache-Control", "content-type", "two words", "Set-Cookie"] {
            let error = configure_middleware_from(base(), vars(&[(CACHE_TAG_HEADER, meaningful)]))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("CACHE_TAG_HEADER=") && error.contains("Surrogate-Key"),
                "{error}"
            );
        }
    }

    #[test]
    fn memory_is_the_default() {
        assert_eq!(configure(&[]).unwrap().name(), "memory");
        assert_eq!(
            configure(&[(CACHE_BACKEND, " Memory ")]).unwrap().name(),
            "memory"
        );
    }

    #[test]
    fn each_backend_is_chosen_by_cache_backend() {
        let redis = configure(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_URL, "redis://localhost:6379"),
        ]);
        assert_eq!(redis.unwrap().name(), "redis");
        let memcached = configure(&[
            (CACHE_BACKEND, "memcached"),
            (MEMCACHED_URL, "localhost:11211"),
        ]);
        assert_eq!(memcached.unwrap().name(), "memcached");
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_what_is_accepted() {
        assert_eq!(
            error(&[(CACHE_BACKEND, "mongo")]),
            "CACHE_BACKEND=\"mongo\" is not valid: accepted values are memory, redis, memcached"
        );
        assert_eq!(
            error(&[(MEMORY_CACHE_SIZE, "abc")]),
            "MEMORY_CACHE_SIZE=\"abc\" is not valid: expected a whole number of at least 1"
        );
        let redis = [(CACHE_BACKEND, "redis"), (REDIS_URL, "redis://h")];
        let zero = [&redis[..], &[(REDIS_MAX_CONNECTIONS, "0")]].concat();
        assert!(error(&zero).starts_with("REDIS_MAX_CONNECTIONS=\"0\" is not valid"));
        let flag = [&redis[..], &[(REDIS_RETRY_ON_TIMEOUT, "maybe")]].concat();
        assert!(error(&flag).contains("true or false"));
        let reqs = [&redis[..], &[(REDIS_SSL_CERT_REQS, "optional")]].concat();
        assert!(error(&reqs).contains("required, none"));
    }

    #[test]
    fn a_url_with_the_wrong_scheme_names_the_variable_and_hides_the_password() {
        let message = error(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_URL, "http://:hunter2@host:6379"),
        ]);
        assert!(message.starts_with("REDIS_URL: invalid URL"), "{message}");
        assert!(
            message.contains("redis://") && !message.contains("hunter2"),
            "{message}"
        );
        let message = error(&[
            (CACHE_BACKEND, "memcached"),
            (MEMCACHED_URL, "redis://host"),
        ]);
        assert!(message.starts_with("MEMCACHED_URL"), "{message}");
    }

    #[test]
    fn missing_urls_are_errors_not_silent_defaults() {
        let message = error(&[(CACHE_BACKEND, "redis")]);
        assert!(
            message.starts_with("REDIS_URL is required when CACHE_BACKEND=redis"),
            "{message}"
        );
        let message = error(&[(CACHE_BACKEND, "memcached")]);
        assert!(
            message.starts_with("MEMCACHED_URL is required"),
            "{message}"
        );
    }

    #[test]
    fn every_redis_variable_reaches_the_backend() {
        let backend = configure(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_URL, "redis://host:6379"),
            (REDIS_MAX_CONNECTIONS, "20"),
            (REDIS_PASSWORD, "pw"),
            (REDIS_RETRY_ON_TIMEOUT, "true"),
            (REDIS_SOCKET_KEEPALIVE_IDLE, "1"),
            (REDIS_SOCKET_KEEPALIVE_INTERVAL, "3"),
            (REDIS_SOCKET_KEEPALIVE_COUNT, "5"),
            (REDIS_HEALTH_CHECK_INTERVAL, "30"),
            (REDIS_LOCAL_TIER_MAX_BYTES, "67108864"),
            (CACHE_NAMESPACE, "shop"),
        ])
        .unwrap();
        let debug = format!("{backend:?}");
        assert!(debug.contains("local_tier_bytes: 67108864"), "{debug}");
        let untiered = configure(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_URL, "redis://host:6379"),
            (REDIS_LOCAL_TIER_MAX_BYTES, "0"),
        ])
        .unwrap();
        assert!(format!("{untiered:?}").contains("local_tier_bytes: 0"));
        let tiered_by_default =
            configure(&[(CACHE_BACKEND, "redis"), (REDIS_URL, "redis://host:6379")]).unwrap();
        assert!(format!("{tiered_by_default:?}").contains("local_tier_bytes: 67108864"));
        let error = error(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_URL, "redis://host:6379"),
            (REDIS_LOCAL_TIER_MAX_BYTES, "64MB"),
        ]);
        assert!(
            error.contains("REDIS_LOCAL_TIER_MAX_BYTES") && error.contains("0 for none"),
            "{error}"
        );
        assert!(debug.contains("max_connections: 20"), "{debug}");
        assert!(debug.contains("namespace: \"shop\""), "{debug}");
        assert!(!debug.contains("pw\""), "{debug}");
    }

    #[test]
    fn cluster_and_sentinel_variables_select_those_topologies() {
        let cluster = configure(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_CLUSTER_NODES, "redis://a:7000, redis://b:7001"),
        ]);
        assert!(
            format!("{:?}", cluster.unwrap()).contains("cluster[redis://a:7000,redis://b:7001]")
        );
        let sentinel = configure(&[
            (CACHE_BACKEND, "redis"),
            (REDIS_SENTINELS, "redis://s:26379"),
        ]);
        assert!(format!("{:?}", sentinel.unwrap()).contains("sentinel[redis://s:26379]/mymaster"));
    }

    #[test]
    fn environments_pick_their_backend() {
        let env = |name: &str, pairs: &[(&str, &str)]| {
            get_backend_for_environment_from(name, vars(pairs))
        };
        assert_eq!(env("development", &[]).unwrap().name(), "memory");
        assert_eq!(env("testing", &[]).unwrap().name(), "memory");
        let production = env(
            "production",
            &[(REDIS_URL, "redis://prod-redis-cluster:6379")],
        );
        assert_eq!(production.unwrap().name(), "redis");
        let missing = env("staging", &[]).err().unwrap().to_string();
        assert!(
            missing.starts_with("REDIS_URL is required when ENVIRONMENT=staging"),
            "{missing}"
        );
        let unknown = env("qa", &[]).err().unwrap().to_string();
        assert!(unknown.starts_with("ENVIRONMENT=\"qa\"") && unknown.contains("production"));
    }
}
