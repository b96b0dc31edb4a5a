//! Bodies that the cache hands on: buffered bytes, a stream, a buffered prefix followed by the rest
//! of a stream, a response being received from the origin while it is stored (a
//! [`Fill`](crate::fill::Fill)), or a stored response read from storage as it is sent.
//! Reading a body up to a limit never loses data: what was read comes first, then the rest, then
//! any error the stream reported.

use crate::apart::ApartReader;
use crate::entry::StoredBody;
use crate::fill::FillReader;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

/// The request or response body produced by the cache layer.
pub struct CacheBody<B: Body> {
    prefix: Option<Bytes>,
    tail: Tail<B>,
}

// Nothing here is ever pinned in place but `B` itself, so the body is `Unpin` whenever `B` is, whatever
// its error type.
impl<B: Body + Unpin> Unpin for CacheBody<B> {}

impl<B: Body> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tail = match self.tail {
            Tail::Stream(_) => "stream",
            Tail::Fill(_) => "fill",
            Tail::Apart(_) => "apart",
            Tail::Failed(_) => "failed",
            Tail::End => "end",
        };
        f.debug_struct("CacheBody")
            .field("prefix_len", &self.prefix.as_ref().map(Bytes::len))
            .field("tail", &tail)
            .finish()
    }
}

enum Tail<B: Body> {
    Stream(B),
    Fill(FillReader),
    Apart(ApartReader),
    Failed(Option<BoxError>),
    End,
}

