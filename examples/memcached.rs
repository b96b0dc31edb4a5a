//! The Memcached backend: one or more servers, a connection bound, an operation time limit.
//!
//! Run against a local memcached (`memcached -p 11211`):
//! `MEMCACHED_URL=memcached://127.0.0.1:11211 cargo run --example memcached`, then
//! `curl -i localhost:8000/`.

use axum::{routing::get, Json, Router};
use cache_middleware::backends::MemcachedBackend;
use cache_middleware::{cache, CacheMiddleware};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let urls =
        std::env::var("MEMCACHED_URL").unwrap_or_else(|_| "memcached://127.0.0.1:11211".into());
    // Several servers: "memcached://cache-1:11211,cache-2:11211"; each key lives on one of them.
    let backend = MemcachedBackend::builder(&urls)
        .max_connections(8)
        .timeout(Duration::from_millis(100))
        .namespace("example")
        .build()?;
    println!("caching in memcached at {:?}", backend.servers());

    let app = Router::new()
        .route(
            "/",
            get(|| async { Json::<Value>(json!({"Hello": "World"})) }).layer(cache(300)),
        )
        .layer(CacheMiddleware::new(backend));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
