//! The guide's Redis configurations: basic, production (pool, retry, keepalive, health checks),
//! password, TLS with a CA file, Cluster and Sentinel.
//!
//! Run against a local Redis (`redis-server --port 6379`):
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example redis`, then `curl -i localhost:8000/`.

use axum::{routing::get, Json, Router};
use cache_middleware::backends::{CertReqs, KeepaliveOptions, RedisBackend};
use cache_middleware::{cache, CacheMiddleware};
use serde_json::{json, Value};
use std::time::Duration;

/// Every constructor the guide shows; only `production` is used below, the rest are for reading.
#[allow(dead_code)]
fn configurations() -> Result<(), cache_middleware::backends::BuildError> {
    // Basic configuration
    let _basic = RedisBackend::new("redis://localhost:6379")?;

    // Redis with password
    let _with_password = RedisBackend::builder("redis://:password@redis-host:6379")
        .max_connections(10)
        .build()?;

    // Redis with SSL
    let _with_tls = RedisBackend::builder("rediss://redis-host:6380")
        .password("secure-password")
        .ssl_cert_reqs(CertReqs::Required)
        .ssl_ca_certs("/path/to/ca.pem")
        .build();

    // Redis Cluster
    let _cluster = RedisBackend::cluster_builder(["redis://redis-cluster-node1:6379"])
        .max_connections(50)
        .retry_on_timeout(true)
        .health_check_interval(Duration::from_secs(30))
        .socket_keepalive(true)
        .build()?;

    // Redis Sentinel: the master named "mymaster", found (and followed on failover) through sentinels
    let _sentinel = RedisBackend::sentinel_builder(
        "mymaster",
        ["redis://sentinel-1:26379", "redis://sentinel-2:26379"],
    )
    .password("master-password")
    .build()?;
    Ok(())
}

fn production(url: &str) -> Result<RedisBackend, cache_middleware::backends::BuildError> {
    // Production configuration with connection pooling
    RedisBackend::builder(url)
        .max_connections(20)
        .retry_on_timeout(true)
        .socket_keepalive(true)
        .socket_keepalive_options(
            KeepaliveOptions::new()
                .idle(Duration::from_secs(1)) // TCP_KEEPIDLE
                .interval(Duration::from_secs(3)) // TCP_KEEPINTVL
                .count(5), // TCP_KEEPCNT
        )
        .health_check_interval(Duration::from_secs(30))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // Building never needs Redis up: if it is down, requests are served uncached until it is back.
    let redis_backend = production(&url)?;
    println!("caching in {}", redis_backend.target());

    let app = Router::new()
        .route(
            "/",
            get(|| async { Json::<Value>(json!({"Hello": "World"})) }).layer(cache(300)),
        )
        .layer(CacheMiddleware::new(redis_backend));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
