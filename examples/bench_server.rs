//! The server for `scripts/load-test.sh`: one route returning the same bytes, served three ways.
//!
//! `MODE=bare` is plain axum with no cache layer at all (the ceiling); `MODE=memory` and `MODE=redis`
//! cache the route (`REDIS_URL` and `REDIS_MAX_CONNECTIONS`, default 4, for the latter).
//! `MODE=response-cache` caches it with axum-response-cache, a peer that keys by method and path
//! only and keeps the response as axum built it: a cheap cache, for comparison.
//! `MODE=origin` is the bare route telling caches it may be stored (`Cache-Control: public,
//! max-age=300`): the origin behind the proxies `scripts/proxy-bench.sh` compares. `PORT` as for the
//! demo. Prints its address once listening.

use axum::routing::get;
use axum::{Json, Router};
use cache_middleware::backends::{MemoryBackend, RedisBackend, DEFAULT_LOCAL_TIER_BYTES};
use cache_middleware::{cache, CacheMiddleware};
use serde_json::{json, Value};

async fn hello() -> Json<Value> {
    Json(json!({"Hello": "World"}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "bare".into());
    let app = match mode.as_str() {
        "bare" => Router::new().route("/hello", get(hello)),
        "origin" => Router::new().route(
            "/hello",
            get(|| async { ([("cache-control", "public, max-age=300")], hello().await) }),
        ),
        "memory" => Router::new()
            .route("/hello", get(hello).layer(cache(300)))
            .layer(CacheMiddleware::new(MemoryBackend::new(1000))),
        "response-cache" => Router::new().route(
            "/hello",
            get(hello).layer(axum_response_cache::CacheLayer::with_lifespan(
                std::time::Duration::from_secs(300),
            )),
        ),
        "redis" => {
            let url = std::env::var("REDIS_URL")?;
            let connections =
                std::env::var("REDIS_MAX_CONNECTIONS").map_or(Ok(4), |n| n.parse())?;
            // The local tier is on by default; `REDIS_LOCAL_TIER_MAX_BYTES=0` measures the round trip.
            let tier = std::env::var("REDIS_LOCAL_TIER_MAX_BYTES")
                .map_or(Ok(DEFAULT_LOCAL_TIER_BYTES), |n| n.parse())?;
            Router::new()
                .route("/hello", get(hello).layer(cache(300)))
                .layer(CacheMiddleware::new(
                    RedisBackend::builder(url)
                        .max_connections(connections)
                        .local_tier(tier)
                        .build()?,
                ))
        }
        other => {
            return Err(format!(
                "MODE={other:?}: accepted values are bare, origin, memory, response-cache, redis"
            )
            .into())
        }
    };
    let port = std::env::var("PORT").unwrap_or_else(|_| "8001".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