/// The error of a body the cache hands on: the wrapped body's own, or a failed fill's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B: Body> CacheBody<B> {
    /// A body of exactly these bytes.
    pub fn full(bytes: Bytes) -> Self {
        CacheBody {
            prefix: Some(bytes),
            tail: Tail::End,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The original body, untouched.
    pub fn stream(body: B) -> Self {
        CacheBody {
            prefix: None,
            tail: Tail::Stream(body),
        }
    }

    /// A stored response's body: in memory, or read from storage as it is sent.
    pub(crate) fn stored(body: StoredBody) -> Self {
        match body {
            StoredBody::Whole(bytes) => Self::full(bytes),
            StoredBody::Apart(apart) => {
                let (first, rest) = apart.into_reader();
                Self::prefixed(first, Tail::Apart(rest))
            }
        }
    }

    /// The body of a response being received, read from its start (see [`Fill`](crate::fill::Fill)).
    pub(crate) fn filling(reader: FillReader) -> Self {
        CacheBody {
            prefix: None,
            tail: Tail::Fill(reader),
        }
    }

    fn prefixed(prefix: Bytes, tail: Tail<B>) -> Self {
        CacheBody {
            prefix: Some(prefix),
            tail,
        }
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(prefix) = this.prefix.take() {
            if !prefix.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
        }
        match &mut this.tail {
            Tail::Stream(body) => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                if frame.is_none() {
                    this.tail = Tail::End;
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Tail::Fill(reader) => {
                let chunk = ready!(reader.poll_chunk(cx));
                if !matches!(chunk, Some(Ok(_))) {
                    this.tail = Tail::End;
                }
                Poll::Ready(chunk.map(|chunk| chunk.map(Frame::data).map_err(Into::into)))
            }
            Tail::Apart(reader) => {
                let window = ready!(reader.poll_window(cx));
                if !matches!(window, Some(Ok(_))) {
                    this.tail = Tail::End;
                }
                Poll::Ready(window.map(|window| window.map(Frame::data)))
            }
            Tail::Failed(error) => {
                let error = error.take();
                this.tail = Tail::End;
                Poll::Ready(error.map(Err))
            }
            Tail::End => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let prefix_done = self.prefix.as_ref().is_none_or(Bytes::is_empty);
        prefix_done
            && match &self.tail {
                Tail::Stream(body) => body.is_end_stream(),
                Tail::Fill(reader) => reader.is_end_stream(),
                Tail::Apart(reader) => reader.remaining() == 0,
                Tail::Failed(error) => error.is_none(),
                Tail::End => true,
            }
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let tail = match &self.tail {
            Tail::Stream(body) => body.size_hint(),
            Tail::Fill(reader) => reader.size_hint(),
            Tail::Apart(reader) => SizeHint::with_exact(reader.remaining() as u64),
            _ => SizeHint::with_exact(0),
        };
        let mut hint = SizeHint::new();
        if let Some(upper) = tail.upper() {
            hint.set_upper(upper + prefix);
        }
        hint.set_lower(tail.lower() + prefix);
        hint
    }
}

/// The result of reading a body up to a limit.
pub(crate) enum Collected<B: Body> {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// The body passed the limit: reading stopped, nothing is lost.
    TooLarge(CacheBody<B>),
    /// The stream failed: what was read, then the error.
    Failed(CacheBody<B>),
}

/// Reads `body` into memory, stopping as soon as more than `limit` bytes have arrived.
/// Trailers of a complete body are dropped (such bodies are not worth caching anyway).
pub(crate) async fn collect_limited<B>(mut body: B, limit: usize) -> Collected<B>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
{
    if body.size_hint().lower() > limit as u64 {
        return Collected::TooLarge(CacheBody::stream(body));
    }
    let mut buffer = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Collected::Complete(buffer.freeze()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.extend_from_slice(&data);
                if buffer.len() > limit {
                    return Collected::TooLarge(CacheBody::prefixed(
                        buffer.freeze(),
                        Tail::Stream(body),
                    ));
                }
            }
            Some(Err(error)) => {
                return Collected::Failed(CacheBody::prefixed(
                    buffer.freeze(),
                    Tail::Failed(Some(error.into())),
                ))
            }
        }
    }
}

/// What a body holds at once, without waiting.
pub(crate) enum AtOnce<B: Body> {
    /// All of it.
    Whole(Bytes),
    /// What came before it had to wait: the whole body, that first, then the rest as it comes.
    Waiting(CacheBody<B>),
    /// It failed, or passed the limit: what came, then the error or the rest.
    Over(CacheBody<B>),
}

/// Reads what `body` has now, up to `limit` bytes, without waiting for more.
pub(crate) fn read_at_once<B>(mut body: B, limit: usize) -> AtOnce<B>
where
    B: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut buffer = BytesMut::new();
    loop {
        match Pin::new(&mut body).poll_frame(&mut cx) {
            Poll::Ready(None) => return AtOnce::Whole(buffer.freeze()),
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.extend_from_slice(&data);
                if buffer.len() > limit {
                    let rest = Tail::Stream(body);
                    return AtOnce::Over(CacheBody::prefixed(buffer.freeze(), rest));
                }
            }
            Poll::Ready(Some(Err(error))) => {
                let rest = Tail::Failed(Some(error.into()));
                return AtOnce::Over(CacheBody::prefixed(buffer.freeze(), rest));
            }
            Poll::Pending => {
                let rest = Tail::Stream(body);
                return AtOnce::Waiting(CacheBody::prefixed(buffer.freeze(), rest));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, &'static str>>>>;

    fn chunks(parts: &[&'static str], fail: bool) -> Chunks {
        let mut frames: Vec<Result<Frame<Bytes>, &'static str>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        if fail {
            frames.push(Err("connection reset"));
        }
        StreamBody::new(stream::iter(frames))
    }

    async fn read_all<B>(body: B) -> (Vec<u8>, Option<String>)
    where
        B: Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
    {
        let mut body = body;
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => out.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn bodies_within_the_limit_are_collected_whole() {
        match collect_limited(chunks(&["ab", "cd"], false), 4).await {
            Collected::Complete(bytes) => assert_eq!(&bytes[..], b"abcd"),
            _ => panic!("expected a complete body"),
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_handed_on_intact() {
        let Collected::TooLarge(body) =
            collect_limited(chunks(&["ab", "cd", "ef"], false), 3).await
        else {
            panic!("expected too large");
        };
        assert_eq!(read_all(body).await, (b"abcdef".to_vec(), None));
    }

    #[tokio::test]
    async fn stream_errors_come_after_the_bytes_read_before_them() {
        let Collected::Failed(body) = collect_limited(chunks(&["ab"], true), 10).await else {
            panic!("expected failure");
        };
        assert_eq!(
            read_all(body).await,
            (b"ab".to_vec(), Some("connection reset".to_owned()))
        );
    }

    #[tokio::test]
    async fn what_a_body_holds_at_once_is_read_without_losing_the_rest_or_its_error() {
        match read_at_once(chunks(&["ab", "cd"], false), 4) {
            AtOnce::Whole(bytes) => assert_eq!(&bytes[..], b"abcd"),
            _ => panic!("all of it was there"),
        }
        let AtOnce::Over(over) = read_at_once(chunks(&["ab", "cd", "ef"], false), 3) else {
            panic!("past the limit");
        };
        assert_eq!(read_all(over).await, (b"abcdef".to_vec(), None));
        let AtOnce::Over(failed) = read_at_once(chunks(&["ab"], true), 10) else {
            panic!("failed");
        };
        let error = Some("connection reset".to_owned());
        assert_eq!(read_all(failed).await, (b"ab".to_vec(), error));
        // A body that has to wait: what came first, then the rest as it comes.
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        sender.send(Bytes::from_static(b"ab")).unwrap();
        let frames = stream::poll_fn(move |cx| {
            let data = ready!(receiver.poll_recv(cx));
            Poll::Ready(data.map(|data| Ok::<_, &'static str>(Frame::data(data))))
        });
        let AtOnce::Waiting(waiting) = read_at_once(StreamBody::new(frames), 10) else {
            panic!("the rest is still to come");
        };
        sender.send(Bytes::from_static(b"cd")).unwrap();
        drop(sender);
        assert_eq!(read_all(waiting).await, (b"abcd".to_vec(), None));
    }

    #[test]
    fn the_body_is_send_and_sync_when_what_it_wraps_is() {
        fn shareable<T: Send + Sync>() {}
        shareable::<CacheBody<http_body_util::Full<Bytes>>>();
    }

    #[tokio::test]
    async fn full_bodies_report_their_exact_size() {
        let body = CacheBody::<http_body_util::Empty<Bytes>>::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(read_all(body).await, (b"hello".to_vec(), None));
        assert!(CacheBody::<http_body_util::Empty<Bytes>>::empty().is_end_stream());
    }
}
