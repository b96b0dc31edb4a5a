//! The engine's tracing events, handed to a Python sink (the package's loguru logger).
//!
//! Events raised while the event loop's thread polls the engine (hits, misses, key generation:
//! the request path) go to the sink at once, under the GIL that thread already holds. Events from
//! the runtime's own threads (connection errors, background work) never take the GIL there; they
//! wait in a bounded queue that the Python side flushes.

use crate::task::polling_here;
use pyo3::prelude::*;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Loguru's level numbers.
const TRACE: u8 = 5;
const DEBUG: u8 = 10;
const INFO: u8 = 20;
const WARNING: u8 = 30;
const ERROR: u8 = 40;
/// Above every level: nothing is forwarded.
const OFF: u8 = 255;

/// Events from other threads kept for the next flush; older ones are dropped beyond this.
const QUEUE_LIMIT: usize = 1000;

static MIN_LEVEL: AtomicU8 = AtomicU8::new(OFF);
static SINK: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
static QUEUED: Mutex<VecDeque<(&'static str, String)>> = Mutex::new(VecDeque::new());

fn number(level: &Level) -> u8 {
    match *level {
        Level::TRACE => TRACE,
        Level::DEBUG => DEBUG,
        Level::INFO => INFO,
        Level::WARN => WARNING,
        Level::ERROR => ERROR,
    }
}

fn name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// Installs the forwarding layer as the process's subscriber (once).
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::registry().with(Forward).try_init();
    });
}

/// The sink (`sink(level_name, message)`) and the lowest level it wants; `None` stops forwarding.
#[pyfunction]
#[pyo3(signature = (sink, min_level))]
pub fn set_log_sink(sink: Option<Py<PyAny>>, min_level: u8) {
    let level = if sink.is_some() { min_level } else { OFF };
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = sink;
    MIN_LEVEL.store(level, Ordering::Relaxed);
}

/// The lowest level forwarded (loguru's numbers); the sink's handlers may change.
#[pyfunction]
pub fn set_log_level(min_level: u8) {
    if SINK.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        MIN_LEVEL.store(min_level, Ordering::Relaxed);
    }
}

/// Hands queued events (from the runtime's threads) to the sink.
#[pyfunction]
pub fn flush_logs(py: Python<'_>) {
    let queued: Vec<_> = QUEUED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for (level, message) in queued {
        emit(py, level, &message);
    }
}

fn emit(py: Python<'_>, level: &str, message: &str) {
    let sink = SINK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|s| s.clone_ref(py));
    if let Some(sink) = sink {
        // A failing sink must not fail the request: the error is Python's to report.
        if let Err(error) = sink.call1(py, (level, message)) {
            error.write_unraisable(py, None);
        }
    }
}

struct Forward;

impl<S: Subscriber> Layer<S> for Forward {
    // The level can change at any time (loguru handlers come and go): asked again per event.
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        number(metadata.level()) >= MIN_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = event.metadata().level();
        if number(level) < MIN_LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let message = text.finish();
        if polling_here() {
            Python::attach(|py| emit(py, name(level), &message));
        } else {
            let mut queued = QUEUED.lock().unwrap_or_else(|e| e.into_inner());
            if queued.len() == QUEUE_LIMIT {
                queued.pop_front();
            }
            queued.push_back((name(level), message));
        }
    }
}

/// `message key=value ...`, as the Rust logs read.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}
