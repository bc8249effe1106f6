//! `fencelock certs`: a throw-away CA with node and client certificates for local TLS
//! clusters and tests (see [`fencelock_server::certs`]).

use anyhow::{Context, bail};
use clap::Args;
use fencelock_server::certs::write_certs;
use std::path::PathBuf;

/// The flags of `fencelock certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Directory to write the files to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Node ids to make certificates for, comma-separated (e.g. `1,2,3`).
    #[arg(long, value_name = "ID,...", value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// Client names to make client certificates for (for servers that require client
    /// certificates), comma-separated.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Extra DNS names or IP addresses every node certificate carries, comma-separated
    /// (`localhost`, `127.0.0.1` and `::1` are always there).
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Overwrite files that already exist.
    #[arg(long)]
    pub force: bool,
}

/// Writes the files and prints what was written, one line each.
///
/// # Errors
/// A node id of 0, a bad client name or host, an existing file without `--force`, or a
/// write failure.
pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    if args.nodes.contains(&0) {
        bail!("node ids start at 1");
    }
    let mut nodes = args.nodes.clone();
    nodes.sort_unstable();
    nodes.dedup();
    let files = write_certs(&args.out, &nodes, &args.clients, &args.hosts, args.force)
        .with_context(|| format!("cannot make certificates in {}", args.out.display()))?;
    for file in &files {
        println!("{:<28} {}", file.what, file.path.display());
    }
    println!(
        "a throw-away CA for local clusters and tests: its key is not kept, so run this again \
         (with --force) to add nodes or clients"
    );
    Ok(())
}
