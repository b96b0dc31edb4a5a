//! The in-process tier in front of Redis, kept consistent by Redis's own key tracking (RESP3
//! client-side caching, broadcast mode on this backend's key prefix).
//!
//! A dedicated connection asks Redis to report every change of a key under the prefix, by any
//! client; each report removes the key here. The tier answers only while that connection is known
//! to be alive: when it drops, or stops answering a ping, the tier is emptied and bypassed until
//! tracking is back (and emptied once more, since reports may have been missed meanwhile). So an
//! instance never serves a value that changed more than the detection bound ago
//! ([`PING_EVERY`] + [`PING_LIMIT`]).
//!
//! A read that misses the tier fetches the value with its remaining lifetime, and keeps it only if
//! no report arrived while it was on its way: a report for the key could otherwise be overtaken by
//! the old value it invalidates.

use bytes::Bytes;
use moka::sync::Cache;
use moka::Expiry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How often the tracking connection is checked (alive, and connected to the master).
pub(crate) const PING_EVERY: Duration = Duration::from_millis(500);
/// How long a check may take before the connection counts as lost.
pub(crate) const PING_LIMIT: Duration = Duration::from_millis(500);
/// How long the absence of a key is remembered (its creation is reported anyway).
const ABSENT_FOR: Duration = Duration::from_secs(600);
/// What one slot costs beyond its key and value (moka's node, the `Bytes` handle).
const SLOT_OVERHEAD: usize = 200;

#[derive(Clone)]
struct Slot {
    /// `None`: Redis has no such key.
    value: Option<Bytes>,
    lives: Duration,
}

struct SlotLifetime;

impl Expiry<String, Slot> for SlotLifetime {
    fn expire_after_create(&self, _: &String, slot: &Slot, _: Instant) -> Option<Duration> {
        Some(slot.lives)
    }
    fn expire_after_update(
        &self,
        _: &String,
        slot: &Slot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.lives)
    }
}

/// Values of Redis keys (full names), answered without a round trip while tracking is alive.
pub(crate) struct Tier {
    slots: Cache<String, Slot>,
    active: AtomicBool,
    /// Counts reports and (de)activations: a fill is kept only if it did not change meanwhile.
    changes: AtomicU64,
    /// Fills hold it shared, reports exclusively: a fill that saw no change cannot be overtaken
    /// by one between its check and its insert.
    gate: RwLock<()>,
}

/// What a read needs to fill the tier afterwards.
#[derive(Clone, Copy)]
pub(crate) struct FillTicket(u64);

impl Tier {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let slots = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, slot: &Slot| {
                let size = key.len() + slot.value.as_ref().map_or(0, Bytes::len) + SLOT_OVERHEAD;
                u32::try_from(size).unwrap_or(u32::MAX)
            })
            .expire_after(SlotLifetime)
            .build();
        Tier {
            slots,
            active: AtomicBool::new(false),
            changes: AtomicU64::new(0),
            gate: RwLock::new(()),
        }
    }

    /// The value of `key` if the tier vouches for it: `Some(None)` when Redis has no such key.
    pub(crate) fn get(&self, key: &str) -> Option<Option<Bytes>> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.slots.get(key).map(|slot| slot.value)
    }

    /// Taken before reading from Redis; `None` while the tier is bypassed.
    pub(crate) fn ticket(&self) -> Option<FillTicket> {
        self.active
            .load(Ordering::Acquire)
            .then(|| FillTicket(self.changes.load(Ordering::Acquire)))
    }

    /// Keeps what a read found (`lives`: its remaining lifetime in Redis, `None` if it has none),
    /// unless anything was reported since `ticket` was taken.
    pub(crate) fn fill(
        &self,
        ticket: FillTicket,
        key: &str,
        value: Option<Bytes>,
        lives: Option<Duration>,
    ) {
        let _shared = self.gate.read().unwrap_or_else(|e| e.into_inner());
        if !self.active.load(Ordering::Acquire) || self.changes.load(Ordering::Acquire) != ticket.0
        {
            return;
        }
        let lives = match (&value, lives) {
            (None, _) => ABSENT_FOR,
            (Some(_), Some(lives)) => lives,
            (Some(_), None) => ABSENT_FOR,
        };
        if lives.is_zero() {
            return;
        }
        self.slots.insert(key.to_owned(), Slot { value, lives });
    }

    /// Redis reported these keys changed (or this instance changed them).
    pub(crate) fn forget<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            self.slots.invalidate(key);
        }
    }

    /// Forgets everything (a flush was reported, or reports may have been missed).
    pub(crate) fn forget_all(&self) {
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.slots.invalidate_all();
    }

    /// Tracking is up (after a fresh start): the tier may answer.
    pub(crate) fn activate(&self) {
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.slots.invalidate_all();
        self.active.store(true, Ordering::Release);
    }

    /// Tracking is lost: bypass and forget until it is back.
    pub(crate) fn deactivate(&self) {
        let _exclusive = self.gate.write().unwrap_or_else(|e| e.into_inner());
        self.active.store(false, Ordering::Release);
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.slots.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_overtaken_by_a_report_is_not_kept_and_a_bypassed_tier_answers_nothing() {
        let tier = Tier::new(1 << 20);
        assert!(tier.ticket().is_none(), "bypassed until tracking is up");
        tier.activate();
        let ticket = tier.ticket().unwrap();
        tier.forget(["other"]);
        tier.fill(ticket, "k", Some(Bytes::from_static(b"old")), None);
        assert_eq!(
            tier.get("k"),
            None,
            "a report arrived while the read was on its way"
        );
        let ticket = tier.ticket().unwrap();
        tier.fill(
            ticket,
            "k",
            Some(Bytes::from_static(b"v")),
            Some(Duration::from_secs(5)),
        );
        tier.fill(tier.ticket().unwrap(), "gone", None, None);
        assert_eq!(tier.get("k"), Some(Some(Bytes::from_static(b"v"))));
        assert_eq!(tier.get("gone"), Some(None), "absence is remembered");
        tier.forget(["k"]);
        assert_eq!(tier.get("k"), None);
        tier.deactivate();
        assert_eq!(tier.get("gone"), None);
    }
}
