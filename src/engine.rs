//! The shared engine behind every cached route: backend, settings, entry lookup and storage.
//!
//! Every backend call here passes the circuit breaker and is bounded by the latency budget. Every
//! failure (error, time-out, open breaker, undecodable or foreign entry) becomes a miss or a dropped
//! store: the cache is never the reason a request fails. (One exception cannot be avoided: a
//! large response read from storage as it is sent is cut short if the backend fails part-way.)

use crate::apart::{ApartBody, WindowRead, WindowSource, Windows};
use crate::backends::{
    transfer_allowance, write_nonce, Backend, BackendError, Lease, APART_READ_WINDOW,
};
use crate::body::{BoxError, CacheBody};
use crate::breaker::Breaker;
use crate::coalesce::{Flights, Leader};
use crate::entry::{Apart, Content, Entry, StoredBody, StoredResponse};
use crate::fill::{Fill, FillBudget, Length, Received, Unstorable};
use crate::key::{variant_key, CacheKey};
use crate::service::SendBody;
use crate::stats::{CacheStats, Counters, Event};
use crate::storable::Storable;
use crate::tags::{decode_marker, encode_marker, marker_key, verdict, PurgeKind, Verdict};
use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, StatusCode};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Engine-wide settings, set through [`CacheMiddleware`](crate::CacheMiddleware)'s builder methods.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub namespace: String,
    pub max_body_size: usize,
    pub max_request_body_size: usize,
    pub honor_request_cache_control: bool,
    pub cacheable_statuses: Vec<StatusCode>,
    pub backend_timeout: Duration,
    pub coalesce_timeout: Duration,
    /// Whether instances sharing the backend take a lease before running a handler for a key.
    pub fleet_single_flight: bool,
    /// The last part of a route entry's lifetime in which hits refresh it (0: never early).
    pub early_refresh: f64,
    /// The response field that names an entry's tags (removed before responses reach clients).
    pub tag_header: HeaderName,
    /// How long a key whose response could not be stored skips single flight (0: never).
    pub hit_for_miss: Duration,
    /// Bytes that responses being received while streamed (fills) may hold at once (0: none).
    pub fill_max_bytes: u64,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
    /// Whether the fronts give the scheme the application reads ([`crate::RequestScheme`]), so
    /// that a URL's keys are one per scheme.
    pub keys_by_scheme: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            namespace: "cache".to_owned(),
            max_body_size: 1024 * 1024,
            max_request_body_size: 64 * 1024,
            honor_request_cache_control: true,
            cacheable_statuses: vec![StatusCode::OK],
            backend_timeout: Duration::from_millis(100),
            coalesce_timeout: Duration::from_secs(10),
            fleet_single_flight: true,
            early_refresh: 0.0,
            tag_header: HeaderName::from_static("surrogate-key"),
            hit_for_miss: Duration::from_secs(10),
            fill_max_bytes: 256 * 1024 * 1024,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            keys_by_scheme: false,
        }
    }
}

/// How long a purge marker is kept: longer than any entry it may have to hide.
const MARKER_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

/// The times of this instance's purges of one tag (0: none).
#[derive(Debug, Default, Clone, Copy)]
struct LocalPurges {
    soft_ms: u64,
    hard_ms: u64,
}

impl LocalPurges {
    fn marks(self) -> [(PurgeKind, u64); 2] {
        [
            (PurgeKind::Soft, self.soft_ms),
            (PurgeKind::Hard, self.hard_ms),
        ]
    }
}

/// Where a response whose body is arriving will be stored, and how long it is kept.
pub(crate) struct FillPlan {
    pub fill: Arc<Fill>,
    /// The stored entry's encoding up to its body, which the fill continues.
    pub before_body: BytesMut,
    primary: CacheKey,
    /// The variant marker stored at `primary` when the response varies.
    marker: Option<Entry>,
    keep: Duration,
    vary: Vec<String>,
    /// Where the response entry goes when it varies (otherwise at `primary`).
    variant: Option<CacheKey>,
    /// The response's status (a key whose response cannot be stored is remembered with it).
    status: StatusCode,
}

/// A stored response shared with the requests that waited for it.
pub(crate) struct Shared {
    /// Always holds a response; while `fill` is set, only its head (the body is arriving).
    pub entry: Entry,
    /// Request fields the response varies on, and the variant key of the leader's request.
    pub vary: Vec<String>,
    pub variant: Option<CacheKey>,
    /// The body as it arrives from the origin, before the response is stored.
    pub fill: Option<Arc<Fill>>,
}

impl Shared {
    /// Whether the response was stored varying on each of `names` (see `Engine::lookup`).
    pub(crate) fn varies_on(&self, names: &[String]) -> bool {
        names.iter().all(|name| self.vary.contains(name))
    }

    fn stored(entry: Entry, vary: Vec<String>, variant: Option<CacheKey>) -> Self {
        Shared {
            entry,
            vary,
            variant,
            fill: None,
        }
    }
}

