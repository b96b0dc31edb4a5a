//! `cache(ttl)`: the per-route opt-in, and the request flow it runs.
//!
//! 1. classify the request (look up, refresh or bypass); read a POST body up to the limit;
//! 2. build the key; 3. look up; 4. on a hit, replay; 5. on a miss, run the handler once per key
//!    (single flight), classify the response, read its body up to the limit; 6. store and answer.

use crate::body::{collect_limited, CacheBody, Collected};
use crate::coalesce::Join;
use crate::engine::Shared;
use crate::key::{primary_key, variant_key, KeyDescription};
use crate::middleware::EngineHandle;
use crate::policy::{
    classify_request, classify_response, BypassReason, RequestDecision, RequestPolicy,
    ResponseDecision, ResponsePolicy,
};
use crate::replay::{mark, replay, to_stored, CacheStatus};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Opts a route into caching for `timeout`: the counterpart of `@cache(timeout=300)`.
///
/// Takes a [`Duration`] or a whole number of seconds.
///
/// ```
/// use axum::{routing::get, Router};
/// use cache_middleware::{backends::MemoryBackend, cache, CacheMiddleware};
/// use std::time::Duration;
///
/// let app: Router = Router::new()
///     .route("/stats", get(|| async { "12345" }).layer(cache(Duration::from_secs(60))))
///     .route("/config", get(|| async { "1.0" }).layer(cache(3600)))
///     .route(
///         "/me",
///         get(|| async { "per user" }).layer(cache(30).allow_authorization().vary_on("accept-language")),
///     )
///     .layer(CacheMiddleware::new(MemoryBackend::new(1000)));
/// ```
pub fn cache(timeout: impl IntoTimeout) -> CacheLayer {
    CacheLayer {
        route: Arc::new(RouteConfig {
            ttl: timeout.into_timeout(),
            vary: Vec::new(),
            allow_authorization: false,
            statuses: None,
        }),
    }
}

/// A cache lifetime: a [`Duration`], or whole seconds as an integer (negative counts as zero).
pub trait IntoTimeout {
    fn into_timeout(self) -> Duration;
}

impl IntoTimeout for Duration {
    fn into_timeout(self) -> Duration {
        self
    }
}

macro_rules! seconds_into_timeout {
    ($($int:ty),*) => {$(
        impl IntoTimeout for $int {
            fn into_timeout(self) -> Duration {
                Duration::from_secs(u64::try_from(self).unwrap_or(0))
            }
        }
    )*};
}
seconds_into_timeout!(i32, i64, u32, u64, usize);

#[derive(Debug, Clone)]
struct RouteConfig {
    ttl: Duration,
    /// Request fields always varied on: lower-case, sorted, without duplicates.
    vary: Vec<String>,
    allow_authorization: bool,
    statuses: Option<Vec<StatusCode>>,
}

/// The route layer returned by [`cache`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CacheLayer {
    route: Arc<RouteConfig>,
}

impl CacheLayer {
    /// Keeps a separate entry per value of this request header (in addition to what the
    /// response's own `Vary` lists).
    ///
    /// # Panics
    /// If `header` is not a valid header name: a programming error, found at start-up.
    pub fn vary_on(mut self, header: impl AsRef<str>) -> Self {
        let name = HeaderName::try_from(header.as_ref())
            .unwrap_or_else(|_| panic!("vary_on: {:?} is not a header name", header.as_ref()));
        let route = Arc::make_mut(&mut self.route);
        route.vary.push(name.as_str().to_owned());
        route.vary.sort();
        route.vary.dedup();
        self
    }

    /// Lets requests that carry `Authorization` use the cache. The credential becomes part of the
    /// key, so each credential has its own entries; without this, such requests bypass the cache.
    pub fn allow_authorization(mut self) -> Self {
        Arc::make_mut(&mut self.route).allow_authorization = true;
        self.vary_on(AUTHORIZATION)
    }

    /// Status codes this route may store (replaces the middleware's set, default 200 only).
    pub fn cacheable_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        Arc::make_mut(&mut self.route).statuses = Some(statuses.into_iter().collect());
        self
    }

    /// The lifetime of this route's entries.
    pub fn timeout(&self) -> Duration {
        self.route.ttl
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            route: Arc::clone(&self.route),
        }
    }
}

/// The service [`cache`] wraps around a route.
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    route: Arc<RouteConfig>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<CacheBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqB: Body<Data = Bytes> + Send + Unpin + 'static,
    ReqB::Error: Send,
    ResB: Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Send,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // Keep the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(run(inner, Arc::clone(&self.route), request))
    }
}

