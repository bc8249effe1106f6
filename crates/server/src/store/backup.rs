//! Backup files: a snapshot of a live cluster's applied state, with a header that says
//! what it holds, for `fencelock snapshot save|inspect|restore`.
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FLBK` |
//! | 1 | format version ([`BACKUP_FORMAT_VERSION`]) |
//! | 4 | CRC-32 (IEEE) of every byte after this field, little endian |
//! | 4 | header length `h`, little endian |
//! | h | header: postcard of [`BackupHeader`] |
//! | n | the snapshot, in the node's own snapshot file format ([`super::snapshot`]) |
//!
//! The snapshot inside carries its own header and checksum, and [`decode`] checks both,
//! decodes the state, checks its invariants, and checks that the header's figures are
//! the state's: a file that passes can be restored.

use super::snapshot::{self, SnapshotContent, SnapshotMeta};
use fencelock_core::State;
use serde::{Deserialize, Serialize};

/// The version byte of backup files. Bump it when [`BackupHeader`] changes shape.
pub const BACKUP_FORMAT_VERSION: u8 = 1;

const MAGIC: [u8; 4] = *b"FLBK";
const FIXED_BYTES: usize = MAGIC.len() + 1 + 4 + 4;
/// A header is a few dozen bytes; anything larger is damage, not a header.
const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// What a backup holds, readable without decoding the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The id of the cluster it was taken from (empty for a cluster formed without one).
    pub cluster_id: String,
    /// The node that took it (the leader at the time).
    pub node_id: u64,
    /// The last log index it includes.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The last fencing token the cluster had issued when it was taken.
    pub last_token: u64,
    /// Live sessions.
    pub sessions: u64,
    /// Locks held or waited for.
    pub locks: u64,
    /// Grants in force.
    pub held_grants: u64,
    /// Queued waits.
    pub waiters: u64,
    /// Users.
    pub users: u64,
    /// Roles.
    pub roles: u64,
    /// When it was taken, milliseconds since the Unix epoch (the leader's clock).
    pub taken_at_unix_ms: u64,
    /// The format version of the snapshot inside.
    pub snapshot_format_version: u8,
}

impl BackupHeader {
    /// The header describing `state` as of `meta`, taken by `node_id` at
    /// `taken_at_unix_ms`.
    pub fn describe(
        cluster_id: &str,
        node_id: u64,
        meta: &SnapshotMeta,
        state: &State,
        taken_at_unix_ms: u64,
    ) -> BackupHeader {
        let stats = state.stats();
        let (users, roles) = state.user_and_role_counts();
        let (term, index) = meta
            .last_log_id
            .map_or((0, 0), |id| (id.leader_id.term, id.index));
        BackupHeader {
            cluster_id: cluster_id.to_owned(),
            node_id,
            index,
            term,
            last_token: stats.last_token,
            sessions: stats.sessions,
            locks: stats.locks,
            held_grants: stats.held_grants,
            waiters: stats.waiters,
            users,
            roles,
            taken_at_unix_ms,
            snapshot_format_version: snapshot::format_for(state),
        }
    }
}

/// Why backup bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The bytes are not a sound backup file.
    #[error("not a valid backup: {reason} (at byte {offset})")]
    Corrupt {
        /// Offset of the field found wrong.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Encoding failed (a bug).
    #[error("cannot encode the backup: {0}")]
    Encode(#[from] postcard::Error),
    /// The snapshot could not be encoded (a bug).
    #[error("cannot encode the snapshot: {0}")]
    Snapshot(#[from] super::StoreError),
}

fn corrupt(offset: u64, reason: impl Into<String>) -> BackupError {
    BackupError::Corrupt {
        offset,
        reason: reason.into(),
    }
}

/// Encode a backup of `state` as of `meta`.
///
/// # Errors
/// Only if encoding fails (a bug).
pub fn encode(
    header: &BackupHeader,
    meta: &SnapshotMeta,
    state: &State,
) -> Result<Vec<u8>, BackupError> {
    let header_bytes = postcard::to_allocvec(header)?;
    let snapshot = snapshot::encode(meta, state)?;
    let mut bytes = Vec::with_capacity(FIXED_BYTES + header_bytes.len() + snapshot.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.push(BACKUP_FORMAT_VERSION);
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header_bytes);
    bytes.extend_from_slice(&snapshot);
    let checksum = crc32fast::hash(&bytes[MAGIC.len() + 5..]);
    bytes[MAGIC.len() + 1..MAGIC.len() + 5].copy_from_slice(&checksum.to_le_bytes());
    Ok(bytes)
}

/// A checked backup.
#[derive(Debug)]
pub struct Backup {
    /// Its header.
    pub header: BackupHeader,
    /// The snapshot it holds.
    pub content: SnapshotContent,
}

/// Check and decode backup bytes made by [`encode`].
///
/// # Errors
/// [`BackupError::Corrupt`]: what is wrong and where (magic, version, checksum, header,
/// the snapshot's own checks, or a header that does not describe the snapshot).
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    if bytes.len() < FIXED_BYTES {
        return Err(corrupt(
            bytes.len() as u64,
            format!(
                "{} bytes, shorter than the {FIXED_BYTES}-byte header",
                bytes.len()
            ),
        ));
    }
    if bytes[..4] != MAGIC {
        return Err(corrupt(0, "not a fencelock backup file (bad magic)"));
    }
    if bytes[4] != BACKUP_FORMAT_VERSION {
        return Err(corrupt(
            4,
            format!(
                "backup format version {} (this build reads {BACKUP_FORMAT_VERSION})",
                bytes[4]
            ),
        ));
    }
    let checksum = u32::from_le_bytes(bytes[5..9].try_into().expect("4 bytes"));
    let actual = crc32fast::hash(&bytes[9..]);
    if checksum != actual {
        return Err(corrupt(
            9,
            format!(
                "checksum mismatch (header {checksum:08x}, contents {actual:08x}): the file is damaged or truncated"
            ),
        ));
    }
    let header_len = u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes"));
    if header_len > MAX_HEADER_BYTES || FIXED_BYTES + header_len as usize > bytes.len() {
        return Err(corrupt(
            9,
            format!("header length {header_len} out of range"),
        ));
    }
    let (header_bytes, snapshot_bytes) = bytes[FIXED_BYTES..].split_at(header_len as usize);
    let header: BackupHeader = postcard::from_bytes(header_bytes)
        .map_err(|e| corrupt(FIXED_BYTES as u64, format!("header does not decode: {e}")))?;
    let snapshot_offset = (FIXED_BYTES + header_len as usize) as u64;
    let content = snapshot::decode(snapshot_bytes).map_err(|e| {
        corrupt(
            snapshot_offset + e.offset,
            format!("the snapshot inside: {}", e.reason),
        )
    })?;
    let mut described = BackupHeader::describe(
        &header.cluster_id,
        header.node_id,
        &content.meta,
        &content.state,
        header.taken_at_unix_ms,
    );
    described.snapshot_format_version = header.snapshot_format_version;
    if described != header {
        return Err(corrupt(
            FIXED_BYTES as u64,
            format!(
                "the header does not describe the snapshot inside: header {header:?}, snapshot {described:?}"
            ),
        ));
    }
    Ok(Backup { header, content })
}

#[cfg(test)]
mod tests {
    use super::{BackupHeader, decode, encode};
    use crate::store::snapshot::SnapshotMeta;
    use fencelock_core::State;

    fn sample() -> Vec<u8> {
        let meta = SnapshotMeta::default();
        let state = State::default();
        let header = BackupHeader::describe("c1", 1, &meta, &state, 42);
        encode(&header, &meta, &state).expect("encode")
    }

    #[test]
    fn round_trips() {
        let backup = decode(&sample()).expect("decode");
        assert_eq!(backup.header.cluster_id, "c1");
        assert_eq!(backup.header.taken_at_unix_ms, 42);
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(decode(&damaged).is_err(), "flip at {at} accepted");
            assert!(decode(&bytes[..at]).is_err(), "truncation to {at} accepted");
        }
    }
}
