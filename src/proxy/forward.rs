//! Forwarding to the upstream over HTTP/1.1, bodies streamed both ways.
//!
//! Whatever protocol the client spoke (HTTP/1.0, 1.1 or h2c), the upstream gets HTTP/1.1 with the
//! `Host` the edge settled. A failure is blamed where it belongs: a request body the client broke
//! (malformed chunking, a body that stalls past its timeout) is the client's 400 or 408, an
//! upstream that cannot be reached is a 502, one that does not answer in time a 504.

use super::edge::plain;
use crate::policy::is_hop_by_hop;
use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{HeaderMap, HeaderValue, VIA};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;

use super::ProxyError;

const VIA_VALUE: &str = "1.1 cache-middleware";

/// Forwards requests to the upstream, streaming bodies both ways.
#[derive(Clone)]
pub struct Forward {
    // Shared: the service is cloned for every request, and a client is many handles.
    upstream: Arc<Upstream>,
}

struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme_and_authority: String,
    timeout: Duration,
}

impl Forward {
    /// A forwarder to `upstream` (`http://host:port`), waiting at most `timeout` for its answer.
    pub fn new(upstream: Uri, timeout: Duration) -> Result<Self, ProxyError> {
        match (upstream.scheme_str(), upstream.authority()) {
            (Some("http"), Some(authority)) => Ok(Forward {
                upstream: Arc::new(Upstream {
                    client: Client::builder(TokioExecutor::new()).build_http(),
                    scheme_and_authority: format!("http://{authority}"),
                    timeout,
                }),
            }),
            _ => Err(ProxyError::Upstream(upstream.to_string())),
        }
    }
}

impl<B> Service<Request<B>> for Forward
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let upstream = Arc::clone(&self.upstream);
        Box::pin(async move { Ok(upstream.forward(request).await) })
    }
}

impl Upstream {
    async fn forward<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        if to_upstream(&mut parts, &self.scheme_and_authority).is_err() {
            return with_via(plain(
                StatusCode::BAD_REQUEST,
                "request target cannot be forwarded",
            ));
        }
        let fault = Arc::new(AtomicU8::new(NO_FAULT));
        let body = Body::new(ClientBody {
            inner: body,
            fault: Arc::clone(&fault),
        });
        let upstream = Request::from_parts(parts, body);
        let result = tokio::time::timeout(self.timeout, self.client.request(upstream)).await;
        match (fault.load(Ordering::Acquire), result) {
            (BODY_TIMED_OUT, _) => {
                tracing::debug!("client request body stalled; 408");
                with_via(plain(StatusCode::REQUEST_TIMEOUT, "request body timed out"))
            }
            (BODY_BROKEN, _) => {
                tracing::debug!("client request body malformed; 400");
                with_via(plain(StatusCode::BAD_REQUEST, "malformed request body"))
            }
            (_, Ok(Ok(response))) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts
                    .headers
                    .append(VIA, HeaderValue::from_static(VIA_VALUE));
                Response::from_parts(parts, Body::new(body))
            }
            (_, Ok(Err(e))) => {
                tracing::warn!(error = %e, "upstream unreachable");
                with_via(plain(StatusCode::BAD_GATEWAY, "upstream unreachable"))
            }
            (_, Err(_)) => {
                tracing::warn!(timeout_secs = self.timeout.as_secs(), "upstream timed out");
                with_via(plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out"))
            }
        }
    }
}

/// The request as it leaves for the upstream: its target on the upstream, HTTP/1.1, without
/// hop-by-hop fields, with our `Via`. `Host` stays the one the edge settled (and the key holds).
pub(crate) fn to_upstream(
    parts: &mut Parts,
    scheme_and_authority: &str,
) -> Result<(), http::uri::InvalidUri> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{scheme_and_authority}{path}").parse()?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .append(VIA, HeaderValue::from_static(VIA_VALUE));
    Ok(())
}

const NO_FAULT: u8 = 0;
const BODY_BROKEN: u8 = 1;
const BODY_TIMED_OUT: u8 = 2;

pin_project_lite::pin_project! {
    /// The client's request body on its way upstream, remembering whether the client broke it.
    struct ClientBody<B> {
        #[pin]
        inner: B,
        fault: Arc<AtomicU8>,
    }
}

impl<B> http_body::Body for ClientBody<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(error))) => {
                let error: axum::BoxError = error.into();
                let fault = if is_timeout(&*error) {
                    BODY_TIMED_OUT
                } else {
                    BODY_BROKEN
                };
                this.fault.store(fault, Ordering::Release);
                Poll::Ready(Some(Err(error)))
            }
            other => other.map(|frame| frame.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a body error, or one it wraps, is the request-body timeout.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = error.source();
    }
    false
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names: Vec<_> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name, headers))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

fn with_via(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(VIA, HeaderValue::from_static(VIA_VALUE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_upstreams_with_a_host_are_accepted() {
        assert!(Forward::new(
            "http://127.0.0.1:8000".parse().unwrap(),
            Duration::from_secs(1)
        )
        .is_ok());
        for bad in ["https://a:1", "/relative", "ftp://a"] {
            assert!(
                Forward::new(bad.parse().unwrap(), Duration::from_secs(1)).is_err(),
                "{bad}"
            );
        }
    }
}
