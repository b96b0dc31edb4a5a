//! The Redis backend's options, each checked against a real redis-server.

mod support;

use bytes::Bytes;
use cache_middleware::backends::{
    Backend, BackendError, CertReqs, KeepaliveOptions, Lease, RedisBackend,
};
use std::time::Duration;
use support::servers::{free_port, wait_until, Cluster, Redis, SentinelSetup};

const MINUTE: Duration = Duration::from_secs(60);

async fn round_trip(backend: &RedisBackend) -> Result<(), BackendError> {
    backend
        .set("probe", Bytes::from_static(b"ok"), MINUTE)
        .await?;
    assert_eq!(backend.get("probe").await?.as_deref(), Some(&b"ok"[..]));
    Ok(())
}

#[tokio::test]
async fn a_password_works_in_the_url_or_apart_and_a_wrong_one_is_never_shown() {
    let redis = Redis::start_with(free_port(), &["--requirepass", "s3cret-pw"]);
    let in_url = RedisBackend::new(format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port)).unwrap();
    round_trip(&in_url).await.unwrap();
    let apart = RedisBackend::builder(redis.url())
        .password("s3cret-pw")
        .build()
        .unwrap();
    round_trip(&apart).await.unwrap();

    let wrong_url = format!("redis://:wrong-pw-123@127.0.0.1:{}", redis.port);
    let wrong = RedisBackend::new(&wrong_url).unwrap();
    let error = wrong.get("probe").await.unwrap_err().to_string();
    assert!(!error.contains("wrong-pw-123"), "{error}");
    let debug = format!("{wrong:?} {}", wrong.target());
    assert!(!debug.contains("wrong-pw-123"), "{debug}");
}

#[tokio::test]
async fn tls_verifies_the_server_against_the_given_ca_unless_told_not_to() {
    let (redis, tls) = Redis::start_tls();
    let url = format!("rediss://localhost:{}", redis.port);
    let verified = RedisBackend::builder(&url)
        .ssl_ca_certs(&tls.ca)
        .build()
        .unwrap();
    round_trip(&verified).await.unwrap();

    // Without our CA the certificate is unknown: the connection is refused, the call is an error.
    let unverified = RedisBackend::builder(&url).build().unwrap();
    assert!(unverified.get("probe").await.is_err());

    let trusting = RedisBackend::builder(&url)
        .ssl_cert_reqs(CertReqs::None)
        .build()
        .unwrap();
    round_trip(&trusting).await.unwrap();

    let error = RedisBackend::builder(&url)
        .ssl_ca_certs("/nonexistent/ca.pem")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("ssl_ca_certs"), "{error}");
}

/// The keepalive settings of this process's sockets connected to `port`, read back from the kernel.
fn keepalive_of_sockets_to(port: u16) -> Vec<(bool, Duration, Duration, u32)> {
    use std::os::fd::BorrowedFd;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .map(|target| target.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is open (listed just now) and only borrowed for these reads.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let peer_port = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port());
        if peer_port != Some(port) {
            continue;
        }
        found.push((
            socket.keepalive().unwrap(),
            socket.tcp_keepalive_time().unwrap(),
            socket.tcp_keepalive_interval().unwrap(),
            socket.tcp_keepalive_retries().unwrap(),
        ));
    }
    found
}

#[tokio::test]
async fn keepalive_options_reach_the_sockets() {
    let redis = Redis::start();
    let backend = RedisBackend::builder(redis.url())
        .socket_keepalive(true)
        .socket_keepalive_options(
            KeepaliveOptions::new()
                .idle(Duration::from_secs(1))
                .interval(Duration::from_secs(3))
                .count(5),
        )
        .build()
        .unwrap();
    round_trip(&backend).await.unwrap();
    let sockets = keepalive_of_sockets_to(redis.port);
    assert!(!sockets.is_empty(), "no socket to redis found");
    for socket in sockets {
        assert_eq!(
            socket,
            (true, Duration::from_secs(1), Duration::from_secs(3), 5)
        );
    }
}

