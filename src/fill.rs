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
//! to the storage limit, its share of the fill budget growing with it. If it passes the limit,
//! or the budget has no room for it, it cannot be stored, but its readers still get all of it:
//! the fill then hands it on at the pace of its fastest reader, keeping what slower ones still
//! need up to what it held when it passed (at least [`PASSING_FLOOR`]). A reader that falls
//! further behind is cut off with an error (never a body presented as complete): one slow or
//! stalled client cannot hold the others back, nor make the fill hold more.

use crate::service::SendBody;
use append_only_bytes::{AppendOnlyBytes, BytesSlice};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, RANGE};
use http::{HeaderMap, Method, StatusCode};
use http_body::SizeHint;
use http_body_util::BodyExt;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A fill fails when the origin sends nothing for this long.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// ... or when the whole body takes longer than this.
const TOTAL_LIMIT: Duration = Duration::from_secs(600);
/// The first buffer of a body of unannounced length (it doubles as it fills).
const FIRST_CAPACITY: usize = 64 * 1024;
/// The least a body that cannot be stored keeps for its slower readers.
pub(crate) const PASSING_FLOOR: usize = 256 * 1024;

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
    /// The body cannot be stored: it is handed on at its fastest reader's pace.
    passing: bool,
    /// While passing: the bytes of `chunks`, and the most they may be.
    held: usize,
    keep_at_most: usize,
}

impl State {
    /// The number of the chunk after the last one received.
    fn end(&self) -> usize {
        self.base + self.chunks.len()
    }

    /// While passing: a chunk more for the readers, letting go of what they all had, and of
    /// what is past the most it may keep (cutting off the readers that still needed it).
    fn pass_on(&mut self, data: Bytes) {
        self.held += data.len();
        self.chunks.push_back(data);
        let all_had = self.positions.values().copied().min().unwrap_or(self.end());
        while self.chunks.len() > 1 && (self.base < all_had || self.held > self.keep_at_most) {
            let gone = self.chunks.pop_front().expect("more than one chunk");
            self.held -= gone.len();
            self.base += 1;
        }
        let base = self.base;
        self.positions.retain(|_, next| *next >= base);
    }
}

/// The bytes that fills in progress may hold at once: a fill of announced length reserves it
/// until it is dropped with its last reader; one of unannounced length grows its share as it
/// grows.
pub(crate) struct FillBudget {
    max: u64,
    held: Arc<AtomicU64>,
}

/// A share of the budget, given back when dropped.
pub(crate) struct FillPermit {
    bytes: u64,
    max: u64,
    held: Arc<AtomicU64>,
}

/// Takes `bytes` from what `held` counts, unless that would pass `max`.
fn take(held: &AtomicU64, max: u64, bytes: u64) -> bool {
    held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
        held.checked_add(bytes).filter(|&after| after <= max)
    })
    .is_ok()
}

impl FillBudget {
    pub(crate) fn new(max: u64) -> Self {
        FillBudget {
            max,
            held: Arc::default(),
        }
    }

