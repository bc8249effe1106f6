//! [`FencedKv`]: the fenced key-value store behind the HTTP routes.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use fencelock_fence::{
    Admitted, DurableFence, Fence, FenceError, FencingToken, MemoryFence, ResourceTable,
    StorageError,
};

use crate::log::{DecisionLog, open_log_file, write_entry};
use crate::types::{
    AdmittedWrite, KvValue, LogEntry, LogPage, RefusalReason, RefusedWrite, WriteOp, WriteOutcome,
};

/// Default largest request body, in bytes (64 KiB).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// Default number of decisions kept in memory.
pub const DEFAULT_LOG_CAPACITY: usize = 1_000_000;

/// In `--unfenced` mode every write is run through the fence under this one resource,
/// lock and token zero, which is always admitted: the fence then only serialises the
/// writes and commits them atomically, and never compares the writers' tokens.
const UNFENCED_RESOURCE: &str = "fenced-kv/unfenced";
const UNFENCED_LOCK: &str = "fenced-kv/unfenced";

/// How a [`FencedKv`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FencedKvOptions {
    /// A redb database file for [`DurableFence`]: values and tokens survive restarts.
    /// `None` keeps everything in memory ([`MemoryFence`]).
    pub data: Option<PathBuf>,
    /// A file the decision log is appended to, one JSON line per decision. An existing
    /// file is continued: its entries are loaded and the sequence numbers go on.
    pub log_file: Option<PathBuf>,
    /// **Only for proving that a checker can fail.** Admits every write without comparing
    /// its token (the token is still logged). Never use it to protect anything.
    pub unfenced: bool,
    /// Largest request body, in bytes; larger ones are answered with `413`.
    pub max_body: usize,
    /// How many decisions the in-memory log keeps; the oldest are dropped beyond it.
    pub log_capacity: usize,
}

