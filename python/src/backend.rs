//! The storage backends, built by the Rust builders from the guide's keyword arguments, and their
//! `get`/`set`/`delete`/`clear` as tasks Python awaits (the guide's benchmark and warming code).

use crate::task::Driven;
use bytes::Bytes;
use cache_middleware::backends::{
    Backend as RustBackend, BackendError, CertReqs, KeepaliveOptions, MemcachedBackend,
    MemoryBackend, RedisBackend,
};
use cache_middleware::helpers;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A storage backend of the engine.
#[pyclass(module = "cache_middleware._engine", frozen)]
#[derive(Clone)]
pub struct Backend {
    pub inner: Arc<dyn RustBackend>,
}

fn invalid(error: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(error.to_string())
}

pub(crate) fn seconds(value: f64, option: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| PyValueError::new_err(format!("{option} must be a number of seconds >= 0")))
}

/// What `Backend.get` and friends complete with.
enum Outcome {
    Value(Option<Bytes>),
    Done,
}

/// A backend operation Python awaits.
#[pyclass(module = "cache_middleware._engine")]
pub struct Task {
    driven: Driven<Result<Outcome, String>>,
}

impl Task {
    /// A task that reads a value.
    fn reading(
        read: impl Future<Output = Result<Option<Bytes>, BackendError>> + Send + 'static,
    ) -> Self {
        Self::of(async move { read.await.map(Outcome::Value) })
    }

    /// A task that changes something and completes with nothing.
    pub(crate) fn doing(
        work: impl Future<Output = Result<(), BackendError>> + Send + 'static,
    ) -> Self {
        Self::of(async move { work.await.map(|()| Outcome::Done) })
    }

    fn of(work: impl Future<Output = Result<Outcome, BackendError>> + Send + 'static) -> Self {
        Task {
            driven: Driven::new(async move { work.await.map_err(|e| e.to_string()) }),
        }
    }
}

#[pymethods]
impl Task {
    #[getter]
    fn id(&self) -> u64 {
        self.driven.id
    }

    /// `(True, value)` once done (`value` is the bytes read, or `None`), `(False, None)` while it
    /// waits. Raises `RuntimeError` with the backend's (redacted) error.
    fn poll<'py>(&mut self, py: Python<'py>) -> PyResult<(bool, Option<Bound<'py, PyBytes>>)> {
        match self.driven.poll() {
            None => Ok((false, None)),
            Some(Err(message)) => Err(PyRuntimeError::new_err(message)),
            Some(Ok(Outcome::Done | Outcome::Value(None))) => Ok((true, None)),
            Some(Ok(Outcome::Value(Some(bytes)))) => Ok((true, Some(PyBytes::new(py, &bytes)))),
        }
    }
}

impl Backend {
    /// A backend from its builder, built inside the runtime (clients may start tasks there); a
    /// build error is a `ValueError` with the builder's message (passwords masked).
    fn built<E: std::fmt::Display>(
        build: impl FnOnce() -> Result<Arc<dyn RustBackend>, E>,
    ) -> PyResult<Self> {
        let _runtime = crate::task::runtime().enter();
        let inner = build().map_err(invalid)?;
        Ok(Backend { inner })
    }
}

#[pymethods]
impl Backend {
    /// The in-process store: at most `max_size` entries and `max_bytes` bytes (default 256 MiB).
    #[staticmethod]
    #[pyo3(signature = (max_size = 1000, max_bytes = None))]
    fn memory(max_size: u64, max_bytes: Option<u64>) -> PyResult<Self> {
        if max_size == 0 {
            return Err(PyValueError::new_err("max_size must be at least 1"));
        }
        let mut builder = MemoryBackend::builder().max_size(max_size);
        if let Some(bytes) = max_bytes {
            builder = builder.max_bytes(bytes);
        }
        Ok(Backend {
            inner: Arc::new(builder.build()),
        })
    }

