//! A response being received from the origin while clients read it ("stream while filling", "read
//! while writing").
//!
//! A task of its own reads the origin's body into a [`Fill`]: each chunk is copied once, into the
//! buffer that becomes the stored entry (its encoded head first, then the body), and every reader
//! gets views of that buffer (no further copy), so the first client gets each byte as it arrives
//! and a request that joins later reads from the start, then keeps pace. When the body is
//! complete, the buffer is the entry as stored, whole: one allocation of the body's size, shared
//! by the readers, the backend's copy in memory and the requests served from it. The task does not
//! depend on any client: the fill goes on when they all leave (bounded by the announced length and
//! by time). A fill that fails ends every reader with an error, never with a body presented as
//! complete.
//!
//! A body whose length is not announced (sent chunked) fills a buffer that grows (doubling) up
//! to the storage limit, its share of the fill budget growing with it; once complete, it is
//! stored in an allocation of about its size (see [`stored_copy`]). If it passes the limit,
//! or the budget has no room for it, it cannot be stored, but its readers still get all of it:
//! the fill then hands it on at the pace of its fastest reader, keeping what slower ones still
//! need up to what it held when it passed (at least [`passing::PASSING_FLOOR`]). A reader that
//! falls further behind is cut off with an error (never a body presented as complete): one slow
//! or stalled client cannot hold the others back, nor make the fill hold more.

use crate::service::SendBody;
use append_only_bytes::{AppendOnlyBytes, BytesSlice};
use bytes::Bytes;
use http_body::SizeHint;
use http_body_util::BodyExt;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

mod budget;
mod passing;
mod streaming;

pub(crate) use budget::{FillBudget, FillPermit};
use passing::pass;
pub(crate) use passing::{Passing, Unstorable};
pub(crate) use streaming::{streaming, StreamLimits, Streaming};

/// A fill fails when the origin sends nothing for this long.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// ... or when the whole body takes longer than this.
const TOTAL_LIMIT: Duration = Duration::from_secs(600);
/// The first buffer of a body of unannounced length (it doubles as it fills).
const FIRST_CAPACITY: usize = 64 * 1024;
/// A stored fill keeps its buffer if at most a this-th of it is spare, else an exact copy.
const SPARE_KEPT_AT_MOST: usize = 8;

/// Why a reader of a fill got no complete body.
#[derive(Debug, thiserror::Error)]
#[error("the response failed while it was received from the origin")]
pub struct FillFailed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Open,
    Complete,
    Failed,
}

struct State {
    /// The chunks not let go of; the first is chunk number `base`.
    chunks: VecDeque<Bytes>,
    base: usize,
    end: End,
    readers_waiting: Vec<Waker>,
    /// The number of each reader's next chunk.
    positions: HashMap<u64, usize>,
    next_reader: u64,
    /// Set once the body cannot be stored: it is handed on at its fastest reader's pace.
    passing: Option<Holding>,
}

/// What a body that cannot be stored holds for its readers.
struct Holding {
    /// The bytes of its chunks not let go of.
    bytes: usize,
    /// The most they may be.
    most: usize,
}

impl State {
    /// The number of the chunk after the last one received.
    fn end(&self) -> usize {
        self.base + self.chunks.len()
    }
}

/// How long a body is, as far as its fill knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// Announced by the origin: anything else is a failure.
    Announced(u32),
    /// Not announced: stored if it ends within this many bytes.
    AtMost(u64),
}

/// The body of one response as it arrives, shared by its readers and the task that stores it.
pub(crate) struct Fill {
    length: Length,
    /// Its share of the fill budget, held while the fill or a reader of it lives.
    permit: Mutex<FillPermit>,
    state: Mutex<State>,
    /// Told when a reader takes a chunk or leaves while the body passes (what the fill waits
    /// for then).
    moved: Notify,
}

/// A view of the fill's buffer, as the bytes of a `Bytes`.
struct Piece(BytesSlice);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Bytes `span` of `buffer`, without a copy.
fn view(buffer: &AppendOnlyBytes, span: Range<usize>) -> Bytes {
    Bytes::from_owner(Piece(buffer.slice(span)))
}

