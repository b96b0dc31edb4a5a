//! Configuration from environment variables: the guide's `auto_configure_backend()` and
//! `get_backend_for_environment(env)`.
//!
//! ```sh
//! cargo run --example from_env                                   # memory (the default)
//! CACHE_BACKEND=memory MEMORY_CACHE_SIZE=5000 cargo run --example from_env
//! CACHE_BACKEND=redis REDIS_URL=redis://localhost:6379 REDIS_MAX_CONNECTIONS=20 cargo run --example from_env
//! ENVIRONMENT=production REDIS_URL=redis://localhost:6379 cargo run --example from_env
//! CACHE_BACKEND=mongo cargo run --example from_env               # exits: names the variable and the accepted values
//! ```

use axum::{routing::get, Json, Router};
use cache_middleware::helpers::{auto_configure_backend, get_backend_for_environment};
use cache_middleware::{cache, CacheMiddleware};
use serde_json::{json, Value};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Auto-configure based on environment
    let backend = match std::env::var("ENVIRONMENT") {
        Ok(env) => get_backend_for_environment(&env),
        Err(_) => auto_configure_backend(),
    };
    let backend = match backend {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("cache backend: {backend:?}");

    let app = Router::new()
        .route(
            "/",
            get(|| async { Json::<Value>(json!({"Hello": "World"})) }).layer(cache(300)),
        )
        .layer(CacheMiddleware::new(backend));
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:8000").await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on 127.0.0.1:8000: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on http://127.0.0.1:8000");
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
