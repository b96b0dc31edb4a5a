//! A cacheable response streams to its first client while it is stored, later clients read it as
//! it is being written, the fill outlives its first client, and a failed fill never passes for a
//! complete body: in both modes, the proxy in front of a real origin and a cached route of an
//! application, whose body the test releases chunk by chunk, over loopback.

mod support;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::MemoryBackend;
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::{cache, CacheMiddleware};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use support::{serve, Counter};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 4;
const WAIT: Duration = Duration::from_secs(10);

/// The bytes of chunk `n`: each chunk different, so that order and gaps show.
fn chunk(n: usize) -> Bytes {
    Bytes::from(vec![b'a' + n as u8; CHUNK])
}

fn whole() -> Vec<u8> {
    (0..CHUNKS).flat_map(|n| chunk(n).to_vec()).collect()
}

/// A body whose chunks (or failure) the test sends, of announced length unless `chunked`.
struct Fed {
    chunks: UnboundedReceiver<Result<Bytes, std::io::Error>>,
    left: u64,
    chunked: bool,
}

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        Poll::Ready(match ready!(self.chunks.poll_recv(cx)) {
            Some(Ok(data)) => {
                self.left -= data.len() as u64;
                Some(Ok(Frame::data(data)))
            }
            Some(Err(error)) => Some(Err(error)),
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            return SizeHint::new();
        }
        SizeHint::with_exact(self.left)
    }
}

/// Where the test sends one origin response's chunks.
type Feed = UnboundedSender<Result<Bytes, std::io::Error>>;

/// The origin: `/big` is cacheable and its body comes as the test feeds it.
#[derive(Clone, Default)]
struct Origin {
    runs: Counter,
    feeds: Arc<Mutex<Vec<Feed>>>,
}

impl Origin {
    /// Sends chunks `from..to` of the latest request's body.
    fn feed(&self, from: usize, to: usize) {
        let latest = self.feeds.lock().unwrap().len() - 1;
        self.feed_nth(latest, from, to);
    }

    /// Sends chunks `from..to` of the body of the origin's `nth` request (from 0).
    fn feed_nth(&self, nth: usize, from: usize, to: usize) {
        let feeds = self.feeds.lock().unwrap();
        for n in from..to {
            feeds[nth].send(Ok(chunk(n))).unwrap();
        }
    }

    fn fail(&self) {
        let feeds = self.feeds.lock().unwrap();
        let error = std::io::Error::other("the origin's disk failed");
        feeds.last().unwrap().send(Err(error)).unwrap();
    }
}

async fn big(State(origin): State<Origin>) -> Response {
    fed(origin, false)
}

/// The same body, of a length it does not announce (sent chunked).
async fn chunked(State(origin): State<Origin>) -> Response {
    fed(origin, true)
}

fn fed(origin: Origin, chunked: bool) -> Response {
    origin.runs.bump();
    let (feed, chunks) = unbounded_channel();
    origin.feeds.lock().unwrap().push(feed);
    let body = Fed {
        chunks,
        left: (CHUNK * CHUNKS) as u64,
        chunked,
    };
    Response::builder()
        .header("cache-control", "public, max-age=60")
        .body(Body::new(body))
        .unwrap()
}

/// `/big` and `/chunked` that set a session cookie: never stored, however they stream.
async fn big_with_cookie(State(origin): State<Origin>) -> Response {
    with_cookie(fed(origin, false))
}

async fn chunked_with_cookie(State(origin): State<Origin>) -> Response {
    with_cookie(fed(origin, true))
}

fn with_cookie(mut response: Response) -> Response {
    let cookie = http::HeaderValue::from_static("session=victim");
    response.headers_mut().insert("set-cookie", cookie);
    response
}

/// A large body that is all there at once.
async fn ready() -> Vec<u8> {
    whole()
}

/// Where the cache runs: a proxy in front of the origin (shared-cache mode), or the route layer
/// of the application itself (route mode).
#[derive(Clone, Copy, Debug)]
enum Mode {
    Proxy,
    Route,
}

