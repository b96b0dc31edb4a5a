//! The request path of shared-cache mode, orchestration only: the rules live in the sibling
//! modules, the storage in `engine`, the replay in `replay`.
//!
//! 1. Unsafe methods go to the origin; a successful answer invalidates what they changed.
//! 2. GET and HEAD: look up the stored response for the URL (and the request's `Vary` values).
//! 3. Fresh and acceptable to the request → answer from storage. Stale → serve it while
//!    revalidating, when allowed, or validate it with a conditional request; a 304 updates it.
//! 4. Nothing stored → one request to the origin per key (single flight); store what may be stored.

use super::cache_status::{ttl_left, Forward, Status};
use super::freshness::{age_is_invalid, initial_age, lifetime, Exchange};
use super::invalidate::{is_unsafe, Target};
use super::revalidate::{make_conditional, update_from_304};
use super::storable::{has_validator, may_store, Exchanged};
use super::targeted::effective_cache_control;
use super::SharedOptions;
use crate::body::{collect_limited, CacheBody, Collected};
use crate::coalesce::{Join, Leader};
use crate::engine::{Engine, Found, Lifetime, Shared};
use crate::entry::{millis, Entry, StoredResponse};
use crate::key::{primary_key, CacheKey};
use crate::policy::{safe_method_with_content, sorted_vary, BypassReason, CacheControl};
use crate::replay::{end_to_end, mark, replay, CacheStatus};
use crate::service::{Handler, Reply, SendBody};
use crate::stats::Event;
use crate::storable::{SharedRules, Storable};
use http::header::{HeaderMap, HeaderValue, AGE, DATE, RANGE};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

/// The longest a response is kept fresh, and kept stale after that: a year each.
const MAX_KEPT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The engine and options one request works with.
#[derive(Clone)]
pub(super) struct Cache {
    pub engine: Arc<Engine>,
    pub options: Arc<SharedOptions>,
}

/// What a stored response may be used for, given the request.
#[derive(Debug, PartialEq)]
enum Use {
    Fresh,
    /// Stale, and the request accepts that (`max-stale`).
    Stale,
    /// Stale within `stale-while-revalidate`: served, and validated in the background.
    WhileRevalidating,
    /// Only after validation with the origin.
    Validate(Forward),
}

/// A request on its way to the origin, with what the answer needs.
struct Outgoing {
    method: Method,
    /// The client's own fields (a conditional request to the origin carries others).
    headers: HeaderMap,
    cc: CacheControl,
    key: CacheKey,
}