async fn run<S, ReqB, ResB>(
    mut inner: S,
    route: Arc<RouteConfig>,
    request: Request<ReqB>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<CacheBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + Unpin,
    ResB: Body<Data = Bytes> + Unpin,
{
    let Some(EngineHandle(engine)) = request.extensions().get::<EngineHandle>().cloned() else {
        warn_missing_middleware();
        let request = request.map(CacheBody::stream);
        return Ok(inner.call(request).await?.map(CacheBody::stream));
    };
    let (parts, body) = request.into_parts();
    let policy = RequestPolicy {
        allow_authorization: route.allow_authorization,
        honor_request_cache_control: engine.config.honor_request_cache_control,
    };
    let decision = classify_request(&parts, policy);
    if let RequestDecision::Bypass(reason) = decision {
        return bypass(inner, parts, CacheBody::stream(body), reason).await;
    }

    let (body, body_bytes) = if parts.method == Method::POST {
        match collect_limited(body, engine.config.max_request_body_size).await {
            Collected::Complete(bytes) => (CacheBody::full(bytes.clone()), Some(bytes)),
            Collected::TooLarge(body) => {
                return bypass(inner, parts, body, BypassReason::BodyTooLarge).await
            }
            Collected::Failed(body) => {
                return bypass(inner, parts, body, BypassReason::BodyUnreadable).await
            }
        }
    } else {
        (CacheBody::stream(body), None)
    };

    let key = primary_key(&engine.config.namespace, &parts, body_bytes.as_deref());
    let described = KeyDescription {
        parts: &parts,
        body_len: body_bytes.as_ref().map(Bytes::len),
    };
    tracing::debug!(key = %key, parts = %described, "cache key generated");

    let status = if decision == RequestDecision::Refresh {
        tracing::debug!(key = %key, "request asked for a fresh response (no-cache)");
        CacheStatus::Refresh
    } else {
        if let Some(entry) = engine.lookup(&key, &parts.headers).await {
            tracing::debug!(key = %key, "cache hit");
            let response = entry.response().expect("lookup returns responses");
            let age = entry.age(crate::entry::Entry::now_ms());
            return Ok(replay(
                response,
                &parts.method,
                &parts.headers,
                CacheStatus::Hit,
                Some(age),
            ));
        }
        tracing::debug!(key = %key, "cache miss");
        CacheStatus::Miss
    };

    // Single flight: identical requests (same key and same values of the route's varying fields,
    // credentials included) wait for one handler run. HEAD cannot lead (its response has no body)
    // and a refresh must reach the handler.
    let mut leader = None;
    if status == CacheStatus::Miss && parts.method != Method::HEAD {
        let flight_key = variant_key(&engine.config.namespace, &key, &route.vary, &parts.headers);
        match engine.flights.join(flight_key.as_str()) {
            Join::Leader(guard) => leader = Some(guard),
            Join::Waiter(waiter) => match waiter.wait(engine.config.coalesce_timeout).await {
                Some(shared) if engine.shared_fits(&shared, &key, &parts.headers) => {
                    tracing::debug!(key = %key, "served the response of an identical request in flight");
                    return Ok(replay_shared(&shared, &parts.method, &parts.headers));
                }
                _ => tracing::debug!(key = %key, "no shared response; running the handler"),
            },
        }
    }

    let method = parts.method.clone();
    let request_headers = parts.headers.clone();
    let response = inner.call(Request::from_parts(parts, body)).await?;
    let (response_parts, response_body) = response.into_parts();

    let statuses = route
        .statuses
        .as_deref()
        .unwrap_or(&engine.config.cacheable_statuses);
    let response_policy = ResponsePolicy {
        statuses,
        max_body: engine.config.max_body_size,
    };
    let decision = classify_response(
        &method,
        response_parts.status,
        &response_parts.headers,
        response_policy,
    );
    if let ResponseDecision::Skip(reason) = decision {
        tracing::debug!(key = %key, %reason, status = %response_parts.status, "response not cached");
        let response = Response::from_parts(response_parts, CacheBody::stream(response_body));
        return Ok(mark(response, status));
    }
    let body = match collect_limited(response_body, engine.config.max_body_size).await {
        Collected::Complete(bytes) => bytes,
        Collected::TooLarge(body) | Collected::Failed(body) => {
            tracing::debug!(key = %key, reason = "response-body-too-large-or-failed", "response not cached");
            return Ok(mark(Response::from_parts(response_parts, body), status));
        }
    };

    let stored = to_stored(&response_parts, body);
    let vary = route.vary_names(&response_parts.headers);
    let shared = engine
        .store(&key, vary, &request_headers, stored, route.ttl)
        .await;
    let shared = Arc::new(shared);
    if let Some(leader) = leader {
        leader.finish(Some(Arc::clone(&shared)));
    }
    let stored = shared
        .entry
        .response()
        .expect("stored entries hold responses");
    Ok(replay(stored, &method, &request_headers, status, None))
}

async fn bypass<S, ReqB, ResB>(
    mut inner: S,
    parts: http::request::Parts,
    body: CacheBody<ReqB>,
    reason: BypassReason,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<CacheBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + Unpin,
    ResB: Body<Data = Bytes> + Unpin,
{
    tracing::debug!(method = %parts.method, path = parts.uri.path(), %reason, "request bypasses the cache");
    let response = inner.call(Request::from_parts(parts, body)).await?;
    Ok(mark(response.map(CacheBody::stream), CacheStatus::Bypass))
}

impl RouteConfig {
    /// The route's varying fields and those the response's `Vary` names, sorted and deduplicated.
    fn vary_names(&self, response_headers: &HeaderMap) -> Vec<String> {
        let mut names = self.vary.clone();
        names.extend(crate::policy::vary_names(response_headers));
        names.sort();
        names.dedup();
        names
    }
}

fn replay_shared<B: Body>(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
) -> Response<CacheBody<B>> {
    let response = shared
        .entry
        .response()
        .expect("shared entries hold responses");
    let age = shared.entry.age(crate::entry::Entry::now_ms());
    replay(response, method, headers, CacheStatus::Hit, Some(age))
}

fn warn_missing_middleware() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "a route has cache(..) but no CacheMiddleware is installed around the router: \
             requests pass through uncached (add .layer(CacheMiddleware::new(backend)))"
        );
    }
}
