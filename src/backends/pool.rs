//! A fixed set of lazily opened connections shared by the network backends.
//!
//! Nothing connects until first use, so a backend can be built while its server is down. A slot whose
//! connection fails is emptied and reopened on a later call; after a failed connect the slot waits
//! (100 ms, doubling up to 5 s) before trying again, so a server that is down costs a fast error, not a
//! connection attempt per request. The server coming back is picked up without a restart.

use super::{BackendError, BuildError};
use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, OwnedMutexGuard};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Connect<C> = Box<dyn Fn() -> BoxFuture<'static, Result<C, BackendError>> + Send + Sync>;

pub(crate) struct Pool<C> {
    slots: Vec<Arc<Mutex<Slot<C>>>>,
    next: AtomicUsize,
    connect: Connect<C>,
    connect_timeout: Duration,
}

struct Slot<C> {
    conn: Option<C>,
    /// Bumped each time a connection is opened, so a stale failure report cannot drop a fresh one.
    generation: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// Exclusive use of one slot's connection for one operation (Memcached's connections are not
/// multiplexed).
#[cfg_attr(not(feature = "memcached"), allow(dead_code))]
pub(crate) struct Lease<C> {
    guard: OwnedMutexGuard<Slot<C>>,
}

#[cfg_attr(not(feature = "memcached"), allow(dead_code))]
impl<C> Lease<C> {
    pub(crate) fn conn(&mut self) -> &mut C {
        self.guard
            .conn
            .as_mut()
            .expect("a lease always holds a connection")
    }

    /// Drops the connection after a failure; the slot reconnects on a later call.
    pub(crate) fn discard(mut self) {
        self.guard.conn = None;
    }
}

/// Identifies the connection a shared checkout handed out (Redis's connections are multiplexed).
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Ticket {
    slot: usize,
    generation: u64,
}

/// Checks the options every pooled backend has.
pub(crate) fn check_options(
    max_connections: usize,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<(), BuildError> {
    if max_connections == 0 {
        return Err(BuildError::invalid("max_connections", "must be at least 1"));
    }
    if timeout.is_zero() || connect_timeout.is_zero() {
        return Err(BuildError::invalid("timeout", "must be longer than zero"));
    }
    Ok(())
}

impl<C: Send + 'static> Pool<C> {
    pub(crate) fn new(
        size: usize,
        connect_timeout: Duration,
        connect: impl Fn() -> BoxFuture<'static, Result<C, BackendError>> + Send + Sync + 'static,
    ) -> Self {
        let slots = (0..size.max(1))
            .map(|_| {
                Arc::new(Mutex::new(Slot {
                    conn: None,
                    generation: 0,
                    retry_at: None,
                    backoff: FIRST_BACKOFF,
                }))
            })
            .collect();
        Pool {
            slots,
            next: AtomicUsize::new(0),
            connect: Box::new(connect),
            connect_timeout,
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn size(&self) -> usize {
        self.slots.len()
    }

    /// Exclusive use of a connection: a free slot if there is one, else the next in turn.
    #[cfg_attr(not(feature = "memcached"), allow(dead_code))]
    pub(crate) async fn lease(&self) -> Result<Lease<C>, BackendError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let mut guard = None;
        for i in 0..n {
            if let Ok(free) = Arc::clone(&self.slots[(start + i) % n]).try_lock_owned() {
                guard = Some(free);
                break;
            }
        }
        let mut guard = match guard {
            Some(guard) => guard,
            None => Arc::clone(&self.slots[start % n]).lock_owned().await,
        };
        self.ensure_connected(&mut guard).await?;
        Ok(Lease { guard })
    }

    /// Opens the slot's connection if it has none and its back-off has passed.
    async fn ensure_connected(&self, slot: &mut Slot<C>) -> Result<(), BackendError> {
        if slot.conn.is_some() {
            return Ok(());
        }
        if let Some(retry_at) = slot.retry_at {
            let now = Instant::now();
            if now < retry_at {
                return Err(BackendError::Connection(format!(
                    "server unreachable; next connection attempt in {} ms",
                    (retry_at - now).as_millis()
                )));
            }
        }
        let attempt = tokio::time::timeout(self.connect_timeout, (self.connect)()).await;
        match attempt {
            Ok(Ok(conn)) => {
                slot.conn = Some(conn);
                slot.generation += 1;
                slot.retry_at = None;
                slot.backoff = FIRST_BACKOFF;
                Ok(())
            }
            Ok(Err(error)) => Err(self.note_connect_failure(slot, error)),
            Err(_) => {
                let error = BackendError::Timeout(self.connect_timeout);
                Err(self.note_connect_failure(slot, error))
            }
        }
    }

    fn note_connect_failure(&self, slot: &mut Slot<C>, error: BackendError) -> BackendError {
        slot.retry_at = Some(Instant::now() + slot.backoff);
        slot.backoff = (slot.backoff * 2).min(MAX_BACKOFF);
        error
    }

    /// The live connections with their tickets, for health checks. Slots busy right now are skipped
    /// (they are in use, which checks them well enough).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn snapshot(&self) -> Vec<(C, Ticket)>
    where
        C: Clone,
    {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, mutex)| {
                let guard = mutex.try_lock().ok()?;
                let conn = guard.conn.clone()?;
                Some((
                    conn,
                    Ticket {
                        slot,
                        generation: guard.generation,
                    },
                ))
            })
            .collect()
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl<C: Clone + Send + 'static> Pool<C> {
    /// A clone of a connection that multiplexes requests (one slot is not held for the operation).
    pub(crate) async fn checkout_shared(&self) -> Result<(C, Ticket), BackendError> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut guard = self.slots[slot].lock().await;
        self.ensure_connected(&mut guard).await?;
        let conn = guard.conn.clone().expect("connected");
        Ok((
            conn,
            Ticket {
                slot,
                generation: guard.generation,
            },
        ))
    }

