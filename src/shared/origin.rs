//! Shared-cache mode's exchanges with the origin: the fetch of a missing response, the validation
//! of a stored one (in the foreground or in the background), and what is stored from the answer.
//! Every write goes through [`Storable::for_shared`] with the lifetime `rules::kept_for` gives.

use super::cache_status::{Forward, Status};
use super::flow::{entry_response, Cache, Outgoing};
use super::freshness::Exchange;
use super::revalidate::{make_conditional, update_from_304};
use super::rules::{add_date_if_missing, kept_for, stale_on_error, worth_keeping};
use super::storable::{may_store, Exchanged, NotStored};
use crate::body::{collect_limited, read_at_once, AtOnce, CacheBody, Collected};
use crate::coalesce::{Join, Leader};
use crate::engine::{Lifetime, Shared};
use crate::entry::Entry;
use crate::fill::{streaming, StreamLimits, Streaming};
use crate::fleet;
use crate::key::partial_key;
use crate::policy::CacheControl;
use crate::policy::{sorted_vary, with_renaming};
use crate::replay::{end_to_end, replay, replay_arriving, XCache};
use crate::service::{Handler, Reply, SendBody};
use crate::stats::Event;
use crate::storable::Storable;
use crate::tags::{entry_tags, take_tags};
use bytes::Bytes;
use http::header::AGE;
use http::request::Parts;
use http::{Response, StatusCode};
use std::sync::Arc;

/// What a response streamed while it is stored keeps for storing it.
struct Filling {
    cc: CacheControl,
    vary: Vec<String>,
    kept: Lifetime,
    tags: Vec<String>,
    exchange: Exchange,
}

/// The clock around one request to the origin.
async fn timed<F: std::future::Future>(call: F) -> (F::Output, Exchange) {
    let request_ms = Entry::now_ms();
    let result = call.await;
    let exchange = Exchange {
        request_ms,
        response_ms: Entry::now_ms(),
    };
    (result, exchange)
}

/// The status a failed origin exchange counts as (for `stale-if-error`): a 5xx answer, or 502 for
/// no answer at all.
fn origin_failure<B, E>(result: &Result<Response<B>, E>) -> Option<StatusCode> {
    match result {
        Ok(response) if response.status().is_server_error() => Some(response.status()),
        Ok(_) => None,
        Err(_) => Some(StatusCode::BAD_GATEWAY),
    }
}

