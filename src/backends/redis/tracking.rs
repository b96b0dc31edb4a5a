//! The connection that keeps the in-process tier consistent: it turns Redis's key tracking on
//! for this backend's prefix, applies every report to the tier, and checks itself; the tier
//! answers only while this connection is up (see `tier`).

use super::tier::{PING_EVERY, PING_LIMIT};
use super::Inner;
use redis::{PushInfo, PushKind, Value};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// Runs for as long as the backend lives.
pub(super) async fn track(backend: Weak<Inner>) {
    let mut retry = FIRST_RETRY;
    loop {
        let Some(inner) = backend.upgrade() else {
            return;
        };
        let Some(tier) = inner.tier.clone() else {
            return;
        };
        let (reports, mut received) = mpsc::unbounded_channel();
        let opened = tokio::time::timeout(
            inner.options.connect_timeout,
            inner.connector.tracking_connections(reports),
        )
        .await;
        let Ok(Ok(mut trackers)) = opened else {
            drop(inner);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(LAST_RETRY);
            continue;
        };
        let mut on = redis::cmd("CLIENT");
        on.arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&inner.prefix);
        let mut refused = None;
        for connection in &mut trackers.connections {
            if let Err(error) = on.query_async::<()>(connection).await {
                refused = Some(error);
            }
        }
        if let Some(error) = refused {
            tracing::warn!(%error, "Redis refused key tracking; the in-process tier stays bypassed");
            drop(inner);
            tokio::time::sleep(LAST_RETRY).await;
            continue;
        }
        // Only masters see every write.
        let checked = tokio::time::timeout(PING_LIMIT, trackers.still_true()).await;
        if !matches!(checked, Ok(true)) {
            drop(inner);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(LAST_RETRY);
            continue;
        }
        // Whatever the tier held may have changed unreported: it starts empty.
        tier.activate();
        tracing::info!(target = %inner.options.describe(), servers = trackers.connections.len(), "key tracking on: the in-process tier answers");
        retry = FIRST_RETRY;
        drop(inner);
        let mut checks = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                report = received.recv() => match report {
                    Some(PushInfo { kind: PushKind::Invalidate, data }) => apply(&tier, data),
                    Some(PushInfo { kind: PushKind::Disconnection, .. }) | None => break,
                    Some(_) => {}
                },
                _ = checks.tick() => {
                    if backend.strong_count() == 0 {
                        tier.deactivate();
                        return;
                    }
                    // Alive, still masters (a demoted one no longer sees the writes), and in a
                    // Cluster still the masters it has.
                    let checked = tokio::time::timeout(PING_LIMIT, trackers.still_true()).await;
                    if !matches!(checked, Ok(true)) {
                        break;
                    }
                }
            }
        }
        tier.deactivate();
        tracing::warn!("key tracking lost: the in-process tier is bypassed until it is back");
    }
}

/// An `invalidate` report: the keys that changed, or nothing (the database was flushed).
fn apply(tier: &super::tier::Tier, data: Vec<Value>) {
    match data.into_iter().next() {
        Some(Value::Array(keys)) => {
            let names: Vec<String> = keys
                .into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
                    Value::SimpleString(text) => Some(text),
                    _ => None,
                })
                .collect();
            tier.forget(names.iter().map(String::as_str));
        }
        _ => tier.forget_all(),
    }
}