    /// Reports that the connection behind `ticket` failed; the slot reconnects on a later call.
    pub(crate) async fn discard(&self, ticket: Ticket) {
        let mut guard = self.slots[ticket.slot].lock().await;
        if guard.generation == ticket.generation {
            guard.conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counting_pool(size: usize, fail: Arc<AtomicU32>, attempts: Arc<AtomicU32>) -> Pool<u32> {
        Pool::new(size, Duration::from_secs(1), move || {
            let fail = Arc::clone(&fail);
            let attempts = Arc::clone(&attempts);
            Box::pin(async move {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                if fail.load(Ordering::SeqCst) > 0 {
                    Err(BackendError::Connection("refused".into()))
                } else {
                    Ok(n)
                }
            })
        })
    }

    #[tokio::test]
    async fn connections_open_lazily_and_are_reused() {
        let attempts = Arc::new(AtomicU32::new(0));
        let pool = counting_pool(2, Arc::default(), Arc::clone(&attempts));
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
        for _ in 0..10 {
            pool.lease().await.unwrap();
        }
        assert!(attempts.load(Ordering::SeqCst) <= 2);
    }

    #[tokio::test]
    async fn a_failed_connect_backs_off_then_recovers() {
        let fail = Arc::new(AtomicU32::new(1));
        let attempts = Arc::new(AtomicU32::new(0));
        let pool = counting_pool(1, Arc::clone(&fail), Arc::clone(&attempts));
        assert!(pool.lease().await.is_err());
        // Within the back-off: no new attempt, a fast error.
        assert!(pool.lease().await.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        fail.store(0, Ordering::SeqCst);
        tokio::time::sleep(FIRST_BACKOFF + Duration::from_millis(20)).await;
        assert!(pool.lease().await.is_ok());
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn discarding_a_stale_ticket_keeps_the_newer_connection() {
        let attempts = Arc::new(AtomicU32::new(0));
        let pool = counting_pool(1, Arc::default(), Arc::clone(&attempts));
        let (_, old) = pool.checkout_shared().await.unwrap();
        pool.discard(old).await;
        let (conn, _) = pool.checkout_shared().await.unwrap();
        assert_eq!(conn, 1, "reconnected after the discard");
        pool.discard(old).await;
        let (conn, _) = pool.checkout_shared().await.unwrap();
        assert_eq!(conn, 1, "the stale ticket did not drop the new connection");
    }

    #[tokio::test]
    async fn exclusive_leases_never_exceed_the_pool_size() {
        let pool = Arc::new(counting_pool(3, Arc::default(), Arc::default()));
        let leases: Vec<_> = futures_util::future::join_all((0..3).map(|_| pool.lease())).await;
        assert!(leases.iter().all(Result::is_ok));
        let waiting = tokio::time::timeout(Duration::from_millis(50), pool.lease()).await;
        assert!(waiting.is_err(), "a fourth lease waits for a free slot");
        drop(leases);
        assert!(pool.lease().await.is_ok());
    }
}
