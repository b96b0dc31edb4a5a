//! `cache-middleware healthcheck`: a probe for container health checks that needs no curl in the
//! image. One HTTP/1.1 GET over plain TCP; exit 0 on a 200 within 3 seconds, 1 otherwise.

use std::process::ExitCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn run(url: Option<String>) -> ExitCode {
    let url = match url {
        Some(url) => url,
        None => match crate::port() {
            Ok(port) => format!("http://127.0.0.1:{port}/health"),
            Err(message) => return fail(&message),
        },
    };
    match tokio::time::timeout(Duration::from_secs(3), probe(&url)).await {
        Ok(Ok(200)) => ExitCode::SUCCESS,
        Ok(Ok(status)) => fail(&format!("{url} answered {status}")),
        Ok(Err(message)) => fail(&format!("{url}: {message}")),
        Err(_) => fail(&format!("{url}: no answer within 3 s")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("unhealthy: {message}");
    ExitCode::FAILURE
}

/// The status code of `GET url` (`http://host:port/path` only).
async fn probe(url: &str) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are probed")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await.map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })
}
