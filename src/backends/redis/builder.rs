//! Options of the Redis backend, as the guide names them.

use super::RedisBackend;
use crate::backends::pool::check_options;
use crate::backends::BuildError;
use crate::redact::redact_url;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where the Redis data lives.
#[derive(Clone)]
pub(crate) enum Topology {
    /// One server (or a proxy in front of several).
    Standalone { url: String },
    /// A Redis Cluster reached through any of these seed nodes; keys spread over its slots.
    Cluster { nodes: Vec<String> },
    /// The master that these sentinels name `master_name`; failovers are followed.
    Sentinel {
        master_name: String,
        sentinels: Vec<String>,
    },
}

/// `ssl_cert_reqs`: whether a TLS server certificate is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    /// Verify the server certificate against the CA (the default; `"required"`).
    #[default]
    Required,
    /// Accept any certificate (`"none"`): encryption without authentication. For tests only.
    None,
}

impl std::str::FromStr for CertReqs {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "required" => Ok(CertReqs::Required),
            "none" => Ok(CertReqs::None),
            _ => Err("accepted values: required, none".to_owned()),
        }
    }
}

/// `socket_keepalive_options`: TCP keepalive timing (the guide's `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT`). Unset values keep the operating system's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepaliveOptions {
    /// Idle time before the first probe (`TCP_KEEPIDLE`).
    pub idle: Option<Duration>,
    /// Time between probes (`TCP_KEEPINTVL`).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`).
    pub count: Option<u32>,
}

impl KeepaliveOptions {
    pub fn new() -> Self {
        Self::default()
    }
    #[must_use]
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }
    #[must_use]
    pub fn count(mut self, count: u32) -> Self {
        self.count = Some(count);
        self
    }
}

/// Builds a [`RedisBackend`]; see [`RedisBackend::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisBackendBuilder {
    pub(crate) topology: Topology,
    pub(crate) password: Option<String>,
    pub(crate) max_connections: usize,
    pub(crate) retry_on_timeout: bool,
    pub(crate) socket_keepalive: bool,
    pub(crate) keepalive: KeepaliveOptions,
    pub(crate) health_check_interval: Option<Duration>,
    pub(crate) ssl_ca_certs: Option<PathBuf>,
    pub(crate) ssl_cert_reqs: CertReqs,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) namespace: String,
    /// Bytes of the in-process tier kept consistent by key tracking (0: none).
    pub(crate) local_tier_bytes: u64,
}

/// The in-process tier's size unless set: hits on the hottest 64 MiB of entries cost no round
/// trip (a Redis hit otherwise costs about twice the CPU of a memory hit).
pub const DEFAULT_LOCAL_TIER_BYTES: u64 = 64 * 1024 * 1024;

impl RedisBackendBuilder {
    pub(crate) fn new(topology: Topology) -> Self {
        RedisBackendBuilder {
            topology,
            password: None,
            max_connections: 10,
            retry_on_timeout: false,
            socket_keepalive: false,
            keepalive: KeepaliveOptions::default(),
            health_check_interval: None,
            ssl_ca_certs: None,
            ssl_cert_reqs: CertReqs::Required,
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            namespace: "cache-middleware".to_owned(),
            local_tier_bytes: DEFAULT_LOCAL_TIER_BYTES,
        }
    }

    /// Most connections open at once (default 10). Each multiplexes many requests. The local tier
    /// keeps one more per master, for key tracking.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Retry an operation once on a time-out or a dropped connection (default off).
    pub fn retry_on_timeout(mut self, retry: bool) -> Self {
        self.retry_on_timeout = retry;
        self
    }

    /// Enable TCP keepalive on every connection (default off).
    pub fn socket_keepalive(mut self, enabled: bool) -> Self {
        self.socket_keepalive = enabled;
        self
    }

    /// Keepalive timing; needs `socket_keepalive(true)`.
    pub fn socket_keepalive_options(mut self, options: KeepaliveOptions) -> Self {
        self.keepalive = options;
        self
    }

    /// Check idle connections in the background this often (PING), replacing broken ones.
    pub fn health_check_interval(mut self, every: Duration) -> Self {
        self.health_check_interval = Some(every);
        self
    }

    /// The password, instead of (or overriding) one in the URL.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// A PEM file of the CA that signed the server's certificate (`rediss://` only).
    pub fn ssl_ca_certs(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_ca_certs = Some(path.into());
        self
    }

    /// Whether the server certificate is verified (default [`CertReqs::Required`]).
    pub fn ssl_cert_reqs(mut self, reqs: CertReqs) -> Self {
        self.ssl_cert_reqs = reqs;
        self
    }

