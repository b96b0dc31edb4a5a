//! Early refresh: a hot entry is refreshed in the background shortly before it expires, so that
//! steady traffic on it never meets an expired entry (and a stampede on its handler).
//!
//! In the last `fraction` of an entry's lifetime, each hit refreshes it with a probability that
//! grows from 0 at the start of that window to 1 at expiry: an entry hit often is refreshed early
//! in the window, one hit rarely usually expires as it would have. This is the idea of
//! probabilistic early expiration (Vattani, Chierichetti and Lowenstein, VLDB 2015) with a window
//! set by the lifetime, as the time a refresh takes is not stored with the entry. Duplicates are
//! removed by single flight in the instance and the fleet lease across instances.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Whether a hit on an entry of lifetime `ttl`, now `age` old, refreshes it; `draw` is uniform in
/// `[0, 1)`. A `fraction` of 0 (or anything not above 0) never refreshes early.
fn refresh_early(fraction: f64, ttl: Duration, age: Duration, draw: f64) -> bool {
    if fraction.is_nan() || fraction <= 0.0 {
        return false;
    }
    let window = ttl.mul_f64(fraction.min(1.0));
    let left = ttl.saturating_sub(age);
    if window.is_zero() || left >= window {
        return false;
    }
    let progress = 1.0 - left.as_secs_f64() / window.as_secs_f64();
    draw < progress
}

/// Whether a hit at `now_ms` on an entry of lifetime `ttl`, `age` old, refreshes it early.
pub(crate) fn refresh_early_now(fraction: f64, ttl: Duration, age: Duration, now_ms: u64) -> bool {
    // Checked first so that a hit makes no draw while early refresh is off.
    fraction > 0.0 && refresh_early(fraction, ttl, age, draw(now_ms))
}

/// A uniform draw in `[0, 1)`: std's hasher keys are random per process and change per call.
fn draw(now_ms: u64) -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(100);

    fn at(age_secs: u64, draw: f64) -> bool {
        refresh_early(0.1, TTL, Duration::from_secs(age_secs), draw)
    }

    #[test]
    fn never_before_the_window_nor_when_off() {
        assert!(!at(0, 0.0));
        assert!(!at(90, 0.0), "the window is the last 10 s");
        assert!(!refresh_early(0.0, TTL, Duration::from_secs(99), 0.0));
        assert!(!refresh_early(f64::NAN, TTL, Duration::from_secs(99), 0.0));
    }

    #[test]
    fn the_chance_grows_through_the_window() {
        assert!(at(91, 0.05) && !at(91, 0.15), "10% of the way in");
        assert!(at(95, 0.45) && !at(95, 0.55), "half-way");
        assert!(at(100, 0.999), "at expiry, always");
    }
}
