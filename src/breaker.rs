//! A circuit breaker around the backend.
//!
//! Closed: calls go through; `threshold` failures in a row open it. Open: no calls for `cooldown`,
//! requests go straight to the handler. Then one call is let through as a probe (half-open): success
//! closes the breaker, failure opens it for another cool-down. A probe whose caller vanished
//! (cancelled request) is replaced after a further cool-down, so the breaker cannot stick half-open.
//! Each state change is logged once.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's state, as reported to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Backend calls go through.
    Closed,
    /// Backend calls are skipped until the cool-down ends.
    Open,
    /// One probe call is under way.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

pub(crate) struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    /// Open: when probing may start. Half-open: when the probe counts as lost. In ms since `epoch`.
    deadline_ms: AtomicU64,
    opened_total: AtomicU64,
    threshold: u32,
    cooldown: Duration,
    epoch: Instant,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            deadline_ms: AtomicU64::new(0),
            opened_total: AtomicU64::new(0),
            threshold: threshold.max(1),
            cooldown,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn later_ms(&self) -> u64 {
        self.now_ms() + self.cooldown.as_millis() as u64
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Times the breaker has opened since start.
    pub(crate) fn opened_total(&self) -> u64 {
        self.opened_total.load(Ordering::Relaxed)
    }

    /// Whether a backend call may be made now. In the open state, the first caller after the
    /// cool-down becomes the probe.
    pub(crate) fn allow(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            state => {
                let now = self.now_ms();
                if now < self.deadline_ms.load(Ordering::Acquire) {
                    return false;
                }
                let claimed = self
                    .state
                    .compare_exchange(state, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if claimed {
                    self.deadline_ms.store(self.later_ms(), Ordering::Release);
                    export_state(HALF_OPEN);
                    if state == OPEN {
                        tracing::info!("cache backend circuit half-open: probing the backend");
                    }
                }
                claimed
            }
        }
    }

    pub(crate) fn on_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.state.load(Ordering::Acquire) != CLOSED
            && self.state.swap(CLOSED, Ordering::AcqRel) != CLOSED
        {
            tracing::warn!("cache backend circuit closed: the backend answers again");
            export_state(CLOSED);
        }
    }

    pub(crate) fn on_failure(&self) {
        match self.state.load(Ordering::Acquire) {
            CLOSED => {
                let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures >= self.threshold {
                    self.open(CLOSED, failures);
                }
            }
            HALF_OPEN => self.open(HALF_OPEN, self.failures.load(Ordering::Relaxed)),
            _ => {}
        }
    }

    fn open(&self, from: u8, failures: u32) {
        self.deadline_ms.store(self.later_ms(), Ordering::Release);
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            export_state(OPEN);
            if from == CLOSED {
                self.opened_total.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                metrics::counter!("cache_breaker_opened_total").increment(1);
                tracing::warn!(
                    failures,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "cache backend circuit open: serving uncached until the backend recovers"
                );
            } else {
                tracing::debug!("cache backend probe failed; circuit stays open");
            }
        }
    }
}

/// The state as the `cache_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
fn export_state(state: u8) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("cache_breaker_state").set(f64::from(state));
    #[cfg(not(feature = "metrics"))]
    let _ = state;
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_millis(50);

    #[test]
    fn opens_after_the_threshold_of_consecutive_failures() {
        let breaker = Breaker::new(3, COOLDOWN);
        breaker.on_failure();
        breaker.on_failure();
        breaker.on_success();
        breaker.on_failure();
        breaker.on_failure();
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "a success resets the count"
        );
        breaker.on_failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow());
        assert_eq!(breaker.opened_total(), 1);
    }

    #[test]
    fn after_the_cooldown_one_probe_goes_through_and_success_closes() {
        let breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure();
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        assert!(breaker.allow(), "the first caller probes");
        assert!(!breaker.allow(), "only one probe at a time");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.on_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow());
    }

    #[test]
    fn a_failed_probe_opens_for_another_cooldown() {
        let breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure();
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        assert!(breaker.allow());
        breaker.on_failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(!breaker.allow());
        assert_eq!(
            breaker.opened_total(),
            1,
            "re-opening after a probe is not a new outage"
        );
    }

    #[test]
    fn a_lost_probe_is_replaced_after_another_cooldown() {
        let breaker = Breaker::new(1, COOLDOWN);
        breaker.on_failure();
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        assert!(breaker.allow());
        // The probe's caller never reports back.
        std::thread::sleep(COOLDOWN + Duration::from_millis(10));
        assert!(breaker.allow(), "a new probe replaces the lost one");
    }
}
