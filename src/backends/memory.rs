//! In-process backend on moka: bounded by entry count (TinyLFU admission, LRU eviction) and by
//! bytes (256 MiB unless set), with a TTL per entry.

use super::{Backend, BackendError};
use async_trait::async_trait;
use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The in-process backend. Cloning gives another handle to the same store.
///
/// ```
/// # tokio_test_block_on(async {
/// use cache_middleware::backends::{Backend, MemoryBackend};
/// use std::time::Duration;
///
/// let backend = MemoryBackend::new(1000);
/// backend.set("config:version", "1.0".into(), Duration::from_secs(3600)).await.unwrap();
/// assert_eq!(backend.get("config:version").await.unwrap().as_deref(), Some(&b"1.0"[..]));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    cache: Cache<Arc<str>, Stored>,
    max_size: u64,
    max_bytes: Option<u64>,
}

/// What one entry costs beyond its key and value: moka's node and deque links, the `Arc<str>` key
/// header, the `Bytes` handle and TTL (measured order of magnitude, rounded up).
const ENTRY_OVERHEAD: usize = 256;

#[derive(Clone)]
struct Stored {
    value: Bytes,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<Arc<str>, Stored> for PerEntryTtl {
    fn expire_after_create(&self, _: &Arc<str>, stored: &Stored, _: Instant) -> Option<Duration> {
        Some(stored.ttl)
    }
    fn expire_after_update(
        &self,
        _: &Arc<str>,
        stored: &Stored,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(stored.ttl)
    }
}

impl MemoryBackend {
    /// The byte bound of a memory backend that was given none: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

    /// A store holding at most `max_size` entries (the guide's `MemoryBackend(max_size=1000)`).
    pub fn new(max_size: u64) -> Self {
        Self::builder().max_size(max_size).build()
    }

    /// A builder for a store bounded by entries and by bytes (default 1000 entries and
    /// [`MemoryBackend::DEFAULT_MAX_BYTES`]).
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder {
            max_size: 1000,
            max_bytes: Some(MemoryBackend::DEFAULT_MAX_BYTES),
        }
    }

    /// Number of live entries (approximate while writes are in flight).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// A snapshot of the keys held, for inspection and tests.
    pub fn keys(&self) -> Vec<String> {
        self.cache.iter().map(|(key, _)| key.to_string()).collect()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("max_size", &self.max_size)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

/// Builds a [`MemoryBackend`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryBackendBuilder {
    max_size: u64,
    max_bytes: Option<u64>,
}

impl MemoryBackendBuilder {
    /// Most entries kept (at least 1).
    pub fn max_size(mut self, entries: u64) -> Self {
        self.max_size = entries.max(1);
        self
    }

    /// Most bytes kept (keys, values and a fixed cost per entry), in addition to the entry bound.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes.max(1));
        self
    }

    pub fn build(self) -> MemoryBackend {
        let MemoryBackendBuilder {
            max_size,
            max_bytes,
        } = self;
        // moka has one capacity. With both bounds, each entry weighs max(1, its share of the byte budget
        // scaled to `max_size`): a total weight within `max_size` keeps both the count and the bytes in bound.
        let weigh = move |key: &Arc<str>, stored: &Stored| -> u32 {
            let Some(max_bytes) = max_bytes else { return 1 };
            let bytes = (key.len() + stored.value.len() + ENTRY_OVERHEAD) as u128;
            let scaled = (bytes * u128::from(max_size)).div_ceil(u128::from(max_bytes));
            scaled.clamp(1, u128::from(u32::MAX)) as u32
        };
        let cache = Cache::builder()
            .max_capacity(max_size)
            .weigher(weigh)
            .expire_after(PerEntryTtl)
            .build();
        MemoryBackend {
            cache,
            max_size,
            max_bytes,
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.get_ready(key)
            .expect("the memory backend always answers at once")
    }

    fn get_ready(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        Some(Ok(self.cache.get(key).map(|stored| stored.value)))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        if ttl.is_zero() {
            self.cache.invalidate(key);
            return Ok(());
        }
        self.cache.insert(Arc::from(key), Stored { value, ttl });
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.cache.invalidate(key);
        Ok(())
    }

    async fn clear(&self) -> Result<(), BackendError> {
        self.cache.invalidate_all();
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