    /// A permit for `bytes`, unless the fills in progress already hold too much.
    pub(crate) fn reserve(&self, bytes: u64) -> Option<FillPermit> {
        take(&self.held, self.max, bytes).then(|| FillPermit {
            bytes,
            max: self.max,
            held: Arc::clone(&self.held),
        })
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

impl FillPermit {
    /// Takes `bytes` more from the same budget; `false`, and nothing taken, when that would pass
    /// it.
    pub(crate) fn grow(&mut self, bytes: u64) -> bool {
        let grown = take(&self.held, self.max, bytes);
        if grown {
            self.bytes += bytes;
        }
        grown
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
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

/// Why a body of unannounced length cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstorable {
    /// It passed the storage limit.
    TooLarge,
    /// The fill budget had no room for it.
    NoRoom,
}

impl Unstorable {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unstorable::TooLarge => "response-body-too-large",
            Unstorable::NoRoom => "fill-budget",
        }
    }
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

/// The rest of a body that cannot be stored, for the readers it has.
pub(crate) struct Passing<'a, B> {
    failing: Failing<'a>,
    body: B,
    deadline: Instant,
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
                passing: false,
                held: 0,
                keep_at_most: 0,
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
        let first = match self.length {
            Length::Announced(length) => length as usize,
            Length::AtMost(_) => capacity_for(self.length).min(FIRST_CAPACITY),
        };
        let mut buffer = AppendOnlyBytes::with_capacity(before_body.len() + first);
        buffer.push_slice(before_body);
        // Where each chunk is in the buffer, to view them anew when it grows.
        let mut spans: Vec<Range<usize>> = Vec::new();
        let mut received = 0u64;
        while let Some(data) = next_data(&mut body, deadline).await {
            let Ok(data) = data else {
                return Received::Failed(failing);
            };
            received += data.len() as u64;
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
                let most = before_body.len() + capacity_for(self.length);
                let larger = (2 * buffer.capacity()).max(start + data.len()).min(most);
                let mut moved = AppendOnlyBytes::with_capacity(larger);
                moved.push_slice(buffer.as_bytes());
                buffer = moved;
            }
            buffer.push_slice(&data);
            spans.push(start..buffer.len());
            if grown {
                // Readers get views of the larger buffer from now on; the old one goes with the
                // last piece of it they send.
                let pieces = spans
                    .iter()
                    .map(|span| view(&buffer, span.clone()))
                    .collect();
                self.update(|state| state.chunks = pieces);
            } else {
                let piece = view(&buffer, start..buffer.len());
                self.update(|state| state.chunks.push_back(piece));
            }
        }
        let complete = match self.length {
            Length::Announced(length) => received == u64::from(length),
            Length::AtMost(_) => true,
        };
        if !complete {
            return Received::Failed(failing);
        }
        self.end(End::Complete);
        Received::Complete(Bytes::from_owner(Piece(buffer.to_slice())))
    }

    fn grow_permit(&self, bytes: usize) -> bool {
        let mut permit = self.permit.lock().unwrap_or_else(PoisonError::into_inner);
        permit.grow(bytes as u64)
    }
}

/// The body of `failing`'s fill cannot be stored: `data` (its latest chunk) goes to the readers,
/// and the rest as they take it.
fn pass<B>(
    failing: Failing<'_>,
    data: Bytes,
    body: B,
    deadline: Instant,
    why: Unstorable,
) -> Received<'_, B> {
    failing.0.update(|state| {
        state.passing = true;
        let held: usize = state.chunks.iter().map(Bytes::len).sum();
        state.keep_at_most = held.max(PASSING_FLOOR);
        state.held = held;
        state.pass_on(data);
    });
    let rest = Passing {
        failing,
        body,
        deadline,
    };
    Received::Unstorable(why, rest)
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

impl<B: SendBody> Passing<'_, B> {
    /// Hands the rest of the body on, a chunk each time a reader has had all before it. Ends
    /// when the body does, fails, or has no reader left.
    pub(crate) async fn hand_on(mut self) {
        let fill = self.failing.0;
        while fill.wanted(self.deadline).await {
            match next_data(&mut self.body, self.deadline).await {
                None => return fill.end(End::Complete),
                Some(Ok(data)) => fill.update(|state| state.pass_on(data)),
                Some(Err(())) => return fill.end(End::Failed),
            }
        }
        fill.end(End::Failed);
    }
}

impl Fill {
    /// Waits until a reader has every chunk received; `false` when no reader is left, or
    /// `deadline` passed.
    async fn wanted(&self, deadline: Instant) -> bool {
        loop {
            let moved = self.moved.notified();
            {
                let state = self.state();
                if state.positions.is_empty() {
                    return false;
                }
                let end = state.end();
                if state.positions.values().any(|&next| next >= end) {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return false;
            }
        }
    }
}

/// How a storable response's body goes to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// As it arrives, through a fill: of this announced length, or (`None`) of a length not
    /// announced.
    Fill(Option<u32>),
    /// Read first, up to the storage limit.
    ReadFirst,
}

/// What decides [`streaming`]: the smallest announced length worth a fill, the storage limit,
/// and the fill budget (0: nothing streams while stored).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamLimits {
    pub fill_from: u32,
    pub max_body: usize,
    pub fill_max_bytes: u64,
}

