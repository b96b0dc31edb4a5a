//! The Python application as the service the engine wraps.
//!
//! The engine's route flow is the one the Rust layers run; only its inner service differs. When
//! the flow calls the handler, [`PyApp`] leaves the request in the exchange's [`AppLink`] and
//! waits: the Python side (`cache_middleware._driver`) sees the call when the flow returns
//! `Pending`, runs the ASGI application in the request's own task, and feeds the response head
//! and body back through the call's [`Answer`]. A call made after the request was answered (a
//! background refresh) goes to the engine's [`Background`] queue, which the Python side runs as
//! tasks of their own.

use bytes::Bytes;
use cache_middleware::{CacheBody, RequestScheme};
use http::header::CACHE_CONTROL;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::sync::oneshot;

/// The application raised, or ended without a response.
#[derive(Debug, Clone, Copy)]
pub struct AppFailed;

impl std::fmt::Display for AppFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the application failed before completing its response")
    }
}

impl std::error::Error for AppFailed {}

/// The request body the Python side read (only ever in memory): the chunks read so far. Whether
/// more waits in the ASGI `receive` is known to the Python side.
#[derive(Debug, Default)]
pub struct ReadBody {
    chunks: VecDeque<Bytes>,
}

impl ReadBody {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        ReadBody {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
        }
    }
}

impl Body for ReadBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// The response head the application sent.
pub struct Head {
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the flow asks the Python side to run.
pub struct AppCall {
    pub method: String,
    /// The scheme the request was made with, as its ASGI scope said (part of its key).
    pub scheme: Option<String>,
    pub target: String,
    pub headers: Vec<(Bytes, Bytes)>,
    /// The request body the flow read (a POST's), to be replayed before the rest of `receive`.
    pub body: Vec<Bytes>,
    /// Where the application's response goes.
    pub answer: Arc<Answer>,
}

/// The response body as the application sends it.
#[derive(Default)]
struct Stream {
    chunks: VecDeque<Bytes>,
    /// Bytes of body the application sent in all.
    sent: u64,
    done: bool,
    failed: bool,
    waker: Option<Waker>,
}

/// The response of one application call, as the Python side sends it: the head once, then the
/// body chunk by chunk.
pub struct Answer {
    head: Mutex<Option<oneshot::Sender<Head>>>,
    stream: Mutex<Stream>,
}

impl Answer {
    pub fn start(&self, head: Head) {
        if let Some(sender) = lock(&self.head).take() {
            let _ = sender.send(head);
        }
    }

    pub fn push(&self, chunk: Bytes, more: bool) {
        let mut stream = lock(&self.stream);
        if !chunk.is_empty() {
            stream.sent += chunk.len() as u64;
            stream.chunks.push_back(chunk);
        }
        stream.done |= !more;
        if let Some(waker) = stream.waker.take() {
            waker.wake();
        }
    }

    /// Whether the caller still waits for the response head.
    fn is_awaited(&self) -> bool {
        lock(&self.head)
            .as_ref()
            .is_some_and(|sender| !sender.is_closed())
    }

    /// The application failed: a response not yet complete ends in an error (one already
    /// complete stays as it is).
    pub fn fail(&self) {
        lock(&self.head).take();
        let mut stream = lock(&self.stream);
        if stream.done {
            return;
        }
        stream.failed = true;
        if let Some(waker) = stream.waker.take() {
            waker.wake();
        }
    }
}

/// Where the flow leaves its application calls for the Python side of one exchange. Once the
/// exchange is done with the link ([`AppLink::detach`]), calls the flow still makes (a background
/// refresh) go to the engine's [`Background`] queue instead.
pub struct AppLink {
    slot: Mutex<Slot>,
    /// The response of the call the exchange took.
    taken: Mutex<Option<Arc<Answer>>>,
    background: Arc<Background>,
}

#[derive(Default)]
struct Slot {
    call: Option<AppCall>,
    detached: bool,
}

impl AppLink {
    pub fn new(background: Arc<Background>) -> Self {
        AppLink {
            slot: Mutex::default(),
            taken: Mutex::default(),
            background,
        }
    }

    fn leave(&self, call: AppCall) {
        let mut slot = lock(&self.slot);
        if slot.detached {
            drop(slot);
            self.background.push(call);
        } else {
            slot.call = Some(call);
        }
    }

    /// The call the flow left, if any; from now on the link's answer is that call's.
    pub fn take_call(&self) -> Option<AppCall> {
        let call = lock(&self.slot).call.take()?;
        *lock(&self.taken) = Some(Arc::clone(&call.answer));
        Some(call)
    }

    fn answer(&self) -> Option<Arc<Answer>> {
        lock(&self.taken).clone()
    }

    pub fn start(&self, head: Head) {
        if let Some(answer) = self.answer() {
            answer.start(head);
        }
    }

