//! The Memcached backend (feature `memcached`), on async-memcached.
//!
//! - Several servers: each key lives on one, chosen by rendezvous hashing (adding a server moves
//!   only its share of keys).
//! - Memcached cannot list keys, so `clear()` bumps a namespace generation stored in Memcached itself;
//!   entries of older generations are never read again and age out. Each process rereads the
//!   generation at most every `generation_refresh` (default 1 s): a `clear()` by another process is
//!   seen within that time, one by this process at once.
//! - TTLs are whole seconds (rounded up); over 30 days they are sent as an absolute time, as
//!   Memcached requires.
//! - Keys longer than Memcached's 250 bytes, or with anything but printable ASCII, are hashed.

use super::memcached_parts::{Manifest, MANIFEST_FLAG, MAX_VALUE, PART_SIZE};
use super::pool::{check_options, Pool};
use super::{transfer_allowance, window_of, Backend, BackendError, BuildError, STORE_APART_FROM};
use crate::redact::redact_url;
use async_memcached::{AsciiProtocol, Client, Error as McError, Status};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_KEY_LEN: usize = 250;
const THIRTY_DAYS: u64 = 30 * 24 * 3600;

/// The Memcached backend. Cloning gives another handle to the same connections.
///
/// ```no_run
/// use cache_middleware::backends::MemcachedBackend;
/// use std::time::Duration;
///
/// let backend = MemcachedBackend::builder("memcached://cache-1:11211,cache-2:11211")
///     .max_connections(8)
///     .timeout(Duration::from_millis(100))
///     .build()?;
/// # Ok::<(), cache_middleware::backends::BuildError>(())
/// ```
#[derive(Clone)]
pub struct MemcachedBackend {
    inner: Arc<Inner>,
}

struct Inner {
    servers: Vec<Server>,
    namespace: String,
    timeout: Duration,
    generation_refresh: Duration,
    generation: Mutex<Option<(u64, Instant)>>,
}

struct Server {
    address: String,
    pool: Pool<Client>,
}

/// Builds a [`MemcachedBackend`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemcachedBackendBuilder {
    urls: String,
    max_connections: usize,
    timeout: Duration,
    connect_timeout: Duration,
    namespace: String,
    generation_refresh: Duration,
}

impl MemcachedBackend {
    /// A backend for the servers in `urls`: `memcached://host:11211[,host2:11211...]` (the scheme
    /// and the port are optional).
    pub fn new(urls: impl Into<String>) -> Result<Self, BuildError> {
        Self::builder(urls).build()
    }

    pub fn builder(urls: impl Into<String>) -> MemcachedBackendBuilder {
        MemcachedBackendBuilder {
            urls: urls.into(),
            max_connections: 8,
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            namespace: "cache-middleware".to_owned(),
            generation_refresh: Duration::from_secs(1),
        }
    }

    /// The servers' addresses, in the order given.
    pub fn servers(&self) -> Vec<String> {
        self.inner
            .servers
            .iter()
            .map(|s| s.address.clone())
            .collect()
    }

    fn server_for(&self, key: &[u8]) -> &Server {
        let servers = &self.inner.servers;
        if servers.len() == 1 {
            return &servers[0];
        }
        servers
            .iter()
            .max_by_key(|server| {
                let mut hasher = blake3::Hasher::new();
                hasher.update(server.address.as_bytes());
                hasher.update(&[0]);
                hasher.update(key);
                u64::from_le_bytes(
                    hasher.finalize().as_bytes()[..8]
                        .try_into()
                        .expect("8 bytes"),
                )
            })
            .expect("at least one server")
    }

    /// Runs `op` on a connection to the server that owns `key`, within the time limit.
    async fn on_server<T>(
        &self,
        key: &[u8],
        op: impl AsyncFnOnce(&mut Client) -> Result<T, McError>,
    ) -> Result<T, BackendError> {
        self.on_server_within(key, Duration::ZERO, op).await
    }

    /// [`on_server`](Self::on_server), with `extra` time on top of the time limit (a large value).
    /// What is stored under `key`: a value, or the manifest of one stored in parts (with the
    /// key it is under in the namespace).
    async fn find(&self, key: &str) -> Result<Found, BackendError> {
        let key = self.data_key(key).await?;
        let Some(value) = self
            .on_server(key.as_bytes(), async |c| c.get(&key).await)
            .await?
        else {
            return Ok(Found::Nothing);
        };
        let data = Bytes::from(value.data.unwrap_or_default());
        if value.flags != Some(MANIFEST_FLAG) {
            return Ok(Found::Value(data));
        }
        Ok(match Manifest::decode(&data) {
            Some(manifest) => Found::Parts(key, manifest),
            None => Found::Nothing,
        })
    }