impl Cache {
    /// Asks the origin and stores what may be stored. With a `fallback`, an origin that fails or
    /// answers 5xx is replaced by the stale response where `stale-if-error` allows it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch<S, ReqB, ResB>(
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
        let (result, exchange) = timed(inner.call(self.to_origin(parts, body))).await;
        if let Some(failed) = origin_failure(&result) {
            if let Some(stale) = self.usable_on_error(fallback, &outgoing, exchange.response_ms) {
                return Ok(self.serve_on_error(stale, &outgoing, failed));
            }
        }
        let response = result?;
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
        let (mut parts, body) = response.into_parts();
        status.fwd_status = Some(parts.status);
        let tags = entry_tags(
            &[],
            take_tags(&mut parts.headers, &self.engine.config.tag_header),
        );
        let cc = self.response_cc(&parts.headers);
        let vary = sorted_vary(&parts.headers);
        let kept = kept_for(
            &cc,
            &parts.headers,
            parts.status,
            &parts.headers,
            exchange,
            &self.options,
        );
        // Judged before the body is read, so that what will not be stored streams through.
        let exchanged = Exchanged {
            method: &outgoing.method,
            request_headers: &outgoing.headers,
            request_cc: &outgoing.cc,
            status: parts.status,
            headers: &parts.headers,
            cc: &cc,
            vary: &vary,
        };
        let decision = may_store(&exchanged, self.options.store_set_cookie)
            .map_err(|reason| reason.as_str())
            .and_then(|()| worth_keeping(&cc, &parts.headers, &kept));
        if let Err(reason) = decision {
            tracing::debug!(key = %outgoing.key, reason, status = %parts.status, "response not stored");
            self.not_stored(&outgoing, reason, parts.status);
            let response = Response::from_parts(parts, CacheBody::stream(body));
            return self.passed_on(response, status.detail(reason));
        }
        // Stored varying on what the origin named, and on the renaming fields the client sent.
        let vary = with_renaming(vary, &outgoing.renaming);
        let part = parts.status == StatusCode::PARTIAL_CONTENT;
        let limits = StreamLimits {
            fill_from: 1,
            max_body: self.engine.config.max_body_size,
            fill_max_bytes: self.engine.config.fill_max_bytes,
        };
        let request = (&outgoing.method, &outgoing.headers);
        let response = (parts.status, &parts.headers);
        let max = self.engine.config.max_body_size;
        let collected = match streaming(limits, request, response, &body.size_hint()) {
            // Read first after all when the whole of it is there at once.
            Streaming::Fill(length) => match read_at_once(body, length.map_or(max, |l| l as usize))
            {
                AtOnce::Whole(bytes) => Collected::Complete(bytes),
                AtOnce::Over(body) => Collected::TooLarge(body),
                AtOnce::Waiting(body) => {
                    let fill = Filling {
                        cc,
                        vary,
                        kept,
                        tags,
                        exchange,
                    };
                    let streams = (body, length);
                    return self
                        .stream_while_filling(parts, streams, outgoing, leader, status, fill);
                }
            },
            Streaming::ReadFirst => collect_limited(body, max).await,
        };
        let body = match collected {
            Collected::Complete(bytes) => bytes,
            Collected::TooLarge(body) | Collected::Failed(body) => {
                tracing::debug!(key = %outgoing.key, "response body too large or failed; not stored");
                self.not_stored(&outgoing, "response-body-too-large", parts.status);
                let response = Response::from_parts(parts, body);
                return self.passed_on(response, status.detail("body-too-large"));
            }
        };
        let origin_age = parts.headers.contains_key(AGE);
        let mut stored = end_to_end(&parts, body);
        add_date_if_missing(&mut stored.headers, exchange.response_ms);
        let storable = match Storable::for_shared(stored, &self.rules(&outgoing, &cc)) {
            Ok(storable) => storable,
            Err((reason, stored)) => {
                self.not_stored(&outgoing, reason, stored.status);
                let (method, headers) = (&outgoing.method, &outgoing.headers);
                let response = replay(stored, method, headers, XCache::Miss, None);
                return self.with_status(response, &status.detail(reason));
            }
        };
        // Keyed on the Vary the origin sent, whatever fields the directives named to drop; a part
        // apart from the whole.
        let key = if part {
            partial_key(&self.engine.config.namespace, &outgoing.key)
        } else {
            outgoing.key.clone()
        };
        let shared = self
            .engine
            .store_with(&key, vary, &outgoing.headers, storable, kept, tags)
            .await;
        self.engine
            .flights
            .forget_uncacheable(outgoing.key.as_str());
        status.stored = true;
        let entry = shared.entry.clone();
        if let Some(leader) = leader {
            // A part is no answer for requests that waited for the whole.
            leader.finish((!part).then(|| Arc::new(shared)));
        }
        // A response fresh from the origin carries an Age only when a cache behind us gave one.
        let age = origin_age.then(|| entry.age(exchange.response_ms));
        let stored = entry
            .into_response()
            .expect("stored entries hold responses");
        let (method, headers) = (&outgoing.method, &outgoing.headers);
        let response = replay(stored, method, headers, XCache::Miss, age);
        self.with_status(response, &status)
    }

    /// The stored head of a response whose body streams while it is stored, if it may be stored;
    /// otherwise why not (counted).
    fn streamed_head(
        &self,
        parts: &http::response::Parts,
        outgoing: &Outgoing,
        cc: &CacheControl,
        exchange: &Exchange,
    ) -> Result<Storable, &'static str> {
        let mut head = end_to_end(parts, Bytes::new());
        add_date_if_missing(&mut head.headers, exchange.response_ms);
        Storable::for_shared(head, &self.rules(outgoing, cc)).map_err(|(reason, _)| {
            self.not_stored(outgoing, reason, parts.status);
            reason
        })
    }

    /// Answers with the origin's response as its body arrives, while a task of its own receives
    /// the body (whatever becomes of this client), then stores it. Requests that join the flight
    /// meanwhile read the same body from its start.
    #[allow(clippy::too_many_arguments)]
    fn stream_while_filling<ResB: SendBody>(
        &self,
        parts: http::response::Parts,
        (body, length): (CacheBody<ResB>, Option<u32>),
        outgoing: Outgoing,
        leader: Option<Leader<Arc<Shared>>>,
        mut status: Status,
        Filling {
            cc,
            vary,
            kept,
            tags,
            exchange,
        }: Filling,
    ) -> Response<CacheBody<ResB>> {
        let origin_age = parts.headers.contains_key(AGE);
        let storable = match self.streamed_head(&parts, &outgoing, &cc, &exchange) {
            Ok(storable) => storable,
            Err(reason) => {
                let response = Response::from_parts(parts, body);
                return self.passed_on(response, status.detail(reason));
            }
        };
        let begun = self.engine.begin_fill(
            &outgoing.key,
            vary,
            &outgoing.headers,
            storable,
            kept,
            tags,
            length,
        );
        let Some(begun) = begun else {
            // Other fills hold the budget: this one streams through, not stored.
            let response = Response::from_parts(parts, body);
            return self.passed_on(response, status.detail("fill-budget"));
        };
        let flight = Some(outgoing.key.clone());
        let (head, body) = self.engine.stream_fill(begun, body, flight, leader);
        status.stored = true;
        // A response fresh from the origin carries an Age only when a cache behind us gave one.
        let age = origin_age.then(|| kept.age_at(exchange.response_ms));
        let response = replay_arriving(head, body, &outgoing.headers, XCache::Miss, age);
        self.with_status(response, &status)
    }

    /// Validates a stored response with a conditional request; without a validator, fetches anew.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn validate<S, ReqB, ResB>(
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
            let fallback = Some(entry);
            let fetch = self.fetch(&mut inner, parts, body, outgoing, leader, status, fallback);
            return fetch.await;
        }
        let (result, exchange) = timed(inner.call(self.to_origin(parts, body))).await;
        if let Some(failed) = origin_failure(&result) {
            let now_ms = exchange.response_ms;
            if let Some(stale) = self.usable_on_error(Some(entry.clone()), &outgoing, now_ms) {
                return Ok(self.serve_on_error(stale, &outgoing, failed));
            }
        }
        let response = result?;
        if response.status() != StatusCode::NOT_MODIFIED {
            return Ok(self
                .store_and_answer(response, outgoing, exchange, leader, status)
                .await);
        }
        Ok(self
            .merge_304(response, entry, outgoing, exchange, leader, status)
            .await)
    }

    /// 304: the stored response is still good; it takes the new fields and freshness. The merged
    /// response is judged again, since a 304 may bring `Set-Cookie` or `private` (§4.3.4); when it
    /// may no longer be stored, the entry is removed.
    async fn merge_304<B: http_body::Body>(
        &self,
        not_modified: Response<B>,
        entry: Entry,
        outgoing: Outgoing,
        exchange: Exchange,
        leader: Option<Leader<Arc<Shared>>>,
        mut status: Status,
    ) -> Response<CacheBody<B>> {
        status.fwd_status = Some(StatusCode::NOT_MODIFIED);
        let mut arrived = not_modified.into_parts().0.headers;
        // Tags the 304 names replace the stored ones (as its other fields do).
        let named = take_tags(&mut arrived, &self.engine.config.tag_header);
        let tags = if named.is_empty() {
            entry.tags.clone()
        } else {
            entry_tags(&[], named)
        };
        let mut stored = entry.into_response().expect("lookups return responses");
        update_from_304(&mut stored, &arrived);
        let cc = self.response_cc(&stored.headers);
        let (method, headers) = (&outgoing.method, &outgoing.headers);
        let storable = match Storable::for_shared(stored, &self.rules(&outgoing, &cc)) {
            Ok(storable) => storable,
            Err((reason, stored)) => {
                tracing::debug!(key = %outgoing.key, reason, "validated response no longer storable; entry removed");
                self.engine.counters.record(Event::NotStored(reason));
                let _ = self.engine.remove(&outgoing.key).await;
                let response = replay(stored, method, headers, XCache::Refresh, None);
                return self.with_status(response, &status.detail(reason));
            }
        };
        let merged = storable.response();
        let kept = kept_for(
            &cc,
            &merged.headers,
            merged.status,
            &arrived,
            exchange,
            &self.options,
        );
        let vary = with_renaming(sorted_vary(&merged.headers), &outgoing.renaming);
        let shared = self
            .engine
            .store_with(&outgoing.key, vary, headers, storable, kept, tags)
            .await;
        let entry = shared.entry.clone();
        if let Some(leader) = leader {
            leader.finish(Some(Arc::new(shared)));
        }
        tracing::debug!(key = %outgoing.key, "stored response validated (304)");
        status.stored = true;
        let now_ms = Entry::now_ms();
        self.answer(entry, method, headers, XCache::Refresh, status, now_ms)
    }

    /// The origin's response for `outgoing`, of `status`, could not be stored, for `reason`:
    /// counted, and later requests for the key pass instead of waiting (hit-for-miss; only GETs
    /// join flights), unless the reason was what this request carried.
    fn not_stored(&self, outgoing: &Outgoing, reason: &'static str, status: StatusCode) {
        self.engine.counters.record(Event::NotStored(reason));
        if outgoing.method == http::Method::GET && !NotStored::is_about_the_request(reason) {
            self.engine
                .flights
                .remember_uncacheable(outgoing.key.as_str(), status);
        }
    }

    /// Validates a stale response in a spawned task, once per key at a time.
    pub(super) fn validate_in_background<S, ReqB, ResB>(
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
            let Some(_lease) = fleet::lead_refresh(&cache.engine, &outgoing.key).await else {
                return; // another instance is validating it
            };
            let (key, headers) = (&outgoing.key, &outgoing.headers);
            // Only a response this request could have been answered with (one that varies on
            // its renaming fields, when it carries some) makes the refresh needless.
            if cache
                .engine
                .lookup_shared(key, headers, &outgoing.renaming, Entry::now_ms())
                .await
                .is_some_and(|found| found.entry.stored_at_ms > entry.stored_at_ms)
            {
                return; // another instance validated it before this one took the lease
            }
            let leader = Some(leader);
            let validation =
                cache.validate(inner, parts, body, outgoing, entry, Forward::Stale, leader);
            // Drain the body so that the origin's response runs to completion.
            if let Ok(response) = validation.await {
                let _ = http_body_util::BodyExt::collect(response.into_body()).await;
            }
        });
    }

    /// The stored response, when it may answer in place of a failed origin.
    fn usable_on_error(
        &self,
        fallback: Option<Entry>,
        outgoing: &Outgoing,
        now_ms: u64,
    ) -> Option<Entry> {
        let entry = fallback?;
        let cc = self.response_cc(&entry_response(&entry).headers);
        let staleness = entry.age(now_ms).saturating_sub(entry.ttl);
        stale_on_error(&cc, &outgoing.cc, staleness).then_some(entry)
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
        let now_ms = Entry::now_ms();
        self.answer(stale, method, headers, XCache::Stale, status, now_ms)
    }
}