#[tokio::test]
async fn open_connections_never_exceed_max_connections() {
    let redis = Redis::start();
    let backend = RedisBackend::builder(redis.url())
        .max_connections(3)
        .build()
        .unwrap();
    let calls = (0..300).map(|i| {
        let backend = backend.clone();
        async move {
            backend
                .set(&format!("k{i}"), Bytes::from_static(b"v"), MINUTE)
                .await
        }
    });
    for result in futures_util::future::join_all(calls).await {
        result.unwrap();
    }
    // CLIENT LIST shows the pool's connections, the local tier's key-tracking connection (flag
    // `t`) and redis-cli's own.
    let list = redis.cli(&["CLIENT", "LIST"]);
    let tracking = list
        .lines()
        .filter(|line| line.contains(" flags=t"))
        .count();
    let pooled = list.lines().count() - tracking - 1;
    assert!(
        (1..=3).contains(&pooled),
        "{pooled} pooled connections open"
    );
    assert!(tracking <= 1, "{tracking} tracking connections: {list}");
}

#[tokio::test]
async fn retry_on_timeout_retries_once_on_a_dropped_connection() {
    let redis = Redis::start();
    let plain = RedisBackend::builder(redis.url())
        .max_connections(1)
        .build()
        .unwrap();
    let retrying = RedisBackend::builder(redis.url())
        .max_connections(1)
        .retry_on_timeout(true)
        .build()
        .unwrap();
    round_trip(&plain).await.unwrap();
    round_trip(&retrying).await.unwrap();
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        plain.get("probe").await.is_err(),
        "without retry the dropped connection shows"
    );
    assert_eq!(
        retrying.get("probe").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
    // The plain backend reconnects on the following call.
    assert!(plain.get("probe").await.is_ok());
}