/// When a stored response's age was zero, how long it is fresh, and how long it is kept after.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetime {
    pub born_ms: u64,
    pub ttl: Duration,
    pub grace: Duration,
}

impl Lifetime {
    /// The age at `now_ms` of a response born at `born_ms` (zero if the clock went backwards).
    pub(crate) fn age_at(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.born_ms))
    }
}

/// What a lookup found.
pub(crate) enum Found {
    Fresh(Entry),
    /// Past its TTL but within the grace period the route allows.
    Stale(Entry),
    Nothing,
}

impl Found {
    fn of(found: Option<Shared>, now_ms: u64) -> Found {
        match found {
            Some(found) if found.entry.is_fresh(now_ms) => Found::Fresh(found.entry),
            Some(found) => Found::Stale(found.entry),
            None => Found::Nothing,
        }
    }
}

/// Where a lookup may take its answer from.
#[derive(Clone, Copy)]
enum Reading {
    /// Wherever the backend answers soonest (a copy it keeps in this process): every request.
    Nearest,
    /// The store itself: what another instance may have stored a moment ago, which a copy in
    /// this process learns of only when the store's report of the change arrives.
    Latest,
}

/// The engine as `CacheMiddleware` hands it to the route layers and `CacheHandle`, in request
/// extensions.
#[derive(Clone)]
pub(crate) struct EngineHandle(pub Arc<Engine>);

pub(crate) struct Engine {
    pub backend: Arc<dyn Backend>,
    pub config: EngineConfig,
    pub flights: Flights<Arc<Shared>>,
    pub counters: Counters,
    breaker: Breaker,
    /// Set once the backend said it has no leases (not shared between instances).
    leases_unsupported: AtomicBool,
    /// This instance's purges, by kind and tag: in effect here at once, whatever the backend
    /// keeps (an in-process store may evict a marker).
    purges: Mutex<HashMap<String, LocalPurges>>,
    /// What fills in progress hold, within `config.fill_max_bytes`.
    pub fill_budget: FillBudget,
    /// The windows of large responses stored apart that their readers share.
    windows: Windows,
}

impl Engine {
    pub(crate) fn new(backend: Arc<dyn Backend>, config: EngineConfig) -> Self {
        Engine {
            backend,
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            flights: Flights::new(config.hit_for_miss),
            fill_budget: FillBudget::new(config.fill_max_bytes),
            windows: Windows::new(),
            config,
            counters: Counters::default(),
            leases_unsupported: AtomicBool::new(false),
            purges: Mutex::default(),
        }
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.counters
            .snapshot(self.breaker.state(), self.breaker.opened_total())
    }

    /// The response stored for `primary` (following a variant marker with the request's headers):
    /// fresh, or stale within `grace`, as of `now_ms`.
    ///
    /// A backend that answers at once (an in-process store, or a tier that holds what is asked)
    /// is read without building the waiting lookup's future; that one is boxed, so the caller's
    /// own future (moved into its box on every request) stays small.
    ///
    /// `varied` names fields the request carries that the answer must have been stored varying
    /// on (route mode's renaming fields): an entry stored without them did not look at them.
    pub(crate) async fn lookup(
        self: &Arc<Self>,
        primary: &CacheKey,
        headers: &HeaderMap,
        varied: &[String],
        grace: Duration,
        now_ms: u64,
    ) -> Found {
        let found = match self.find_now(primary, headers, grace, now_ms) {
            Some(found) => found,
            None => Box::pin(self.find(primary, headers, grace, now_ms, Reading::Nearest)).await,
        };
        Found::of(found.filter(|found| found.varies_on(varied)), now_ms)
    }

    /// The fresh response stored for `primary`, as a leader would share it (with the fields it
    /// varies on): what another instance stored while this one waited. Read from the store
    /// itself: an instance gives its lease back once it has stored, so whoever takes the lease
    /// next must see that write.
    pub(crate) async fn lookup_shared(
        self: &Arc<Self>,
        primary: &CacheKey,
        headers: &HeaderMap,
        varied: &[String],
        now_ms: u64,
    ) -> Option<Shared> {
        self.find(primary, headers, Duration::ZERO, now_ms, Reading::Latest)
            .await
            .filter(|found| found.entry.is_fresh(now_ms) && found.varies_on(varied))
    }

    /// The response stored for `primary`, following a variant marker with `headers`.
    async fn find(
        self: &Arc<Self>,
        primary: &CacheKey,
        headers: &HeaderMap,
        grace: Duration,
        now_ms: u64,
        reading: Reading,
    ) -> Option<Shared> {
        let entry = self.fetch(primary, grace, now_ms, reading).await?;
        match &entry.content {
            Content::Response(_) => Some(Shared::stored(entry, Vec::new(), None)),
            Content::Variants(names) => {
                let variant = variant_key(&self.config.namespace, primary, names, headers);
                let found = self.fetch(&variant, grace, now_ms, reading).await?;
                found.response()?;
                Some(Shared::stored(found, names.clone(), Some(variant)))
            }
            Content::Apart(_) => None, // `fetch` reads what is stored apart
        }
    }

