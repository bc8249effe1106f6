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
            match runtime.block_on(fencelock_harness::run::run(options)) {
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
