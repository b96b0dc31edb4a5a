//! Purging over HTTP, for the demo and the proxy: a `PURGE` request is answered by the cache
//! itself and never reaches the application or the origin. It exists only when a token is
//! configured (`CACHE_PURGE_TOKEN`), and only a request that carries it (`Authorization: Bearer
//! <token>`, compared in constant time) purges anything.
//!
//! - `PURGE /path?query`: the cached response for that URL (every variant of it).
//! - `PURGE` with the tag field (`Surrogate-Key: a b`): every entry carrying one of the tags.
//! - With `Soft-Purge: 1`, what a URL or tag purge reaches becomes stale instead of gone (a URL
//!   whose response varies is purged hard: the reply's `kind` says which).
//! - `PURGE` with `Surrogate-Key: *`: the whole namespace.

use crate::handle::CacheHandle;
use crate::tags::{is_valid_tag, words, PurgeKind};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;
use std::sync::Arc;

/// Shortest token accepted: a guessable one would hand every client the power to empty the cache.
pub const MIN_TOKEN_LEN: usize = 16;

/// Who may purge, and the cache they purge.
#[derive(Clone)]
pub struct PurgeAccess {
    handle: CacheHandle,
    token: blake3::Hash,
    normalize_paths: bool,
}

impl std::fmt::Debug for PurgeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeAccess").finish_non_exhaustive()
    }
}

impl PurgeAccess {
    /// Purging `handle`'s cache for requests that carry `token` (at least [`MIN_TOKEN_LEN`]
    /// characters).
    pub fn new(handle: CacheHandle, token: &str) -> Result<Self, String> {
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!(
                "the purge token must be at least {MIN_TOKEN_LEN} characters long"
            ));
        }
        Ok(PurgeAccess {
            handle,
            token: blake3::hash(token.as_bytes()),
            normalize_paths: false,
        })
    }

    /// Reads the path of a URL purge as the proxy's edge reads request paths (dot segments and
    /// escapes resolved), so that it names the key the proxy stored.
    pub fn normalizing_paths(mut self) -> Self {
        self.normalize_paths = true;
        self
    }

    /// `router` with `PURGE` requests answered by the cache.
    pub fn serve_on(self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            Arc::new(self),
            purge_or_pass,
        ))
    }

    /// Fixed-length digests compared in constant time: neither the token's content nor its
    /// length shows in how long a refusal takes.
    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        blake3::hash(given.trim().as_bytes()) == self.token
    }

    async fn answer(&self, request: Request) -> Response {
        let headers = request.headers();
        if !self.allows(headers) {
            tracing::info!("purge refused: no valid token");
            let mut refused = reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "a valid purge token is required"}),
            );
            refused
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return refused;
        }
        let kind = if headers.get("soft-purge").is_some_and(|v| v == "1") {
            PurgeKind::Soft
        } else {
            PurgeKind::Hard
        };
        let refuse = |message: &str| reply(StatusCode::BAD_REQUEST, json!({"error": message}));
        let lines = headers.get_all(self.handle.tag_header());
        let Ok(lines) = lines
            .iter()
            .map(|v| v.to_str())
            .collect::<Result<Vec<_>, _>>()
        else {
            return refuse("tags are visible ASCII without commas, at most 256 bytes");
        };
        let named: Vec<&str> = lines.iter().flat_map(|line| words(line)).collect();
        if named.is_empty() && !lines.is_empty() {
            return refuse("the tag field names no tag");
        }
        let outcome = match (named.as_slice(), kind) {
            ([], kind) => {
                let host = headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned);
                let Some(target) = self.target(request.uri()) else {
                    return refuse("the path cannot be read");
                };
                let target = target.as_str();
                let handle = self.handle.for_host(host);
                handle
                    .purge_url(Method::GET, target, kind)
                    .await
                    .map(|done| match done {
                        Some(done) => json!({"purged": {"url": target, "kind": done.as_str()}}),
                        None => json!({"purged": {"url": target, "kind": "none"}}),
                    })
            }
            (["*"], PurgeKind::Hard) => {
                self.handle.clear().await.map(|()| json!({"purged": "all"}))
            }
            (["*"], PurgeKind::Soft) => return refuse("a purge of everything is hard only"),
            (tags, kind) => {
                if tags.iter().any(|t| !is_valid_tag(t)) {
                    return refuse("tags are visible ASCII without commas, at most 256 bytes");
                }
                let mut result = Ok(());
                for tag in tags {
                    result = result.and(self.handle.purge_tag(tag, kind).await);
                }
                result.map(|()| json!({"purged": {"tags": tags, "kind": kind.as_str()}}))
            }
        };
        match outcome {
            Ok(body) => reply(StatusCode::OK, body),
            Err(error) => {
                tracing::warn!(%error, "purge failed");
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "the cache backend could not be reached"}),
                )
            }
        }
    }
}

impl PurgeAccess {
    /// The path and query a URL purge names, as the cache keyed them.
    fn target(&self, uri: &http::Uri) -> Option<String> {
        let path = uri.path();
        let path = if self.normalize_paths {
            crate::proxy::path::normalize(path)
                .ok()?
                .unwrap_or_else(|| path.to_owned())
        } else {
            path.to_owned()
        };
        Some(match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        })
    }
}

async fn purge_or_pass(
    State(access): State<Arc<PurgeAccess>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method().as_str() == "PURGE" {
        access.answer(request).await
    } else {
        next.run(request).await
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
