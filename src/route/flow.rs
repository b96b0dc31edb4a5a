//! The request flow of a cached route, orchestration only; the rules live in `policy`, the storage in
//! `engine`, the replay in `replay`.
//!
//! 1. Classify the request (look up, refresh or bypass); read a POST body up to the limit.
//! 2. Build the key. 3. Look up: fresh → replay; stale → serve it and refresh in the background
//!    (stale-while-revalidate) or keep it as a fallback (stale-if-error).
//! 4. On a miss, run the handler once per key (single flight), classify the response, read its body
//!    up to the limit, store it, answer.

use super::RouteConfig;
use crate::body::{collect_limited, read_at_once, AtOnce, BoxError, CacheBody, Collected};
use crate::coalesce::{Join, Leader};
use crate::engine::{Engine, EngineHandle, Found, Shared};
use crate::entry::Entry;
use crate::fill::{streaming, StreamLimits, Streaming};
use crate::fleet::{self, Turn};
use crate::key::{primary_key, variant_key, CacheKey, KeyDescription};
use crate::policy::{
    ask_for_the_whole, classify_request, classify_response, names_two_hosts, refresh_early_now,
    renaming_fields_of, safe_method_with_content, BypassReason, RequestDecision, RequestPolicy,
    ResponseDecision, ResponsePolicy, SkipReason,
};
use crate::replay::{copy_etag, end_to_end, mark, replay, replay_arriving, to_stored, XCache};
use crate::service::{Handler, Reply, SendBody};
use crate::stats::Event;
use crate::storable::Storable;
use crate::tags::{entry_tags, take_tags};
use bytes::Bytes;
use http::header::{ETAG, RANGE};
use http::request::Parts;
use http::{response, HeaderMap, Method, Request, Response};
use http_body::Body;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tower_service::Service;

