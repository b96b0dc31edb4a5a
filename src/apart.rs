//! The body of a large response stored apart from its key, read from storage a window at a
//! time, each window when its client is ready for it: however large the response and however
//! many clients read it at once, each holds a window of it, never a whole copy. Clients reading
//! the same response share its windows: one read of each window in progress at a time, and the
//! windows read lately kept (up to [`RECENT_WINDOWS_BYTES`]) for the clients a little behind.

use crate::backends::{BackendError, APART_READ_WINDOW};
use crate::body::BoxError;
use crate::coalesce::{Flights, Join};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use moka::sync::Cache;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// The most bytes of windows read lately that are kept for other readers of the same response.
pub(crate) const RECENT_WINDOWS_BYTES: u64 = 32 * 1024 * 1024;
/// How long a window nobody asks for stays among those read lately.
const RECENT_WINDOW_IDLE: Duration = Duration::from_secs(5);

/// What a window read gives: `None` when it was not made (the breaker open), else the backend's
/// answer.
pub(crate) type WindowRead = Option<Result<Option<Bytes>, BackendError>>;

/// The windows of responses stored apart that readers share.
pub(crate) struct Windows {
    recent: Cache<String, Bytes>,
    reading: Flights<Bytes>,
}

impl Windows {
    pub(crate) fn new() -> Self {
        Windows {
            recent: Cache::builder()
                .max_capacity(RECENT_WINDOWS_BYTES)
                .weigher(|name: &String, window: &Bytes| {
                    u32::try_from(name.len() + window.len()).unwrap_or(u32::MAX)
                })
                .time_to_idle(RECENT_WINDOW_IDLE)
                .build(),
            reading: Flights::default(),
        }
    }

    /// The window `name`, if it was read lately.
    pub(crate) fn kept(&self, name: &str) -> Option<Bytes> {
        self.recent.get(name)
    }

    /// The window `name` (a stored value's key, and the window's place in it), not kept: being
    /// read for another reader (waited for up to `limit`), or read now by `read`, then kept.
    /// Stored values apart are never rewritten (each write has a key of its own), so a window
    /// read once is the window for as long as it is kept. (A hit's first window is taken from
    /// those kept only once the backend says the copy is still there: evicted or removed, the
    /// hit is a miss, not a response cut short later.)
    pub(crate) async fn read<F: Future<Output = WindowRead>>(
        &self,
        name: String,
        limit: Duration,
        read: impl FnOnce() -> F,
    ) -> WindowRead {
        let leader = match self.reading.join(&name) {
            Join::Leader(leader) => Some(leader),
            Join::Waiter(waiter) => match waiter.wait(limit).await {
                Some(window) => return Some(Ok(Some(window))),
                None => None, // its reader failed: this one reads for itself
            },
            Join::Pass => None,
        };
        let read = read().await;
        if let (Some(Ok(Some(window))), Some(leader)) = (&read, leader) {
            self.recent.insert(name, window.clone());
            leader.finish(Some(window.clone()));
        }
        read
    }
}

/// Where the windows come from: exactly bytes `start..start + len` of one stored value, or an
/// error (the value gone, cut short or unreadable).
pub(crate) trait WindowSource: Send + Sync {
    fn read(&self, start: usize, len: usize) -> BoxFuture<'static, Result<Bytes, BoxError>>;
}

/// A response body stored apart: bytes `start..start + len` of a stored value, of which the
/// first ones (`first`) were read with the response's head.
#[derive(Clone)]
pub struct ApartBody {
    source: Arc<dyn WindowSource>,
    start: usize,
    len: usize,
    first: Bytes,
}

