//! `cache_middleware._engine`: the Rust engine of cache-middleware, for the Python package.
//!
//! The package's ASGI middleware hands each request of a cached route to [`Engine::begin`] and
//! drives the returned exchange from the event loop (`cache_middleware/_driver.py`). The flow is
//! the Rust route flow itself: key, rules, backends, single flight, breaker, replay.

mod app;
mod backend;
mod background;
mod engine;
mod exchange;
mod log;
mod pybackend;
mod task;
mod wake;

use pyo3::prelude::*;

/// The descriptors the calling thread's event loop watches for wake-ups (`loop.add_reader`):
/// its own tasks', and the engines' background queues'.
#[pyfunction]
fn signal_fds() -> (i32, i32) {
    (task::signal().fd(), task::background_signal().fd())
}

/// Whether `tag` can tag entries (the engine's rule: visible ASCII without commas, at most 256
/// bytes).
#[pyfunction]
fn is_valid_tag(tag: &str) -> bool {
    cache_middleware::is_valid_tag(tag)
}

/// The ids of the calling thread's exchanges and tasks, and of the background queues, woken
/// since the last call.
#[pyfunction]
fn take_woken() -> Vec<u64> {
    let mut woken = task::signal().take();
    woken.extend(task::background_signal().take());
    woken
}

#[pymodule]
fn _engine(module: &Bound<'_, PyModule>) -> PyResult<()> {
    log::install();
    module.add_class::<engine::Engine>()?;
    module.add_class::<engine::Route>()?;
    module.add_class::<exchange::Exchange>()?;
    module.add_class::<background::BackgroundRun>()?;
    module.add_class::<backend::Backend>()?;
    module.add_class::<backend::Task>()?;
    module.add_function(wrap_pyfunction!(signal_fds, module)?)?;
    module.add_function(wrap_pyfunction!(take_woken, module)?)?;
    module.add_function(wrap_pyfunction!(is_valid_tag, module)?)?;
    module.add_function(wrap_pyfunction!(log::set_log_sink, module)?)?;
    module.add_function(wrap_pyfunction!(log::set_log_level, module)?)?;
    module.add_function(wrap_pyfunction!(log::flush_logs, module)?)?;
    Ok(())
}
