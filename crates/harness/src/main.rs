//! `fencelock-harness`: see the crate docs of `fencelock_harness`.

use clap::Parser;
use fencelock_harness::cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fencelock-harness: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Client(args)) => {
            match runtime.block_on(fencelock_harness::client::run_client(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fencelock-harness client: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Holder(args)) => {
            match runtime.block_on(fencelock_harness::scenarios::run_holder(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("fencelock-harness holder: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Check { history }) => {
            let events = match fencelock_harness::history::read_history(&history) {
                Ok(events) => events,
                Err(error) => {
                    eprintln!("fencelock-harness check: {error:#}");
                    return ExitCode::from(2);
                }
            };
            let evidence = fencelock_harness::check::Evidence {
                history: events,
                ..Default::default()
            };
            use fencelock_harness::check::{exclusion, linearizable, lockdelay, tokens};
            let verdicts = [
                tokens::check(&evidence),
                exclusion::check(&evidence),
                linearizable::check(&evidence, linearizable::DEFAULT_STEP_BUDGET),
                lockdelay::check(&evidence),
            ];
            for verdict in &verdicts {
                println!(
                    "{:<14} {:<5} checked {:>7}  {}",
                    verdict.checker,
                    if verdict.valid { "PASS" } else { "FAIL" },
                    verdict.checked,
                    verdict
                        .first()
                        .or(verdict.notes.first().map(String::as_str))
                        .unwrap_or("-")
                );
            }
            if verdicts.iter().all(|v| v.valid) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        None => {
            let options = match cli.run.to_options() {
                Ok(options) => options,
                Err(error) => {
                    eprintln!("fencelock-harness: {error:#}");
                    return ExitCode::from(2);
                }
            };
            println!(
                "fencelock-harness: seed {} (replay with --seed {}), {} nodes, {:?}, nemesis [{}]{}, output in {}",
                options.seed,
                options.seed,
                options.nodes,
                options.time,
                options
                    .nemesis
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(","),
                if options.unfenced {
                    ", UNFENCED control run"
                } else {
                    ""
                },
                options.out.display()
            );
            // An interrupted run ends by dropping the runtime, and with it every task and
            // the cluster: its processes are killed and its tmpfs mounts unmounted.
            let outcome = runtime.block_on(async {
                tokio::select! {
                    result = fencelock_harness::run::run(options) => Some(result),
                    () = interrupted() => None,
                }
            });
            let Some(outcome) = outcome else {
                drop(runtime);
                eprintln!("fencelock-harness: interrupted; the cluster was stopped");
                return ExitCode::from(130);
            };
            match outcome {
                Ok(report) => {
                    println!("{}", report.summary);
                    println!(
                        "history: {0}/history.jsonl, plot: {0}/latency.svg, took {1:.1}s",
                        report.out.display(),
                        report.elapsed.as_secs_f64()
                    );
                    if report.valid() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(error) => {
                    eprintln!("fencelock-harness: {error:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        // Without signal handlers, the default actions stay: never resolve.
        _ => std::future::pending().await,
    }
}
