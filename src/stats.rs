//! Counters of what the cache did, and why it did not. Cheap atomics on the request path; a
//! [`CacheStats`] snapshot for operators (the demo's `/metrics/summary`, logs, tests).
//!
//! With the `metrics` feature, every count also goes to the `metrics` facade, for whatever recorder
//! the application installs (the demo exports Prometheus at `/metrics`):
//!
//! | metric | labels |
//! |---|---|
//! | `cache_requests_total` | `result`: hit, miss, refresh, stale, bypass |
//! | `cache_coalesced_total` | |
//! | `cache_bypass_total` | `reason` |
//! | `cache_not_stored_total` | `reason` |
//! | `cache_stores_total`, `cache_store_failures_total`, `cache_lookup_failures_total` | |
//! | `cache_breaker_state` (gauge: 0 closed, 1 open, 2 half-open), `cache_breaker_opened_total` | |
//! | `cache_backend_duration_seconds` (histogram) | `op`: get, set, delete; `backend` |

use crate::breaker::BreakerState;
use crate::policy::BypassReason;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub refreshes: AtomicU64,
    pub stale: AtomicU64,
    pub coalesced: AtomicU64,
    pub stores: AtomicU64,
    pub store_failures: AtomicU64,
    pub lookup_failures: AtomicU64,
    pub not_stored: AtomicU64,
    bypasses: [AtomicU64; BypassReason::ALL.len()],
}

/// One thing the cache did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Miss,
    Refresh,
    Stale,
    Coalesced,
    Stored,
    StoreFailed,
    LookupFailed,
    // The reason labels the exported metric.
    NotStored(#[cfg_attr(not(feature = "metrics"), allow(dead_code))] &'static str),
    Bypass(BypassReason),
}

impl Counters {
    pub(crate) fn record(&self, event: Event) {
        let counter = match event {
            Event::Hit => &self.hits,
            Event::Miss => &self.misses,
            Event::Refresh => &self.refreshes,
            Event::Stale => &self.stale,
            Event::Coalesced => &self.coalesced,
            Event::Stored => &self.stores,
            Event::StoreFailed => &self.store_failures,
            Event::LookupFailed => &self.lookup_failures,
            Event::NotStored(_) => &self.not_stored,
            Event::Bypass(reason) => &self.bypasses[reason.index()],
        };
        counter.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        export(event);
    }

    pub(crate) fn snapshot(&self, breaker: BreakerState, breaker_opened: u64) -> CacheStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&self.hits),
            misses: read(&self.misses),
            refreshes: read(&self.refreshes),
            stale: read(&self.stale),
            coalesced: read(&self.coalesced),
            stores: read(&self.stores),
            store_failures: read(&self.store_failures),
            lookup_failures: read(&self.lookup_failures),
            not_stored: read(&self.not_stored),
            bypasses: BypassReason::ALL
                .iter()
                .zip(&self.bypasses)
                .map(|(reason, count)| (reason.as_str(), read(count)))
                .collect(),
            breaker,
            breaker_opened,
        }
    }
}

#[cfg(feature = "metrics")]
fn export(event: Event) {
    use metrics::counter;
    match event {
        Event::Hit => counter!("cache_requests_total", "result" => "hit").increment(1),
        Event::Miss => counter!("cache_requests_total", "result" => "miss").increment(1),
        Event::Refresh => counter!("cache_requests_total", "result" => "refresh").increment(1),
        Event::Stale => counter!("cache_requests_total", "result" => "stale").increment(1),
        Event::Coalesced => counter!("cache_coalesced_total").increment(1),
        Event::Stored => counter!("cache_stores_total").increment(1),
        Event::StoreFailed => counter!("cache_store_failures_total").increment(1),
        Event::LookupFailed => counter!("cache_lookup_failures_total").increment(1),
        Event::NotStored(reason) => {
            counter!("cache_not_stored_total", "reason" => reason).increment(1)
        }
        Event::Bypass(reason) => {
            counter!("cache_requests_total", "result" => "bypass").increment(1);
            counter!("cache_bypass_total", "reason" => reason.as_str()).increment(1);
        }
    }
}

/// What the cache has done since start.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Responses served from the cache (including those shared by a concurrent identical request).
    pub hits: u64,
    /// Lookups that found nothing fresh: the handler ran.
    pub misses: u64,
    /// Requests that asked for a fresh response (`no-cache`).
    pub refreshes: u64,
    /// Stale responses served (stale-if-error, stale-while-revalidate).
    pub stale: u64,
    /// Of the hits: responses shared with requests that waited for an identical one in flight.
    pub coalesced: u64,
    /// Responses written to the backend.
    pub stores: u64,
    /// Writes that failed or ran out of time (the client got its response regardless).
    pub store_failures: u64,
    /// Reads that failed or ran out of time (served as misses).
    pub lookup_failures: u64,
    /// Responses not stored (status, `Set-Cookie`, `private`, too large, ...).
    pub not_stored: u64,
    /// Requests that bypassed the cache, by reason.
    pub bypasses: Vec<(&'static str, u64)>,
    /// The backend circuit breaker's state now.
    pub breaker: BreakerState,
    /// Times the breaker has opened.
    pub breaker_opened: u64,
}

impl CacheStats {
    /// Hits over hits and misses; `None` before the first lookup.
    pub fn hit_ratio(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }

    /// Bypasses of every reason.
    pub fn bypass_total(&self) -> u64 {
        self.bypasses.iter().map(|(_, n)| n).sum()
    }
}
