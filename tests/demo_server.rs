//! The demo binary as a newcomer runs it, checked over HTTP on loopback.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use support::DemoServer;

fn json_of(observed: &support::Observed) -> Value {
    serde_json::from_slice(&observed.body).unwrap()
}

#[tokio::test]
async fn the_demo_serves_the_guides_routes_with_caching() {
    let demo = DemoServer::start(&[]);

    let first = demo.get("/").await;
    let second = demo.get("/").await;
    assert_eq!(json_of(&first), json!({"Hello": "World"}));
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));

    let item = demo.get("/items/42?q=hello").await;
    assert_eq!(json_of(&item), json!({"item_id": 42, "q": "hello"}));
    assert_eq!(
        json_of(&demo.get("/items/42").await),
        json!({"item_id": 42, "q": null})
    );
    assert_eq!(demo.get("/items/42?q=hello").await.x_cache(), "HIT");

    for _ in 0..2 {
        let bad = demo.get("/items/not-a-number").await;
        assert!(bad.status.is_client_error(), "{}", bad.status);
        assert_eq!(bad.x_cache(), "MISS");
    }

    let user = demo.get("/users/7").await;
    assert_eq!(json_of(&user), json!({"user_id": 7, "name": "User 7"}));
    assert_eq!(
        json_of(&demo.get("/stats").await),
        json!({"requests": 12345, "active_users": 678})
    );
    assert_eq!(
        json_of(&demo.get("/config").await),
        json!({"version": "1.0", "features": ["caching", "auth"]})
    );
    assert_eq!(
        json_of(&demo.get("/data").await),
        json!({"data": "cached_value"})
    );

    let debug = demo.get("/debug").await;
    assert!(json_of(&debug)["timestamp"].as_f64().unwrap() > 1.0e9);
    assert_eq!(demo.get("/debug").await.body, debug.body);

    let health = demo.get("/health").await;
    assert_eq!(
        (health.status, health.header("x-cache")),
        (StatusCode::OK, None)
    );
}

