//! Storage backends: the [`Backend`] trait and its implementations.
//!
//! A backend stores opaque bytes under string keys with a TTL. It knows nothing of HTTP; the engine
//! encodes responses into entries. Backends are cheap to clone (an `Arc` inside) and object safe, so
//! one can be chosen at run time as an `Arc<dyn Backend>`.

#[cfg(feature = "memcached")]
mod memcached;
#[cfg(feature = "memcached")]
mod memcached_parts;
mod memory;
#[cfg(any(feature = "redis", feature = "memcached"))]
mod pool;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "memcached")]
pub use memcached::{MemcachedBackend, MemcachedBackendBuilder};
pub use memory::{MemoryBackend, MemoryBackendBuilder};
#[cfg(feature = "redis")]
pub use redis::{
    CertReqs, KeepaliveOptions, RedisBackend, RedisBackendBuilder, DEFAULT_LOCAL_TIER_BYTES,
};

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Errors a backend reports. The middleware never turns them into failed requests: a failed lookup is a
/// miss and a failed store is logged and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The server could not be reached or the connection broke.
    #[error("cache backend connection failed: {0}")]
    Connection(String),
    /// The operation did not finish within its time limit.
    #[error("cache backend operation timed out after {0:?}")]
    Timeout(Duration),
    /// The server answered with an error or something unexpected.
    #[error("cache backend error: {0}")]
    Server(String),
    /// The value or key cannot be stored by this backend (too large, invalid key).
    #[error("cache backend rejected the value: {0}")]
    Rejected(String),
}

/// A backend could not be built from its options: the message names the option and what is accepted.
/// URLs in it have their passwords masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("invalid URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
}

#[cfg(any(feature = "redis", feature = "memcached"))]
impl BuildError {
    pub(crate) fn invalid(option: &'static str, reason: &str) -> Self {
        BuildError::InvalidOption {
            option,
            reason: reason.to_owned(),
        }
    }
}

/// The outcome of asking a backend for a fleet-wide lease ([`Backend::acquire_lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Taken: the caller runs the work and releases the lease when done.
    Acquired,
    /// Someone else holds it (another instance is running the work).
    HeldElsewhere,
    /// This backend is not shared between instances, or has no leases.
    Unsupported,
}

/// Asynchronous key-value storage with per-entry TTL.
///
/// Implementations must never return an entry past its TTL, and their `Debug` output must not show
/// secrets (start-up logs print it).
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The value stored under `key`, if any and not expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError>;

    /// The value under `key` as the store holds it now, past any copy kept in this process:
    /// what the engine reads for a key another instance may have just written (a copy in this
    /// process can still say "absent" until the store's report of the write arrives). The
    /// default is [`get`](Self::get), for a backend that keeps no such copy.
    async fn get_latest(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.get(key).await
    }

    /// The value under `key` when the backend can answer without waiting (an in-process store);
    /// `None` when it cannot, and [`get`](Self::get) is to be used. The default is `None`.
    fn get_ready(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        let _ = key;
        None
    }

    /// The values under `keys`, in order (`None` where missing or expired). The default asks for
    /// one after the other; a network backend answers in one round trip.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }

    /// `len` bytes of the value under `key` from byte `start` on (fewer where the value ends
    /// sooner; `None` when nothing is stored there; a window wholly past the end may be either,
    /// as Redis cannot tell them apart). What the engine reads a response stored
    /// apart by, a window at a time, as it is sent. The default reads the whole value and
    /// slices it; a backend that stores apart reads only the window.
    async fn get_range(
        &self,
        key: &str,
        start: usize,
        len: usize,
    ) -> Result<Option<Bytes>, BackendError> {
        Ok(self
            .get(key)
            .await?
            .map(|value| window_of(&value, start, len)))
    }

    /// Stores `value` under `key`, replacing any previous value, for `ttl`.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError>;

    /// Removes `key`. Removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// Removes every entry this backend stored in its namespace, and nothing else.
    async fn clear(&self) -> Result<(), BackendError>;

    /// A short name for logs and metrics, such as `"memory"` or `"redis"`.
    fn name(&self) -> &'static str;

    /// Takes the lease named `key` for `ttl` unless someone holds it, marking it with `token`
    /// (unique to the caller). A backend shared by several instances (Redis) implements it so
    /// that one instance in the fleet runs the handler for a missing key; the lease expires on its
    /// own if its holder dies. The default is [`Lease::Unsupported`].
    async fn acquire_lease(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Lease, BackendError> {
        let _ = (key, token, ttl);
        Ok(Lease::Unsupported)
    }

    /// Gives up the lease `key` if `token` still holds it (never another holder's).
    async fn release_lease(&self, key: &str, token: &str) -> Result<(), BackendError> {
        let _ = (key, token);
        Ok(())
    }

    /// The size past which the engine stores a response apart from its key: a small entry under
    /// the key says where the response is and how long it is, so that every read of the key
    /// fits the latency budget and the response itself is read with time for its size. A
    /// backend that moves values over a network says so; the default (`None`, an in-process
    /// store) never stores apart.
    fn store_apart_from(&self) -> Option<usize> {
        None
    }
}

/// What [`Backend::store_apart_from`] is for a backend across a network: a value this large
/// takes a few milliseconds on a fast link, well within the default latency budget.
pub const STORE_APART_FROM: usize = 512 * 1024;

/// A response stored apart is read in windows of this many bytes, each when its client is ready
/// for it: what one reader holds of a large response at a time, however large it is.
pub const APART_READ_WINDOW: usize = 512 * 1024;

#[async_trait]
impl<T: Backend + ?Sized> Backend for Arc<T> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        (**self).get(key).await
    }
    async fn get_latest(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        (**self).get_latest(key).await
    }
    fn get_ready(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        (**self).get_ready(key)
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Bytes>>, BackendError> {
        (**self).get_many(keys).await
    }
    async fn get_range(
        &self,
        key: &str,
        start: usize,
        len: usize,
    ) -> Result<Option<Bytes>, BackendError> {
        (**self).get_range(key, start, len).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        (**self).set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        (**self).delete(key).await
    }
    async fn clear(&self) -> Result<(), BackendError> {
        (**self).clear().await
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn store_apart_from(&self) -> Option<usize> {
        (**self).store_apart_from()
    }
    async fn acquire_lease(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Lease, BackendError> {
        (**self).acquire_lease(key, token, ttl).await
    }
    async fn release_lease(&self, key: &str, token: &str) -> Result<(), BackendError> {
        (**self).release_lease(key, token).await
    }
}

/// Bytes `start..start + len` of `value`, fewer where it ends (none past its end); no copy.
pub(crate) fn window_of(value: &Bytes, start: usize, len: usize) -> Bytes {
    let from = start.min(value.len());
    value.slice(from..from.saturating_add(len).min(value.len()))
}

/// A number unique to one write (a random start per thread, then a step per call): what tells
/// one write's pieces from another's.
pub(crate) fn write_nonce() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8)
}

/// On top of a backend call's time limit, the time a value of `bytes` may take to cross to the
/// backend, at a floor of 50 MB/s (a 64 MiB value gets 1.3 s more): a large value is slow to
/// write, which says nothing of the backend's health.
pub(crate) fn transfer_allowance(bytes: usize) -> std::time::Duration {
    std::time::Duration::from_secs_f64(bytes as f64 / 50_000_000.0)
}
