//! Application calls that no request waits for (stale-while-revalidate, early refresh): the flow
//! runs them from the engine's runtime, and the Python side runs the application for each as a
//! task of its own on the event loop (`CacheMiddleware._run_background`).

use crate::app::{AppCall, Background};
use crate::exchange::{call_for_python, head_from_python, CallForPython};
use bytes::Bytes;
use pyo3::prelude::*;

/// One background application call, for the Python side to run.
#[pyclass(module = "cache_middleware._engine")]
pub struct BackgroundRun {
    call: AppCall,
}

impl BackgroundRun {
    pub fn next(queue: &Background) -> Option<Self> {
        queue.take().map(|call| BackgroundRun { call })
    }
}

#[pymethods]
impl BackgroundRun {
    /// `(method, target, headers, body chunks)` of the request to run.
    fn request<'py>(&self, py: Python<'py>) -> CallForPython<'py> {
        call_for_python(py, &self.call)
    }

    /// The scheme of the request that led to this run (the ASGI scope's `scheme`).
    #[getter]
    fn scheme(&self) -> Option<String> {
        self.call.scheme.clone()
    }

    /// The application's `http.response.start`.
    fn app_start(&self, status: u16, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        self.call.answer.start(head_from_python(status, headers)?);
        Ok(())
    }

    /// The application's `http.response.body`.
    fn app_body(&self, chunk: &[u8], more: bool) {
        self.call.answer.push(Bytes::copy_from_slice(chunk), more);
    }

    /// The application raised or returned without completing its response.
    fn app_failed(&self) {
        self.call.answer.fail();
    }
}

impl Drop for BackgroundRun {
    fn drop(&mut self) {
        // A run Python dropped unfinished (its task cancelled, the loop closed) fails, so the
        // flow releases the key's single flight instead of waiting for ever.
        self.call.answer.fail();
    }
}
