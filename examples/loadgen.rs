//! A small closed-loop load generator for the fault report and load scripts.
//!
//! `cargo run --release --example loadgen -- URL_TEMPLATE CONNECTIONS SECONDS [KEYS]` sends GET
//! requests for `SECONDS` over `CONNECTIONS` keep-alive connections, replacing `{i}` in the URL with
//! `0..KEYS` in turn, and prints one CSV line per request: `ms_since_start,status,latency_us,x_cache`
//! (status 0 is a connection error).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::io::Write;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: loadgen URL_TEMPLATE CONNECTIONS SECONDS [KEYS]");
        std::process::exit(2);
    }
    let template = args[1].clone();
    let connections: usize = args[2].parse().expect("CONNECTIONS is a number");
    let seconds: u64 = args[3].parse().expect("SECONDS is a number");
    let keys: usize = args
        .get(4)
        .map_or(1, |k| k.parse().expect("KEYS is a number"));
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build_http::<Empty<Bytes>>();
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let workers = (0..connections).map(|worker| {
        let client = client.clone();
        let template = template.clone();
        tokio::spawn(async move {
            let mut rows = Vec::new();
            let mut i = worker;
            while Instant::now() < end {
                let uri = template.replace("{i}", &(i % keys).to_string());
                i += connections;
                let sent = Instant::now();
                let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                    let response = client.get(uri.parse().unwrap()).await?;
                    let x_cache = response
                        .headers()
                        .get("x-cache")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let status = response.status().as_u16();
                    response.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, x_cache))
                })
                .await;
                let (status, x_cache) = match outcome {
                    Ok(Ok(result)) => result,
                    _ => (0, "-".to_owned()),
                };
                let at = sent.duration_since(start).as_millis();
                rows.push(format!(
                    "{at},{status},{},{x_cache}",
                    sent.elapsed().as_micros()
                ));
            }
            rows
        })
    });
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for worker in futures_util::future::join_all(workers).await {
        for row in worker.unwrap() {
            writeln!(out, "{row}").unwrap();
        }
    }
}