    /// [`find`](Self::find) when every read answers at once; `None` when one would wait.
    fn find_now(
        &self,
        primary: &CacheKey,
        headers: &HeaderMap,
        grace: Duration,
        now_ms: u64,
    ) -> Option<Option<Shared>> {
        let Some(entry) = self.fetch_now(primary, grace, now_ms)? else {
            return Some(None);
        };
        Some(match &entry.content {
            Content::Response(_) => Some(Shared::stored(entry, Vec::new(), None)),
            Content::Variants(names) => {
                let variant = variant_key(&self.config.namespace, primary, names, headers);
                let found = self.fetch_now(&variant, grace, now_ms)?;
                found
                    .filter(|found| found.response().is_some())
                    .map(|found| Shared::stored(found, names.clone(), Some(variant)))
            }
            Content::Apart(_) => None, // `fetch_now` reads what is stored apart
        })
    }

    /// Whether a response shared by a leader fits this request: it varies on each of `varied`
    /// (as [`lookup`](Self::lookup) asks), and the request has the same values of every field
    /// it varies on.
    pub(crate) fn shared_fits(
        &self,
        shared: &Shared,
        primary: &CacheKey,
        headers: &HeaderMap,
        varied: &[String],
    ) -> bool {
        if !shared.varies_on(varied) {
            return false;
        }
        match &shared.variant {
            None => true,
            Some(variant) => {
                *variant == variant_key(&self.config.namespace, primary, &shared.vary, headers)
            }
        }
    }

    /// Stores `response`, born at `born_ms`, fresh for `ttl` and kept `grace` longer for stale
    /// serving, with its `tags`; with varying fields, as a variant below a marker at `primary`.
    /// Only a [`Storable`] can be stored: the storability decision is the one way to make one.
    pub(crate) async fn store_with(
        &self,
        primary: &CacheKey,
        vary: Vec<String>,
        headers: &HeaderMap,
        response: Storable,
        lifetime: Lifetime,
        tags: Vec<String>,
    ) -> Shared {
        let keep = lifetime.ttl.saturating_add(lifetime.grace);
        let mut response = response.into_response();
        // A large body read from storage as it is sent (one a 304 validated) is written again
        // whole: read once, here.
        if let StoredBody::Apart(apart) = &response.body {
            match apart.clone().read_whole().await {
                Ok(whole) => response.body = StoredBody::Whole(whole),
                Err(error) => tracing::debug!(key = %primary, %error, "stored response unreadable"),
            }
        }
        let (shared, marker) = self.shared_for(primary, vary, headers, response, lifetime, tags);
        match (&marker, &shared.variant) {
            (Some(marker), Some(variant)) => {
                futures_util::future::join(
                    self.put(primary, marker, keep),
                    self.put(variant, &shared.entry, keep),
                )
                .await;
            }
            _ => self.put(primary, &shared.entry, keep).await,
        }
        shared
    }

