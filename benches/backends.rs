//! The guide's backend benchmark: `set` then `get` of N keys, for memory, Redis and Memcached, each
//! against a real server started for the benchmark (redis-server and memcached must be installed:
//! `./scripts/test.sh` installs them).
//!
//! `cargo bench --bench backends`

#[path = "../tests/support/servers.rs"]
#[allow(dead_code)]
mod servers;

use bytes::Bytes;
use cache_middleware::backends::{Backend, MemcachedBackend, MemoryBackend, RedisBackend};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;

const ITERATIONS: usize = 1000;

/// `await backend.set(f"key_{i}", f"value_{i}", 300); await backend.get(f"key_{i}")` for each i.
async fn benchmark_backend(backend: &dyn Backend) {
    for i in 0..ITERATIONS {
        let key = format!("key_{i}");
        backend
            .set(
                &key,
                Bytes::from(format!("value_{i}")),
                Duration::from_secs(300),
            )
            .await
            .unwrap();
        assert!(backend.get(&key).await.unwrap().is_some());
    }
}

fn backends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = servers::Redis::start();
    let memcached = servers::Memcached::start();
    let candidates: Vec<(&str, Arc<dyn Backend>)> = vec![
        ("memory", Arc::new(MemoryBackend::new(10_000))),
        ("redis", Arc::new(RedisBackend::new(redis.url()).unwrap())),
        (
            "memcached",
            Arc::new(MemcachedBackend::new(memcached.url()).unwrap()),
        ),
    ];
    let mut group = c.benchmark_group(format!("set+get of {ITERATIONS} keys"));
    group.throughput(Throughput::Elements(2 * ITERATIONS as u64));
    for (name, backend) in &candidates {
        group.bench_function(*name, |b| {
            b.to_async(&runtime).iter(|| benchmark_backend(&**backend))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = backends
}
criterion_main!(benches);
