//! `cache(ttl)`: the per-route opt-in, its options, and the service that runs the request flow
//! (in `flow.rs`).

mod flow;

use crate::body::CacheBody;
use crate::engine::Lifetime;
use crate::entry::Entry;
use crate::service::{take_ready, Handler, SendBody};
use futures_util::future::BoxFuture;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, Request, Response, StatusCode};
use std::borrow::Cow;
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
            bypass_cookies: false,
            statuses: None,
            stale_if_error: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            tags: Vec::new(),
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
    bypass_cookies: bool,
    statuses: Option<Vec<StatusCode>>,
    stale_if_error: Duration,
    stale_while_revalidate: Duration,
    /// Tags every entry of the route carries (sorted, without duplicates).
    tags: Vec<String>,
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

    /// Requests that carry `Cookie` pass to the handler uncached (`X-Cache: BYPASS`). For
    /// handlers that may answer per user without marking the response `private`, as an
    /// application behind the proxy does.
    pub fn bypass_requests_with_cookie(mut self) -> Self {
        Arc::make_mut(&mut self.route).bypass_cookies = true;
        self
    }

    /// Status codes this route may store (replaces the middleware's set, default 200 only).
    pub fn cacheable_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        Arc::make_mut(&mut self.route).statuses = Some(statuses.into_iter().collect());
        self
    }

    /// Keeps entries `grace` past their timeout; when the handler then fails (an error or a 5xx),
    /// the stale entry is served instead (`X-Cache: STALE`). Off by default.
    pub fn stale_if_error(mut self, grace: Duration) -> Self {
        Arc::make_mut(&mut self.route).stale_if_error = grace;
        self
    }

    /// Keeps entries `grace` past their timeout; a request in that window is answered at once with
    /// the stale entry (`X-Cache: STALE`) while one background run of the handler refreshes it
    /// (one per key at a time). Off by default.
    pub fn stale_while_revalidate(mut self, grace: Duration) -> Self {
        Arc::make_mut(&mut self.route).stale_while_revalidate = grace;
        self
    }

    /// Tags every entry of this route carries, besides those its responses name in the tag field
    /// (`Surrogate-Key`); [`CacheHandle::purge_tag`](crate::CacheHandle::purge_tag) purges them.
    ///
    /// # Panics
    /// If a tag is empty, longer than 256 bytes, or holds a space, a comma or a character that is
    /// not visible ASCII: a programming error, found at start-up.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let route = Arc::make_mut(&mut self.route);
        for tag in tags {
            let tag = tag.into();
            assert!(
                crate::tags::is_valid_tag(&tag),
                "tags: {tag:?} is not a valid tag"
            );
            route.tags.push(tag);
        }
        route.tags.sort();
        route.tags.dedup();
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
        Box::pin(flow::run(inner, Arc::clone(&self.route), request))
    }
}

impl RouteConfig {
    /// How long entries are kept past their timeout for stale serving.
    fn grace(&self) -> Duration {
        self.stale_if_error.max(self.stale_while_revalidate)
    }

    /// The lifetime of a response made now.
    fn lifetime_from_now(&self) -> Lifetime {
        Lifetime {
            born_ms: Entry::now_ms(),
            ttl: self.ttl,
            grace: self.grace(),
        }
    }

    /// The fields a request's entry and single flight vary on before the response is known: the
    /// route's, and the renaming fields the request carries (`X-Forwarded-Host`, ...; see
    /// `policy::renaming_fields_of`), sorted and deduplicated.
    fn request_vary(&self, renaming: &[String]) -> Cow<'_, [String]> {
        if renaming.is_empty() {
            return Cow::Borrowed(&self.vary);
        }
        Cow::Owned(crate::policy::with_renaming(self.vary.clone(), renaming))
    }

    /// What an entry varies on: [`request_vary`](Self::request_vary) and the names the
    /// response's `Vary` lists, sorted and deduplicated.
    fn vary_names(&self, renaming: &[String], response_headers: &HeaderMap) -> Vec<String> {
        let mut names = self.request_vary(renaming).into_owned();
        names.extend(crate::policy::vary_names(response_headers));
        names.sort();
        names.dedup();
        names
    }
}
