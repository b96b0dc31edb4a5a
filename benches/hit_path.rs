//! The hit path in-process: a request in, the cached response out, next to the same route with no
//! cache at all, in route mode and in shared-cache mode. Also counts heap allocations per request.
//!
//! `cargo bench --bench hit_path`

use axum::body::Body;
use axum::routing::get;
use axum::{Json, Router};
use cache_middleware::backends::MemoryBackend;
use cache_middleware::{cache, CacheMiddleware};
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

/// The system allocator, counting allocations.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

async fn hello() -> Json<Value> {
    Json(json!({"Hello": "World"}))
}

fn apps() -> (Router, Router, Router) {
    let bare = Router::new().route("/hello", get(hello));
    let cached = Router::new()
        .route("/hello", get(hello).layer(cache(300)))
        .layer(CacheMiddleware::new(MemoryBackend::new(1000)));
    let shared = Router::new()
        .route(
            "/hello",
            get(|| async { ([("cache-control", "public, max-age=300")], hello().await) }),
        )
        .layer(CacheMiddleware::new(MemoryBackend::new(1000)).http_semantics());
    (bare, cached, shared)
}

async fn request(app: &Router) -> usize {
    let request = Request::get("/hello")
        .header("host", "bench.local")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .len()
}

fn allocations_per_request(runtime: &tokio::runtime::Runtime, app: &Router) -> f64 {
    const N: u64 = 10_000;
    runtime.block_on(async {
        request(app).await;
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..N {
            request(app).await;
        }
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64
    })
}

fn hit_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bare, cached, shared) = apps();
    // Store the entries: every measured request is a hit.
    runtime.block_on(request(&cached));
    runtime.block_on(request(&shared));
    println!(
        "allocations per request: bare route {:.1}, route-mode hit {:.1}, shared-cache hit {:.1}",
        allocations_per_request(&runtime, &bare),
        allocations_per_request(&runtime, &cached),
        allocations_per_request(&runtime, &shared)
    );
    let mut group = c.benchmark_group("request in, response out");
    group.bench_function("bare route (no cache)", |b| {
        b.to_async(&runtime).iter(|| request(&bare))
    });
    group.bench_function("cached route, memory hit", |b| {
        b.to_async(&runtime).iter(|| request(&cached))
    });
    group.bench_function("shared-cache mode, memory hit", |b| {
        b.to_async(&runtime).iter(|| request(&shared))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = hit_path
}
criterion_main!(benches);
