//! Fleet-wide single flight: of the instances sharing a backend, one runs the handler for a
//! missing key, and the others wait for the entry it stores.
//!
//! Within one instance, [`coalesce`](crate::coalesce) already elects one request per key; that
//! request then asks the backend for a lease on the key (`SET NX PX` with a token, in Redis).
//! Holding it, the instance runs the handler and gives the lease back once the entry is stored.
//! Without it, the instance polls for the entry (short pauses, growing to a cap) and tries the
//! lease again each time, so that a holder that died or hung is replaced once its lease expires.
//! Every wait is bounded by the coalescing limit (which is also the lease's lifetime), and every
//! failure to reach the backend means running the handler here: the fleet may do more work, but no
//! request fails or waits longer than that limit.

use crate::backends::Lease;
use crate::engine::{Engine, Shared};
use crate::entry::Entry;
use crate::key::CacheKey;
use http::HeaderMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(25);

/// What the request that leads its instance's flight does next.
pub(crate) enum Turn {
    /// Run the handler; with the fleet's lease when this instance took it.
    Run(Option<FleetLease>),
    /// Another instance stored the response meanwhile.
    Served(Box<Shared>),
}

/// Waits for this instance's turn to run the handler for `flight`, or for the entry another
/// instance stores at `primary`.
pub(crate) async fn take_turn(
    engine: &Arc<Engine>,
    flight: &CacheKey,
    primary: &CacheKey,
    headers: &HeaderMap,
    varied: &[String],
) -> Turn {
    let token = token();
    let deadline = Instant::now() + engine.config.coalesce_timeout;
    let mut pause = FIRST_PAUSE;
    let mut waited = false;
    loop {
        match engine.acquire_lease(flight, &token).await {
            Some(Lease::Acquired) => {
                let lease = FleetLease::new(engine, flight, token);
                // A holder gives its lease back once it has stored: the entry may have come
                // since this instance last looked (the lease is given back when dropped).
                if waited {
                    if let Some(served) = stored_meanwhile(engine, primary, headers, varied).await {
                        return served;
                    }
                }
                return Turn::Run(Some(lease));
            }
            Some(Lease::HeldElsewhere) => waited = true,
            Some(Lease::Unsupported) | None => return Turn::Run(None),
        }
        let now = Instant::now();
        if now >= deadline {
            tracing::debug!(key = %primary, "waited the coalescing limit for another instance; running here");
            return Turn::Run(None);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
        if let Some(served) = stored_meanwhile(engine, primary, headers, varied).await {
            return served;
        }
    }
}

/// The entry another instance stored at `primary`, if it has.
async fn stored_meanwhile(
    engine: &Arc<Engine>,
    primary: &CacheKey,
    headers: &HeaderMap,
    varied: &[String],
) -> Option<Turn> {
    let shared = engine
        .lookup_shared(primary, headers, varied, Entry::now_ms())
        .await?;
    tracing::debug!(key = %primary, "served the entry another instance stored");
    Some(Turn::Served(Box::new(shared)))
}

/// For a background refresh: the lease if no other instance is refreshing `flight` (`None`:
/// leave it to them), or `Some(None)` when the fleet cannot be asked.
pub(crate) async fn lead_refresh(
    engine: &Arc<Engine>,
    flight: &CacheKey,
) -> Option<Option<FleetLease>> {
    let token = token();
    match engine.acquire_lease(flight, &token).await {
        Some(Lease::Acquired) => Some(Some(FleetLease::new(engine, flight, token))),
        Some(Lease::HeldElsewhere) => None,
        Some(Lease::Unsupported) | None => Some(None),
    }
}

/// A lease this instance holds; given back when dropped (in the background: the response does
/// not wait for it). If the process dies first, the lease expires on its own.
pub(crate) struct FleetLease {
    engine: Arc<Engine>,
    key: CacheKey,
    token: String,
}

impl FleetLease {
    fn new(engine: &Arc<Engine>, key: &CacheKey, token: String) -> Self {
        FleetLease {
            engine: Arc::clone(engine),
            key: key.clone(),
            token,
        }
    }
}

impl Drop for FleetLease {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let engine = Arc::clone(&self.engine);
        let key = self.key.clone();
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move { engine.release_lease(&key, &token).await });
    }
}

/// A token no other holder uses: random per process, counted within it.
fn token() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    });
    format!("{process:016x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
