//! A backend written in Python (a `CacheBackend` subclass), run by the engine.
//!
//! The engine polls its backend inside the request's flow, on the event loop's thread. Each
//! operation calls the object's `async` method and steps the coroutine it returns, as an asyncio
//! task would: `send(None)` until it finishes; when it awaits an asyncio future, the future's
//! done-callback wakes the flow (through `wake`), and the next poll steps it on. So the Python
//! code runs in the request's own task, and the engine's latency budget and circuit breaker apply
//! to it as to any backend: a slow or failing Python backend costs a miss, never the request.

use crate::task::polling_here;
use async_trait::async_trait;
use bytes::Bytes;
use cache_middleware::backends::{Backend, BackendError};
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The Python object and the name logs give it.
pub struct PyBackend {
    object: Py<PyAny>,
    name: String,
}

impl PyBackend {
    pub fn new(object: Py<PyAny>, name: String) -> Self {
        PyBackend { object, name }
    }

    fn call(
        &self,
        method: &'static str,
        args: impl for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyTuple>>
            + Send
            + 'static,
    ) -> Stepped {
        Stepped {
            start: Some(Box::new(move |py: Python<'_>, object: &Py<PyAny>| {
                let args = args(py)?;
                object.call_method1(py, method, args)
            })),
            object: Python::attach(|py| self.object.clone_ref(py)),
            coroutine: None,
        }
    }
}

impl std::fmt::Debug for PyBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyBackend")
            .field("class", &self.name)
            .finish()
    }
}

type Start = Box<dyn FnOnce(Python<'_>, &Py<PyAny>) -> PyResult<Py<PyAny>> + Send>;

/// One call of an `async` method, stepped like an asyncio task.
struct Stepped {
    start: Option<Start>,
    object: Py<PyAny>,
    coroutine: Option<Py<PyAny>>,
}

fn failed(error: impl std::fmt::Display) -> BackendError {
    BackendError::Server(format!("Python backend: {error}"))
}

impl Future for Stepped {
    type Output = Result<Py<PyAny>, BackendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !polling_here() {
            // Only the event loop's thread may run Python code of the request.
            return Poll::Ready(Err(failed("called outside the event loop")));
        }
        let this = &mut *self;
        Python::attach(|py| {
            if let Some(start) = this.start.take() {
                match start(py, &this.object) {
                    Ok(coroutine) => this.coroutine = Some(coroutine),
                    Err(error) => return Poll::Ready(Err(failed(error))),
                }
            }
            let Some(coroutine) = this.coroutine.as_ref() else {
                return Poll::Ready(Err(failed("polled after completion")));
            };
            match coroutine.call_method1(py, "send", (py.None(),)) {
                Ok(yielded) => {
                    let yielded = yielded.bind(py);
                    if yielded.is_none() {
                        // A bare yield (`asyncio.sleep(0)`): go on at the next turn.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    // An asyncio future: what a task does with it (asyncio.Task.__step).
                    if yielded.hasattr("add_done_callback").unwrap_or(false) {
                        let _ = yielded.setattr("_asyncio_future_blocking", false);
                        let wake = Wake {
                            waker: cx.waker().clone(),
                        };
                        if let Err(error) = yielded.call_method1("add_done_callback", (wake,)) {
                            return Poll::Ready(Err(failed(error)));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(failed(format!(
                        "the coroutine yielded {yielded}, which is not an asyncio future"
                    ))))
                }
                Err(error) if error.is_instance_of::<PyStopIteration>(py) => {
                    this.coroutine = None;
                    let value = error
                        .value(py)
                        .getattr("value")
                        .map(Bound::unbind)
                        .unwrap_or_else(|_| py.None());
                    Poll::Ready(Ok(value))
                }
                Err(error) => {
                    this.coroutine = None;
                    Poll::Ready(Err(failed(error)))
                }
            }
        })
    }
}

impl Drop for Stepped {
    fn drop(&mut self) {
        // Abandoned (the latency budget ran out): the coroutine is closed, as a cancelled task's
        // would be, so that its `finally` blocks run now and not at garbage collection.
        if let Some(coroutine) = self.coroutine.take() {
            if polling_here() {
                Python::attach(|py| {
                    let _ = coroutine.call_method0(py, "close");
                });
            }
        }
    }
}

/// The done-callback that wakes the flow.
#[pyclass]
struct Wake {
    waker: Waker,
}

#[pymethods]
impl Wake {
    fn __call__(&self, _future: Py<PyAny>) {
        self.waker.wake_by_ref();
    }
}

/// A stored value as the engine holds it: bytes as they are, text as UTF-8.
fn to_bytes(py: Python<'_>, value: &Py<PyAny>) -> Result<Option<Bytes>, BackendError> {
    let value = value.bind(py);
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Some(Bytes::copy_from_slice(bytes.as_bytes())));
    }
    if let Ok(text) = value.cast::<PyString>() {
        let text = text.to_cow().map_err(failed)?;
        return Ok(Some(Bytes::copy_from_slice(text.as_bytes())));
    }
    Err(failed(format!(
        "get returned {}, not bytes, str or None",
        value
            .get_type()
            .name()
            .map_or_else(|_| "?".to_owned(), |n| n.to_string())
    )))
}

#[async_trait]
impl Backend for PyBackend {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let key = key.to_owned();
        let value = self
            .call("get", move |py| pyo3::types::PyTuple::new(py, [key]))
            .await?;
        Python::attach(|py| to_bytes(py, &value))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        let key = key.to_owned();
        self.call("set", move |py| {
            let args: (String, Bound<'_, PyBytes>, f64) =
                (key, PyBytes::new(py, &value), ttl.as_secs_f64());
            args.into_pyobject(py)
        })
        .await
        .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        let key = key.to_owned();
        self.call("delete", move |py| pyo3::types::PyTuple::new(py, [key]))
            .await
            .map(drop)
    }

    async fn clear(&self) -> Result<(), BackendError> {
        self.call("clear", |py| Ok(pyo3::types::PyTuple::empty(py)))
            .await
            .map(drop)
    }

    fn name(&self) -> &'static str {
        "python"
    }
}