    /// Begins storing a response whose body of `length` bytes (`None`: not announced) is still
    /// to arrive: what requests joining meanwhile share (the head, and the body as it arrives),
    /// and the plan that [`store_filled`](Self::store_filled) completes; `None` (counted) when
    /// the fills in progress hold the fill budget, and the response is to stream through
    /// unstored. Only a [`Storable`] head can begin one. A body of announced length takes its
    /// share of the budget now; one of unknown length as it grows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn begin_fill(
        &self,
        primary: &CacheKey,
        vary: Vec<String>,
        headers: &HeaderMap,
        head: Storable,
        lifetime: Lifetime,
        tags: Vec<String>,
        length: Option<u32>,
    ) -> Option<(Shared, FillPlan)> {
        let Some(permit) = self.fill_budget.reserve(length.map_or(0, u64::from)) else {
            self.counters.record(Event::NotStored("fill-budget"));
            return None;
        };
        let status = head.response().status;
        let (mut shared, marker) =
            self.shared_for(primary, vary, headers, head.into_response(), lifetime, tags);
        let fill_length = match length {
            Some(length) => Length::Announced(length),
            None => Length::AtMost(self.config.max_body_size as u64),
        };
        let fill = Fill::new(fill_length, permit);
        shared.fill = Some(Arc::clone(&fill));
        let plan = FillPlan {
            fill,
            before_body: shared.entry.encode_before_body(length),
            status,
            primary: primary.clone(),
            marker,
            keep: lifetime.ttl.saturating_add(lifetime.grace),
            vary: shared.vary.clone(),
            variant: shared.variant.clone(),
        };
        Some((shared, plan))
    }

    /// Streams `body` through the fill that [`begin_fill`](Self::begin_fill) began: shares it
    /// with the requests joining `leader` (they read it from its start), receives it in a task
    /// of its own (see [`fill_in_background`](Self::fill_in_background)); the stored head, and a
    /// body that reads the fill for this request.
    pub(crate) fn stream_fill<B: SendBody, Out: http_body::Body>(
        self: &Arc<Self>,
        (shared, plan): (Shared, FillPlan),
        body: B,
        flight: Option<CacheKey>,
        leader: Option<Leader<Arc<Shared>>>,
    ) -> (StoredResponse, CacheBody<Out>) {
        let head = shared.entry.clone();
        let reader = plan.fill.reader();
        if let Some(leader) = &leader {
            leader.publish(Arc::new(shared));
        }
        self.fill_in_background(plan, body, flight, leader);
        let head = head.into_response().expect("stored entries hold responses");
        (head, CacheBody::filling(reader))
    }

    /// Receives `body` into the fill that `plan` began, in a task of its own (whatever becomes
    /// of the clients reading it), then stores it and hands it to the requests waiting on
    /// `leader`. A body that fails or falls short stores nothing. Once stored, `flight` is no
    /// longer remembered as uncacheable. A body of unannounced length that cannot be stored
    /// (too large, or no room in the fill budget) lets the waiting requests go and is handed on
    /// to the readers it has.
    fn fill_in_background<B: SendBody>(
        self: &Arc<Self>,
        plan: FillPlan,
        body: B,
        flight: Option<CacheKey>,
        leader: Option<Leader<Arc<Shared>>>,
    ) {
        let engine = Arc::clone(self);
        tokio::spawn(async move {
            let key = plan.primary.clone();
            let fill = Arc::clone(&plan.fill);
            let encoded = match fill.receive(&plan.before_body, body).await {
                Received::Complete(encoded) => encoded,
                Received::Failed(failing) => {
                    tracing::debug!(key = %key, "response body failed or fell short while received; not stored");
                    engine.counters.record(Event::NotStored("body-failed"));
                    drop(leader); // the flight goes before its readers hear it failed
                    return drop(failing);
                }
                Received::Unstorable(why, rest) => {
                    let reason = why.as_str();
                    tracing::debug!(key = %key, reason, "response body handed on, not stored");
                    engine.counters.record(Event::NotStored(reason));
                    if let (Some(flight), Unstorable::TooLarge) = (&flight, why) {
                        engine
                            .flights
                            .remember_uncacheable(flight.as_str(), plan.status);
                    }
                    drop(leader); // requests still waiting go on their own
                    return rest.hand_on().await;
                }
            };
            let Some(shared) = engine.store_filled(plan, encoded).await else {
                engine.counters.record(Event::NotStored("body-failed"));
                return;
            };
            if let Some(flight) = flight {
                engine.flights.forget_uncacheable(flight.as_str());
            }
            if let Some(leader) = leader {
                leader.finish(Some(Arc::new(shared)));
            }
        });
    }

    /// Stores a filled response, `encoded` as it arrived (no copy); what it shares with the
    /// requests that wait on the flight. `None` (nothing stored) if it does not decode.
    async fn store_filled(&self, plan: FillPlan, encoded: Bytes) -> Option<Shared> {
        let entry = Entry::decode(&encoded).ok()?;
        entry.response()?;
        if let Some(marker) = &plan.marker {
            self.put(&plan.primary, marker, plan.keep).await;
        }
        let key = plan.variant.as_ref().unwrap_or(&plan.primary);
        self.put_encoded(key, &entry, encoded, plan.keep).await;
        Some(Shared::stored(entry, plan.vary, plan.variant))
    }

    /// What storing `response` shares with waiting requests, and the variant marker it writes at
    /// `primary` when it varies.
    pub(crate) fn shared_for(
        &self,
        primary: &CacheKey,
        vary: Vec<String>,
        headers: &HeaderMap,
        response: StoredResponse,
        Lifetime {
            born_ms: stored_at_ms,
            ttl,
            ..
        }: Lifetime,
        tags: Vec<String>,
    ) -> (Shared, Option<Entry>) {
        // The tags go with the response; a variant marker needs none (purging the variants is
        // enough).
        let entry_for = |key: &CacheKey, tags, content| Entry {
            fingerprint: *key.digest(),
            stored_at_ms,
            ttl,
            tags,
            content,
        };
        if vary.is_empty() {
            let entry = entry_for(primary, tags, Content::Response(response));
            return (Shared::stored(entry, vary, None), None);
        }
        let variant = variant_key(&self.config.namespace, primary, &vary, headers);
        let marker = entry_for(primary, Vec::new(), Content::Variants(vary.clone()));
        let entry = entry_for(&variant, tags, Content::Response(response));
        (Shared::stored(entry, vary, Some(variant)), Some(marker))
    }

    /// Asks the backend for the fleet-wide lease `key` (lasting the coalescing limit). `None`
    /// when it cannot say (unsupported, failed, breaker open): the caller runs the work itself.
    pub(crate) async fn acquire_lease(&self, key: &CacheKey, token: &str) -> Option<Lease> {
        if !self.config.fleet_single_flight || self.leases_unsupported.load(Ordering::Relaxed) {
            return None;
        }
        let ttl = self.config.coalesce_timeout;
        match self
            .call(
                "lease",
                self.backend.acquire_lease(key.as_str(), token, ttl),
            )
            .await?
        {
            Ok(Lease::Unsupported) => {
                self.leases_unsupported.store(true, Ordering::Relaxed);
                None
            }
            Ok(lease) => Some(lease),
            Err(error) => {
                tracing::debug!(key = %key, %error, "fleet lease unavailable; running here");
                None
            }
        }
    }

    /// Gives the lease back (a failure leaves it to expire on its own).
    pub(crate) async fn release_lease(&self, key: &CacheKey, token: &str) {
        if let Some(Err(error)) = self
            .call("release", self.backend.release_lease(key.as_str(), token))
            .await
        {
            tracing::debug!(key = %key, %error, "fleet lease not released; it expires on its own");
        }
    }

    /// Purges every entry carrying `tag`, here at once and, through the backend, in every
    /// instance sharing it.
    pub(crate) async fn purge_tag(&self, tag: &str, kind: PurgeKind) -> Result<(), BackendError> {
        let now_ms = Entry::now_ms();
        {
            let mut purges = self.purges.lock().unwrap_or_else(PoisonError::into_inner);
            let marks = purges.entry(tag.to_owned()).or_default();
            let at = match kind {
                PurgeKind::Soft => &mut marks.soft_ms,
                PurgeKind::Hard => &mut marks.hard_ms,
            };
            *at = (*at).max(now_ms);
        }
        let key = marker_key(&self.config.namespace, kind, tag);
        tracing::info!(tag, kind = ?kind, "purging tag");
        let marker = self
            .backend
            .set(&key, encode_marker(now_ms), MARKER_LIFETIME);
        self.call_or_refuse("purge", marker).await
    }

    /// What the purges of its tags say about `entry`. Markers that cannot be read make it a miss:
    /// an entry that may have been purged is not served.
    async fn purge_verdict(&self, entry: &Entry) -> Verdict {
        let keys = self.marker_keys(entry);
        if let Some(verdict) = self.purge_verdict_now(entry, &keys) {
            return verdict;
        }
        match self.call("get", self.backend.get_many(&keys)).await {
            Some(Ok(stored)) => self.verdict_from(entry, stored),
            _ => Verdict::Gone,
        }
    }

    /// [`purge_verdict`](Self::purge_verdict) when the markers (`keys`, from `marker_keys`)
    /// answer at once (an in-process store, with no budget or timer); `None` when they would be
    /// waited for.
    fn purge_verdict_now(&self, entry: &Entry, keys: &[String]) -> Option<Verdict> {
        let ready: Result<Vec<_>, _> = keys
            .iter()
            .map(|key| self.backend.get_ready(key))
            .collect::<Option<_>>()?;
        Some(match ready {
            Ok(stored) => self.verdict_from(entry, stored),
            Err(_) => Verdict::Gone,
        })
    }

    /// The keys of the soft and hard purge markers of each of `entry`'s tags, in that order.
    fn marker_keys(&self, entry: &Entry) -> Vec<String> {
        entry
            .tags
            .iter()
            .flat_map(|tag| [PurgeKind::Soft, PurgeKind::Hard].map(|kind| (kind, tag)))
            .map(|(kind, tag)| marker_key(&self.config.namespace, kind, tag))
            .collect()
    }

    /// The verdict of this instance's purges and of the `stored` markers (as `marker_keys` lists
    /// them) on `entry`.
    fn verdict_from(&self, entry: &Entry, stored: Vec<Option<Bytes>>) -> Verdict {
        let local: Vec<(PurgeKind, u64)> = {
            let purges = self.purges.lock().unwrap_or_else(PoisonError::into_inner);
            entry
                .tags
                .iter()
                .filter_map(|tag| purges.get(tag.as_str()))
                .flat_map(|marks| marks.marks())
                .collect()
        };
        let kinds = entry
            .tags
            .iter()
            .flat_map(|_| [PurgeKind::Soft, PurgeKind::Hard]);
        let shared = kinds
            .zip(stored)
            .filter_map(|(kind, value)| Some((kind, decode_marker(&value?)?)));
        verdict(entry.stored_at_ms, local.into_iter().chain(shared))
    }

    /// Removes the entry at `key` (and so every variant below it), and a response it stored
    /// apart.
    pub(crate) async fn remove(&self, key: &CacheKey) -> Result<(), BackendError> {
        let apart = match self.backend.store_apart_from() {
            Some(_) => self.apart_at(key).await,
            None => None,
        };
        self.call_or_refuse("delete", self.backend.delete(key.as_str()))
            .await?;
        if let Some(apart) = apart {
            // Left behind if this fails: it expires with the entry's lifetime.
            let _ = self
                .call("delete", self.backend.delete(&apart.key(key.as_str())))
                .await;
        }
        Ok(())
    }

    /// Where the entry at `key` stored its response apart, if it did (as the store holds it now:
    /// another instance may have written it a moment ago).
    async fn apart_at(&self, key: &CacheKey) -> Option<Apart> {
        let stored = self
            .call("get", self.backend.get_latest(key.as_str()))
            .await?;
        match Entry::decode(&stored.ok()??).ok()?.content {
            Content::Apart(apart) => Some(apart),
            _ => None,
        }
    }

    /// Makes the response stored at `key` stale now (a soft purge of one URL), keeping it for its
    /// freshness lifetime from now so that it can be served within a stale window while it is
    /// refreshed. A variant marker is removed instead: its variants cannot be listed. What was
    /// done, or `None` when nothing is stored there. Read from the store itself, not a copy in
    /// this process, which may not know yet of a write another instance made a moment ago.
    pub(crate) async fn soften(&self, key: &CacheKey) -> Result<Option<PurgeKind>, BackendError> {
        let found = self
            .call_or_refuse("get", self.backend.get_latest(key.as_str()))
            .await?;
        let Some(bytes) = found else {
            return Ok(None);
        };
        let mut entry = match Entry::decode(&bytes) {
            Ok(entry) if entry.fingerprint == *key.digest() => entry,
            // Unreadable, or another key's: not worth keeping.
            _ => return self.remove(key).await.map(|()| Some(PurgeKind::Hard)),
        };
        if matches!(entry.content, Content::Variants(_)) {
            return self.remove(key).await.map(|()| Some(PurgeKind::Hard));
        }
        let keep = entry.ttl.max(Duration::from_secs(1));
        entry.ttl = entry.ttl.min(entry.age(Entry::now_ms()));
        // Decoded from stored bytes, it is all in memory.
        let Some(encoded) = entry.encode() else {
            return self.remove(key).await.map(|()| Some(PurgeKind::Hard));
        };
        self.call_or_refuse("set", self.backend.set(key.as_str(), encoded, keep))
            .await?;
        Ok(Some(PurgeKind::Soft))
    }

    async fn fetch(
        self: &Arc<Self>,
        key: &CacheKey,
        grace: Duration,
        now_ms: u64,
        reading: Reading,
    ) -> Option<Entry> {
        // Boxed: the timer and the backend's future stay out of the request's own future.
        let found = match reading {
            Reading::Nearest => match self.backend.get_ready(key.as_str()) {
                Some(found) => found,
                None => Box::pin(self.call("get", self.backend.get(key.as_str()))).await?,
            },
            Reading::Latest => {
                Box::pin(self.call("get", self.backend.get_latest(key.as_str()))).await?
            }
        };
        let entry = self.entry_from(key, found)?;
        let verdict = if entry.tags.is_empty() {
            Verdict::Valid
        } else {
            Box::pin(self.purge_verdict(&entry)).await
        };
        let entry = self.judged(key, entry, verdict, grace, now_ms)?;
        match entry.content {
            Content::Apart(apart) => Box::pin(self.read_apart(key, entry, apart)).await,
            _ => Some(entry),
        }
    }

    /// `entry` (at `key`) with the response it stored apart: its head, read with the first
    /// window of its encoding, and a body that reads the rest as it is sent. Only that write's
    /// response (same key, same time of storing), never another's.
    async fn read_apart(
        self: &Arc<Self>,
        key: &CacheKey,
        entry: Entry,
        apart: Apart,
    ) -> Option<Entry> {
        let at = apart.key(key.as_str());
        let total = usize::try_from(apart.length).ok()?;
        let window = APART_READ_WINDOW.min(total);
        let first = match self.windows.kept(&window_name(&at, 0, window)) {
            // Read lately for another client: its last byte, read now, says it is still stored.
            Some(kept) => {
                let last = self.backend.get_range(&at, total.checked_sub(1)?, 1);
                let last = self.found_bytes(key, self.call("get", last).await?)?;
                (last.len() == 1).then_some(kept)?
            }
            None => {
                self.found_bytes(key, self.read_window(&at, 0, window, Gate::Breaker).await?)?
            }
        };
        let (whole, body_at) = match Entry::decode_head(&first, total) {
            Ok(decoded) => decoded,
            Err(error) => {
                tracing::debug!(key = %key, %error, "the response stored apart is unreadable; serving as a miss");
                return None;
            }
        };
        if whole.fingerprint != *key.digest() || whole.stored_at_ms != entry.stored_at_ms {
            tracing::debug!(key = %key, "the response stored apart is another write's; serving as a miss");
            return None;
        }
        let Content::Response(mut response) = whole.content else {
            return None;
        };
        if body_at.len > response.body.len() {
            let source = Arc::new(ApartSource {
                engine: Arc::clone(self),
                key: at,
            });
            let held = response.body.whole().cloned().unwrap_or_default();
            let body = ApartBody::new(source, body_at.start, body_at.len, held);
            response.body = StoredBody::Apart(body);
        }
        // The entry at the key says how long it lives (a soft purge rewrites only that).
        Some(Entry {
            content: Content::Response(response),
            ..entry
        })
    }

    /// [`fetch`](Self::fetch) when the backend answers at once; `None` when it would wait.
    fn fetch_now(&self, key: &CacheKey, grace: Duration, now_ms: u64) -> Option<Option<Entry>> {
        let found = self.backend.get_ready(key.as_str())?;
        let Some(entry) = self.entry_from(key, found) else {
            return Some(None);
        };
        let verdict = if entry.tags.is_empty() {
            Verdict::Valid
        } else {
            self.purge_verdict_now(&entry, &self.marker_keys(&entry))?
        };
        let Some(entry) = self.judged(key, entry, verdict, grace, now_ms) else {
            return Some(None);
        };
        if let Content::Apart(_) = entry.content {
            return None; // read as it is sent, by `fetch`
        }
        Some(Some(entry))
    }

    /// The entry the backend gave for `key`, when it is readable and `key`'s own.
    fn entry_from(
        &self,
        key: &CacheKey,
        found: Result<Option<Bytes>, BackendError>,
    ) -> Option<Entry> {
        let bytes = self.found_bytes(key, found)?;
        let entry = match Entry::decode(&bytes) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::debug!(key = %key, %error, "stored entry unreadable; serving as a miss");
                return None;
            }
        };
        if entry.fingerprint != *key.digest() {
            tracing::warn!(key = %key, "stored entry belongs to other key material; serving as a miss");
            return None;
        }
        Some(entry)
    }

    /// What a read for `key` found; a failure is counted and logged, and found nothing.
    fn found_bytes(
        &self,
        key: &CacheKey,
        found: Result<Option<Bytes>, BackendError>,
    ) -> Option<Bytes> {
        match found {
            Ok(found) => found,
            Err(error) => {
                self.counters.record(Event::LookupFailed);
                tracing::debug!(key = %key, %error, "cache lookup failed; serving as a miss");
                None
            }
        }
    }

    /// `entry` as its purges leave it, unless purged or kept past `grace` after its lifetime.
    fn judged(
        &self,
        key: &CacheKey,
        mut entry: Entry,
        verdict: Verdict,
        grace: Duration,
        now_ms: u64,
    ) -> Option<Entry> {
        match verdict {
            Verdict::Valid => {}
            Verdict::Stale => entry.ttl = entry.ttl.min(entry.age(now_ms)),
            Verdict::Gone => {
                tracing::debug!(key = %key, "stored entry was purged; serving as a miss");
                return None;
            }
        }
        if entry.age(now_ms) >= entry.ttl.saturating_add(grace) {
            tracing::debug!(key = %key, "stored entry expired");
            return None;
        }
        Some(entry)
    }

    async fn put(&self, key: &CacheKey, entry: &Entry, keep: Duration) {
        let Some(encoded) = entry.encode() else {
            tracing::debug!(key = %key, "response read from storage could not be read whole; not stored again");
            self.counters.record(Event::StoreFailed);
            return;
        };
        self.put_encoded(key, entry, encoded, keep).await;
    }

    /// Stores `entry`, `encoded`. A response larger than the backend reads within its budget is
    /// stored apart first, then the entry that says where it is: a read never finds an entry whose
    /// response is not there yet.
    async fn put_encoded(&self, key: &CacheKey, entry: &Entry, encoded: Bytes, keep: Duration) {
        let large = self
            .backend
            .store_apart_from()
            .is_some_and(|from| encoded.len() > from);
        let stored = if large && entry.response().is_some() {
            self.put_apart(key, entry, encoded, keep).await
        } else {
            self.write(key.as_str(), encoded, keep).await
        };
        if stored {
            self.counters.record(Event::Stored);
            tracing::debug!(key = %key, ttl_secs = entry.ttl.as_secs(), "response stored");
        }
    }

    /// Stores the response apart (its whole encoding), then under `key` the entry that says
    /// where it is.
    async fn put_apart(
        &self,
        key: &CacheKey,
        entry: &Entry,
        encoded: Bytes,
        keep: Duration,
    ) -> bool {
        let apart = Apart {
            length: encoded.len() as u64,
            nonce: write_nonce(),
        };
        if !self.write(&apart.key(key.as_str()), encoded, keep).await {
            return false;
        }
        let pointer = Entry {
            fingerprint: entry.fingerprint,
            stored_at_ms: entry.stored_at_ms,
            ttl: entry.ttl,
            tags: entry.tags.clone(),
            content: Content::Apart(apart),
        };
        match pointer.encode() {
            Some(encoded) => self.write(key.as_str(), encoded, keep).await,
            None => false,
        }
    }

    /// Writes one value; whether it was stored (a failure is counted and logged here).
    async fn write(&self, key: &str, encoded: Bytes, keep: Duration) -> bool {
        let extra = transfer_allowance(encoded.len());
        match self
            .call_within("set", extra, self.backend.set(key, encoded, keep))
            .await
        {
            Some(Ok(())) => true,
            Some(Err(error)) => {
                self.counters.record(Event::StoreFailed);
                tracing::debug!(key = %key, %error, "cache store failed; response served uncached");
                false
            }
            None => {
                self.counters.record(Event::StoreFailed);
                false
            }
        }
    }

    /// [`call`](Self::call) for what its caller must hear of (purges, removals): an open breaker
    /// is a failure too.
    async fn call_or_refuse<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        self.call(op, call)
            .await
            .unwrap_or_else(|| Err(BackendError::Connection("circuit open".into())))
    }

    /// Runs a backend call through the breaker and within the latency budget. `None`: the breaker
    /// is open and the backend was not called.
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Option<Result<T, BackendError>> {
        self.call_within(op, Duration::ZERO, call).await
    }

    /// [`call`](Self::call), with `extra` time on top of the latency budget (a large value).
    async fn call_within<T>(
        &self,
        op: &'static str,
        extra: Duration,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Option<Result<T, BackendError>> {
        if !self.breaker.allow() {
            return None;
        }
        Some(self.timed(op, extra, call).await)
    }

    /// A backend call within the latency budget and `extra`, its outcome told to the breaker,
    /// whatever the breaker's state: for a response already on its way (a window of a large
    /// body), which can only be completed or cut short.
    async fn timed<T>(
        &self,
        op: &'static str,
        extra: Duration,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let limit = self.config.backend_timeout + extra;
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::Timeout(limit)),
        };
        #[cfg(feature = "metrics")]
        metrics::histogram!("cache_backend_duration_seconds", "op" => op, "backend" => self.backend.name())
            .record(started.elapsed().as_secs_f64());
        #[cfg(not(feature = "metrics"))]
        let _ = op;
        match &result {
            Ok(_) => self.breaker.on_success(),
            // A rejected value (too large for the backend) says nothing about the backend's health.
            Err(BackendError::Rejected(_)) => self.breaker.on_success(),
            Err(_) => self.breaker.on_failure(),
        }
        result
    }
}