    /// The parts under `keys` (of the value under `key`, on its server), in order, given time
    /// for their `bytes`; `None` for each one missing.
    async fn read_parts(
        &self,
        key: &str,
        keys: &[String],
        bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let mut found = self
            .on_server_within(key.as_bytes(), transfer_allowance(bytes), async |c| match c
                .get_multi(keys)
                .await
            {
                Err(McError::Protocol(Status::NotFound)) => Ok(Vec::new()),
                found => found,
            })
            .await?;
        Ok(keys
            .iter()
            .map(|k| {
                let part = found.iter_mut().find(|v| v.key == k.as_bytes());
                part.and_then(|v| v.data.take())
            })
            .collect())
    }

    async fn on_server_within<T>(
        &self,
        key: &[u8],
        extra: Duration,
        op: impl AsyncFnOnce(&mut Client) -> Result<T, McError>,
    ) -> Result<T, BackendError> {
        let server = self.server_for(key);
        let mut lease = server.pool.lease().await?;
        let limit = self.inner.timeout + extra;
        match tokio::time::timeout(limit, op(lease.conn())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                let broken = !matches!(error, McError::Protocol(_));
                if broken {
                    lease.discard();
                }
                Err(map_error(error, &server.address))
            }
            Err(_) => {
                // The reply may still arrive: the connection cannot be trusted for the next request.
                lease.discard();
                Err(BackendError::Timeout(limit))
            }
        }
    }

    fn generation_key(&self) -> String {
        format!("{}:generation", self.inner.namespace)
    }

    /// The namespace generation: cached for `generation_refresh`, created if missing.
    async fn generation(&self) -> Result<u64, BackendError> {
        if let Some((value, fetched)) = *self.lock_generation() {
            if fetched.elapsed() < self.inner.generation_refresh {
                return Ok(value);
            }
        }
        let key = self.generation_key();
        let stored = self
            .on_server(key.as_bytes(), async |c| c.get(&key).await)
            .await?;
        let value = match stored.and_then(|v| v.data).and_then(|d| parse_u64(&d)) {
            Some(value) => value,
            None => self.create_generation(&key).await?,
        };
        *self.lock_generation() = Some((value, Instant::now()));
        Ok(value)
    }

    /// Starts a new generation from the clock, so that an evicted counter never brings back the
    /// entries of an old generation; `add` lets one process win when several race.
    async fn create_generation(&self, key: &str) -> Result<u64, BackendError> {
        let fresh = unix_millis();
        let added = self
            .on_server(key.as_bytes(), async |c| {
                c.add(key, fresh, Some(0), None).await
            })
            .await;
        match added {
            Ok(()) => Ok(fresh),
            Err(BackendError::Server(_)) => {
                let stored = self
                    .on_server(key.as_bytes(), async |c| c.get(key).await)
                    .await?;
                stored
                    .and_then(|v| v.data)
                    .and_then(|d| parse_u64(&d))
                    .ok_or_else(|| BackendError::Server("namespace generation unreadable".into()))
            }
            Err(error) => Err(error),
        }
    }

    fn lock_generation(&self) -> std::sync::MutexGuard<'_, Option<(u64, Instant)>> {
        self.inner
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `{namespace}:{generation}:{key}`, with keys Memcached cannot take replaced by their hash.
    async fn data_key(&self, key: &str) -> Result<String, BackendError> {
        let generation = self.generation().await?;
        let prefix = format!("{}:{generation}:", self.inner.namespace);
        let fits = prefix.len() + key.len() <= MAX_KEY_LEN
            && !key.starts_with('#')
            && key.bytes().all(|b| b.is_ascii_graphic());
        Ok(if fits {
            format!("{prefix}{key}")
        } else {
            format!("{prefix}#{}", blake3::hash(key.as_bytes()).to_hex())
        })
    }
}

impl MemcachedBackendBuilder {
    /// Most connections open to each server (default 8).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Most time one operation may take (default 50 ms).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Most time opening one connection may take (default 1 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    /// Prefix of every key (default `"cache-middleware"`); `clear()` affects only this namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long the namespace generation is trusted before it is reread (default 1 s).
    pub fn generation_refresh(mut self, every: Duration) -> Self {
        self.generation_refresh = every;
        self
    }