    pub fn push(&self, chunk: Bytes, more: bool) {
        if let Some(answer) = self.answer() {
            answer.push(chunk, more);
        }
    }

    /// How many bytes of body the application has sent.
    pub fn body_sent(&self) -> u64 {
        self.answer().map_or(0, |answer| lock(&answer.stream).sent)
    }

    pub fn fail(&self) {
        if let Some(call) = lock(&self.slot).call.take() {
            call.answer.fail();
        }
        if let Some(answer) = self.answer() {
            answer.fail();
        }
    }

    /// The exchange is done: a call left and not taken, and any later one, runs in the
    /// background; a call whose caller is gone (the exchange's own flow, dropped) does not run.
    pub fn detach(&self) {
        let pending = {
            let mut slot = lock(&self.slot);
            slot.detached = true;
            slot.call.take()
        };
        if let Some(call) = pending.filter(|call| call.answer.is_awaited()) {
            self.background.push(call);
        }
    }
}

/// Application calls no request is waiting to run (a background refresh: stale-while-revalidate,
/// early refresh), for the Python side to run as tasks of their own. Python hears of them through
/// the wake signal, under this queue's id.
pub struct Background {
    pub id: u64,
    queue: Mutex<VecDeque<AppCall>>,
    waker: Waker,
}

/// Background calls waiting for the event loop beyond this many fail at once (a loop that stopped
/// taking them must not let them grow without bound).
const BACKGROUND_QUEUE_LIMIT: usize = 1024;

impl Background {
    pub fn new() -> Arc<Self> {
        let id = crate::task::next_id();
        Arc::new(Background {
            id,
            queue: Mutex::default(),
            waker: crate::wake::waker(id, crate::task::background_signal()),
        })
    }

    fn push(&self, call: AppCall) {
        let mut queue = lock(&self.queue);
        if queue.len() >= BACKGROUND_QUEUE_LIMIT {
            drop(queue);
            tracing::warn!(
                "background refreshes are not being taken by the event loop; one dropped"
            );
            call.answer.fail();
            return;
        }
        queue.push_back(call);
        drop(queue);
        self.waker.wake_by_ref();
    }

    /// The next background call, if any.
    pub fn take(&self) -> Option<AppCall> {
        lock(&self.queue).pop_front()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The application's response body, chunk by chunk as the Python side pushes it.
pub struct AppBody {
    answer: Arc<Answer>,
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = AppFailed;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AppFailed>>> {
        let mut stream = lock(&self.answer.stream);
        if let Some(chunk) = stream.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if stream.failed {
            return Poll::Ready(Some(Err(AppFailed)));
        }
        if stream.done {
            return Poll::Ready(None);
        }
        stream.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The Python application, as the engine's inner service.
#[derive(Clone)]
pub struct PyApp {
    pub link: Arc<AppLink>,
}

impl tower_service::Service<Request<CacheBody<ReadBody>>> for PyApp {
    type Response = Response<AppBody>;
    type Error = AppFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Response<AppBody>, AppFailed>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AppFailed>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<CacheBody<ReadBody>>) -> Self::Future {
        let (parts, mut body) = request.into_parts();
        let (head, started) = oneshot::channel();
        let call = AppCall {
            method: parts.method.as_str().to_owned(),
            scheme: parts
                .extensions
                .get::<RequestScheme>()
                .map(|s| s.0.as_str().to_owned()),
            target: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        Bytes::copy_from_slice(n.as_str().as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
            body: drain_in_memory(&mut body),
            answer: Arc::new(Answer {
                head: Mutex::new(Some(head)),
                stream: Mutex::default(),
            }),
        };
        let answer = Arc::clone(&call.answer);
        self.link.leave(call);
        Box::pin(async move {
            let head = started.await.map_err(|_| AppFailed)?;
            let mut response = Response::new(AppBody { answer });
            *response.status_mut() = StatusCode::from_u16(head.status).map_err(|_| AppFailed)?;
            let headers = response.headers_mut();
            let mut unreadable = false;
            for (name, value) in head.headers {
                match (
                    HeaderName::from_bytes(&name),
                    HeaderValue::from_bytes(&value),
                ) {
                    (Ok(name), Ok(value)) => {
                        headers.append(name, value);
                    }
                    _ => unreadable = true,
                }
            }
            if unreadable {
                // A field RFC 9110 does not allow (a control byte in its value) is dropped, not
                // fatal; but the engine cannot judge a response by fields it did not see (a
                // `Set-Cookie` among them would be shared), so the response is not stored.
                headers.append(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Ok(response)
        })
    }
}

/// The chunks of a body that is all in memory (what the flow hands on is either the collected
/// POST body or the untouched `ReadBody`): polled without waiting.
fn drain_in_memory(body: &mut CacheBody<ReadBody>) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut *body).poll_frame(&mut cx) {
        if let Ok(data) = frame.into_data() {
            chunks.push(data);
        }
    }
    chunks
}
