//! Restore: the data directory of a new cluster, built offline from a backup file
//! ([`super::backup`]).
//!
//! The directory gets one snapshot file, whose state is the backup's with its token
//! counter moved forward ([`fencelock_core::State::restored`]) and whose membership is
//! the new cluster's voters, and a `cluster-id` file naming the new cluster. The Raft log
//! is empty: at start-up openraft finds the log behind the snapshot and starts the log
//! after it, and the nodes, which all hold the same snapshot, elect a leader among the
//! new voters.
//!
//! The snapshot's last log id keeps the backup's index but has term 0: the new
//! cluster's terms start again from 1 and every entry it appends must sort after the
//! snapshot (a log id sorts by term first).

use super::StoreError;
use super::backup::{self, Backup, BackupError};
use super::disk::Disk;
use super::snapshot::{self, SNAPSHOT_DIR_NAME, SnapshotDir, SnapshotMeta};
use crate::raft::{LogId, NodeId, PeerNode, StoredMembership};
use blake2::{Blake2b512, Digest};
use fencelock_core::RestoreError as CoreRestoreError;
pub use fencelock_core::RestoredSessions;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The file of a data directory that names its cluster.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// The default of `--token-margin`: 2^40 tokens. One token is minted per grant, so this
/// covers an old cluster that went on granting 100,000 locks a second for 127 days
/// after the backup was taken, and a token can still move forward this much more than
/// sixteen million times.
pub const DEFAULT_TOKEN_MARGIN: u64 = 1 << 40;

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The node whose data directory is built.
    pub node_id: NodeId,
    /// The new cluster's voters: id → peer address. Must include `node_id`.
    pub members: BTreeMap<NodeId, String>,
    /// How far the token counter moves forward.
    pub token_margin: u64,
    /// What happens to the backup's sessions and locks.
    pub sessions: RestoredSessions,
    /// Mixed into the new cluster id: restoring the same backup onto the same members
    /// twice needs a different one, or the two clusters would share an id.
    pub cluster_token: String,
}

/// What a restore built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The new cluster's id (the same for every node restored with the same backup,
    /// members and cluster token).
    pub cluster_id: String,
    /// The backup's last token.
    pub backup_last_token: u64,
    /// The restored last token: the new cluster's first grant gets the next one.
    pub token_floor: u64,
    /// Sessions and locks in the restored state.
    pub sessions: u64,
    /// Locks in the restored state.
    pub locks: u64,
    /// The snapshot's last log index.
    pub index: u64,
    /// The snapshot file written.
    pub snapshot_file: PathBuf,
}

/// Why a restore refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup file is damaged or not a backup.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The target directory already holds something.
    #[error("{} is not empty: restore only builds a new data directory", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The options do not make sense.
    #[error("{0}")]
    Options(String),
    /// The state cannot be restored.
    #[error(transparent)]
    State(#[from] CoreRestoreError),
    /// Writing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The id of the cluster restored from `backup_bytes` onto `members` with
/// `cluster_token`: the first 128 bits of BLAKE2b over them, in hex.
pub fn cluster_id(
    backup_bytes: &[u8],
    members: &BTreeMap<NodeId, String>,
    cluster_token: &str,
) -> String {
    let mut hasher = Blake2b512::new();
    let mut part = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    part(b"fencelock restored cluster");
    part(backup_bytes);
    for (id, addr) in members {
        part(&id.to_le_bytes());
        part(addr.as_bytes());
    }
    part(cluster_token.as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// The cluster id recorded in `data_dir`, if any (a cluster formed without a restore
/// has none).
///
/// # Errors
/// The file exists but cannot be read.
pub fn read_cluster_id(data_dir: &Path) -> Result<Option<String>, StoreError> {
    let path = data_dir.join(CLUSTER_ID_FILE);
    let disk = Disk::for_dir(data_dir);
    if !disk.exists(&path) {
        return Ok(None);
    }
    let bytes = disk.read(&path)?;
    Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned()))
}

/// Build `data_dir` for `options.node_id` of a new cluster from `backup_bytes`.
///
/// # Errors
/// See [`RestoreError`]; nothing is written unless the backup checks out, and the
/// directory is refused unless it is missing or empty.
pub fn restore(
    backup_bytes: &[u8],
    data_dir: &Path,
    options: &RestoreOptions,
) -> Result<Restored, RestoreError> {
    if options.node_id == 0 {
        return Err(RestoreError::Options("node ids start at 1".to_owned()));
    }
    if !options.members.contains_key(&options.node_id) {
        return Err(RestoreError::Options(format!(
            "node {} is not one of the peers {:?}",
            options.node_id,
            options.members.keys().collect::<Vec<_>>()
        )));
    }
    if options.members.contains_key(&0) {
        return Err(RestoreError::Options("node ids start at 1".to_owned()));
    }
    let Backup { header, content } = backup::decode(backup_bytes)?;
    let disk = Disk::for_dir(data_dir);
    if disk.exists(data_dir) && !disk.read_dir(data_dir)?.is_empty() {
        return Err(RestoreError::NotEmpty {
            path: data_dir.to_owned(),
        });
    }
    let state = content
        .state
        .restored(options.token_margin, options.sessions)?;
    let log_id = LogId::new(openraft::CommittedLeaderId::new(0, 0), header.index);
    let voters: BTreeSet<NodeId> = options.members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, PeerNode> = options
        .members
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                PeerNode {
                    peer_addr: addr.clone(),
                },
            )
        })
        .collect();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(
            Some(log_id),
            openraft::Membership::new(vec![voters], nodes),
        ),
        snapshot_id: format!("restored-{}", header.index),
    };
    let bytes = snapshot::encode(&meta, &state)?;
    let id = cluster_id(backup_bytes, &options.members, &options.cluster_token);

    disk.create_dir_all(data_dir)?;
    let snapshots = SnapshotDir::open(&disk, &data_dir.join(SNAPSHOT_DIR_NAME))?;
    snapshots.write(&meta, &bytes)?;
    write_durably(
        &disk,
        &data_dir.join(CLUSTER_ID_FILE),
        format!("{id}\n").as_bytes(),
    )?;
    let stats = state.stats();
    Ok(Restored {
        cluster_id: id,
        backup_last_token: header.last_token,
        token_floor: stats.last_token,
        sessions: stats.sessions,
        locks: stats.locks,
        index: header.index,
        snapshot_file: snapshots.file_path(&meta),
    })
}

/// Write `bytes` as `path` through a synced temporary file, a rename and a sync of the
/// directory.
fn write_durably(disk: &Disk, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(snapshot::TMP_SUFFIX);
    let tmp = PathBuf::from(tmp);
    let file = disk.create(&tmp)?;
    file.write_all_at(bytes, 0).map_err(StoreError::io(&tmp))?;
    file.sync_data().map_err(StoreError::sync(&tmp))?;
    disk.rename(&tmp, path)?;
    disk.sync_parent(path)
}
