//! One request through the engine, as Python drives it: the flow's future, the link to the
//! application, and the response once the flow has one.

use crate::app::{AppBody, AppCall, AppFailed, AppLink, Head};
use crate::task::Driven;
use bytes::Bytes;
use cache_middleware::{CacheBody, X_CACHE};
use http::Response;
use http_body::Body;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

pub type Flow = Result<Response<CacheBody<AppBody>>, AppFailed>;

/// ASGI header lines (`[name, value]` pairs of bytes, as tuples or lists), read without copying.
pub fn header_pairs<'py>(
    lines: &Bound<'py, PyAny>,
) -> PyResult<Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>> {
    let mut pairs = Vec::with_capacity(lines.len().unwrap_or(8));
    for line in lines.try_iter()? {
        let line = line?;
        // Servers send tuples: read them directly, without indexing through Python.
        let (name, value) = match line.cast::<PyTuple>() {
            Ok(tuple) if tuple.len() == 2 => (tuple.get_item(0)?, tuple.get_item(1)?),
            _ => (line.get_item(0)?, line.get_item(1)?),
        };
        pairs.push((name.cast_into::<PyBytes>()?, value.cast_into::<PyBytes>()?));
    }
    Ok(pairs)
}

/// Header names most responses carry, and the `X-Cache` values, made once as Python bytes: a
/// replay then hands out references to them instead of new objects.
struct Common {
    names: Vec<(&'static [u8], Py<PyBytes>)>,
    x_cache_values: Vec<(&'static [u8], Py<PyBytes>)>,
}

fn common(py: Python<'_>) -> &'static Common {
    static COMMON: PyOnceLock<Common> = PyOnceLock::new();
    let made = |list: &[&'static str]| {
        list.iter()
            .map(|text| (text.as_bytes(), PyBytes::new(py, text.as_bytes()).unbind()))
            .collect()
    };
    COMMON.get_or_init(py, || Common {
        names: made(&[
            "content-length",
            "content-type",
            "etag",
            "x-cache",
            "age",
            "cache-control",
            "date",
            "last-modified",
            "vary",
            "content-encoding",
            "expires",
        ]),
        x_cache_values: made(&["HIT", "MISS", "STALE", "REFRESH", "BYPASS"]),
    })
}

/// `bytes` as Python bytes: a shared one when `known` has it.
fn python_bytes<'py>(
    py: Python<'py>,
    known: &[(&'static [u8], Py<PyBytes>)],
    bytes: &[u8],
) -> Bound<'py, PyBytes> {
    match known.iter().find(|(text, _)| *text == bytes) {
        Some((_, shared)) => shared.bind(py).clone(),
        None => PyBytes::new(py, bytes),
    }
}

/// Raw header lines for Python.
pub type Headers<'py> = Vec<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)>;

/// A response the flow has given: its head, the body ready so far, and whether that is all.
pub struct Ready {
    parts: http::response::Parts,
    chunks: Vec<Bytes>,
    complete: bool,
}

impl Ready {
    /// `(status, headers)` for `http.response.start`.
    fn head<'py>(&self, py: Python<'py>) -> (u16, Headers<'py>) {
        let common = common(py);
        let headers = self
            .parts
            .headers
            .iter()
            .map(|(name, value)| {
                let values: &[_] = if name == X_CACHE {
                    &common.x_cache_values
                } else {
                    &[]
                };
                (
                    python_bytes(py, &common.names, name.as_str().as_bytes()),
                    python_bytes(py, values, value.as_bytes()),
                )
            })
            .collect();
        (self.parts.status.as_u16(), headers)
    }

    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        match self.chunks.as_slice() {
            [one] => PyBytes::new(py, one),
            many => PyBytes::new(py, &many.concat()),
        }
    }

    /// Whether `body` holds all of the body.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// `(status, headers, body)`: a response complete at once (every hit from memory), sent
    /// by the front without an `Exchange`.
    pub fn into_complete<'py>(self, py: Python<'py>) -> Complete<'py> {
        let (status, headers) = self.head(py);
        (status, headers, self.body(py))
    }
}

/// `(status, headers, body)` of a complete response.
pub type Complete<'py> = (u16, Headers<'py>, Bound<'py, PyBytes>);

/// An application call as Python runs it: `(method, target, headers, body chunks)`.
pub type CallForPython<'py> = (String, String, Headers<'py>, Vec<Bound<'py, PyBytes>>);

pub fn call_for_python<'py>(py: Python<'py>, call: &AppCall) -> CallForPython<'py> {
    let headers = call
        .headers
        .iter()
        .map(|(n, v)| (PyBytes::new(py, n), PyBytes::new(py, v)))
        .collect();
    let body = call.body.iter().map(|c| PyBytes::new(py, c)).collect();
    (call.method.clone(), call.target.clone(), headers, body)
}

