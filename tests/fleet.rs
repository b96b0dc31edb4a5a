//! Several instances of an application, each with its own engine, runtime and connections,
//! sharing one real redis-server: a cold key runs its handler once in the fleet.

mod support;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use cache_middleware::backends::{Backend, BackendError, Lease, RedisBackend};
use cache_middleware::proxy::{router, ProxyConfig};
use cache_middleware::{cache, CacheMiddleware, PurgeKind};
use futures_util::future::join_all;
use http::Method;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::servers::{wait_until, Cluster, Redis};
use support::{over_http, Counter, Observed};

/// One instance: the route `/slow` (cached 300 s) on a runtime and thread of its own. The handler
/// waits `work` on the runtime (or blocks its thread, with `blocking`), then counts its run.
struct Instance {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone, Copy)]
struct Work {
    time: Duration,
    blocking: bool,
}

impl Instance {
    /// An application with `/slow` behind its own Redis connections.
    fn start(
        name: &'static str,
        redis_url: &str,
        runs: &Counter,
        work: Work,
        lease: Duration,
    ) -> Instance {
        let backend = RedisBackend::builder(redis_url)
            .namespace("fleet")
            .build()
            .unwrap();
        let middleware = CacheMiddleware::new(backend).coalesce_timeout(lease);
        Self::with(name, middleware, runs, work, 300)
    }

    /// `/slow`, cached `ttl_secs`, inside `middleware`.
    fn with(
        name: &'static str,
        middleware: CacheMiddleware,
        runs: &Counter,
        work: Work,
        ttl_secs: u64,
    ) -> Instance {
        let runs = runs.clone();
        let handler = move || {
            let runs = runs.clone();
            async move {
                if work.blocking {
                    std::thread::sleep(work.time);
                } else {
                    tokio::time::sleep(work.time).await;
                }
                format!("made by {name}, run {}", runs.bump())
            }
        };
        let app = Router::new()
            .route("/slow", get(handler).layer(cache(ttl_secs)))
            .layer(middleware);
        Self::serve(app)
    }

