//! The connection that keeps the in-process tier consistent: it turns Redis's key tracking on
//! for this backend's prefix, applies every report to the tier, and checks itself; the tier
//! answers only while this connection is up (see `tier`).

use super::connect::Trackers;
use super::tier::{PING_EVERY, PING_LIMIT};
use super::Inner;
use redis::{PushInfo, PushKind, Value};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedSender};

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// Runs for as long as the backend lives.
pub(super) async fn track(backend: Weak<Inner>) {
    let mut retry = FIRST_RETRY;
    // Said once per outage (a server without key tracking would otherwise say it every retry).
    let mut said = false;
    loop {
        let Some(inner) = backend.upgrade() else {
            return;
        };
        let Some(tier) = inner.tier.clone() else {
            return;
        };
        let (reports, mut received) = mpsc::unbounded_channel();
        let mut trackers = match set_up(&inner, reports).await {
            Ok(trackers) => trackers,
            Err(reason) => {
                if said {
                    tracing::debug!(%reason, "key tracking unavailable; the in-process tier stays bypassed");
                } else {
                    tracing::warn!(target = %inner.options.describe(), %reason, "key tracking unavailable; the in-process tier stays bypassed until it is back");
                    said = true;
                }
                drop(inner);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };
        said = false;
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

/// Tracking connections with key tracking on, each to a master: what the tier needs to answer.
async fn set_up(inner: &Inner, reports: UnboundedSender<PushInfo>) -> Result<Trackers, String> {
    let opened = tokio::time::timeout(
        inner.options.connect_timeout,
        inner.connector.tracking_connections(reports),
    )
    .await;
    let mut trackers = match opened {
        Ok(Ok(trackers)) => trackers,
        Ok(Err(error)) => return Err(error.to_string()),
        Err(_) => return Err("no connection within the connect timeout".to_owned()),
    };
    let mut on = redis::cmd("CLIENT");
    on.arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(&inner.prefix);
    for connection in &mut trackers.connections {
        on.query_async::<()>(connection)
            .await
            .map_err(|error| format!("CLIENT TRACKING refused: {error}"))?;
    }
    // Only masters see every write.
    let checked = tokio::time::timeout(PING_LIMIT, trackers.still_true()).await;
    if !matches!(checked, Ok(true)) {
        return Err("the server is not a master, or the Cluster changed".to_owned());
    }
    Ok(trackers)
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