const MODES: [Mode; 2] = [Mode::Proxy, Mode::Route];

/// Each mode with a body of announced length (`/big`) and one sent chunked (`/chunked`).
fn modes_and_bodies() -> impl Iterator<Item = (Mode, &'static str)> {
    MODES
        .into_iter()
        .flat_map(|mode| [(mode, "/big"), (mode, "/chunked")])
}

async fn setup(mode: Mode) -> (Origin, SocketAddr) {
    setup_with(mode, CacheMiddleware::new(MemoryBackend::new(100))).await
}

/// As [`setup`], storing bodies of at most two chunks (the chunked body is four).
async fn setup_storing_two_chunks(mode: Mode) -> (Origin, SocketAddr) {
    let middleware = CacheMiddleware::new(MemoryBackend::new(100)).max_body_size(2 * CHUNK);
    setup_with(mode, middleware).await
}

async fn setup_with(mode: Mode, middleware: CacheMiddleware) -> (Origin, SocketAddr) {
    let origin = Origin::default();
    if let Mode::Route = mode {
        let ttl = Duration::from_secs(60);
        let app = Router::new()
            .route("/big", get(big).layer(cache(ttl)))
            .route("/other", get(big).layer(cache(ttl)))
            .route("/ready", get(ready).layer(cache(ttl)))
            .route("/chunked", get(chunked).layer(cache(ttl)))
            .route("/big-cookie", get(big_with_cookie).layer(cache(ttl)))
            .route(
                "/chunked-cookie",
                get(chunked_with_cookie).layer(cache(ttl)),
            )
            .with_state(origin.clone())
            .layer(middleware);
        return (origin, serve(app).await);
    }
    let app = Router::new()
        .route("/big", get(big))
        .route("/other", get(big))
        .route("/chunked", get(chunked))
        .route("/big-cookie", get(big_with_cookie))
        .route("/chunked-cookie", get(chunked_with_cookie))
        .with_state(origin.clone());
    let upstream = serve(app).await;
    let config = ProxyConfig::from_toml("").unwrap();
    let front = router(
        format!("http://{upstream}").parse().unwrap(),
        &config,
        middleware,
    )
    .unwrap();
    (origin, serve(front).await)
}

type Reply = http::Response<hyper::body::Incoming>;

async fn until(what: &str, ready: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !ready() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn get_big(front: SocketAddr) -> Reply {
    get_path(front, "/big").await
}

async fn get_path(front: SocketAddr, path: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{front}{path}").parse().unwrap();
    tokio::time::timeout(WAIT, client.get(uri))
        .await
        .expect("the response head arrives while the origin holds the body")
        .unwrap()
}

fn x_cache(reply: &Reply) -> &str {
    reply.headers()["x-cache"].to_str().unwrap()
}

/// Reads until at least `n` bytes arrived; fails if they do not within the wait.
async fn read_at_least(reply: &mut Reply, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = tokio::time::timeout(WAIT, reply.body_mut().frame())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} bytes arrived", got.len()))
            .expect("the body goes on")
            .expect("the body does not fail");
        got.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
    got
}

/// A request for `path` that reaches the origin, answered while the origin has sent `chunks`
/// chunks: its reply and those bytes.
async fn reader_of_new_fetch(
    origin: &Origin,
    front: SocketAddr,
    path: &'static str,
    chunks: usize,
) -> (Reply, Vec<u8>) {
    let asked = origin.runs.get() + 1;
    let reply = tokio::spawn(get_path(front, path));
    until("the origin is asked", || origin.runs.get() == asked).await;
    origin.feed(0, chunks);
    let mut reply = reply.await.unwrap();
    let got = read_at_least(&mut reply, chunks * CHUNK).await;
    (reply, got)
}

