//! Rust futures that Python drives: polled on the event loop's thread (inside the tokio runtime,
//! so timers and sockets work), and woken through [`crate::wake`] when they can go on.
//!
//! A future that completes at its first poll (a hit in the memory backend) costs no event-loop
//! round trip at all; one that waits (a Redis reply) costs one wake.

use crate::wake::{waker, Signal};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use tokio::runtime::Runtime;

/// The runtime the engine's timers, sockets and background work run on: one worker is enough,
/// since the request path itself runs on the event loop's thread.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cache-middleware")
            .enable_all()
            .build()
            .expect("a tokio runtime can be built")
    })
}

thread_local! {
    /// The wake signal of the event loop running on this thread: a process may run several
    /// loops at once (one per thread), and each hears only of the tasks it polls.
    static SIGNAL: Arc<Signal> = Signal::new().expect("a socket pair for wake-ups");
}

/// The wake signal of the calling thread's event loop (see `wake`).
pub fn signal() -> Arc<Signal> {
    SIGNAL.with(Arc::clone)
}

/// The wake signal of the engines' background queues, which every loop watches: whichever loop
/// takes a queued run starts it.
pub fn background_signal() -> &'static Arc<Signal> {
    static SIGNAL: OnceLock<Arc<Signal>> = OnceLock::new();
    SIGNAL.get_or_init(|| Signal::new().expect("a socket pair for wake-ups"))
}

pub fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// Set while a task is polled on this thread (the event loop's, which holds the GIL).
    static POLLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is polling a task, and so holds the GIL.
pub fn polling_here() -> bool {
    POLLING.with(std::cell::Cell::get)
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A boxed future and the waker that reports it to Python.
pub struct Driven<T> {
    pub id: u64,
    /// In a `Mutex` only so that Python may own it from any thread (`Sync`); it is only ever
    /// reached through `&mut self` (`get_mut`), so never locked.
    future: Mutex<Option<Boxed<T>>>,
    /// The signal of the loop that last polled the future, which its waker wakes.
    signal: Arc<Signal>,
    waker: Waker,
}

impl<T> Driven<T> {
    pub fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        let id = next_id();
        let signal = signal();
        Driven {
            id,
            future: Mutex::new(Some(Box::pin(future))),
            waker: waker(id, &signal),
            signal,
        }
    }

    /// Polls once; `None` while pending, and after completion. The wake-up goes to the loop
    /// polling it now.
    pub fn poll(&mut self) -> Option<T> {
        SIGNAL.with(|here| {
            if !Arc::ptr_eq(here, &self.signal) {
                self.signal = Arc::clone(here);
                self.waker = waker(self.id, here);
            }
        });
        let slot = self.future.get_mut().unwrap_or_else(|e| e.into_inner());
        let future = slot.as_mut()?;
        let _runtime = runtime().enter();
        POLLING.with(|p| p.set(true));
        let result = future.as_mut().poll(&mut Context::from_waker(&self.waker));
        POLLING.with(|p| p.set(false));
        match result {
            Poll::Ready(value) => {
                *slot = None;
                Some(value)
            }
            Poll::Pending => None,
        }
    }

    /// Drops the future if it is unfinished (inside the runtime, for its timers and sockets).
    pub fn stop(&mut self) {
        let slot = self.future.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(future) = slot.take() {
            let _runtime = runtime().enter();
            drop(future);
        }
    }

    /// Polls something else on behalf of this task (its response body), with its waker.
    pub fn poll_with<R>(&self, f: impl FnOnce(&mut Context<'_>) -> Poll<R>) -> Poll<R> {
        let _runtime = runtime().enter();
        POLLING.with(|p| p.set(true));
        let result = f(&mut Context::from_waker(&self.waker));
        POLLING.with(|p| p.set(false));
        result
    }
}
