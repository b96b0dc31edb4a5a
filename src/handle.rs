//! `CacheHandle`: what handlers and start-up code use to reach the cache: the backend (for warming),
//! invalidation of one URL, and clearing.

use crate::backends::{Backend, BackendError};
use crate::engine::Engine;
use crate::key::{primary_key_from, CacheKey};
use crate::tags::PurgeKind;
use http::{Method, Uri};
use std::sync::Arc;

/// A handle to the cache of one [`CacheMiddleware`](crate::CacheMiddleware).
///
/// In a handler, take it as an extractor (feature `axum`); relative URLs then refer to the host of
/// the current request. From start-up code, get it with
/// [`CacheMiddleware::handle`](crate::CacheMiddleware::handle) and pass absolute URLs.
///
/// ```
/// use axum::{routing::post, Router};
/// use cache_middleware::{CacheHandle, backends::MemoryBackend, CacheMiddleware};
/// use http::Method;
///
/// async fn update_user(cache: CacheHandle) -> &'static str {
///     // ... write the change, then drop the cached GET /users/5 (every variant of it):
///     let _ = cache.invalidate(Method::GET, "/users/5").await;
///     "updated"
/// }
///
/// let app: Router = Router::new()
///     .route("/users/5", post(update_user))
///     .layer(CacheMiddleware::new(MemoryBackend::new(100)));
/// ```
#[derive(Clone)]
pub struct CacheHandle {
    engine: Arc<Engine>,
    host: Option<String>,
}

impl CacheHandle {
    pub(crate) fn new(engine: Arc<Engine>, host: Option<String>) -> Self {
        CacheHandle { engine, host }
    }

    /// The backend, for warming (`backend.set(...)`) and direct reads.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.engine.backend
    }

    /// What the cache has done since start: hits, misses, stores, failures, breaker state.
    pub fn stats(&self) -> crate::CacheStats {
        self.engine.stats()
    }

    /// The namespace that prefixes this middleware's keys.
    pub fn namespace(&self) -> &str {
        &self.engine.config.namespace
    }

    /// Removes the cached response for `method` and `url` (path and query; absolute, or relative to
    /// the current request's host), with every variant of it. HEAD and GET share an entry.
    /// POST entries are keyed by body; they expire or go with [`clear`](Self::clear).
    pub async fn invalidate(&self, method: Method, url: &str) -> Result<(), BackendError> {
        for key in self.url_keys(&method, url)? {
            tracing::debug!(key = %key, %method, url, "invalidating cached response");
            self.engine.remove(&key).await?;
        }
        Ok(())
    }

    /// Purges the cached response for `method` and `url` (as [`invalidate`](Self::invalidate)
    /// reads them): hard, it is gone with every variant; soft, it becomes stale (revalidated, or
    /// served stale within its stale window while it is refreshed) and stays stored for its
    /// freshness lifetime from now. A response that varies is purged hard either way, since its
    /// variants cannot be listed. Returns what was done: `None` when a soft purge found nothing.
    pub async fn purge_url(
        &self,
        method: Method,
        url: &str,
        kind: PurgeKind,
    ) -> Result<Option<PurgeKind>, BackendError> {
        let mut done = None;
        for key in self.url_keys(&method, url)? {
            tracing::debug!(key = %key, %method, url, ?kind, "purging cached response");
            let purged = match kind {
                PurgeKind::Hard => self.engine.remove(&key).await.map(|()| Some(kind))?,
                PurgeKind::Soft => self.engine.soften(&key).await?,
            };
            done = done.or(purged);
        }
        Ok(done)
    }

    /// The primary keys of `url` (absolute, or on this handle's host): one, or where the fronts
    /// key by the scheme the application reads (see [`RequestScheme`](crate::RequestScheme)),
    /// one for `http` (the same as none) and one for `https`, whatever scheme `url` has.
    fn url_keys(&self, method: &Method, url: &str) -> Result<Vec<CacheKey>, BackendError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| BackendError::Rejected(format!("invalid URL {url:?}: {e}")))?;
        let host = match uri.authority() {
            Some(authority) => authority.as_str(),
            None => self.host.as_deref().unwrap_or(""),
        };
        let schemes: &[Option<&str>] = if self.engine.config.keys_by_scheme {
            &[None, Some("https")]
        } else {
            &[None]
        };
        Ok(schemes
            .iter()
            .map(|scheme| {
                primary_key_from(
                    &self.engine.config.namespace,
                    method,
                    *scheme,
                    host.as_bytes(),
                    uri.path(),
                    uri.query(),
                    None,
                )
            })
            .collect())
    }

    /// Purges every entry carrying `tag` (a route's tag or one its response named in the tag
    /// field): soft, the entries become stale (revalidated, or served stale within their stale
    /// window); hard, they are gone. Costs one write whatever the number of entries; takes effect
    /// in this instance at once and in every instance sharing the backend on their next read.
    pub async fn purge_tag(&self, tag: &str, kind: PurgeKind) -> Result<(), BackendError> {
        if !crate::tags::is_valid_tag(tag) {
            return Err(BackendError::Rejected(format!(
                "{tag:?} is not a valid tag"
            )));
        }
        self.engine.purge_tag(tag, kind).await
    }

    /// The same cache, with relative URLs taken on `host`.
    #[cfg(feature = "proxy")]
    pub(crate) fn for_host(&self, host: Option<String>) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.engine), host)
    }

    /// The response field that names tags.
    #[cfg(feature = "proxy")]
    pub(crate) fn tag_header(&self) -> &http::HeaderName {
        &self.engine.config.tag_header
    }

    /// Removes every entry of the backend's namespace.
    pub async fn clear(&self) -> Result<(), BackendError> {
        self.engine.backend.clear().await
    }
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("backend", &self.engine.backend.name())
            .field("namespace", &self.engine.config.namespace)
            .field("host", &self.host)
            .finish()
    }
}

#[cfg(feature = "axum")]
mod extract {
    use super::CacheHandle;
    use crate::engine::EngineHandle;
    use axum::extract::FromRequestParts;
    use http::{header::HOST, request::Parts, StatusCode};

    impl<S: Send + Sync> FromRequestParts<S> for CacheHandle {
        type Rejection = (StatusCode, &'static str);

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            let Some(EngineHandle(engine)) = parts.extensions.get::<EngineHandle>().cloned() else {
                return Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "CacheHandle needs CacheMiddleware installed around the router",
                ));
            };
            let host = parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned);
            Ok(CacheHandle::new(engine, host))
        }
    }
}