impl Outgoing {
    fn new(parts: &Parts, cc: CacheControl, key: CacheKey) -> Self {
        Outgoing {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            cc,
            key,
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
        let (parts, body) = request.into_parts();
        let has_content = safe_method_with_content(&parts);
        let body = CacheBody::stream(body);
        if parts.method != Method::GET && parts.method != Method::HEAD {
            return Box::pin(self.other_method(inner, parts, body)).await;
        }
        if has_content {
            // RFC 9110 §9.3.1: content on a GET has no defined meaning, and the key ignores it.
            self.engine
                .counters
                .record(Event::Bypass(BypassReason::ContentOnSafeMethod));
            let status = Status::forward(Forward::Bypass).detail("content-on-get");
            return Box::pin(self.pass(inner, parts, body, status)).await;
        }
        let cc = if self.engine.config.honor_request_cache_control {
            CacheControl::from_headers(&parts.headers)
        } else {
            CacheControl::default()
        };
        if parts.headers.contains_key(RANGE) {
            // Partial content is not stored; the origin answers the range itself.
            self.engine
                .counters
                .record(Event::Bypass(BypassReason::Range));
            let status = Status::forward(Forward::Bypass).detail("range");
            return Box::pin(self.pass(inner, parts, body, status)).await;
        }
        if cc.no_store {
            self.engine
                .counters
                .record(Event::Bypass(BypassReason::NoStore));
            let status = Status::forward(Forward::Request).detail("no-store");
            return Box::pin(self.pass(inner, parts, body, status)).await;
        }
        let key = primary_key(&self.engine.config.namespace, &parts, None);
        tracing::debug!(key = %key, method = %parts.method, path = parts.uri.path(), "cache key generated");
        let now_ms = Entry::now_ms();
        let found = match self
            .engine
            .lookup(&key, &parts.headers, Duration::MAX, now_ms)
            .await
        {
            Found::Fresh(entry) | Found::Stale(entry) => Some(entry),
            Found::Nothing => None,
        };
        if let Some(entry) = found {
            let response_cc = self.response_cc(&entry_response(&entry).headers);
            let age = entry.age(now_ms);
            let ttl = Some(ttl_left(entry.ttl, age));
            // The hit paths answer from `parts`; only a request that goes on to the origin needs
            // its own copy of the client's fields.
            let (method, headers) = (&parts.method, &parts.headers);
            match decide(&cc, &response_cc, age, entry.ttl) {
                Use::Fresh => {
                    tracing::debug!(key = %key, "cache hit");
                    self.engine.counters.record(Event::Hit);
                    let status = Status::hit(ttl);
                    return Ok(self.answer(
                        entry,
                        method,
                        headers,
                        CacheStatus::Hit,
                        status,
                        now_ms,
                    ));
                }
                Use::Stale => {
                    tracing::debug!(key = %key, "stale hit the request accepts (max-stale)");
                    self.engine.counters.record(Event::Stale);
                    let status = Status::hit(ttl).detail("max-stale");
                    return Ok(self.answer(
                        entry,
                        method,
                        headers,
                        CacheStatus::Stale,
                        status,
                        now_ms,
                    ));
                }
                Use::WhileRevalidating => {
                    tracing::debug!(key = %key, "serving stale while revalidating");
                    self.engine.counters.record(Event::Stale);
                    let status = Status::hit(ttl).detail("stale-while-revalidate");
                    let response = self.answer(
                        entry.clone(),
                        method,
                        headers,
                        CacheStatus::Stale,
                        status,
                        now_ms,
                    );
                    if parts.method == Method::GET {
                        let outgoing = Outgoing::new(&parts, cc, key);
                        self.validate_in_background(inner, parts, body, outgoing, entry);
                    }
                    return Ok(response);
                }
                Use::Validate(_) if cc.only_if_cached => return Ok(only_if_cached()),
                Use::Validate(why) => {
                    tracing::debug!(key = %key, reason = ?why, "validating the stored response");
                    self.engine.counters.record(Event::Refresh);
                    let outgoing = Outgoing::new(&parts, cc, key);
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
            }
        }
        let outgoing = Outgoing::new(&parts, cc, key);
        if outgoing.cc.only_if_cached {
            return Ok(only_if_cached());
        }
        tracing::debug!(key = %outgoing.key, "cache miss");

        // Single flight: requests for one URL wait for one origin request, and take its response
        // when it was stored, fits their Vary values and is fresh enough for them.
        let leader = match self.join_flight(&parts.method, &outgoing, false).await {
            Ok(leader) => leader,
            Err(response) => return Ok(response),
        };
        self.engine.counters.record(Event::Miss);
        let status = Status::forward(Forward::UriMiss);
        Box::pin(self.fetch(&mut inner, parts, body, outgoing, leader, status, None)).await
    }

    /// Joins the single flight for the key (GET only): `Ok(Some)` leads it, `Ok(None)` goes to
    /// the origin alone, `Err` is the leader's response, taken as [`take_shared`] allows.
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
            .shared_fits(shared, &outgoing.key, &outgoing.headers)
        {
            return None;
        }
        let now_ms = Entry::now_ms();
        let response_cc = self.response_cc(&entry_response(&shared.entry).headers);
        let age = shared.entry.age(now_ms);
        if !validated && decide(&outgoing.cc, &response_cc, age, shared.entry.ttl) != Use::Fresh {
            return None;
        }
        tracing::debug!(key = %outgoing.key, "served the response of an identical request in flight");
        self.engine.counters.record(Event::Hit);
        self.engine.counters.record(Event::Coalesced);
        let status = Status::hit(Some(ttl_left(shared.entry.ttl, age))).detail("collapsed");
        Some(self.answer(
            shared.entry.clone(),
            &outgoing.method,
            &outgoing.headers,
            CacheStatus::Hit,
            status,
            now_ms,
        ))
    }

    /// Asks the origin and stores what may be stored. With a `fallback`, an origin that fails or
    /// answers 5xx is replaced by the stale response where `stale-if-error` allows it.
    #[allow(clippy::too_many_arguments)]
    async fn fetch<S, ReqB, ResB>(
        &self,
        inner: &mut S,
        parts: Parts,
        body: CacheBody<ReqB>,
        outgoing: Outgoing,
        leader: Option<Leader<Arc<Shared>>>,
        status: Status,
        fallback: Option<Entry>,
    ) -> Reply<ResB, S::Error>
    where
        S: Handler<ReqB, ResB>,
        ReqB: SendBody,
        ResB: SendBody,
    {
        let request_ms = Entry::now_ms();
        let result = inner.call(Request::from_parts(parts, body)).await;
        let exchange = Exchange {
            request_ms,
            response_ms: Entry::now_ms(),
        };
        let response = match result {
            Ok(response) if !response.status().is_server_error() => response,
            Ok(response) => match self.usable_on_error(fallback, &outgoing, exchange.response_ms) {
                Some(stale) => return Ok(self.serve_on_error(stale, &outgoing, response.status())),
                None => response,
            },
            Err(error) => match self.usable_on_error(fallback, &outgoing, exchange.response_ms) {
                Some(stale) => {
                    return Ok(self.serve_on_error(stale, &outgoing, StatusCode::BAD_GATEWAY))
                }
                None => return Err(error),
            },
        };
        Ok(self
            .store_and_answer(response, outgoing, exchange, leader, status)
            .await)
    }

    /// Stores the origin's response when allowed and answers the client with it.
    async fn store_and_answer<ResB: SendBody>(
        &self,
        response: Response<ResB>,
        outgoing: Outgoing,
        exchange: Exchange,
        leader: Option<Leader<Arc<Shared>>>,
        mut status: Status,
    ) -> Response<CacheBody<ResB>> {
        let (parts, body) = response.into_parts();
        status.fwd_status = Some(parts.status);
        let cc = self.response_cc(&parts.headers);
        let vary = sorted_vary(&parts.headers);
        let decision = may_store(
            &Exchanged {
                method: &outgoing.method,
                request_headers: &outgoing.headers,
                request_cc: &outgoing.cc,
                status: parts.status,
                headers: &parts.headers,
                cc: &cc,
                vary: &vary,
            },
            self.options.store_set_cookie,
        );
        let fresh_for = lifetime(
            &cc,
            &parts.headers,
            parts.status,
            exchange.response_ms,
            self.options.max_heuristic,
        )
        .unwrap_or(Duration::ZERO);
        let fresh_for = if age_is_invalid(&parts.headers) {
            Duration::ZERO
        } else {
            fresh_for
        };
        let reusable = !fresh_for.is_zero()
            || has_validator(&parts.headers)
            || cc.stale_while_revalidate.is_some()
            || cc.stale_if_error.is_some();
        let reason = match decision {
            Err(reason) => Some(reason.as_str()),
            Ok(()) if !reusable => Some("no-freshness-or-validator"),
            Ok(()) => None,
        };
        if let Some(reason) = reason {
            tracing::debug!(key = %outgoing.key, reason, status = %parts.status, "response not stored");
            self.engine.counters.record(Event::NotStored(reason));
            let response = Response::from_parts(parts, CacheBody::stream(body));
            return self.passed_on(response, status.detail(reason));
        }
        let body = match collect_limited(body, self.engine.config.max_body_size).await {
            Collected::Complete(bytes) => bytes,
            Collected::TooLarge(body) | Collected::Failed(body) => {
                tracing::debug!(key = %outgoing.key, "response body too large or failed; not stored");
                self.engine
                    .counters
                    .record(Event::NotStored("response-body-too-large"));
                let response = Response::from_parts(parts, body);
                return self.passed_on(response, status.detail("body-too-large"));
            }
        };
        let origin_age = parts.headers.contains_key(AGE);
        let age = initial_age(&parts.headers, exchange);
        let mut stored = end_to_end(&parts, body);
        add_date_if_missing(&mut stored.headers, exchange.response_ms);
        let storable = match Storable::for_shared(stored, &self.rules(&outgoing, &cc)) {
            Ok(storable) => storable,
            Err((reason, stored)) => {
                self.engine.counters.record(Event::NotStored(reason));
                let response = replay(
                    stored,
                    &outgoing.method,
                    &outgoing.headers,
                    CacheStatus::Miss,
                    None,
                );
                return self.with_status(response, &status.detail(reason));
            }
        };
        let shared = self
            .store(&outgoing, vary, storable, &cc, fresh_for, age, exchange)
            .await;
        status.stored = true;
        let entry = shared.entry.clone();
        if let Some(leader) = leader {
            leader.finish(Some(Arc::new(shared)));
        }
        // A response fresh from the origin carries an Age only when a cache behind us gave one.
        let response = replay(
            entry
                .into_response()
                .expect("stored entries hold responses"),
            &outgoing.method,
            &outgoing.headers,
            CacheStatus::Miss,
            origin_age.then_some(age),
        );
        self.with_status(response, &status)
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &self,
        outgoing: &Outgoing,
        vary: Vec<String>,
        stored: Storable,
        cc: &CacheControl,
        fresh_for: Duration,
        age: Duration,
        exchange: Exchange,
    ) -> Shared {
        // Lifetimes beyond what any backend keeps are capped (a cache may drop entries early).
        let fresh_for = fresh_for.min(MAX_KEPT);
        let may_serve_stale = !forbids_stale(cc);
        let mut grace = self.options.keep_stale;
        if may_serve_stale {
            grace = grace
                .max(cc.stale_while_revalidate.unwrap_or_default())
                .max(cc.stale_if_error.unwrap_or_default());
        }
        let grace = grace.min(MAX_KEPT);
        let lifetime = Lifetime {
            born_ms: exchange.response_ms.saturating_sub(millis(age)),
            ttl: fresh_for,
            grace,
        };
        self.engine
            .store_with(&outgoing.key, vary, &outgoing.headers, stored, lifetime)
            .await
    }

    /// Validates a stored response with a conditional request; without a validator, fetches anew.
    #[allow(clippy::too_many_arguments)]
    async fn validate<S, ReqB, ResB>(
        self,
        mut inner: S,
        mut parts: Parts,
        body: CacheBody<ReqB>,
        outgoing: Outgoing,
        entry: Entry,
        why: Forward,
        leader: Option<Leader<Arc<Shared>>>,
    ) -> Reply<ResB, S::Error>
    where
        S: Handler<ReqB, ResB>,
        ReqB: SendBody,
        ResB: SendBody,
    {
        let status = Status::forward(why);
        if !make_conditional(&mut parts.headers, entry_response(&entry)) {
            return self
                .fetch(
                    &mut inner,
                    parts,
                    body,
                    outgoing,
                    leader,
                    status,
                    Some(entry),
                )
                .await;
        }
        let request_ms = Entry::now_ms();
        let result = inner.call(Request::from_parts(parts, body)).await;
        let exchange = Exchange {
            request_ms,
            response_ms: Entry::now_ms(),
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                return match self.usable_on_error(Some(entry), &outgoing, exchange.response_ms) {
                    Some(stale) => {
                        Ok(self.serve_on_error(stale, &outgoing, StatusCode::BAD_GATEWAY))
                    }
                    None => Err(error),
                }
            }
        };
        if response.status().is_server_error() {
            let failed = response.status();
            if let Some(stale) = self.usable_on_error(Some(entry), &outgoing, exchange.response_ms)
            {
                return Ok(self.serve_on_error(stale, &outgoing, failed));
            }
            return Ok(self
                .store_and_answer(response, outgoing, exchange, leader, status)
                .await);
        }
        if response.status() != StatusCode::NOT_MODIFIED {
            return Ok(self
                .store_and_answer(response, outgoing, exchange, leader, status)
                .await);
        }
        // 304: the stored response is still good; take the new fields and freshness. The merged
        // response is judged again: a 304 may bring `Set-Cookie` or `private` (§4.3.4).
        let answer_headers = response.into_parts().0.headers;
        let mut stored = entry.into_response().expect("lookups return responses");
        update_from_304(&mut stored, &answer_headers);
        let cc = self.response_cc(&stored.headers);
        let storable = match Storable::for_shared(stored, &self.rules(&outgoing, &cc)) {
            Ok(storable) => storable,
            Err((reason, stored)) => {
                tracing::debug!(key = %outgoing.key, reason, "validated response no longer storable; entry removed");
                self.engine.counters.record(Event::NotStored(reason));
                let _ = self.engine.remove(&outgoing.key).await;
                let mut status = status.detail(reason);
                status.fwd_status = Some(StatusCode::NOT_MODIFIED);
                let response = replay(
                    stored,
                    &outgoing.method,
                    &outgoing.headers,
                    CacheStatus::Refresh,
                    None,
                );
                return Ok(self.with_status(response, &status));
            }
        };
        let fresh_for = lifetime(
            &cc,
            &storable.response().headers,
            storable.response().status,
            exchange.response_ms,
            self.options.max_heuristic,
        )
        .unwrap_or(Duration::ZERO);
        let age = initial_age(&answer_headers, exchange);
        let vary = sorted_vary(&storable.response().headers);
        let shared = self
            .store(&outgoing, vary, storable, &cc, fresh_for, age, exchange)
            .await;
        let entry = shared.entry.clone();
        if let Some(leader) = leader {
            leader.finish(Some(Arc::new(shared)));
        }
        tracing::debug!(key = %outgoing.key, "stored response validated (304)");
        let mut status = status;
        status.fwd_status = Some(StatusCode::NOT_MODIFIED);
        status.stored = true;
        let now_ms = Entry::now_ms();
        Ok(self.answer(
            entry,
            &outgoing.method,
            &outgoing.headers,
            CacheStatus::Refresh,
            status,
            now_ms,
        ))
    }