pub(super) async fn run<S, ReqB, ResB>(
    mut inner: S,
    route: Arc<RouteConfig>,
    request: Request<ReqB>,
) -> Reply<ResB, S::Error>
where
    S: Handler<ReqB, ResB>,
    ReqB: SendBody,
    ResB: SendBody,
{
    let Some(EngineHandle(engine)) = request.extensions().get::<EngineHandle>().cloned() else {
        warn_missing_middleware();
        let request = request.map(CacheBody::stream);
        return Ok(Box::pin(inner.call(request)).await?.map(CacheBody::stream));
    };
    let (parts, body) = request.into_parts();
    let policy = RequestPolicy {
        allow_authorization: route.allow_authorization,
        bypass_cookies: route.bypass_cookies,
        honor_request_cache_control: engine.config.honor_request_cache_control,
    };
    let mut decision = classify_request(&parts, policy);
    if safe_method_with_content(&parts, &body) {
        decision = RequestDecision::Bypass(BypassReason::ContentOnSafeMethod);
    } else if names_two_hosts(&parts) {
        decision = RequestDecision::Bypass(BypassReason::TwoHosts);
    }
    if let RequestDecision::Bypass(reason) = decision {
        return Box::pin(bypass(
            inner,
            &engine,
            parts,
            CacheBody::stream(body),
            reason,
        ))
        .await;
    }

    let (body, body_bytes) = if parts.method == Method::POST {
        match Box::pin(collect_limited(body, engine.config.max_request_body_size)).await {
            Collected::Complete(bytes) => (CacheBody::full(bytes.clone()), Some(bytes)),
            Collected::TooLarge(body) => {
                return Box::pin(bypass(
                    inner,
                    &engine,
                    parts,
                    body,
                    BypassReason::BodyTooLarge,
                ))
                .await
            }
            Collected::Failed(body) => {
                return Box::pin(bypass(
                    inner,
                    &engine,
                    parts,
                    body,
                    BypassReason::BodyUnreadable,
                ))
                .await
            }
        }
    } else {
        (CacheBody::stream(body), None)
    };

    let key = primary_key(&engine.config.namespace, &parts, body_bytes.as_deref());
    let described = KeyDescription {
        parts: &parts,
        body_len: body_bytes.as_ref().map(Bytes::len),
    };
    tracing::debug!(key = %key, parts = %described, "cache key generated");

    // The renaming fields the request carries (`X-Forwarded-Host`, ...): what answers it must
    // have been made for the same values, so its entry and single flight vary on them.
    let renaming = renaming_fields_of(&parts);
    // A refresh (`no-cache`) skips the lookup but not single flight: concurrent refreshes of one
    // key share one handler run, whose response was made after they arrived.
    let refresh = decision == RequestDecision::Refresh;
    let mut fallback = None;
    if refresh {
        tracing::debug!(key = %key, "request asked for a fresh response (no-cache)");
        engine.counters.record(Event::Refresh);
    } else {
        let now_ms = Entry::now_ms();
        match engine
            .lookup(&key, &parts.headers, &renaming, route.grace(), now_ms)
            .await
        {
            Found::Fresh(entry) => {
                tracing::debug!(key = %key, "cache hit");
                engine.counters.record(Event::Hit);
                let early = parts.method != Method::HEAD
                    && refresh_early_now(
                        engine.config.early_refresh,
                        entry.ttl,
                        entry.age(now_ms),
                        now_ms,
                    );
                let seen_ms = entry.stored_at_ms;
                let response =
                    replay_entry(entry, &parts.method, &parts.headers, XCache::Hit, now_ms);
                if early {
                    tracing::debug!(key = %key, "refreshing early, in the background");
                    revalidate_in_background(inner, engine, route, key, parts, body, seen_ms);
                }
                return Ok(response);
            }
            Found::Stale(entry) if within(&entry, route.stale_while_revalidate, now_ms) => {
                tracing::debug!(key = %key, "serving stale while revalidating");
                engine.counters.record(Event::Stale);
                let seen_ms = entry.stored_at_ms;
                let response =
                    replay_entry(entry, &parts.method, &parts.headers, XCache::Stale, now_ms);
                if parts.method != Method::HEAD {
                    revalidate_in_background(inner, engine, route, key, parts, body, seen_ms);
                }
                return Ok(response);
            }
            Found::Stale(entry) => fallback = Some(entry),
            Found::Nothing => {}
        }
        tracing::debug!(key = %key, "cache miss");
    }

    // Single flight: identical requests (same key and same values of the route's varying fields,
    // credentials included) wait for one handler run. HEAD cannot lead: its response has no body.
    // Nor can a request for a part: its answer (a 206, from a handler that reads `Range`) is not
    // the whole, and being unstorable it would mark the key so that the next clients each run
    // the handler. Both go to the handler alone.
    let mut leader = None;
    let alone = parts.method == Method::HEAD || parts.headers.contains_key(RANGE);
    let flight = (!alone).then(|| flight_key(&engine, &route, &key, &parts.headers, &renaming));
    if let Some(flight) = &flight {
        match engine.flights.join(flight.as_str()) {
            // A refresh runs here: an entry another instance stores may predate the request.
            Join::Leader(mut guard) if !refresh => {
                // Boxed: only misses wait on the fleet.
                match Box::pin(fleet::take_turn(
                    &engine,
                    flight,
                    &key,
                    &parts.headers,
                    &renaming,
                ))
                .await
                {
                    Turn::Served(shared) => {
                        engine.counters.record(Event::Hit);
                        engine.counters.record(Event::Coalesced);
                        let shared = Arc::new(*shared);
                        let entry = shared.entry.clone();
                        guard.finish(Some(shared));
                        return Ok(replay_entry(
                            entry,
                            &parts.method,
                            &parts.headers,
                            XCache::Hit,
                            Entry::now_ms(),
                        ));
                    }
                    // The lease goes with the leader: given back once the response is stored,
                    // which for a body still arriving is after this request is answered.
                    Turn::Run(Some(lease)) => guard.hold(lease),
                    Turn::Run(None) => {}
                }
                leader = Some(guard);
            }
            Join::Leader(guard) => leader = Some(guard),
            Join::Waiter(waiter) => {
                match Box::pin(waiter.wait(engine.config.coalesce_timeout)).await {
                    Some(shared)
                        if engine.shared_fits(&shared, &key, &parts.headers, &renaming) =>
                    {
                        tracing::debug!(key = %key, "served the response of an identical request in flight");
                        if !refresh {
                            engine.counters.record(Event::Hit);
                        }
                        engine.counters.record(Event::Coalesced);
                        let status = if refresh {
                            XCache::Refresh
                        } else {
                            XCache::Hit
                        };
                        return Ok(replay_shared(
                            &shared,
                            &parts.method,
                            &parts.headers,
                            status,
                        ));
                    }
                    _ => tracing::debug!(key = %key, "no shared response; running the handler"),
                }
            }
            Join::Pass => {
                tracing::debug!(key = %key, "its last response could not be stored (hit-for-miss): no waiting");
            }
        }
    }
    let status = if refresh {
        XCache::Refresh
    } else {
        engine.counters.record(Event::Miss);
        XCache::Miss
    };
    let mut miss = Miss::new(&engine, &route, key, renaming, status);
    miss.leader = leader;
    miss.flight = flight;
    // Boxed: the miss path (with the handler's own future) would otherwise make every request's
    // future, hits included, several kilobytes larger, copied on each request.
    Box::pin(miss.fetch_and_store(&mut inner, parts, body, fallback)).await
}