    /// Serves `app` on a runtime and thread of its own.
    fn serve(app: Router) -> Instance {
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                address_tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
            // Whatever is still running (a hung handler) is dropped with the runtime.
            runtime.shutdown_background();
        });
        Instance {
            address: address_rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const WAIT: Work = Work {
    time: Duration::from_millis(300),
    blocking: false,
};

/// Behind a load balancer every instance sees the site's own name.
const SITE: (&str, &str) = ("host", "fleet.test");

async fn get_slow(instance: &Instance) -> Observed {
    over_http(instance.address, "GET", "/slow", &[SITE], Bytes::new()).await
}

fn lease_keys(redis: &Redis) -> Vec<String> {
    redis
        .cli(&["--scan", "--pattern", "*lease*"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_key_runs_its_handler_once_in_the_fleet() {
    let redis = Redis::start();
    let runs = Counter::default();
    let names = ["a", "b", "c", "d"];
    let fleet: Vec<Instance> = names
        .iter()
        .map(|name| Instance::start(name, &redis.url(), &runs, WAIT, Duration::from_secs(10)))
        .collect();
    let responses = join_all((0..200).map(|i| get_slow(&fleet[i % fleet.len()]))).await;
    assert_eq!(runs.get(), 1, "handler runs in the fleet");
    let first = &responses[0].body;
    for response in &responses {
        assert_eq!(response.status, 200);
        assert_eq!(
            &response.body, first,
            "every client gets the one run's response"
        );
    }
    let misses = responses.iter().filter(|r| r.x_cache() == "MISS").count();
    assert_eq!(
        misses, 1,
        "one request ran the handler; the others were served its entry"
    );
    assert!(
        lease_keys(&redis).is_empty(),
        "the lease is released: {:?}",
        lease_keys(&redis)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_cluster_too_a_cold_key_runs_its_handler_once() {
    let cluster = Cluster::start();
    let runs = Counter::default();
    let fleet: Vec<Instance> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| {
            let backend = RedisBackend::cluster_builder(cluster.urls())
                .build()
                .unwrap();
            // A lease call that overruns the latency budget runs the handler here (fail open):
            // on a loaded machine, three cluster nodes and four instances can take longer than
            // the default 100 ms, which is not what this test is about.
            let middleware = CacheMiddleware::new(backend).backend_timeout(Duration::from_secs(2));
            Instance::with(name, middleware, &runs, WAIT, 300)
        })
        .collect();
    let responses = join_all((0..100).map(|i| get_slow(&fleet[i % fleet.len()]))).await;
    assert_eq!(runs.get(), 1, "handler runs in the fleet");
    assert!(responses.iter().all(|r| r.status == 200));
}

/// An instance's backend over Redis that the test watches (the last key read, whether its tier
/// has answered), and whose fleet lease it can script: once `hand_over_from` is set, the lease
/// is held elsewhere at first; on the next try, the instance there runs its handler and stores
/// the response, and then the lease is free. That is what a waiting instance meets when the
/// holder stores and gives the lease back between two of its looks (a window of a few
/// milliseconds in a real fleet).
#[derive(Debug)]
struct Watched {
    redis: RedisBackend,
    hand_over_from: Mutex<Option<SocketAddr>>,
    tries: AtomicUsize,
    last_read: Mutex<Option<String>>,
    /// The in-process tier answered a read with a value (its key tracking is up).
    tier_answered: AtomicBool,
}

impl Watched {
    /// Over `redis`, in the fleet's namespace, with the in-process tier (as by default).
    fn over(redis: &Redis) -> Arc<Self> {
        Arc::new(Watched {
            redis: RedisBackend::builder(redis.url())
                .namespace("fleet")
                .build()
                .unwrap(),
            hand_over_from: Mutex::new(None),
            tries: AtomicUsize::new(0),
            last_read: Mutex::new(None),
            tier_answered: AtomicBool::new(false),
        })
    }

    fn read(&self, key: &str) {
        *self.last_read.lock().unwrap() = Some(key.to_owned());
    }

    /// Whether this instance's tier holds the last key read, as absent.
    fn tier_holds_it_absent(&self) -> bool {
        let key = self.last_read.lock().unwrap().clone();
        key.is_some_and(|key| matches!(self.redis.get_ready(&key), Some(Ok(None))))
    }
}

/// The page `/slow` of the instance at `address`, asked for while the calling thread waits:
/// nothing else runs on it meanwhile, Redis's reports of the instance's writes to this thread's
/// tier included.
fn stored_while_this_thread_waits(address: SocketAddr) -> Observed {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(over_http(address, "GET", "/slow", &[SITE], Bytes::new()))
    })
    .join()
    .unwrap()
}

#[async_trait]
impl Backend for Watched {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.read(key);
        self.redis.get(key).await
    }
    async fn get_latest(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        self.read(key);
        self.redis.get_latest(key).await
    }
    fn get_ready(&self, key: &str) -> Option<Result<Option<Bytes>, BackendError>> {
        let found = self.redis.get_ready(key);
        if matches!(found, Some(Ok(Some(_)))) {
            self.tier_answered.store(true, Ordering::SeqCst);
        }
        found
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), BackendError> {
        self.redis.set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<(), BackendError> {
        self.redis.delete(key).await
    }
    async fn clear(&self) -> Result<(), BackendError> {
        self.redis.clear().await
    }
    fn name(&self) -> &'static str {
        "watched"
    }
    async fn acquire_lease(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Lease, BackendError> {
        let Some(holder) = *self.hand_over_from.lock().unwrap() else {
            return self.redis.acquire_lease(key, token, ttl).await;
        };
        if self.tries.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(Lease::HeldElsewhere);
        }
        let stored = stored_while_this_thread_waits(holder);
        assert_eq!(stored.x_cache(), "MISS", "the holder runs its handler");
        Ok(Lease::Acquired)
    }
    async fn release_lease(&self, key: &str, token: &str) -> Result<(), BackendError> {
        self.redis.release_lease(key, token).await
    }
}

/// An instance waiting on another's lease takes it just after the holder stored and gave it
/// back. Its in-process tier still remembers the key absent (from the look that missed), as
/// Redis's report of the write has not been read yet: it must serve the stored entry anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_given_back_after_storing_serves_the_entry_and_never_runs_again() {
    let redis = Redis::start();
    let runs = Counter::default();
    let holder = Instance::start("holder", &redis.url(), &runs, WAIT, Duration::from_secs(10));
    let backend = Watched::over(&redis);
    // The scripted lease call lasts the holder's whole run: more than the latency budget.
    let middleware =
        CacheMiddleware::new(Arc::clone(&backend)).backend_timeout(Duration::from_secs(5));
    let waiter = Instance::with("waiter", middleware, &runs, WAIT, 300);
    // Another site's page, read until the waiter's tier answers (its tracking is up).
    let other_site = [("host", "other.test")];
    for _ in 0..100 {
        over_http(waiter.address, "GET", "/slow", &other_site, Bytes::new()).await;
        if backend.tier_answered.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        backend.tier_answered.load(Ordering::SeqCst),
        "tier never up"
    );
    assert_eq!(runs.get(), 1, "the other site's page ran once");

    *backend.hand_over_from.lock().unwrap() = Some(holder.address);
    let served = get_slow(&waiter).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), "made by holder, run 2");
    assert_eq!(runs.get(), 2, "handler runs in the fleet");
}