#[tokio::test]
async fn the_demo_caches_post_calculations_by_body_and_rejects_bad_json() {
    let demo = DemoServer::start(&[]);
    let calculate = |body: &'static str| {
        let request = Request::post("/calculate").header("content-type", "application/json");
        demo.request(request, Bytes::from_static(body.as_bytes()))
    };
    let first = calculate(r#"{"numbers":[1,2,3]}"#).await;
    assert_eq!(
        json_of(&first),
        json!({"input": {"numbers": [1, 2, 3]}, "result": 14})
    );
    assert_eq!(calculate(r#"{"numbers":[1,2,3]}"#).await.x_cache(), "HIT");
    assert_eq!(calculate(r#"{"numbers":[3]}"#).await.x_cache(), "MISS");
    for bad in [r#"{"numbers":[1,2,"#, r#"{"numbers":"x"}"#, "\u{0}"] {
        for _ in 0..2 {
            let response = calculate(bad).await;
            assert!(
                response.status.is_client_error(),
                "{bad:?}: {}",
                response.status
            );
            assert_eq!(response.x_cache(), "MISS");
        }
    }
}

#[tokio::test]
async fn the_expensive_operation_is_computed_once_then_served_from_cache() {
    let demo = DemoServer::start(&[]);
    let first = demo.get("/expensive-operation").await;
    let second = demo.get("/expensive-operation").await;
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(
        json_of(&first)["computed_at"],
        json_of(&second)["computed_at"]
    );
    let etag = first.header("etag").unwrap().to_owned();
    let revalidated = demo
        .request(
            Request::get("/expensive-operation").header("if-none-match", etag),
            Bytes::new(),
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
}

#[test]
fn a_bad_port_stops_the_demo_with_a_message_naming_the_variable() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"))
        .env("PORT", "eighty")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("PORT") && stderr.contains("eighty"),
        "{stderr}"
    );
}

/// Two demo runs one after the other on `env`: the second serves what the first stored.
/// Both listen on one port, as a restarted service does: the host is part of the key.
async fn hits_survive_a_restart(env: &[(&str, &str)]) {
    let port = support::servers::free_port().to_string();
    let env = [env, &[("PORT", port.as_str())]].concat();
    let env = env.as_slice();
    let first = DemoServer::start(env);
    let computed = first.get("/expensive-operation").await;
    assert_eq!(computed.x_cache(), "MISS");
    drop(first);
    let second = DemoServer::start(env);
    let replayed = second.get("/expensive-operation").await;
    assert_eq!(replayed.x_cache(), "HIT");
    assert_eq!(replayed.body, computed.body);
}

#[tokio::test]
async fn on_redis_a_restarted_demo_serves_hits_stored_by_the_previous_one() {
    let redis = support::servers::Redis::start();
    let url = redis.url();
    hits_survive_a_restart(&[("CACHE_BACKEND", "redis"), ("REDIS_URL", &url)]).await;
    // The guide's warm-up entries are in Redis under the backend's namespace.
    assert_eq!(
        redis.cli(&["GET", "cache-middleware:config:version"]),
        "1.0"
    );
}

#[tokio::test]
async fn on_memcached_a_restarted_demo_serves_hits_stored_by_the_previous_one() {
    let memcached = support::servers::Memcached::start();
    let url = memcached.url();
    hits_survive_a_restart(&[("CACHE_BACKEND", "memcached"), ("MEMCACHED_URL", &url)]).await;
}

#[tokio::test]
async fn environment_production_uses_redis_from_redis_url() {
    let redis = support::servers::Redis::start();
    let url = redis.url();
    let demo = DemoServer::start(&[("ENVIRONMENT", "production"), ("REDIS_URL", &url)]);
    demo.get("/").await;
    assert_eq!(demo.get("/").await.x_cache(), "HIT");
    assert!(redis.cli(&["DBSIZE"]).parse::<u32>().unwrap() >= 3);
}

#[tokio::test]
async fn a_demo_whose_redis_is_down_starts_and_serves_uncached() {
    let port = support::servers::free_port().to_string();
    let url = format!("redis://127.0.0.1:{port}");
    let demo = DemoServer::start(&[("CACHE_BACKEND", "redis"), ("REDIS_URL", &url)]);
    for _ in 0..3 {
        let response = demo.get("/").await;
        assert_eq!(
            (response.status, response.x_cache()),
            (StatusCode::OK, "MISS")
        );
    }
}

#[test]
fn bad_configuration_stops_the_demo_with_a_message_naming_the_variable() {
    let cases: [&[(&str, &str)]; 5] = [
        &[("CACHE_BACKEND", "mongo")],
        &[("MEMORY_CACHE_SIZE", "abc")],
        &[
            ("CACHE_BACKEND", "redis"),
            ("REDIS_URL", "redis://h"),
            ("REDIS_MAX_CONNECTIONS", "0"),
        ],
        &[
            ("CACHE_BACKEND", "redis"),
            ("REDIS_URL", "http://:hunter2@h:6379"),
        ],
        &[("ENVIRONMENT", "production")],
    ];
    for env in cases {
        let stderr = failed_start(env);
        let named = env.last().unwrap().0;
        let named = if named == "ENVIRONMENT" {
            "REDIS_URL"
        } else {
            named
        };
        assert!(stderr.contains(named), "{env:?}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[tokio::test]
async fn hit_rates_are_one_request_away_in_prometheus_and_json() {
    let demo = DemoServer::start(&[]);
    for _ in 0..3 {
        demo.get("/stats").await;
    }
    demo.request(
        Request::get("/stats").header("cache-control", "no-store"),
        Bytes::new(),
    )
    .await;
    // Metrics are on their own listener (loopback by default), never on the public port.
    assert_eq!(demo.get("/metrics").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        demo.get("/metrics/summary").await.status,
        StatusCode::NOT_FOUND
    );
    let summary = json_of(&demo.get_metrics("/metrics/summary").await);
    assert_eq!(summary["hits"], 2);
    assert_eq!(summary["misses"], 1);
    assert!(
        (summary["hit_ratio"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{summary}"
    );
    assert_eq!(summary["bypasses"]["no-store"], 1);
    assert_eq!(summary["breaker"], "closed");

    let prometheus = demo.get_metrics("/metrics").await;
    assert!(prometheus
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = prometheus.text();
    for expected in [
        "cache_requests_total{result=\"hit\"} 2",
        "cache_requests_total{result=\"miss\"} 1",
        "cache_bypass_total{reason=\"no-store\"} 1",
        "cache_backend_duration_seconds_bucket",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[tokio::test]
async fn the_healthcheck_command_reports_a_live_server_and_fails_on_a_dead_one() {
    let demo = DemoServer::start(&[]);
    let run = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"))
            .args(["healthcheck", &url])
            .output()
            .unwrap()
    };
    assert!(run(format!("{}/health", demo.base)).status.success());
    let dead = format!("http://127.0.0.1:{}/health", support::servers::free_port());
    let output = run(dead);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unhealthy"));
    // Without a URL it probes 127.0.0.1:$PORT.
    let port = demo.base.rsplit(':').next().unwrap().to_owned();
    let by_port = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"))
        .arg("healthcheck")
        .env("PORT", port)
        .status()
        .unwrap();
    assert!(by_port.success());
}

#[tokio::test]
async fn the_start_up_log_shows_the_configuration_with_the_password_masked() {
    let redis = support::servers::Redis::start_with(
        support::servers::free_port(),
        &["--requirepass", "s3cret-pass"],
    );
    let url = format!("redis://:s3cret-pass@127.0.0.1:{}", redis.port);
    let demo = DemoServer::start(&[("CACHE_BACKEND", "redis"), ("REDIS_URL", &url)]);
    demo.get("/").await;
    assert_eq!(demo.get("/").await.x_cache(), "HIT", "the password works");
    let logs = demo.logs();
    assert!(logs.contains("cache configured"), "{logs}");
    assert!(
        logs.contains(&format!("redis://:***@127.0.0.1:{}", redis.port)),
        "{logs}"
    );
    assert!(!logs.contains("s3cret-pass"), "{logs}");
}

#[tokio::test]
async fn debug_logs_in_a_rotated_file_show_keys_hits_misses_and_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache_middleware.log");
    let file = path.to_str().unwrap();
    let demo = DemoServer::start(&[
        ("CACHE_LOG_FILE", file),
        ("CACHE_LOG_FILE_LEVEL", "cache_middleware=debug"),
        ("CACHE_LOG_ROTATION", "10 MB"),
    ]);
    demo.get("/items/1?q=secret-token").await;
    demo.get("/items/1?q=secret-token").await;
    demo.get("/items/x").await;
    demo.request(
        Request::get("/").header("authorization", "Bearer abc"),
        Bytes::new(),
    )
    .await;
    // A graceful stop flushes the log writer.
    assert!(demo.stop().success());
    let logs = std::fs::read_to_string(&path).unwrap();
    for expected in [
        "cache key generated",
        "query_params=[q]",
        "cache miss",
        "cache hit",
        "reason=status",
        "reason=authorization",
    ] {
        assert!(logs.contains(expected), "missing {expected:?} in:\n{logs}");
    }
    assert!(
        !logs.contains("secret-token") && !logs.contains("Bearer abc"),
        "{logs}"
    );
}

#[test]
fn passwords_with_url_delimiters_never_appear_in_start_up_errors() {
    let cases: [&[(&str, &str)]; 4] = [
        &[
            ("CACHE_BACKEND", "redis"),
            ("REDIS_URL", "redis://:hun#ter2@h:notaport"),
        ],
        &[
            ("CACHE_BACKEND", "redis"),
            ("REDIS_URL", "redis://:hun/ter2?x@h:notaport/0"),
        ],
        &[
            ("CACHE_BACKEND", "redis"),
            ("REDIS_SENTINELS", "redis://:hun?ter2@h:notaport"),
        ],
        &[
            ("CACHE_BACKEND", "memcached"),
            ("MEMCACHED_URL", "memcached://user:hun#ter2@h:notaport"),
        ],
    ];
    for env in cases {
        let stderr = failed_start(env);
        assert!(!stderr.contains("ter2"), "{env:?}: {stderr}");
    }
}

/// The demo started with `env` (and no `REDIS_URL` of ours): it must refuse to start; its stderr.
fn failed_start(env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cache-middleware"));
    command.env("PORT", "0").env_remove("REDIS_URL");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "{env:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