    /// Validates a stale response in a spawned task, once per key at a time.
    fn validate_in_background<S, ReqB, ResB>(
        &self,
        inner: S,
        parts: Parts,
        body: CacheBody<ReqB>,
        outgoing: Outgoing,
        entry: Entry,
    ) where
        S: Handler<ReqB, ResB>,
        ReqB: SendBody,
        ResB: SendBody,
    {
        let Join::Leader(leader) = self.engine.flights.join(outgoing.key.as_str()) else {
            return; // the origin is already being asked for this key
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let response = cache
                .validate(
                    inner,
                    parts,
                    body,
                    outgoing,
                    entry,
                    Forward::Stale,
                    Some(leader),
                )
                .await;
            // Drain the body so that the origin's response runs to completion.
            if let Ok(response) = response {
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
        });
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
        let response = inner.call(Request::from_parts(parts, body)).await?;
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
        let response = inner.call(Request::from_parts(parts, body)).await?;
        Ok(self.passed_on(response.map(CacheBody::stream), status))
    }

    /// The stored response as the client should see it.
    fn answer<B: http_body::Body>(
        &self,
        entry: Entry,
        method: &Method,
        headers: &HeaderMap,
        x_cache: CacheStatus,
        status: Status,
        now_ms: u64,
    ) -> Response<CacheBody<B>> {
        let age = entry.age(now_ms);
        let stored = entry.into_response().expect("lookups return responses");
        let response = replay(stored, method, headers, x_cache, Some(age));
        self.with_status(response, &status)
    }

