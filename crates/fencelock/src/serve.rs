//! `fencelock serve`: builds the configuration, starts the node, and stops it gracefully
//! on SIGTERM or Ctrl-C.

use crate::cli::ServeArgs;
use anyhow::{Context, bail};
use fencelock_server::commit_trace::CommitTrace;
use fencelock_server::config::{Bootstrap, ServerConfig};
use fencelock_server::startup;

/// Runs a server node until SIGTERM or Ctrl-C, then shuts it down gracefully. A second
/// signal during the shutdown abandons it (and the process exits with an error).
///
/// # Errors
/// A bad configuration, a node that cannot start, or a shutdown cut short.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.to_config()?;
    let trace = match &args.commit_trace {
        Some(prefix) => {
            let trace = CommitTrace::to_file(prefix, config.node_id).with_context(|| {
                format!("cannot record a commit trace under {}", prefix.display())
            })?;
            if let Some(path) = trace.path() {
                tracing::info!(path = %path.display(), "recording a commit trace");
            }
            trace
        }
        None => CommitTrace::off(),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("fencelock")
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(serve(config, trace.clone()));
    if let Err(error) = trace.flush() {
        tracing::warn!(%error, "commit trace: the last records were not written");
    }
    served
}

/// Starts the node described by `config`, marking its write path on `trace`, and serves
/// until a stop signal.
///
/// # Errors
/// The node cannot start, or a second signal cut the shutdown short.
pub async fn serve(config: ServerConfig, trace: CommitTrace) -> anyhow::Result<()> {
    // Listen for signals before anything else, so that an early SIGTERM is not lost.
    let mut signals = Signals::new()?;
    match &config.bootstrap {
        Bootstrap::Join if !config.join_via.is_empty() => tracing::info!(
            node_id = config.node_id,
            via = ?config.join_via,
            "joining a cluster through its members (unless already a voter)"
        ),
        Bootstrap::Join => tracing::info!(
            node_id = config.node_id,
            "starting empty; waiting to be added to a cluster"
        ),
        Bootstrap::Members(members) if members.is_empty() => {
            tracing::info!(node_id = config.node_id, "starting a single-node cluster")
        }
        Bootstrap::Members(members) => tracing::info!(
            node_id = config.node_id,
            voters = ?members,
            "starting with initial voters"
        ),
    }
    let running = tokio::select! {
        started = startup::start_traced(config.clone(), trace) => started.context("the node could not start")?,
        signal = signals.next() => {
            tracing::info!(signal, "stop signal during start-up; exiting");
            return Ok(());
        }
    };
    tracing::info!(
        node_id = config.node_id,
        client = %running.client_addr(),
        peer = %running.peer_addr(),
        admin = %running
            .admin_addr()
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/")),
        client_advertise = %config.client_advertise_addr(),
        peer_advertise = %config.peer_advertise_addr(),
        data_dir = %config.data_dir.display(),
        "fencelock serving"
    );

    // Serve while joining: the leader catches this node up through its peer port.
    let signal = tokio::select! {
        joined = crate::join::join(running.node(), &config) => match joined {
            Ok(()) => signals.next().await,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "could not join the cluster; stopping");
                running.shutdown().await;
                return Err(error);
            }
        },
        signal = signals.next() => signal,
    };
    tracing::info!(signal, "shutting down");
    tokio::select! {
        () = running.shutdown() => {}
        signal = signals.next() => {
            bail!("{signal} during shutdown: exiting before it finished");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The stop signals: SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot listen for SIGTERM")?,
        })
    }

    /// Waits for the next stop signal and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = ctrl_c() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            ctrl_c().await
        }
    }
}

async fn ctrl_c() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "SIGINT",
        Err(error) => {
            // Without a Ctrl-C handler only SIGTERM can stop the node; never return.
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending().await
        }
    }
}
