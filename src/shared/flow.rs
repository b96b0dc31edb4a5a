//! The request path of shared-cache mode, sequencing only: the decisions live in `rules` and
//! `storable`, the exchanges with the origin in `origin`, the storage in `engine`, the replay in
//! `replay`.
//!
//! 1. Unsafe methods go to the origin; a successful answer invalidates what they changed.
//! 2. GET and HEAD: look up the stored response for the URL (and the request's `Vary` values).
//! 3. Fresh and acceptable to the request → answer from storage. Stale → serve it while
//!    revalidating, when allowed, or validate it with a conditional request; a 304 updates it.
//! 4. Nothing stored → one request to the origin per key (single flight); store what may be stored.

use super::cache_status::{ttl_left, Forward, Status};
use super::invalidate::{is_unsafe, Target};
use super::rules::{reuse, Use};
use super::targeted::{effective_cache_control, SURROGATE_CAPABILITY};
use super::SharedOptions;
use crate::body::CacheBody;
use crate::coalesce::{Join, Leader};
use crate::engine::{Engine, Found, Shared};
use crate::entry::{Entry, StoredResponse};
use crate::fleet::{self, Turn};
use crate::key::{partial_key, primary_key, CacheKey};
use crate::policy::{
    ask_for_the_whole, names_two_hosts, refresh_early_now, renaming_fields_of,
    safe_method_with_content, BypassReason, CacheControl,
};
use crate::replay::{mark, replay, replay_arriving, replay_from_partial, XCache};
use crate::service::{Handler, Reply, SendBody};
use crate::stats::Event;
use crate::storable::SharedRules;
use http::header::{HeaderMap, RANGE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// The engine and options one request works with.
#[derive(Clone)]
pub(super) struct Cache {
    pub engine: Arc<Engine>,
    pub options: Arc<SharedOptions>,
}

/// A request on its way to the origin, with what the answer needs.
pub(super) struct Outgoing {
    pub method: Method,
    /// The client's own fields (a conditional request to the origin carries others).
    pub headers: HeaderMap,
    pub cc: CacheControl,
    pub key: CacheKey,
    /// The renaming fields the client sent (`X-Forwarded-Host`, ...; none behind the proxy's
    /// edge): what is stored for this request varies on them, and only what varies on them
    /// answers it.
    pub renaming: Vec<String>,
}

impl Outgoing {
    fn new(parts: &Parts, cc: CacheControl, key: CacheKey, renaming: Vec<String>) -> Self {
        Outgoing {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            cc,
            key,
            renaming,
        }
    }
}

impl Cache {
    pub(super) async fn run<S, ReqB, ResB>(
        self,
        mut inner: S,
        request: Request<ReqB>,
    ) -> Reply<ResB, S::Error>
    where
        S: Handler<ReqB, ResB> + Clone,
        ReqB: SendBody,
        ResB: SendBody,
    {
        let (mut parts, body) = request.into_parts();
        // Not in the key, so never the client's to choose (see `targeted::surrogate_capability`);
        // ours is added to what goes to the origin (`to_origin`).
        parts.headers.remove(SURROGATE_CAPABILITY);
        let has_content = safe_method_with_content(&parts, &body);
        let body = CacheBody::stream(body);
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Box::pin(self.other_method(inner, parts, body)).await;
        }
        let cc = if self.engine.config.honor_request_cache_control {
            CacheControl::from_headers(&parts.headers)
        } else {
            CacheControl::default()
        };
        // RFC 9110 §9.3.1: content on a GET has no defined meaning, and the key ignores it.
        let bypass = if has_content {
            Some((BypassReason::ContentOnSafeMethod, Forward::Bypass))
        } else if names_two_hosts(&parts) {
            Some((BypassReason::TwoHosts, Forward::Bypass))
        } else if cc.no_store {
            Some((BypassReason::NoStore, Forward::Request))
        } else {
            None
        };
        if let Some((reason, forward)) = bypass {
            self.engine.counters.record(Event::Bypass(reason));
            let status = Status::forward(forward).detail(reason.as_str());
            return Box::pin(self.pass(inner, parts, body, status)).await;
        }
        let key = primary_key(&self.engine.config.namespace, &parts, None);
        tracing::debug!(key = %key, method = %parts.method, path = parts.uri.path(), "cache key generated");
        let now_ms = Entry::now_ms();
        let renaming = renaming_fields_of(&parts);
        let found = self
            .engine
            .lookup(&key, &parts.headers, &renaming, Duration::MAX, now_ms)
            .await;
        // A range is answered from a stored complete response, else from a stored part that
        // holds it, else by the origin.
        let ranged = parts.headers.contains_key(RANGE);
        if let Found::Fresh(entry) | Found::Stale(entry) = found {
            let response_cc = self.response_cc(&entry_response(&entry).headers);
            let how = reuse(&cc, &response_cc, entry.age(now_ms), entry.ttl);
            match how {
                Use::Validate(_) if cc.only_if_cached => return Ok(only_if_cached()),
                Use::Validate(_) if ranged => {}
                Use::Validate(why) => {
                    tracing::debug!(key = %key, reason = ?why, "validating the stored response");
                    self.engine.counters.record(Event::Refresh);
                    let outgoing = Outgoing::new(&parts, cc, key, renaming);
                    // Concurrent validations of one key share one origin request (a burst of
                    // `no-cache` requests is one refresh, not one per client).
                    let leader = match self.join_flight(&parts.method, &outgoing, true).await {
                        Ok(leader) => leader,
                        Err(response) => return Ok(response),
                    };
                    let validation =
                        self.validate(inner, parts, body, outgoing, entry, why, leader);
                    return Box::pin(validation).await;
                }
                Use::WhileRevalidating if parts.method == Method::GET => {
                    let response = self.serve_stored(entry.clone(), how, &key, &parts, now_ms);
                    let outgoing = Outgoing::new(&parts, cc, key, renaming);
                    // The whole response is what is stored, whatever part or condition the
                    // client asked for (the validation adds its own).
                    ask_for_the_whole(&mut parts.headers);
                    self.validate_in_background(inner, parts, body, outgoing, entry);
                    return Ok(response);
                }
                // Early refresh: a hot entry is validated before it expires.
                Use::Fresh
                    if parts.method == Method::GET
                        && refresh_early_now(
                            self.engine.config.early_refresh,
                            entry.ttl,
                            entry.age(now_ms),
                            now_ms,
                        ) =>
                {
                    tracing::debug!(key = %key, "refreshing early, in the background");
                    let response = self.serve_stored(entry.clone(), how, &key, &parts, now_ms);
                    let outgoing = Outgoing::new(&parts, cc, key, renaming);
                    ask_for_the_whole(&mut parts.headers);
                    self.validate_in_background(inner, parts, body, outgoing, entry);
                    return Ok(response);
                }
                _ => return Ok(self.serve_stored(entry, how, &key, &parts, now_ms)),
            }
        }
        let outgoing = Outgoing::new(&parts, cc, key, renaming);
        if ranged {
            if let Some(response) = Box::pin(self.answer_from_stored_part(&outgoing, now_ms)).await
            {
                return Ok(response);
            }
        }
        if outgoing.cc.only_if_cached {
            return Ok(only_if_cached());
        }
        if ranged {
            // Nothing stored holds it: the origin answers, alone, and what it sends may be stored
            // (a complete response under the URL's key, a part under a key of its own).
            self.engine.counters.record(Event::Miss);
            let status = Status::forward(Forward::UriMiss);
            let fetch = self.fetch(&mut inner, parts, body, outgoing, None, status, None);
            return Box::pin(fetch).await;
        }
        tracing::debug!(key = %outgoing.key, "cache miss");

        // Single flight: requests for one URL wait for one origin request, and take its response
        // when it was stored, fits their Vary values and is fresh enough for them.
        let mut leader = match self.join_flight(&parts.method, &outgoing, false).await {
            Ok(leader) => leader,
            Err(response) => return Ok(response),
        };
        // The same across instances sharing the backend: one of them asks the origin, holding the
        // fleet's lease until its response is stored.
        if let Some(mut guard) = leader {
            let (key, headers) = (&outgoing.key, &outgoing.headers);
            let renaming = &outgoing.renaming;
            match Box::pin(fleet::take_turn(&self.engine, key, key, headers, renaming)).await {
                Turn::Served(shared) => {
                    if let Some(response) = self.take_shared(&shared, &outgoing, false) {
                        guard.finish(Some(Arc::new(*shared)));
                        return Ok(response);
                    }
                    leader = Some(guard);
                }
                Turn::Run(lease) => {
                    if let Some(lease) = lease {
                        guard.hold(lease);
                    }
                    leader = Some(guard);
                }
            }
        }
        self.engine.counters.record(Event::Miss);
        let status = Status::forward(Forward::UriMiss);
        Box::pin(self.fetch(&mut inner, parts, body, outgoing, leader, status, None)).await
    }

    /// Answers from storage as `how` allows: fresh, or stale the request or response accepts.
    fn serve_stored<B: http_body::Body>(
        &self,
        entry: Entry,
        how: Use,
        key: &CacheKey,
        parts: &Parts,
        now_ms: u64,
    ) -> Response<CacheBody<B>> {
        let (event, x_cache, detail) = match how {
            Use::Fresh => (Event::Hit, XCache::Hit, None),
            Use::Stale => (Event::Stale, XCache::Stale, Some("max-stale")),
            _ => (Event::Stale, XCache::Stale, Some("stale-while-revalidate")),
        };
        tracing::debug!(key = %key, how = ?how, "answered from storage");
        self.engine.counters.record(event);
        let mut status = Status::hit(Some(ttl_left(entry.ttl, entry.age(now_ms))));
        status.detail = detail;
        let (method, headers) = (&parts.method, &parts.headers);
        self.answer(entry, method, headers, x_cache, status, now_ms)
    }

    /// A `Range` request answered from a stored part (a `206` kept earlier) that holds all of
    /// the bytes asked, and that the request may reuse as it is.
    async fn answer_from_stored_part<B: http_body::Body>(
        &self,
        outgoing: &Outgoing,
        now_ms: u64,
    ) -> Option<Response<CacheBody<B>>> {
        let key = partial_key(&self.engine.config.namespace, &outgoing.key);
        let (Found::Fresh(entry) | Found::Stale(entry)) = self
            .engine
            .lookup(
                &key,
                &outgoing.headers,
                &outgoing.renaming,
                Duration::MAX,
                now_ms,
            )
            .await
        else {
            return None;
        };
        let (age, ttl) = (entry.age(now_ms), entry.ttl);
        let response_cc = self.response_cc(&entry_response(&entry).headers);
        if reuse(&outgoing.cc, &response_cc, age, ttl) != Use::Fresh {
            return None;
        }
        let stored = entry.into_response()?;
        let response = replay_from_partial(stored, &outgoing.headers, age)?;
        tracing::debug!(key = %outgoing.key, "range answered from a stored part");
        self.engine.counters.record(Event::Hit);
        let status = Status::hit(Some(ttl_left(ttl, age))).detail("partial");
        Some(self.with_status(response, &status))
    }

    /// Joins the single flight for the key (GET only): `Ok(Some)` leads it, `Ok(None)` goes to
    /// the origin alone, `Err` is the leader's response, taken as [`take_shared`](Self::take_shared) allows.
    async fn join_flight<B: http_body::Body>(
        &self,
        method: &Method,
        outgoing: &Outgoing,
        validated: bool,
    ) -> Result<Option<Leader<Arc<Shared>>>, Response<CacheBody<B>>> {
        if method != Method::GET {
            return Ok(None);
        }
        match self.engine.flights.join(outgoing.key.as_str()) {
            Join::Leader(guard) => Ok(Some(guard)),
            Join::Waiter(waiter) => {
                let timeout = self.engine.config.coalesce_timeout;
                if let Some(shared) = Box::pin(waiter.wait(timeout)).await {
                    if let Some(response) = self.take_shared(&shared, outgoing, validated) {
                        return Err(response);
                    }
                }
                Ok(None)
            }
            Join::Pass => {
                tracing::debug!(key = %outgoing.key, "its last response could not be stored (hit-for-miss): no waiting");
                Ok(None)
            }
        }
    }

    /// The response a leader stored, if it fits this request. A request that waited to validate
    /// takes it whatever its own directives say: the leader's answer came from the origin after
    /// the request arrived.
    fn take_shared<B: http_body::Body>(
        &self,
        shared: &Shared,
        outgoing: &Outgoing,
        validated: bool,
    ) -> Option<Response<CacheBody<B>>> {
        if !self
            .engine
            .shared_fits(shared, &outgoing.key, &outgoing.headers, &outgoing.renaming)
        {
            return None;
        }
        let now_ms = Entry::now_ms();
        let response_cc = self.response_cc(&entry_response(&shared.entry).headers);
        let age = shared.entry.age(now_ms);
        if !validated && reuse(&outgoing.cc, &response_cc, age, shared.entry.ttl) != Use::Fresh {
            return None;
        }
        tracing::debug!(key = %outgoing.key, "served the response of an identical request in flight");
        self.engine.counters.record(Event::Hit);
        self.engine.counters.record(Event::Coalesced);
        let status = Status::hit(Some(ttl_left(shared.entry.ttl, age))).detail("collapsed");
        let (method, headers) = (&outgoing.method, &outgoing.headers);
        let entry = shared.entry.clone();
        if let Some(fill) = &shared.fill {
            // Still arriving: read from its start, as it comes.
            let head = entry
                .into_response()
                .expect("stored entries hold responses");
            let response = replay_arriving(
                head,
                CacheBody::filling(fill.reader()),
                headers,
                XCache::Hit,
                Some(age),
            );
            return Some(self.with_status(response, &status));
        }
        Some(self.answer(entry, method, headers, XCache::Hit, status, now_ms))
    }

    /// Methods other than GET and HEAD go to the origin; an unsafe one that succeeds invalidates
    /// the stored responses for its target and the same-host URIs its response names (§4.4).
    async fn other_method<S, ReqB, ResB>(
        self,
        mut inner: S,
        parts: Parts,
        body: CacheBody<ReqB>,
    ) -> Reply<ResB, S::Error>
    where
        S: Handler<ReqB, ResB>,
        ReqB: SendBody,
        ResB: SendBody,
    {
        self.engine
            .counters
            .record(Event::Bypass(BypassReason::Method));
        let target = is_unsafe(&parts.method).then(|| Target::of(&parts));
        let response = inner.call(self.to_origin(parts, body)).await?;
        let status = response.status();
        if let Some(target) = target {
            if status.is_success() || status.is_redirection() {
                let namespace = &self.engine.config.namespace;
                for key in target.keys(namespace, response.headers()) {
                    tracing::debug!(key = %key, "invalidated by an unsafe method");
                    let _ = self.engine.remove(&key).await;
                }
            }
        }
        let response = response.map(CacheBody::stream);
        Ok(self.passed_on(response, Status::forward(Forward::Method)))
    }

    /// Forwards a request that is neither answered from nor stored in the cache.
    async fn pass<S, ReqB, ResB>(
        self,
        mut inner: S,
        parts: Parts,
        body: CacheBody<ReqB>,
        status: Status,
    ) -> Reply<ResB, S::Error>
    where
        S: Handler<ReqB, ResB>,
        ReqB: SendBody,
        ResB: SendBody,
    {
        let response = inner.call(self.to_origin(parts, body)).await?;
        Ok(self.passed_on(response.map(CacheBody::stream), status))
    }

    /// The request as it goes to the origin: with this cache's `Surrogate-Capability`.
    pub(super) fn to_origin<B>(&self, mut parts: Parts, body: B) -> Request<B> {
        if let Some(ours) = &self.options.surrogate_capability {
            parts.headers.insert(SURROGATE_CAPABILITY, ours.clone());
        }
        Request::from_parts(parts, body)
    }

    /// The stored response as the client should see it.
    pub(super) fn answer<B: http_body::Body>(
        &self,
        entry: Entry,
        method: &Method,
        headers: &HeaderMap,
        x_cache: XCache,
        status: Status,
        now_ms: u64,
    ) -> Response<CacheBody<B>> {
        let age = entry.age(now_ms);
        let stored = entry.into_response().expect("lookups return responses");
        let response = replay(stored, method, headers, x_cache, Some(age));
        self.with_status(response, &status)
    }

    /// What the storability decision needs of this exchange.
    pub(super) fn rules<'a>(
        &'a self,
        outgoing: &'a Outgoing,
        cc: &'a CacheControl,
    ) -> SharedRules<'a> {
        SharedRules {
            method: &outgoing.method,
            request_headers: &outgoing.headers,
            request_cc: &outgoing.cc,
            cc,
            store_set_cookie: self.options.store_set_cookie,
        }
    }

    pub(super) fn passed_on<B>(&self, response: Response<B>, status: Status) -> Response<B> {
        let x_cache = if status.fwd == Some(Forward::UriMiss) || status.fwd == Some(Forward::Stale)
        {
            XCache::Miss
        } else {
            XCache::Bypass
        };
        self.with_status(mark(response, x_cache), &status)
    }

    /// Every response this cache gives a client passes here: with its `Cache-Status`, and
    /// without the origin's tag field (tags are this cache's business).
    pub(super) fn with_status<B>(&self, mut response: Response<B>, status: &Status) -> Response<B> {
        let headers = response.headers_mut();
        headers.remove(&self.engine.config.tag_header);
        status.append_to(&self.options.name, headers);
        response
    }

    /// The response's caching directives for this cache (RFC 9213, see `targeted`).
    pub(super) fn response_cc(&self, headers: &HeaderMap) -> CacheControl {
        effective_cache_control(headers, &self.options.targeted, &self.options.name)
    }
}

pub(super) fn entry_response(entry: &Entry) -> &StoredResponse {
    entry.response().expect("lookups return responses")
}

/// §5.2.1.7: `only-if-cached` with nothing usable stored.
fn only_if_cached<B: http_body::Body>() -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    mark(response, XCache::Miss)
}