/// One handler run whose response may be stored.
struct Miss<'a> {
    engine: &'a Arc<Engine>,
    route: &'a RouteConfig,
    key: CacheKey,
    /// The renaming fields the request carries: the entry varies on them.
    renaming: Vec<String>,
    status: XCache,
    leader: Option<Leader<Arc<Shared>>>,
    /// The single-flight key, remembered as uncacheable when the response cannot be stored.
    flight: Option<CacheKey>,
}

impl<'a> Miss<'a> {
    fn new(
        engine: &'a Arc<Engine>,
        route: &'a RouteConfig,
        key: CacheKey,
        renaming: Vec<String>,
        status: XCache,
    ) -> Self {
        Miss {
            engine,
            route,
            key,
            renaming,
            status,
            leader: None,
            flight: None,
        }
    }

    /// The response, of `status`, could not be stored, for `reason`: counted, and later requests
    /// for the key pass instead of waiting (hit-for-miss).
    fn not_stored(&self, reason: &'static str, status: http::StatusCode) {
        self.engine.counters.record(Event::NotStored(reason));
        if let Some(flight) = &self.flight {
            self.engine
                .flights
                .remember_uncacheable(flight.as_str(), status);
        }
    }

    /// Runs the handler and stores what may be stored. With a `fallback` (stale-if-error), a failed
    /// handler or a 5xx answer is replaced by the stale entry.
    async fn fetch_and_store<S, ReqB, ResB>(
        self,
        inner: &mut S,
        parts: Parts,
        body: CacheBody<ReqB>,
        fallback: Option<Entry>,
    ) -> Reply<ResB, S::Error>
    where
        S: Service<Request<CacheBody<ReqB>>, Response = Response<ResB>>,
        ReqB: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
        ResB: SendBody,
    {
        let Miss {
            engine, route, key, ..
        } = &self;
        let method = parts.method.clone();
        let request_headers = parts.headers.clone();
        let response = match inner.call(Request::from_parts(parts, body)).await {
            Ok(response) => response,
            Err(error) => {
                return match fallback {
                    Some(stale) => {
                        Ok(self.serve_stale(stale, &method, &request_headers, "handler error"))
                    }
                    None => Err(error),
                }
            }
        };
        if response.status().is_server_error() {
            if let Some(stale) = fallback {
                let reason = response.status();
                return Ok(self.serve_stale(stale, &method, &request_headers, reason.as_str()));
            }
        }
        let (mut response_parts, response_body) = response.into_parts();
        // Whether or not it is stored, the tag field stays here.
        let named = take_tags(&mut response_parts.headers, &engine.config.tag_header);
        let statuses = route
            .statuses
            .as_deref()
            .unwrap_or(&engine.config.cacheable_statuses);
        let policy = ResponsePolicy {
            statuses,
            max_body: engine.config.max_body_size,
        };
        let decision = classify_response(
            &method,
            response_parts.status,
            &response_parts.headers,
            policy,
        );
        if let ResponseDecision::Skip(reason) = decision {
            tracing::debug!(key = %key, %reason, status = %response_parts.status, "response not cached");
            self.not_stored(reason.as_str(), response_parts.status);
            let response = Response::from_parts(response_parts, CacheBody::stream(response_body));
            return Ok(mark(response, self.status));
        }
        // A large body, or one of unknown length, streams while it is stored, unless it is all
        // there at once: then it is read first, like a short one, and named by its bytes.
        let max = engine.config.max_body_size;
        let limits = StreamLimits {
            fill_from: STREAM_FROM,
            max_body: max,
            fill_max_bytes: engine.config.fill_max_bytes,
        };
        let request = (&method, &request_headers);
        let response = (response_parts.status, &response_parts.headers);
        let collected = match streaming(limits, request, response, &response_body.size_hint()) {
            Streaming::Fill(length) => {
                match read_at_once(response_body, length.map_or(max, |l| l as usize)) {
                    AtOnce::Whole(bytes) => Collected::Complete(bytes),
                    AtOnce::Over(body) => Collected::TooLarge(body),
                    AtOnce::Waiting(body) => {
                        let streamed = Streamed {
                            parts: response_parts,
                            body,
                            named,
                        };
                        let fill =
                            self.stream_while_filling(streamed, length, &request_headers, policy);
                        return Ok(fill);
                    }
                }
            }
            Streaming::ReadFirst => collect_limited(response_body, max).await,
        };
        let body = match collected {
            Collected::Complete(bytes) => bytes,
            Collected::TooLarge(body) | Collected::Failed(body) => {
                tracing::debug!(key = %key, reason = "response-body-too-large-or-failed", "response not cached");
                self.not_stored(SkipReason::BodyTooLarge.as_str(), response_parts.status);
                return Ok(mark(
                    Response::from_parts(response_parts, body),
                    self.status,
                ));
            }
        };
        let stored = match Storable::for_route(to_stored(&response_parts, body), &method, policy) {
            Ok(stored) => stored,
            Err((reason, stored)) => {
                self.not_stored(reason, stored.status);
                return Ok(replay(stored, &method, &request_headers, self.status, None));
            }
        };
        let vary = route.vary_names(&self.renaming, &response_parts.headers);
        let lifetime = route.lifetime_from_now();
        let tags = entry_tags(&route.tags, named);
        let shared = engine
            .store_with(key, vary, &request_headers, stored, lifetime, tags)
            .await;
        if let Some(flight) = &self.flight {
            engine.flights.forget_uncacheable(flight.as_str());
        }
        let shared = Arc::new(shared);
        let response = replay(
            shared
                .entry
                .response()
                .expect("stored entries hold responses")
                .clone(),
            &method,
            &request_headers,
            self.status,
            None,
        );
        if let Some(leader) = self.leader {
            leader.finish(Some(shared));
        }
        Ok(response)
    }

