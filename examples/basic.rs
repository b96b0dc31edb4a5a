//! The user guide's minimal example: the middleware once, two cached routes.
//!
//! Run: `cargo run --example basic`, then `curl -i localhost:8000/items/1?q=x` twice.

use axum::extract::{Path, Query};
use axum::routing::get;
use axum::{Json, Router};
use cache_middleware::backends::MemoryBackend;
use cache_middleware::{cache, CacheMiddleware};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // Configure in-memory backend
    let memory_backend = MemoryBackend::new(1000);

    let app = Router::new()
        // Cache for 5 minutes
        .route("/", get(read_root).layer(cache(Duration::from_secs(300))))
        // Cache for 10 minutes
        .route(
            "/items/{item_id}",
            get(read_item).layer(cache(Duration::from_secs(600))),
        )
        .layer(CacheMiddleware::new(memory_backend));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
