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

use crate::service::SendBody;
use append_only_bytes::{AppendOnlyBytes, BytesSlice};
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, RANGE};
use http::{HeaderMap, Method, StatusCode};
use http_body::SizeHint;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A fill fails when the origin sends nothing for this long.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// ... or when the whole body takes longer than this.
const TOTAL_LIMIT: Duration = Duration::from_secs(600);

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
    chunks: Vec<Bytes>,
    end: End,
    readers_waiting: Vec<Waker>,
}

/// The bytes that fills in progress, and copies kept of bodies of unknown length, may hold at
/// once: a fill reserves its body's length until it is dropped with its last reader; a copy
/// grows its share as it grows, until it is stored or dropped.
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

/// The body of one response as it arrives, shared by its readers and the task that stores it.
pub(crate) struct Fill {
    /// The length the origin announced.
    length: u64,
    /// Its share of the fill budget, held while the fill or a reader of it lives.
    _permit: FillPermit,
    state: Mutex<State>,
}

/// A view of the fill's buffer, as the bytes of a `Bytes`.
struct Piece(BytesSlice);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Fill {
    /// A fill of a body of `length` bytes.
    pub(crate) fn new(length: u32, permit: FillPermit) -> Arc<Self> {
        Arc::new(Fill {
            length: u64::from(length),
            _permit: permit,
            state: Mutex::new(State {
                chunks: Vec::new(),
                end: End::Open,
                readers_waiting: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reader from the first byte.
    pub(crate) fn reader(self: &Arc<Self>) -> FillReader {
        FillReader {
            fill: Arc::clone(self),
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

    /// Reads `body` to its end, at most the announced length, within the time limits, after
    /// `before_body` (the stored entry's encoding up to its body); `Some` with the entry's whole
    /// encoding when the body arrived complete.
    pub(crate) async fn receive<B: SendBody>(&self, before_body: &[u8], body: B) -> Option<Bytes> {
        let mut buffer = AppendOnlyBytes::with_capacity(before_body.len() + self.length as usize);
        buffer.push_slice(before_body);
        let received = tokio::time::timeout(TOTAL_LIMIT, self.read_all(&mut buffer, body)).await;
        let complete = matches!(received, Ok(Some(length)) if length == self.length);
        self.update(|state| {
            state.end = if complete { End::Complete } else { End::Failed };
        });
        complete.then(|| Bytes::from_owner(Piece(buffer.to_slice())))
    }

    /// The body's length once it ended; `None` when it failed, stalled or passed the announced
    /// length.
    async fn read_all<B: SendBody>(
        &self,
        buffer: &mut AppendOnlyBytes,
        mut body: B,
    ) -> Option<u64> {
        let mut received = 0u64;
        loop {
            match tokio::time::timeout(STALL_LIMIT, body.frame()).await {
                Ok(None) => return Some(received),
                Ok(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not stored
                    };
                    if data.is_empty() {
                        continue;
                    }
                    received += data.len() as u64;
                    if received > self.length {
                        return None; // more than announced: not this response
                    }
                    let start = buffer.len();
                    buffer.push_slice(&data);
                    let piece = Bytes::from_owner(Piece(buffer.slice(start..)));
                    self.update(|state| state.chunks.push(piece));
                }
                Ok(Some(Err(_))) | Err(_) => return None,
            }
        }
    }
}

/// How a storable response's body goes to its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streaming {
    /// As it arrives, through a fill of this announced length.
    Fill(u32),
    /// As it arrives, while a copy is kept (its length is not announced).
    KeepCopy,
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
/// length from `fill_from` up to the storage limit, with a kept copy when it announces none.
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
        return Streaming::KeepCopy;
    };
    match u32::try_from(announced) {
        Ok(length) if length >= limits.fill_from.max(1) && length as usize <= limits.max_body => {
            Streaming::Fill(length)
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
    next: usize,
    read: u64,
}

impl FillReader {
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, FillFailed>>> {
        let mut state = self.fill.state();
        if let Some(chunk) = state.chunks.get(self.next) {
            self.next += 1;
            self.read += chunk.len() as u64;
            return Poll::Ready(Some(Ok(chunk.clone())));
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
        self.read == self.fill.length
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.fill.length - self.read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