    /// Checks the options and builds the backend. No connection is opened.
    pub fn build(self) -> Result<MemcachedBackend, BuildError> {
        check_options(self.max_connections, self.timeout, self.connect_timeout)?;
        let namespace_ok = !self.namespace.is_empty()
            && self.namespace.len() <= 64
            && self.namespace.bytes().all(|b| b.is_ascii_graphic());
        if !namespace_ok {
            return Err(BuildError::invalid(
                "namespace",
                "1 to 64 printable ASCII characters, no spaces",
            ));
        }
        let addresses = parse_server_list(&self.urls)?;
        let servers = addresses
            .into_iter()
            .map(|address| {
                let dsn = format!("tcp://{address}");
                let pool = Pool::new(self.max_connections, self.connect_timeout, move || {
                    let dsn = dsn.clone();
                    Box::pin(async move {
                        Client::new(&dsn)
                            .await
                            .map_err(|e| BackendError::Connection(format!("{dsn}: {e}")))
                    })
                });
                Server { address, pool }
            })
            .collect();
        Ok(MemcachedBackend {
            inner: Arc::new(Inner {
                servers,
                namespace: self.namespace,
                timeout: self.timeout,
                generation_refresh: self.generation_refresh,
                generation: Mutex::new(None),
            }),
        })
    }
}

/// `memcached://a:11211,b:11211`, `tcp://a:11211` or `a,b:11212`: `host:port` addresses.
fn parse_server_list(urls: &str) -> Result<Vec<String>, BuildError> {
    let invalid = |reason: String| BuildError::InvalidUrl {
        url: redact_url(urls),
        reason: crate::redact::scrub(&reason, urls),
    };
    let list = match urls.split_once("://") {
        Some(("memcached" | "tcp", rest)) => rest,
        Some((scheme, _)) => {
            return Err(invalid(format!(
                "scheme {scheme}:// is not accepted (use memcached://host:port[,host:port...])"
            )))
        }
        None => urls,
    };
    let mut servers = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let item = item.trim_end_matches('/');
        let (host, port) = match item.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, port),
            _ => (item, "11211"),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(format!("{:?}: the port is not a number", redact_url(item))))?;
        if host.is_empty() || host.contains(['@', '/', ' ']) {
            return Err(invalid(format!("{:?} is not host:port", redact_url(item))));
        }
        servers.push(format!("{host}:{port}"));
    }
    if servers.is_empty() {
        return Err(invalid("no server address given".to_owned()));
    }
    Ok(servers)
}

/// Memcached's expiration field: relative seconds up to 30 days, an absolute Unix time beyond.
fn expiration(ttl: Duration) -> i64 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    if seconds <= THIRTY_DAYS {
        seconds as i64
    } else {
        (unix_millis() / 1000 + seconds) as i64
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
}

fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn map_error(error: McError, address: &str) -> BackendError {
    match error {
        McError::Protocol(Status::Error(kind)) => {
            BackendError::Rejected(format!("{address}: {kind:?}"))
        }
        McError::Protocol(status) => BackendError::Server(format!("{address}: {status:?}")),
        McError::Connect(e) | McError::Io(e) => BackendError::Connection(format!("{address}: {e}")),
        other => BackendError::Connection(format!("{address}: {other:?}")),
    }
}

