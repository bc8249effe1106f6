//! The `fencelock` command, as a library so that its parsing and start-up can be tested:
//! [`cli`] holds the clap types, [`serve`] runs a server node.

pub mod cli;
pub mod serve;

use cli::{Cli, Command};
use std::process::ExitCode;

/// Runs a parsed command line to completion: sets up logging, runs the subcommand, and
/// prints any error (with its causes) to stderr.
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Bad configuration, a node that cannot start, or a failed shutdown.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    cli::init_logging(cli.log_level.as_deref())?;
    match cli.command {
        Command::Serve(args) => serve::run(&args),
    }
}