    /// Redis (standalone, `rediss://` for TLS), with the guide's options.
    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        url,
        max_connections = None,
        retry_on_timeout = None,
        socket_keepalive = None,
        keepalive_idle = None,
        keepalive_interval = None,
        keepalive_count = None,
        health_check_interval = None,
        password = None,
        ssl_cert_reqs = None,
        ssl_ca_certs = None,
        socket_timeout = None,
        namespace = None,
        cluster_nodes = None,
        sentinels = None,
        service_name = None,
        local_tier_max_bytes = None,
    ))]
    fn redis(
        url: String,
        max_connections: Option<usize>,
        retry_on_timeout: Option<bool>,
        socket_keepalive: Option<bool>,
        keepalive_idle: Option<f64>,
        keepalive_interval: Option<f64>,
        keepalive_count: Option<u32>,
        health_check_interval: Option<f64>,
        password: Option<String>,
        ssl_cert_reqs: Option<String>,
        ssl_ca_certs: Option<PathBuf>,
        socket_timeout: Option<f64>,
        namespace: Option<String>,
        cluster_nodes: Option<Vec<String>>,
        sentinels: Option<Vec<String>>,
        service_name: Option<String>,
        local_tier_max_bytes: Option<u64>,
    ) -> PyResult<Self> {
        let mut builder = match (cluster_nodes, sentinels) {
            (Some(nodes), _) => RedisBackend::cluster_builder(nodes),
            (None, Some(sentinels)) => RedisBackend::sentinel_builder(
                service_name.unwrap_or_else(|| "mymaster".to_owned()),
                sentinels,
            ),
            (None, None) => RedisBackend::builder(url),
        };
        if let Some(n) = max_connections {
            builder = builder.max_connections(n);
        }
        if let Some(retry) = retry_on_timeout {
            builder = builder.retry_on_timeout(retry);
        }
        if let Some(enabled) = socket_keepalive {
            builder = builder.socket_keepalive(enabled);
        }
        if keepalive_idle.is_some() || keepalive_interval.is_some() || keepalive_count.is_some() {
            let mut options = KeepaliveOptions::new();
            if let Some(idle) = keepalive_idle {
                options = options.idle(seconds(idle, "TCP_KEEPIDLE")?);
            }
            if let Some(interval) = keepalive_interval {
                options = options.interval(seconds(interval, "TCP_KEEPINTVL")?);
            }
            if let Some(count) = keepalive_count {
                options = options.count(count);
            }
            builder = builder.socket_keepalive_options(options);
        }
        if let Some(every) = health_check_interval {
            builder = builder.health_check_interval(seconds(every, "health_check_interval")?);
        }
        if let Some(password) = password {
            builder = builder.password(password);
        }
        if let Some(text) = ssl_cert_reqs {
            let reqs: CertReqs = text.parse().map_err(|accepted| {
                PyValueError::new_err(format!("ssl_cert_reqs={text:?} is not valid: {accepted}"))
            })?;
            builder = builder.ssl_cert_reqs(reqs);
        }
        if let Some(path) = ssl_ca_certs {
            builder = builder.ssl_ca_certs(path);
        }
        if let Some(limit) = socket_timeout {
            builder = builder.timeout(seconds(limit, "socket_timeout")?);
        }
        if let Some(namespace) = namespace {
            builder = builder.namespace(namespace);
        }
        if let Some(bytes) = local_tier_max_bytes {
            builder = builder.local_tier(bytes);
        }
        Backend::built(|| builder.build().map(|b| Arc::new(b) as Arc<dyn RustBackend>))
    }

    /// Memcached, one or more servers (`memcache://host:port`, comma-separated).
    #[staticmethod]
    #[pyo3(signature = (url, max_connections = None, namespace = None))]
    fn memcached(
        url: String,
        max_connections: Option<usize>,
        namespace: Option<String>,
    ) -> PyResult<Self> {
        let mut builder = MemcachedBackend::builder(url);
        if let Some(n) = max_connections {
            builder = builder.max_connections(n);
        }
        if let Some(namespace) = namespace {
            builder = builder.namespace(namespace);
        }
        Backend::built(|| builder.build().map(|b| Arc::new(b) as Arc<dyn RustBackend>))
    }

    /// A backend written in Python: an object with `async` `get`, `set`, `delete` and `clear`
    /// (a `CacheBackend` subclass), run in the request's task (see `pybackend`).
    #[staticmethod]
    fn python(py: Python<'_>, object: Py<PyAny>) -> PyResult<Self> {
        let name = object
            .bind(py)
            .get_type()
            .qualname()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string());
        Ok(Backend {
            inner: Arc::new(crate::pybackend::PyBackend::new(object, name)),
        })
    }

    /// The backend `CACHE_BACKEND` and its companion variables describe (the Rust helpers' rules
    /// and messages).
    #[staticmethod]
    fn from_environment() -> PyResult<Self> {
        Backend::built(helpers::auto_configure_backend)
    }

    /// The guide's environments: development, testing, staging, production.
    #[staticmethod]
    fn for_environment(environment: &str) -> PyResult<Self> {
        Backend::built(|| helpers::get_backend_for_environment(environment))
    }

    /// `"memory"`, `"redis"` or `"memcached"`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.name()
    }

    fn get(&self, key: String) -> Task {
        let backend = Arc::clone(&self.inner);
        Task::reading(async move { backend.get(&key).await })
    }

    fn set(&self, key: String, value: &Bound<'_, PyBytes>, ttl: f64) -> PyResult<Task> {
        let value = Bytes::copy_from_slice(value.as_bytes());
        let ttl = seconds(ttl, "timeout")?;
        let backend = Arc::clone(&self.inner);
        Ok(Task::doing(
            async move { backend.set(&key, value, ttl).await },
        ))
    }

    fn delete(&self, key: String) -> Task {
        let backend = Arc::clone(&self.inner);
        Task::doing(async move { backend.delete(&key).await })
    }

    fn clear(&self) -> Task {
        let backend = Arc::clone(&self.inner);
        Task::doing(async move { backend.clear().await })
    }

    fn __repr__(&self) -> String {
        // The backends' Debug output never shows secrets.
        format!("Backend({:?})", self.inner)
    }
}
