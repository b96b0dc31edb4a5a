//! The user guide's example application, in Rust, and the binary's health check command.

pub mod healthcheck;

use axum::extract::{Path, Query};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use cache_middleware::backends::Backend;
use cache_middleware::{cache, CacheHandle, CacheMiddleware};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The demo routes with the guide's timeouts, inside `middleware`.
pub fn app(middleware: CacheMiddleware) -> Router {
    Router::new()
        .route("/", get(read_root).layer(cache(Duration::from_secs(300))))
        .route(
            "/items/{item_id}",
            get(read_item).layer(cache(600).tags(["items"])),
        )
        .route("/calculate", post(calculate).layer(cache(300)))
        .route(
            "/users/{user_id}",
            get(get_user).layer(cache(1800).tags(["users"])),
        )
        .route("/stats", get(get_stats).layer(cache(60)))
        .route("/config", get(get_config).layer(cache(3600)))
        .route("/data", get(get_data).layer(cache(300)))
        .route("/debug", get(debug_endpoint).layer(cache(60)))
        .route(
            "/expensive-operation",
            get(expensive_operation).layer(cache(300)),
        )
        .route("/clock", get(clock).layer(cache(2)))
        .route("/clock/runs", get(clock_runs))
        .route("/health", get(health))
        .layer(middleware)
}

/// The metrics, for a listener of their own (`METRICS_ADDR`): never on the public port.
/// `/metrics` renders `metrics` in Prometheus' format; `/metrics/summary` is the cache's JSON.
pub fn metrics_app(cache: CacheHandle, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(move || prometheus(metrics.clone())))
        .route(
            "/metrics/summary",
            get(move || metrics_summary(cache.clone())),
        )
}

/// Pre-populates the backend, as the guide's "Cache Warming" does.
pub async fn warm_cache(backend: &dyn Backend) {
    let entries = [
        ("config:version", "1.0", Duration::from_secs(3600)),
        (
            "stats:global",
            r#"{"users": 1000}"#,
            Duration::from_secs(300),
        ),
    ];
    for (key, value, ttl) in entries {
        if let Err(error) = backend.set(key, value.into(), ttl).await {
            tracing::warn!(key, %error, "cache warming failed; continuing without it");
        }
    }
}

async fn read_root() -> Json<Value> {
    Json(json!({"Hello": "World"}))
}

#[derive(Deserialize)]
struct ItemQuery {
    q: Option<String>,
}

async fn read_item(Path(item_id): Path<i64>, Query(query): Query<ItemQuery>) -> Json<Value> {
    Json(json!({"item_id": item_id, "q": query.q}))
}

async fn calculate(Json(data): Json<Value>) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    let numbers = match data.get("numbers") {
        None => &Vec::new(),
        Some(Value::Array(numbers)) => numbers,
        Some(_) => return Err(unprocessable("\"numbers\" must be an array of numbers")),
    };
    let result = sum_of_squares(numbers)
        .ok_or_else(|| unprocessable("\"numbers\" must hold only numbers"))?;
    Ok(Json(json!({"input": data, "result": result})))
}

/// Integers stay exact (as in Python) while they fit in an i64; anything else is summed as floats.
fn sum_of_squares(numbers: &[Value]) -> Option<Value> {
    let exact = numbers.iter().try_fold(0i64, |sum, n| {
        let n = n.as_i64()?;
        sum.checked_add(n.checked_mul(n)?)
    });
    if let Some(sum) = exact {
        return Some(json!(sum));
    }
    let sum = numbers
        .iter()
        .map(|n| n.as_f64().map(|n| n * n))
        .sum::<Option<f64>>()?;
    Some(json!(sum))
}

fn unprocessable(message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"detail": message})),
    )
}

async fn get_user(Path(user_id): Path<i64>) -> Json<Value> {
    Json(json!({"user_id": user_id, "name": format!("User {user_id}")}))
}

async fn get_stats() -> Json<Value> {
    Json(json!({"requests": 12345, "active_users": 678}))
}

async fn get_config() -> Json<Value> {
    Json(json!({"version": "1.0", "features": ["caching", "auth"]}))
}

async fn get_data() -> Json<Value> {
    Json(json!({"data": "cached_value"}))
}

async fn debug_endpoint() -> Json<Value> {
    Json(json!({"timestamp": unix_seconds()}))
}

/// About 50 ms of real CPU work on the blocking pool, so that uncached load is bound by the work.
async fn expensive_operation() -> Result<Json<Value>, StatusCode> {
    let result = tokio::task::spawn_blocking(|| {
        let started = Instant::now();
        let mut digest = blake3::hash(b"expensive-operation");
        let mut rounds: u64 = 0;
        while started.elapsed() < Duration::from_millis(50) {
            for _ in 0..1000 {
                digest = blake3::hash(digest.as_bytes());
            }
            rounds += 1000;
        }
        (digest.to_hex()[..16].to_owned(), rounds)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(json!({
        "result": result.0,
        "rounds": result.1,
        "computed_at": unix_seconds(),
    })))
}

/// Every counter and histogram, in Prometheus' text format.
async fn prometheus(metrics: PrometheusHandle) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// The guide's "monitor cache hit rates", one request away.
async fn metrics_summary(cache: CacheHandle) -> Json<Value> {
    let stats = cache.stats();
    let bypasses: serde_json::Map<String, Value> = stats
        .bypasses
        .iter()
        .map(|(reason, n)| ((*reason).to_owned(), json!(n)))
        .collect();
    Json(json!({
        "hit_ratio": stats.hit_ratio(),
        "hits": stats.hits,
        "misses": stats.misses,
        "refreshes": stats.refreshes,
        "stale": stats.stale,
        "coalesced": stats.coalesced,
        "stores": stats.stores,
        "store_failures": stats.store_failures,
        "lookup_failures": stats.lookup_failures,
        "not_stored": stats.not_stored,
        "bypasses": bypasses,
        "breaker": stats.breaker.as_str(),
        "breaker_opened": stats.breaker_opened,
        "backend": cache.backend().name(),
    }))
}

/// How many times this process ran `/clock`'s handler.
static CLOCK_RUNS: AtomicU64 = AtomicU64::new(0);

/// A hot key with a short lifetime (2 s) whose handler takes 50 ms: what a fleet's handler runs
/// and its clients' waits look like at each expiry, with and without `CACHE_EARLY_REFRESH`.
async fn clock() -> Json<Value> {
    let run = CLOCK_RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    let started = unix_seconds();
    tokio::time::sleep(Duration::from_millis(50)).await;
    Json(json!({"time": started, "run": run, "instance": std::process::id()}))
}

/// `/clock`'s handler runs in this process (uncached).
async fn clock_runs() -> Json<Value> {
    Json(json!({"runs": CLOCK_RUNS.load(Ordering::Relaxed)}))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_of_squares_are_exact_for_integers_and_floats_otherwise() {
        assert_eq!(
            sum_of_squares(&[json!(1), json!(2), json!(3)]),
            Some(json!(14))
        );
        assert_eq!(sum_of_squares(&[json!(1.5)]), Some(json!(2.25)));
        assert_eq!(
            sum_of_squares(&[json!(i64::MAX)]),
            Some(json!((i64::MAX as f64).powi(2)))
        );
        assert_eq!(sum_of_squares(&[json!("a")]), None);
        assert_eq!(sum_of_squares(&[]), Some(json!(0)));
    }
}