    fn usable_on_error(
        &self,
        fallback: Option<Entry>,
        outgoing: &Outgoing,
        now_ms: u64,
    ) -> Option<Entry> {
        let entry = fallback?;
        let cc = self.response_cc(&entry_response(&entry).headers);
        let staleness = entry.age(now_ms).saturating_sub(entry.ttl);
        let window = cc.stale_if_error.max(outgoing.cc.stale_if_error)?;
        (!forbids_stale(&cc) && staleness <= window).then_some(entry)
    }

    fn serve_on_error<B: http_body::Body>(
        &self,
        stale: Entry,
        outgoing: &Outgoing,
        failed: StatusCode,
    ) -> Response<CacheBody<B>> {
        tracing::debug!(key = %outgoing.key, status = %failed, "origin failed; serving stale (stale-if-error)");
        self.engine.counters.record(Event::Stale);
        let mut status = Status::forward(Forward::Stale).detail("stale-if-error");
        status.fwd_status = Some(failed);
        let (method, headers) = (&outgoing.method, &outgoing.headers);
        self.answer(
            stale,
            method,
            headers,
            CacheStatus::Stale,
            status,
            Entry::now_ms(),
        )
    }

    /// What the storability decision needs of this exchange.
    fn rules<'a>(&'a self, outgoing: &'a Outgoing, cc: &'a CacheControl) -> SharedRules<'a> {
        SharedRules {
            method: &outgoing.method,
            request_headers: &outgoing.headers,
            request_cc: &outgoing.cc,
            cc,
            store_set_cookie: self.options.store_set_cookie,
        }
    }

    fn passed_on<B>(&self, response: Response<B>, status: Status) -> Response<B> {
        let x_cache = if status.fwd == Some(Forward::UriMiss) || status.fwd == Some(Forward::Stale)
        {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        };
        self.with_status(mark(response, x_cache), &status)
    }

    fn with_status<B>(&self, mut response: Response<B>, status: &Status) -> Response<B> {
        status.append_to(&self.options.name, response.headers_mut());
        response
    }

    /// The response's caching directives for this cache (RFC 9213, see `targeted`).
    fn response_cc(&self, headers: &HeaderMap) -> CacheControl {
        effective_cache_control(headers, &self.options.targeted, &self.options.name)
    }
}

