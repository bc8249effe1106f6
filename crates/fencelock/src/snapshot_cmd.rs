//! `fencelock snapshot save|inspect|restore`: backups of a live cluster, and new
//! clusters built from them (see [`fencelock_server::store::backup`] and
//! [`fencelock_server::store::restore`]).

use crate::cli::{Peers, parse_peers};
use crate::client_cmd::ClientOpts;
use crate::output::{Output, print_json};
use anyhow::Context;
use clap::{Args, Subcommand};
use fencelock_server::store::backup::{self, BackupHeader};
use fencelock_server::store::restore::{
    self, DEFAULT_TOKEN_MARGIN, RestoreOptions, Restored, RestoredSessions,
};
use serde_json::json;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The arguments of `fencelock snapshot`.
#[derive(Debug, Clone, Args)]
pub struct SnapshotArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

/// The subcommands of `fencelock snapshot`.
#[derive(Debug, Clone, Subcommand)]
pub enum SnapshotCommand {
    /// Take a backup of the live cluster at --endpoints into FILE (needs `admin` on every
    /// lock when auth is on): a consistent snapshot of the leader's applied state, with a
    /// header and a checksum, written to FILE.tmp, synced, checked, then renamed.
    Save {
        /// The backup file to write.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check a backup file's checksums and print its header and counts (`--output json`
    /// for scripts). Exit 1 if the file is damaged.
    Inspect {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Build the data directory of one node of a NEW cluster from a backup, offline. Run
    /// it for every node of the new cluster with the same FILE, --peers and
    /// --cluster-token, then start each node with `serve --data-dir DIR --id N`.
    Restore(RestoreArgs),
}

/// The arguments of `fencelock snapshot restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The data directory to build (missing or empty; anything else is refused).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// This node's id in the new cluster.
    #[arg(long, value_name = "ID")]
    pub id: u64,
    /// The new cluster's voters, `ID=HOST:PORT` of each peer listener, comma-separated,
    /// this node included (as `serve --peers`).
    #[arg(long, value_name = "ID=ADDR,...", value_parser = parse_peers)]
    pub peers: Peers,
    /// Move the token counter forward by this many tokens, so that the new cluster's
    /// grants are above every token the old cluster may have issued after the backup
    /// (one per grant). The default, 2^40, covers 100,000 grants a second for 127 days.
    #[arg(long, value_name = "TOKENS", default_value_t = DEFAULT_TOKEN_MARGIN)]
    pub token_margin: u64,
    /// Keep the backup's sessions and their locks (each lease starts again at its full
    /// TTL under the new cluster's first leader); by default they are dropped.
    #[arg(long)]
    pub keep_sessions: bool,
    /// Mixed into the new cluster's id: give a fresh one when restoring the same backup
    /// onto the same peers a second time.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub cluster_token: String,
}

/// Run `fencelock snapshot ...`.
///
/// # Errors
/// What failed; a damaged backup is refused with what is wrong and where.
pub fn run(opts: &ClientOpts, args: &SnapshotArgs) -> anyhow::Result<()> {
    match &args.command {
        SnapshotCommand::Save { file } => save(opts, file),
        SnapshotCommand::Inspect { file } => inspect(opts.output, file),
        SnapshotCommand::Restore(args) => restore_cmd(opts.output, args),
    }
}

fn save(opts: &ClientOpts, file: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fencelock-client")
        .build()
        .context("cannot start the async runtime")?;
    let bytes = runtime.block_on(async {
        let client = crate::client_cmd::connect(opts).await?;
        // A large state takes a while to encode and send: each attempt gets at least a
        // minute.
        client
            .save_snapshot(opts.timeout.max(Duration::from_secs(60)))
            .await
            .context("cannot take the backup")
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let bytes = bytes?;
    // Check what arrived before it replaces anything.
    let backup = backup::decode(&bytes).context("the backup received does not check out")?;
    write_synced(file, &bytes)?;
    print_header(opts.output, &backup.header, Some(file), bytes.len());
    Ok(())
}

/// Write `bytes` as `file` through `file.tmp`, synced, renamed, the directory synced.
fn write_synced(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = File::create(&tmp)
        .and_then(|mut out| {
            out.write_all(bytes)?;
            out.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error).with_context(|| format!("cannot write {}", file.display()));
    }
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

fn read_backup(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

fn inspect(output: Output, file: &Path) -> anyhow::Result<()> {
    let bytes = read_backup(file)?;
    let backup = backup::decode(&bytes).with_context(|| format!("{}", file.display()))?;
    print_header(output, &backup.header, None, bytes.len());
    Ok(())
}

fn print_header(output: Output, header: &BackupHeader, saved_to: Option<&Path>, bytes: usize) {
    match output {
        Output::Json => {
            let mut value = json!({
                "cluster_id": header.cluster_id,
                "node_id": header.node_id,
                "index": header.index,
                "term": header.term,
                "last_token": header.last_token,
                "sessions": header.sessions,
                "locks": header.locks,
                "held_grants": header.held_grants,
                "waiters": header.waiters,
                "users": header.users,
                "roles": header.roles,
                "taken_at_unix_ms": header.taken_at_unix_ms,
                "format_version": backup::BACKUP_FORMAT_VERSION,
                "snapshot_format_version": header.snapshot_format_version,
                "bytes": bytes,
                "checksum": "ok",
            });
            if let Some(file) = saved_to {
                value["file"] = json!(file.display().to_string());
            }
            print_json(&value, false);
        }
        Output::Human => {
            if let Some(file) = saved_to {
                println!("saved {} ({bytes} bytes)", file.display());
            }
            let cluster = if header.cluster_id.is_empty() {
                "(none)"
            } else {
                &header.cluster_id
            };
            println!(
                "format version   {} (snapshot {})",
                backup::BACKUP_FORMAT_VERSION,
                header.snapshot_format_version
            );
            println!("checksum         ok");
            println!("cluster id       {cluster}");
            println!("taken by node    {}", header.node_id);
            println!("taken at (ms)    {}", header.taken_at_unix_ms);
            println!("index            {}", header.index);
            println!("term             {}", header.term);
            println!("last token       {}", header.last_token);
            println!("sessions         {}", header.sessions);
            println!("locks            {}", header.locks);
            println!("held grants      {}", header.held_grants);
            println!("waiters          {}", header.waiters);
            println!("users            {}", header.users);
            println!("roles            {}", header.roles);
        }
    }
}

fn restore_cmd(output: Output, args: &RestoreArgs) -> anyhow::Result<()> {
    let bytes = read_backup(&args.file)?;
    let options = RestoreOptions {
        node_id: args.id,
        members: args.peers.0.clone(),
        token_margin: args.token_margin,
        sessions: if args.keep_sessions {
            RestoredSessions::Keep
        } else {
            RestoredSessions::Drop
        },
        cluster_token: args.cluster_token.clone(),
    };
    let restored: Restored = restore::restore(&bytes, &args.data_dir, &options)
        .with_context(|| format!("cannot restore {}", args.file.display()))?;
    match output {
        Output::Json => print_json(
            &json!({
                "data_dir": args.data_dir.display().to_string(),
                "node_id": args.id,
                "cluster_id": restored.cluster_id,
                "index": restored.index,
                "backup_last_token": restored.backup_last_token,
                "token_floor": restored.token_floor,
                "first_token": restored.token_floor + 1,
                "sessions": restored.sessions,
                "locks": restored.locks,
            }),
            false,
        ),
        Output::Human => {
            println!(
                "restored node {} of cluster {} into {}",
                args.id,
                restored.cluster_id,
                args.data_dir.display()
            );
            println!(
                "tokens: the backup's last token was {}; moved forward by {} to {}: the new cluster's first grant gets token {}",
                restored.backup_last_token,
                args.token_margin,
                restored.token_floor,
                restored.token_floor + 1
            );
            println!(
                "sessions {} and locks {} kept{}",
                restored.sessions,
                restored.locks,
                if args.keep_sessions {
                    ""
                } else {
                    " (dropped: --keep-sessions keeps them)"
                }
            );
        }
    }
    Ok(())
}
