//! Opening connections for each topology, with the builder's TCP, TLS and password settings.

use super::builder::{CertReqs, RedisBackendBuilder, Topology};
use super::parse_cluster_masters;
use crate::backends::{BackendError, BuildError};
use crate::redact::redact_url;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{socket2, TcpSettings};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, ProtocolVersion, PushInfo, RedisFuture, TlsCertificates, TlsMode, Value,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedSender;

/// One pooled connection: a multiplexed connection to one server, or a cluster connection (which
/// holds one per node and routes each key to its slot's node).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Opens connections; cloned into the pool's connect function.
#[derive(Clone)]
pub(crate) enum Connector {
    Single(Arc<Standalone>),
    Sentinel(Arc<SentinelTarget>),
    Cluster(Arc<ClusterTarget>),
}

impl Connector {
    pub(crate) fn new(options: &RedisBackendBuilder) -> Result<Self, BuildError> {
        ensure_crypto_provider();
        let certificates = certificates(options)?;
        // No response time-out inside redis-rs: every operation already runs under the backend's
        // per-attempt limit (which also discards the connection), and a third timer per request
        // would only cost time.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(None);
        match &options.topology {
            Topology::Standalone { url } => {
                let info = connection_info(url, options)?;
                // Built now, used only if the server turns out to be a Cluster node.
                let as_cluster = cluster_client(vec![info.clone()], options, certificates.clone())
                    .map_err(|e| invalid_url(url, e))?;
                // Key tracking reports arrive as RESP3 pushes, on a connection of their own.
                let tracking_info = resp3(info.clone());
                let client = open_client(info, &certificates).map_err(|e| invalid_url(url, e))?;
                let tracking = open_client(tracking_info.clone(), &certificates)
                    .map_err(|e| invalid_url(url, e))?;
                Ok(Connector::Single(Arc::new(Standalone {
                    client,
                    tracking,
                    config: config.clone(),
                    as_cluster,
                    cluster_seeds: ClusterSeeds {
                        infos: vec![tracking_info],
                        certificates,
                        config,
                    },
                    is_cluster: AtomicBool::new(false),
                    target: redact_url(url),
                })))
            }
            Topology::Cluster { nodes } => {
                let infos = nodes
                    .iter()
                    .map(|url| connection_info(url, options))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = cluster_client(infos.clone(), options, certificates.clone())
                    .map_err(|e| invalid_url(&nodes[0], e))?;
                Ok(Connector::Cluster(Arc::new(ClusterTarget {
                    client,
                    seeds: ClusterSeeds {
                        infos: infos.into_iter().map(resp3).collect(),
                        certificates,
                        config,
                    },
                })))
            }
            Topology::Sentinel {
                master_name,
                sentinels,
            } => {
                let mut addresses = Vec::new();
                let mut sentinel_password = None;
                for url in sentinels {
                    let info = url
                        .as_str()
                        .into_connection_info()
                        .map_err(|e| invalid_url(url, e))?;
                    sentinel_password =
                        sentinel_password.or(info.redis_settings().password().map(str::to_owned));
                    addresses.push(info.addr().clone());
                }
                let tcp = tcp_settings(options);
                let build = |protocol: ProtocolVersion| {
                    let mut builder = SentinelClientBuilder::new(
                        addresses.clone(),
                        master_name,
                        SentinelServerType::Master,
                    )?
                    .set_client_to_redis_tcp_settings(tcp.clone())
                    .set_client_to_sentinel_tcp_settings(tcp.clone())
                    .set_client_to_redis_protocol(protocol);
                    if let Some(password) = options.password.clone().or(sentinel_password.clone()) {
                        builder = builder.set_client_to_redis_password(password);
                    }
                    if let Some(password) = sentinel_password.clone() {
                        builder = builder.set_client_to_sentinel_password(password);
                    }
                    if options.uses_tls() {
                        builder = builder
                            .set_client_to_redis_tls_mode(tls_mode(options))
                            .set_client_to_sentinel_tls_mode(tls_mode(options));
                        if let Some(certs) = certificates.clone() {
                            builder = builder.set_client_to_redis_certificates(certs);
                        }
                    }
                    builder.build()
                };
                let invalid = |e| invalid_url(&sentinels[0], e);
                let client = build(ProtocolVersion::RESP2).map_err(invalid)?;
                // The same master over RESP3, for the key tracking of the in-process tier.
                let tracking = build(ProtocolVersion::RESP3).map_err(invalid)?;
                Ok(Connector::Sentinel(Arc::new(SentinelTarget {
                    client: tokio::sync::Mutex::new(client),
                    tracking: tokio::sync::Mutex::new(tracking),
                    config,
                })))
            }
        }
    }