/// §4.2.4, §5.2.2.2, §5.2.2.8: directives that forbid serving the response stale.
fn forbids_stale(cc: &CacheControl) -> bool {
    cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some() || cc.no_cache_whole()
}

/// §4: what a stored response may be used for, by its directives and the request's.
fn decide(
    request: &CacheControl,
    response: &CacheControl,
    age: Duration,
    lifetime: Duration,
) -> Use {
    if response.no_cache_whole() {
        return Use::Validate(Forward::Stale);
    }
    if request.no_cache || request.max_age.is_some_and(|max_age| age > max_age) {
        return Use::Validate(Forward::Request);
    }
    if age < lifetime {
        let left = lifetime - age;
        if request.min_fresh.is_some_and(|min_fresh| left < min_fresh) {
            return Use::Validate(Forward::Request);
        }
        return Use::Fresh;
    }
    let staleness = age - lifetime;
    if !forbids_stale(response) {
        if request
            .max_stale
            .is_some_and(|max_stale| staleness <= max_stale)
        {
            return Use::Stale;
        }
        if response
            .stale_while_revalidate
            .is_some_and(|window| staleness < window)
        {
            return Use::WhileRevalidating;
        }
    }
    Use::Validate(Forward::Stale)
}

fn entry_response(entry: &Entry) -> &StoredResponse {
    entry.response().expect("lookups return responses")
}

