//! The Redis backend (feature `redis`): standalone, TLS, Sentinel and Cluster, on redis-rs.
//!
//! Values are written with `SET key value PX ttl`, so the TTL is set atomically with the value.
//! `clear()` walks this namespace with `SCAN` and removes keys with `UNLINK`, in batches, on every
//! cluster master; it never uses `KEYS` or `FLUSHDB`, so other data in the same Redis survives.

mod builder;
mod connect;
mod tier;
mod tracking;

pub use builder::{CertReqs, KeepaliveOptions, RedisBackendBuilder, DEFAULT_LOCAL_TIER_BYTES};

use super::pool::{Pool, Ticket};
use super::transfer_allowance;
use super::{Backend, BackendError, BuildError, Lease, STORE_APART_FROM};
use async_trait::async_trait;
use builder::Topology;
use bytes::Bytes;
use connect::{Conn, Connector};
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{FromRedisValue, RedisError, RedisFuture, Value};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tier::{FillTicket, Tier};

const SCAN_BATCH: usize = 500;

/// The Redis backend. Cloning gives another handle to the same connections.
///
/// ```no_run
/// use cache_middleware::backends::{KeepaliveOptions, RedisBackend};
/// use std::time::Duration;
///
/// // Basic configuration
/// let redis_backend = RedisBackend::new("redis://localhost:6379")?;
///
/// // Production configuration with connection pooling
/// let redis_backend = RedisBackend::builder("redis://prod-redis:6379")
///     .max_connections(20)
///     .retry_on_timeout(true)
///     .socket_keepalive(true)
///     .socket_keepalive_options(
///         KeepaliveOptions::new()
///             .idle(Duration::from_secs(1))      // TCP_KEEPIDLE
///             .interval(Duration::from_secs(3))  // TCP_KEEPINTVL
///             .count(5),                         // TCP_KEEPCNT
///     )
///     .health_check_interval(Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), cache_middleware::backends::BuildError>(())
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool<Conn>,
    connector: Connector,
    /// The in-process tier, when configured (`local_tier`).
    tier: Option<Arc<Tier>>,
    tracking_started: AtomicBool,
    prefix: String,
    retry_on_timeout: bool,
    timeout: Duration,
    health_check_interval: Option<Duration>,
    health_started: AtomicBool,
    options: RedisBackendBuilder,
}

impl RedisBackend {
    /// A backend for the server at `url` (`redis://[:password@]host[:port][/db]`, or `rediss://`
    /// for TLS) with default options.
    pub fn new(url: impl Into<String>) -> Result<Self, BuildError> {
        Self::builder(url).build()
    }