impl Default for FencedKvOptions {
    fn default() -> Self {
        Self {
            data: None,
            log_file: None,
            unfenced: false,
            max_body: DEFAULT_MAX_BODY,
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

/// Why a [`FencedKv`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The `data` database could not be opened.
    #[error("cannot open the data file {path:?}: {source}")]
    Data {
        /// The database file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: StorageError,
    },
    /// The decision log file could not be opened or read.
    #[error("cannot open the decision log file {path:?}: {source}")]
    LogFile {
        /// The log file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Why a read or write failed (as opposed to being refused, which is a
/// [`WriteOutcome::Refused`]). Nothing was written, and nothing was logged.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The durable backend's database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored value is not in this service's format.
    #[error("the stored value of key {key:?} is corrupt")]
    Corrupt {
        /// The key.
        key: String,
    },
}

/// The fence backend.
#[derive(Debug)]
enum Backend {
    Memory(MemoryFence),
    Durable(DurableFence),
}

impl Backend {
    fn admit<T, E, F>(
        &self,
        resource: &str,
        lock: &str,
        token: FencingToken,
        operation: F,
    ) -> Result<Admitted<T>, FenceError<E>>
    where
        F: FnOnce(&mut dyn ResourceTable) -> Result<T, E>,
    {
        match self {
            Self::Memory(fence) => fence.admit(resource, lock, token, operation),
            Self::Durable(fence) => fence.admit(resource, lock, token, operation),
        }
    }

    fn fence(&self) -> &dyn FenceReads {
        match self {
            Self::Memory(fence) => fence,
            Self::Durable(fence) => fence,
        }
    }
}

/// The object-safe reads of [`Fence`].
trait FenceReads {
    fn highest_seen(&self, resource: &str) -> Result<Option<u64>, StorageError>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}

impl<F: Fence> FenceReads for F {
    fn highest_seen(&self, resource: &str) -> Result<Option<u64>, StorageError> {
        Ok(self
            .record(resource)?
            .map(|record| record.highest_seen.get()))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Fence::get(self, key)
    }
}

/// A stored value, as kept in the fence's resource table under the key's bytes:
/// version (8 bytes, big-endian), highest token (8 bytes, big-endian), then the value.
struct Stored {
    version: u64,
    highest_token: u64,
    value: Vec<u8>,
}

impl Stored {
    const HEADER: usize = 16;

    fn decode(mut bytes: Vec<u8>) -> Option<Self> {
        if bytes.len() < Self::HEADER {
            return None;
        }
        let version = u64::from_be_bytes(bytes[..8].try_into().ok()?);
        let highest_token = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
        bytes.drain(..Self::HEADER);
        Some(Self {
            version,
            highest_token,
            value: bytes,
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(Self::HEADER + self.value.len());
        bytes.extend_from_slice(&self.version.to_be_bytes());
        bytes.extend_from_slice(&self.highest_token.to_be_bytes());
        bytes.extend_from_slice(&self.value);
        bytes
    }
}

/// What an admitted write's operation reports back.
struct Applied {
    /// The highest token in the stored record before the write.
    previous_highest: Option<u64>,
    version: u64,
    value_len: u64,
    value_hash: String,
}

/// The decisions' serialisation point: the log and its file. Held across the fence's
/// decision and the logging of it, so the log is in the order decided.
#[derive(Debug)]
struct Decisions {
    log: DecisionLog,
    file: Option<File>,
}

/// A fenced key-value store: each key is a fenced resource, written with a fencing token
/// and the name of the lock it was granted under, and every decision is logged.
///
/// The methods are synchronous (the durable backend waits for an fsync); from async code
/// call them on a blocking thread, as [`router`](crate::router) does. Share it with an
/// `Arc`.
#[derive(Debug)]
pub struct FencedKv {
    backend: Backend,
    decisions: Mutex<Decisions>,
    options: FencedKvOptions,
}

impl FencedKv {
    /// Opens the store: the durable database if `options.data` is set, and the decision
    /// log file if `options.log_file` is set (continuing an existing one).
    ///
    /// # Errors
    /// [`OpenError`] if either file cannot be opened.
    pub fn open(options: FencedKvOptions) -> Result<Self, OpenError> {
        let backend = match &options.data {
            Some(path) => {
                Backend::Durable(DurableFence::open(path).map_err(|source| OpenError::Data {
                    path: path.clone(),
                    source,
                })?)
            }
            None => Backend::Memory(MemoryFence::new()),
        };
        let mut log = DecisionLog::new(options.log_capacity);
        let file = match &options.log_file {
            Some(path) => {
                Some(
                    open_log_file(path, &mut log).map_err(|source| OpenError::LogFile {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        if options.unfenced {
            tracing::warn!(
                "UNFENCED MODE: writes are admitted without the fencing-token check; \
                 this mode exists only to show that a checker can detect violations"
            );
        }
        Ok(Self {
            backend,
            decisions: Mutex::new(Decisions { log, file }),
            options,
        })
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &FencedKvOptions {
        &self.options
    }

    /// `"memory"` or `"durable"`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Durable(_) => "durable",
        }
    }

    /// How many decisions were made (including those loaded from the log file).
    #[must_use]
    pub fn decision_count(&self) -> u64 {
        self.lock_decisions().log.next_seq() - 1
    }

    /// Replaces the value of `key` with `body` if `token`, presented under `lock`, is
    /// admitted by the fence for the resource `key`; logs the decision either way.
    ///
    /// # Errors
    /// [`KvError`] when the storage failed; a refusal is `Ok(WriteOutcome::Refused)`.
    pub fn put(
        &self,
        key: &str,
        lock: &str,
        token: u64,
        body: &[u8],
    ) -> Result<WriteOutcome, KvError> {
        self.write(WriteOp::Put, key, lock, token, body)
    }

    /// Appends `body` to the value of `key` (an absent key is empty), in the same atomic
    /// step as the fence's check, like [`FencedKv::put`].
    ///
    /// # Errors
    /// As [`FencedKv::put`].
    pub fn append(
        &self,
        key: &str,
        lock: &str,
        token: u64,
        body: &[u8],
    ) -> Result<WriteOutcome, KvError> {
        self.write(WriteOp::Append, key, lock, token, body)
    }

    /// Runs one write through the fence and logs the decision.
    ///
    /// # Errors
    /// As [`FencedKv::put`].
    pub fn write(
        &self,
        op: WriteOp,
        key: &str,
        lock: &str,
        token: u64,
        body: &[u8],
    ) -> Result<WriteOutcome, KvError> {
        let fenced = !self.options.unfenced;
        let (resource, fence_lock, fence_token) = if fenced {
            (key, lock, FencingToken(token))
        } else {
            (UNFENCED_RESOURCE, UNFENCED_LOCK, FencingToken(0))
        };
        let mut decisions = self.lock_decisions();
        let result = self
            .backend
            .admit(resource, fence_lock, fence_token, |table| {
                apply(table, op, key, token, body)
            });
        let seq = decisions.log.next_seq();
        let mut entry = LogEntry {
            seq,
            op,
            key: key.to_owned(),
            lock: lock.to_owned(),
            token,
            admitted: false,
            highest_seen: None,
            reason: None,
            bound_lock: None,
            version: None,
            body_len: body.len() as u64,
            body_hash: crate::body_hash(body),
            value_len: None,
            value_hash: None,
            fenced,
        };
        let outcome = match result {
            Ok(admitted) => {
                let applied = admitted.output;
                let previous = if fenced {
                    admitted.previous.map(FencingToken::get)
                } else {
                    applied.previous_highest
                };
                entry.admitted = true;
                entry.highest_seen = previous;
                entry.version = Some(applied.version);
                entry.value_len = Some(applied.value_len);
                entry.value_hash = Some(applied.value_hash);
                WriteOutcome::Admitted(AdmittedWrite {
                    admitted: true,
                    key: key.to_owned(),
                    token,
                    previous,
                    version: applied.version,
                    seq,
                })
            }
            Err(FenceError::Refused { highest_seen, .. }) => {
                entry.highest_seen = Some(highest_seen.get());
                entry.reason = Some(RefusalReason::StaleToken);
                WriteOutcome::Refused(RefusedWrite {
                    admitted: false,
                    key: key.to_owned(),
                    token,
                    highest_seen: Some(highest_seen.get()),
                    reason: RefusalReason::StaleToken,
                    bound_lock: None,
                    seq,
                })
            }
            Err(FenceError::WrongLock { bound_lock, .. }) => {
                let highest_seen = self.backend.fence().highest_seen(key)?;
                entry.highest_seen = highest_seen;
                entry.reason = Some(RefusalReason::WrongLock);
                entry.bound_lock = Some(bound_lock.clone());
                WriteOutcome::Refused(RefusedWrite {
                    admitted: false,
                    key: key.to_owned(),
                    token,
                    highest_seen,
                    reason: RefusalReason::WrongLock,
                    bound_lock: Some(bound_lock),
                    seq,
                })
            }
            Err(FenceError::Operation(error)) => return Err(error),
            Err(FenceError::Storage(error)) => return Err(KvError::Storage(error)),
        };
        log_decision(&entry);
        if let Some(file) = decisions.file.as_mut() {
            if let Err(error) = write_entry(file, &entry) {
                tracing::error!(%error, seq, "cannot append to the decision log file");
            }
        }
        decisions.log.push(entry);
        Ok(outcome)
    }

    /// The value of `key`, or `None` if it was never written.
    ///
    /// # Errors
    /// [`KvError`] when the storage failed or the stored value is corrupt.
    pub fn get(&self, key: &str) -> Result<Option<KvValue>, KvError> {
        let Some(bytes) = self.backend.fence().get(key.as_bytes())? else {
            return Ok(None);
        };
        let stored = Stored::decode(bytes).ok_or_else(|| KvError::Corrupt {
            key: key.to_owned(),
        })?;
        Ok(Some(KvValue {
            key: key.to_owned(),
            value: stored.value,
            highest_token: stored.highest_token,
            version: stored.version,
        }))
    }

    /// The decision log's entries with `seq >= since`, at most `limit` (and at most
    /// [`MAX_LOG_PAGE`](crate::MAX_LOG_PAGE)).
    #[must_use]
    pub fn log_page(&self, since: u64, limit: usize) -> LogPage {
        self.lock_decisions().log.page(since, limit)
    }

    fn lock_decisions(&self) -> MutexGuard<'_, Decisions> {
        // Every change under this mutex is a single push; a panic cannot leave it torn.
        self.decisions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fenced operation: read the stored value, apply the write, store it back.
fn apply(
    table: &mut dyn ResourceTable,
    op: WriteOp,
    key: &str,
    token: u64,
    body: &[u8],
) -> Result<Applied, KvError> {
    let current = match table.get(key.as_bytes())? {
        Some(bytes) => Some(Stored::decode(bytes).ok_or_else(|| KvError::Corrupt {
            key: key.to_owned(),
        })?),
        None => None,
    };
    let previous_highest = current.as_ref().map(|stored| stored.highest_token);
    let (version, value) = match current {
        Some(stored) => (stored.version, stored.value),
        None => (0, Vec::new()),
    };
    let value = match op {
        WriteOp::Put => body.to_vec(),
        WriteOp::Append => {
            let mut value = value;
            value.extend_from_slice(body);
            value
        }
    };
    let stored = Stored {
        version: version + 1,
        highest_token: previous_highest.map_or(token, |highest| highest.max(token)),
        value,
    };
    table.insert(key.as_bytes(), &stored.encode())?;
    Ok(Applied {
        previous_highest,
        version: stored.version,
        value_len: stored.value.len() as u64,
        value_hash: crate::body_hash(&stored.value),
    })
}

fn log_decision(entry: &LogEntry) {
    if entry.admitted {
        tracing::info!(
            seq = entry.seq,
            op = entry.op.as_str(),
            key = %entry.key,
            lock = %entry.lock,
            token = entry.token,
            previous = ?entry.highest_seen,
            version = ?entry.version,
            body_len = entry.body_len,
            fenced = entry.fenced,
            "write admitted"
        );
    } else {
        tracing::warn!(
            seq = entry.seq,
            op = entry.op.as_str(),
            key = %entry.key,
            lock = %entry.lock,
            token = entry.token,
            highest_seen = ?entry.highest_seen,
            reason = entry.reason.map_or("", RefusalReason::as_str),
            bound_lock = ?entry.bound_lock,
            body_len = entry.body_len,
            "write refused"
        );
    }
}