#[async_trait]
impl Backend for MemcachedBackend {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        match self.find(key).await? {
            Found::Nothing => Ok(None),
            Found::Value(value) => Ok(Some(value)),
            Found::Parts(key, manifest) => {
                let keys = manifest.part_keys(&key);
                let parts = self.read_parts(&key, &keys, manifest.length()).await?;
                Ok(manifest.join(&in_order(&parts)))
            }
        }
    }

    async fn get_range(
        &self,
        key: &str,
        start: usize,
        len: usize,
    ) -> Result<Option<Bytes>, BackendError> {
        match self.find(key).await? {
            Found::Nothing => Ok(None),
            Found::Value(value) => Ok(Some(window_of(&value, start, len))),
            Found::Parts(key, manifest) => {
                let numbers = manifest.parts_for(start, len);
                let first = numbers.start;
                let keys = manifest.keys_of(&key, numbers);
                let parts = self.read_parts(&key, &keys, len).await?;
                Ok(manifest.join_range(first, &in_order(&parts), start, len))
            }
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        if ttl.is_zero() {
            return self.delete(key).await;
        }
        if value.len() > MAX_VALUE {
            return Err(BackendError::Rejected(format!(
                "a value of {} bytes is over the {MAX_VALUE} bytes stored in parts",
                value.len()
            )));
        }
        let key = self.data_key(key).await?;
        let exptime = expiration(ttl);
        let extra = transfer_allowance(value.len());
        self.on_server_within(key.as_bytes(), extra, async |c| {
            if value.len() <= PART_SIZE {
                return c.set(&key, value.as_ref(), Some(exptime), None).await;
            }
            // The parts first: a reader finds the manifest only once they are all there.
            let manifest = Manifest::for_length(value.len());
            for (part_key, part) in manifest.part_keys(&key).iter().zip(manifest.split(&value)) {
                c.set(part_key, part.as_ref(), Some(exptime), None).await?;
            }
            let encoded = manifest.encode();
            c.set(&key, &encoded[..], Some(exptime), Some(MANIFEST_FLAG))
                .await
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let key = self.data_key(key).await?;
        match self
            .on_server(key.as_bytes(), async |c| c.delete(&key).await)
            .await
        {
            Ok(()) => Ok(()),
            Err(BackendError::Server(message)) if message.contains("NotFound") => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn clear(&self) -> Result<(), BackendError> {
        let key = self.generation_key();
        let bumped = self
            .on_server(key.as_bytes(), async |c| c.increment(&key, 1).await)
            .await;
        let value = match bumped {
            Ok(value) => value,
            Err(BackendError::Server(message)) if message.contains("NotFound") => {
                self.create_generation(&key).await?
            }
            Err(error) => return Err(error),
        };
        *self.lock_generation() = Some((value, Instant::now()));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memcached"
    }

    fn store_apart_from(&self) -> Option<usize> {
        Some(STORE_APART_FROM)
    }
}

/// What a key holds.
enum Found {
    Nothing,
    Value(Bytes),
    /// A value stored in parts: the key in the namespace, and its manifest.
    Parts(String, Manifest),
}

/// Each part read, as the slices `Manifest::join` takes.
fn in_order(parts: &[Option<Vec<u8>>]) -> Vec<Option<&[u8]>> {
    parts.iter().map(Option::as_deref).collect()
}

impl fmt::Debug for MemcachedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedBackend")
            .field("servers", &self.servers())
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_accept_schemes_default_ports_and_several_servers() {
        assert_eq!(
            parse_server_list("memcached://a:11211,b:11212").unwrap(),
            ["a:11211", "b:11212"]
        );
        assert_eq!(parse_server_list("a").unwrap(), ["a:11211"]);
        assert_eq!(
            parse_server_list("tcp://127.0.0.1:1/").unwrap(),
            ["127.0.0.1:1"]
        );
    }

    #[test]
    fn wrong_schemes_and_ports_are_errors_that_say_what_is_accepted() {
        let error = parse_server_list("redis://a:6379").unwrap_err().to_string();
        assert!(
            error.contains("redis://") && error.contains("memcached://"),
            "{error}"
        );
        assert!(parse_server_list("a:port")
            .unwrap_err()
            .to_string()
            .contains("port"));
        assert!(parse_server_list("memcached://").is_err());
    }

    #[test]
    fn ttls_round_up_to_seconds_and_long_ones_become_absolute_times() {
        assert_eq!(expiration(Duration::from_millis(1)), 1);
        assert_eq!(expiration(Duration::from_millis(1500)), 2);
        assert_eq!(
            expiration(Duration::from_secs(THIRTY_DAYS)),
            THIRTY_DAYS as i64
        );
        let absolute = expiration(Duration::from_secs(THIRTY_DAYS + 1));
        assert!(absolute > 1_700_000_000, "{absolute}");
    }

    #[tokio::test]
    async fn keys_that_memcached_cannot_take_are_hashed() {
        let backend = MemcachedBackend::new("127.0.0.1:1").unwrap();
        *backend.lock_generation() = Some((7, Instant::now()));
        assert_eq!(
            backend.data_key("a:b").await.unwrap(),
            "cache-middleware:7:a:b"
        );
        for odd in [
            "has space",
            "#looks-hashed",
            &"x".repeat(300),
            "tab\t",
            "ключ",
        ] {
            let key = backend.data_key(odd).await.unwrap();
            assert!(
                key.starts_with("cache-middleware:7:#") && key.len() < MAX_KEY_LEN,
                "{key}"
            );
        }
        assert_ne!(
            backend.data_key("has space").await.unwrap(),
            backend.data_key("has  space").await.unwrap()
        );
    }

    #[test]
    fn keys_spread_over_servers_and_stay_put() {
        let backend = MemcachedBackend::new("a:1,b:1,c:1").unwrap();
        let mut counts = std::collections::HashMap::new();
        for i in 0..300 {
            let key = format!("key{i}");
            let server = &backend.server_for(key.as_bytes()).address;
            assert_eq!(server, &backend.server_for(key.as_bytes()).address);
            *counts.entry(server.clone()).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n > 60), "{counts:?}");
    }
}
