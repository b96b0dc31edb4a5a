//! The memory backend's bounds and TTLs.

use bytes::Bytes;
use cache_middleware::backends::{Backend, MemoryBackend};
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_entry_count_stays_within_max_size() {
    let backend = MemoryBackend::new(100);
    for i in 0..1000 {
        backend
            .set(&format!("k{i}"), Bytes::from_static(b"v"), MINUTE)
            .await
            .unwrap();
    }
    assert!(backend.entry_count() <= 100, "{}", backend.entry_count());
}

#[tokio::test]
async fn frequently_read_entries_survive_a_scan_of_one_time_keys() {
    // TinyLFU admission: a stream of keys read once does not flush the keys in use.
    let backend = MemoryBackend::new(50);
    for round in 0..20 {
        for i in 0..10 {
            let key = format!("hot{i}");
            if round == 0 {
                backend
                    .set(&key, Bytes::from_static(b"v"), MINUTE)
                    .await
                    .unwrap();
            }
            backend.get(&key).await.unwrap();
        }
    }
    for i in 0..2000 {
        backend
            .set(&format!("scan{i}"), Bytes::from_static(b"v"), MINUTE)
            .await
            .unwrap();
    }
    backend.entry_count();
    let mut kept = 0;
    for i in 0..10 {
        kept += usize::from(backend.get(&format!("hot{i}")).await.unwrap().is_some());
    }
    assert!(kept >= 8, "only {kept} of 10 hot keys kept");
}

#[tokio::test]
async fn the_byte_bound_holds_alongside_the_count_bound() {
    let backend = MemoryBackend::builder()
        .max_size(1000)
        .max_bytes(10_000)
        .build();
    let value = Bytes::from(vec![b'x'; 1000]);
    for i in 0..100 {
        backend
            .set(&format!("k{i}"), value.clone(), MINUTE)
            .await
            .unwrap();
    }
    let count = backend.entry_count();
    assert!(
        (1..=10).contains(&count),
        "{count} entries of 1000 bytes in a 10000-byte cache"
    );
}

#[tokio::test]
async fn each_entry_has_its_own_ttl_and_expired_entries_are_never_returned() {
    let backend = MemoryBackend::new(10);
    backend
        .set(
            "short",
            Bytes::from_static(b"1"),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    backend
        .set("long", Bytes::from_static(b"2"), MINUTE)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(backend.get("short").await.unwrap(), None);
    assert_eq!(
        backend.get("long").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

#[tokio::test]
async fn overwriting_replaces_value_and_ttl() {
    let backend = MemoryBackend::new(10);
    backend
        .set("k", Bytes::from_static(b"old"), MINUTE)
        .await
        .unwrap();
    backend
        .set("k", Bytes::from_static(b"new"), Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(
        backend.get("k").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn clones_share_one_store() {
    let backend = MemoryBackend::new(10);
    let other = backend.clone();
    backend
        .set("k", Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap();
    assert!(other.get("k").await.unwrap().is_some());
    other.clear().await.unwrap();
    assert_eq!(backend.get("k").await.unwrap(), None);
}

#[tokio::test]
async fn the_default_store_is_bounded_by_bytes_not_only_entries() {
    const DEFAULT_MAX_BYTES: u64 = MemoryBackend::DEFAULT_MAX_BYTES;
    // 1000 entries allowed, but 1000 values of 1 MiB would be 1 GiB: the byte bound holds.
    let backend = MemoryBackend::new(1000);
    let value = Bytes::from(vec![7u8; 1024 * 1024]);
    for i in 0..1000 {
        backend
            .set(&format!("k{i}"), value.clone(), MINUTE)
            .await
            .unwrap();
    }
    let kept = backend.entry_count();
    assert!(kept >= 1, "nothing kept");
    assert!(
        kept * (1024 * 1024) <= DEFAULT_MAX_BYTES,
        "{kept} entries of 1 MiB kept, over the {DEFAULT_MAX_BYTES}-byte bound"
    );
}