    pub(crate) async fn connect(&self) -> Result<Conn, BackendError> {
        let connection = match self {
            Connector::Single(standalone) => standalone.connect().await,
            // Asks the sentinels for the current master on every (re)connect: a failover is followed.
            Connector::Sentinel(target) => target
                .client
                .lock()
                .await
                .get_async_connection_with_config(&target.config)
                .await
                .map(Conn::Single),
            Connector::Cluster(target) => target
                .client
                .get_async_connection()
                .await
                .map(Conn::Cluster),
        };
        connection.map_err(|e| BackendError::Connection(e.to_string()))
    }

    /// RESP3 connections whose pushes go to `reports`, for key tracking: one to the server (the
    /// master the sentinels name), or one to every master of a Cluster.
    pub(crate) async fn tracking_connections(
        &self,
        reports: UnboundedSender<PushInfo>,
    ) -> redis::RedisResult<Trackers> {
        match self {
            Connector::Single(standalone) => {
                if standalone.is_cluster.load(Ordering::Acquire) {
                    return standalone.cluster_seeds.track(reports).await;
                }
                let config = standalone.config.clone().set_push_sender(reports.clone());
                let mut connection = standalone
                    .tracking
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                if cluster_enabled(&mut connection).await {
                    return standalone.cluster_seeds.track(reports).await;
                }
                Ok(Trackers::one(connection))
            }
            // The sentinels name the current master: after a failover, the new one.
            Connector::Sentinel(target) => {
                let config = target.config.clone().set_push_sender(reports);
                let connection = target
                    .tracking
                    .lock()
                    .await
                    .get_async_connection_with_config(&config)
                    .await?;
                Ok(Trackers::one(connection))
            }
            Connector::Cluster(target) => target.seeds.track(reports).await,
        }
    }
}

/// The key-tracking connections of the in-process tier, and what they must stay true to.
pub(crate) struct Trackers {
    pub(crate) connections: Vec<MultiplexedConnection>,
    /// In a Cluster, the masters tracked: the tier vouches for nothing once the
    /// cluster names others (a failover, or slots given to a new master).
    masters: Option<BTreeSet<(String, u16)>>,
}

impl Trackers {
    fn one(connection: MultiplexedConnection) -> Self {
        Trackers {
            connections: vec![connection],
            masters: None,
        }
    }

    /// Whether every connection still answers as a master, and a Cluster's masters are the ones
    /// tracked.
    pub(crate) async fn still_true(&mut self) -> bool {
        for connection in &mut self.connections {
            let role: redis::RedisResult<Value> = redis::cmd("ROLE").query_async(connection).await;
            if !matches!(role, Ok(Value::Array(ref fields)) if is_master(fields)) {
                return false;
            }
        }
        let (Some(tracked), Some(connection)) = (&self.masters, self.connections.first_mut())
        else {
            return true;
        };
        let nodes: redis::RedisResult<String> = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(connection)
            .await;
        nodes.is_ok_and(|nodes| masters_serving_slots(&nodes) == *tracked)
    }
}

fn is_master(role: &[Value]) -> bool {
    match role.first() {
        Some(Value::BulkString(name)) => name == b"master",
        Some(Value::SimpleString(name)) => name == "master",
        _ => false,
    }
}

/// The masters holding slots, from `CLUSTER NODES`.
fn masters_serving_slots(nodes: &str) -> BTreeSet<(String, u16)> {
    parse_cluster_masters(nodes)
        .into_iter()
        .filter(|master| master.serves_slots)
        .map(|master| (master.host, master.port))
        .collect()
}