/// RFC 9110 §6.6.1: a cache stores a `Date` with a response that arrived without one.
fn add_date_if_missing(headers: &mut HeaderMap, response_ms: u64) {
    if !headers.contains_key(DATE) {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(response_ms);
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(time)) {
            headers.insert(DATE, value);
        }
    }
}

/// §5.2.1.7: `only-if-cached` with nothing usable stored.
fn only_if_cached<B: http_body::Body>() -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    mark(response, CacheStatus::Miss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(text: &str) -> CacheControl {
        CacheControl::parse(text)
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn fresh_responses_are_used_unless_the_request_asks_otherwise() {
        let any = cc("");
        assert_eq!(decide(&any, &cc("max-age=60"), S(10), S(60)), Use::Fresh);
        assert_eq!(
            decide(&cc("max-age=5"), &cc("max-age=60"), S(10), S(60)),
            Use::Validate(Forward::Request)
        );
        assert_eq!(
            decide(&cc("min-fresh=55"), &cc("max-age=60"), S(10), S(60)),
            Use::Validate(Forward::Request)
        );
        assert_eq!(
            decide(&cc("no-cache"), &cc("max-age=60"), S(0), S(60)),
            Use::Validate(Forward::Request)
        );
        assert_eq!(
            decide(&any, &cc("max-age=60, no-cache"), S(0), S(60)),
            Use::Validate(Forward::Stale)
        );
    }

    #[test]
    fn stale_responses_are_served_only_where_allowed() {
        let swr = cc("max-age=1, stale-while-revalidate=30");
        assert_eq!(decide(&cc(""), &swr, S(10), S(1)), Use::WhileRevalidating);
        assert_eq!(
            decide(&cc(""), &swr, S(40), S(1)),
            Use::Validate(Forward::Stale)
        );
        assert_eq!(
            decide(&cc("max-stale=20"), &cc("max-age=1"), S(10), S(1)),
            Use::Stale
        );
        for forbidding in [
            "max-age=1, must-revalidate",
            "max-age=1, proxy-revalidate",
            "s-maxage=1",
        ] {
            assert_eq!(
                decide(&cc("max-stale"), &cc(forbidding), S(10), S(1)),
                Use::Validate(Forward::Stale),
                "{forbidding}"
            );
        }
    }
}
