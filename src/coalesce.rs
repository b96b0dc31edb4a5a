//! Per-key single flight: concurrent misses for one key run the handler once.
//!
//! The first request for a key becomes the leader; later ones wait for it, up to a time limit. The leader
//! shares its result only if that result was stored (so it is fit for everyone with the same key), and
//! releases its waiters however it ends: completed, failed, panicked or cancelled (its guard's `Drop`).
//! A waiter that is released without a result, or that waits too long, runs the handler itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
enum State<T> {
    Pending,
    Done(Option<T>),
}

/// The in-flight calls of one engine, by key.
pub(crate) struct Flights<T> {
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<State<T>>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            inflight: Arc::default(),
        }
    }
}

/// The role of one request in the flight for its key.
pub(crate) enum Join<T> {
    Leader(Leader<T>),
    Waiter(Waiter<T>),
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Joins the flight for `key`, leading it when none is under way.
    pub(crate) fn join(&self, key: &str) -> Join<T> {
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
}

impl<T> Leader<T> {
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
            Join::Waiter(_) => panic!("expected to lead {key}"),
        }
    }

    fn wait(flights: &Flights<u32>, key: &str) -> Waiter<u32> {
        match flights.join(key) {
            Join::Waiter(waiter) => waiter,
            Join::Leader(_) => panic!("expected to wait on {key}"),
        }
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