    /// A builder for one server (or a proxy), with every option of the guide.
    pub fn builder(url: impl Into<String>) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Topology::Standalone { url: url.into() })
    }

    /// A builder for a Redis Cluster reached through any of these seed nodes.
    pub fn cluster_builder<S: Into<String>>(
        nodes: impl IntoIterator<Item = S>,
    ) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Topology::Cluster {
            nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    /// A builder for the master that these sentinels (`redis://host:26379` URLs) know as
    /// `master_name`. Connections follow a failover to the promoted replica.
    pub fn sentinel_builder<S: Into<String>>(
        master_name: impl Into<String>,
        sentinels: impl IntoIterator<Item = S>,
    ) -> RedisBackendBuilder {
        RedisBackendBuilder::new(Topology::Sentinel {
            master_name: master_name.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
        })
    }

    pub(crate) fn from_builder(options: RedisBackendBuilder) -> Result<Self, BuildError> {
        let connector = Connector::new(&options)?;
        let connect = connector.clone();
        let pool = Pool::new(
            options.max_connections,
            options.connect_timeout,
            move || {
                let connect = connect.clone();
                Box::pin(async move { connect.connect().await })
            },
        );
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                pool,
                connector,
                tier: (options.local_tier_bytes > 0)
                    .then(|| Arc::new(Tier::new(options.local_tier_bytes))),
                tracking_started: AtomicBool::new(false),
                prefix: format!("{}:", options.namespace),
                retry_on_timeout: options.retry_on_timeout,
                timeout: options.timeout,
                health_check_interval: options.health_check_interval,
                health_started: AtomicBool::new(false),
                options,
            }),
        })
    }

    /// Where this backend connects, with passwords masked.
    pub fn target(&self) -> String {
        self.inner.options.describe()
    }

    /// Keepalive, pool size and the other options it was built with (passwords masked).
    pub fn options(&self) -> &RedisBackendBuilder {
        &self.inner.options
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn lease_key(&self, key: &str) -> String {
        format!("{}lease:{key}", self.inner.prefix)
    }

    /// Runs `cmd` (a command or a pipeline); a time-out or a dropped connection discards the
    /// connection and, with `retry_on_timeout`, tries once more on a fresh one.
    async fn run<T: FromRedisValue + Send, Q: Query>(&self, cmd: &Q) -> Result<T, BackendError> {
        self.run_within(cmd, Duration::ZERO).await
    }

    /// [`run`](Self::run), with `extra` time on top of the command time-out (a large value).
    async fn run_within<T: FromRedisValue + Send, Q: Query>(
        &self,
        cmd: &Q,
        extra: Duration,
    ) -> Result<T, BackendError> {
        let limit = self.inner.timeout + extra;
        self.start_health_checks();
        self.start_tracking();
        let attempts = if self.inner.retry_on_timeout { 2 } else { 1 };
        let mut last_error = None;
        for _ in 0..attempts {
            let (mut conn, ticket) = match self.inner.pool.checkout_shared().await {
                Ok(checked_out) => checked_out,
                Err(error) => return Err(last_error.unwrap_or(error)),
            };
            match tokio::time::timeout(limit, cmd.query::<T>(&mut conn)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if !is_connection_failure(&error) => {
                    return Err(server_error(error))
                }
                Ok(Err(error)) => {
                    self.inner.pool.discard(ticket).await;
                    last_error = Some(BackendError::Connection(error.to_string()));
                }
                Err(_) => {
                    self.inner.pool.discard(ticket).await;
                    last_error = Some(BackendError::Timeout(limit));
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn forget_in_tier(&self, full: &str) {
        if let Some(tier) = &self.inner.tier {
            tier.forget([full]);
        }
    }

    /// Spawns the key-tracking task of the in-process tier on first use.
    fn start_tracking(&self) {
        if self.inner.tier.is_none() || self.inner.tracking_started.swap(true, Ordering::Relaxed) {
            return;
        }
        tokio::spawn(tracking::track(Arc::downgrade(&self.inner)));
    }

    /// The value of the Redis key `full`, read from Redis whatever the tier holds.
    async fn get_from_redis(&self, full: &str) -> Result<Option<Bytes>, BackendError> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(full)).await?;
        Ok(value.map(Bytes::from))
    }

    /// `key`'s value and remaining lifetime, in one round trip, kept in the tier if nothing
    /// changed meanwhile.
    async fn get_into_tier(
        &self,
        tier: &Tier,
        ticket: FillTicket,
        full: &str,
    ) -> Result<Option<Bytes>, BackendError> {
        let mut both = redis::pipe();
        both.cmd("GET").arg(full).cmd("PTTL").arg(full);
        let (value, lives): (Option<Vec<u8>>, i64) = self.run(&both).await?;
        let value = value.map(Bytes::from);
        tier.fill(ticket, full, value.clone(), remaining(lives));
        Ok(value)
    }

    /// Spawns the health check task on first use (construction may happen outside a runtime).
    fn start_health_checks(&self) {
        let Some(every) = self.inner.health_check_interval else {
            return;
        };
        if self.inner.health_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(health_checks(weak, every));
    }

    /// SCAN + UNLINK of this namespace through `conn`, optionally routed to one cluster node.
    async fn clear_through(&self, node: Option<(String, u16)>) -> Result<(), BackendError> {
        let pattern = format!("{}*", escape_glob(&self.inner.prefix));
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let (next, keys): (u64, Vec<String>) = match &node {
                None => self.run(&scan).await?,
                Some((host, port)) => {
                    let (mut conn, _) = self.inner.pool.checkout_shared().await?;
                    let Conn::Cluster(cluster) = &mut conn else {
                        unreachable!("node routing is for clusters")
                    };
                    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    });
                    let reply = cluster
                        .route_command(scan, routing)
                        .await
                        .map_err(server_error)?;
                    FromRedisValue::from_redis_value(reply)
                        .map_err(|e| BackendError::Server(e.to_string()))?
                }
            };
            if !keys.is_empty() {
                // UNLINK frees memory in the background; in a cluster redis-rs splits it by slot.
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                self.run::<i64, _>(&unlink).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The masters of the cluster, from `CLUSTER NODES`.
    async fn cluster_masters(&self) -> Result<Vec<ClusterMaster>, BackendError> {
        let text: String = self
            .run(&redis::cmd("CLUSTER").arg("NODES").to_owned())
            .await?;
        Ok(parse_cluster_masters(&text))
    }
}

async fn health_checks(inner: Weak<Inner>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let live: Vec<(Conn, Ticket)> = inner.pool.snapshot();
        for (mut conn, ticket) in live {
            let ping = redis::cmd("PING");
            let reply =
                tokio::time::timeout(inner.timeout, ping.query_async::<String>(&mut conn)).await;
            if !matches!(reply, Ok(Ok(_))) {
                tracing::info!(target = %inner.options.describe(), "health check failed; reconnecting");
                inner.pool.discard(ticket).await;
            }
        }
    }
}

/// A lifetime as `PX` milliseconds: at least 1 (0 would be refused), at most what Redis reads.
fn px(ttl: Duration) -> i64 {
    ttl.as_millis().clamp(1, i64::MAX as u128) as i64
}

/// A `PTTL` answer as a lifetime: `None` for a key without one (or gone).
fn remaining(pttl: i64) -> Option<Duration> {
    u64::try_from(pttl).ok().map(Duration::from_millis)
}

/// What `run` sends: one command or a pipeline.
trait Query: Sync {
    fn query<'a, T: FromRedisValue + Send + 'a>(&'a self, conn: &'a mut Conn)
        -> RedisFuture<'a, T>;
}

impl Query for redis::Cmd {
    fn query<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        conn: &'a mut Conn,
    ) -> RedisFuture<'a, T> {
        Box::pin(self.query_async(conn))
    }
}