/// A Cluster's seed nodes over RESP3, for the key tracking of the in-process tier: every master
/// reports changes of its own keys only, so each gets a tracking connection.
pub(crate) struct ClusterSeeds {
    infos: Vec<ConnectionInfo>,
    certificates: Option<TlsCertificates>,
    config: AsyncConnectionConfig,
}

impl ClusterSeeds {
    async fn track(&self, reports: UnboundedSender<PushInfo>) -> redis::RedisResult<Trackers> {
        let mut last_error = None;
        for seed in &self.infos {
            match self.track_from(seed, &reports).await {
                Ok(trackers) => return Ok(trackers),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no Cluster seed node"))
        }))
    }

    /// Asks `seed` for the masters, then connects to each.
    async fn track_from(
        &self,
        seed: &ConnectionInfo,
        reports: &UnboundedSender<PushInfo>,
    ) -> redis::RedisResult<Trackers> {
        let mut asking = open_client(seed.clone(), &self.certificates)?
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut asking)
            .await?;
        let masters = masters_serving_slots(&nodes);
        let config = self.config.clone().set_push_sender(reports.clone());
        let mut connections = Vec::with_capacity(masters.len());
        for (host, port) in &masters {
            let info = at_address(seed, host, *port).ok_or_else(|| {
                redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "a Cluster seed must be a TCP address",
                ))
            })?;
            let connection = open_client(info, &self.certificates)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            connections.push(connection);
        }
        Ok(Trackers {
            connections,
            masters: Some(masters),
        })
    }
}

/// A client for `info`, trusting `certificates` when given.
fn open_client(
    info: ConnectionInfo,
    certificates: &Option<TlsCertificates>,
) -> redis::RedisResult<Client> {
    match certificates.clone() {
        Some(certs) => Client::build_with_tls(info, certs),
        None => Client::open(info),
    }
}

/// `seed`'s settings (password, TLS, TCP) for the node at `host:port`.
fn at_address(seed: &ConnectionInfo, host: &str, port: u16) -> Option<ConnectionInfo> {
    let host = host.to_owned();
    let addr = match seed.addr().clone() {
        ConnectionAddr::Tcp(..) => ConnectionAddr::Tcp(host, port),
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => return None,
    };
    Some(seed.clone().set_addr(addr))
}

/// The same server over RESP3, whose pushes carry key-tracking reports.
fn resp3(info: ConnectionInfo) -> ConnectionInfo {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    info.set_redis_settings(settings)
}

/// A Redis Cluster: the client that routes keys, and its seeds for key tracking.
pub(crate) struct ClusterTarget {
    client: ClusterClient,
    seeds: ClusterSeeds,
}

/// The master a group of sentinels names, over RESP2 for the pool and RESP3 for key tracking.
pub(crate) struct SentinelTarget {
    client: tokio::sync::Mutex<SentinelClient>,
    tracking: tokio::sync::Mutex<SentinelClient>,
    config: AsyncConnectionConfig,
}

/// One server named by a plain URL, which may be one node of a Redis Cluster: the guide's Cluster
/// example (and `REDIS_URL`) names a single node. A connection to a node would see most keys
/// answered `MOVED`, so the first connection asks the server; a Cluster node makes this connector
/// open cluster connections, seeded with the same URL, from then on.
pub(crate) struct Standalone {
    client: Client,
    /// The same server over RESP3, for the key tracking of the in-process tier.
    tracking: Client,
    config: AsyncConnectionConfig,
    as_cluster: ClusterClient,
    /// The server as the seed of a Cluster's key tracking, if it turns out to be a node.
    cluster_seeds: ClusterSeeds,
    is_cluster: AtomicBool,
    target: String,
}