/// How a storable response's body goes to its client: only the whole response to a GET (no
/// range asked, not a part) streams while it is stored; through a fill when it announces a
/// length from `fill_from` up to the storage limit, or when it announces none.
pub(crate) fn streaming(
    limits: StreamLimits,
    (method, request_headers): (&Method, &HeaderMap),
    (status, headers): (StatusCode, &HeaderMap),
    hint: &SizeHint,
) -> Streaming {
    let whole_get = method == Method::GET
        && !request_headers.contains_key(RANGE)
        && status != StatusCode::PARTIAL_CONTENT;
    if !whole_get || limits.fill_max_bytes == 0 {
        return Streaming::ReadFirst;
    }
    let Some(announced) = announced_length(headers, hint) else {
        return Streaming::Fill(None);
    };
    match u32::try_from(announced) {
        Ok(length) if length >= limits.fill_from.max(1) && length as usize <= limits.max_body => {
            Streaming::Fill(Some(length))
        }
        _ => Streaming::ReadFirst,
    }
}

/// The length a response announces for its body: its one `Content-Length` (digits only), unless
/// the body says otherwise, or else the body's exact length. `None` when unknown or in conflict.
fn announced_length(headers: &HeaderMap, hint: &SizeHint) -> Option<u64> {
    let mut fields = headers.get_all(CONTENT_LENGTH).iter();
    let Some(field) = fields.next() else {
        return hint.exact();
    };
    let digits = field.as_bytes();
    if fields.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let within = length >= hint.lower() && hint.upper().is_none_or(|upper| length <= upper);
    within.then_some(length)
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
            if state.passing {
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
            state.passing
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
    use std::sync::atomic::AtomicUsize;

    /// A body of `chunks`, all there at once, counting how many of them were taken from it.
    fn counted(chunks: &[&'static str], taken: &Arc<AtomicUsize>) -> impl SendBody + use<> {
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

    async fn next(reader: &mut FillReader) -> Option<Result<Bytes, FillFailed>> {
        std::future::poll_fn(|cx| reader.poll_chunk(cx)).await
    }

    async fn rest(reader: &mut FillReader) -> Result<Vec<u8>, FillFailed> {
        let mut got = Vec::new();
        while let Some(chunk) = next(reader).await {
            got.extend_from_slice(&chunk?);
        }
        Ok(got)
    }

    /// Lets the fill's task run until it waits.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Receives `body` into `fill`, which cannot store it, and hands it on.
    fn pass_through(
        fill: &Arc<Fill>,
        body: impl SendBody + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let fill = Arc::clone(fill);
        tokio::spawn(async move {
            match fill.receive(b"", body).await {
                Received::Unstorable(why, rest) => {
                    assert_eq!(why, Unstorable::TooLarge);
                    rest.hand_on().await;
                }
                _ => panic!("past the limit, it cannot be stored"),
            }
        })
    }

    #[tokio::test]
    async fn a_body_too_large_to_store_goes_at_its_fastest_readers_pace_and_keeps_some_for_the_others(
    ) {
        let budget = FillBudget::new(1 << 20);
        let fill = Fill::new(Length::AtMost(4), budget.reserve(0).unwrap());
        let (mut fast, mut slow) = (fill.reader(), fill.reader());
        let taken = Arc::new(AtomicUsize::new(0));
        let task = pass_through(&fill, counted(&["ab", "cd", "ef", "gh", "ij"], &taken));
        settle().await;
        // Past the limit at the third chunk: no more is taken until a reader has it.
        assert_eq!(taken.load(Ordering::SeqCst), 3);
        for expected in ["ab", "cd"] {
            assert_eq!(
                &next(&mut fast).await.unwrap().unwrap()[..],
                expected.as_bytes()
            );
        }
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), 3);
        assert_eq!(&next(&mut fast).await.unwrap().unwrap()[..], b"ef");
        settle().await;
        assert_eq!(
            taken.load(Ordering::SeqCst),
            4,
            "the fast reader had all: the next comes"
        );
        assert_eq!(
            rest(&mut fast).await.unwrap(),
            b"ghij",
            "without waiting for the slow one"
        );
        task.await.unwrap();
        assert_eq!(
            rest(&mut slow).await.unwrap(),
            b"abcdefghij",
            "kept for the slow one"
        );
        drop((fast, slow, fill));
        assert_eq!(budget.held(), 0, "its share of the budget is given back");
    }

    #[tokio::test]
    async fn a_reader_too_far_behind_a_body_too_large_to_store_is_cut_off_and_the_fill_holds_no_more(
    ) {
        const CHUNK: usize = 100 * 1024;
        let chunk: &'static str = Box::leak("y".repeat(CHUNK).into_boxed_str());
        let budget = FillBudget::new(1 << 30);
        // Past the limit at the second chunk, holding one: it keeps the floor, 256 KiB.
        let fill = Fill::new(Length::AtMost(150 * 1024), budget.reserve(0).unwrap());
        let (mut fast, mut stalled) = (fill.reader(), fill.reader());
        let taken = Arc::new(AtomicUsize::new(0));
        let task = pass_through(&fill, counted(&[chunk; 6], &taken));
        let mut got = Vec::new();
        while let Some(chunk) = next(&mut fast).await {
            got.extend_from_slice(&chunk.unwrap());
            let state = fill.state();
            assert!(state.held <= PASSING_FLOOR, "held {}", state.held);
        }
        assert_eq!(got.len(), 6 * CHUNK, "the fast reader got every byte");
        task.await.unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 6);
        assert!(
            matches!(next(&mut stalled).await, Some(Err(FillFailed))),
            "the stalled reader lost its place: an error, not a short body"
        );
        assert!(
            matches!(next(&mut fill.reader()).await, Some(Err(FillFailed))),
            "too late"
        );
    }

    #[tokio::test]
    async fn a_body_too_large_to_store_stops_being_received_when_its_readers_leave() {
        let budget = FillBudget::new(1 << 20);
        let fill = Fill::new(Length::AtMost(2), budget.reserve(0).unwrap());
        let mut reader = fill.reader();
        let taken = Arc::new(AtomicUsize::new(0));
        let body = counted(&["ab", "cd", "ef", "gh"], &taken);
        let task = pass_through(&fill, body);
        assert_eq!(&next(&mut reader).await.unwrap().unwrap()[..], b"ab");
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the fill ends with its last reader")
            .unwrap();
        assert!(taken.load(Ordering::SeqCst) < 4, "the rest is never taken");
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

    #[test]
    fn the_announced_length_is_one_plain_content_length_that_the_body_agrees_with() {
        let headers = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONTENT_LENGTH, http::HeaderValue::from_static(value));
            }
            headers
        };
        let unknown = SizeHint::new();
        let exact = |n| SizeHint::with_exact(n);
        assert_eq!(announced_length(&headers(&["300"]), &unknown), Some(300));
        assert_eq!(announced_length(&headers(&[]), &exact(7)), Some(7));
        assert_eq!(announced_length(&headers(&[]), &unknown), None);
        assert_eq!(announced_length(&headers(&["300"]), &exact(300)), Some(300));
        for (values, hint) in [
            (&["300"][..], exact(299)),
            (&["300", "300"][..], unknown),
            (&["+300"][..], unknown),
            (&["3 00"][..], unknown),
            (&[""][..], unknown),
            (&["99999999999999999999999"][..], unknown),
        ] {
            assert_eq!(
                announced_length(&headers(values), &hint),
                None,
                "{values:?}"
            );
        }
    }

    #[test]
    fn the_budget_refuses_what_would_pass_it_and_takes_back_what_is_dropped() {
        let budget = FillBudget::new(100);
        let first = budget.reserve(60).expect("within the budget");
        assert!(budget.reserve(41).is_none(), "60 + 41 would pass 100");
        let second = budget.reserve(40).expect("60 + 40 fits exactly");
        assert_eq!(budget.held(), 100);
        drop(first);
        assert_eq!(budget.held(), 40);
        assert!(budget.reserve(u64::MAX).is_none(), "no overflow");
        drop(second);
        assert_eq!(budget.held(), 0);
        assert!(FillBudget::new(0).reserve(1).is_none(), "0: no fills");
        let mut growing = budget.reserve(0).expect("nothing yet");
        assert!(growing.grow(70) && growing.grow(30));
        assert!(!growing.grow(1), "100 + 1 would pass 100");
        assert_eq!(budget.held(), 100);
        drop(growing);
        assert_eq!(budget.held(), 0);
    }
}
