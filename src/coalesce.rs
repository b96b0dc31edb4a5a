//! Per-key single flight: concurrent misses for one key run the handler once.
//!
//! The first request for a key becomes the leader; later ones wait for it, up to a time limit. The leader
//! shares its result only if that result was stored (so it is fit for everyone with the same key), and
//! releases its waiters however it ends: completed, failed, panicked or cancelled (its guard's `Drop`).
//! A waiter that is released without a result, or that waits too long, runs the handler itself.
//!
//! Hit-for-miss: a key whose response could not be stored (it sets a cookie, is private, too
//! large, ...) is remembered for a while, and requests for it pass straight to the handler
//! instead of queueing behind a leader whose answer they could not take anyway.

use crate::policy::answers_the_request_alone;
use http::StatusCode;
use moka::sync::Cache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// The most keys remembered as uncacheable: a client can make many, so they are bounded.
const MOST_UNCACHEABLE: u64 = 10_000;

#[derive(Clone)]
enum State<T> {
    Pending,
    Done(Option<T>),
}

/// The in-flight calls of one engine, by key.
pub(crate) struct Flights<T> {
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<State<T>>>>>,
    /// Keys whose last response could not be stored; `None` when hit-for-miss is off.
    uncacheable: Option<Cache<String, ()>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights::new(Duration::ZERO)
    }
}

/// The role of one request in the flight for its key.
pub(crate) enum Join<T> {
    Leader(Leader<T>),
    Waiter(Waiter<T>),
    /// The key's last response could not be stored: no flight, straight to the handler.
    Pass,
}