/// The head of an ASGI `http.response.start`.
pub fn head_from_python(status: u16, headers: &Bound<'_, PyAny>) -> PyResult<Head> {
    let headers = header_pairs(headers)?
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    Ok(Head { status, headers })
}

/// A request through the engine. See `cache_middleware._driver` for the loop that drives it.
#[pyclass(module = "cache_middleware._engine")]
pub struct Exchange {
    flow: Driven<Flow>,
    link: Arc<AppLink>,
    body: Option<CacheBody<AppBody>>,
    /// A response found before Python held the exchange (at `begin`), given at the next poll.
    found: Option<Ready>,
    /// Bytes of the response body given to Python so far.
    given: u64,
}

impl Exchange {
    pub fn new(flow: Driven<Flow>, link: Arc<AppLink>) -> Self {
        Exchange {
            flow,
            link,
            body: None,
            found: None,
            given: 0,
        }
    }

    /// Drives the flow: `None` while it waits; once there is a response, its head and the body
    /// ready now. Fails when the application failed.
    pub fn drive(&mut self) -> PyResult<Option<Ready>> {
        if let Some(found) = self.found.take() {
            return Ok(Some(found));
        }
        let Some(result) = self.flow.poll() else {
            return Ok(None);
        };
        let response = result.map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let (parts, mut body) = response.into_parts();
        let mut chunks: Vec<Bytes> = Vec::new();
        let complete = loop {
            match self.flow.poll_with(|cx| Pin::new(&mut body).poll_frame(cx)) {
                Poll::Ready(None) => break true,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        chunks.push(data);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(PyRuntimeError::new_err(e.to_string())),
                Poll::Pending => break false,
            }
        };
        self.body = Some(body);
        self.given += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        Ok(Some(Ready {
            parts,
            chunks,
            complete,
        }))
    }

    /// Keeps a response `drive` gave for the next `poll_response`.
    pub fn keep(&mut self, found: Ready) {
        self.found = Some(found);
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // What the flow still asks of the application (a refresh after a stale or early answer)
        // runs in the background from now on; the request's own flow ends here.
        self.flow.stop();
        self.link.detach();
    }
}

#[pymethods]
impl Exchange {
    /// The id the wake signal reports for this exchange.
    #[getter]
    fn id(&self) -> u64 {
        self.flow.id
    }

    /// Drives the flow. `None` while it waits (on the application, a backend, or another
    /// request's answer); once there is a response, `(status, headers, body, complete)`: `body`
    /// is as much as is ready now (all of it when `complete`), and the rest comes from
    /// `next_chunk`. Raises when the application failed.
    #[allow(clippy::type_complexity)]
    fn poll_response<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<Option<(u16, Headers<'py>, Bound<'py, PyBytes>, bool)>> {
        Ok(self.drive()?.map(|ready| {
            let (status, headers) = ready.head(py);
            (status, headers, ready.body(py), ready.complete)
        }))
    }

    /// What the flow asks the application to answer: `(method, target, headers, body chunks)`,
    /// or `None`. The body chunks were read by the engine (a POST's); the rest, if any, is still
    /// in the ASGI `receive`.
    fn take_app_call<'py>(&self, py: Python<'py>) -> Option<CallForPython<'py>> {
        Some(call_for_python(py, &self.link.take_call()?))
    }

    /// The application's `http.response.start`.
    fn app_start(&self, status: u16, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        self.link.start(head_from_python(status, headers)?);
        Ok(())
    }

    /// The application's `http.response.body`.
    fn app_body(&self, chunk: &[u8], more: bool) {
        self.link.push(Bytes::copy_from_slice(chunk), more);
    }

    /// Whether the client has yet to be given body bytes the application sent (a body stored
    /// while it streams reaches the client through a task of the engine's own, not at once).
    fn app_body_waiting(&self) -> bool {
        self.link.body_sent() > self.given
    }

    /// The application raised or returned without completing its response.
    fn app_failed(&self) {
        self.link.fail();
    }

    /// The next chunk of the response body: `(0, bytes)`, `(1, None)` at the end, `(2, None)`
    /// while it waits (woken like `poll`).
    fn next_chunk<'py>(&mut self, py: Python<'py>) -> PyResult<(u8, Option<Bound<'py, PyBytes>>)> {
        let Some(body) = self.body.as_mut() else {
            return Ok((1, None));
        };
        loop {
            let polled = self
                .flow
                .poll_with(|cx| Pin::new(&mut *body).poll_frame(cx));
            return match polled {
                Poll::Pending => Ok((2, None)),
                Poll::Ready(None) => Ok((1, None)),
                Poll::Ready(Some(Err(e))) => Err(PyRuntimeError::new_err(e.to_string())),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => continue,
                    Ok(data) => {
                        self.given += data.len() as u64;
                        Ok((0, Some(PyBytes::new(py, &data))))
                    }
                    Err(_) => continue, // trailers: ASGI has no place for them here
                },
            };
        }
    }
}
