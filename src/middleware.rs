//! `CacheMiddleware`: the layer added once around the application. It owns the engine (backend and
//! engine-wide settings) and hands it to the `cache(ttl)` route layers through request extensions.

use crate::backends::Backend;
use crate::engine::{Engine, EngineConfig, EngineHandle};
use crate::handle::CacheHandle;
use http::{Request, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// The cache middleware: add it once, around the router; opt routes in with [`cache`](crate::cache).
///
/// ```
/// use axum::{routing::get, Router};
/// use cache_middleware::{backends::MemoryBackend, cache, CacheMiddleware};
/// use std::time::Duration;
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "Hello, World" }).layer(cache(Duration::from_secs(300))))
///     .layer(CacheMiddleware::new(MemoryBackend::new(1000)).namespace("my-app"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct CacheMiddleware {
    engine: Arc<Engine>,
}

impl CacheMiddleware {
    /// A middleware storing responses in `backend`: a concrete backend or an `Arc<dyn Backend>`.
    pub fn new<B: Backend + 'static>(backend: B) -> Self {
        CacheMiddleware {
            engine: Arc::new(Engine::new(Arc::new(backend), EngineConfig::default())),
        }
    }

    /// What the cache has done since start: hits, misses, stores, failures, breaker state.
    pub fn stats(&self) -> crate::CacheStats {
        self.engine.stats()
    }

    /// A handle for start-up code: the backend (for warming) and invalidation. Take it after the
    /// last setter: each setter builds a new engine, and a handle taken before it still speaks for
    /// the old one (its namespace, its limits, its counters).
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(Arc::clone(&self.engine), None)
    }

    /// Shared-cache mode: instead of routes opting in with a TTL, every GET and HEAD is cached as
    /// the origin's headers allow (RFC 9111), as a proxy or CDN would. Add the returned layer
    /// around the whole application, in place of this one.
    pub fn http_semantics(self) -> crate::SharedCache {
        crate::SharedCache::new(self.engine)
    }

    fn configure(self, change: impl FnOnce(&mut EngineConfig)) -> Self {
        let mut config = self.engine.config.clone();
        change(&mut config);
        CacheMiddleware {
            engine: Arc::new(Engine::new(Arc::clone(&self.engine.backend), config)),
        }
    }

    /// For a front that puts each request's [`RequestScheme`](crate::RequestScheme) in its
    /// extensions (the Python package does): a URL's purges then reach its entries for `http`
    /// and for `https`.
    pub fn keys_by_scheme(self) -> Self {
        self.configure(|c| c.keys_by_scheme = true)
    }

    /// Prefix of every key this middleware writes (default `"cache"`). Applications sharing one
    /// backend under different namespaces never see each other's entries.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        self.configure(|c| c.namespace = namespace)
    }

    /// Largest response body stored, in bytes (default 1 MiB). Larger bodies stream through
    /// unstored. At most [`MAX_STORED_BODY`](crate::MAX_STORED_BODY) (4 GiB less 2
    /// bytes, what an entry can hold): a larger value is taken as that.
    pub fn max_body_size(self, bytes: usize) -> Self {
        self.configure(|c| c.max_body_size = bytes.min(crate::MAX_STORED_BODY))
    }

    /// Largest POST body that is read to build a key, in bytes (default 64 KiB). A larger request
    /// bypasses the cache and reaches the handler intact.
    pub fn max_request_body_size(self, bytes: usize) -> Self {
        self.configure(|c| c.max_request_body_size = bytes)
    }

    /// The request body limit in force (see [`max_request_body_size`](Self::max_request_body_size)):
    /// a front that reads request bodies itself reads at most one byte more.
    pub fn request_body_limit(&self) -> usize {
        self.engine.config.max_request_body_size
    }

    /// Whether request `Cache-Control: no-cache / no-store` (and `Pragma: no-cache`) are obeyed
    /// (default `true`). Switch off when clients must not be able to force handler runs.
    pub fn honor_request_cache_control(self, honor: bool) -> Self {
        self.configure(|c| c.honor_request_cache_control = honor)
    }

    /// Status codes that may be stored, for routes that do not set their own (default: 200 only).
    pub fn cacheable_statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        let statuses: Vec<_> = statuses.into_iter().collect();
        self.configure(|c| c.cacheable_statuses = statuses)
    }

    /// The latency budget: most time one backend call may take before a lookup counts as a miss
    /// and a store is dropped (default 100 ms).
    pub fn backend_timeout(self, limit: Duration) -> Self {
        self.configure(|c| c.backend_timeout = limit)
    }

    /// Consecutive backend failures that open the circuit breaker (default 5). While open, requests
    /// go straight to the handler without touching the backend.
    pub fn breaker_threshold(self, failures: u32) -> Self {
        self.configure(|c| c.breaker_threshold = failures)
    }

    /// How long the open breaker waits before probing the backend again (default 1 s).
    pub fn breaker_cooldown(self, cooldown: Duration) -> Self {
        self.configure(|c| c.breaker_cooldown = cooldown)
    }

    /// Most time a request waits for an identical request's handler run before running its own
    /// (default 10 s), in this instance or, with fleet single flight, in another one. It is also
    /// the lifetime of a fleet lease whose holder died.
    pub fn coalesce_timeout(self, limit: Duration) -> Self {
        self.configure(|c| c.coalesce_timeout = limit)
    }

    /// Whether instances sharing a backend that supports leases (Redis) run one handler in the
    /// whole fleet for a missing key, the others waiting for its entry (default on). Off, each
    /// instance runs its own. Either way, a backend that cannot be reached means running here.
    pub fn fleet_single_flight(self, on: bool) -> Self {
        self.configure(|c| c.fleet_single_flight = on)
    }

    /// The response field that names an entry's tags (default `Surrogate-Key`; values separated
    /// by spaces or commas). It is removed from every response before it reaches a client.
    pub fn tag_header(self, name: http::HeaderName) -> Self {
        self.configure(|c| c.tag_header = name)
    }

    /// How long a key whose response could not be stored (it set a cookie, was private, too
    /// large, not a cacheable status other than a server error, ...) is remembered, so that its
    /// requests go straight to the handler or origin instead of queueing behind one whose answer
    /// they could not share (hit-for-miss). A response that can be stored ends it at once.
    /// Default 10 s; zero turns it off. Per instance, at most 10,000 keys.
    pub fn hit_for_miss(self, duration: Duration) -> Self {
        self.configure(|c| c.hit_for_miss = duration)
    }

    /// The most bytes that responses streamed to their clients while they are stored may hold at
    /// once (default 256 MiB): a response of known length (see `fill`) its body's length until its
    /// last reader is done, one of unknown length the copy kept of it so far. Past it, a further
    /// such response streams through without being stored; 0 streams none while storing (each is
    /// read first, up to [`max_body_size`](Self::max_body_size)).
    pub fn fill_max_bytes(self, bytes: u64) -> Self {
        self.configure(|c| c.fill_max_bytes = bytes)
    }

    /// Refreshes entries in the background during the last `fraction` of their lifetime (for
    /// example 0.1: the last 30 s of `cache(300)`), each hit there with a chance that grows to
    /// certainty at expiry; one refresh per entry in the fleet. Hot entries are thus replaced
    /// before they expire and nobody waits for their handler or origin. In shared-cache mode (the
    /// proxy) the refresh is a background validation, conditional when the entry has a validator.
    /// Off (0) by default; values are clamped to 0..=1.
    pub fn early_refresh(self, fraction: f64) -> Self {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.configure(|c| c.early_refresh = fraction)
    }
}

impl fmt::Debug for CacheMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheMiddleware")
            .field("backend", &self.engine.backend)
            .field("config", &self.engine.config)
            .finish()
    }
}

impl<S> Layer<S> for CacheMiddleware {
    type Service = CacheMiddlewareService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheMiddlewareService {
            inner,
            engine: EngineHandle(Arc::clone(&self.engine)),
        }
    }
}

/// The service [`CacheMiddleware`] wraps around an application.
#[derive(Clone)]
pub struct CacheMiddlewareService<S> {
    inner: S,
    engine: EngineHandle,
}

impl<S, B> Service<Request<B>> for CacheMiddlewareService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.engine.clone());
        self.inner.call(request)
    }
}