#[tokio::test]
async fn health_checks_replace_broken_connections_before_they_are_used() {
    let redis = Redis::start();
    let backend = RedisBackend::builder(redis.url())
        .max_connections(1)
        .health_check_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    round_trip(&backend).await.unwrap();
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No retry configured: this succeeds only because the health check already reconnected.
    assert_eq!(
        backend.get("probe").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
}

#[tokio::test]
async fn clear_removes_only_this_namespace_and_leaves_foreign_keys() {
    let redis = Redis::start();
    redis.cli(&["SET", "other-app:session", "keep"]);
    redis.cli(&["SET", "myapp-other:x", "keep"]);
    redis.cli(&["SET", "myapp", "keep"]);
    let backend = RedisBackend::builder(redis.url())
        .namespace("myapp")
        .build()
        .unwrap();
    for i in 0..2500 {
        backend
            .set(&format!("k{i}"), Bytes::from_static(b"v"), MINUTE)
            .await
            .unwrap();
    }
    assert_eq!(redis.cli(&["DBSIZE"]), "2503");
    backend.clear().await.unwrap();
    assert_eq!(redis.cli(&["DBSIZE"]), "3");
    assert_eq!(redis.cli(&["GET", "other-app:session"]), "keep");
}

#[tokio::test]
async fn values_are_stored_with_their_ttl_in_one_command() {
    let redis = Redis::start();
    let backend = RedisBackend::builder(redis.url())
        .namespace("ns")
        .build()
        .unwrap();
    backend
        .set("k", Bytes::from_static(b"v"), Duration::from_millis(90_500))
        .await
        .unwrap();
    let pttl: i64 = redis.cli(&["PTTL", "ns:k"]).parse().unwrap();
    assert!((89_000..=90_500).contains(&pttl), "{pttl}");
    let commands = redis.cli(&["INFO", "commandstats"]);
    assert!(
        !commands.contains("cmdstat_expire") && !commands.contains("cmdstat_pexpire"),
        "{commands}"
    );
}

#[tokio::test]
async fn cluster_keys_spread_over_nodes_and_clear_empties_all_of_them() {
    let cluster = Cluster::start();
    for node in &cluster.nodes {
        node.cli(&["SET", "foreign-{keep}", "yes"]);
    }
    let backend = RedisBackend::cluster_builder(cluster.urls())
        .namespace("app")
        .build()
        .unwrap();
    for i in 0..300 {
        backend
            .set(&format!("k{i}"), Bytes::from_static(b"v"), MINUTE)
            .await
            .unwrap();
    }
    let ours = |node: &Redis| node.cli(&["--scan", "--pattern", "app:*"]).lines().count();
    let per_node: Vec<usize> = cluster.nodes.iter().map(ours).collect();
    assert!(
        per_node.iter().all(|&n| n > 50),
        "keys per node: {per_node:?}"
    );
    assert_eq!(per_node.iter().sum::<usize>(), 300);
    backend.clear().await.unwrap();
    let per_node: Vec<usize> = cluster.nodes.iter().map(ours).collect();
    assert_eq!(per_node, [0, 0, 0]);
    let foreign: usize = cluster
        .nodes
        .iter()
        .map(|n| n.cli(&["DBSIZE"]).parse::<usize>().unwrap())
        .sum();
    assert_eq!(foreign, 1, "the foreign key survives on its node");
}

#[tokio::test]
async fn a_lease_is_exclusive_expires_and_is_released_only_by_its_holder() {
    let redis = Redis::start();
    let a = RedisBackend::builder(redis.url())
        .namespace("ns")
        .build()
        .unwrap();
    let b = RedisBackend::builder(redis.url())
        .namespace("ns")
        .build()
        .unwrap();
    let short = Duration::from_millis(300);
    assert_eq!(
        a.acquire_lease("k", "token-a", MINUTE).await.unwrap(),
        Lease::Acquired
    );
    assert_eq!(
        b.acquire_lease("k", "token-b", MINUTE).await.unwrap(),
        Lease::HeldElsewhere
    );
    b.release_lease("k", "token-b").await.unwrap();
    assert_eq!(
        b.acquire_lease("k", "token-b", MINUTE).await.unwrap(),
        Lease::HeldElsewhere,
        "not b's to release"
    );
    a.release_lease("k", "token-a").await.unwrap();
    assert_eq!(
        b.acquire_lease("k", "token-b", short).await.unwrap(),
        Lease::Acquired
    );
    let pttl: i64 = redis.cli(&["PTTL", "ns:lease:k"]).parse().unwrap();
    assert!(
        (1..=300).contains(&pttl),
        "the lease expires on its own: {pttl}"
    );
    wait_until("the lease to expire", Duration::from_secs(5), || {
        redis.cli(&["EXISTS", "ns:lease:k"]) == "0"
    });
    assert_eq!(
        a.acquire_lease("k", "token-a", MINUTE).await.unwrap(),
        Lease::Acquired
    );
}

/// GET commands Redis has served.
fn gets_served(redis: &Redis) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Reads `key` through `backend` until its in-process tier holds it (tracking is up). A read
/// may fail on the way: after a restart, each pooled connection to the old server fails once.
async fn until_in_tier(backend: &RedisBackend, key: &str) -> Option<Bytes> {
    // Up to 5 s: on a loaded machine the tracking connection may take a while to come up.
    for _ in 0..500 {
        let _ = backend.get(key).await;
        if let Some(Ok(found)) = backend.get_ready(key) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{key} never reached the in-process tier");
}

/// Reads `key` until it is `expected` (a change reported by tracking), within a second.
async fn until_read(backend: &RedisBackend, key: &str, expected: Option<&[u8]>) {
    for _ in 0..100 {
        if backend.get(key).await.unwrap().as_deref() == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = backend.get(key).await.unwrap();
    panic!(
        "{key} never read as {expected:?}; last {last:?}, in the tier {:?}",
        backend.get_ready(key).map(Result::ok)
    );
}

fn tiered(redis: &Redis) -> RedisBackend {
    RedisBackend::builder(redis.url())
        .namespace("t")
        .local_tier(1 << 20)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_local_tier_answers_without_redis_and_forgets_what_any_client_changes() {
    let redis = Redis::start();
    let (a, b) = (tiered(&redis), tiered(&redis));
    b.set("k", Bytes::from_static(b"v1"), MINUTE).await.unwrap();
    assert_eq!(until_in_tier(&a, "k").await.as_deref(), Some(&b"v1"[..]));
    let before = gets_served(&redis);
    for _ in 0..100 {
        assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    }
    assert_eq!(
        gets_served(&redis),
        before,
        "hits in the tier cost Redis nothing"
    );
    assert_eq!(
        a.get_latest("k").await.unwrap().as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        gets_served(&redis),
        before + 1,
        "the latest value is read from Redis, whatever the tier holds"
    );

    // A change through another instance, and one by any other client, are reported.
    b.set("k", Bytes::from_static(b"v2"), MINUTE).await.unwrap();
    until_read(&a, "k", Some(b"v2")).await;
    redis.cli(&["SET", "t:k", "v3"]);
    until_read(&a, "k", Some(b"v3")).await;
    b.delete("k").await.unwrap();
    until_read(&a, "k", None).await;

    // Absence is remembered, and a creation reported.
    assert_eq!(until_in_tier(&a, "later").await, None);
    b.set("later", Bytes::from_static(b"now"), MINUTE)
        .await
        .unwrap();
    until_read(&a, "later", Some(b"now")).await;

    // A write is read back at once by the instance that made it.
    a.set("mine", Bytes::from_static(b"1"), MINUTE)
        .await
        .unwrap();
    until_in_tier(&a, "mine").await;
    a.set("mine", Bytes::from_static(b"2"), MINUTE)
        .await
        .unwrap();
    assert_eq!(a.get("mine").await.unwrap().as_deref(), Some(&b"2"[..]));

    // Lifetimes are Redis's: nothing is served past them.
    b.set(
        "short",
        Bytes::from_static(b"s"),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(until_in_tier(&a, "short").await.as_deref(), Some(&b"s"[..]));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(a.get_ready("short").and_then(Result::ok).flatten(), None);
    assert_eq!(a.get("short").await.unwrap(), None);
}

// (Two workers: the checks below block one while the tracking task runs on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracking_the_local_tier_is_bypassed_and_misses_no_change() {
    let redis = Redis::start();
    let a = tiered(&redis);
    a.set("k", Bytes::from_static(b"v1"), MINUTE).await.unwrap();
    until_in_tier(&a, "k").await;

    // The tracking connection is killed: the tier stops answering before a change it would miss.
    let clients = redis.cli(&["CLIENT", "LIST"]);
    let tracking = clients
        .lines()
        .find(|line| line.contains("flags=t"))
        .and_then(|line| line.split_whitespace().find_map(|f| f.strip_prefix("id=")))
        .expect("a tracking connection")
        .to_owned();
    redis.cli(&["CLIENT", "KILL", "ID", &tracking]);
    wait_until("the tier to be bypassed", Duration::from_secs(3), || {
        a.get_ready("k").is_none()
    });
    redis.cli(&["SET", "t:k", "changed"]);
    assert_eq!(a.get("k").await.unwrap().as_deref(), Some(&b"changed"[..]));
    // Tracking comes back by itself; the tier starts empty and fills again.
    assert_eq!(
        until_in_tier(&a, "k").await.as_deref(),
        Some(&b"changed"[..])
    );

    // A server that stops answering: the checks notice within their bound.
    redis.process.signal("STOP");
    wait_until("the tier to be bypassed", Duration::from_secs(3), || {
        a.get_ready("k").is_none()
    });
    redis.process.signal("CONT");
    assert_eq!(
        until_in_tier(&a, "k").await.as_deref(),
        Some(&b"changed"[..])
    );
}

/// Redis restarts empty: nothing the tier held before is served, and tracking resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_the_local_tier_serves_nothing_it_held_before() {
    let port = free_port();
    let mut redis = Redis::start_with(port, &[]);
    // A pooled connection to the killed server fails once; the retry takes a fresh one.
    let a = RedisBackend::builder(redis.url())
        .namespace("t")
        .local_tier(1 << 20)
        .retry_on_timeout(true)
        .build()
        .unwrap();
    a.set("k", Bytes::from_static(b"v1"), MINUTE).await.unwrap();
    assert_eq!(until_in_tier(&a, "k").await.as_deref(), Some(&b"v1"[..]));
    redis.process.kill();
    wait_until("the tier to be bypassed", Duration::from_secs(3), || {
        a.get_ready("k").is_none()
    });
    let restarted = Redis::start_with(port, &[]);
    // The pool may still hold more than one connection to the old server: each fails once (a
    // miss for its request) and is replaced.
    for _ in 0..50 {
        if a.get("k").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        until_in_tier(&a, "k").await,
        None,
        "the restarted server holds nothing, and neither does the tier"
    );
    restarted.cli(&["SET", "t:k", "v2"]);
    until_read(&a, "k", Some(b"v2")).await;
}

/// Through Sentinel, the tier tracks the master; after a failover it tracks the new one, and a
/// change made there is never hidden by what the tier held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_tier_follows_a_sentinel_failover() {
    let setup = SentinelSetup::start();
    let a = RedisBackend::sentinel_builder(SentinelSetup::MASTER_NAME, [setup.sentinel_url()])
        .namespace("t")
        .retry_on_timeout(true)
        .local_tier(1 << 20)
        .build()
        .unwrap();
    a.set("k", Bytes::from_static(b"v1"), MINUTE).await.unwrap();
    assert_eq!(until_in_tier(&a, "k").await.as_deref(), Some(&b"v1"[..]));
    setup.fail_over();
    wait_until(
        "the replica to be promoted",
        Duration::from_secs(30),
        || {
            setup.names_master(setup.replica.port)
                && setup.replica.cli(&["ROLE"]).starts_with("master")
                && setup.master.cli(&["ROLE"]).starts_with("slave")
        },
    );
    setup.replica.cli(&["SET", "t:k", "v2"]);
    until_read(&a, "k", Some(b"v2")).await;
    // Tracking is on the new master: the tier fills again, and its reports arrive.
    assert_eq!(until_in_tier(&a, "k").await.as_deref(), Some(&b"v2"[..]));
    setup.replica.cli(&["SET", "t:k", "v3"]);
    until_read(&a, "k", Some(b"v3")).await;
}

/// The local tier is on by default; a server that refuses key tracking leaves it bypassed, and
/// every read then asks Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_local_tier_stays_out_of_the_way_of_a_server_without_tracking() {
    let plain = Redis::start();
    let tiered_by_default = RedisBackend::builder(plain.url())
        .namespace("t")
        .build()
        .unwrap();
    tiered_by_default
        .set("k", Bytes::from_static(b"v1"), MINUTE)
        .await
        .unwrap();
    until_in_tier(&tiered_by_default, "k").await;

    let refusing = Redis::start_with(free_port(), &["--rename-command", "CLIENT", ""]);
    let backend = RedisBackend::builder(refusing.url())
        .namespace("t")
        .build()
        .unwrap();
    backend
        .set("k", Bytes::from_static(b"v1"), MINUTE)
        .await
        .unwrap();
    for value in ["v2", "v3", "v4"] {
        assert!(backend.get("k").await.unwrap().is_some());
        refusing.cli(&["SET", "t:k", value]);
        assert_eq!(
            backend.get("k").await.unwrap().as_deref(),
            Some(value.as_bytes()),
            "every read asks Redis"
        );
        assert!(backend.get_ready("k").is_none());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// With Cluster, every master reports the changes of its own keys: the tier tracks each, through
/// the cluster builder and through a plain URL naming one node alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_tier_tracks_every_master_of_a_cluster() {
    let cluster = Cluster::start();
    let a = RedisBackend::cluster_builder(cluster.urls())
        .namespace("t")
        .local_tier(1 << 20)
        .build()
        .unwrap();
    let b = RedisBackend::builder(cluster.nodes[2].url())
        .namespace("t")
        .local_tier(1 << 20)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    for key in &keys {
        b.set(key, Bytes::from_static(b"v1"), MINUTE).await.unwrap();
    }
    for key in &keys {
        assert_eq!(until_in_tier(&a, key).await.as_deref(), Some(&b"v1"[..]));
        assert_eq!(until_in_tier(&b, key).await.as_deref(), Some(&b"v1"[..]));
    }
    let owners: Vec<usize> = keys
        .iter()
        .map(|key| {
            let slot: u16 = cluster.nodes[0]
                .cli(&["CLUSTER", "KEYSLOT", &format!("t:{key}")])
                .parse()
                .unwrap();
            owner_of(&cluster, slot)
        })
        .collect();
    assert!(
        (0..3).all(|node| owners.contains(&node)),
        "keys on every master: {owners:?}"
    );
    let served = |cluster: &Cluster| -> u64 { cluster.nodes.iter().map(gets_served).sum() };
    let before = served(&cluster);
    for key in &keys {
        assert_eq!(a.get(key).await.unwrap().as_deref(), Some(&b"v1"[..]));
    }
    assert_eq!(
        served(&cluster),
        before,
        "hits in the tier cost Redis nothing"
    );

    // Changes on every master, by another instance and by any client, reach both tiers.
    for (i, key) in keys.iter().enumerate() {
        if i % 2 == 0 {
            b.set(key, Bytes::from_static(b"v2"), MINUTE).await.unwrap();
        } else {
            cluster.nodes[owners[i]].cli(&["SET", &format!("t:{key}"), "v2"]);
        }
    }
    for key in &keys {
        until_read(&a, key, Some(b"v2")).await;
        until_read(&b, key, Some(b"v2")).await;
    }

    // A master that stops answering: the tier vouches for nothing until it is back.
    cluster.nodes[owners[0]].process.signal("STOP");
    wait_until("the tier to be bypassed", Duration::from_secs(3), || {
        a.get_ready(&keys[1]).is_none()
    });
    cluster.nodes[owners[0]].process.signal("CONT");
    let elsewhere = keys
        .iter()
        .zip(&owners)
        .find(|(_, &owner)| owner != owners[0])
        .map(|(key, _)| key)
        .unwrap();
    assert_eq!(
        until_in_tier(&a, elsewhere).await.as_deref(),
        Some(&b"v2"[..])
    );
}

/// The index of the node serving `slot`.
fn owner_of(cluster: &Cluster, slot: u16) -> usize {
    let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
    let line = nodes
        .lines()
        .find(|line| {
            line.split_whitespace().skip(8).any(|range| {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                matches!((low.parse::<u16>(), high.parse::<u16>()), (Ok(l), Ok(h)) if (l..=h).contains(&slot))
            })
        })
        .expect("a node serves every slot");
    let port = line
        .split_whitespace()
        .nth(1)
        .and_then(|address| address.split('@').next())
        .and_then(|address| address.rsplit_once(':'))
        .map(|(_, port)| port.parse::<u16>().unwrap())
        .unwrap();
    cluster
        .nodes
        .iter()
        .position(|node| node.port == port)
        .unwrap()
}

/// A master demoted to a replica no longer sees the writes its tier would need reported: the
/// tier stops answering, though its tracking connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_master_stops_the_local_tier() {
    let redis = Redis::start();
    let other = Redis::start();
    let a = tiered(&redis);
    a.set("k", Bytes::from_static(b"v1"), MINUTE).await.unwrap();
    until_in_tier(&a, "k").await;
    redis.cli(&["REPLICAOF", "127.0.0.1", &other.port.to_string()]);
    wait_until("the tier to be bypassed", Duration::from_secs(3), || {
        a.get_ready("k").is_none()
    });
    // It stays so while the server is a replica, and answers again once it is a master.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    a.get("k").await.unwrap();
    assert!(
        a.get_ready("k").is_none(),
        "a replica's tier vouches for nothing"
    );
    redis.cli(&["REPLICAOF", "NO", "ONE"]);
    redis.cli(&["SET", "t:k", "v2"]);
    assert_eq!(until_in_tier(&a, "k").await.as_deref(), Some(&b"v2"[..]));
}

/// The guide's Cluster example names one node with a plain URL (`REDIS_URL` does the same): the
/// backend finds out it is a Cluster and routes every key to its slot's master.
#[tokio::test]
async fn a_plain_url_to_one_cluster_node_reaches_every_master() {
    let cluster = Cluster::start();
    let backend = RedisBackend::builder(cluster.nodes[1].url())
        .namespace("guide")
        .retry_on_timeout(true)
        .build()
        .unwrap();
    for i in 0..90 {
        let value = Bytes::from(format!("v{i}"));
        backend.set(&format!("k{i}"), value, MINUTE).await.unwrap();
    }
    for i in 0..90 {
        let read = backend.get(&format!("k{i}")).await.unwrap();
        assert_eq!(read.as_deref(), Some(format!("v{i}").as_bytes()), "k{i}");
    }
    let ours = |node: &Redis| {
        node.cli(&["--scan", "--pattern", "guide:*"])
            .lines()
            .count()
    };
    let per_node: Vec<usize> = cluster.nodes.iter().map(ours).collect();
    assert!(
        per_node.iter().all(|&n| n > 10),
        "keys per node: {per_node:?}"
    );
    backend.clear().await.unwrap();
    let per_node: Vec<usize> = cluster.nodes.iter().map(ours).collect();
    assert_eq!(per_node, [0, 0, 0]);
}

#[tokio::test]
async fn sentinel_failover_is_followed() {
    let mut setup = SentinelSetup::start();
    let backend =
        RedisBackend::sentinel_builder(SentinelSetup::MASTER_NAME, [setup.sentinel_url()])
            .retry_on_timeout(true)
            .build()
            .unwrap();
    round_trip(&backend).await.unwrap();
    setup.master.process.kill();
    wait_until(
        "the sentinel to promote the replica",
        Duration::from_secs(60),
        || setup.names_master(setup.replica.port),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match round_trip(&backend).await {
            Ok(()) => break,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "backend never recovered: {error}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(setup.replica.cli(&["GET", "cache-middleware:probe"]), "ok");
}

#[tokio::test]
async fn a_backend_built_while_redis_is_down_works_once_it_is_up() {
    let port = free_port();
    let backend = RedisBackend::new(format!("redis://127.0.0.1:{port}")).unwrap();
    let started = std::time::Instant::now();
    assert!(backend.get("probe").await.is_err());
    assert!(backend.get("probe").await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down server fails fast"
    );
    let _redis = Redis::start_with(port, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while round_trip(&backend).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery after the server came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writing a large value takes time that says nothing of the server's health: it gets an
/// allowance on top of the command time-out (here 1 ms, which no 32 MiB write could meet).
#[tokio::test]
async fn a_large_value_gets_time_to_be_written_on_top_of_the_command_timeout() {
    let redis = Redis::start();
    let backend = RedisBackend::builder(redis.url())
        .timeout(Duration::from_millis(1))
        .local_tier(0)
        .build()
        .unwrap();
    let value = Bytes::from(vec![7u8; 32 * 1024 * 1024]);
    backend
        .set("large", value, Duration::from_secs(60))
        .await
        .expect("written within the allowance for its size");
    assert_eq!(
        redis.cli(&["STRLEN", "cache-middleware:large"]).trim(),
        (32 * 1024 * 1024).to_string()
    );
}

/// The test servers themselves: one that cannot take its port (another test's server took it
/// first) is never mistaken for the server that answers there.
#[test]
#[should_panic(expected = "could not listen on port")]
fn a_test_server_that_cannot_take_its_port_is_never_mistaken_for_the_one_there() {
    let running = Redis::start();
    let _second = Redis::start_with(running.port, &[]);
}