/// The rest of the body, or the error that ended it.
async fn read_rest(reply: Reply) -> Result<Vec<u8>, String> {
    let collected = tokio::time::timeout(WAIT, reply.into_body().collect())
        .await
        .expect("the body ends");
    collected
        .map(|c| c.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_client_gets_each_chunk_as_the_origin_sends_it_and_the_whole_is_stored() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let (origin, front) = setup(mode).await;
        let length = |reply: &Reply| {
            assert_eq!(
                reply.headers()["content-length"],
                (CHUNK * CHUNKS).to_string()
            )
        };
        streams_to_its_first_client_then_hits(&origin, front, "/big", length).await;
    }
}

/// The first client of `path` gets the first chunk while the origin holds the rest (a cache that
/// read the body first would send nothing; `head` checks its head), then every byte; the next
/// request is a hit with the same bytes, and the origin was asked once.
async fn streams_to_its_first_client_then_hits(
    origin: &Origin,
    front: SocketAddr,
    path: &'static str,
    head: impl Fn(&Reply),
) {
    let (reply, mut got) = reader_of_new_fetch(origin, front, path, 1).await;
    assert_eq!(x_cache(&reply), "MISS");
    head(&reply);
    assert_eq!(got, chunk(0).to_vec());
    origin.feed(1, CHUNKS);
    got.extend(read_rest(reply).await.unwrap());
    assert!(got == whole(), "the first client got the exact bytes");

    let again = get_path(front, path).await;
    assert_eq!(x_cache(&again), "HIT");
    assert!(read_rest(again).await.unwrap() == whole());
    assert_eq!(origin.runs.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_join_a_fill_read_what_arrived_then_the_rest_with_one_origin_fetch() {
    for (mode, path) in modes_and_bodies() {
        eprintln!("mode: {mode:?}, {path}");
        let (origin, front) = setup(mode).await;
        let (first, mut got_first) = reader_of_new_fetch(&origin, front, path, 2).await;
        // Arriving mid-fill: the two chunks already received come at once, before any more exist.
        let mut joined = Vec::new();
        for _ in 0..3 {
            let mut reply = get_path(front, path).await;
            assert_eq!(x_cache(&reply), "HIT");
            let start = read_at_least(&mut reply, 2 * CHUNK).await;
            assert!(start[..2 * CHUNK] == whole()[..2 * CHUNK]);
            joined.push((start, reply));
        }
        assert_eq!(origin.runs.get(), 1, "no request went to the origin again");
        origin.feed(2, CHUNKS);
        got_first.extend(read_rest(first).await.unwrap());
        assert!(got_first == whole());
        for (mut start, reply) in joined {
            start.extend(read_rest(reply).await.unwrap());
            assert!(start == whole(), "every reader got the exact bytes");
        }
        assert_eq!(origin.runs.get(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fill_goes_on_when_its_first_client_leaves() {
    for (mode, path) in modes_and_bodies() {
        eprintln!("mode: {mode:?}, {path}");
        let (origin, front) = setup(mode).await;
        let (first, _) = reader_of_new_fetch(&origin, front, path, 1).await;
        drop(first); // the client hangs up mid-body
        tokio::time::sleep(Duration::from_millis(100)).await;
        origin.feed(1, CHUNKS);
        let later = get_path(front, path).await;
        assert_eq!(x_cache(&later), "HIT");
        assert!(read_rest(later).await.unwrap() == whole());
        assert_eq!(
            origin.runs.get(),
            1,
            "the fill was not abandoned with its client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fill_ends_every_reader_with_an_error_and_stores_nothing() {
    for (mode, path) in modes_and_bodies() {
        eprintln!("mode: {mode:?}, {path}");
        let (origin, front) = setup(mode).await;
        let (first, _) = reader_of_new_fetch(&origin, front, path, 1).await;
        let mut joined = get_path(front, path).await;
        read_at_least(&mut joined, CHUNK).await;
        origin.fail();
        for reply in [first, joined] {
            assert!(
                read_rest(reply).await.is_err(),
                "a body cut short is an error, never a complete response"
            );
        }
        let after = get_path(front, path).await;
        assert_eq!(x_cache(&after), "MISS", "nothing was stored");
        assert_eq!(origin.runs.get(), 2);
        origin.feed(0, CHUNKS);
        assert!(read_rest(after).await.unwrap() == whole());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_fill_budget_a_response_streams_through_unstored() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let budget = (CHUNK * CHUNKS) as u64; // room for one fill
        let middleware = CacheMiddleware::new(MemoryBackend::new(100)).fill_max_bytes(budget);
        let (origin, front) = setup_with(mode, middleware).await;
        let (first, _) = reader_of_new_fetch(&origin, front, "/big", 1).await;
        // The first fill holds the whole budget: the other object streams, and is not stored.
        let (other, mut got_other) = reader_of_new_fetch(&origin, front, "/other", 1).await;
        assert_eq!(x_cache(&other), "MISS");
        origin.feed_nth(1, 1, CHUNKS);
        got_other.extend(read_rest(other).await.unwrap());
        assert!(got_other == whole());
        origin.feed_nth(0, 1, CHUNKS);
        read_rest(first).await.unwrap();

        let again = get_path(front, "/other").await;
        assert_eq!(x_cache(&again), "MISS", "it was not stored");
        origin.feed_nth(2, 0, CHUNKS);
        assert!(read_rest(again).await.unwrap() == whole());
        // The budget came back with the first fill: this one is stored.
        assert_eq!(x_cache(&get_path(front, "/other").await), "HIT");
        assert_eq!(x_cache(&get_big(front).await), "HIT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_response_streamed_while_stored_names_one_validator_from_its_head_on() {
    let (origin, front) = setup(Mode::Route).await;
    let (reply, _) = reader_of_new_fetch(&origin, front, "/big", 1).await;
    let etag = reply
        .headers()
        .get("etag")
        .expect("the head, sent before the body exists, names the validator")
        .clone();
    origin.feed(1, CHUNKS);
    read_rest(reply).await.unwrap();
    let again = get_big(front).await;
    assert_eq!(x_cache(&again), "HIT");
    assert_eq!(
        again.headers()["etag"],
        etag,
        "the stored copy is the one named"
    );
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(format!("http://{front}/big"))
        .header("if-none-match", etag)
        .body(Empty::new())
        .unwrap();
    let revalidated = client.request(request).await.unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(origin.runs.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_route_body_there_at_once_is_named_by_its_bytes_in_every_instance() {
    let mut tags = Vec::new();
    for _instance in 0..2 {
        let (_, front) = setup(Mode::Route).await;
        let reply = get_path(front, "/ready").await;
        tags.push(reply.headers()["etag"].clone());
        assert!(read_rest(reply).await.unwrap() == whole());
        let again = get_path(front, "/ready").await;
        assert_eq!(x_cache(&again), "HIT");
        assert_eq!(again.headers()["etag"], tags[tags.len() - 1]);
    }
    assert_eq!(tags[0], tags[1], "the same bytes, the same validator");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_streams_to_its_first_client_and_is_stored_once_complete() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let (origin, front) = setup(mode).await;
        streams_to_its_first_client_then_hits(&origin, front, "/chunked", |_| {}).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_past_the_limit_reaches_its_client_whole_and_is_not_stored() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let (origin, front) = setup_storing_two_chunks(mode).await;
        let (reply, mut got) = reader_of_new_fetch(&origin, front, "/chunked", 1).await;
        origin.feed(1, CHUNKS);
        got.extend(read_rest(reply).await.unwrap());
        assert!(
            got == whole(),
            "the client got every byte, past the limit too"
        );
        let (again, mut got) = reader_of_new_fetch(&origin, front, "/chunked", CHUNKS).await;
        assert_ne!(x_cache(&again), "HIT");
        got.extend(read_rest(again).await.unwrap());
        assert!(got == whole());
        assert_eq!(origin.runs.get(), 2, "it was not stored");
    }
}

/// A body of unknown length read by two clients (the second joined it) that turns out too large
/// to store: both get every byte (it goes at the faster one's pace, the slower one within what
/// the fill holds for it), and the next request goes to the origin without waiting on anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_body_of_unknown_length_past_the_limit_get_every_byte() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let (origin, front) = setup_storing_two_chunks(mode).await;
        let (first, mut got_first) = reader_of_new_fetch(&origin, front, "/chunked", 1).await;
        let mut joined = get_path(front, "/chunked").await;
        let mut got_joined = read_at_least(&mut joined, CHUNK).await;
        assert_eq!(origin.runs.get(), 1, "the second client joined the first");
        origin.feed(1, CHUNKS);
        got_first.extend(read_rest(first).await.unwrap());
        got_joined.extend(read_rest(joined).await.unwrap());
        assert!(got_first == whole(), "the first client got every byte");
        assert!(got_joined == whole(), "the joined client got every byte");
        let (next, mut got) = reader_of_new_fetch(&origin, front, "/chunked", CHUNKS).await;
        assert_ne!(x_cache(&next), "HIT");
        got.extend(read_rest(next).await.unwrap());
        assert!(got == whole());
        assert_eq!(origin.runs.get(), 2, "it was not stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_that_fails_is_an_error_and_is_not_stored() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let (origin, front) = setup(mode).await;
        let (reply, _) = reader_of_new_fetch(&origin, front, "/chunked", 1).await;
        origin.fail();
        assert!(
            read_rest(reply).await.is_err(),
            "never a complete-looking body"
        );
        let (after, mut got) = reader_of_new_fetch(&origin, front, "/chunked", CHUNKS).await;
        assert_eq!(x_cache(&after), "MISS", "nothing was stored");
        got.extend(read_rest(after).await.unwrap());
        assert!(got == whole());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_past_the_fill_budget_reaches_its_client_whole_and_is_not_stored()
{
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let budget = (2 * CHUNK) as u64; // the body is four chunks
        let middleware = CacheMiddleware::new(MemoryBackend::new(100)).fill_max_bytes(budget);
        let (origin, front) = setup_with(mode, middleware).await;
        let (reply, mut got) = reader_of_new_fetch(&origin, front, "/chunked", 1).await;
        origin.feed(1, CHUNKS);
        got.extend(read_rest(reply).await.unwrap());
        assert!(got == whole(), "the client got every byte");
        let (again, _) = reader_of_new_fetch(&origin, front, "/chunked", CHUNKS).await;
        assert_eq!(x_cache(&again), "MISS", "it was not stored");
        read_rest(again).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_streaming_off_a_body_of_unknown_length_is_read_first_and_stored() {
    for mode in MODES {
        eprintln!("mode: {mode:?}");
        let middleware = CacheMiddleware::new(MemoryBackend::new(100)).fill_max_bytes(0);
        let (origin, front) = setup_with(mode, middleware).await;
        let reply = tokio::spawn(get_path(front, "/chunked"));
        until("the origin is asked", || origin.runs.get() == 1).await;
        origin.feed(0, CHUNKS);
        let reply = reply.await.unwrap();
        assert_eq!(x_cache(&reply), "MISS");
        assert!(read_rest(reply).await.unwrap() == whole());
        let again = get_path(front, "/chunked").await;
        assert_eq!(x_cache(&again), "HIT");
        assert!(read_rest(again).await.unwrap() == whole());
    }
}

/// Every path that streams while storing passes the same storability rule: a response that sets
/// a cookie reaches its own client, cookie and all, and is never stored for the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_response_that_sets_a_cookie_is_never_stored() {
    for mode in MODES {
        for path in ["/big-cookie", "/chunked-cookie"] {
            eprintln!("mode: {mode:?}, {path}");
            let (origin, front) = setup(mode).await;
            let (victim, mut got) = reader_of_new_fetch(&origin, front, path, 1).await;
            assert_eq!(victim.headers()["set-cookie"], "session=victim");
            origin.feed(1, CHUNKS);
            got.extend(read_rest(victim).await.unwrap());
            assert!(got == whole());
            let (next, _) = reader_of_new_fetch(&origin, front, path, CHUNKS).await;
            assert_ne!(x_cache(&next), "HIT");
            assert_eq!(
                origin.runs.get(),
                2,
                "the next client's request went to the origin"
            );
        }
    }
}