impl<T> Flights<T> {
    /// Flights remembering uncacheable keys for `hit_for_miss` (zero: not at all).
    pub(crate) fn new(hit_for_miss: Duration) -> Self {
        let uncacheable = (!hit_for_miss.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(MOST_UNCACHEABLE)
                .time_to_live(hit_for_miss)
                .build()
        });
        Flights {
            inflight: Arc::default(),
            uncacheable,
        }
    }

    /// `key`'s response, of `status`, could not be stored: its next requests pass for a while.
    /// Not after a server error, which may be passing, nor after a client error that answers
    /// one request's range, conditions or form (which a client can provoke at will): such a key
    /// keeps its single flight.
    pub(crate) fn remember_uncacheable(&self, key: &str, status: StatusCode) {
        let says_nothing_of_the_key = status.is_server_error() || answers_the_request_alone(status);
        if let (Some(uncacheable), false) = (&self.uncacheable, says_nothing_of_the_key) {
            uncacheable.insert(key.to_owned(), ());
        }
    }

    /// `key`'s response was stored: its requests share flights again.
    pub(crate) fn forget_uncacheable(&self, key: &str) {
        if let Some(uncacheable) = &self.uncacheable {
            if uncacheable.contains_key(key) {
                uncacheable.invalidate(key);
            }
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Joins the flight for `key`, leading it when none is under way; passes it when the key is
    /// remembered as uncacheable.
    pub(crate) fn join(&self, key: &str) -> Join<T> {
        if self
            .uncacheable
            .as_ref()
            .is_some_and(|uncacheable| uncacheable.contains_key(key))
        {
            return Join::Pass;
        }
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = inflight.get(key) {
            return Join::Waiter(Waiter { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(State::Pending);
        inflight.insert(key.to_owned(), rx);
        Join::Leader(Leader {
            inflight: Arc::clone(&self.inflight),
            key: key.to_owned(),
            tx: Some(tx),
            held: None,
        })
    }

    /// Number of keys with a call under way.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }
}

/// Held by the request that runs the handler; dropping it unfinished releases the waiters empty-handed.
pub(crate) struct Leader<T> {
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<State<T>>>>>,
    key: String,
    tx: Option<watch::Sender<State<T>>>,
    /// Released with the leader (the fleet's lease on the same work).
    held: Option<Box<dyn std::any::Any + Send>>,
}

impl<T> Leader<T> {
    /// Keeps `guard` until the leader finishes or is dropped, wherever it goes (a response
    /// still arriving takes it to the task that stores it).
    pub(crate) fn hold(&mut self, guard: impl Send + 'static) {
        self.held = Some(Box::new(guard));
    }

    /// Hands `result` to every waiter, and to every request that joins until the leader
    /// finishes (a response whose body is still arriving: they read it as it comes).
    pub(crate) fn publish(&self, result: T) {
        if let Some(tx) = &self.tx {
            tx.send_replace(State::Done(Some(result)));
        }
    }

    /// Hands `result` to every waiter (`None`: nothing to share, each runs the handler itself).
    pub(crate) fn finish(mut self, result: Option<T>) {
        self.release(result);
    }

    fn release(&mut self, result: Option<T>) {
        if let Some(tx) = self.tx.take() {
            self.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.key);
            tx.send_replace(State::Done(result));
        }
    }
}

impl<T> Drop for Leader<T> {
    fn drop(&mut self) {
        self.release(None);
    }
}

/// Waits for a leader.
pub(crate) struct Waiter<T> {
    rx: watch::Receiver<State<T>>,
}

impl<T: Clone> Waiter<T> {
    /// The leader's result, or `None` when it had nothing to share or did not finish within `limit`.
    pub(crate) async fn wait(mut self, limit: Duration) -> Option<T> {
        let done = self.rx.wait_for(|state| matches!(state, State::Done(_)));
        match tokio::time::timeout(limit, done).await {
            Ok(Ok(state)) => match &*state {
                State::Done(result) => result.clone(),
                State::Pending => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(flights: &Flights<u32>, key: &str) -> Leader<u32> {
        match flights.join(key) {
            Join::Leader(leader) => leader,
            _ => panic!("expected to lead {key}"),
        }
    }

    fn wait(flights: &Flights<u32>, key: &str) -> Waiter<u32> {
        match flights.join(key) {
            Join::Waiter(waiter) => waiter,
            _ => panic!("expected to wait on {key}"),
        }
    }

    #[tokio::test]
    async fn a_published_result_reaches_waiters_and_later_joiners_until_the_leader_finishes() {
        let flights = Flights::<u32>::default();
        let leader = lead(&flights, "k");
        let early = wait(&flights, "k");
        leader.publish(1);
        assert_eq!(early.wait(Duration::from_secs(1)).await, Some(1));
        let late = wait(&flights, "k");
        assert_eq!(late.wait(Duration::from_secs(1)).await, Some(1));
        leader.finish(Some(2));
        drop(lead(&flights, "k"));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn an_uncacheable_key_passes_until_stored_or_forgotten() {
        let flights = Flights::new(Duration::from_millis(300));
        let leader = lead(&flights, "k");
        let waiter = wait(&flights, "k");
        flights.remember_uncacheable("k", StatusCode::OK);
        drop(leader);
        assert_eq!(waiter.wait(Duration::from_secs(1)).await, None);
        assert!(matches!(flights.join("k"), Join::Pass));
        assert!(
            matches!(flights.join("k"), Join::Pass),
            "no flight is opened"
        );
        drop(lead(&flights, "other"));
        flights.forget_uncacheable("k");
        drop(lead(&flights, "k"));
        flights.remember_uncacheable("k", StatusCode::INTERNAL_SERVER_ERROR);
        drop(lead(&flights, "k"));
        // One request's client error (its range, conditions, form) says nothing of the key.
        for status in [
            StatusCode::PRECONDITION_FAILED,
            StatusCode::RANGE_NOT_SATISFIABLE,
        ] {
            flights.remember_uncacheable("k", status);
            drop(lead(&flights, "k"));
        }
        flights.remember_uncacheable("k", StatusCode::NOT_FOUND);
        assert!(matches!(flights.join("k"), Join::Pass));
        tokio::time::sleep(Duration::from_millis(400)).await;
        drop(lead(&flights, "k"));
        // Off: nothing is remembered.
        let off: Flights<u32> = Flights::default();
        off.remember_uncacheable("k", StatusCode::OK);
        drop(lead(&off, "k"));
    }

    #[test]
    fn the_uncacheable_keys_clients_can_make_are_bounded() {
        let flights: Flights<u32> = Flights::new(Duration::from_secs(60));
        for i in 0..2 * MOST_UNCACHEABLE {
            flights.remember_uncacheable(&format!("k{i}"), StatusCode::OK);
        }
        let uncacheable = flights.uncacheable.as_ref().unwrap();
        uncacheable.run_pending_tasks();
        assert!(
            uncacheable.entry_count() <= MOST_UNCACHEABLE,
            "{} keys kept",
            uncacheable.entry_count()
        );
    }

    #[tokio::test]
    async fn waiters_receive_the_leaders_result_and_the_key_is_freed() {
        let flights = Flights::default();
        let leader = lead(&flights, "k");
        let waiters: Vec<_> = (0..3).map(|_| wait(&flights, "k")).collect();
        let other = lead(&flights, "other");
        leader.finish(Some(7));
        for waiter in waiters {
            assert_eq!(waiter.wait(Duration::from_secs(1)).await, Some(7));
        }
        assert_eq!(flights.len(), 1);
        drop(other);
        assert_eq!(flights.len(), 0);
        drop(lead(&flights, "k"));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_waiters_without_a_result() {
        let flights = Flights::default();
        let leader = lead(&flights, "k");
        let waiter = wait(&flights, "k");
        drop(leader);
        assert_eq!(waiter.wait(Duration::from_secs(1)).await, None);
    }

    #[tokio::test]
    async fn a_panicking_leader_releases_waiters() {
        let flights = Flights::default();
        let leader = lead(&flights, "k");
        let waiter = wait(&flights, "k");
        let task = tokio::spawn(async move {
            let _leader = leader;
            panic!("handler failed");
        });
        assert!(task.await.is_err());
        assert_eq!(waiter.wait(Duration::from_secs(1)).await, None);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded() {
        let flights = Flights::default();
        let _leader = lead(&flights, "k");
        let waiter = wait(&flights, "k");
        assert_eq!(waiter.wait(Duration::from_millis(50)).await, None);
    }
}
