//! The demo server: the user guide's example application on the cache middleware.
//!
//! - `cache-middleware` (or `cache-middleware serve`): serve on `HOST`:`PORT` (default
//!   127.0.0.1:8000), with the backend from the environment (`CACHE_BACKEND`, `REDIS_URL`, ...,
//!   or `ENVIRONMENT`).
//! - `cache-middleware healthcheck [URL]`: exit 0 when the server's `/health` answers 200, 1 otherwise
//!   (for container health checks; default URL `http://127.0.0.1:$PORT/health`).
//! - `cache-middleware proxy --upstream URL [--listen ADDR] [--rules FILE]`: a caching reverse proxy
//!   in front of an application in any language, with the backend from the same environment
//!   variables (see `cache_middleware::proxy`).

mod demo;

use cache_middleware::backends::Backend;
use cache_middleware::helpers::{
    auto_configure_backend, configure_middleware, get_backend_for_environment, ENVIRONMENT,
};
use cache_middleware::logger_config::configure_logger;
use cache_middleware::CacheMiddleware;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: cache-middleware [serve | healthcheck [URL] | proxy --upstream URL [--listen ADDR] [--rules FILE] | --help]";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve().await,
        Some("healthcheck") => return demo::healthcheck::run(args.get(1).cloned()).await,
        Some("proxy") => proxy(&args[1..]).await,
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let _logs = configure_logger().map_err(|e| e.to_string())?;
    let address = listen_address()?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("cache_backend_duration_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let backend = configured_backend()?;
    demo::warm_cache(&*backend).await;
    let middleware =
        configure_middleware(CacheMiddleware::new(backend)).map_err(|e| e.to_string())?;
    tracing::info!(config = ?middleware, "cache configured");
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local}");
    axum::serve(listener, demo::app(middleware, metrics))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))
}

/// The caching reverse proxy: `--upstream URL [--listen ADDR] [--rules FILE]`.
async fn proxy(args: &[String]) -> Result<(), String> {
    let mut upstream = None;
    let mut listen = "127.0.0.1:8080".to_owned();
    let mut rules = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--upstream" => upstream = Some(value()?),
            "--listen" => listen = value()?,
            "--rules" => rules = Some(value()?),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    let upstream = upstream.ok_or_else(|| format!("proxy needs --upstream URL\n{USAGE}"))?;
    let upstream = upstream.parse().map_err(|_| {
        format!("--upstream {upstream:?} is not a URL (e.g. http://127.0.0.1:8000)")
    })?;
    let config = match rules {
        Some(path) => {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("--rules {path}: {e}"))?;
            cache_middleware::proxy::ProxyConfig::from_toml(&text)
                .map_err(|e| format!("--rules {path}: {e}"))?
        }
        None => cache_middleware::proxy::ProxyConfig::default(),
    };
    let address: SocketAddr = listen
        .parse()
        .map_err(|_| format!("--listen {listen:?} is not an address (e.g. 127.0.0.1:8080)"))?;
    let _logs = configure_logger().map_err(|e| e.to_string())?;
    let middleware = configure_middleware(CacheMiddleware::new(configured_backend()?))
        .map_err(|e| e.to_string())?;
    tracing::info!(
        config = ?middleware,
        rules = config.routes.len(),
        http_semantics = config.http_semantics,
        store_set_cookie = config.store_set_cookie,
        "proxy configured"
    );
    let app = cache_middleware::proxy::router(upstream, &config, middleware)
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    tracing::info!(
        "listening on http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("proxy failed: {e}"))
}

/// `ENVIRONMENT` picks a preset (as in the guide's multi-environment set-up); otherwise
/// `CACHE_BACKEND` and its companion variables decide.
fn configured_backend() -> Result<Arc<dyn Backend>, String> {
    let backend = match std::env::var(ENVIRONMENT) {
        Ok(environment) if !environment.trim().is_empty() => {
            get_backend_for_environment(&environment)
        }
        _ => auto_configure_backend(),
    };
    backend.map_err(|e| e.to_string())
}

fn listen_address() -> Result<SocketAddr, String> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let ip = host
        .parse::<std::net::IpAddr>()
        .map_err(|_| format!("HOST={host:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"))?;
    Ok(SocketAddr::new(ip, port()?))
}

fn port() -> Result<u16, String> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    port.parse()
        .map_err(|_| format!("PORT={port:?} is not a port number (accepted: 0-65535)"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
