//! `fencelock-client-load`: the Rust client's side of `scripts/bench-clients.sh`, which
//! runs the same loop with the Python package and the Go module against the same cluster
//! (docs/benchmarks.md, "Clients in other languages").
//!
//! One `Client`, `--clients` sessions, one worker per session taking and releasing lock
//! `--name` until `--ops` pairs are done in all or `--max-secs` pass; prints one JSON line
//! (`ops`, `secs`, `errors`, `p50_ms`, `p99_ms`).
//!
//! ```text
//! fencelock-client-load --endpoints 127.0.0.1:7001 --name bench/seq --clients 1 --ops 2000
//! ```

use anyhow::{Result, bail};
use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Command-line options (the same in every language's driver).
#[derive(Parser, Debug)]
#[command(name = "fencelock-client-load")]
struct Args {
    /// Client addresses of the cluster's nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// The lock every worker takes and releases.
    #[arg(long)]
    name: String,
    /// Sessions, one worker each (1: seq; more: contended on one name).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Acquire + release pairs in all.
    #[arg(long, default_value_t = 2000)]
    ops: u64,
    /// Upper bound of the timed loop, seconds.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
    /// Session TTL, seconds.
    #[arg(long, default_value_t = 10.0)]
    ttl: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.clients == 0 || args.clients > 1024 || args.max_secs <= 0.0 {
        bail!("--clients must be 1..=1024 and --max-secs positive");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let line = runtime.block_on(run(args))?;
    println!("{line}");
    Ok(())
}

async fn run(args: Args) -> Result<serde_json::Value> {
    let client = fencelock_client::ClientBuilder::new(args.endpoints.clone())
        .retry_deadline(Duration::from_secs(30))
        .connect()
        .await?;
    let mut sessions = Vec::new();
    for _ in 0..args.clients {
        let session = client.session(Duration::from_secs_f64(args.ttl)).await?;
        // Warm-up, not timed: one pair per session.
        session.lock(&args.name).await?.release().await?;
        sessions.push(session);
    }
    let claimed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.max_secs);
    let mut workers = Vec::new();
    for session in sessions {
        let (claimed, errors, name, total) =
            (claimed.clone(), errors.clone(), args.name.clone(), args.ops);
        workers.push(tokio::spawn(async move {
            let mut took = Vec::new();
            while claimed.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t0 = Instant::now();
                let pair = async { session.lock(&name).await?.release().await };
                match pair.await {
                    Ok(()) => took.push(t0.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let _ = session.close().await;
            took
        }));
    }
    let mut took = Vec::new();
    for worker in workers {
        took.extend(worker.await?);
    }
    let secs = start.elapsed().as_secs_f64();
    took.sort();
    let quantile = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    Ok(serde_json::json!({
        "ops": took.len(),
        "secs": secs,
        "errors": errors.load(Ordering::Relaxed),
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
    }))
}
