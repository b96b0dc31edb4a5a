//! The fill budget: the bytes that responses streamed while they are stored may hold at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The bytes that fills in progress may hold at once: a fill of announced length reserves it
/// until it is dropped with its last reader; one of unannounced length grows its share as it
/// grows.
pub(crate) struct FillBudget {
    max: u64,
    held: Arc<AtomicU64>,
}

/// A share of the budget, given back when dropped.
pub(crate) struct FillPermit {
    bytes: u64,
    max: u64,
    held: Arc<AtomicU64>,
}

/// Takes `bytes` from what `held` counts, unless that would pass `max`.
fn take(held: &AtomicU64, max: u64, bytes: u64) -> bool {
    held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
        held.checked_add(bytes).filter(|&after| after <= max)
    })
    .is_ok()
}

impl FillBudget {
    pub(crate) fn new(max: u64) -> Self {
        FillBudget {
            max,
            held: Arc::default(),
        }
    }

    /// A permit for `bytes`, unless the fills in progress already hold too much.
    pub(crate) fn reserve(&self, bytes: u64) -> Option<FillPermit> {
        take(&self.held, self.max, bytes).then(|| FillPermit {
            bytes,
            max: self.max,
            held: Arc::clone(&self.held),
        })
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}

impl FillPermit {
    /// Takes `bytes` more from the same budget; `false`, and nothing taken, when that would pass
    /// it.
    pub(crate) fn grow(&mut self, bytes: u64) -> bool {
        let grown = take(&self.held, self.max, bytes);
        if grown {
            self.bytes += bytes;
        }
        grown
    }
}

impl Drop for FillPermit {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_what_would_pass_it_and_takes_back_what_is_dropped() {
        let budget = FillBudget::new(100);
        let first = budget.reserve(60).expect("within the budget");
        assert!(budget.reserve(41).is_none(), "60 + 41 would pass 100");
        let second = budget.reserve(40).expect("60 + 40 fits exactly");
        assert_eq!(budget.held(), 100);
        drop(first);
        assert_eq!(budget.held(), 40);
        assert!(budget.reserve(u64::MAX).is_none(), "no overflow");
        drop(second);
        assert_eq!(budget.held(), 0);
        assert!(FillBudget::new(0).reserve(1).is_none(), "0: no fills");
        let mut growing = budget.reserve(0).expect("nothing yet");
        assert!(growing.grow(70) && growing.grow(30));
        assert!(!growing.grow(1), "100 + 1 would pass 100");
        assert_eq!(budget.held(), 100);
        drop(growing);
        assert_eq!(budget.held(), 0);
    }
}
