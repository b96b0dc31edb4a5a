//! The engine as Python holds it: the Rust `CacheMiddleware` with one backend, and the route
//! layers (`cache(timeout)`) it wraps the application in.

use crate::app::{AppLink, Background, PyApp, ReadBody};
use crate::backend::{seconds, Backend, Task};
use crate::background::BackgroundRun;
use crate::exchange::Exchange;
use crate::task::Driven;
use bytes::Bytes;
use cache_middleware::{
    cache, helpers, is_valid_tag, CacheLayer, CacheMiddleware, PurgeKind, RequestScheme,
};
use http::Request;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Arc;
use std::task::{Context, Waker};
use tower_layer::Layer;
use tower_service::Service;

/// One engine: backend, key namespace and limits, shared by every cached route of an app.
#[pyclass(module = "cache_middleware._engine", frozen)]
pub struct Engine {
    middleware: CacheMiddleware,
    /// Application calls of background refreshes, for the Python side to run.
    background: Arc<Background>,
}

/// The route layer of one `@cache(...)` (its timeout and tags), built once per route.
#[pyclass(module = "cache_middleware._engine", frozen)]
pub struct Route {
    layer: CacheLayer,
}

#[pymethods]
impl Engine {
    /// The environment's limits (`CACHE_MAX_BODY_SIZE`, `CACHE_MAX_REQUEST_BODY_SIZE`,
    /// `CACHE_BACKEND_TIMEOUT`, `CACHE_HONOR_REQUEST_CACHE_CONTROL`) apply, as for the Rust
    /// demo; the keyword arguments win over them.
    #[new]
    #[pyo3(signature = (backend, namespace = None, max_body_size = None, max_request_body_size = None, backend_timeout = None))]
    fn new(
        backend: &Backend,
        namespace: Option<String>,
        max_body_size: Option<usize>,
        max_request_body_size: Option<usize>,
        backend_timeout: Option<f64>,
    ) -> PyResult<Self> {
        // Each request's key holds the scheme its scope says (see `begin`).
        let middleware = CacheMiddleware::new(Arc::clone(&backend.inner)).keys_by_scheme();
        let mut middleware = helpers::configure_middleware(middleware)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if let Some(namespace) = namespace {
            middleware = middleware.namespace(namespace);
        }
        if let Some(bytes) = max_body_size {
            middleware = middleware.max_body_size(bytes);
        }
        if let Some(bytes) = max_request_body_size {
            middleware = middleware.max_request_body_size(bytes);
        }
        if let Some(limit) = backend_timeout {
            middleware = middleware.backend_timeout(seconds(limit, "backend_timeout")?);
        }
        Ok(Engine {
            middleware,
            background: Background::new(),
        })
    }

    /// The id the wake signal reports when a background call waits (`take_background`).
    #[getter]
    fn background_id(&self) -> u64 {
        self.background.id
    }

    /// The next application call of a background refresh, for the Python side to run.
    fn take_background(&self) -> Option<BackgroundRun> {
        BackgroundRun::next(&self.background)
    }

    /// The largest POST body read to build a key; a front reads at most one byte more.
    #[getter]
    fn max_request_body_size(&self) -> usize {
        self.middleware.request_body_limit()
    }

    /// The route layer for `@cache(timeout=..., tags=..., stale_while_revalidate=...,
    /// stale_if_error=...)`.
    #[pyo3(signature = (timeout, tags = Vec::new(), stale_while_revalidate = 0.0, stale_if_error = 0.0))]
    fn route(
        &self,
        timeout: f64,
        tags: Vec<String>,
        stale_while_revalidate: f64,
        stale_if_error: f64,
    ) -> PyResult<Route> {
        let ttl = seconds(timeout, "timeout")?;
        let stale_while_revalidate = seconds(stale_while_revalidate, "stale_while_revalidate")?;
        let stale_if_error = seconds(stale_if_error, "stale_if_error")?;
        if let Some(bad) = tags.iter().find(|tag| !is_valid_tag(tag)) {
            return Err(PyValueError::new_err(format!(
                "{bad:?} is not a valid tag: visible ASCII without spaces or commas, at most 256 bytes"
            )));
        }
        Ok(Route {
            layer: cache(ttl)
                .tags(tags)
                .stale_while_revalidate(stale_while_revalidate)
                .stale_if_error(stale_if_error),
        })
    }