impl ApartBody {
    /// The body at `start..start + len` of the value `source` reads, `first` its first bytes.
    pub(crate) fn new(
        source: Arc<dyn WindowSource>,
        start: usize,
        len: usize,
        mut first: Bytes,
    ) -> Self {
        first.truncate(len);
        ApartBody {
            source,
            start,
            len,
            first,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes `from..=to` of the body (within it: the caller checked the range).
    pub(crate) fn part(&self, from: usize, to: usize) -> ApartBody {
        let first = if from < self.first.len() {
            self.first.slice(from..self.first.len().min(to + 1))
        } else {
            Bytes::new()
        };
        ApartBody::new(
            Arc::clone(&self.source),
            self.start + from,
            to + 1 - from,
            first,
        )
    }

    /// What was read with the head, and a reader of the rest.
    pub(crate) fn into_reader(self) -> (Bytes, ApartReader) {
        let reader = ApartReader {
            source: self.source,
            next: self.start + self.first.len(),
            end: self.start + self.len,
            reading: Mutex::new(None),
        };
        (self.first, reader)
    }

    /// The whole body in memory (one copy): for writing it again, as a 304 merge does.
    pub(crate) async fn read_whole(self) -> Result<Bytes, BoxError> {
        let (first, mut reader) = self.into_reader();
        let mut whole = BytesMut::with_capacity(first.len() + reader.end - reader.next);
        whole.extend_from_slice(&first);
        while let Some(window) = std::future::poll_fn(|cx| reader.poll_window(cx)).await {
            whole.extend_from_slice(&window?);
        }
        Ok(whole.freeze())
    }
}

impl PartialEq for ApartBody {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.source, &other.source)
            && (self.start, self.len) == (other.start, other.len)
    }
}

impl std::fmt::Debug for ApartBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApartBody")
            .field("start", &self.start)
            .field("len", &self.len)
            .field("first", &self.first.len())
            .finish_non_exhaustive()
    }
}

/// Reads the rest of an [`ApartBody`], one window at a time, when asked for the next.
pub(crate) struct ApartReader {
    source: Arc<dyn WindowSource>,
    next: usize,
    end: usize,
    /// In a `Mutex` only so that the body stays `Sync`; reached through `&mut self`, never locked.
    reading: Mutex<Option<BoxFuture<'static, Result<Bytes, BoxError>>>>,
}

impl ApartReader {
    /// The next window; `None` at the end. After an error, nothing more.
    pub(crate) fn poll_window(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        if self.next >= self.end {
            return Poll::Ready(None);
        }
        let (next, end) = (self.next, self.end);
        let reading = self
            .reading
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let pending = reading
            .get_or_insert_with(|| self.source.read(next, APART_READ_WINDOW.min(end - next)));
        let window = ready!(pending.as_mut().poll(cx));
        *reading = None;
        match &window {
            Ok(bytes) => self.next += bytes.len(),
            Err(_) => self.next = self.end,
        }
        Poll::Ready(Some(window))
    }

    /// Bytes still to come.
    pub(crate) fn remaining(&self) -> usize {
        self.end.saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A value in memory, read by windows; counts the reads.
    struct InMemory(Bytes, AtomicUsize);

    impl WindowSource for InMemory {
        fn read(&self, start: usize, len: usize) -> BoxFuture<'static, Result<Bytes, BoxError>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let window = self.0.slice(start..start + len);
            Box::pin(async move { Ok(window) })
        }
    }

    fn value(len: usize) -> Bytes {
        (0..len)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into()
    }

    #[tokio::test]
    async fn a_body_is_read_whole_by_windows_after_what_came_with_the_head() {
        let stored = value(3 * APART_READ_WINDOW + 100);
        let source = Arc::new(InMemory(stored.clone(), AtomicUsize::new(0)));
        // The body starts 40 bytes in (after the head); 1000 of its bytes came with the head.
        let body = ApartBody::new(
            Arc::clone(&source) as Arc<dyn WindowSource>,
            40,
            stored.len() - 40,
            stored.slice(40..1040),
        );
        assert_eq!(body.clone().read_whole().await.unwrap(), stored.slice(40..));
        // What came with the head is not read again: the rest takes three windows.
        assert_eq!(source.1.load(Ordering::SeqCst), 3);
        let part = body.part(500, 2 * APART_READ_WINDOW);
        let expected = stored.slice(540..=40 + 2 * APART_READ_WINDOW);
        assert_eq!(part.len(), expected.len());
        assert_eq!(part.read_whole().await.unwrap(), expected);
        let beyond_first = body.part(2000, 2100);
        assert_eq!(
            beyond_first.read_whole().await.unwrap(),
            stored.slice(2040..=2140)
        );
    }
}
