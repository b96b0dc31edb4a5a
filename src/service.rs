//! What the cache layers need of the service they wrap, shared by route mode and shared-cache mode.

use crate::body::{BoxError, CacheBody};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

/// A cache layer's answer: the response, or the wrapped service's own error.
pub(crate) type Reply<ResB, E> = Result<Response<CacheBody<ResB>>, E>;

/// The wrapped service, as the flows need it: callable from a spawned task.
pub(crate) trait Handler<ReqB: Body, ResB>:
    Service<
        Request<CacheBody<ReqB>>,
        Response = Response<ResB>,
        Future: Send + 'static,
        Error: Send + 'static,
    > + Send
    + 'static
{
}

impl<T, ReqB: Body, ResB> Handler<ReqB, ResB> for T where
    T: Service<
            Request<CacheBody<ReqB>>,
            Response = Response<ResB>,
            Future: Send + 'static,
            Error: Send + 'static,
        > + Send
        + 'static
{
}

/// A request or response body the flows can hold across tasks.
pub(crate) trait SendBody:
    Body<Data = Bytes, Error: Into<BoxError> + Send> + Send + Unpin + 'static
{
}

impl<B> SendBody for B where
    B: Body<Data = Bytes, Error: Into<BoxError> + Send> + Send + Unpin + 'static
{
}

/// The service that `poll_ready` drove to readiness, for one call; a fresh clone takes its place.
pub(crate) fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
