//! Opening connections for each topology, with the builder's TCP, TLS and password settings.

use super::builder::{CertReqs, RedisBackendBuilder, Topology};
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
    Cluster(Arc<ClusterClient>),
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
                let resp3 = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                let tracking_info = info.clone().set_redis_settings(resp3);
                let open = |info| match certificates.clone() {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                };
                let client = open(info).map_err(|e| invalid_url(url, e))?;
                let tracking = open(tracking_info).map_err(|e| invalid_url(url, e))?;
                Ok(Connector::Single(Arc::new(Standalone {
                    client,
                    tracking,
                    config,
                    as_cluster,
                    is_cluster: AtomicBool::new(false),
                    target: redact_url(url),
                })))
            }
            Topology::Cluster { nodes } => {
                let infos = nodes
                    .iter()
                    .map(|url| connection_info(url, options))
                    .collect::<Result<Vec<_>, _>>()?;
                let client = cluster_client(infos, options, certificates)
                    .map_err(|e| invalid_url(&nodes[0], e))?;
                Ok(Connector::Cluster(Arc::new(client)))
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
            Connector::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        };
        connection.map_err(|e| BackendError::Connection(e.to_string()))
    }

    /// A RESP3 connection to the master, whose pushes go to `reports`, for key tracking; `None`
    /// for a topology the tier does not serve (Cluster, or a plain URL naming a Cluster node).
    pub(crate) async fn tracking_connection(
        &self,
        reports: tokio::sync::mpsc::UnboundedSender<PushInfo>,
    ) -> redis::RedisResult<Option<MultiplexedConnection>> {
        match self {
            Connector::Single(standalone) => {
                let config = standalone.config.clone().set_push_sender(reports);
                let mut connection = standalone
                    .tracking
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                if standalone.is_cluster.load(Ordering::Acquire)
                    || cluster_enabled(&mut connection).await
                {
                    return Ok(None);
                }
                Ok(Some(connection))
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
                Ok(Some(connection))
            }
            Connector::Cluster(_) => Ok(None),
        }
    }
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
