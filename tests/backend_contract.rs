//! One contract, every backend: memory, Redis (standalone, TLS, Sentinel, Cluster) and Memcached,
//! each against a real server started for the test.

mod support;

use bytes::Bytes;
use cache_middleware::backends::{Backend, MemcachedBackend, MemoryBackend, RedisBackend};
use std::sync::Arc;
use std::time::Duration;
use support::servers::{Cluster, Memcached, Redis, SentinelSetup};

const MINUTE: Duration = Duration::from_secs(60);

/// Runs every clause of the contract. `open(namespace)` gives a backend on the shared store.
async fn contract(open: impl Fn(&str) -> Arc<dyn Backend>) {
    let backend = open("contract");
    get_set_delete(&*backend).await;
    binary_and_large_values(&*backend).await;
    windows_of_values(&*backend).await;
    concurrent_use(Arc::clone(&backend)).await;
    namespaces_are_isolated_and_clear_is_scoped(&open).await;
    ttls_expire(&*backend).await;
}

async fn get_set_delete(backend: &dyn Backend) {
    assert_eq!(backend.get("absent").await.unwrap(), None);
    backend
        .set("k", Bytes::from_static(b"v1"), MINUTE)
        .await
        .unwrap();
    assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    backend
        .set("k", Bytes::from_static(b"v2"), MINUTE)
        .await
        .unwrap();
    assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
    backend.delete("k").await.unwrap();
    assert_eq!(backend.get("k").await.unwrap(), None);
    backend.delete("never-set").await.unwrap();
    // Keys with spaces, colons and unicode are stored as given.
    for key in ["with space", "a:b:c", "ключ", "config:version"] {
        backend
            .set(key, Bytes::from(key.to_owned()), MINUTE)
            .await
            .unwrap();
        assert_eq!(
            backend.get(key).await.unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key}"
        );
    }
}

async fn binary_and_large_values(backend: &dyn Backend) {
    let every_byte: Bytes = (0..=255u8).collect::<Vec<_>>().into();
    backend
        .set("binary", every_byte.clone(), MINUTE)
        .await
        .unwrap();
    assert_eq!(backend.get("binary").await.unwrap(), Some(every_byte));
    let large = Bytes::from(vec![0xA5; 512 * 1024]);
    backend.set("large", large.clone(), MINUTE).await.unwrap();
    assert_eq!(backend.get("large").await.unwrap(), Some(large));
    backend.set("empty", Bytes::new(), MINUTE).await.unwrap();
    assert_eq!(backend.get("empty").await.unwrap(), Some(Bytes::new()));
}