impl Standalone {
    async fn connect(&self) -> redis::RedisResult<Conn> {
        if self.is_cluster.load(Ordering::Acquire) {
            return self
                .as_cluster
                .get_async_connection()
                .await
                .map(Conn::Cluster);
        }
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        if !cluster_enabled(&mut connection).await {
            return Ok(Conn::Single(connection));
        }
        if !self.is_cluster.swap(true, Ordering::AcqRel) {
            tracing::info!(target = %self.target, "the server is a Redis Cluster node: keys go to the master of their slot");
        }
        self.as_cluster
            .get_async_connection()
            .await
            .map(Conn::Cluster)
    }
}

/// Whether the server says it runs in cluster mode. A server or proxy that does not answer
/// `INFO cluster` is taken for a standalone one.
async fn cluster_enabled(connection: &mut MultiplexedConnection) -> bool {
    let info: redis::RedisResult<String> = redis::cmd("INFO")
        .arg("cluster")
        .query_async(connection)
        .await;
    info.is_ok_and(|text| text.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

fn cluster_client(
    nodes: Vec<ConnectionInfo>,
    options: &RedisBackendBuilder,
    certificates: Option<TlsCertificates>,
) -> redis::RedisResult<ClusterClient> {
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .tcp_settings(tcp_settings(options))
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.timeout)
        .retries(1);
    if options.uses_tls() {
        builder = builder.tls(tls_mode(options));
        if let Some(certs) = certificates {
            builder = builder.certs(certs);
        }
    }
    builder.build()
}

/// The URL as redis-rs reads it, with the builder's password, TCP settings and certificate checks.
fn connection_info(url: &str, options: &RedisBackendBuilder) -> Result<ConnectionInfo, BuildError> {
    let mut info = url
        .into_connection_info()
        .map_err(|e| invalid_url(url, e))?;
    if let Some(password) = &options.password {
        let redis = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(redis);
    }
    if let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() {
        if options.ssl_cert_reqs == CertReqs::None {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: true,
                tls_params: None,
            });
        }
    }
    Ok(info.set_tcp_settings(tcp_settings(options)))
}

/// No Nagle delay (requests are small and latency-bound); keepalive with the guide's timing.
fn tcp_settings(options: &RedisBackendBuilder) -> TcpSettings {
    let settings = TcpSettings::default().set_nodelay(true);
    if !options.socket_keepalive {
        return settings;
    }
    let mut keepalive = socket2::TcpKeepalive::new();
    if let Some(idle) = options.keepalive.idle {
        keepalive = keepalive.with_time(idle);
    }
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    {
        if let Some(interval) = options.keepalive.interval {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(count) = options.keepalive.count {
            keepalive = keepalive.with_retries(count);
        }
    }
    settings.set_keepalive(keepalive)
}

fn tls_mode(options: &RedisBackendBuilder) -> TlsMode {
    match options.ssl_cert_reqs {
        CertReqs::Required => TlsMode::Secure,
        CertReqs::None => TlsMode::Insecure,
    }
}

fn certificates(options: &RedisBackendBuilder) -> Result<Option<TlsCertificates>, BuildError> {
    let Some(path) = &options.ssl_ca_certs else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| BuildError::InvalidOption {
        option: "ssl_ca_certs",
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(BuildError::InvalidOption {
            option: "ssl_ca_certs",
            reason: format!("{} holds no PEM certificate", path.display()),
        });
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }))
}

fn invalid_url(url: &str, error: redis::RedisError) -> BuildError {
    BuildError::InvalidUrl {
        url: redact_url(url),
        reason: crate::redact::scrub(&error.to_string(), url),
    }
}

/// rustls needs one process-wide crypto provider; install ring's unless the application chose one.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_master_is_reached_with_the_seed_s_settings() {
        let seed = "redis://:pw@10.0.0.1:7000".into_connection_info().unwrap();
        let info = at_address(&seed, "127.0.0.1", 30002).unwrap();
        assert_eq!(info.addr(), &ConnectionAddr::Tcp("127.0.0.1".into(), 30002));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        let nodes = "\
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
cccc 127.0.0.1:30006@31006 master - 0 0 7 connected
";
        let tracked: Vec<(String, u16)> = masters_serving_slots(nodes).into_iter().collect();
        assert_eq!(tracked, [("127.0.0.1".to_owned(), 30001)]);
    }
}
