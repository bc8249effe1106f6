//! The `fenced-kv` command: serves the fenced key-value store of
//! [`fencelock_fenced_kv`] until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use fencelock_fenced_kv::{
    DEFAULT_LOG_CAPACITY, DEFAULT_MAX_BODY, FencedKv, FencedKvOptions, serve_kv,
};
use tracing_subscriber::EnvFilter;

/// The example fenced service of fencelock: a key-value store over HTTP that admits a
/// write only if its fencing token is not stale, and logs every decision.
#[derive(Debug, Parser)]
#[command(name = "fenced-kv", version)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:7301")]
    listen: SocketAddr,
    /// Keep values and tokens in this redb file (survives restarts); in memory without.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Also append every decision to this file as JSON lines (an existing file is
    /// continued).
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// ONLY FOR PROVING A CHECKER CAN FAIL: admit every write without the token check
    /// (tokens are still logged). Protects nothing.
    #[arg(long)]
    unfenced: bool,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Decisions kept in memory for `GET /log`; the oldest are dropped beyond it.
    #[arg(long, value_name = "ENTRIES", default_value_t = DEFAULT_LOG_CAPACITY)]
    log_capacity: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fenced-kv: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fenced-kv: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    // Listen for signals first, so that an early SIGTERM is not lost.
    let stop = stop_signal()?;
    let options = FencedKvOptions {
        data: cli.data,
        log_file: cli.log_file,
        unfenced: cli.unfenced,
        max_body: cli.max_body,
        log_capacity: cli.log_capacity,
    };
    let kv = tokio::task::spawn_blocking(move || FencedKv::open(options)).await??;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", cli.listen))?;
    let local = listener.local_addr()?;
    println!("fenced-kv listening on {local}");
    serve_kv(listener, Arc::new(kv), stop).await?;
    Ok(())
}

/// Completes on the first SIGTERM or Ctrl-C (SIGINT).
fn stop_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "stopping");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("stopping");
        })
    }
}
