//! HTTP response caching for axum and any tower/hyper service.
//!
//! Add [`CacheMiddleware`] once, around the application, with a backend; opt routes in with
//! [`cache`]`(timeout)`. Only routes that carry `cache(..)` are cached.
//!
//! ```
//! use axum::{extract::{Path, Query}, routing::get, Json, Router};
//! use cache_middleware::{backends::MemoryBackend, cache, CacheMiddleware};
//! use serde_json::{json, Value};
//! use std::{collections::HashMap, time::Duration};
//!
//! async fn read_root() -> Json<Value> {
//!     Json(json!({"Hello": "World"}))
//! }
//!
//! async fn read_item(Path(item_id): Path<i64>, Query(q): Query<HashMap<String, String>>) -> Json<Value> {
//!     Json(json!({"item_id": item_id, "q": q.get("q")}))
//! }
//!
//! let app: Router = Router::new()
//!     .route("/", get(read_root).layer(cache(Duration::from_secs(300))))
//!     .route("/items/{item_id}", get(read_item).layer(cache(Duration::from_secs(600))))
//!     .layer(CacheMiddleware::new(MemoryBackend::new(1000)));
//! ```
//!
//! Responses of cached routes carry `X-Cache: HIT`, `MISS`, `REFRESH`, `STALE` or `BYPASS`; hits
//! carry `Age`.
//! What is stored, and why something was not, is in the crate's `tracing` debug events.

mod apart;
pub mod backends;
mod body;
mod breaker;
mod coalesce;
mod engine;
mod entry;
mod fill;
mod fleet;
mod handle;
pub mod helpers;
mod key;
#[cfg(feature = "logging")]
pub mod logger_config;
mod middleware;
mod policy;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "proxy")]
pub mod purge;
mod ranges;
mod redact;
mod replay;
mod route;
#[cfg(feature = "proxy")]
pub mod server;
mod service;
mod shared;
mod stats;
mod storable;
mod tags;
mod variant_values;

pub use body::{BoxError, CacheBody};
pub use breaker::BreakerState;
pub use entry::MAX_STORED_BODY;
pub use fill::FillFailed;
pub use handle::CacheHandle;
pub use key::RequestScheme;
pub use middleware::{CacheMiddleware, CacheMiddlewareService};
pub use replay::{XCache, X_CACHE};
pub use route::{cache, CacheLayer, CacheService, IntoTimeout};
pub use shared::{SharedCache, SharedCacheService};
pub use stats::CacheStats;
pub use tags::{is_valid_tag, PurgeKind};

/// The README's code blocks, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The user guide's code blocks, compiled as doc tests.
#[doc = include_str!("../docs/user-guide.md")]
#[cfg(doctest)]
pub struct UserGuideDoctests;