impl Query for redis::Pipeline {
    fn query<'a, T: FromRedisValue + Send + 'a>(
        &'a self,
        conn: &'a mut Conn,
    ) -> RedisFuture<'a, T> {
        Box::pin(self.query_async(conn))
    }
}

fn is_connection_failure(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        // A master demoted by a failover answers READONLY: reconnect to find the new one.
        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

fn server_error(error: RedisError) -> BackendError {
    BackendError::Server(error.to_string())
}

fn escape_glob(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A reachable master in `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ClusterMaster {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Whether it holds slots (a master without any holds no keys).
    pub(crate) serves_slots: bool,
}

/// The masters `CLUSTER NODES` lists (`<id> <ip:port@cport[,hostname]> <flags> ...`), without
/// failed or address-less ones.
pub(crate) fn parse_cluster_masters(text: &str) -> Vec<ClusterMaster> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !is_master || failed {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some(ClusterMaster {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: port.parse().ok()?,
                // Fields 4 to 8 are the master id, two times, the epoch and the link state.
                serves_slots: fields.nth(5).is_some(),
            })
        })
        .collect()
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let full = self.key(key);
        if let Some(tier) = &self.inner.tier {
            if let Some(found) = tier.get(&full) {
                return Ok(found);
            }
            if let Some(ticket) = tier.ticket() {
                return self.get_into_tier(tier, ticket, &full).await;
            }
        }
        self.get_from_redis(&full).await
    }

    async fn get_latest(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.get_from_redis(&self.key(key)).await
    }

    fn get_ready(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        let tier = self.inner.tier.as_ref()?;
        tier.get(&self.key(key)).map(Ok)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|key| self.key(key)).collect();
        let tier = self.inner.tier.as_ref();
        if let Some(tier) = tier {
            let known: Option<Vec<Option<Bytes>>> = full.iter().map(|k| tier.get(k)).collect();
            if let Some(values) = known {
                return Ok(values);
            }
        }
        let ticket = tier.and_then(|tier| tier.ticket());
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(&full);
        if ticket.is_some() {
            for key in &full {
                pipe.cmd("PTTL").arg(key);
            }
        }
        let answers: Vec<Value> = self.run(&pipe).await?;
        let mut answers = answers.into_iter();
        let values: Vec<Option<Vec<u8>>> = answers
            .next()
            .map(FromRedisValue::from_redis_value)
            .transpose()
            .map_err(|e| BackendError::Server(e.to_string()))?
            .unwrap_or_default();
        let values: Vec<Option<Bytes>> = values.into_iter().map(|v| v.map(Bytes::from)).collect();
        if let (Some(tier), Some(ticket)) = (tier, ticket) {
            for ((key, value), lives) in full.iter().zip(&values).zip(answers) {
                let lives = i64::from_redis_value(lives).ok().and_then(remaining);
                tier.fill(ticket, key, value.clone(), lives);
            }
        }
        Ok(values)
    }

    async fn get_range(
        &self,
        key: &str,
        start: usize,
        len: usize,
    ) -> Result<Option<Bytes>, BackendError> {
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        // Never through the local tier: windows of large values are not worth keeping.
        let mut cmd = redis::cmd("GETRANGE");
        cmd.arg(self.key(key)).arg(start).arg(start + len - 1);
        let window: Vec<u8> = self.run_within(&cmd, transfer_allowance(len)).await?;
        // Redis answers an empty string for a missing key as for a range past the end.
        Ok((!window.is_empty()).then(|| Bytes::from(window)))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        let mut cmd = redis::cmd("SET");
        let full = self.key(key);
        cmd.arg(&full).arg(value.as_ref()).arg("PX").arg(px(ttl));
        let written = self
            .run_within::<(), _>(&cmd, transfer_allowance(value.len()))
            .await;
        // Read-your-writes here, before Redis's report of this change arrives.
        self.forget_in_tier(&full);
        written
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let full = self.key(key);
        let deleted = self.run::<i64, _>(redis::cmd("UNLINK").arg(&full)).await;
        self.forget_in_tier(&full);
        deleted.map(drop)
    }

    async fn clear(&self) -> Result<(), BackendError> {
        // Decided by a connection: a plain URL may turn out to name a Cluster node.
        let (connection, _) = self.inner.pool.checkout_shared().await?;
        let cleared = if matches!(connection, Conn::Cluster(_)) {
            let mut cleared = Ok(());
            for master in self.cluster_masters().await? {
                let node = (master.host, master.port);
                cleared = cleared.and(self.clear_through(Some(node)).await);
            }
            cleared
        } else {
            self.clear_through(None).await
        };
        if let Some(tier) = &self.inner.tier {
            tier.forget_all();
        }
        cleared
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn store_apart_from(&self) -> Option<usize> {
        Some(STORE_APART_FROM)
    }

    async fn acquire_lease(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Lease, BackendError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lease_key(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(px(ttl));
        let taken: Option<String> = self.run(&cmd).await?;
        Ok(match taken {
            Some(_) => Lease::Acquired,
            None => Lease::HeldElsewhere,
        })
    }

    async fn release_lease(&self, key: &str, token: &str) -> Result<(), BackendError> {
        // Deleted only while it still holds our token: a lease that expired and was taken by
        // another instance stays theirs.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_IF_OURS)
            .arg(1)
            .arg(self.lease_key(key))
            .arg(token);
        self.run::<i64, _>(&cmd).await.map(drop)
    }
}

const RELEASE_IF_OURS: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.target())
            .field("namespace", &self.inner.options.namespace)
            .field("max_connections", &self.inner.pool.size())
            .field("local_tier_bytes", &self.inner.options.local_tier_bytes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_masters_are_read_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@31003,node-3.local master - 0 1 3 connected 10923-16383
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
dead 127.0.0.1:30005@31005 master,fail - 0 0 1 disconnected 100
gone :0@0 master,noaddr - 0 0 5 disconnected 7000
new6 127.0.0.1:30006@31006 master - 0 0 7 connected
";
        let masters: Vec<(String, u16, bool)> = parse_cluster_masters(text)
            .into_iter()
            .map(|m| (m.host, m.port, m.serves_slots))
            .collect();
        let at = |port, slots| ("127.0.0.1".to_owned(), port, slots);
        assert_eq!(
            masters,
            [
                at(30002, true),
                at(30003, true),
                at(30001, true),
                at(30006, false)
            ]
        );
    }

    #[test]
    fn glob_characters_in_the_namespace_match_literally() {
        assert_eq!(escape_glob("app*[1]?:"), "app\\*\\[1\\]\\?:");
    }

    #[test]
    fn bad_urls_and_options_are_errors_that_never_show_the_password() {
        let error = RedisBackend::new("http://:hunter2@host:6379")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("redis://") && !error.contains("hunter2"),
            "{error}"
        );
        let error = RedisBackend::builder("redis://host")
            .max_connections(0)
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("max_connections"), "{error}");
        let error = RedisBackend::builder("redis://host")
            .socket_keepalive_options(KeepaliveOptions::new().count(3))
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("socket_keepalive"), "{error}");
        let error = RedisBackend::builder("redis://host")
            .ssl_ca_certs("/nonexistent/ca.pem")
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("rediss://"), "{error}");
    }

    #[test]
    fn building_needs_no_server_and_debug_output_masks_the_password() {
        let backend = RedisBackend::builder("redis://:hunter2@127.0.0.1:1/0")
            .password("other-secret")
            .build()
            .unwrap();
        let debug = format!("{backend:?} {:?}", backend.options());
        assert!(
            !debug.contains("hunter2") && !debug.contains("other-secret"),
            "{debug}"
        );
        assert!(debug.contains("127.0.0.1:1"));
    }
}
