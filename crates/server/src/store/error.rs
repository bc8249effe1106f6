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
    /// A stored log entry or meta value could not be decoded: the file is damaged or was
    /// written by an incompatible version.
    #[error("log database {path}: cannot decode {what}: {source}")]
    CorruptLog {
        /// The database file.
        path: PathBuf,
        /// What was being decoded (e.g. `log entry 17`).
        what: String,
        /// What postcard reported.
        #[source]
        source: postcard::Error,
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
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