    /// Purges every entry carrying `tag`: `soft` makes them stale, otherwise they are gone.
    fn purge_tag(&self, tag: String, soft: bool) -> PyResult<Task> {
        if !is_valid_tag(&tag) {
            return Err(PyValueError::new_err(format!("{tag:?} is not a valid tag")));
        }
        let handle = self.middleware.handle();
        let kind = purge_kind(soft);
        Ok(Task::doing(
            async move { handle.purge_tag(&tag, kind).await },
        ))
    }

    /// Purges the cached GET (and HEAD) response for `url` (an absolute URL, or a path with
    /// `host`): gone with every variant, or with `soft` made stale (a response that varies is
    /// purged hard either way).
    #[pyo3(signature = (url, host = None, soft = false))]
    fn invalidate(&self, url: String, host: Option<String>, soft: bool) -> Task {
        let handle = self.middleware.handle();
        let url = match host {
            Some(host) if url.starts_with('/') => format!("http://{host}{url}"),
            _ => url,
        };
        let kind = purge_kind(soft);
        Task::doing(async move {
            handle
                .purge_url(http::Method::GET, &url, kind)
                .await
                .map(|_| ())
        })
    }

    /// Starts one request through the route flow of `route` and drives it once. A response
    /// complete at once (every hit from memory) comes back as `(status, headers, body)`, with no
    /// `Exchange` to build and drive; otherwise the `Exchange` to drive.
    /// `body` holds what the front read of a POST body (up to one byte over the limit), `None`
    /// for other methods. `path` is the raw path (ASGI `raw_path`) and `query` the raw query.
    /// `scheme` is the scope's: the application builds URLs with it, and a proxy the server
    /// trusts sets it (`X-Forwarded-Proto`), so it is part of the key.
    /// Raises `ValueError` for a method, scheme, target or field the engine cannot read: the
    /// front then serves the request uncached.
    #[pyo3(signature = (method, scheme, path, query, headers, body, route))]
    #[allow(clippy::too_many_arguments)]
    fn begin<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        scheme: &str,
        path: &[u8],
        query: &[u8],
        headers: &Bound<'py, PyAny>,
        body: Option<Vec<Bound<'py, PyBytes>>>,
        route: &Route,
    ) -> PyResult<Bound<'py, PyAny>> {
        let headers = crate::exchange::header_pairs(headers)?;
        let mut target = Vec::with_capacity(path.len() + 1 + query.len());
        target.extend_from_slice(path);
        if !query.is_empty() {
            target.push(b'?');
            target.extend_from_slice(query);
        }
        let target = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(target))
            .map_err(|e| PyValueError::new_err(format!("request target cannot be read: {e}")))?;
        let method = http::Method::from_bytes(method.as_bytes())
            .map_err(|e| PyValueError::new_err(format!("request method cannot be read: {e}")))?;
        let chunks = body.iter().flatten();
        let body = ReadBody::new(
            chunks
                .map(|c| Bytes::copy_from_slice(c.as_bytes()))
                .collect(),
        );
        let scheme = http::uri::Scheme::try_from(scheme)
            .map_err(|e| PyValueError::new_err(format!("request scheme cannot be read: {e}")))?;
        let mut request = Request::new(body);
        request.extensions_mut().insert(RequestScheme(scheme));
        *request.method_mut() = method;
        *request.uri_mut() = http::Uri::from(target);
        let fields = request.headers_mut();
        for (name, value) in headers {
            // The ASGI server parsed these already, but may let through what `http` refuses
            // (uvicorn's h11 server, a DEL byte in a value). The application reads such a field
            // all the same, so the engine must not decide without it (an `Authorization` it did
            // not see would let a response to credentials be shared): the request goes uncached.
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) else {
                return Err(PyValueError::new_err("a request field cannot be read"));
            };
            fields.append(name, value);
        }
        let link = Arc::new(AppLink::new(Arc::clone(&self.background)));
        let app = PyApp {
            link: Arc::clone(&link),
        };
        let mut service = self.middleware.layer(route.layer.layer(app));
        // Always ready (the application is called through the link), but the contract asks.
        let _ = service.poll_ready(&mut Context::from_waker(Waker::noop()));
        let flow = service.call(request);
        let mut exchange = Exchange::new(Driven::new(flow), link);
        match exchange.drive()? {
            Some(ready) if ready.is_complete() => {
                Ok(ready.into_complete(py).into_pyobject(py)?.into_any())
            }
            found => {
                if let Some(ready) = found {
                    exchange.keep(ready);
                }
                Ok(Bound::new(py, exchange)?.into_any())
            }
        }
    }
}

/// Python's `soft=` flag as the engine's purge kind.
fn purge_kind(soft: bool) -> PurgeKind {
    if soft {
        PurgeKind::Soft
    } else {
        PurgeKind::Hard
    }
}