    /// Answers with the handler's response as its body arrives, while a task of its own
    /// receives the body (whatever becomes of this client), then stores it. Requests that join
    /// the flight meanwhile read the same body from its start. Its bytes are unknown when its
    /// head goes out, so unless the handler named one, its `ETag` names this stored copy.
    fn stream_while_filling<ResB: SendBody>(
        self,
        Streamed { parts, body, named }: Streamed<CacheBody<ResB>>,
        length: Option<u32>,
        request_headers: &HeaderMap,
        policy: ResponsePolicy<'_>,
    ) -> Response<CacheBody<ResB>> {
        let Some(head) = self.streamed_head(&parts, policy) else {
            return mark(Response::from_parts(parts, body), self.status);
        };
        let Miss {
            engine,
            route,
            key,
            renaming,
            status,
            leader,
            flight,
        } = self;
        let lifetime = route.lifetime_from_now();
        let vary = route.vary_names(&renaming, &parts.headers);
        let tags = entry_tags(&route.tags, named);
        let Some(begun) =
            engine.begin_fill(&key, vary, request_headers, head, lifetime, tags, length)
        else {
            // Other fills hold the budget: this one streams through, not stored.
            return mark(Response::from_parts(parts, body), status);
        };
        let (head, body) = engine.stream_fill(begun, body, flight, leader);
        replay_arriving(head, body, request_headers, status, None)
    }

    /// The stored head of a response whose body streams while it is stored, if it may be stored
    /// (otherwise counted as not stored). Its bytes are not known when the head goes out, so
    /// unless the handler named an `ETag`, one names this stored copy.
    fn streamed_head(
        &self,
        parts: &response::Parts,
        policy: ResponsePolicy<'_>,
    ) -> Option<Storable> {
        let mut head = end_to_end(parts, Bytes::new());
        if !head.headers.contains_key(ETAG) {
            head.headers.insert(ETAG, copy_etag());
        }
        match Storable::for_route(head, &Method::GET, policy) {
            Ok(head) => Some(head),
            Err((reason, _)) => {
                self.not_stored(reason, parts.status);
                None
            }
        }
    }

    fn serve_stale<ResB: Body>(
        &self,
        stale: Entry,
        method: &Method,
        headers: &HeaderMap,
        reason: &str,
    ) -> Response<CacheBody<ResB>> {
        tracing::debug!(key = %self.key, reason, "handler failed; serving stale entry");
        self.engine.counters.record(Event::Stale);
        replay_entry(stale, method, headers, XCache::Stale, Entry::now_ms())
    }
}

/// A response whose body is received while it streams to its client.
struct Streamed<B> {
    parts: response::Parts,
    body: B,
    /// The tags the response named.
    named: Vec<String>,
}