/// `get_range`, what large responses are read by: the bytes asked for, fewer where the value
/// ends, including from values Memcached keeps in parts.
async fn windows_of_values(backend: &dyn Backend) {
    let value: Bytes = (0..3 * 512 * 1024 + 7)
        .map(|i| (i / 1024 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    backend.set("windows", value.clone(), MINUTE).await.unwrap();
    let len = value.len();
    for (start, take) in [
        (0, 10),
        (512 * 1024 - 3, 100),
        (1024 * 1024, 600 * 1024),
        (0, len),
        (len - 5, 100),
    ] {
        let window = backend.get_range("windows", start, take).await.unwrap();
        let end = (start + take).min(len);
        assert_eq!(window, Some(value.slice(start..end)), "{start}+{take}");
    }
    assert_eq!(backend.get_range("absent", 0, 10).await.unwrap(), None);
}

async fn concurrent_use(backend: Arc<dyn Backend>) {
    let tasks = (0..100).map(|i| {
        let backend = Arc::clone(&backend);
        tokio::spawn(async move {
            let key = format!("concurrent-{i}");
            let value = Bytes::from(format!("value-{i}"));
            backend.set(&key, value.clone(), MINUTE).await.unwrap();
            assert_eq!(backend.get(&key).await.unwrap(), Some(value));
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.unwrap();
    }
}

async fn namespaces_are_isolated_and_clear_is_scoped(open: &impl Fn(&str) -> Arc<dyn Backend>) {
    let (a, b) = (open("app-a"), open("app-b"));
    a.set("shared-name", Bytes::from_static(b"a"), MINUTE)
        .await
        .unwrap();
    b.set("shared-name", Bytes::from_static(b"b"), MINUTE)
        .await
        .unwrap();
    for i in 0..1200 {
        a.set(&format!("bulk-{i}"), Bytes::from_static(b"x"), MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(
        a.get("shared-name").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        b.get("shared-name").await.unwrap().as_deref(),
        Some(&b"b"[..])
    );
    a.clear().await.unwrap();
    assert_eq!(a.get("shared-name").await.unwrap(), None);
    assert_eq!(a.get("bulk-1199").await.unwrap(), None);
    assert_eq!(
        b.get("shared-name").await.unwrap().as_deref(),
        Some(&b"b"[..])
    );
    // The cleared namespace works as before.
    a.set("after-clear", Bytes::from_static(b"ok"), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        a.get("after-clear").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
}

async fn ttls_expire(backend: &dyn Backend) {
    backend
        .set("short", Bytes::from_static(b"1"), Duration::from_secs(1))
        .await
        .unwrap();
    backend
        .set("long", Bytes::from_static(b"2"), MINUTE)
        .await
        .unwrap();
    assert!(backend.get("short").await.unwrap().is_some());
    // Memcached counts TTLs in whole seconds on its own clock: allow it a second more.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(backend.get("short").await.unwrap(), None);
    assert!(backend.get("long").await.unwrap().is_some());
}

#[tokio::test]
async fn memory_backend_meets_the_contract() {
    // A memory backend is its own namespace: one instance per application.
    let stores: std::sync::Mutex<std::collections::HashMap<String, MemoryBackend>> =
        Default::default();
    contract(|namespace| {
        let mut stores = stores.lock().unwrap();
        let store = stores
            .entry(namespace.to_owned())
            .or_insert_with(|| MemoryBackend::new(10_000));
        Arc::new(store.clone())
    })
    .await;
}

#[tokio::test]
async fn redis_backend_meets_the_contract() {
    let redis = Redis::start();
    contract(|ns| {
        Arc::new(
            RedisBackend::builder(redis.url())
                .namespace(ns)
                .build()
                .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn redis_backend_over_tls_meets_the_contract() {
    let (redis, tls) = Redis::start_tls();
    let url = format!("rediss://localhost:{}", redis.port);
    contract(|ns| {
        let backend = RedisBackend::builder(&url)
            .ssl_ca_certs(&tls.ca)
            .namespace(ns)
            .build();
        Arc::new(backend.unwrap())
    })
    .await;
}

#[tokio::test]
async fn redis_backend_through_sentinel_meets_the_contract() {
    let setup = SentinelSetup::start();
    contract(|ns| {
        let builder =
            RedisBackend::sentinel_builder(SentinelSetup::MASTER_NAME, [setup.sentinel_url()]);
        Arc::new(builder.namespace(ns).build().unwrap())
    })
    .await;
}

#[tokio::test]
async fn redis_cluster_backend_meets_the_contract() {
    let cluster = Cluster::start();
    contract(|ns| {
        Arc::new(
            RedisBackend::cluster_builder(cluster.urls())
                .namespace(ns)
                .build()
                .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn memcached_backend_meets_the_contract() {
    let memcached = Memcached::start();
    contract(|ns| {
        Arc::new(
            MemcachedBackend::builder(memcached.url())
                .namespace(ns)
                .build()
                .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn memcached_backend_over_two_servers_meets_the_contract() {
    let (first, second) = (Memcached::start(), Memcached::start());
    let urls = format!(
        "memcached://127.0.0.1:{},127.0.0.1:{}",
        first.port, second.port
    );
    contract(|ns| {
        Arc::new(
            MemcachedBackend::builder(&urls)
                .namespace(ns)
                .build()
                .unwrap(),
        )
    })
    .await;
    let items = (
        first.stat("curr_items").unwrap(),
        second.stat("curr_items").unwrap(),
    );
    assert!(
        items.0 > 10 && items.1 > 10,
        "keys spread over both servers: {items:?}"
    );
}
