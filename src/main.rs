//! The demo server: the user guide's example application on the cache middleware.
//!
//! `cargo run --release` serves it on `HOST`:`PORT` (default 127.0.0.1:8000).

mod demo;

use cache_middleware::backends::Backend;
use cache_middleware::helpers::{auto_configure_backend, get_backend_for_environment, ENVIRONMENT};
use cache_middleware::CacheMiddleware;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let address = listen_address()?;
    let backend = configured_backend()?;
    demo::warm_cache(&*backend).await;
    let middleware = CacheMiddleware::new(backend);
    tracing::info!(config = ?middleware, "cache configured");
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!("listening on http://{local}");
    axum::serve(listener, demo::app(middleware))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"))
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
    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let port: u16 = port
        .parse()
        .map_err(|_| format!("PORT={port:?} is not a port number (accepted: 0-65535)"))?;
    let ip = host
        .parse::<std::net::IpAddr>()
        .map_err(|_| format!("HOST={host:?} is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)"))?;
    Ok(SocketAddr::new(ip, port))
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
