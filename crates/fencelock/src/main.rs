//! The `fencelock` command. Everything lives in the library half of this package; see
//! [`fencelock::cli`].

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    fencelock::main(fencelock::cli::Cli::parse())
}
