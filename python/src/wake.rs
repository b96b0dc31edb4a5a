//! Waking Python when a Rust future can make progress, without ever taking the GIL from another
//! thread.
//!
//! A future that returns `Pending` is woken later by whatever it waits on: a Redis reply read by a
//! tokio worker, a single-flight leader finishing, the application's response arriving. The
//! waker pushes the task's id onto a queue and writes one byte to a socket the event loop watches
//! (`loop.add_reader`); the loop's callback takes the woken ids and resolves the futures the
//! tasks await. Taking the GIL in `wake` instead could deadlock: a tokio thread may wake while it
//! holds a lock that the Python thread, holding the GIL, is about to take.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// The queue of woken task ids and the socket that tells the event loop to look at it.
#[derive(Debug)]
pub struct Signal {
    woken: Mutex<Vec<u64>>,
    /// Set while a byte is waiting to be read: one byte per batch is enough.
    pending: AtomicBool,
    writer: UnixStream,
    reader: UnixStream,
}

impl Signal {
    pub fn new() -> std::io::Result<Arc<Self>> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        Ok(Arc::new(Signal {
            woken: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            writer,
            reader,
        }))
    }

    /// The descriptor the event loop reads.
    pub fn fd(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    fn wake(&self, id: u64) {
        self.woken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
        if !self.pending.swap(true, Ordering::AcqRel) {
            // A full socket already holds a byte the loop will read: nothing is lost.
            let _ = (&self.writer).write(&[1]);
        }
    }

    /// The ids woken since the last call; drains the socket first, so a wake after this is
    /// signalled again.
    pub fn take(&self) -> Vec<u64> {
        let mut buffer = [0u8; 64];
        while matches!(std::io::Read::read(&mut (&self.reader), &mut buffer), Ok(n) if n > 0) {}
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut *self.woken.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The waker of one task.
pub struct TaskWaker {
    pub id: u64,
    pub signal: Arc<Signal>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.signal.wake(self.id);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.signal.wake(self.id);
    }
}

pub fn waker(id: u64, signal: &Arc<Signal>) -> Waker {
    Waker::from(Arc::new(TaskWaker {
        id,
        signal: Arc::clone(signal),
    }))
}
