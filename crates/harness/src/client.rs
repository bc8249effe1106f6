//! `fencelock-harness client`: the workload client as a separate process. It writes its
//! history to a file with the run's time base, which the run merges when it exits.

use crate::cli::ClientArgs;
use crate::history::Recorder;
use crate::workload::{WorkerConfig, run_worker};
use std::time::Duration;

/// Run the client process's workload to the end.
///
/// # Errors
/// The history file cannot be created.
pub async fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let recorder = Recorder::new(args.base_ns, Some(&args.history))?;
    let config = WorkerConfig {
        name: args.name,
        endpoints: args.endpoints,
        kv: args.kv,
        locks: args.locks,
        ttl: Duration::from_millis(args.ttl_ms),
        max_ops: args.max_ops,
        duration: Duration::from_millis(args.time_ms),
        seed: args.seed,
        hold: None,
        close_at_end: true,
        lease_slack: Duration::from_millis(args.lease_slack_ms),
        multi_lock: false,
    };
    let leftovers = run_worker(config, recorder.clone()).await;
    drop(leftovers);
    recorder.flush();
    Ok(())
}
