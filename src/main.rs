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
//!
//! `--help` on each command lists every option with its environment variable and default. Both
//! servers bound what a client can hold (`cache_middleware::server`); the demo's metrics are on a
//! listener of their own (`METRICS_ADDR`, loopback by default).

mod demo;

use cache_middleware::backends::Backend;
use cache_middleware::helpers::{
    auto_configure_backend, configure_middleware, get_backend_for_environment, CACHE_PURGE_TOKEN,
    ENVIRONMENT,
};
use cache_middleware::logger_config::configure_logger;
use cache_middleware::proxy::{ProxyConfig, TrustedProxies};
use cache_middleware::purge::PurgeAccess;
use cache_middleware::server::{serve as serve_app, ServerLimits};
use cache_middleware::{CacheHandle, CacheMiddleware};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// HTTP response caching: the user guide's demo server, or a caching reverse proxy in front of an
/// application in any language. The cache backend comes from the environment (CACHE_BACKEND,
/// REDIS_URL, MEMCACHED_URL, ... or ENVIRONMENT; see the README).
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the demo application (the default).
    Serve(ServeArgs),
    /// A caching reverse proxy in front of an application in any language.
    Proxy(ProxyArgs),
    /// Exit 0 when a server's /health answers 200, 1 otherwise (for container health checks).
    Healthcheck {
        /// The URL to check [default: http://127.0.0.1:$PORT/health]
        url: Option<String>,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    port: u16,
    #[command(flatten)]
    limits: LimitArgs,
    /// Where /metrics and /metrics/summary are served; "off" serves them nowhere.
    #[arg(
        long,
        env = "METRICS_ADDR",
        default_value = "127.0.0.1:9100",
        value_name = "ADDR|off"
    )]
    metrics_addr: String,
}

#[derive(Args, Clone)]
struct ProxyArgs {
    /// The application to forward to (http://host:port).
    #[arg(long, env = "PROXY_UPSTREAM")]
    upstream: String,
    /// Address to listen on.
    #[arg(long, env = "PROXY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Rules file (TOML): fixed TTLs per path, and proxy options (see cache_middleware::proxy).
    #[arg(long, env = "PROXY_RULES")]
    rules: Option<std::path::PathBuf>,
    /// Peers whose X-Forwarded-* and Forwarded fields are kept (comma-separated addresses or
    /// networks); from anyone else they are replaced. Adds to the rules file's list.
    #[arg(long, env = "PROXY_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

#[derive(Args, Clone, Copy)]
struct LimitArgs {
    /// Seconds a client has to send a request head; also the longest idle keep-alive.
    #[arg(long, env = "SERVER_HEADER_TIMEOUT", default_value = "10", value_parser = seconds, value_name = "SECONDS")]
    header_timeout: Duration,
    /// Seconds a request body may stay silent before the request fails (408).
    #[arg(long, env = "SERVER_BODY_TIMEOUT", default_value = "30", value_parser = seconds, value_name = "SECONDS")]
    body_timeout: Duration,
    /// Connections served at once (kept below the descriptor limit).
    #[arg(long, env = "SERVER_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
}

impl LimitArgs {
    fn limits(self) -> ServerLimits {
        ServerLimits {
            header_read_timeout: self.header_timeout,
            body_read_timeout: self.body_timeout,
            max_connections: self.max_connections as usize,
            ..ServerLimits::default()
        }
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| "expected seconds above 0 and at most 86400, e.g. 10 or 0.5".to_owned())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Healthcheck { url }) => return demo::healthcheck::run(url).await,
        Some(Command::Proxy(args)) => proxy(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let _logs = configure_logger().map_err(|e| e.to_string())?;
    let address = SocketAddr::new(args.host, args.port);
    let metrics_addr = match args.metrics_addr.trim() {
        "off" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            format!("METRICS_ADDR={text:?} is not valid: expected an address such as 127.0.0.1:9100, or off")
        })?),
    };
    let backend = configured_backend()?;
    demo::warm_cache(&*backend).await;
    let middleware =
        configure_middleware(CacheMiddleware::new(backend)).map_err(|e| e.to_string())?;
    tracing::info!(config = ?middleware, "cache configured");
    if let Some(metrics_addr) = metrics_addr {
        let recorder = install_metrics()?;
        let listener = bind(metrics_addr).await?;
        tracing::info!("metrics on http://{}/metrics", local(&listener)?);
        let app = demo::metrics_app(middleware.handle(), recorder);
        tokio::spawn(serve_app(
            listener,
            app,
            ServerLimits::default(),
            std::future::pending(),
        ));
    }
    let purge = purge_access(middleware.handle())?;
    let mut app = demo::app(middleware);
    if let Some(purge) = purge {
        app = purge.serve_on(app);
    }
    let listener = bind(address).await?;
    tracing::info!("listening on http://{}", local(&listener)?);
    serve_app(listener, app, args.limits.limits(), shutdown_signal()).await;
    Ok(())
}

fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("cache_backend_duration_seconds".into()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The caching reverse proxy.
async fn proxy(args: ProxyArgs) -> Result<(), String> {
    let upstream = args.upstream.parse().map_err(|_| {
        format!(
            "--upstream {:?} is not a URL (e.g. http://127.0.0.1:8000)",
            args.upstream
        )
    })?;
    let mut config = match &args.rules {
        Some(path) => {
            let shown = path.display();
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--rules {shown}: {e}"))?;
            ProxyConfig::from_toml(&text).map_err(|e| format!("--rules {shown}: {e}"))?
        }
        None => ProxyConfig::default(),
    };
    TrustedProxies::parse(args.trusted_proxies.iter().map(String::as_str))
        .map_err(|e| format!("PROXY_TRUSTED_PROXIES / --trusted-proxies: {e}"))?;
    config.trusted_proxies.extend(args.trusted_proxies);
    let _logs = configure_logger().map_err(|e| e.to_string())?;
    let middleware = configure_middleware(CacheMiddleware::new(configured_backend()?))
        .map_err(|e| e.to_string())?;
    tracing::info!(
        config = ?middleware,
        rules = config.routes.len(),
        http_semantics = config.http_semantics,
        store_set_cookie = config.store_set_cookie,
        honor_request_cache_control = config.honor_request_cache_control,
        trusted_proxies = config.trusted_proxies.len(),
        "proxy configured"
    );
    let purge = purge_access(middleware.handle())?;
    let mut app = cache_middleware::proxy::router(upstream, &config, middleware)
        .map_err(|e| e.to_string())?;
    if let Some(purge) = purge {
        app = purge.normalizing_paths().serve_on(app);
    }
    let listener = bind(args.listen).await?;
    tracing::info!("listening on http://{}", local(&listener)?);
    serve_app(listener, app, args.limits.limits(), shutdown_signal()).await;
    Ok(())
}

async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))
}

fn local(listener: &tokio::net::TcpListener) -> Result<SocketAddr, String> {
    listener.local_addr().map_err(|e| e.to_string())
}

/// `ENVIRONMENT` picks a preset (as in the guide's multi-environment set-up); otherwise
/// `CACHE_BACKEND` and its companion variables decide.
/// `PURGE` requests, when `CACHE_PURGE_TOKEN` is set (absent otherwise).
fn purge_access(handle: CacheHandle) -> Result<Option<PurgeAccess>, String> {
    let Ok(token) = std::env::var(CACHE_PURGE_TOKEN) else {
        return Ok(None);
    };
    if token.trim().is_empty() {
        return Ok(None);
    }
    tracing::info!("PURGE requests accepted with the configured token");
    PurgeAccess::new(handle, token.trim())
        .map(Some)
        .map_err(|e| format!("{CACHE_PURGE_TOKEN}: {e}"))
}

fn configured_backend() -> Result<Arc<dyn Backend>, String> {
    let backend = match std::env::var(ENVIRONMENT) {
        Ok(environment) if !environment.trim().is_empty() => {
            get_backend_for_environment(&environment)
        }
        _ => auto_configure_backend(),
    };
    backend.map_err(|e| e.to_string())
}

/// The demo's port, for the health check's default URL.
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