/// How receiving a fill's body ended.
pub(crate) enum Received<'a, B> {
    /// Complete, within what may be stored: the entry's whole encoding.
    Complete(Bytes),
    /// It failed, stalled, took too long, or did not match its announced length; its readers
    /// are told when this is dropped.
    Failed(Failing<'a>),
    /// Of unannounced length, it cannot be stored; [`Passing::hand_on`] gives its readers the
    /// rest.
    Unstorable(Unstorable, Passing<'a, B>),
}

/// Ends its fill as failed when dropped, unless it ended otherwise first: readers never wait on
/// a fill that nothing receives any more (its task was dropped, or stopped at a failure). On a
/// failure, the engine drops it once the requests still waiting on the flight were let go, so
/// that a client that saw it fail and asks again is not handed it.
pub(crate) struct Failing<'a>(&'a Fill);

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.0.update(|state| {
            if state.end == End::Open {
                state.end = End::Failed;
            }
        });
    }
}

impl Fill {
    /// A fill of a body of `length`.
    pub(crate) fn new(length: Length, permit: FillPermit) -> Arc<Self> {
        Arc::new(Fill {
            length,
            permit: Mutex::new(permit),
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                base: 0,
                end: End::Open,
                readers_waiting: Vec::new(),
                positions: HashMap::new(),
                next_reader: 0,
                passing: None,
            }),
            moved: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reader from the first byte (one that comes once the body passed, and its start was let
    /// go of, fails at once).
    pub(crate) fn reader(self: &Arc<Self>) -> FillReader {
        let id = {
            let mut state = self.state();
            let id = state.next_reader;
            state.next_reader += 1;
            state.positions.insert(id, 0);
            id
        };
        FillReader {
            fill: Arc::clone(self),
            id,
            next: 0,
            read: 0,
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let waiting = {
            let mut state = self.state();
            change(&mut state);
            std::mem::take(&mut state.readers_waiting)
        };
        for reader in waiting {
            reader.wake();
        }
    }

    fn end(&self, end: End) {
        self.update(|state| state.end = end);
    }

    /// Reads `body` after `before_body` (the stored entry's encoding up to its body), within the
    /// time limits: the entry's whole encoding when the body arrived complete and may be stored.
    pub(crate) async fn receive<B: SendBody>(
        &self,
        before_body: &[u8],
        mut body: B,
    ) -> Received<'_, B> {
        let failing = Failing(self);
        let deadline = Instant::now() + TOTAL_LIMIT;
        let most = before_body.len() + capacity_for(self.length);
        let first = match self.length {
            Length::Announced(_) => most,
            Length::AtMost(_) => most.min(before_body.len() + FIRST_CAPACITY),
        };
        let mut buffer = AppendOnlyBytes::with_capacity(first);
        buffer.push_slice(before_body);
        while let Some(data) = next_data(&mut body, deadline).await {
            let Ok(data) = data else {
                return Received::Failed(failing);
            };
            let received = (buffer.len() - before_body.len() + data.len()) as u64;
            match self.length {
                Length::Announced(length) if received > u64::from(length) => {
                    // More than announced: not this response.
                    return Received::Failed(failing);
                }
                Length::AtMost(limit) if received > limit => {
                    return pass(failing, data, body, deadline, Unstorable::TooLarge);
                }
                Length::AtMost(_) if !self.grow_permit(data.len()) => {
                    return pass(failing, data, body, deadline, Unstorable::NoRoom);
                }
                _ => {}
            }
            let start = buffer.len();
            let grown = start + data.len() > buffer.capacity();
            if grown {
                // Twice as large, never past the most that may be stored (it cannot overflow
                // that: a body past the limit was handed on above).
                let larger = (2 * buffer.capacity()).max(start + data.len()).min(most);
                let mut moved = AppendOnlyBytes::with_capacity(larger);
                moved.push_slice(buffer.as_bytes());
                buffer = moved;
            }
            buffer.push_slice(&data);
            let piece = view(&buffer, start..buffer.len());
            self.update(|state| {
                if grown {
                    // Readers get views of the larger buffer from now on (every chunk is still
                    // there: a stored body lets go of none); the old one goes with the last piece
                    // of it they send.
                    let mut at = before_body.len();
                    for chunk in &mut state.chunks {
                        *chunk = view(&buffer, at..at + chunk.len());
                        at += chunk.len();
                    }
                }
                state.chunks.push_back(piece);
            });
        }
        let complete = match self.length {
            Length::Announced(length) => buffer.len() - before_body.len() == length as usize,
            Length::AtMost(_) => true,
        };
        if !complete {
            return Received::Failed(failing);
        }
        self.end(End::Complete);
        Received::Complete(stored_copy(buffer))
    }

    fn grow_permit(&self, bytes: usize) -> bool {
        let mut permit = self.permit.lock().unwrap_or_else(PoisonError::into_inner);
        permit.grow(bytes as u64)
    }
}

/// What is stored of a complete fill's buffer: the buffer itself, unless it grew well past what
/// it holds (a body of unknown length, doubling), when a copy of its size is kept instead, so
/// that a backend weighing entries by their length holds about that much.
fn stored_copy(buffer: AppendOnlyBytes) -> Bytes {
    let spare = buffer.capacity() - buffer.len();
    if spare > buffer.len() / SPARE_KEPT_AT_MOST {
        return Bytes::copy_from_slice(buffer.as_bytes());
    }
    Bytes::from_owner(Piece(buffer.to_slice()))
}

/// The most body bytes a fill of `length` may store.
fn capacity_for(length: Length) -> usize {
    match length {
        Length::Announced(length) => length as usize,
        Length::AtMost(limit) => usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

/// The next chunk of data of `body` (trailers and empty frames skipped); an error when it failed,
/// sent nothing for the stall limit, or passed `deadline`; `None` at its end.
async fn next_data<B: SendBody>(body: &mut B, deadline: Instant) -> Option<Result<Bytes, ()>> {
    loop {
        let limit = deadline.min(Instant::now() + STALL_LIMIT);
        match tokio::time::timeout_at(limit, body.frame()).await {
            Ok(None) => return None,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Some(Ok(data)),
                _ => continue, // trailers are not stored
            },
            Ok(Some(Err(_))) | Err(_) => return Some(Err(())),
        }
    }
}

/// One client's read of a fill.
pub struct FillReader {
    fill: Arc<Fill>,
    id: u64,
    next: usize,
    read: u64,
}

impl FillReader {
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, FillFailed>>> {
        let mut state = self.fill.state();
        let Some(at) = self.next.checked_sub(state.base) else {
            // A passing body let go of what this reader still needed: it came too late, or
            // fell too far behind.
            return Poll::Ready(Some(Err(FillFailed)));
        };
        if let Some(chunk) = state.chunks.get(at).cloned() {
            self.next += 1;
            self.read += chunk.len() as u64;
            state.positions.insert(self.id, self.next);
            if state.passing.is_some() {
                self.fill.moved.notify_one();
            }
            return Poll::Ready(Some(Ok(chunk)));
        }
        match state.end {
            End::Complete => Poll::Ready(None),
            End::Failed => Poll::Ready(Some(Err(FillFailed))),
            End::Open => {
                if !state
                    .readers_waiting
                    .iter()
                    .any(|w| w.will_wake(cx.waker()))
                {
                    state.readers_waiting.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.fill.length.announced() == Some(self.read)
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.fill.length.announced() {
            Some(length) => SizeHint::with_exact(length - self.read),
            None => SizeHint::new(),
        }
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        let passing = {
            let mut state = self.fill.state();
            state.positions.remove(&self.id);
            state.passing.is_some()
        };
        if passing {
            self.fill.moved.notify_one();
        }
    }
}

impl Length {
    fn announced(self) -> Option<u64> {
        match self {
            Length::Announced(length) => Some(u64::from(length)),
            Length::AtMost(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A body of `chunks`, all there at once, counting how many of them were taken from it.
    pub(super) fn counted(
        chunks: &[&'static str],
        taken: &Arc<AtomicUsize>,
    ) -> impl SendBody + use<> {
        let taken = Arc::clone(taken);
        let frames: Vec<Bytes> = chunks
            .iter()
            .map(|c| Bytes::from_static(c.as_bytes()))
            .collect();
        StreamBody::new(stream::StreamExt::map(stream::iter(frames), move |data| {
            taken.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(Frame::data(data))
        }))
    }

    pub(super) async fn next(reader: &mut FillReader) -> Option<Result<Bytes, FillFailed>> {
        std::future::poll_fn(|cx| reader.poll_chunk(cx)).await
    }

    pub(super) async fn rest(reader: &mut FillReader) -> Result<Vec<u8>, FillFailed> {
        let mut got = Vec::new();
        while let Some(chunk) = next(reader).await {
            got.extend_from_slice(&chunk?);
        }
        Ok(got)
    }

    /// Lets the fill's task run until it waits.
    pub(super) async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn readers_of_a_fill_whose_task_is_dropped_end_with_an_error() {
        let budget = FillBudget::new(1 << 20);
        for length in [Length::Announced(100), Length::AtMost(100)] {
            let fill = Fill::new(length, budget.reserve(100).unwrap());
            let mut reader = fill.reader();
            // One chunk, then nothing more, ever.
            let first = Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"ab")));
            let frames = stream::StreamExt::chain(stream::iter([first]), stream::pending());
            let body = StreamBody::new(frames);
            let task = tokio::spawn({
                let fill = Arc::clone(&fill);
                async move {
                    let _ = fill.receive(b"", body).await;
                }
            });
            assert_eq!(&next(&mut reader).await.unwrap().unwrap()[..], b"ab");
            task.abort();
            let ended = tokio::time::timeout(Duration::from_secs(5), next(&mut reader)).await;
            assert!(
                matches!(ended, Ok(Some(Err(FillFailed)))),
                "{length:?}: an error, not a wait for ever"
            );
        }
    }

    #[test]
    fn a_stored_fill_holds_about_its_size_whatever_its_buffer_grew_to() {
        let mut doubled = AppendOnlyBytes::with_capacity(200 * 1024);
        doubled.push_slice(&[7; 70 * 1024]);
        let start = doubled.slice(0..1).as_ptr();
        let stored = stored_copy(doubled);
        assert_eq!(stored.len(), 70 * 1024);
        assert_ne!(
            stored.as_ptr(),
            start,
            "a copy of its size, not the 200 KiB buffer"
        );
        let mut nearly_full = AppendOnlyBytes::with_capacity(100);
        nearly_full.push_slice(&[7; 90]);
        let start = nearly_full.slice(0..1).as_ptr();
        assert_eq!(stored_copy(nearly_full).as_ptr(), start, "kept as it is");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_within_the_limit_is_the_whole_entry_however_its_buffer_grew()
    {
        let budget = FillBudget::new(1 << 20);
        let fill = Fill::new(Length::AtMost(1 << 20), budget.reserve(0).unwrap());
        let mut reader = fill.reader();
        // Chunks of 40 KiB: the first buffer (64 KiB) grows twice.
        let chunk: &'static str = Box::leak("x".repeat(40 * 1024).into_boxed_str());
        let taken = Arc::new(AtomicUsize::new(0));
        let body = counted(&[chunk; 5], &taken);
        let Received::Complete(encoded) = fill.receive(b"head", body).await else {
            panic!("200 KiB within a MiB is stored");
        };
        assert_eq!(encoded.len(), 4 + 5 * chunk.len());
        assert_eq!(&encoded[..4], b"head");
        assert_eq!(
            rest(&mut reader).await.unwrap(),
            chunk.repeat(5).into_bytes()
        );
        assert_eq!(
            budget.held(),
            5 * chunk.len() as u64,
            "held while the fill lives"
        );
    }
}