/// A soft purge on one instance of a page another instance stored a moment before: this
/// instance's tier still remembers the page absent (Redis's report of the write is not read
/// yet), and the purge must find the page anyway, or it would silently do nothing.
#[tokio::test]
async fn a_soft_purge_finds_a_page_another_instance_stored_a_moment_before() {
    let redis = Redis::start();
    let runs = Counter::default();
    let other = Instance::start("other", &redis.url(), &runs, WAIT, Duration::from_secs(10));
    let backend = Watched::over(&redis);
    let handle = CacheMiddleware::new(Arc::clone(&backend)).handle();
    let page = "http://fleet.test/slow";
    // Nothing stored yet: a soft purge finds nothing. This instance then looks the page up, as
    // a request would, and its tier learns the page is absent (once its key tracking is up).
    let found = handle.purge_url(Method::GET, page, PurgeKind::Soft).await;
    assert_eq!(found.unwrap(), None);
    let key = backend
        .last_read
        .lock()
        .unwrap()
        .clone()
        .expect("the purge read the page's key");
    for _ in 0..100 {
        assert_eq!(backend.get(&key).await.unwrap(), None);
        if backend.tier_holds_it_absent() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backend.tier_holds_it_absent(), "tier never up");

    // The other instance stores the page while this one's only thread waits: Redis's report
    // of the write cannot be read meanwhile.
    let stored = stored_while_this_thread_waits(other.address);
    assert_eq!(stored.x_cache(), "MISS");
    let purged = handle.purge_url(Method::GET, page, PurgeKind::Soft).await;
    assert_eq!(
        purged.unwrap(),
        Some(PurgeKind::Soft),
        "the purge found the page"
    );
    // Stale now: the next request runs the handler again.
    let after = get_slow(&other).await;
    assert_ne!(after.x_cache(), "HIT");
    assert_eq!(runs.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_mid_run_fails_no_request_and_each_instance_runs_at_most_once() {
    let mut redis = Redis::start();
    let runs = Counter::default();
    let fleet: Vec<Instance> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| Instance::start(name, &redis.url(), &runs, WAIT, Duration::from_secs(10)))
        .collect();
    let requests = join_all((0..200).map(|i| get_slow(&fleet[i % fleet.len()])));
    let kill = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        redis.process.kill();
    };
    let (responses, ()) = tokio::join!(requests, kill);
    for response in &responses {
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(
            response.text().starts_with("made by"),
            "{}",
            response.text()
        );
    }
    // Without Redis each instance still runs one handler for all its waiting requests.
    assert!(
        (1..=4).contains(&runs.get()),
        "handler runs: {}",
        runs.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_holder_that_hangs_is_taken_over_when_its_lease_expires() {
    let redis = Redis::start();
    let runs = Counter::default();
    let lease = Duration::from_secs(1);
    let hung = Work {
        time: Duration::from_secs(4),
        blocking: true,
    };
    let holder = Instance::start("holder", &redis.url(), &runs, hung, lease);
    let other = Instance::start("other", &redis.url(), &runs, WAIT, lease);
    let held = tokio::spawn({
        let address = holder.address;
        async move { over_http(address, "GET", "/slow", &[SITE], Bytes::new()).await }
    });
    // (Blocks one of this test's runtime workers; the holder's request runs on another.)
    wait_until(
        "the holder to take its lease",
        Duration::from_secs(10),
        || !lease_keys(&redis).is_empty(),
    );
    // The holder's thread is stuck in its handler; the other instance waits for the lease to
    // expire, then runs the handler itself.
    let asked = std::time::Instant::now();
    let taken_over = get_slow(&other).await;
    // Not sooner than the lease allows (a lower bound: a slow machine only waits longer).
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(taken_over.status, 200);
    assert_eq!(taken_over.text(), "made by other, run 1");
    assert_eq!(runs.get(), 1, "the holder is still hung");
    let late = held.await.unwrap();
    assert_eq!(late.status, 200);
    assert_eq!(runs.get(), 2);
}

/// Four proxies in front of `origin`, sharing Redis under `namespace`.
fn proxy_fleet(
    redis: &Redis,
    namespace: &str,
    origin: std::net::SocketAddr,
    early_refresh: f64,
) -> Vec<Instance> {
    let upstream: http::Uri = format!("http://{origin}").parse().unwrap();
    let config = ProxyConfig::from_toml("").unwrap();
    (0..4)
        .map(|_| {
            let backend = RedisBackend::builder(redis.url())
                .namespace(namespace)
                .build()
                .unwrap();
            let middleware = CacheMiddleware::new(backend).early_refresh(early_refresh);
            Instance::serve(router(upstream.clone(), &config, middleware).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxies_sharing_redis_ask_the_origin_once_for_a_cold_url() {
    let redis = Redis::start();
    let asked = Counter::default();
    let origin = {
        let asked = asked.clone();
        let answer = move || {
            let asked = asked.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let run = asked.bump();
                (
                    [("cache-control", "max-age=60")],
                    format!("origin run {run}"),
                )
            }
        };
        support::serve(Router::new().route("/page", get(answer))).await
    };
    let fleet = proxy_fleet(&redis, "proxies", origin, 0.0);
    let responses = join_all(
        (0..200).map(|i| over_http(fleet[i % 4].address, "GET", "/page", &[SITE], Bytes::new())),
    )
    .await;
    assert_eq!(asked.get(), 1, "origin requests from the fleet");
    for response in &responses {
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "origin run 1");
    }
    assert!(lease_keys(&redis).is_empty(), "{:?}", lease_keys(&redis));
}

/// Steady requests, one every `every`, for `lasting`, spread over `fleet`.
async fn steady_load(fleet: &[Instance], every: Duration, lasting: Duration) -> Vec<Observed> {
    steady_load_on(fleet, "/slow", every, lasting).await
}

/// Requests for `path` every `every` for `lasting`, spread over the fleet; their responses.
async fn steady_load_on(
    fleet: &[Instance],
    path: &'static str,
    every: Duration,
    lasting: Duration,
) -> Vec<Observed> {
    let mut ticks = tokio::time::interval(every);
    let mut sent = Vec::new();
    let started = tokio::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < lasting {
        ticks.tick().await;
        sent.push(tokio::spawn({
            let address = fleet[i % fleet.len()].address;
            async move { over_http(address, "GET", path, &[SITE], Bytes::new()).await }
        }));
        i += 1;
    }
    let mut responses = Vec::new();
    for response in sent {
        responses.push(response.await.unwrap());
    }
    responses
}

/// One response filled the cache and every other one was a hit: none waited on a refresh.
///
/// Which request fills is not always the first one sent: requests go out every few
/// milliseconds as separate tasks, and on a loaded machine the second can reach its instance
/// before the first. Whichever arrives first fills; the others wait for it and are hits.
fn assert_one_miss_and_hits(responses: &[Observed]) {
    let statuses: Vec<&str> = responses.iter().map(Observed::x_cache).collect();
    let not_hits: Vec<(usize, &str)> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != "HIT")
        .map(|(i, s)| (i, *s))
        .collect();
    assert!(
        matches!(not_hits.as_slice(), [(_, "MISS")]),
        "one request fills the cache, every other one is a hit: {not_hits:?} of {}",
        statuses.len()
    );
}

/// A hot key with a 2 s lifetime under steady load: refreshed in the background in the second
/// half of its life, by one instance of the fleet each time (the refresh takes long enough for
/// every instance to want one), and no request misses or waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_key_is_refreshed_early_once_per_lifetime_and_never_expires_under_load() {
    let redis = Redis::start();
    let runs = Counter::default();
    let work = Work {
        time: Duration::from_millis(300),
        blocking: false,
    };
    let fleet: Vec<Instance> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| {
            let backend = RedisBackend::builder(redis.url())
                .namespace("hot")
                .build()
                .unwrap();
            let middleware = CacheMiddleware::new(backend).early_refresh(0.5);
            Instance::with(name, middleware, &runs, work, 2)
        })
        .collect();
    let lasting = Duration::from_secs(5);
    let responses = steady_load(&fleet, Duration::from_millis(10), lasting).await;
    assert_one_miss_and_hits(&responses);
    // One run to fill, then one refresh at most every second (never in the first half of a life).
    let most = 1 + lasting.as_secs() as usize;
    assert!(
        (2..=most).contains(&runs.get()),
        "handler runs: {} (at most {most})",
        runs.get()
    );
}

/// The proxies too: a hot URL (`max-age=2`, with an ETag) under steady load is validated in the
/// background in the second half of its life, by one instance of the fleet each time; no request
/// misses or waits on the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxies_refresh_a_hot_url_early_once_per_lifetime() {
    let redis = Redis::start();
    let asked = Counter::default();
    let origin = {
        let asked = asked.clone();
        let answer = move |headers: http::HeaderMap| {
            let asked = asked.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                asked.bump();
                let fields = [("cache-control", "max-age=2"), ("etag", "\"v1\"")];
                if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                    (http::StatusCode::NOT_MODIFIED, fields, String::new())
                } else {
                    (http::StatusCode::OK, fields, "the page".to_owned())
                }
            }
        };
        support::serve(Router::new().route("/page", get(answer))).await
    };
    let fleet = proxy_fleet(&redis, "hot-proxies", origin, 0.5);
    let lasting = Duration::from_secs(5);
    let responses = steady_load_on(&fleet, "/page", Duration::from_millis(10), lasting).await;
    assert_one_miss_and_hits(&responses);
    assert!(responses.iter().all(|r| r.text() == "the page"));
    // One request to fill, then one validation at most every second.
    let most = 1 + lasting.as_secs() as usize;
    assert!(
        (2..=most).contains(&asked.get()),
        "origin requests: {} (at most {most})",
        asked.get()
    );
}