/// Whether a backend call waits on the breaker.
#[derive(Clone, Copy)]
enum Gate {
    /// Not made while the breaker is open (a lookup).
    Breaker,
    /// Made whatever the breaker's state (part of a response already under way).
    None,
}

impl Engine {
    /// Bytes `start..start + len` of the value at `at`, shared with its other readers: one read
    /// of a window at a time, then kept a while (see [`Windows`]). Within the latency budget and
    /// time for the window's size.
    async fn read_window(&self, at: &str, start: usize, len: usize, gate: Gate) -> WindowRead {
        let extra = transfer_allowance(len);
        let limit = self.config.backend_timeout + extra;
        let read = || async {
            let read = self.backend.get_range(at, start, len);
            match gate {
                Gate::Breaker => self.call_within("get", extra, read).await,
                Gate::None => Some(self.timed("get", extra, read).await),
            }
        };
        self.windows
            .read(window_name(at, start, len), limit, read)
            .await
    }
}

/// The windows of a response stored apart, read through the engine (within the latency budget
/// and time for their size, their failures told to the breaker).
struct ApartSource {
    engine: Arc<Engine>,
    /// The backend key of the stored encoding.
    key: String,
}

impl WindowSource for ApartSource {
    fn read(&self, start: usize, len: usize) -> BoxFuture<'static, Result<Bytes, BoxError>> {
        let engine = Arc::clone(&self.engine);
        let key = self.key.clone();
        Box::pin(async move {
            let read = match engine.windows.kept(&window_name(&key, start, len)) {
                Some(window) => Some(Ok(Some(window))),
                // Already on its way to a client: read even with the breaker open.
                None => engine.read_window(&key, start, len, Gate::None).await,
            };
            match read {
                Some(Ok(Some(window))) if window.len() == len => Ok(window),
                Some(Ok(_)) | None => Err("the response stored apart is gone or cut short".into()),
                Some(Err(error)) => {
                    engine.counters.record(Event::LookupFailed);
                    Err(error.into())
                }
            }
        })
    }
}

/// The name of bytes `start..start + len` of the value stored at `key`, among shared windows.
fn window_name(key: &str, start: usize, len: usize) -> String {
    format!("{key}@{start}+{len}")
}
