//! Shared-cache mode: the cache follows the origin's own headers, as RFC 9111 asks of a shared
//! cache (a proxy or CDN), instead of a TTL the application chooses per route.
//!
//! Built with [`CacheMiddleware::http_semantics`](crate::CacheMiddleware::http_semantics); it
//! shares the key, entry format, backends, single flight and circuit breaker with route mode. The
//! files split the rules: `freshness` (lifetime and age), `storable` (what may be stored),
//! `rules` (what a stored response may be used for, how long one is kept), `targeted` (RFC 9213
//! fields), `revalidate` (conditional requests and 304 updates), `invalidate` (unsafe methods),
//! `cache_status` (the RFC 9211 field); `flow` (the request path) and `origin` (the exchanges
//! with the origin) only sequence them.

mod cache_status;
mod flow;
mod freshness;
mod invalidate;
mod origin;
mod revalidate;
mod rules;
pub(crate) mod storable;
pub(crate) mod targeted;

use crate::body::CacheBody;
use crate::engine::Engine;
use crate::service::{take_ready, Handler, SendBody};
use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// The shared-cache layer: every GET and HEAD is answered by the rules of RFC 9111, other methods
/// invalidate what they change.
///
/// ```
/// use axum::{routing::get, Router};
/// use cache_middleware::{backends::MemoryBackend, CacheMiddleware};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { ([("cache-control", "public, max-age=60")], "hello") }))
///     .layer(CacheMiddleware::new(MemoryBackend::new(10_000)).http_semantics());
/// ```
#[derive(Clone)]
#[must_use]
pub struct SharedCache {
    engine: Arc<Engine>,
    options: Arc<SharedOptions>,
}

#[derive(Debug, Clone)]
pub(crate) struct SharedOptions {
    pub name: String,
    pub store_set_cookie: bool,
    pub keep_stale: Duration,
    pub max_heuristic: Duration,
    pub targeted: Vec<HeaderName>,
    /// Sent to the origin in place of the client's: see `targeted::surrogate_capability`.
    pub surrogate_capability: Option<HeaderValue>,
}

impl SharedCache {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        SharedCache {
            engine,
            options: Arc::new(SharedOptions {
                name: "cache-middleware".to_owned(),
                store_set_cookie: false,
                keep_stale: Duration::from_secs(3600),
                max_heuristic: freshness::DEFAULT_MAX_HEURISTIC,
                targeted: vec![
                    HeaderName::from_static("cdn-cache-control"),
                    HeaderName::from_static("surrogate-control"),
                ],
                surrogate_capability: None,
            }),
        }
        .configure(|_| ())
    }

    fn configure(mut self, change: impl FnOnce(&mut SharedOptions)) -> Self {
        let options = Arc::make_mut(&mut self.options);
        change(options);
        options.surrogate_capability =
            targeted::surrogate_capability(&options.targeted, &options.name);
        self
    }

    /// The name this cache gives itself in `Cache-Status` (default `cache-middleware`).
    pub fn cache_status_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.configure(|o| o.name = name)
    }

    /// Stores responses that set cookies (default `false`). RFC 9111 allows it, but a stored
    /// `Set-Cookie` is replayed to every client: a session handed to strangers. Off, such a response
    /// is stored only when `no-cache="set-cookie"` or `private="set-cookie"` lets the cache drop
    /// the cookie.
    pub fn store_set_cookie(self, store: bool) -> Self {
        self.configure(|o| o.store_set_cookie = store)
    }

    /// How long a stale response with a validator is kept for revalidation (default 1 hour).
    pub fn keep_stale(self, keep: Duration) -> Self {
        self.configure(|o| o.keep_stale = keep)
    }

    /// The most heuristic freshness a response without explicit freshness gets (default 1 day; it
    /// is 10% of the time since `Last-Modified`). `Duration::ZERO` turns heuristics off.
    pub fn max_heuristic_freshness(self, limit: Duration) -> Self {
        self.configure(|o| o.max_heuristic = limit)
    }

    /// Targeted fields (RFC 9213), in order of preference: the first one a response carries
    /// replaces `Cache-Control` for this cache. Default: `CDN-Cache-Control`, then
    /// `Surrogate-Control`; an empty list ignores targeted fields. With `Surrogate-Control` in the
    /// list, requests reach the origin with `Surrogate-Capability: <name>="Surrogate/1.0"` (the
    /// name of [`cache_status_name`](Self::cache_status_name)) in place of any the client sent,
    /// so the origin can target directives at this cache.
    pub fn targeted_cache_control(self, fields: impl IntoIterator<Item = HeaderName>) -> Self {
        let fields: Vec<_> = fields.into_iter().collect();
        self.configure(|o| o.targeted = fields)
    }

    /// What the cache has done since start.
    pub fn stats(&self) -> crate::CacheStats {
        self.engine.stats()
    }
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("backend", &self.engine.backend)
            .field("config", &self.engine.config)
            .field("options", &self.options)
            .finish()
    }
}

impl<S> Layer<S> for SharedCache {
    type Service = SharedCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SharedCacheService {
            inner,
            engine: Arc::clone(&self.engine),
            options: Arc::clone(&self.options),
        }
    }
}

/// The service [`SharedCache`] wraps around an application or a proxy.
#[derive(Clone)]
pub struct SharedCacheService<S> {
    inner: S,
    engine: Arc<Engine>,
    options: Arc<SharedOptions>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for SharedCacheService<S>
where
    S: Service<Request<CacheBody<ReqB>>, Response = Response<ResB>> + Handler<ReqB, ResB> + Clone,
    ReqB: SendBody,
    ResB: SendBody,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let inner = take_ready(&mut self.inner);
        let cache = flow::Cache {
            engine: Arc::clone(&self.engine),
            options: Arc::clone(&self.options),
        };
        Box::pin(cache.run(inner, request))
    }
}
