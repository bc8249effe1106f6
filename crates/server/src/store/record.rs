//! The byte format of every value in the log database: a small header with a version and
//! a checksum, then the postcard payload.
//!
//! | bytes | field |
//! |---|---|
//! | 1 | record version ([`RECORD_VERSION`]) |
//! | 4 | CRC-32 (IEEE), little endian, of the record's key bytes followed by the payload |
//! | n | payload: postcard of the value (a log entry, a vote, a log id) |
//!
//! The key bytes are the entry's index as 8 little-endian bytes for log entries, and the
//! key's UTF-8 bytes for meta records, so a record found under the wrong key fails its
//! checksum too. A decoded entry must also carry the index it is stored under, and no
//! bytes may follow the payload.
//!
//! Decoding never trusts the bytes: every failure is a [`RecordError`], never a panic, and
//! a record longer than [`MAX_RECORD_BYTES`] is refused before it is decoded.

use crate::raft::TypeConfig;
use openraft::Entry;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version byte at the start of every record. Bump it when the layout changes; other
/// versions are refused rather than misread.
pub const RECORD_VERSION: u8 = 1;

/// Bytes before the payload: version and checksum.
pub const RECORD_HEADER_BYTES: usize = 1 + 4;

/// The largest record accepted (a batch of commands is far smaller; the peer transport
/// caps a whole message at 64 MiB).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// Why a stored record cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the header.
    #[error("{len} bytes, shorter than the {RECORD_HEADER_BYTES}-byte record header")]
    Short {
        /// The record's length.
        len: usize,
    },
    /// Longer than [`MAX_RECORD_BYTES`].
    #[error("{len} bytes, more than the {MAX_RECORD_BYTES}-byte limit")]
    TooLong {
        /// The record's length.
        len: usize,
    },
    /// An unknown record version (damage, or a file from another format).
    #[error("record version {found} (this build reads {RECORD_VERSION})")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The checksum does not match the key and payload.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The checksum in the header.
        stored: u32,
        /// The checksum of what is there.
        computed: u32,
    },
    /// The checksum matches but postcard cannot decode the payload (a bug, or a file
    /// written by an incompatible build).
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// Bytes follow the decoded payload.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// A log entry stored under one index carries another.
    #[error("the entry carries index {carried}")]
    WrongIndex {
        /// The index inside the entry.
        carried: u64,
    },
}

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize()
}

/// Encode `value` as the record stored under `key`, reusing `buffer`'s allocation.
///
/// # Errors
/// Only if postcard cannot encode the value (a bug).
pub fn encode<T: Serialize + ?Sized>(
    key: &[u8],
    value: &T,
    mut buffer: Vec<u8>,
) -> Result<Vec<u8>, postcard::Error> {
    buffer.clear();
    buffer.resize(RECORD_HEADER_BYTES, 0);
    let mut buffer = postcard::to_extend(value, buffer)?;
    let crc = checksum(key, &buffer[RECORD_HEADER_BYTES..]);
    buffer[0] = RECORD_VERSION;
    buffer[1..RECORD_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    Ok(buffer)
}

/// Check the header and checksum of the record stored under `key` and decode its payload.
///
/// # Errors
/// See [`RecordError`].
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, RecordError> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(RecordError::Short { len: bytes.len() });
    }
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLong { len: bytes.len() });
    }
    let (header, payload) = bytes.split_at(RECORD_HEADER_BYTES);
    if header[0] != RECORD_VERSION {
        return Err(RecordError::Version { found: header[0] });
    }
    let stored = u32::from_le_bytes(header[1..].try_into().expect("4 bytes"));
    let computed = checksum(key, payload);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    let (value, rest) =
        postcard::take_from_bytes(payload).map_err(|e| RecordError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RecordError::Trailing(rest.len()));
    }
    Ok(value)
}

/// The key bytes covered by a log entry's checksum.
pub fn entry_key(index: u64) -> [u8; 8] {
    index.to_le_bytes()
}

/// Encode a log entry as stored under its own index.
///
/// # Errors
/// Only if postcard cannot encode the entry (a bug).
pub fn encode_entry(
    entry: &Entry<TypeConfig>,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, postcard::Error> {
    encode(&entry_key(entry.log_id.index), entry, buffer)
}

/// Check and decode the log entry stored under `index`.
///
/// # Errors
/// See [`RecordError`]; [`RecordError::WrongIndex`] if it carries another index.
pub fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry<TypeConfig>, RecordError> {
    let entry: Entry<TypeConfig> = decode(&entry_key(index), bytes)?;
    if entry.log_id.index != index {
        return Err(RecordError::WrongIndex {
            carried: entry.log_id.index,
        });
    }
    Ok(entry)
}
