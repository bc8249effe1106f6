//! Errors of the storage layer, and their mapping to openraft's `StorageError`.

use std::path::PathBuf;

/// Why opening, reading or writing the Raft log or a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The log database (redb) failed.
    #[error("log database {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// A value could not be encoded with postcard (a bug: every stored type is encodable).
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
    },
    /// The log database file cannot be opened: damaged (e.g. truncated), not a redb file,
    /// or in use by another process. Start-up refuses.
    #[error("cannot open the log database {path}: {reason}")]
    OpenDatabase {
        /// The database file.
        path: PathBuf,
        /// What redb reported (or the panic it raised).
        reason: String,
    },
    /// A stored log entry failed verification (checksum, version, decoding, index) or is
    /// missing from the middle of the log. See [`crate::store::log`] for what start-up
    /// does about it.
    #[error("log database {path}: entry {index}: {reason}")]
    CorruptLog {
        /// The database file.
        path: PathBuf,
        /// The log index of the bad or missing entry.
        index: u64,
        /// What is wrong, and why start-up refuses.
        reason: String,
    },
    /// A meta record of the log database (the vote, the committed or the last purged log
    /// id, the format marker) failed verification. Start-up refuses: a node must never
    /// forget its vote or guess what was committed.
    #[error("log database {path}: record `{record}`: {reason}")]
    CorruptRecord {
        /// The database file.
        path: PathBuf,
        /// The record's key.
        record: String,
        /// What is wrong.
        reason: String,
    },
    /// A snapshot file on disk is damaged (bad magic, version, length or checksum, or
    /// undecodable). Start-up refuses to skip it silently.
    #[error("snapshot file {path} is corrupt: {reason}")]
    CorruptSnapshotFile {
        /// The snapshot file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Snapshot bytes received from the leader are damaged or do not match their metadata.
    #[error("received snapshot is invalid: {reason}")]
    InvalidSnapshot {
        /// What is wrong with it.
        reason: String,
    },
    /// Syncing a file or directory failed (or a direct, synchronous write, which is its
    /// own sync): what reached the disk since the last sync that succeeded is unknown, so
    /// that data must not be taken for durable, and the sync must not be retried as if it
    /// could make it so.
    #[error("syncing {path}: {source}")]
    Sync {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn sync(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Sync { path, source }
    }

    /// Whether a later try of the same write may not meet this error: the disk (or the
    /// quota) is full, or the log database is being reopened after that.
    pub fn is_retryable_write(&self) -> bool {
        let retryable_io = |source: &std::io::Error| {
            crate::space::io_is_no_space(source) || source.kind() == std::io::ErrorKind::WouldBlock
        };
        match self {
            StoreError::Io { source, .. } => retryable_io(source),
            StoreError::Database { source, .. } => match source {
                redb::Error::Io(source) => retryable_io(source),
                // redb fails every call after an I/O error, until it is reopened; an
                // error that was not a lack of space stopped the process before this one.
                redb::Error::PreviousIo => true,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether this is an error of the operating system (after a failed write or sync,
    /// what the disk holds is unknown), as opposed to damaged data or a bug.
    pub fn is_os_failure(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error().is_some(),
            StoreError::Database { source, .. } => matches!(source, redb::Error::Io(_)),
            StoreError::Sync { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