/// Bodies announced at least this long stream to their client while they are stored; shorter
/// ones are read first, and their `ETag` is derived from their bytes.
const STREAM_FROM: u32 = 64 * 1024;

/// Refreshes an entry (stale, or about to expire) with one background handler run per key in
/// the fleet. `seen_ms` is when the entry the request saw was stored: a newer one means another
/// instance refreshed it meanwhile.
fn revalidate_in_background<S, ReqB, ResB>(
    mut inner: S,
    engine: Arc<Engine>,
    route: Arc<RouteConfig>,
    key: CacheKey,
    mut parts: Parts,
    body: CacheBody<ReqB>,
    seen_ms: u64,
) where
    S: Handler<ReqB, ResB>,
    ReqB: SendBody,
    ResB: SendBody,
{
    let renaming = renaming_fields_of(&parts);
    let flight = flight_key(&engine, &route, &key, &parts.headers, &renaming);
    let Join::Leader(leader) = engine.flights.join(flight.as_str()) else {
        return; // a refresh (or a miss) for this key is already under way
    };
    ask_for_the_whole(&mut parts.headers);
    tokio::spawn(async move {
        let Some(_lease) = fleet::lead_refresh(&engine, &flight).await else {
            return; // another instance is refreshing it
        };
        if engine
            .lookup_shared(&key, &parts.headers, &renaming, Entry::now_ms())
            .await
            .is_some_and(|found| found.entry.stored_at_ms > seen_ms)
        {
            return; // another instance refreshed it before this one took the lease
        }
        let mut miss = Miss::new(&engine, &route, key, renaming, XCache::Refresh);
        miss.leader = Some(leader);
        // Drain the response so that the handler's body runs to completion (without keeping it:
        // what is stored was kept as it passed).
        if let Ok(response) = miss.fetch_and_store(&mut inner, parts, body, None).await {
            let mut body = response.into_body();
            while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
        }
    });
}

async fn bypass<S, ReqB, ResB>(
    mut inner: S,
    engine: &Engine,
    parts: Parts,
    body: CacheBody<ReqB>,
    reason: BypassReason,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<CacheBody<ReqB>>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
    ResB: Body<Data = Bytes, Error: Into<BoxError>> + Unpin,
{
    tracing::debug!(method = %parts.method, path = parts.uri.path(), %reason, "request bypasses the cache");
    engine.counters.record(Event::Bypass(reason));
    let mut response = inner.call(Request::from_parts(parts, body)).await?;
    response.headers_mut().remove(&engine.config.tag_header);
    Ok(mark(response.map(CacheBody::stream), XCache::Bypass))
}

/// Requests share a handler run only with identical key material: the key, plus the values of the
/// route's varying fields (credentials included) and of the renaming fields they carry.
fn flight_key(
    engine: &Engine,
    route: &RouteConfig,
    key: &CacheKey,
    headers: &HeaderMap,
    renaming: &[String],
) -> CacheKey {
    variant_key(
        &engine.config.namespace,
        key,
        &route.request_vary(renaming),
        headers,
    )
}

fn within(entry: &Entry, grace: std::time::Duration, now_ms: u64) -> bool {
    !grace.is_zero() && entry.age(now_ms) < entry.ttl.saturating_add(grace)
}

/// The response a leader shared: stored, or with its body still arriving (read from its start).
fn replay_shared<B: Body>(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    status: XCache,
) -> Response<CacheBody<B>> {
    let now_ms = Entry::now_ms();
    let entry = shared.entry.clone();
    match &shared.fill {
        Some(fill) => {
            let age = entry.age(now_ms);
            let head = entry
                .into_response()
                .expect("shared entries hold responses");
            replay_arriving(
                head,
                CacheBody::filling(fill.reader()),
                headers,
                status,
                Some(age),
            )
        }
        None => replay_entry(entry, method, headers, status, now_ms),
    }
}

/// The response for a stored entry (never a variant marker), with its age as of `now_ms`.
fn replay_entry<B: Body>(
    entry: Entry,
    method: &Method,
    headers: &HeaderMap,
    status: XCache,
    now_ms: u64,
) -> Response<CacheBody<B>> {
    let age = entry.age(now_ms);
    let response = entry.into_response().expect("lookups return responses");
    replay(response, method, headers, status, Some(age))
}

fn warn_missing_middleware() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "a route has cache(..) but no CacheMiddleware is installed around the router: \
             requests pass through uncached (add .layer(CacheMiddleware::new(backend)))"
        );
    }
}
