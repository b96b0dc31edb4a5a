//! The engine as Python holds it: the Rust `CacheMiddleware` with one backend, and the route
//! layers (`cache(timeout)`) it wraps the application in.

use crate::app::{AppLink, PyApp, ReadBody};
use crate::backend::Backend;
use crate::exchange::Exchange;
use crate::task::Driven;
use bytes::Bytes;
use cache_middleware::{cache, helpers, CacheLayer, CacheMiddleware};
use http::Request;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// One engine: backend, key namespace and limits, shared by every cached route of an app.
#[pyclass(module = "cache_middleware._engine", frozen)]
pub struct Engine {
    middleware: CacheMiddleware,
    /// One route layer per timeout in use (a handful): built once, cloned per request.
    routes: Mutex<HashMap<u64, CacheLayer>>,
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
        let middleware = CacheMiddleware::new(Arc::clone(&backend.inner));
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
        if let Some(seconds) = backend_timeout {
            let limit = Duration::try_from_secs_f64(seconds).map_err(|_| {
                PyValueError::new_err("backend_timeout must be a number of seconds >= 0")
            })?;
            middleware = middleware.backend_timeout(limit);
        }
        Ok(Engine {
            middleware,
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// The largest POST body read to build a key; a front reads at most one byte more.
    #[getter]
    fn max_request_body_size(&self) -> usize {
        self.middleware.request_body_limit()
    }

    /// Starts one request through the route flow of a route cached for `timeout` seconds.
    /// `body` holds what the front read of a POST body (up to one byte over the limit).
    /// `path` is the raw path (ASGI `raw_path`) and `query` the raw query string.
    fn begin(
        &self,
        method: &str,
        path: &[u8],
        query: &[u8],
        headers: &Bound<'_, PyAny>,
        body: Vec<Bound<'_, PyBytes>>,
        timeout: f64,
    ) -> PyResult<Exchange> {
        let headers = crate::exchange::header_pairs(headers)?;
        let mut target = Vec::with_capacity(path.len() + 1 + query.len());
        target.extend_from_slice(path);
        if !query.is_empty() {
            target.push(b'?');
            target.extend_from_slice(query);
        }
        let target = http::uri::PathAndQuery::from_maybe_shared(Bytes::from(target))
            .map_err(|e| PyValueError::new_err(format!("request target cannot be read: {e}")))?;
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .body(ReadBody::new(
                body.iter()
                    .map(|c| Bytes::copy_from_slice(c.as_bytes()))
                    .collect(),
            ))
            .map_err(|e| PyValueError::new_err(format!("request cannot be read: {e}")))?;
        let fields = request.headers_mut();
        for (name, value) in headers {
            // The ASGI server parsed these already; one it let through that `http` refuses is
            // not part of what the key can describe, so it does not reach the engine either.
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                fields.append(name, value);
            }
        }
        let link = Arc::new(AppLink::default());
        let app = PyApp {
            link: Arc::clone(&link),
        };
        let mut service = self.middleware.layer(self.route(timeout)?.layer(app));
        // Always ready (the application is called through the link), but the contract asks.
        let _ = service.poll_ready(&mut Context::from_waker(Waker::noop()));
        let flow = service.call(request);
        Ok(Exchange::new(Driven::new(flow), link))
    }
}

impl Engine {
    fn route(&self, timeout: f64) -> PyResult<CacheLayer> {
        let ttl = Duration::try_from_secs_f64(timeout)
            .map_err(|_| PyValueError::new_err("timeout must be a number of seconds >= 0"))?;
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(routes.entry(millis).or_insert_with(|| cache(ttl)).clone())
    }
}
