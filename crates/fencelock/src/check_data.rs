//! `fencelock check-data DIR`: verify a node's data directory offline, without modifying
//! it, and print what was found (see [`fencelock_server::store::check`]).
//!
//! Exit status: 0 when the directory is clean, 1 when problems were found (or the check
//! itself failed), 2 on a usage error (such as `DIR` not being a directory).

use anyhow::bail;
use clap::Args;
use fencelock_server::store::check::check_data_dir;
use std::path::PathBuf;

/// The arguments of `fencelock check-data`.
#[derive(Debug, Clone, Args)]
pub struct CheckDataArgs {
    /// The data directory to verify (a node's `--data-dir`). Nothing in it is changed;
    /// stop the node first for an exact answer.
    #[arg(value_name = "DIR", value_parser = existing_dir)]
    pub dir: PathBuf,
}

fn existing_dir(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if path.is_dir() {
        Ok(path)
    } else if path.exists() {
        Err(format!("{value} is not a directory"))
    } else {
        Err(format!("{value} does not exist"))
    }
}

/// Check `args.dir` and print the report to stdout.
///
/// # Errors
/// Problems were found (the report says which); the caller exits with status 1.
pub fn run(args: &CheckDataArgs) -> anyhow::Result<()> {
    let report = check_data_dir(&args.dir);
    println!("{report}");
    if report.is_clean() {
        Ok(())
    } else {
        bail!(
            "{} problem{} found in {}",
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" },
            args.dir.display()
        )
    }
}
