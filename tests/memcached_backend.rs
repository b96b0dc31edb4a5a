//! The Memcached backend against a real memcached.

mod support;

use bytes::Bytes;
use cache_middleware::backends::{Backend, BackendError, MemcachedBackend};
use std::time::Duration;
use support::servers::{free_port, Memcached};

#[tokio::test]
async fn ttls_over_thirty_days_are_kept_not_expired_at_once() {
    let memcached = Memcached::start();
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    let forty_days = Duration::from_secs(40 * 24 * 3600);
    backend
        .set("long", Bytes::from_static(b"v"), forty_days)
        .await
        .unwrap();
    assert_eq!(
        backend.get("long").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[tokio::test]
async fn a_clear_by_another_process_is_seen_within_the_generation_refresh() {
    let memcached = Memcached::start();
    let open = || {
        MemcachedBackend::builder(memcached.url())
            .generation_refresh(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let (this, other) = (open(), open());
    this.set("k", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(other.get("k").await.unwrap().is_some());
    this.clear().await.unwrap();
    assert_eq!(
        this.get("k").await.unwrap(),
        None,
        "seen at once by the process that cleared"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        other.get("k").await.unwrap(),
        None,
        "seen by the other after the refresh"
    );
}

#[tokio::test]
async fn values_over_the_item_limit_are_rejected_and_the_backend_keeps_working() {
    let memcached = Memcached::start();
    let backend = MemcachedBackend::new(memcached.url()).unwrap();
    let too_big = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
    let error = backend
        .set("big", too_big, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackendError::Rejected(_) | BackendError::Server(_)),
        "{error:?}"
    );
    backend
        .set("small", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(backend.get("small").await.unwrap().is_some());
}

#[tokio::test]
async fn a_backend_built_while_memcached_is_down_works_once_it_is_up() {
    let port = free_port();
    let backend = MemcachedBackend::new(format!("memcached://127.0.0.1:{port}")).unwrap();
    let started = std::time::Instant::now();
    assert!(backend.get("k").await.is_err());
    assert!(backend.get("k").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down server fails fast"
    );
    let _memcached = Memcached::start_on(port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let stored = backend
            .set("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await;
        if stored.is_ok() && backend.get("k").await.unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the server came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
