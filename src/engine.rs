//! The shared engine behind every cached route: backend, settings, entry lookup and storage.
//!
//! Every backend call here is bounded by the latency budget, and every failure (error, time-out,
//! undecodable or foreign entry) becomes a miss or a dropped store: the cache is never the reason a
//! request fails.

use crate::backends::Backend;
use crate::coalesce::Flights;
use crate::entry::{Content, Entry, StoredResponse};
use crate::key::{variant_key, CacheKey};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// Engine-wide settings, set through [`CacheMiddleware`](crate::CacheMiddleware)'s builder methods.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub namespace: String,
    pub max_body_size: usize,
    pub max_request_body_size: usize,
    pub honor_request_cache_control: bool,
    pub cacheable_statuses: Vec<StatusCode>,
    pub backend_timeout: Duration,
    pub coalesce_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            namespace: "cache".to_owned(),
            max_body_size: 1024 * 1024,
            max_request_body_size: 64 * 1024,
            honor_request_cache_control: true,
            cacheable_statuses: vec![StatusCode::OK],
            backend_timeout: Duration::from_millis(250),
            coalesce_timeout: Duration::from_secs(10),
        }
    }
}

/// A stored response shared with the requests that waited for it.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Always holds a response.
    pub entry: Entry,
    /// Request fields the response varies on, and the variant key of the leader's request.
    pub vary: Vec<String>,
    pub variant: Option<CacheKey>,
}

pub(crate) struct Engine {
    pub backend: Arc<dyn Backend>,
    pub config: EngineConfig,
    pub flights: Flights<Arc<Shared>>,
}

impl Engine {
    pub(crate) fn new(backend: Arc<dyn Backend>, config: EngineConfig) -> Self {
        Engine {
            backend,
            config,
            flights: Flights::default(),
        }
    }

    /// The fresh response stored for `primary`, following a variant marker with the request's headers.
    pub(crate) async fn lookup(&self, primary: &CacheKey, headers: &HeaderMap) -> Option<Entry> {
        let entry = self.fetch(primary).await?;
        let entry = match &entry.content {
            Content::Response(_) => entry,
            Content::Variants(names) => {
                let variant = variant_key(&self.config.namespace, primary, names, headers);
                self.fetch(&variant).await?
            }
        };
        entry.response().is_some().then_some(entry)
    }

    /// Whether a response shared by a leader fits this request: same values of every varying field.
    pub(crate) fn shared_fits(
        &self,
        shared: &Shared,
        primary: &CacheKey,
        headers: &HeaderMap,
    ) -> bool {
        match &shared.variant {
            None => true,
            Some(variant) => {
                *variant == variant_key(&self.config.namespace, primary, &shared.vary, headers)
            }
        }
    }

    /// Stores `response` for `ttl`; with varying fields, as a variant below a marker at `primary`.
    pub(crate) async fn store(
        &self,
        primary: &CacheKey,
        vary: Vec<String>,
        headers: &HeaderMap,
        response: StoredResponse,
        ttl: Duration,
    ) -> Shared {
        let stored_at_ms = Entry::now_ms();
        let entry_for = |key: &CacheKey, content| Entry {
            fingerprint: *key.digest(),
            stored_at_ms,
            ttl,
            content,
        };
        if vary.is_empty() {
            let entry = entry_for(primary, Content::Response(response));
            self.put(primary, &entry, ttl).await;
            return Shared {
                entry,
                vary,
                variant: None,
            };
        }
        let variant = variant_key(&self.config.namespace, primary, &vary, headers);
        let marker = entry_for(primary, Content::Variants(vary.clone()));
        let entry = entry_for(&variant, Content::Response(response));
        futures_util::future::join(
            self.put(primary, &marker, ttl),
            self.put(&variant, &entry, ttl),
        )
        .await;
        Shared {
            entry,
            vary,
            variant: Some(variant),
        }
    }

    /// Removes the entry at `key` (and so every variant below it).
    pub(crate) async fn remove(&self, key: &CacheKey) -> Result<(), crate::backends::BackendError> {
        self.bounded(self.backend.delete(key.as_str())).await?
    }

    async fn fetch(&self, key: &CacheKey) -> Option<Entry> {
        let bytes: Bytes = match self.bounded(self.backend.get(key.as_str())).await {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return None,
            Ok(Err(error)) | Err(error) => {
                tracing::warn!(key = %key, %error, "cache lookup failed; serving as a miss");
                return None;
            }
        };
        let entry = match Entry::decode(&bytes) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::debug!(key = %key, %error, "stored entry unreadable; serving as a miss");
                return None;
            }
        };
        if entry.fingerprint != *key.digest() {
            tracing::warn!(key = %key, "stored entry belongs to other key material; serving as a miss");
            return None;
        }
        if !entry.is_fresh(Entry::now_ms()) {
            tracing::debug!(key = %key, "stored entry expired");
            return None;
        }
        Some(entry)
    }

    async fn put(&self, key: &CacheKey, entry: &Entry, ttl: Duration) {
        match self
            .bounded(self.backend.set(key.as_str(), entry.encode(), ttl))
            .await
        {
            Ok(Ok(())) => tracing::debug!(key = %key, ttl_secs = ttl.as_secs(), "response stored"),
            Ok(Err(error)) | Err(error) => {
                tracing::warn!(key = %key, %error, "cache store failed; response served uncached")
            }
        }
    }

    /// Runs a backend call within the latency budget.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, crate::backends::BackendError> {
        let limit = self.config.backend_timeout;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| crate::backends::BackendError::Timeout(limit))
    }
}
