//! The `fencelock` command, as a library so that its parsing and start-up can be tested:
//! [`cli`] holds the clap types, [`serve`] runs a server node, [`certs`] makes
//! throw-away TLS certificates.
//! [`client_cmd`] runs the client commands (`lock`, `acquire`, `describe`, ...), with
//! their [`output`] formats and [`exit`] codes; [`demo`] is `fencelock demo`.

pub mod certs;
pub mod check_data;
pub mod cli;
pub mod client_cmd;
pub mod demo;
pub mod exit;
pub mod join;
pub mod output;
pub mod serve;
pub mod snapshot_cmd;

use cli::{Cli, Command};
use std::process::ExitCode;

/// Runs a parsed command line to completion: sets up logging, runs the subcommand, and
/// prints any error (with its causes) to stderr.
pub fn main(cli: Cli) -> ExitCode {
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if exit::should_print(&error) {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(exit::code_of(&error))
        }
    }
}

/// Runs a parsed command line.
///
/// # Errors
/// Bad configuration, a node that cannot start, or a failed shutdown.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    cli::init_logging(
        client_cmd::log_filter(cli.log_level.as_deref(), &cli.command).as_deref(),
        cli.log_format,
    )?;
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::CheckData(args) => check_data::run(&args),
        Command::Snapshot(args) => snapshot_cmd::run(&cli.client, &args),
        command => client_cmd::run(cli.client, command),
    }
}
