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
            inner.connector.tracking_connection(reports),
        )
        .await;
        let mut connection = match opened {
            Ok(Ok(Some(connection))) => connection,
            Ok(Ok(None)) => {
                tracing::warn!(target = %inner.options.describe(), "the in-process tier does not serve Redis Cluster yet; it stays off");
                return;
            }
            _ => {
                drop(inner);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
                continue;
            }
        };
        let mut on = redis::cmd("CLIENT");
        on.arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&inner.prefix);
        if let Err(error) = on.query_async::<()>(&mut connection).await {
            tracing::warn!(%error, "Redis refused key tracking; the in-process tier stays bypassed");
            drop(inner);
            tokio::time::sleep(LAST_RETRY).await;
            continue;
        }
        // Whatever the tier held may have changed unreported: it starts empty.
        tier.activate();
        tracing::info!(target = %inner.options.describe(), "key tracking on: the in-process tier answers");
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
                    // Alive, and still the master: a demoted one no longer sees the writes.
                    let role = redis::cmd("ROLE");
                    let answered = tokio::time::timeout(PING_LIMIT, role.query_async::<Value>(&mut connection)).await;
                    if !matches!(answered, Ok(Ok(Value::Array(ref fields))) if is_master(fields)) {
                        break;
                    }
                }
            }
        }
        tier.deactivate();
        tracing::warn!("key tracking lost: the in-process tier is bypassed until it is back");
    }
}

fn is_master(role: &[Value]) -> bool {
    match role.first() {
        Some(Value::BulkString(name)) => name == b"master",
        Some(Value::SimpleString(name)) => name == "master",
        _ => false,
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