    /// Most time one attempt of an operation may take (default 50 ms). The middleware's latency budget applies
    /// on top of it.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Most time opening one connection may take (default 1 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Prefix of every key (default `"cache-middleware"`); `clear()` removes only keys under it.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// An in-process tier of up to `max_bytes` in front of this server, kept consistent with it
    /// by Redis's key tracking (RESP3, broadcast mode on the namespace): reads it holds cost no
    /// round trip, and a change by any client removes the key from it at once. While tracking is
    /// lost, or its server is no longer the master, the tier is emptied and bypassed (see
    /// `docs/architecture.md` for the bound). Standalone servers, Sentinel (tracking follows a
    /// failover) and Cluster (tracking on every master). On by default with
    /// [`DEFAULT_LOCAL_TIER_BYTES`]; 0 turns it off (every read then asks Redis).
    pub fn local_tier(mut self, max_bytes: u64) -> Self {
        self.local_tier_bytes = max_bytes;
        self
    }

    /// Checks the options and builds the backend. No connection is opened: the server need not be up.
    pub fn build(self) -> Result<RedisBackend, BuildError> {
        self.validate()?;
        RedisBackend::from_builder(self)
    }

    fn validate(&self) -> Result<(), BuildError> {
        let invalid = |option: &'static str, reason: &str| Err(BuildError::invalid(option, reason));
        check_options(self.max_connections, self.timeout, self.connect_timeout)?;
        if self.namespace.is_empty() {
            return invalid(
                "namespace",
                "must not be empty (clear() deletes only keys under it)",
            );
        }
        if self.keepalive != KeepaliveOptions::default() && !self.socket_keepalive {
            return invalid(
                "socket_keepalive_options",
                "need socket_keepalive(true) to take effect",
            );
        }
        if self.health_check_interval.is_some_and(|d| d.is_zero()) {
            return invalid("health_check_interval", "must be longer than zero");
        }
        let urls: Vec<&String> = match &self.topology {
            Topology::Standalone { url } => vec![url],
            Topology::Cluster { nodes } => nodes.iter().collect(),
            Topology::Sentinel {
                master_name,
                sentinels,
            } => {
                if master_name.is_empty() {
                    return invalid("master_name", "must not be empty");
                }
                sentinels.iter().collect()
            }
        };
        if urls.is_empty() {
            return invalid("nodes", "at least one address is needed");
        }
        for url in urls {
            check_url(url)?;
        }
        if self.ssl_ca_certs.is_some() && !self.uses_tls() {
            return invalid("ssl_ca_certs", "needs a rediss:// URL");
        }
        Ok(())
    }

    pub(crate) fn uses_tls(&self) -> bool {
        self.urls().any(|url| url.starts_with("rediss://"))
    }

    pub(crate) fn urls(&self) -> impl Iterator<Item = &String> {
        let urls: Vec<&String> = match &self.topology {
            Topology::Standalone { url } => vec![url],
            Topology::Cluster { nodes } => nodes.iter().collect(),
            Topology::Sentinel { sentinels, .. } => sentinels.iter().collect(),
        };
        urls.into_iter()
    }

    /// What logs may show of the target: URLs with passwords masked.
    pub(crate) fn describe(&self) -> String {
        let urls: Vec<String> = self.urls().map(|u| redact_url(u)).collect();
        match &self.topology {
            Topology::Standalone { .. } => urls.join(","),
            Topology::Cluster { .. } => format!("cluster[{}]", urls.join(",")),
            Topology::Sentinel { master_name, .. } => {
                format!("sentinel[{}]/{master_name}", urls.join(","))
            }
        }
    }
}

/// Accepts `redis://` and `rediss://` URLs that redis-rs can read.
fn check_url(url: &str) -> Result<(), BuildError> {
    let invalid = |reason: String| BuildError::InvalidUrl {
        url: redact_url(url),
        reason,
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(invalid(
            "the scheme must be redis:// or rediss:// (TLS)".to_owned(),
        ));
    }
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| invalid(crate::redact::scrub(&e.to_string(), url)))
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("target", &self.describe())
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("max_connections", &self.max_connections)
            .field("retry_on_timeout", &self.retry_on_timeout)
            .field("socket_keepalive", &self.socket_keepalive)
            .field("keepalive", &self.keepalive)
            .field("health_check_interval", &self.health_check_interval)
            .field("ssl_ca_certs", &self.ssl_ca_certs)
            .field("ssl_cert_reqs", &self.ssl_cert_reqs)
            .field("timeout", &self.timeout)
            .field("namespace", &self.namespace)
            .field("local_tier_bytes", &self.local_tier_bytes)
            .finish()
    }
}
